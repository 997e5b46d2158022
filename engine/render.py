"""Render stage: results as text for clinicians (rich) and as stable JSON."""

from __future__ import annotations

from io import StringIO
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .result import Assessment, Matched, Recommendation, Result
from .times import relative_label

ICONS = {"critical": ("CRITICAL", "bold white on red"), "warning": ("WARNING", "bold black on yellow"),
         "info": ("INFO", "bold white on blue")}
KIND_WORDS = {"start": "START", "stop": "STOP", "avoid": "AVOID", "consider": "CONSIDER", "reduce": "REDUCE",
              "monitor": "MONITOR", "escalate_care": "ESCALATE", "record_allergy": "RECORD ALLERGY"}
EVIDENCE_WORDS = {
    "guideline": "clinical practice guideline", "consensus": "expert consensus statement",
    "classification-criteria": "validated classification criteria", "validated-score": "validated score",
    "rct": "randomised controlled trial", "cohort": "cohort study", "case-series": "case series",
    "case-report": "single case report", "regulatory-label": "regulatory label", "expert-opinion": "expert opinion",
}


MAX_FACTS_LISTED = 4


def _row(bullet: str, text: Text, indent: int) -> Padding:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    grid.add_row(Text(bullet, style="dim"), text)
    return Padding(grid, (0, 0, 0, indent))


def _matched_rows(out: list[Any], items: tuple[Matched, ...], depth: int = 0) -> None:
    for m in items:
        out.append(_row("•", Text(m.condition, style="italic" if m.negated else ""), 2 + 2 * depth))
        if m.derived is not None:
            _matched_rows(out, m.because, depth + 1)
            continue
        facts = list(m.facts)
        hidden = len(facts) - MAX_FACTS_LISTED
        for f in facts[-MAX_FACTS_LISTED:]:
            out.append(_row(" ", Text(str(f.get("text", "")), style="cyan"), 4 + 2 * depth))
        if hidden > 0:
            out.append(_row(" ", Text(f"(+{hidden} earlier)", style="dim cyan"), 4 + 2 * depth))


def _section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _recommendation(rec: Recommendation) -> Panel:
    label, style = ICONS[rec.indicator]
    head = Text()
    head.append(f" {label} ", style=style)
    head.append(f" {rec.title}", style="bold")
    if rec.status == "suppressed":
        head.append("  [SUPPRESSED]", style="bold magenta")
    parts: list[Any] = [head, Text(f"rule {rec.rule_id} v{rec.rule_version}", style="dim"), _section("What to do")]
    actions = Table.grid(padding=(0, 1))
    actions.add_column(no_wrap=True, style="bold")
    actions.add_column()
    for a in rec.actions:
        text = Text(a.text)
        if a.suppressed_by is not None:
            text.append(f"  (suppressed by {a.suppressed_by.rule_id}: {a.suppressed_by.action} "
                        f"{a.suppressed_by.target})", style="magenta")
        actions.add_row(f"  {KIND_WORDS[a.kind]}", text)
        if a.reported_dose:
            actions.add_row("", Text(f"Dose as reported: {a.reported_dose}", style="yellow"))
    parts.append(actions)
    parts.append(_section("Why"))
    parts.append(Padding(Text(rec.rationale), (0, 0, 0, 2)))
    parts.append(_section("Based on the patient's record"))
    _matched_rows(parts, rec.matched)
    parts.append(_section("Source"))
    for c in rec.citations:
        ident = " · ".join(x for x in (f"doi:{c.doi}" if c.doi else "", f"PMID {c.pmid}" if c.pmid else "") if x)
        block = Table.grid()
        block.add_column()
        block.add_row(Text(c.reference))
        block.add_row(Text(f"{ident}  {c.url or ''}", style="blue"))
        block.add_row(Text(f"Reported: {c.reported}", style="dim"))
        parts.append(Padding(block, (0, 0, 0, 2)))
    parts.append(Padding(Text(f"Evidence: {EVIDENCE_WORDS.get(rec.evidence_level, rec.evidence_level)}",
                              style="bold"), (0, 0, 0, 2)))
    border = {"critical": "red", "warning": "yellow", "info": "blue"}[rec.indicator]
    return Panel(Group(*parts), border_style="magenta" if rec.status == "suppressed" else border)


STATUS_WORDS = {"met": ("✔ met", "green"), "not_met": ("✘ not met", ""),
                "indeterminate": ("? undecided", "bold yellow")}


def number(x: float) -> str:
    """A value as a clinician reads it: up to 4 significant digits, a true minus sign."""
    text = f"{x:.4g}" if abs(x) < 1e6 else f"{x:.3e}"
    return text.replace("-", "−")


def value_text(a: Assessment) -> str | None:
    """The computed value of a score or ratio: exact, or the range the unrecorded inputs leave open."""
    if a.value is not None:
        return f"value {number(a.value)}"
    if a.value_range is None:
        return None
    lo, hi = a.value_range
    span = f"above {number(lo)}" if hi is None else f"{number(lo)} to {number(hi)}"
    if a.status == "indeterminate":
        return f"value {span} until the missing inputs are known"
    unknown = sorted({m.what for m in a.unrecorded})
    return f"value {span} (not recorded: {', '.join(unknown)}; the result holds whatever their values)"


def _assessments(items: tuple[Assessment, ...]) -> Table:
    """Each assessment on one line, with its value, its reliability and, when undecided, what to measure."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column()
    grid.add_row(Text("Assessments", style="bold"), Text("(undecided: what to measure or record)", style="dim"))
    for a in items:
        word, style = STATUS_WORDS[a.status]
        if not a.reliable:
            word, style = f"{word} (unreliable)", "bold magenta"
        grid.add_row(Text(f"  {word}", style=style), Text(f"{a.title}  [{a.rule_id}]"))
        value = value_text(a)
        if value:
            grid.add_row("", Text(value, style="cyan"))
        if a.interpretation:
            grid.add_row("", Text(a.interpretation, style="cyan"))
        for caveat in a.caveats:
            grid.add_row("", Text(f"caution: {caveat}", style="magenta"))
        if a.status == "indeterminate":
            for m in a.missing:
                grid.add_row("", Text(f"- {m.what}: {m.detail}", style="yellow"))
    return grid


def render_text(result: Result, width: int | None = None, color: bool | None = None) -> str:
    """The result for a person: what to do, why (with the patient's values), and the source."""
    buf = StringIO()
    console = Console(file=buf, width=width or 100, force_terminal=color, no_color=color is False,
                      highlight=False, soft_wrap=False)
    start = result.timeline_start
    kb = result.knowledge_base
    console.print(Text(f"mascds · {result.case_title}", style="bold"))
    when = relative_label(result.as_of_epoch, start)
    console.print(Text(f"as of {result.as_of}" + (f" ({when})" if start is not None else "")))
    console.print(Text(f"knowledge base {kb.name} {kb.version} ({kb.content_hash[:19]}…), {kb.rules_evaluated} "
                       f"rules, backend {result.backend}", style="dim"))
    if not result.complete:
        console.print(Text("The record is incomplete: some sections were not provided; rules that need them are "
                           "undecided.", style="bold yellow"))
    for problem in result.input_errors:
        console.print(Text(f"left out: {problem}", style="bold red"))
    if result.input_errors:
        console.print(Text("The record had entries that could not be used: the answer below may be incomplete.",
                           style="bold yellow"))
    for w in result.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    active = [r for r in result.recommendations if r.status == "active"]
    suppressed = [r for r in result.recommendations if r.status != "active"]
    if result.assessments:
        console.print()
        console.print(_assessments(result.assessments))
    console.print()
    if active:
        console.print(Text(f"{len(active)} recommendation{'s' if len(active) != 1 else ''}", style="bold"))
        for rec in active:
            console.print(_recommendation(rec))
    else:
        console.print(Text("No recommendation fired.", style="bold"))
    undecided = [u for u in result.indeterminate if u.produces != "assessment"]
    if undecided:
        console.print()
        console.print(Text("Recommendations that could not be decided - measure or record:", style="bold yellow"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column()
        for u in undecided:
            grid.add_row(Text("  ?", style="bold yellow"), Text(f"{u.title}  [{u.rule_id}]", style="yellow"))
            for m in u.missing:
                grid.add_row("", Text(f"- {m.what}: {m.detail}"))
        console.print(grid)
    if suppressed:
        console.print()
        console.print(Text("Suppressed by a higher-priority recommendation (shown, not applied):",
                           style="bold magenta"))
        for rec in suppressed:
            console.print(_recommendation(rec))
    if result.errors:
        console.print()
        console.print(Text("Errors", style="bold red"))
        for e in result.errors:
            console.print(Text(f"  {e.rule_id}: {escape(e.message)}", style="red"))
    return buf.getvalue()

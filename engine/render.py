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

from .result import Matched, Recommendation, Result
from .times import relative_label

ICONS = {"critical": ("CRITICAL", "bold white on red"), "warning": ("WARNING", "bold black on yellow"),
         "info": ("INFO", "bold white on blue")}
KIND_WORDS = {"start": "START", "stop": "STOP", "avoid": "AVOID", "consider": "CONSIDER", "monitor": "MONITOR",
              "escalate_care": "ESCALATE", "record_allergy": "RECORD ALLERGY"}
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
    console.print()
    if active:
        console.print(Text(f"{len(active)} recommendation{'s' if len(active) != 1 else ''}", style="bold"))
        for rec in active:
            console.print(_recommendation(rec))
    else:
        console.print(Text("No recommendation fired.", style="bold"))
    undecided = list(result.indeterminate)
    if undecided:
        console.print()
        console.print(Text("Could not be decided - measure or record:", style="bold yellow"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column()
        for u in undecided:
            grid.add_row(Text("  ?", style="bold yellow"), Text(f"{u.title}  [{u.rule_id}]", style="yellow"))
            for m in u.missing:
                grid.add_row("", Text(f"- {m.what}: {m.detail}"))
        console.print(grid)
    if result.assessments:
        console.print()
        console.print(Text("Assessments", style="bold"))
        for a in result.assessments:
            symbol = {"met": "✔ met", "not_met": "✘ not met", "indeterminate": "? undecided"}[a.status]
            value = f" = {a.value:g}" if a.value is not None else ""
            console.print(Text(f"  {symbol:12} {a.fact}{value}  [{a.rule_id}]",
                               style={"met": "green", "not_met": "", "indeterminate": "yellow"}[a.status]))
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

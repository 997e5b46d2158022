"""Why a rule fired or did not: its condition tree with the verdict of every condition, the values seen
(and when), what decided it, and for undecided conditions what is missing. Derived facts expand into the
reasons of the rule that derived them."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rich.console import Console
from rich.text import Text
from rich.tree import Tree

from ..compiler.ir import DERIVED, All, Any_, AtLeast, Leaf, Missing, Not
from ..core.errors import UsageError, did_you_mean
from ..language.fields import text_in
from ..runtime.describe import fact_text
from ..runtime.result import Action, Assessment, NodeResult, Result, ScoreResult

VERDICT_MARK = {"true": "✔", "false": "✘", "unknown": "?"}
MAX_SEEN = 10


@dataclass(frozen=True)
class ExplainNode:
    label: str
    path: str
    verdict: str  # true | false | unknown
    note: str
    decided_by: tuple[str, ...]
    seen: tuple[str, ...]
    missing: tuple[Missing, ...]
    children: tuple[ExplainNode, ...]
    derived_rule: str | None = None
    line: int = 0
    col: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"condition": self.label, "path": self.path, "verdict": self.verdict, "note": self.note,
                "line": self.line, "col": self.col, "decided_by": list(self.decided_by), "seen": list(self.seen),
                "missing": [m.to_json() for m in self.missing], "derived_rule": self.derived_rule,
                "children": [c.to_json() for c in self.children]}


@dataclass(frozen=True)
class Explanation:
    rule_id: str
    rule_version: str
    title: str
    file: str
    as_of: str
    outcome: str  # fired | suppressed | not fired | undecided | derived: met/not met/undecided
    root: ExplainNode
    score: ExplainNode | None = None  # a score or ratio: each term, its input and its points
    suppressed: tuple[str, ...] = ()  # each suppressed action of the recommendation, with what suppressed it
    population: ExplainNode | None = None  # applies_to: who the assessment is defined for, decided first
    not_applicable_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "rule_version": self.rule_version, "title": self.title, "file": self.file,
                "as_of": self.as_of, "outcome": self.outcome, "tree": self.root.to_json(),
                "score": self.score.to_json() if self.score is not None else None,
                "suppressed_actions": list(self.suppressed),
                "applies_to": self.population.to_json() if self.population is not None else None,
                "not_applicable_reason": self.not_applicable_reason}

    def render_text(self, width: int = 100, color: bool | None = None) -> str:
        from io import StringIO

        buf = StringIO()
        console = Console(file=buf, width=width, force_terminal=color, no_color=color is False, highlight=False)
        tree = Tree(Text(f"{self.rule_id} v{self.rule_version}: {self.outcome.upper()} as of {self.as_of}",
                         style="bold"))
        tree.add(Text(self.title, style="dim"))
        if self.not_applicable_reason:
            tree.add(Text(f"not applicable: {self.not_applicable_reason}", style="bold"))
        if self.population is not None:
            applies = tree.add(Text("applies to (decided first; outside it the assessment is not applicable)",
                                    style="dim"))
            _add(applies, self.population)
            if self.not_applicable_reason:  # the conditions below were not what decided
                tree.add(Text("its conditions, not used because the assessment does not apply:", style="dim"))
        _add(tree, self.root)
        if self.score is not None:
            _add(tree, self.score)
        for line in self.suppressed:
            tree.add(Text(line, style="magenta"))
        console.print(tree)
        return buf.getvalue()


def _add(parent: Tree, node: ExplainNode) -> None:
    style = {"true": "green", "false": "red", "unknown": "yellow"}[node.verdict]
    text = Text(f"{VERDICT_MARK[node.verdict]} ", style=f"bold {style}")
    text.append(node.label)
    if node.note:
        text.append(f"  — {node.note}", style="dim")
    if node.line:
        text.append(f"  (line {node.line})", style="dim")
    branch = parent.add(text)
    for fact in node.decided_by:
        branch.add(Text(f"decided by: {fact}", style="cyan"))
    shown = [s for s in node.seen if s not in node.decided_by]
    for fact in shown:
        branch.add(Text(f"seen: {fact}", style="dim cyan"))
    for m in node.missing:
        branch.add(Text(f"missing: {m.what} — {m.detail}", style="yellow"))
    if node.derived_rule:
        branch.add(Text(f"derived by {node.derived_rule}:", style="bold"))
    for child in node.children:
        _add(branch, child)


def build(res: NodeResult, result: Result) -> ExplainNode:
    node = res.node
    start = result.timeline_start
    decided = tuple(fact_text(f, start) for f in res.facts)
    seen = tuple(fact_text(f, start) for f in res.seen[-MAX_SEEN:])
    if isinstance(node, Leaf):
        children: tuple[ExplainNode, ...] = ()
        derived_rule = None
        if node.fact_kind == DERIVED and node.derived_fact:
            fact = result.derived_facts.get(node.derived_fact)
            rule_id = (fact.extra or {}).get("rule") if fact is not None else None
            if rule_id and rule_id in result.traces:
                children = (build(result.traces[rule_id], result),)
                derived_rule = rule_id
        return ExplainNode(node.label, node.path, res.verdict, res.note, decided, seen, res.missing, children,
                           derived_rule, node.line, node.col)
    kids = tuple(build(c, result) for c in res.children)
    if isinstance(node, Not):
        label = "not"
    elif isinstance(node, All):
        label = "all of"
    elif isinstance(node, Any_):
        label = "any of"
    else:
        assert isinstance(node, AtLeast)
        label = f"at least {node.n} of"
    return ExplainNode(label, node.path, res.verdict, res.note if not isinstance(node, Not) else "", (), (),
                       res.missing, kids)


def _number(x: Fraction) -> str:
    return f"{float(x):.6g}".replace("-", "−")


def _span(lo: Fraction | None, hi: Fraction | None) -> str:
    if lo is None:
        return "not computable"
    if hi is None:
        return f"above {_number(lo)}"
    return _number(lo) if lo == hi else f"{_number(lo)} to {_number(hi)}"


def score_node(score: ScoreResult, assessment: Assessment | None, result: Result) -> ExplainNode:
    """The score as a tree: the total (or its range) against the cut-off, then each term with what decided it."""
    terms = []
    for t in score.terms:
        lo, hi = t.contribution
        exact = lo == hi
        label = f"{t.label}: {_span(lo, hi)} point{'s' if not exact or lo != 1 else ''}"
        if t.input_range is not None:
            label += f"  (input {_span(*t.input_range)})"
        kids = tuple(build(r, result) for r in t.evidence)
        terms.append(ExplainNode(label, "", "true" if exact else "unknown", "", (), (), (), kids))
    status = assessment.status if assessment is not None else "indeterminate"
    verdict = {"met": "true", "not_met": "false", "indeterminate": "unknown", "not_applicable": "false"}[status]
    label = f"score {_span(score.low, score.high)}"
    notes = [status.replace("_", " ")]
    if assessment is not None and assessment.interpretation:
        notes.append(assessment.interpretation)
    if assessment is not None:
        notes.extend(f"caution: {c}" for c in assessment.caveats)
    return ExplainNode(label, "derive.score", verdict, "; ".join(notes), (), (), (), tuple(terms))


def explain_result(result: Result, rule_id: str, title: str, version: str, file: str) -> Explanation:
    res = result.traces[rule_id]
    rec = next((r for r in result.recommendations if r.rule_id == rule_id), None)
    assessment = next((a for a in result.assessments if a.rule_id == rule_id), None)
    if assessment is not None:
        outcome = {"met": "derived: met", "not_met": "derived: not met",
                   "indeterminate": "derived: undecided",
                   "not_applicable": "derived: not applicable"}[assessment.status]
    elif rec is not None:
        outcome = "fired" if rec.status == "active" else "suppressed"
    else:
        outcome = {"false": "not fired", "unknown": "undecided", "true": "fired"}[res.verdict]
    score = result.scores.get(rule_id)
    suppressed = tuple(_suppressed_words(a) for a in (rec.actions if rec is not None else ())
                       if a.suppressed_by is not None)
    population = result.populations.get(rule_id)
    return Explanation(rule_id, version, title, file, result.as_of, outcome, build(res, result),
                       score_node(score, assessment, result) if score is not None else None, suppressed,
                       build(population, result) if population is not None else None,
                       assessment.not_applicable_reason if assessment is not None else None)


def _suppressed_words(a: Action) -> str:
    by = a.suppressed_by
    assert by is not None
    if by.reason == "failed-line":
        return f"{a.kind} {a.target}: suppressed by the treatment history - {by.detail}"
    return f"{a.kind} {a.target}: suppressed by {by.rule_id} ({by.action} {by.target})"


def check_rule_id(rule_id: str, known: list[str]) -> None:
    if rule_id not in known:
        hint = did_you_mean(rule_id, known)
        raise UsageError(f"no rule '{rule_id}' in the knowledge base" + (f"; {hint}" if hint else ""))


def title_of(title: Any, lang: str) -> str:
    return text_in(title, lang)

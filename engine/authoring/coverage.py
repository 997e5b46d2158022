"""Coverage stage: how thoroughly the cases exercise the rules.

Every case is evaluated at each of its event times and expectation times. For each rule the outcomes are
counted (fired, not fired, undecided), and for each condition of its tree the verdicts (true, false,
undecided). A condition is covered when the cases have seen it both true and false; a rule when they have seen
it both fire (or be met) and not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compiler.ir import Leaf, Node, Not
from ..core.errors import Diagnostic
from ..runtime.kb import BackendName, KnowledgeBase
from ..runtime.result import NodeResult
from .casetest import loaded_cases, rule_state


@dataclass
class ConditionCoverage:
    path: str
    label: str
    line: int
    true: int = 0
    false: int = 0
    unknown: int = 0

    @property
    def covered(self) -> bool:
        return self.true > 0 and self.false > 0

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "condition": self.label, "line": self.line, "true": self.true,
                "false": self.false, "undecided": self.unknown, "covered": self.covered}


@dataclass
class RuleCoverage:
    rule_id: str
    file: str
    fired: int = 0
    not_fired: int = 0
    undecided: int = 0
    conditions: dict[str, ConditionCoverage] = field(default_factory=dict)

    @property
    def covered(self) -> bool:
        return self.fired > 0 and self.not_fired > 0

    def to_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "file": self.file, "fired": self.fired, "not_fired": self.not_fired,
                "undecided": self.undecided, "covered": self.covered,
                "conditions_covered": sum(c.covered for c in self.conditions.values()),
                "conditions": [c.to_json() for c in self.conditions.values()]}


@dataclass
class CoverageReport:
    rules: dict[str, RuleCoverage]
    evaluations: int = 0
    cases: int = 0
    problems: list[Diagnostic] = field(default_factory=list)

    @property
    def rule_percent(self) -> float:
        return 100.0 * sum(r.covered for r in self.rules.values()) / max(1, len(self.rules))

    @property
    def condition_percent(self) -> float:
        conds = [c for r in self.rules.values() for c in r.conditions.values()]
        return 100.0 * sum(c.covered for c in conds) / max(1, len(conds))

    def to_json(self) -> dict[str, Any]:
        conds = [c for r in self.rules.values() for c in r.conditions.values()]
        return {"cases": self.cases, "evaluations": self.evaluations,
                "rules_covered": sum(r.covered for r in self.rules.values()), "rules": len(self.rules),
                "rule_coverage": round(self.rule_percent, 1),
                "conditions_covered": sum(c.covered for c in conds), "conditions": len(conds),
                "condition_coverage": round(self.condition_percent, 1),
                "by_rule": [r.to_json() for r in self.rules.values()],
                "problems": [d.to_json() for d in self.problems]}


def _nodes(node: Node) -> Iterable[Node]:
    yield node
    if isinstance(node, Not):
        yield from _nodes(node.child)
    elif not isinstance(node, Leaf):
        for child in node.children:
            yield from _nodes(child)


def _label(node: Node) -> str:
    if isinstance(node, Leaf):
        return node.label
    if isinstance(node, Not):
        return "not"
    return node.label or "at least"


def _tally(res: NodeResult, into: dict[str, ConditionCoverage]) -> None:
    c = into[res.node.path]
    if res.verdict == "true":
        c.true += 1
    elif res.verdict == "false":
        c.false += 1
    else:
        c.unknown += 1
    for child in res.children:
        _tally(child, into)


def measure_coverage(kb: KnowledgeBase, paths: Iterable[str | Path],
                     backend: BackendName = "durable") -> CoverageReport:
    """Evaluate every case at every event and expectation time and count outcomes per rule and condition."""
    compiled = kb.compiled
    report = CoverageReport({
        cr.id: RuleCoverage(cr.id, cr.file, conditions={
            n.path: ConditionCoverage(n.path, _label(n), n.line if isinstance(n, Leaf) else 0)
            for n in _nodes(cr.root)})
        for cr in compiled.rules})
    for _, snap in loaded_cases(paths, report.problems):
        report.cases += 1
        times = sorted({*snap.event_times(), *(e.at for e in snap.expectations)})
        for t in times:
            result = kb.evaluate(snap, t, backend=backend)
            report.evaluations += 1
            for rid, rc in report.rules.items():
                state = rule_state(result, rid)
                if state in ("fired", "suppressed"):
                    rc.fired += 1
                elif state == "undecided":
                    rc.undecided += 1
                else:
                    rc.not_fired += 1
                trace = result.traces.get(rid)
                if trace is not None:
                    _tally(trace, rc.conditions)
    return report

"""Case tests: run every ``expect:`` block of case files against a knowledge base.

Each expectation names rules that must fire, must not fire, must be undecided or suppressed, and derived
facts with the status they must have. Every single claim is one check, reported pass or fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import Diagnostic, LoadError, did_you_mean
from ..core.snapshot import Expectation, RecommendsClaim, Snapshot
from ..core.times import iso, relative_label
from ..core.vocab import vocabulary
from ..language.load import display_path
from ..records.ingest import load_case
from ..runtime.kb import BackendName, KnowledgeBase
from ..runtime.result import Action, Recommendation, Result, Undecided


@dataclass(frozen=True)
class Check:
    case: str
    ref: str  # file:line:col of the expectation
    at: str
    when: str
    note: str
    claim: str  # fires | not_fires | indeterminate | suppressed | suppressed_action | assessment | recommends
    # | no_suggestion_of | undecided | decided_not_fired | scope
    subject: str  # rule id or derived fact
    expected: str
    actual: str

    @property
    def passed(self) -> bool:
        return self.expected == self.actual

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "ref": self.ref, "at": self.at, "when": self.when, "note": self.note,
                "claim": self.claim, "subject": self.subject, "expected": self.expected, "actual": self.actual,
                "passed": self.passed}


@dataclass
class TestReport:
    checks: list[Check] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)
    cases: int = 0

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {"cases": self.cases, "checks": len(self.checks), "passed": len(self.checks) - len(self.failed),
                "failed": len(self.failed), "problems": [d.to_json() for d in self.problems],
                "results": [c.to_json() for c in self.checks]}


def case_files(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            out.append(p)
    return out


def loaded_cases(paths: Iterable[str | Path], problems: list[Diagnostic]) -> Iterator[tuple[Path, Snapshot]]:
    """Each case file under ``paths`` with its snapshot; a file that cannot be loaded adds its problems to
    ``problems`` and is skipped."""
    for path in case_files(paths):
        try:
            snap = load_case(path)
        except LoadError as exc:
            problems.extend(exc.diagnostics)
            continue
        yield path, snap


def rule_state(result: Result, rule_id: str) -> str:
    """fired | suppressed | undecided | not fired, for a recommending or deriving rule."""
    for a in result.assessments:
        if a.rule_id == rule_id:
            return {"met": "fired", "not_met": "not fired", "indeterminate": "undecided",
                    "not_applicable": "not applicable"}[a.status]
    for r in result.recommendations:
        if r.rule_id == rule_id:
            return "fired" if r.status == "active" else "suppressed"
    if any(u.rule_id == rule_id for u in result.indeterminate):
        return "undecided"
    return "not fired"


def action_state(result: Result, rule_id: str, target: str) -> str:
    """suppressed | standing | no such action | rule not fired, for one action of a recommendation."""
    rec = next((r for r in result.recommendations if r.rule_id == rule_id), None)
    if rec is None:
        return "rule not fired"
    act = next((a for a in rec.actions if a.target == target), None)
    if act is None:
        return "no such action"
    return "standing" if act.suppressed_by is None else "suppressed"


def _action_words(rec: Recommendation, act: Action) -> str:
    dois = ", ".join(f"doi {c.doi}" for c in rec.citations if c.doi)
    return f"{act.kind} {act.target} ({rec.indicator}, {rec.rule_id}{', ' + dois if dois else ''})"


def standing_actions(result: Result) -> list[tuple[Recommendation, Action]]:
    """Every action a clinician is shown: of a recommendation given, and not suppressed by a conflict."""
    return [(r, a) for r in result.recommendations if r.status == "active" for a in r.actions
            if a.suppressed_by is None]


def recommends_state(result: Result, claim: RecommendsClaim) -> str:
    """The claim's own words when a standing action fits it, else what stands instead (or what suppressed it)."""
    for rec, act in standing_actions(result):
        if (act.kind == claim.kind and act.target == claim.target
                and claim.indicator in (None, rec.indicator) and claim.rule in (None, rec.rule_id)
                and (claim.doi is None or any(c.doi == claim.doi for c in rec.citations))):
            return claim.words()
    lost = [f"{a.kind} {a.target} of {r.rule_id} suppressed by {a.suppressed_by.rule_id}" for r in
            result.recommendations for a in r.actions if a.suppressed_by is not None
            and (a.kind, a.target) == (claim.kind, claim.target)]
    shown = [_action_words(r, a) for r, a in standing_actions(result)]
    return "not found; " + "; ".join([*lost, "standing: " + (", ".join(shown) if shown else "none")])


def suggestion_state(result: Result, target: str) -> str:
    """none | the standing start/consider actions on ``target`` (a class covering its members)."""
    drugs = vocabulary().target_drugs(target)
    found = [_action_words(r, a) for r, a in standing_actions(result)
             if a.kind in ("start", "consider") and (a.target == target or vocabulary().target_drugs(a.target) & drugs)]
    return "none" if not found else "suggested: " + ", ".join(found)


def _undecided_entry(result: Result, subject: str) -> Undecided | None:
    return next((u for u in result.indeterminate if subject in (u.rule_id, _fact_of(result, u.rule_id))), None)


def _fact_of(result: Result, rule_id: str) -> str | None:
    return next((a.fact for a in result.assessments if a.rule_id == rule_id), None)


def subject_state(result: Result, subject: str) -> str:
    """The state of a rule or derived fact in words: fired/met, not fired/not met, undecided (naming what),
    suppressed, not applicable, unreliable."""
    a = next((a for a in result.assessments if subject in (a.rule_id, a.fact)), None)
    if a is not None:
        if a.status == "indeterminate":
            return "undecided, naming " + (", ".join(dict.fromkeys(m.what for m in a.missing)) or "nothing")
        return a.status.replace("_", " ") + ("" if a.reliable else " (unreliable)")
    u = _undecided_entry(result, subject)
    if u is not None:
        return "undecided, naming " + (", ".join(dict.fromkeys(m.what for m in u.missing)) or "nothing")
    return {"fired": "fired", "suppressed": "suppressed"}.get(rule_state(result, subject), "not fired")


def undecided_state(result: Result, subject: str, names: tuple[str, ...]) -> tuple[str, str]:
    """(expected, actual) for an undecided claim: each name must be found in a missing input."""
    expected = "undecided" + (", naming " + ", ".join(names) if names else "")
    u = _undecided_entry(result, subject)
    if u is None:
        return expected, subject_state(result, subject)
    missing = [f"{m.what} {m.detail}".lower() for m in u.missing]
    absent = [n for n in names if not any(n.lower() in m for m in missing)]
    if not absent:
        return expected, expected
    return expected, f"undecided, but not naming {', '.join(absent)} (names: " + \
        ", ".join(dict.fromkeys(m.what for m in u.missing)) + ")"


def check_expectation(snap: Snapshot, exp: Expectation, result: Result) -> list[Check]:
    at = iso(exp.at)
    when = relative_label(exp.at, snap.start)
    out: list[Check] = []

    def add(claim: str, subject: str, expected: str, actual: str) -> None:
        out.append(Check(snap.id, exp.ref, at, when, exp.note, claim, subject, expected, actual))

    for rid in exp.fires:
        add("fires", rid, "fired", rule_state(result, rid))
    for rid in exp.not_fires:
        state = rule_state(result, rid)
        add("not_fires", rid, "not fired", state)
    for rid in exp.indeterminate:
        add("indeterminate", rid, "undecided", rule_state(result, rid))
    for rid in exp.suppressed:
        add("suppressed", rid, "suppressed", rule_state(result, rid))
    for rid, target in exp.suppressed_actions:
        add("suppressed_action", f"{rid} -> {target}", "suppressed", action_state(result, rid, target))
    statuses = {a.fact: a.status if a.reliable else f"{a.status}_unreliable" for a in result.assessments}
    for fact, status in exp.assessments:
        add("assessment", fact, status, statuses.get(fact, "not derived by this knowledge base"))
    for claim in exp.recommends:
        add("recommends", claim.words(), claim.words(), recommends_state(result, claim))
    for target in exp.no_suggestion_of:
        add("no_suggestion_of", target, "none", suggestion_state(result, target))
    for subject, names in exp.undecided:
        expected, actual = undecided_state(result, subject, names)
        add("undecided", subject, expected, actual)
    for subject in exp.decided_not_fired:
        add("decided_not_fired", subject, _decided_word(result, subject), subject_state(result, subject))
    if exp.scope is not None:
        add("scope", "scope", exp.scope, result.scope.status + (
            "" if result.scope.status == exp.scope else f" ({'; '.join(result.scope.reasons)})"))
    return out


def _decided_word(result: Result, subject: str) -> str:
    """What a decided-and-quiet rule or fact reads as: not met for an assessment, not fired for advice."""
    is_fact = any(subject in (a.rule_id, a.fact) for a in result.assessments)
    return "not met" if is_fact else "not fired"


def _unknown_ids(snap: Snapshot, kb: KnowledgeBase) -> list[Diagnostic]:
    known_rules = set(kb.rule_ids)
    known_facts = {r.derives for r in kb.compiled.rules if r.derives}
    out: list[Diagnostic] = []
    for exp in snap.expectations:
        file, line, col = exp.ref.rsplit(":", 2)
        for rid in (*exp.fires, *exp.not_fires, *exp.indeterminate, *exp.suppressed,
                    *(rid for rid, _ in exp.suppressed_actions)):
            if rid not in known_rules:
                out.append(Diagnostic(file, int(line), int(col), "E401", f"unknown rule '{rid}'",
                                      did_you_mean(rid, known_rules) or "check the rule id"))
        for subject in (*(s for s, _ in exp.undecided), *exp.decided_not_fired):
            if subject not in known_rules and subject not in known_facts:
                out.append(Diagnostic(file, int(line), int(col), "E401", f"no rule or derived fact '{subject}'",
                                      did_you_mean(subject, known_rules | known_facts) or "check the id"))
        for claim in exp.recommends:
            if claim.rule is not None and claim.rule not in known_rules:
                out.append(Diagnostic(file, int(line), int(col), "E401", f"unknown rule '{claim.rule}'",
                                      did_you_mean(claim.rule, known_rules) or "check the rule id"))
        for fact, _ in exp.assessments:
            if fact not in known_facts:
                out.append(Diagnostic(file, int(line), int(col), "E401", f"no rule derives '{fact}'",
                                      did_you_mean(fact, known_facts) or "check the fact name"))
    return out


def run_cases(kb: KnowledgeBase, paths: Iterable[str | Path], backend: BackendName = "durable") -> TestReport:
    report = TestReport()
    paths = list(paths)
    for p in map(Path, paths):  # a folder without case files would otherwise pass with 0 checks
        if p.is_dir() and not case_files([p]):
            report.problems.append(Diagnostic(display_path(p), 1, 1, "E405", f"no case files in {display_path(p)}",
                                              "give a folder holding .yaml case files, or the files themselves"))
    for path, snap in loaded_cases(paths, report.problems):
        report.cases += 1
        unknown = _unknown_ids(snap, kb)
        if unknown:
            report.problems.extend(unknown)
            continue
        if not snap.expectations:
            report.problems.append(Diagnostic(display_path(path), 1, 1, "E401", "the case has no expectations",
                                              "add an expect: block"))
            continue
        for exp in snap.expectations:
            result = kb.evaluate(snap, exp.at, backend=backend)
            file, line, col = exp.ref.rsplit(":", 2)
            for err in result.errors:
                report.problems.append(Diagnostic(file, int(line), int(col), "E301", f"{err.rule_id}: {err.message}",
                                                  "fix the rule, or state a priority between the rules"))
            report.checks.extend(check_expectation(snap, exp, result))
    return report

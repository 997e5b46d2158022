"""Lint stage: findings across a whole knowledge base and its cases that validation of single files cannot make.

Validation and the cross-rule check (duplicate ids, facts used but never derived, cycles, units) run first and
their diagnostics are part of the report. Lint then adds: derived facts nothing uses, conditions that can never
be true, opposite actions on one target at equal priority, rules without a case where they fire or where they
must not, and clinician-facing text without a translation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import Diagnostic, LoadError, Severity
from ..core.times import describe_duration, parse_duration
from ..core.units import to_canonical
from ..core.vocab import vocabulary
from ..language.check import check_knowledge_base
from ..language.conditions import AllCond, AnyCond, MedicationSpec, NotCond, ObservationSpec, Ref
from ..language.fields import LocalText
from ..language.load import LoadedRules, RuleFile, display_path, read_rules
from ..language.rulemodel import Rule
from ..language.source import PathKey, format_path
from ..language.templates import TemplateError
from ..language.templates import parse as parse_template
from ..language.tree import children, derived_uses, extra_trees, sites
from ..records.ingest import load_case
from ..runtime.evaluate import PERMISSIVE, RESTRICTIVE
from .casetest import case_files

LANGUAGES = ("zh-CN",)


@dataclass(frozen=True)
class LintReport:
    rules_dir: str
    cases: tuple[str, ...]
    findings: tuple[Diagnostic, ...]

    def count(self, severity: Severity) -> int:
        return sum(1 for d in self.findings if d.severity == severity)

    def to_json(self) -> dict[str, Any]:
        return {"rules_dir": self.rules_dir, "cases": list(self.cases), "ok": self.count("error") == 0,
                "errors": self.count("error"), "warnings": self.count("warning"), "infos": self.count("info"),
                "findings": [d.to_json() for d in self.findings]}


def _at(rf: RuleFile, path: PathKey, code: str, message: str, hint: str, severity: Severity = "error",
        key: bool = False) -> Diagnostic:
    pos = rf.doc.positions
    line, col = pos.of_key(path) if key else pos.of_value(path)
    return Diagnostic(rf.file, line, col, code, message, hint, format_path(path), severity)


def lint_knowledge_base(rules_dir: Path, case_paths: Iterable[Path] = ()) -> LintReport:
    """Every finding about ``rules_dir``; ``case_paths`` (files or folders) are the cases that exercise it."""
    paths = [Path(p) for p in case_paths]
    loaded, diags = read_rules(rules_dir)
    shown = tuple(display_path(p) for p in paths)
    if loaded is None:
        return LintReport(display_path(rules_dir), shown, tuple(sorted(diags)))
    findings = [*diags, *check_knowledge_base(loaded)]
    findings += unused_derived(loaded)
    for rf in loaded.rules:
        findings += impossible_conditions(rf)
        findings += missing_translations(rf)
    findings += opposite_actions(loaded)
    findings += case_coverage(loaded, paths)
    return LintReport(display_path(rules_dir), shown, tuple(sorted(set(findings))))


def unused_derived(loaded: LoadedRules) -> list[Diagnostic]:
    used = {fact for rf in loaded.rules for fact, _ in derived_uses(rf.rule)}
    return [_at(rf, ("derive", "fact"), "L100", f"fact '{rf.rule.derive.fact}' is derived but no rule uses it",
                "fine for an assessment shown to clinicians; otherwise check the name", "info")
            for rf in loaded.rules
            if rf.rule.derive is not None and rf.rule.status != "retired" and rf.rule.derive.fact not in used]


# --- conditions that can never be true ---------------------------------------------------------------------

Bound = tuple[float, bool]  # value, strict


def _interval(spec: ObservationSpec) -> tuple[Bound | None, Bound | None]:
    """The canonical-unit interval a numeric observation condition allows (None: unbounded on that side)."""
    lo: Bound | None = None
    hi: Bound | None = None
    for op, value in spec.comparisons():
        if isinstance(value, Ref) or spec.unit is None:
            continue
        x = to_canonical(spec.analyte, float(value), spec.unit)
        if op in ("gt", "gte", "eq"):
            lo = _tighter_low(lo, (x, op == "gt"))
        if op in ("lt", "lte", "eq"):
            hi = _tighter_high(hi, (x, op == "lt"))
    return lo, hi


def _tighter_low(a: Bound | None, b: Bound) -> Bound:
    if a is None or b[0] > a[0] or (b[0] == a[0] and b[1]):
        return b
    return a


def _tighter_high(a: Bound | None, b: Bound) -> Bound:
    if a is None or b[0] < a[0] or (b[0] == a[0] and b[1]):
        return b
    return a


def _empty(lo: Bound | None, hi: Bound | None) -> bool:
    if lo is None or hi is None:
        return False
    return lo[0] > hi[0] or (lo[0] == hi[0] and (lo[1] or hi[1]))


def _words(lo: Bound | None, hi: Bound | None, unit: str) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo[1] else '≥'} {lo[0]:g}")
    if hi is not None:
        parts.append(f"{'<' if hi[1] else '≤'} {hi[0]:g}")
    return " and ".join(parts) + f" {unit}"


def impossible_conditions(rf: RuleFile) -> list[Diagnostic]:
    vocab = vocabulary()
    out: list[Diagnostic] = []
    trees = [(rf.rule.when, ("when",)), *extra_trees(rf.rule)]
    for root, root_path in trees:
        for site in sites(root, root_path):
            spec = site.spec
            if isinstance(spec, ObservationSpec) and spec.comparisons():
                a = vocab.analytes[spec.analyte]
                lo, hi = _interval(spec)
                p_lo, p_hi = a.plausible
                unit = vocab.display_unit(a.canonical)
                if _empty(lo, (p_hi, False)) or _empty((p_lo, False), hi):
                    out.append(_at(rf, site.spec_path, "L101",
                                   f"{a.name} {_words(lo, hi, unit)} can never be true: possible values are "
                                   f"{p_lo:g} to {p_hi:g} {unit}", "check the threshold and its unit"))
            if isinstance(spec, MedicationSpec) and spec.level() == "admin" and spec.within and spec.started_before:
                within, before = parse_duration(spec.within), parse_duration(spec.started_before)
                if before > within:
                    out.append(_at(rf, site.spec_path, "L101",
                                   f"an administration in the last {describe_duration(within)} cannot also be at "
                                   f"least {describe_duration(before)} old: the window ends before it starts",
                                   "for a course running that long use active: true with started_before"))
            if isinstance(site.cond, AllCond):
                out.extend(_contradictory_siblings(rf, site.cond, site.path))
    return out


def _same_value_key(spec: ObservationSpec) -> tuple[Any, ...] | None:
    """Conditions that look at one and the same value: one analyte, one window, one selected measurement."""
    if spec.trend is not None or spec.count is not None or spec.which in ("any", "all"):
        return None
    if spec.after is not None or spec.before is not None or spec.during is not None:
        return None
    return spec.analyte, spec.within, spec.which or "latest"


def _contradictory_siblings(rf: RuleFile, cond: AllCond, path: PathKey) -> Iterator[Diagnostic]:
    vocab = vocabulary()
    groups: dict[tuple[Any, ...], list[tuple[ObservationSpec, PathKey]]] = {}
    kids = children(cond, path)
    for child, child_path in kids:
        spec = getattr(child, "observation", None)
        if isinstance(spec, ObservationSpec) and spec.comparisons():
            key = _same_value_key(spec)
            if key is not None:
                groups.setdefault(key, []).append((spec, (*child_path, "observation")))
    for members in groups.values():
        lo: Bound | None = None
        hi: Bound | None = None
        for spec, where in members:
            a, b = _interval(spec)
            if a is not None:
                lo = _tighter_low(lo, a)
            if b is not None:
                hi = _tighter_high(hi, b)
            if _empty(lo, hi):
                analyte = vocab.analytes[spec.analyte]
                yield _at(rf, where, "L101", f"{analyte.name} cannot be {_words(lo, hi, '')}at once: these "
                          "conditions of one 'all' look at the same measurement",
                          "fix the thresholds, or use 'any' if either should do")
                break
    for i, (child, child_path) in enumerate(kids):
        if isinstance(child, NotCond):
            for j, (other, _) in enumerate(kids):
                if j != i and other == child.not_:
                    yield _at(rf, child_path, "L101", "'all' holds a condition and its negation: it can never "
                              "be true", "remove one of them")


# --- conflicts, cases, translations ------------------------------------------------------------------------

def _polarity(kind: str) -> int:
    return 1 if kind in RESTRICTIVE else (-1 if kind in PERMISSIVE else 0)


def _top_level(rule: Rule) -> tuple[list[Any], list[Any]]:
    """Leaf conditions the rule needs to hold, and leaf conditions it needs not to hold, at its top level."""
    root = rule.when
    items = list(root.all) if isinstance(root, AllCond) else [root]
    required: list[Any] = []
    forbidden: list[Any] = []
    for item in items:
        if isinstance(item, NotCond):
            inner = item.not_
            forbidden.extend(inner.any if isinstance(inner, AnyCond) else [inner])  # not (a or b): neither
        else:
            required.append(item)
    return required, forbidden


def _drugs(spec: Any) -> frozenset[str]:
    return frozenset(vocabulary().target_drugs(spec.drug or spec.class_))


def _implies(need: Any, ban: Any) -> bool:
    """Whether a fact that satisfies ``need`` always satisfies ``ban`` (both leaf conditions)."""
    a, b = getattr(need, "medication", None), getattr(ban, "medication", None)
    if isinstance(a, MedicationSpec) and isinstance(b, MedicationSpec) and a.model_copy(update={"as_": None}) == b:
        return True
    if isinstance(a, MedicationSpec) and isinstance(b, MedicationSpec) and (a.active or a.exposed) and \
            (b.exposed or (b.active and a.active)):
        # a running course is an exposure (exposed: running, or within its dosing interval)
        loose = b.model_dump(exclude_none=True, by_alias=True).keys() <= {"drug", "class", "active", "exposed"}
        return loose and _drugs(a) <= _drugs(b)
    return False


def exclusive(a: Rule, b: Rule) -> bool:
    """Whether two rules can never fire together, as far as their top-level conditions show."""
    need_a, ban_a = _top_level(a)
    need_b, ban_b = _top_level(b)
    if any(_implies(n, x) for n in need_a for x in ban_b) or any(_implies(n, x) for n in need_b for x in ban_a):
        return True
    status = {}
    for cond in need_a:
        spec = getattr(cond, "derived", None)
        if spec is not None and not spec.comparisons():
            status[spec.fact] = spec.is_ or "met"
    for cond in need_b:
        spec = getattr(cond, "derived", None)
        if (spec is not None and not spec.comparisons() and spec.fact in status
                and status[spec.fact] != (spec.is_ or "met")):
            return True
    return False


def opposite_actions(loaded: LoadedRules) -> list[Diagnostic]:
    vocab = vocabulary()
    severity: Severity = "error" if loaded.manifest.conflict_resolution == "priority-only" else "warning"
    live = [rf for rf in loaded.rules if rf.rule.recommend is not None and rf.rule.status != "retired"]
    out: list[Diagnostic] = []
    for i, rf in enumerate(live):
        for other in live[:i]:
            a, b = rf.rule.recommend, other.rule.recommend
            assert a is not None and b is not None
            if a.priority != b.priority or exclusive(rf.rule, other.rule):
                continue
            for k, act in enumerate(a.actions):
                if not isinstance(act.target, str):
                    continue  # a target taken from a matched fact is known only when evaluated
                rival = next((x for x in b.actions if isinstance(x.target, str)
                              and _polarity(act.kind) * _polarity(x.kind) == -1 and (
                    act.target == x.target or vocab.target_drugs(act.target) & vocab.target_drugs(x.target))), None)
                if rival is None:
                    continue
                line = other.doc.positions.of_value(("id",))[0]
                decided = ("the knowledge base's restrictive-wins policy settles it"
                           if severity == "warning" else "under priority-only this is an evaluation error")
                out.append(_at(rf, ("recommend", "actions", k, "kind"), "L102",
                               f"'{act.kind} {act.target}' opposes '{rival.kind} {rival.target}' of "
                               f"{other.rule.id} ({other.file}:{line}) at the same priority; {decided}",
                               "state which wins with 'priority:' on one of the two recommendations", severity))
                break
    return out


def case_coverage(loaded: LoadedRules, paths: list[Path]) -> list[Diagnostic]:
    missing = [p for p in paths if not p.exists()]
    if missing:  # one error per path, not a "no case where it fires" for every rule the cases would have covered
        return [Diagnostic(display_path(p), 1, 1, "E004", f"no such case file or folder: {display_path(p)}",
                           "check the --cases path; case coverage was not checked") for p in missing]
    files = case_files(paths)
    if not files:
        where = ", ".join(display_path(p) for p in paths) or "(none given)"
        return [Diagnostic(display_path(loaded.directory), 1, 1, "L106", f"no case files found in {where}: "
                           "whether each rule fires and stays quiet in a case was not checked",
                           "pass --cases DIR", severity="warning")]
    out: list[Diagnostic] = []
    producers = {rf.rule.derive.fact: rf.rule.id for rf in loaded.rules if rf.rule.derive is not None}
    fired: set[str] = set()
    quiet: set[str] = set()
    vocab = vocabulary()
    # a target taken from a matched fact ({drug_of: ...}) is known only when evaluated: claims name such rules by id
    actions = [(rf.rule.id, a.kind, vocab.drug_id(a.target) or a.target) for rf in loaded.rules
               if rf.rule.recommend is not None for a in rf.rule.recommend.actions if isinstance(a.target, str)]
    for path in files:
        try:
            snap = load_case(path)
        except LoadError as exc:
            out.extend(exc.diagnostics)
            continue
        for exp in snap.expectations:
            fired.update(exp.fires, exp.suppressed, (rid for rid, _ in exp.suppressed_actions))
            quiet.update(exp.not_fires)
            # claims in clinical terms: a recommendation claim covers the rules that can give that action
            for claim in exp.recommends:
                fired.update([claim.rule] if claim.rule else
                             (rid for rid, kind, target in actions if (kind, target) == (claim.kind, claim.target)))
            quiet.update(producers.get(s, s) for s in exp.decided_not_fired)
            for fact, status in exp.assessments:
                rid = producers.get(fact)
                if rid is not None and status in ("met", "met_unreliable"):
                    fired.add(rid)
                elif rid is not None and status in ("not_met", "not_met_unreliable", "not_applicable"):
                    quiet.add(rid)
    for rf in loaded.rules:
        if rf.rule.status == "retired":
            continue
        severity: Severity = "error" if rf.rule.status == "active" else "warning"
        what = "is met" if rf.rule.derive is not None else "fires"
        if rf.rule.id not in fired:
            out.append(_at(rf, ("id",), "L103", f"no case where {rf.rule.id} {what}",
                           "add a case with an expectation that it " + ("is met" if rf.rule.derive else "fires"),
                           severity))
        if rf.rule.id not in quiet:
            out.append(_at(rf, ("id",), "L104", f"no case where {rf.rule.id} must not fire",
                           "add a negative control: a case expecting not_fires, or not_met for an assessment",
                           severity))
    return out


def _texts(rule: Rule) -> Iterator[tuple[PathKey, Any]]:
    yield ("title",), rule.title
    if rule.recommend is not None:
        yield ("recommend", "rationale"), rule.recommend.rationale
        for k, act in enumerate(rule.recommend.actions):
            yield ("recommend", "actions", k, "text"), act.text
            if act.reported_dose is not None:
                yield ("recommend", "actions", k, "reported_dose"), act.reported_dose
    if rule.applies_to is not None:
        yield ("applies_to", "reason"), rule.applies_to.reason
    if rule.derive is not None:
        if rule.derive.summary is not None:
            yield ("derive", "summary"), rule.derive.summary
        for k, caveat in enumerate(rule.derive.caveats):
            yield ("derive", "caveats", k, "text"), caveat.text
        if rule.derive.score is not None:
            for k, band in enumerate(rule.derive.score.interpretation):
                yield ("derive", "score", "interpretation", k, "text"), band.text


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _placeholders(text: str) -> list[str]:
    try:
        return sorted(f"{p.alias}.{p.field}" for p in parse_template(text) if p.alias is not None)
    except TemplateError:
        return []  # reported by the check stage (E205)


def _numbers(text: str) -> list[str]:
    return sorted(_NUMBER.findall(re.sub(r"\{[^}]*\}", "", text)))


def missing_translations(rf: RuleFile) -> list[Diagnostic]:
    """Texts without a translation, and translations whose placeholders or numbers differ from the English."""
    if rf.rule.status == "retired":
        return []
    out = []
    for path, text in _texts(rf.rule):
        if not (isinstance(text, LocalText) and text.zh_CN):
            out.append(_at(rf, path, "L105", f"{format_path(path)} has no {', '.join(LANGUAGES)} translation",
                           "write it as {en: ..., zh-CN: ...}", "warning"))
            continue
        where = (*path, "zh-CN")
        if _placeholders(text.en) != _placeholders(text.zh_CN):
            out.append(_at(rf, where, "L107", f"the zh-CN text quotes {_placeholders(text.zh_CN)}, the English "
                           f"{_placeholders(text.en)}", "quote the same {alias.field} values in every language"))
        elif _numbers(text.en) != _numbers(text.zh_CN):
            out.append(_at(rf, where, "L107", f"the zh-CN text has the numbers {_numbers(text.zh_CN)}, the English "
                           f"{_numbers(text.en)}", "a translation must keep every number, threshold and dose"))
    return out

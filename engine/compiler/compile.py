"""Compile stage: checked rule models -> the engine-agnostic compiled form (``engine.compiler.ir``).

Each leaf condition becomes up to two queries: its *scope* (facts of the right identity inside the time
window) and its *match* (those that also pass the value tests). Identical queries are shared across
rules. Rules are ordered in strata so a rule runs after every rule whose derived fact it uses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from ..core.errors import Diagnostic
from ..core.times import describe_duration, parse_duration
from ..core.units import parse_dose, to_canonical
from ..core.vocab import vocabulary
from ..language.check import evaluable
from ..language.conditions import (
    Anchor,
    Count,
    DerivedSpec,
    DiagnosisSpec,
    FindingSpec,
    MedicationSpec,
    ObservationSpec,
    OrderSpec,
    OrganSupportSpec,
    PatientSpec,
    ReactionSpec,
    Ref,
    WindowFields,
)
from ..language.derivations import Band, Ratio, Score, ValueInput
from ..language.load import LoadedRules, RuleFile
from ..language.metadata import KnowledgeBaseManifest
from ..language.rulemodel import Rule
from ..language.source import format_path
from ..language.tree import Definer, Site, children, definers, derived_uses, kind_of, sites
from .ir import (
    ADMIN,
    CLOCK,
    COURSE,
    DERIVED,
    DIAGNOSIS,
    FINDING,
    OBS,
    ORDER,
    PATIENT,
    REACTION,
    SUPPORT,
    All,
    Any_,
    AnyOf,
    AtLeast,
    BandRule,
    Bound,
    CompiledApplicability,
    CompiledCaveat,
    CompiledRule,
    CompiledScore,
    FieldRef,
    FieldTest,
    Leaf,
    Missing,
    Node,
    Not,
    Op,
    Pattern,
    Query,
    ScoreTerm,
    Selector,
    node_words,
)

OP_TEXT = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "eq": "="}
DOSE_FIELDS = {
    "mass": "dm",
    "mass_per_kg": "dk",
    "mass_per_day": "ddm",
    "mass_per_kg_per_day": "ddk",
    "rate_per_kg": "rk",
    "units_rate_per_kg": "ruk",
}
DOSE_NEEDS = {
    "dm": "body weight (to convert a per-kg dose to mg)",
    "dk": "body weight (to express the dose per kg)",
    "ddm": "dosing frequency or body weight (to express the daily dose)",
    "ddk": "body weight and dosing frequency (to express the daily dose per kg)",
    "rk": "infusion rate per kg",
    "ruk": "infusion rate per kg",
}
SECTIONS = {
    OBS: "observations",
    FINDING: "findings",
    COURSE: "medications",
    ADMIN: "medications",
    ORDER: "orders",
    REACTION: "reactions",
    SUPPORT: "organ_support",
    DIAGNOSIS: "diagnoses",
    DERIVED: "derived",
    PATIENT: "patient",
}


@dataclass(frozen=True)
class CompiledKB:
    """A knowledge base ready to evaluate: the compiled rules, their queries and their sources."""

    manifest: KnowledgeBaseManifest
    content_hash: str
    directory: Path
    rules: tuple[CompiledRule, ...]
    queries: dict[str, Query]
    models: dict[str, Rule]
    files: dict[str, RuleFile]
    include_drafts: bool
    # what the compiled evaluation path precomputes per condition, filled on first use (engine.runtime.evaluate)
    plan: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def strata(self) -> int:
        return 1 + max((r.stratum for r in self.rules), default=0)


class _Queries:
    def __init__(self) -> None:
        self.by_key: dict[tuple[Any, ...], str] = {}
        self.queries: dict[str, Query] = {}

    def add(self, joins: tuple[tuple[str, Pattern], ...], target: Pattern) -> str:
        key = (joins, target)
        qid = self.by_key.get(key)
        if qid is None:
            qid = f"q{len(self.queries) + 1}"
            self.by_key[key] = qid
            self.queries[qid] = Query(qid, joins, target)
        return qid


def _identity(pattern: Pattern) -> Pattern:
    """The tests of a pattern that do not relate it to other facts (used when it is joined as an anchor)."""
    keep: list[FieldTest | AnyOf] = []
    for t in pattern.tests:
        if isinstance(t, FieldTest) and isinstance(t.operand, FieldRef):
            continue
        keep.append(t)
    return Pattern(pattern.kind, tuple(keep))


def _one_of(field: str, values: tuple[str, ...]) -> FieldTest | AnyOf:
    if len(values) == 1:
        return FieldTest(field, "eq", values[0])
    return AnyOf(tuple((FieldTest(field, "eq", v),) for v in values))


def _count(c: Count) -> tuple[Op, int]:
    return c.op()


@dataclass
class _LeafParts:
    fact_kind: str
    world: str
    identity: list[FieldTest | AnyOf]
    values: list[Any]
    selector: Selector
    undecidable: tuple[str, ...]
    subject: str  # what the facts are, in words
    value_text: str  # value tests in words
    missing_what: str


class _RuleCompiler:
    def __init__(self, rf: RuleFile, queries: _Queries, stratum: int) -> None:
        self.rf = rf
        self.queries = queries
        self.stratum = stratum
        self.alias_leaf: dict[str, Leaf] = {}
        self.alias_pattern: dict[str, Pattern] = {}
        self.branch_patterns: dict[str, list[Pattern]] = {}
        self.alias_phrase: dict[str, str] = {}
        self.definers: dict[str, Definer] = {}
        self.vocab = vocabulary()

    def compile(self) -> CompiledRule:
        rule = self.rf.rule
        site_list = sites(rule.when)
        self.definers = definers(site_list)[0]
        all_sites = {s.path: s for s in site_list}
        root = self._node(rule.when, ("when",), all_sites)
        score = None
        caveats: list[CompiledCaveat] = []
        if rule.derive is not None:
            if rule.derive.score is not None:
                score = self._score(rule.derive.score)
            elif rule.derive.ratio is not None:
                score = self._ratio(rule.derive.ratio)
            for i, caveat in enumerate(rule.derive.caveats):
                caveats.append(CompiledCaveat(self._tree(caveat.when, ("derive", "caveats", i, "when")),
                                              tuple(caveat.applies_to), caveat.text))
        applies_to = None
        if rule.applies_to is not None:
            applies_to = CompiledApplicability(self._tree(rule.applies_to.when, ("applies_to", "when")),
                                               rule.applies_to.reason)
        uses = frozenset(fact for fact, _ in derived_uses(rule))
        return CompiledRule(rule.id, rule.version, self.rf.file, rule.status, self.stratum, root,
                            rule.derive.fact if rule.derive else None, uses, dict(self.alias_leaf), score,
                            tuple(caveats), applies_to)

    # --- scores ----------------------------------------------------------------------------------------
    def _tree(self, cond: Any, path: tuple[Any, ...]) -> Node:
        return self._node(cond, path, {s.path: s for s in sites(cond, path)})

    def _value_leaf(self, value: ValueInput, path: tuple[Any, ...]) -> Leaf:
        spec = ObservationSpec.model_validate({"analyte": value.analyte, "within": value.within,
                                               "which": value.which})
        return self._leaf(Site("observation", spec, None, path, (), 0))

    def _bands(self, bands: list[Band], analyte: str | None, unit: str | None) -> tuple[BandRule, ...]:
        def bound(x: float | int | None) -> Fraction | None:
            if x is None:
                return None
            if analyte is not None and unit is not None:
                return Fraction(str(to_canonical(analyte, x, unit)))
            return Fraction(str(x))

        out = []
        for b in bands:
            if b.eq is not None:
                out.append(BandRule(bound(b.eq), True, bound(b.eq), True, Fraction(str(b.points))))
                continue
            lower, lower_inc = (b.gte, True) if b.gte is not None else (b.gt, False)
            upper, upper_inc = (b.lte, True) if b.lte is not None else (b.lt, False)
            out.append(BandRule(bound(lower), lower_inc, bound(upper), upper_inc, Fraction(str(b.points))))
        return tuple(out)

    def _unit(self, value: ValueInput) -> tuple[Fraction, Fraction] | None:
        """The conversion into the unit a value input is written in, when that is not the canonical unit."""
        if value.unit is None:
            return None
        analyte = self.vocab.analytes[value.analyte]
        code = self.vocab.unit_code(value.unit)
        if code is None or code == analyte.canonical:
            return None
        conv = analyte.units[code]
        return conv.factor, conv.offset

    def _plausible(self, analyte: str) -> tuple[Fraction, Fraction]:
        lo, hi = self.vocab.analytes[analyte].plausible
        return Fraction(str(lo)), Fraction(str(hi))

    def _score(self, score: Score) -> CompiledScore:
        terms = []
        for i, term in enumerate(score.terms):
            path = ("derive", "score", "terms", i)
            weight = Fraction(str(term.weight)) if term.weight is not None else None
            points = Fraction(str(term.points)) if term.points is not None else None
            if term.value is not None:
                leaf = self._value_leaf(term.value, (*path, "value"))
                bands = self._bands(term.bands or [], term.value.analyte, term.value.unit)
                label = term.label or self.vocab.analytes[term.value.analyte].name
                terms.append(ScoreTerm(label, "value", leaf, (), weight, None, bands,
                                       self._plausible(term.value.analyte), self._unit(term.value)))
            elif term.if_ is not None:
                node = self._tree(term.if_, (*path, "if"))
                terms.append(ScoreTerm(term.label or node_words(node), "if", None, (node,), weight, points, ()))
            else:
                assert term.count is not None
                nodes = tuple(self._tree(c, (*path, "count", j)) for j, c in enumerate(term.count))
                bands = self._bands(term.bands or [], None, None)
                terms.append(ScoreTerm(term.label or "count of " + "; ".join(node_words(n) for n in nodes),
                                       "count", None, nodes, weight, None, bands))
        return CompiledScore("sum", tuple(terms), Fraction(str(score.constant)), score.cutoff,
                             tuple(score.interpretation))

    def _ratio(self, ratio: Ratio) -> CompiledScore:
        terms = []
        for name, value in (("numerator", ratio.numerator), ("denominator", ratio.denominator)):
            leaf = self._value_leaf(value, ("derive", "ratio", name))
            terms.append(ScoreTerm(self.vocab.analytes[value.analyte].name, "value", leaf, (), None, None, (),
                                   self._plausible(value.analyte), self._unit(value)))
        return CompiledScore("ratio", tuple(terms), Fraction(0), ratio.cutoff, ())

    def _node(self, cond: Any, path: tuple[Any, ...], all_sites: dict[Any, Site]) -> Node:
        kind = kind_of(cond)
        p = format_path(path)
        kids = [self._node(c, cp, all_sites) for c, cp in children(cond, path)]
        if kind == "all":
            return All(p, tuple(kids))
        if kind == "any":
            defines = tuple(sorted(a for a, d in self.definers.items() if d.site.path == path and len(d.leaves) > 1))
            for alias in defines:
                pats = self.branch_patterns.pop(alias, [])
                if len(set(pats)) == 1:
                    self.alias_pattern[alias] = pats[0]
                else:
                    self.alias_pattern[alias] = Pattern(pats[0].kind, (AnyOf(tuple(p.tests for p in pats)),))
            return Any_(p, tuple(kids), defines=defines)
        if kind == "not":
            return Not(p, kids[0])
        if kind == "at_least":
            n = cond.at_least.count
            return AtLeast(p, n, tuple(kids), f"at least {n} of")
        return self._leaf(all_sites[path])

    # --- windows -------------------------------------------------------------------------------------
    def _edge_field(self, anchor: Anchor, default: str) -> str:
        edge = anchor.edge or default
        return {"start": "ts", "end": "te", "time": "ts"}[edge]

    def _window(self, spec: WindowFields, active: bool) -> tuple[list[tuple[str, str, str, float]], str]:
        """Bounds as (lo|hi, alias or 'clk', field, offset) and the window in words."""
        bounds: list[tuple[str, str, str, float]] = []
        words: list[str] = []
        if spec.within is not None:
            bounds.append(("lo", CLOCK, "now", -float(parse_duration(spec.within))))
            words.append(f"in the last {describe_duration(parse_duration(spec.within))}")
        if spec.started_before is not None:
            bounds.append(("hi", CLOCK, "now", -float(parse_duration(spec.started_before))))
            words.append(f"started at least {describe_duration(parse_duration(spec.started_before))} ago")
        if active:
            bounds.append(("lo", CLOCK, "now", 0.0))
            bounds.append(("hi", CLOCK, "now", 0.0))
            words.append("active now")
        if getattr(spec, "exposed", None):
            # running, or the last dose less than one dosing interval (or exposure period) ago (facts.py: xe)
            bounds.append(("xlo", CLOCK, "now", 0.0))
            bounds.append(("hi", CLOCK, "now", 0.0))
            words.append("exposed now (running, or within its dosing interval or the drug's exposure period)")
        if spec.after is not None:
            field = self._edge_field(spec.after, "end")
            bounds.append(("lo", spec.after.fact, field, 0.0))
            edge = "end" if field == "te" else "start"
            text = f"after the {edge} of {self._phrase(spec.after.fact)}"
            if spec.after.within is not None:
                w = float(parse_duration(spec.after.within))
                bounds.append(("hi", spec.after.fact, field, w))
                text += f" (within {describe_duration(w)})"
            words.append(text)
        if spec.before is not None:
            field = self._edge_field(spec.before, "start")
            bounds.append(("hi", spec.before.fact, field, 0.0))
            edge = "end" if field == "te" else "start"
            text = f"before the {edge} of {self._phrase(spec.before.fact)}"
            if spec.before.within is not None:
                w = float(parse_duration(spec.before.within))
                bounds.append(("lo", spec.before.fact, field, -w))
                text += f" (within {describe_duration(w)})"
            words.append(text)
        if spec.during is not None:
            bounds.append(("lo", spec.during, "ts", 0.0))
            bounds.append(("hi", spec.during, "te", 0.0))
            words.append(f"during {self._phrase(spec.during)}")
        if any(b[0] == "lo" and b[1] == CLOCK for b in bounds) and not any(b[0] == "hi" and b[1] == CLOCK
                                                                           for b in bounds):
            # Nothing after the evaluation time exists when facts are built for one time; a session kept
            # across times (replay) holds earlier clocks too, and this keeps later facts off them.
            bounds.append(("hi", CLOCK, "now", 0.0))
        return bounds, ", ".join(words) if words else "at any time"

    def _phrase(self, alias: str) -> str:
        return self.alias_phrase.get(alias, alias)

    # --- leaves ----------------------------------------------------------------------------------------
    def _parts(self, site: Site) -> _LeafParts:
        spec = site.spec
        v = self.vocab
        if isinstance(spec, ObservationSpec):
            analyte = v.analytes[spec.analyte]
            unit = v.display_unit(analyte.canonical)
            written = spec.unit or analyte.canonical

            def canonical(value: float | int | Ref) -> float | FieldRef:
                if isinstance(value, Ref) or spec.unit is None:
                    return self._operand(value, "v")
                return to_canonical(spec.analyte, value, spec.unit)  # exact, as patient values are

            values = [FieldTest("v", op, canonical(value)) for op, value in spec.comparisons()]
            value_text = " and ".join(
                f"{OP_TEXT[op]} {value.ref if isinstance(value, Ref) else f'{value:g} {v.display_unit(written)}'}"
                for op, value in spec.comparisons())
            del unit
            if spec.trend is not None:
                recent = float(parse_duration(spec.within)) if spec.compared_within and spec.within else None
                sel = Selector("trend", direction=spec.trend, recent=recent)
            elif spec.count is not None:
                op, n = _count(spec.count)
                sel = Selector("count", op, n)
            else:
                sel = _which(spec.which, "latest")
            return _LeafParts(OBS, "open", [FieldTest("a", "eq", spec.analyte)], values, sel, (), analyte.name,
                              value_text, analyte.name)
        if isinstance(spec, FindingSpec):
            name = v.findings[spec.code].name
            sel = Selector("count", *_count(spec.count)) if spec.count else _which(spec.which, "latest")
            return _LeafParts(FINDING, "open", [FieldTest("code", "eq", spec.code)],
                              [FieldTest("p", "eq", 1.0 if spec.present else 0.0)], sel, (), name,
                              "present" if spec.present else "absent", name)
        if isinstance(spec, MedicationSpec):
            level = spec.level()
            identity: list[FieldTest | AnyOf] = [self._drug_test(spec.drug, spec.class_, spec.same_drug_as)]
            subject = self._drug_words(spec.drug, spec.class_, spec.same_drug_as)
            if spec.route is not None:
                identity.append(FieldTest("r", "eq", spec.route))
                subject = f"{v.routes[spec.route].name} {subject}"
            dose_tests: list[FieldTest] = []
            undecidable: tuple[str, ...] = ()
            if spec.regimen == "pulse":
                # a pulse is also recognised from the dose, and is undecided when the dose cannot tell (regimen.py)
                dose_tests.append(FieldTest("rg", "eq", spec.regimen))
                undecidable = ("rg",)
                subject += f" ({v.regimens[spec.regimen].name})"
            elif spec.regimen is not None:
                identity.append(FieldTest("rg", "eq", spec.regimen))
                subject += f" ({v.regimens[spec.regimen].name})"
            value_text = ""
            if spec.dose is not None:
                du = parse_dose(1, spec.dose.unit)
                field = DOSE_FIELDS[du.dimension]
                for op, value in spec.dose.comparisons():
                    assert not isinstance(value, Ref)
                    base = parse_dose(value, spec.dose.unit).value
                    dose_tests.append(FieldTest(field, op, base))
                value_text = "dose " + " and ".join(
                    f"{OP_TEXT[op]} {value:g} {spec.dose.unit}" for op, value in spec.dose.comparisons())
                undecidable = (*undecidable, field)
            sel = self._med_selector(spec)
            subject += " course" if level == "course" else ""
            return _LeafParts(COURSE if level == "course" else ADMIN, "closed", identity, dose_tests, sel, undecidable,
                              subject, value_text, "medications")
        if isinstance(spec, OrderSpec):
            sel = Selector("count", *_count(spec.count)) if spec.count else _which(spec.which, "any")
            return _LeafParts(ORDER, "closed", [self._drug_test(spec.drug, spec.class_, spec.same_drug_as)],
                              [_one_of("st", tuple(spec.status))] if set(spec.status) != {"draft", "active"} else [],
                              sel, (), "order for " + self._drug_words(spec.drug, spec.class_, spec.same_drug_as),
                              "status " + " or ".join(spec.status), "medication orders")
        if isinstance(spec, ReactionSpec):
            vals: list[Any] = []
            words: list[str] = []
            if spec.manifestation:
                vals.append(AnyOf(tuple((FieldTest(f"m_{m}", "eq", 1.0),) for m in spec.manifestation)))
                words.append(" or ".join(v.manifestations[m].name for m in spec.manifestation))
            if spec.severity is not None:
                rank = float(v.severities.index(spec.severity.gte or spec.severity.eq or ""))
                vals.append(FieldTest("sev", "gte" if spec.severity.gte else "eq", rank))
                words.append(f"severity {'≥ ' if spec.severity.gte else ''}{spec.severity.gte or spec.severity.eq}")
            undecidable = ("sev",) if spec.severity is not None else ()
            if spec.anaphylaxis is not None:
                vals.append(FieldTest("ana", "eq", 1.0 if spec.anaphylaxis else 0.0))
                words.append("anaphylaxis by the clinical criteria" if spec.anaphylaxis
                             else "not anaphylaxis by the clinical criteria")
                undecidable = (*undecidable, "ana")
            sel = Selector("count", *_count(spec.count)) if spec.count else _which(spec.which, "any")
            if spec.drug is None and spec.class_ is None and spec.same_drug_as is None:
                others = tuple(d for d in v.drugs if d not in (spec.except_drugs or ()))
                ident: list[FieldTest | AnyOf] = [_one_of("d", others)] if spec.except_drugs else []
                subject = "reaction to any drug" + (
                    " except " + ", ".join(v.drugs[d].name for d in spec.except_drugs) if spec.except_drugs else "")
            else:
                ident = [self._drug_test(spec.drug, spec.class_, spec.same_drug_as)]
                subject = "reaction to " + self._drug_words(spec.drug, spec.class_, spec.same_drug_as)
            return _LeafParts(REACTION, "closed", ident, vals, sel, undecidable, subject, ", ".join(words),
                              "adverse reactions")
        if isinstance(spec, OrganSupportSpec):
            sel = Selector("count", *_count(spec.count)) if spec.count else _which(spec.which, "any")
            return _LeafParts(SUPPORT, "closed", [FieldTest("sk", "eq", spec.kind)], [], sel, (),
                              v.organ_support[spec.kind].name, "", "organ support")
        if isinstance(spec, DiagnosisSpec):
            sel = Selector("count", *_count(spec.count)) if spec.count else _which(spec.which, "any")
            return _LeafParts(DIAGNOSIS, "closed", [FieldTest("code", "eq", spec.code)], [], sel, (),
                              f"{v.diagnoses[spec.code].name}", "", "diagnoses")
        if isinstance(spec, DerivedSpec):
            status = spec.status_test()
            values = [FieldTest("st", "eq", status)] if status is not None else []
            for op, value in spec.comparisons():
                # The Rete matches when the whole range of the value passes; "maybe" is decided in evaluate.
                operand = self._operand(value, "v")
                if isinstance(operand, FieldRef):
                    values.append(FieldTest("v", op, operand))
                elif op in ("gt", "gte"):
                    values.append(FieldTest("lo", op, operand))
                elif op in ("lt", "lte"):
                    values.append(FieldTest("hi", op, operand))
                else:
                    values += [FieldTest("lo", "eq", operand), FieldTest("hi", "eq", operand)]
            words = [] if status is None else [status.replace("_", " ")]
            if spec.comparisons():
                words.append("value " + " and ".join(f"{OP_TEXT[op]} {value}" for op, value in spec.comparisons()))
            sel = Selector("derived", *(spec.comparisons()[0][0:1] if len(spec.comparisons()) == 1 else ()))
            return _LeafParts(DERIVED, "closed", [FieldTest("n", "eq", spec.fact)], values, sel,
                              ("lo",) if spec.comparisons() else (), spec.fact, ", ".join(words), spec.fact)
        if isinstance(spec, PatientSpec):
            values = []
            words = []
            undecidable = ()
            sel = Selector("single")
            if spec.age_years is not None:
                op, n = _count(spec.age_years)
                # the Rete matches when every possible age passes; evaluate decides "maybe" (see Selector)
                if op in ("lt", "lte"):
                    values.append(FieldTest("age_hi", op, float(n)))
                elif op in ("gt", "gte"):
                    values.append(FieldTest("age_lo", op, float(n)))
                else:
                    values += [FieldTest("age_lo", "eq", float(n)), FieldTest("age_hi", "eq", float(n))]
                words.append(f"age {OP_TEXT[op]} {n} years")
                undecidable = ("age_lo",)
                sel = Selector("single", op, n)
            if spec.sex is not None:
                values.append(FieldTest("sex", "eq", spec.sex))
                words.append(spec.sex)
            return _LeafParts(PATIENT, "closed", [], values, sel, undecidable, "patient", ", ".join(words),
                              "age or birth date")
        raise TypeError(f"no compiler for {site.kind}")

    def _med_selector(self, spec: MedicationSpec) -> Selector:
        if spec.courses is not None:
            return Selector("count", *_count(spec.courses))
        if spec.doses is not None:
            return Selector("count", *_count(spec.doses))
        if spec.drugs is not None:
            op, n = _count(spec.drugs)
            return Selector("distinct", op, n, distinct_field="d")
        if spec.nth_course is not None:
            return Selector("nth", n=spec.nth_course)
        if spec.count is not None:
            return Selector("count", *_count(spec.count))
        return _which(spec.which, "any")

    def _drug_test(self, drug: str | None, cls: str | None, same_as: str | None = None) -> FieldTest | AnyOf:
        if same_as is not None:
            return FieldTest("d", "eq", FieldRef(same_as, "d"))  # rule alias for now; mapped to a join alias in _leaf
        if drug is not None:
            return FieldTest("d", "eq", drug)
        assert cls is not None
        return _one_of("d", self.vocab.drugs_in_class(cls))

    def _drug_words(self, drug: str | None, cls: str | None, same_as: str | None = None) -> str:
        if same_as is not None:
            return f"the drug of {self._phrase(same_as)}"
        if drug is not None:
            return self.vocab.drugs[drug].name
        assert cls is not None
        return self.vocab.drug_classes[cls]

    def _operand(self, value: float | int | Ref, field: str) -> float | FieldRef:
        if isinstance(value, Ref):
            return FieldRef(value.ref, field)  # rule alias for now; mapped to a join alias in _leaf
        return float(value)

    def _selector_words(self, sel: Selector, fact_kind: str) -> str:
        things = {COURSE: "courses", ADMIN: "administrations"}.get(fact_kind, "records")
        if fact_kind == OBS:
            things = "measurements"
        if sel.mode == "latest":
            return "latest" if fact_kind in (OBS, FINDING) else "the latest"
        if sel.mode == "earliest":
            return "the earliest"
        if sel.mode == "any":
            return "any" if fact_kind in (OBS, FINDING) else ""
        if sel.mode == "all":
            return f"all {things}"
        if sel.mode == "count":
            return f"{OP_TEXT[sel.op or 'gte']} {sel.n} {things}"
        if sel.mode == "distinct":
            return f"{OP_TEXT[sel.op or 'gte']} {sel.n} different drugs"
        if sel.mode == "nth":
            n = sel.n or 1
            suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
            return f"the {n}{suffix}"
        if sel.mode == "trend" and sel.recent is not None:
            return f"{sel.direction}: latest, in the last {describe_duration(sel.recent)}, vs the one before"
        if sel.mode == "trend":
            return f"{sel.direction}: latest vs the one before"
        return ""

    def _leaf(self, site: Site) -> Leaf:
        spec = site.spec
        parts = self._parts(site)
        active = bool(getattr(spec, "active", None))
        if isinstance(spec, ObservationSpec) and spec.compared_within is not None:
            # the window holds the earlier measurement too; the evaluator checks the latest is recent enough
            spec = spec.model_copy(update={"within": spec.compared_within})
        bounds, window_text = self._window(spec, active) if isinstance(spec, WindowFields) else ([], "")
        join_alias: dict[str, str] = {}
        joins: list[tuple[str, Pattern]] = []

        def ja(rule_alias: str) -> str:
            if rule_alias == CLOCK:
                if CLOCK not in join_alias:
                    join_alias[CLOCK] = CLOCK
                    joins.append((CLOCK, Pattern(CLOCK)))
                return CLOCK
            if rule_alias not in join_alias:
                name = f"a{sum(1 for a in join_alias if a != CLOCK)}"
                join_alias[rule_alias] = name
                joins.append((name, self.alias_pattern[rule_alias]))
            return join_alias[rule_alias]

        window_tests: list[FieldTest] = []
        starts: list[Bound] = []
        for side, alias, field, offset in bounds:
            ref = FieldRef(ja(alias), field, offset)
            window_tests.append(FieldTest("xe", "gte", ref) if side == "xlo" else
                                FieldTest("te", "gte", ref) if side == "lo" else FieldTest("ts", "lte", ref))
            if side == "lo" and alias != CLOCK:
                starts.append(Bound(alias, field, offset))
        identity = [FieldTest(t.field, t.op, FieldRef(ja(t.operand.alias), t.operand.field))
                    if isinstance(t, FieldTest) and isinstance(t.operand, FieldRef) else t for t in parts.identity]
        scope_target = Pattern(parts.fact_kind, (*identity, *window_tests))
        scope_joins = tuple(joins)
        scope = self.queries.add(scope_joins, scope_target)
        value_refs: list[str] = []
        values: list[FieldTest | AnyOf] = []
        for t in parts.values:
            if isinstance(t, AnyOf):
                values.append(t)
            elif isinstance(t.operand, FieldRef):
                value_refs.append(t.operand.alias)
                values.append(FieldTest(t.field, t.op, FieldRef(ja(t.operand.alias), t.operand.field)))
            else:
                values.append(t)
        match = None
        if values:
            match = self.queries.add(tuple(joins), Pattern(parts.fact_kind, (*scope_target.tests, *values)))
        sel_words = self._selector_words(parts.selector, parts.fact_kind)
        label = parts.subject
        if parts.value_text:
            label += f": {parts.value_text}"
        details = [w for w in (sel_words, window_text) if w and w != "at any time"]
        if details and parts.selector.mode not in ("derived", "single"):
            label += f" ({'; '.join(details)})"
        missing, undecided = self._missing(site, parts, window_text)
        line, col = self.rf.doc.positions.of_value(site.path)
        leaf = Leaf(
            path=format_path(site.path),
            kind=site.kind,
            fact_kind=parts.fact_kind,
            section=SECTIONS[parts.fact_kind],
            world="open" if parts.world == "open" else "closed",
            scope=scope,
            match=match,
            selector=parts.selector,
            anchors=tuple((j, a) for a, j in join_alias.items() if a != CLOCK),
            window_starts=tuple(starts),
            value_refs=tuple(value_refs),
            alias=site.alias,
            undecidable=parts.undecidable,
            label=label,
            missing=missing,
            undecided=undecided,
            derived_fact=spec.fact if isinstance(spec, DerivedSpec) else None,
            derived_status=spec.status_test() if isinstance(spec, DerivedSpec) else None,
            derived_values=tuple((op, float(v)) for op, v in spec.comparisons() if not isinstance(v, Ref))
            if isinstance(spec, DerivedSpec) else (),
            drug_join=getattr(spec, "same_drug_as", None),
            line=line,
            col=col,
        )
        if site.alias is not None:
            self.alias_leaf.setdefault(site.alias, leaf)
            if parts.selector.mode == "nth":
                self.alias_phrase.setdefault(site.alias, f"{sel_words} {parts.subject}")
            else:
                self.alias_phrase.setdefault(site.alias, f"the {parts.subject}")
            definer = self.definers.get(site.alias)
            if definer is not None and len(definer.leaves) > 1:
                self.branch_patterns.setdefault(site.alias, []).append(_identity(scope_target))
            else:
                self.alias_pattern[site.alias] = _identity(scope_target)
        return leaf

    def _missing(self, site: Site, parts: _LeafParts, window_text: str) -> \
            tuple[tuple[Missing, ...], tuple[Missing, ...]]:
        path = format_path(site.path)
        where = "" if window_text == "at any time" else f" {window_text}"
        out: list[Missing] = []
        values: list[Missing] = []
        if parts.fact_kind == OBS:
            if parts.selector.mode == "trend" and parts.selector.recent is not None:
                out.append(Missing(parts.missing_what, f"a measurement in the last "
                                   f"{describe_duration(parts.selector.recent)} and one before it{where}", path))
            elif parts.selector.mode == "trend":
                out.append(Missing(parts.missing_what, f"at least two measurements{where}", path))
            else:
                out.append(Missing(parts.missing_what, f"a measurement{where}", path))
        elif parts.fact_kind == FINDING:
            out.append(Missing(parts.missing_what, f"recorded as present or absent{where}", path))
        for field in parts.undecidable:
            if field in DOSE_NEEDS:
                values.append(Missing(DOSE_NEEDS[field].split(" (")[0], DOSE_NEEDS[field], path))
            elif field == "age_lo":
                values.append(Missing("birth date", "the age is not known precisely enough to decide "
                                      "the age condition", path))
            elif field == "v":
                values.append(Missing(parts.subject, "its value was not computed", path))
            elif field == "rg":
                values.append(Missing("glucocorticoid dose or body weight", "the daily dose (with the body weight "
                                      "when it is per kg) decides whether a course is a pulse", path))
            elif field == "sev":
                values.append(Missing("reaction severity", f"the severity of the {parts.subject} is not recorded",
                                      path))
        return tuple(out), tuple(values)


def _which(which: str | None, default: str) -> Selector:
    mode = {"highest": "max", "lowest": "min"}.get(which or default, which or default)
    return Selector(mode)  # type: ignore[arg-type]  # the rule model allows only valid names


def _strata(rules: list[RuleFile]) -> dict[str, int]:
    producers = {rf.rule.derive.fact: rf for rf in rules if rf.rule.derive is not None}
    memo: dict[str, int] = {}

    def depth(rf: RuleFile, stack: frozenset[str]) -> int:
        rid = rf.rule.id
        if rid in memo:
            return memo[rid]
        best = 0
        for fact, _ in derived_uses(rf.rule):
            if fact in producers:
                producer = producers[fact]
                if producer.rule.id in stack:  # cycles are reported by the check stage
                    continue
                best = max(best, 1 + depth(producer, stack | {rid}))
        memo[rid] = best
        return best

    return {rf.rule.id: depth(rf, frozenset()) for rf in rules}


def compile_kb(loaded: LoadedRules, include_drafts: bool = False) -> tuple[CompiledKB, list[Diagnostic]]:
    rules = [rf for rf in loaded.rules if evaluable(rf.rule, include_drafts)]
    strata = _strata(rules)
    rules.sort(key=lambda rf: (strata[rf.rule.id], rf.rule.id))
    queries = _Queries()
    compiled = [_RuleCompiler(rf, queries, strata[rf.rule.id]).compile() for rf in rules]
    kb = CompiledKB(
        manifest=loaded.manifest,
        content_hash=loaded.content_hash,
        directory=loaded.directory,
        rules=tuple(compiled),
        queries=queries.queries,
        models={rf.rule.id: rf.rule for rf in rules},
        files={rf.rule.id: rf for rf in rules},
        include_drafts=include_drafts,
    )
    return kb, []

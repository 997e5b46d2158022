"""Evaluate stage: decide every rule for one snapshot at one time, in strata, with three-valued logic.

The matching backend says which facts satisfy each query; this module decides the rest in plain Python:
which fact a condition is about (latest, n-th, counts, trends), whether absence means "no" (medications,
diagnoses: the record is the list) or "unknown" (labs and findings: not measured is not normal), and how
conditions combine (Kleene logic: a rule is true, false, or undecided with the inputs that would decide
it). Derived facts of one stratum are added to the session before the next stratum runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from ..compiler.compile import CompiledKB
from ..compiler.ir import (
    DERIVED,
    All,
    Any_,
    AtLeast,
    CompiledRule,
    FieldTest,
    Leaf,
    Missing,
    Node,
    Not,
    Verdict,
    leaves,
    node_words,
)
from ..core.errors import EvaluationError, MascdsError
from ..core.snapshot import Course, Snapshot
from ..core.times import iso
from ..core.vocab import vocabulary
from ..language.actions import Recommend
from ..language.fields import text_in
from ..language.rulemodel import Rule
from ..language.scope import decide_scope
from ..language.templates import parse, render
from .describe import fact_json_with_text, template_field
from .facts import DERIVED_SECTION, Fact, build_facts, clock_fact
from .history import Line, suppressing_line, treatment_history
from .match import MatchSession, holds
from .regimen import pulse_missing
from .result import (
    Action,
    Assessment,
    Citation,
    KnowledgeBaseInfo,
    Matched,
    NodeResult,
    Recommendation,
    Result,
    RuleError,
    ScoreResult,
    Suppression,
    Undecided,
)
from .scores import classify, evaluate_score, interpretation
from .timing import time_warnings

RESTRICTIVE = frozenset({"stop", "avoid"})
# Put before a caveat whose condition could not be decided, by language (English by default).
UNCHECKED_CAVEAT = {"en": "Could not be checked, so treat with caution: ", "zh-CN": "无法核实，请谨慎对待："}
PERMISSIVE = frozenset({"start", "consider"})
INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
MAX_FACTS_SHOWN = 12


@dataclass(frozen=True)
class Binding:
    fact: Fact
    count: int | None = None
    previous: Fact | None = None
    nth: int | None = None
    matched: tuple[Fact, ...] = ()  # every fact that passed, when several may (an action per drug uses them)


def _dedupe(items: Iterable[Missing]) -> tuple[Missing, ...]:
    seen: dict[tuple[str, str], Missing] = {}
    for m in items:
        seen.setdefault((m.what, m.detail), m)
    return tuple(seen.values())


def _candidates(res: NodeResult) -> list[Fact]:
    """The facts an undecided condition was about (the leaves' undecided facts)."""
    if isinstance(res.node, Leaf):
        return list(res.facts)
    return [f for child in res.children if child.verdict == "unknown" for f in _candidates(child)]


def _union(facts: Iterable[Fact]) -> tuple[Fact, ...]:
    """Facts once each (by id), in record order."""
    return tuple(sorted({f.id: f for f in facts}.values(), key=_order_key))


def _order_key(f: Fact) -> tuple[float, tuple[int, int, int], str]:
    """Time, then the fact's place in the record: the same order whatever ids a session gave the facts."""
    return (float(f.data["ts"]), f.key, f.id)


def _count_verdict(op: str, n: int, lo: int, hi: float) -> Verdict:
    if op == "gt":
        return "true" if lo > n else ("false" if hi <= n else "unknown")
    if op == "gte":
        return "true" if lo >= n else ("false" if hi < n else "unknown")
    if op == "lt":
        return "true" if hi < n else ("false" if lo >= n else "unknown")
    if op == "lte":
        return "true" if hi <= n else ("false" if lo > n else "unknown")
    if lo == hi:
        return "true" if lo == n else "false"
    return "false" if n < lo or n > hi else "unknown"


class RuleEvaluator:
    """Decides the rules of one evaluation against one match session."""

    def __init__(self, kb: CompiledKB, session: MatchSession, facts: dict[str, Fact], now: int,
                 snapshot: Snapshot) -> None:
        self.kb = kb
        self.session = session
        self.facts = facts
        self.now = now
        self.snapshot = snapshot
        self.answers: dict[tuple[str, tuple[str, ...]], frozenset[str]] = {}

    # --- one leaf --------------------------------------------------------------------------------------
    def _ids(self, qid: str, leaf: Leaf, bindings: dict[str, Binding]) -> frozenset[str]:
        """Ids of the facts matching query ``qid`` with its anchors bound as in ``bindings``."""
        query = self.kb.queries[qid]
        to_rule = dict(leaf.anchors)
        positions = [(i, to_rule[a]) for i, a in enumerate(query.aliases[:-1]) if a in to_rule]
        key = (qid, tuple(bindings[alias].fact.id for _, alias in positions))
        found = self.answers.get(key)
        if found is None:
            # group the query's answers by its anchors once; each binding then looks its group up
            slots = tuple(i for i, _ in positions)
            groups: dict[tuple[str, ...], set[str]] = {}
            for t in self.session.tuples(qid):
                groups.setdefault(tuple(t[i] for i in slots), set()).add(t[-1])
            for anchors, ids in groups.items():
                self.answers[(qid, anchors)] = frozenset(ids)
            found = self.answers.setdefault(key, frozenset())
        return found

    def leaf(self, lf: Leaf, bindings: dict[str, Binding], verdicts: dict[str, NodeResult]) -> \
            tuple[NodeResult, Binding | None]:
        join = lf.drug_join
        anchor = bindings.get(join) if join is not None else None
        if join is None or anchor is None or len({f.data["d"] for f in anchor.matched}) < 2:
            return self._leaf(lf, bindings, verdicts)
        # "the same drug as a": a may have matched facts of several drugs (reactions to two drugs); the leaf
        # holds when it holds for one of them, each taken at its latest matched fact
        latest: dict[str, Fact] = {}
        for f in anchor.matched:
            latest[str(f.data["d"])] = f
        tried = [self._leaf(lf, {**bindings, join: replace(anchor, fact=f)}, verdicts) for f in latest.values()]
        held = [(r, b) for r, b in tried if r.verdict == "true" and b is not None]
        if held:
            facts = _union(f for r, _ in held for f in r.facts)
            seen = _union(f for r, _ in held for f in r.seen)
            matched = _union(f for _, b in held for f in (b.matched or (b.fact,)))
            return NodeResult(lf, "true", facts, seen), Binding(matched[-1], count=len(matched), matched=matched)
        for r, _ in tried:
            if r.verdict == "unknown":
                missing = _dedupe(m for r2, _ in tried if r2.verdict == "unknown" for m in r2.missing)
                return NodeResult(lf, "unknown", r.facts, r.seen, missing, (), r.note), None
        return tried[-1][0], None

    def _leaf(self, lf: Leaf, bindings: dict[str, Binding], verdicts: dict[str, NodeResult]) -> \
            tuple[NodeResult, Binding | None]:
        for _, alias in lf.anchors:
            if alias not in bindings:
                src = verdicts[alias]
                if src.verdict == "false":
                    return NodeResult(lf, "false", note=f"'{alias}' did not match"), None
                if alias == lf.drug_join and lf.world == "closed" and lf.section not in self.snapshot.unknown_sections:
                    # whatever the undecided facts turn out to be, nothing of their drugs is recorded: false
                    drugs = {f.data.get("d") for f in _candidates(src)}
                    if not any(f.data["k"] == lf.fact_kind and f.data.get("d") in drugs for f in self.facts.values()):
                        return NodeResult(lf, "false", note=f"nothing recorded of the drug of '{alias}'"), None
                return NodeResult(lf, "unknown", missing=src.missing, note=f"'{alias}' is undecided"), None
        for b in lf.window_starts:
            start = float(bindings[b.alias].fact.data[b.field]) + b.offset
            if start > self.now:
                return NodeResult(lf, "false", note="its time window has not started by the evaluation time"), None
        scope = sorted((self.facts[i] for i in self._ids(lf.scope, lf, bindings)), key=_order_key)
        match_ids = self._ids(lf.match, lf, bindings) if lf.match is not None else frozenset(f.id for f in scope)
        matched = [f for f in scope if f.id in match_ids]
        undecided = [f for f in scope if f.id not in match_ids and any(k not in f.data for k in lf.undecidable)] \
            if lf.undecidable else []
        section_unknown = lf.section in self.snapshot.unknown_sections
        open_world = lf.world == "open" or section_unknown
        no_data = tuple(lf.missing) if lf.world == "open" else (
            Missing(lf.section.replace("_", " "), "not provided in the record", lf.path),)
        value_missing = lf.undecided if undecided else ()
        if undecided and "rg" in lf.undecidable:  # name what each course needs to be told a pulse or not
            value_missing = tuple(m for m in value_missing if m.what != "glucocorticoid dose or body weight") + \
                tuple(pulse_missing(f.entry, lf.path) for f in undecided
                      if "rg" not in f.data and isinstance(f.entry, Course))
        if "ana" in lf.undecidable:  # what would decide each reaction's anaphylaxis criteria, named per reaction
            value_missing = (*value_missing, *(m for f in undecided
                                               for m in getattr((f.extra or {}).get("anaphylaxis"), "missing", ())))
        sel = lf.selector
        mode = sel.mode

        def result(verdict: Verdict, facts: list[Fact], missing: tuple[Missing, ...] = (),
                   note: str = "") -> NodeResult:
            return NodeResult(lf, verdict, tuple(facts), tuple(scope), _dedupe(missing), (), note)

        if mode == "derived":
            if not scope:
                return result("unknown", [], (Missing(lf.derived_fact or "", "assessment not evaluated",
                                                      lf.path),)), None
            f = scope[-1]
            if f.id in match_ids:
                return result("true", [f]), Binding(f)
            verdict, missing, note = _derived_verdict(lf, f)
            return result(verdict, [f], missing, note), None
        if mode == "single":
            if not scope:
                return result("unknown", [], no_data), None
            f = scope[0]
            if f.id in match_ids:
                return result("true", [f]), Binding(f)
            if undecided or (sel.op is not None and _age_possible(f, sel.op, sel.n or 0, self.kb, lf)):
                return result("unknown", [f], lf.undecided), None
            return result("false", [f]), None
        if not scope:
            if open_world:
                return result("unknown", [], no_data, "nothing recorded in the window"), None
            return result("false", [], note="nothing recorded in the window"), None
        if mode in ("latest", "earliest", "max", "min"):
            if mode in ("max", "min"):
                pick = max if mode == "max" else min
                f = pick(scope, key=lambda x: (float(x.data["v"]), _order_key(x)))
            else:
                f = scope[-1] if mode == "latest" else scope[0]
            if f.id in match_ids:
                return result("true", [f]), Binding(f)
            if f in undecided:
                return result("unknown", [f], value_missing), None
            return result("false", [f]), None
        if mode == "any":
            if matched:
                return result("true", matched), Binding(matched[-1], count=len(matched), matched=tuple(matched))
            if undecided:
                return result("unknown", undecided, value_missing), None
            if section_unknown:
                return result("unknown", [], no_data), None
            return result("false", []), None
        if mode == "all":
            failing = [f for f in scope if f.id not in match_ids and f not in undecided]
            if failing:
                return result("false", failing), None
            if undecided:
                return result("unknown", undecided, value_missing), None
            return result("true", scope), Binding(scope[-1], count=len(scope))
        if mode == "count":
            lo = len(matched)
            hi: float = lo + len(undecided)
            if section_unknown:
                hi = math.inf
            verdict = _count_verdict(sel.op or "gte", sel.n or 0, lo, hi)
            missing = value_missing + (no_data if section_unknown else ())
            binding = Binding(matched[-1], count=lo) if verdict == "true" and matched else None
            return result(verdict, matched, missing if verdict == "unknown" else (),
                          f"{lo} matching"), binding
        if mode == "distinct":
            field = sel.distinct_field or "d"
            have = {f.data.get(field) for f in matched}
            maybe = have | {f.data.get(field) for f in undecided}
            hi = math.inf if section_unknown else len(maybe)
            verdict = _count_verdict(sel.op or "gte", sel.n or 0, len(have), hi)
            binding = Binding(matched[-1], count=len(have)) if verdict == "true" and matched else None
            return result(verdict, matched, value_missing if verdict == "unknown" else (),
                          f"{len(have)} different"), binding
        if mode == "nth":
            n = sel.n or 1
            candidates = sorted([*matched, *undecided], key=_order_key)
            if len(matched) >= n:
                nth = matched[n - 1]
                if all(_order_key(u) > _order_key(nth) for u in undecided):
                    return result("true", [nth]), Binding(nth, nth=n, count=len(matched))
                return result("unknown", candidates[:n], value_missing), None
            if len(candidates) >= n or section_unknown:
                return result("unknown", candidates, value_missing + (no_data if section_unknown else ())), None
            return result("false", matched, note=f"only {len(matched)}"), None
        if mode == "trend":
            if sel.recent is not None and float(scope[-1].data["ts"]) < self.now - sel.recent:
                return result("unknown", scope, lf.missing, "no recent measurement"), None
            if len(scope) < 2:
                return result("unknown", scope, lf.missing, "fewer than two measurements"), None
            prev, last = scope[-2], scope[-1]
            before, latest = float(prev.data["v"]), float(last.data["v"])
            ok = latest > before if sel.direction == "rising" else latest < before
            if ok:
                return result("true", [prev, last]), Binding(last, previous=prev)
            return result("false", [prev, last]), None
        raise EvaluationError(f"unknown selector {mode}")

    # --- the tree --------------------------------------------------------------------------------------
    def node(self, node: Node, bindings: dict[str, Binding], verdicts: dict[str, NodeResult]) -> NodeResult:
        if isinstance(node, Leaf):
            res, binding = self.leaf(node, bindings, verdicts)
            if node.alias is not None:
                verdicts[node.alias] = res
                if binding is not None and res.verdict == "true" and node.alias not in bindings:
                    bindings[node.alias] = binding  # in an any, the first true branch binds
                elif binding is not None and res.verdict == "true" and binding.matched:
                    # ... and a later true branch adds what it matched (an action per drug uses them all)
                    old = bindings[node.alias]
                    bindings[node.alias] = replace(old, matched=_union((*(old.matched or (old.fact,)),
                                                                        *binding.matched)))
            return res
        if isinstance(node, Not):
            child = self.node(node.child, bindings, verdicts)
            flipped: Verdict = {"true": "false", "false": "true", "unknown": "unknown"}[child.verdict]  # type: ignore[assignment]
            return NodeResult(node, flipped, missing=child.missing, children=(child,))
        kids = tuple([self.node(c, bindings, verdicts) for c in node.children])
        counts = {"true": 0, "false": 0, "unknown": 0}
        for k in kids:
            counts[k.verdict] += 1
        unknown_missing = _dedupe(m for k in kids if k.verdict == "unknown" for m in k.missing)
        verdict: Verdict
        if isinstance(node, All):
            verdict = "false" if counts["false"] else ("unknown" if counts["unknown"] else "true")
        elif isinstance(node, Any_):
            verdict = "true" if counts["true"] else ("unknown" if counts["unknown"] else "false")
        else:
            assert isinstance(node, AtLeast)
            t, u = counts["true"], counts["unknown"]
            verdict = "true" if t >= node.n else ("false" if t + u < node.n else "unknown")
        result = NodeResult(node, verdict, missing=unknown_missing if verdict == "unknown" else (), children=kids,
                            note=f"{counts['true']} of {len(kids)} hold")
        if isinstance(node, Any_):
            for alias in node.defines:
                verdicts[alias] = result
        return result

    def rule(self, cr: CompiledRule) -> tuple[NodeResult, dict[str, Binding]]:
        bindings: dict[str, Binding] = {}
        verdicts: dict[str, NodeResult] = {}
        return self.node(cr.root, bindings, verdicts), bindings

    def outcome(self, cr: CompiledRule, res: NodeResult, rule: Rule, lang: str) -> Outcome:
        return derive_outcome(self, cr, res, rule, lang)


def _derived_verdict(lf: Leaf, f: Fact) -> tuple[Verdict, tuple[Missing, ...], str]:
    """For a derived fact the Rete did not match: false, or unknown when it still could hold."""
    status = str(f.data["st"])
    extra = f.extra or {}
    inner: tuple[Missing, ...] = tuple(extra.get("missing", ()))
    verdicts: list[tuple[Verdict, tuple[Missing, ...], str]] = []
    want = lf.derived_status
    if want is not None:
        if status == want:
            verdicts.append(("true", (), ""))
        elif status.endswith("_unreliable"):
            # an unreliable result answers no question about itself: "not met" under a caveat may be met
            caveats = tuple(Missing(f"{lf.derived_fact} is unreliable here - a clinical judgement", str(c), lf.path)
                            for c in extra.get("caveats", ()))
            verdicts.append(("unknown", caveats, "the assessment is unreliable here"))
        elif status == "indeterminate":
            verdicts.append(("unknown", inner, "the assessment is undecided"))
        elif status == "not_applicable":
            # outside its population the assessment says nothing: it is neither met nor "not met"
            verdicts.append(("false", (), "the assessment is not applicable to this patient"))
        else:
            verdicts.append(("false", (), ""))
    if lf.derived_values:
        lo, hi = f.data.get("lo"), f.data.get("hi")
        if lo is None:
            verdicts.append(("unknown", inner, "the value is undecided") if status == "indeterminate"
                            else ("false", (), "no value"))
        else:
            high = math.inf if hi is None else float(hi)
            certain = all(_compare(op, float(lo), high, n, certain=True) for op, n in lf.derived_values)
            possible = all(_compare(op, float(lo), high, n, certain=False) for op, n in lf.derived_values)
            # a decided score can still straddle this comparison: then its unrecorded inputs decide it
            open_inputs = inner or tuple(extra.get("unrecorded", ()))
            either_way: tuple[Verdict, tuple[Missing, ...], str] = (
                "unknown", open_inputs, "the value could go either way")
            verdicts.append(("true", (), "") if certain else either_way if possible else ("false", (), ""))
    if any(v == "false" for v, _, _ in verdicts):
        return "false", (), ""
    unknown = [(m, n) for v, m, n in verdicts if v == "unknown"]
    if unknown:
        return "unknown", tuple(m for ms, _ in unknown for m in ms), unknown[0][1]
    return "true", (), ""


def _compare(op: str, lo: float, hi: float, n: float, certain: bool) -> bool:
    """Whether every value (certain) or some value (not certain) in [lo, hi] satisfies ``op n``."""
    if op in ("gt", "gte"):
        x = lo if certain else hi
        return x > n if op == "gt" else x >= n
    if op in ("lt", "lte"):
        x = hi if certain else lo
        return x < n if op == "lt" else x <= n
    return (lo == hi == n) if certain else (lo <= n <= hi)


def _age_possible(f: Fact, op: str, n: int, kb: CompiledKB, lf: Leaf) -> bool:
    """Whether some age in the patient's possible range passes, when the other tests of the leaf pass."""
    lo, hi = f.data.get("age_lo"), f.data.get("age_hi")
    if lo is None or hi is None:
        return False
    ok = {"lt": lo < n, "lte": lo <= n, "gt": hi > n, "gte": hi >= n, "eq": lo <= n <= hi}[op]
    others = [t for t in (kb.queries[lf.match].target.tests if lf.match else ())
              if isinstance(t, FieldTest) and t.field not in ("age_lo", "age_hi")]
    return ok and all(holds(t, f.data, {}) for t in others)


@dataclass(frozen=True)
class Outcome:
    """What a derive rule concluded: its status, the score if any, and why it may not be trusted."""

    status: str  # met | not_met | indeterminate | not_applicable
    missing: tuple[Missing, ...] = ()
    score: ScoreResult | None = None
    caveats: tuple[str, ...] = ()
    interpretation: str | None = None
    not_applicable_reason: str | None = None
    population: NodeResult | None = None  # the decision on applies_to, for explanations

    @property
    def fact_status(self) -> str:
        return f"{self.status}_unreliable" if self.caveats and self.status != "indeterminate" else self.status


def applicability(ev: RuleEvaluator, cr: CompiledRule, lang: str) -> Outcome | None:
    """The outcome of an assessment outside its population (not applicable, with the reason), undecided when
    the record cannot say whether the patient belongs to it, "applies" when it does; None without applies_to."""
    if cr.applies_to is None:
        return None
    population = ev.node(cr.applies_to.node, {}, {})
    if population.verdict == "false":
        return Outcome("not_applicable", not_applicable_reason=text_in(cr.applies_to.reason, lang),
                       population=population)
    if population.verdict == "unknown":
        return Outcome("indeterminate", _dedupe(population.missing), population=population)
    return Outcome("applies", population=population)


def derive_outcome(ev: RuleEvaluator, cr: CompiledRule, res: NodeResult, rule: Rule, lang: str) -> Outcome:
    population = applicability(ev, cr, lang)
    if population is not None and population.status != "applies":
        return population
    status = {"true": "met", "false": "not_met", "unknown": "indeterminate"}[res.verdict]
    missing = res.missing
    score: ScoreResult | None = None
    words: str | None = None
    if cr.score is not None and res.verdict == "true":  # 'when' says where the score applies
        bindings: dict[str, Binding] = {}
        verdicts: dict[str, NodeResult] = {}
        score = evaluate_score(cr.score, lambda leaf: ev.leaf(leaf, bindings, verdicts)[0],
                               lambda node: ev.node(node, bindings, verdicts))
        if score.low is None:
            status, missing = "not_met", ()
        elif cr.score.cutoff is not None:
            status = classify(cr.score.cutoff, score.low, score.high)
            missing = score.missing if status == "indeterminate" else ()
        else:
            status = "met" if score.exact is not None else "indeterminate"
            missing = score.missing if status == "indeterminate" else ()
        if score.low is not None:
            words = interpretation(cr.score.interpretation, score.low, score.high, lambda t: text_in(t, lang))
    caveats: list[str] = []
    for caveat in cr.caveats:
        if status not in caveat.applies_to:
            continue
        verdict = ev.node(caveat.node, {}, {}).verdict
        if verdict == "true":
            caveats.append(text_in(caveat.text, lang))
        elif verdict == "unknown":
            caveats.append(UNCHECKED_CAVEAT.get(lang, UNCHECKED_CAVEAT["en"]) + text_in(caveat.text, lang))
    return Outcome(status, _dedupe(missing), score, tuple(caveats), words,
                   population=population.population if population is not None else None)


def _num(x: Fraction) -> float:
    return float(f"{float(x):.6g}")


# --- building the result --------------------------------------------------------------------------------

def citations(rule: Rule, drugs: Iterable[str] = ()) -> tuple[Citation, ...]:
    """The rule's sources, then the product information of each drug an action was bound to (drugs.yaml)."""
    out = [Citation(s.reference, s.reported, s.doi, s.pmid) for s in rule.sources]
    for d in drugs:
        label = vocabulary().drugs[d].label
        if label is not None:
            out.append(Citation(label.reference, label.reported, None, None, label.url))
    return tuple(out)


def bound_actions(rec: Recommend, bindings: dict[str, Binding],
                  lang: str) -> tuple[tuple[Action, ...], tuple[str, ...]]:
    """A recommendation's actions with every target taken from a matched fact resolved to that fact's drug:
    one action per different drug matched, in the order first matched. Also the drugs so bound."""
    vocab = vocabulary()
    out: list[Action] = []
    bound: list[str] = []
    for a in rec.actions:
        if isinstance(a.target, str):
            targets = [a.target]
        else:
            b = bindings[a.target.drug_of]
            facts = b.matched or (b.fact,)
            targets = list(dict.fromkeys(str(f.data["d"]) for f in facts))
            bound.extend(t for t in targets if t not in bound)
        for t in targets:
            name = vocab.target_name(t, lang)
            # a target taken from the record is named in the text, which the rule could only write generically
            text = text_in(a.text, lang) if isinstance(a.target, str) else f"{name}: {text_in(a.text, lang)}"
            out.append(Action(a.kind, t, name, text,
                              text_in(a.reported_dose, lang) if a.reported_dose else None))
    return tuple(out), tuple(bound)


def matched_entries(res: NodeResult, derived: dict[str, tuple[NodeResult, str]], start: int | None,
                    cache: dict[str, tuple[Matched, ...]] | None = None, lang: str = "en") -> list[Matched]:
    """The conditions that held along the true paths of a tree, with their facts (described in ``lang``).
    ``cache`` keeps the reasons of each derived fact, built once per evaluation however many rules use it."""
    if cache is None:
        cache = {}
    node = res.node
    if res.verdict != "true":
        return []
    if isinstance(node, Leaf):
        facts = res.facts[-MAX_FACTS_SHOWN:]
        if node.fact_kind == DERIVED and res.facts:
            f = res.facts[-1]
            name = str(f.data["n"])
            inner, rule_id = derived.get(name, (None, ""))
            if name not in cache:
                cache[name] = tuple(matched_entries(inner, derived, start, cache, lang)) if inner is not None else ()
            because = cache[name]
            return [Matched(node.label, node.path, tuple(fact_json_with_text(x, start, lang) for x in facts), False,
                            {"fact": name, "status": f.data["st"], "rule_id": rule_id}, because)]
        return [Matched(node.label, node.path, tuple(fact_json_with_text(x, start, lang) for x in facts))]
    if isinstance(node, Not):
        child = res.children[0]
        seen = tuple(fact_json_with_text(x, start, lang) for x in child.seen[-3:])
        return [Matched(f"no {node_words(child.node)}", node.path, seen, True)]
    out: list[Matched] = []
    for child in res.children:
        out.extend(matched_entries(child, derived, start, cache, lang))
    return out


def resolve_conflicts(recs: list[Recommendation], policy: str) -> tuple[list[Recommendation], list[RuleError]]:
    """Opposite actions (stop/avoid vs start/consider) on the same drug, from different rules: the higher
    priority wins; at equal priority the knowledge base's policy decides (restrictive-wins) or the conflict is
    reported as an error (priority-only). Actions are settled from the strongest down, so an action that lost
    cannot suppress another. The loser stays in the result, marked with what suppressed it."""
    vocab = vocabulary()

    def polarity(kind: str) -> int:
        return 1 if kind in RESTRICTIVE else (-1 if kind in PERMISSIVE else 0)

    def overlap(x: Action, y: Action) -> bool:
        return x.target == y.target or bool(vocab.target_drugs(x.target) & vocab.target_drugs(y.target))

    entries = [(r, k, a) for r in recs for k, a in enumerate(r.actions)]
    restrictive_first = policy == "restrictive-wins"
    entries.sort(key=lambda e: (-e[0].priority, 0 if restrictive_first and polarity(e[2].kind) == 1 else 1,
                                e[0].rule_id, e[1]))
    standing: list[tuple[Recommendation, int, Action]] = []
    losers: dict[tuple[str, int], Suppression] = {}
    errors: list[RuleError] = []
    for rec, k, act in entries:
        rival = next((w for w in standing if polarity(act.kind) * polarity(w[2].kind) == -1
                      and w[0].rule_id != rec.rule_id and overlap(act, w[2])), None)
        if rival is None:
            standing.append((rec, k, act))
        elif rival[0].priority == rec.priority and not restrictive_first:
            errors.append(RuleError(rec.rule_id, f"unresolved conflict with {rival[0].rule_id}: {act.kind} "
                                    f"{act.target} vs {rival[2].kind} {rival[2].target} at equal priority"))
            standing.append((rec, k, act))
        else:
            losers[(rec.rule_id, k)] = Suppression(rival[0].rule_id, rival[2].kind, rival[2].target)
    out: list[Recommendation] = []
    for r in recs:
        actions = tuple(
            Action(act.kind, act.target, act.target_name, act.text, act.reported_dose, losers.get((r.rule_id, k)))
            for k, act in enumerate(r.actions))
        status = "suppressed" if all(a.suppressed_by is not None for a in actions) else "active"
        out.append(Recommendation(r.rule_id, r.rule_version, r.title, r.indicator, status, r.priority, actions,
                                  r.rationale, r.matched, r.citations, r.evidence_level))
    return out, errors


FAILED_LINE = "treatment-history"


def suppress_failed_lines(recs: list[Recommendation], history: tuple[Line, ...]) -> list[Recommendation]:
    """A suggestion (start/consider) of a drug that failed or caused a reaction, or of a class containing one,
    is suppressed: it stays in the result, marked with the line that stopped it. Restrictive and monitoring
    actions are never touched, and an action a conflict already suppressed keeps that reason."""
    out: list[Recommendation] = []
    for r in recs:
        actions = []
        for act in r.actions:
            line = suppressing_line(history, act.target) if act.kind in PERMISSIVE and act.suppressed_by is None \
                else None
            actions.append(act if line is None else Action(
                act.kind, act.target, act.target_name, act.text, act.reported_dose,
                Suppression(FAILED_LINE, line.status, line.drug, "failed-line", line.text)))
        status = "suppressed" if all(a.suppressed_by is not None for a in actions) else "active"
        out.append(Recommendation(r.rule_id, r.rule_version, r.title, r.indicator, status, r.priority,
                                  tuple(actions), r.rationale, r.matched, r.citations, r.evidence_level))
    return out


def _add_timed(session: MatchSession, facts: list[Fact], stages: dict[str, float] | None) -> None:
    """Add derived facts; their matching is counted in the match stage, not in the decisions."""
    if stages is None:
        session.add(facts)
        return
    t0 = time.perf_counter()
    session.add(facts)
    spent = time.perf_counter() - t0
    stages["match"] = stages.get("match", 0.0) + spent
    stages["decisions"] = stages.get("decisions", 0.0) - spent


def evaluate_snapshot(kb: CompiledKB, session: MatchSession, snapshot: Snapshot, as_of: int,
                      backend_name: str, lang: str = "en", facts: Sequence[Fact] | None = None,
                      new_id: Callable[[], str] | None = None, interpreted: bool = False,
                      stages: dict[str, float] | None = None) -> Result:
    """Evaluate ``snapshot`` as of ``as_of``. By default its facts are built and added to ``session`` here; a
    replay passes ``facts`` already in the session (with their session ids) and ``new_id`` for derived facts.
    ``interpreted`` decides the rules with the reference interpreter instead of the compiled path (the two give
    the same result; tests and the benchmark compare them). ``stages``, when given, gets the seconds spent in
    each stage added to it (facts, match, decisions, result), for the benchmark."""
    t0 = time.perf_counter() if stages is not None else 0.0
    if facts is None:
        facts = [*build_facts(snapshot, as_of), clock_fact(as_of)]
        if stages is not None:
            t1 = time.perf_counter()
            stages["facts"] = stages.get("facts", 0.0) + t1 - t0
            t0 = t1
        session.add(facts)
        if stages is not None:
            t1 = time.perf_counter()
            stages["match"] = stages.get("match", 0.0) + t1 - t0
            t0 = t1
    by_id = {f.id: f for f in facts}
    ev = (RuleEvaluator if interpreted else CompiledEvaluator)(kb, session, by_id, as_of, snapshot)
    traces: dict[str, NodeResult] = {}
    all_bindings: dict[str, dict[str, Binding]] = {}
    errors: list[RuleError] = []
    derived: dict[str, tuple[NodeResult, str]] = {}
    derived_facts: dict[str, Fact] = {}
    outcomes: dict[str, Outcome] = {}
    stratum = 0
    pending: list[Fact] = []
    for cr in kb.rules:
        if cr.stratum != stratum:
            if pending:
                _add_timed(session, pending, stages)
                pending = []
            stratum = cr.stratum
        try:
            res, bindings = ev.rule(cr)
        except MascdsError:
            raise
        except Exception as exc:  # a fault in one rule must not hide the others; it is reported loudly
            errors.append(RuleError(cr.id, f"could not be evaluated: {type(exc).__name__}: {exc}"))
            res = NodeResult(cr.root, "unknown", missing=(Missing("rule evaluation", "internal error", cr.id),))
            bindings = {}
        traces[cr.id] = res
        all_bindings[cr.id] = bindings
        if cr.derives is not None:
            try:
                outcome = ev.outcome(cr, res, kb.models[cr.id], lang)
            except Exception as exc:  # as above: reported, and the assessment is undecided
                errors.append(RuleError(cr.id, f"could not be evaluated: {type(exc).__name__}: {exc}"))
                outcome = Outcome("indeterminate", (Missing("rule evaluation", "internal error", cr.id),))
            outcomes[cr.id] = outcome
            data: dict[str, object] = {"k": DERIVED, "n": cr.derives, "st": outcome.fact_status, "ts": float(as_of),
                                       "te": float(as_of)}
            if outcome.score is not None and outcome.score.low is not None:
                data["lo"] = float(outcome.score.low)
                if outcome.score.high is not None:
                    data["hi"] = float(outcome.score.high)
                if outcome.score.exact is not None:
                    data["v"] = float(outcome.score.exact)
            fid = new_id() if new_id is not None else f"d{len(derived_facts)}"
            fact = Fact(fid, data, None, {"rule": cr.id, "missing": outcome.missing, "caveats": outcome.caveats,
                                          "unrecorded": outcome.score.missing if outcome.score is not None else ()},
                        (DERIVED_SECTION, len(derived_facts), 0))
            derived_facts[cr.derives] = fact
            by_id[fid] = fact
            derived[cr.derives] = (res, cr.id)
            pending.append(fact)
    if pending:
        _add_timed(session, pending, stages)
    if stages is not None:
        t1 = time.perf_counter()
        stages["decisions"] = stages.get("decisions", 0.0) + t1 - t0
        t0 = t1
    recs: list[Recommendation] = []
    assessments: list[Assessment] = []
    undecided: list[Undecided] = []
    reasons: dict[str, tuple[Matched, ...]] = {}
    for cr in kb.rules:
        rule = kb.models[cr.id]
        res = traces[cr.id]
        title = text_in(rule.title, lang)
        done = outcomes.get(cr.id)
        if done is not None and done.status == "indeterminate":
            undecided.append(Undecided(cr.id, cr.version, title, "assessment", done.missing))
        elif done is None and res.verdict == "unknown":
            undecided.append(Undecided(cr.id, cr.version, title, "recommendation", res.missing))
        if rule.derive is not None and done is not None:
            sr = done.score
            assessments.append(Assessment(
                rule.derive.fact, done.status, cr.id, cr.version, title,
                text_in(rule.derive.summary, lang) if rule.derive.summary else None,
                _num(sr.exact) if sr is not None and sr.exact is not None else None,
                done.missing, tuple(matched_entries(res, derived, snapshot.start, reasons, lang)), citations(rule),
                rule.evidence_level,
                value_range=(None if sr is None or sr.low is None else
                             (_num(sr.low), _num(sr.high) if sr.high is not None else None)),
                interpretation=done.interpretation, reliable=not done.caveats,
                caveats=done.caveats, terms=tuple(t.to_json() for t in sr.terms) if sr is not None else (),
                unrecorded=_dedupe(sr.missing) if sr is not None and done.status != "indeterminate" else (),
                not_applicable_reason=done.not_applicable_reason))
        elif rule.recommend is not None and res.verdict == "true":
            rec = rule.recommend
            bindings = all_bindings[cr.id]

            def resolve(alias: str, field: str, _b: dict[str, Binding] = bindings) -> str:
                b = _b.get(alias)
                if b is None:
                    return "—"
                return template_field(b.fact, field, snapshot.start, b.count, b.previous, b.nth, lang)

            rationale = render(parse(text_in(rec.rationale, lang)), resolve)
            actions, bound = bound_actions(rec, bindings, lang)
            recs.append(Recommendation(cr.id, cr.version, title, rec.indicator, "active", rec.priority, actions,
                                       rationale, tuple(matched_entries(res, derived, snapshot.start, reasons, lang)),
                                       citations(rule, bound),
                                       rule.evidence_level))
    recs, conflict_errors = resolve_conflicts(recs, kb.manifest.conflict_resolution)
    errors.extend(conflict_errors)
    history = treatment_history(snapshot, as_of, lang)
    recs = suppress_failed_lines(recs, history)
    recs.sort(key=lambda r: (r.status != "active", INDICATOR_RANK[r.indicator], -r.priority, r.rule_id))
    assessments.sort(key=lambda a: a.fact)
    undecided.sort(key=lambda u: (u.produces, u.rule_id))
    scope = decide_scope(kb.manifest.scope, snapshot, as_of, [r.rule_id for r in recs])
    info = KnowledgeBaseInfo(kb.manifest.name, kb.manifest.version, kb.manifest.title, kb.content_hash,
                             len(kb.rules), kb.include_drafts)
    result = Result(
        as_of=iso(as_of), as_of_epoch=as_of, case_id=snapshot.id, case_title=snapshot.title,
        case_source=snapshot.source, timeline_start=snapshot.start, knowledge_base=info, backend=backend_name,
        lang=lang, recommendations=tuple(recs), assessments=tuple(assessments), indeterminate=tuple(undecided),
        errors=tuple(errors), warnings=(*snapshot.warnings, *time_warnings(kb, snapshot, as_of)),
        complete=not snapshot.unknown_sections and not snapshot.input_errors, input_errors=snapshot.input_errors,
        treatment_history=history, traces=traces, derived_facts=derived_facts,
        scores={rid: o.score for rid, o in outcomes.items() if o.score is not None}, scope=scope,
        populations={rid: o.population for rid, o in outcomes.items() if o.population is not None},
    )
    if stages is not None:
        stages["result"] = stages.get("result", 0.0) + time.perf_counter() - t0
    return result


__all__ = ["evaluate_snapshot", "leaves"]


# --- the compiled path ------------------------------------------------------------------------------------
# The interpreter above is the reference (the oracle of tests/test_evaluate_compiled.py). The compiled path
# gives the same NodeResults with less work per call: what each leaf needs from its queries is worked out once
# per knowledge base (CompiledKB.plan), and a leaf whose window holds no fact is decided once per knowledge base
# and section state, since its answer then depends on nothing else.

@dataclass(frozen=True)
class _LeafPlan:
    anchors: tuple[tuple[str, str], ...]  # (join alias, rule alias), as Leaf.anchors
    scope_at: tuple[tuple[int, str], ...]  # (position in the scope query's tuples, rule alias)
    match_at: tuple[tuple[int, str], ...] | None  # the same for the match query (None: no match query)


_NOT: dict[str, Verdict] = {"true": "false", "false": "true", "unknown": "unknown"}


class CompiledEvaluator(RuleEvaluator):
    """The same decisions as :class:`RuleEvaluator`, with per-leaf work precomputed and empty windows decided
    once per knowledge base."""

    def __init__(self, kb: CompiledKB, session: MatchSession, facts: dict[str, Fact], now: int,
                 snapshot: Snapshot) -> None:
        super().__init__(kb, session, facts, now, snapshot)
        self.plan = kb.plan
        self.unknown_sections = snapshot.unknown_sections

    def _plan(self, lf: Leaf) -> _LeafPlan:
        key = id(lf)
        found: _LeafPlan | None = self.plan.get(key)
        if found is None:
            to_rule = dict(lf.anchors)

            def at(qid: str) -> tuple[tuple[int, str], ...]:
                aliases = self.kb.queries[qid].aliases[:-1]
                return tuple((i, to_rule[a]) for i, a in enumerate(aliases) if a in to_rule)

            found = _LeafPlan(lf.anchors, at(lf.scope), at(lf.match) if lf.match is not None else None)
            self.plan[key] = found
        return found

    def _ids_at(self, qid: str, positions: tuple[tuple[int, str], ...],
                bindings: dict[str, Binding]) -> frozenset[str]:
        if not positions:  # no anchors: every answer's last fact
            found = self.answers.get((qid, ()))
            if found is None:
                found = frozenset([t[-1] for t in self.session.tuples(qid)])
                self.answers[(qid, ())] = found
            return found
        key = (qid, tuple([bindings[alias].fact.id for _, alias in positions]))
        found = self.answers.get(key)
        if found is None:
            slots = tuple(i for i, _ in positions)
            groups: dict[tuple[str, ...], set[str]] = {}
            for t in self.session.tuples(qid):
                groups.setdefault(tuple([t[i] for i in slots]), set()).add(t[-1])
            for anchors, ids in groups.items():
                self.answers[(qid, anchors)] = frozenset(ids)
            found = self.answers.setdefault(key, frozenset())
        return found

    def _ids(self, qid: str, leaf: Leaf, bindings: dict[str, Binding]) -> frozenset[str]:
        p = self._plan(leaf)
        if qid == leaf.scope:
            return self._ids_at(qid, p.scope_at, bindings)
        if qid == leaf.match and p.match_at is not None:
            return self._ids_at(qid, p.match_at, bindings)
        return super()._ids(qid, leaf, bindings)

    def _leaf(self, lf: Leaf, bindings: dict[str, Binding], verdicts: dict[str, NodeResult]) -> \
            tuple[NodeResult, Binding | None]:
        p = self._plan(lf)
        for _, alias in p.anchors:
            if alias not in bindings:
                return super()._leaf(lf, bindings, verdicts)
        for b in lf.window_starts:
            if float(bindings[b.alias].fact.data[b.field]) + b.offset > self.now:
                return super()._leaf(lf, bindings, verdicts)
        if self._ids_at(lf.scope, p.scope_at, bindings):
            return super()._leaf(lf, bindings, verdicts)
        # nothing in the window: the answer depends only on the leaf and whether its section is unknown
        key = (id(lf), lf.section in self.unknown_sections)
        found: tuple[NodeResult, Binding | None] | None = self.plan.get(key)
        if found is None:
            found = super()._leaf(lf, bindings, verdicts)
            assert found[1] is None  # an empty window binds nothing
            self.plan[key] = found
        return found

    def node(self, node: Node, bindings: dict[str, Binding], verdicts: dict[str, NodeResult]) -> NodeResult:
        kind = type(node)
        if kind is Leaf:
            return super().node(node, bindings, verdicts)
        if kind is Not:
            assert isinstance(node, Not)
            child = self.node(node.child, bindings, verdicts)
            return NodeResult(node, _NOT[child.verdict], missing=child.missing, children=(child,))
        assert isinstance(node, (All, Any_, AtLeast))
        kids = tuple([self.node(c, bindings, verdicts) for c in node.children])
        t = u = 0
        for k in kids:
            v = k.verdict
            if v == "true":
                t += 1
            elif v == "unknown":
                u += 1
        f = len(kids) - t - u
        verdict: Verdict
        if kind is All:
            verdict = "false" if f else ("unknown" if u else "true")
        elif kind is Any_:
            verdict = "true" if t else ("unknown" if u else "false")
        else:
            assert isinstance(node, AtLeast)
            verdict = "true" if t >= node.n else ("false" if t + u < node.n else "unknown")
        missing = _dedupe(m for k in kids if k.verdict == "unknown" for m in k.missing) if verdict == "unknown" \
            else ()
        result = NodeResult(node, verdict, missing=missing, children=kids, note=f"{t} of {len(kids)} hold")
        if kind is Any_:
            assert isinstance(node, Any_)
            for alias in node.defines:
                verdicts[alias] = result
        return result

    # --- whole rules whose every window is empty ------------------------------------------------------
    # When no query a rule's conditions read has an answer, no leaf binds anything and every leaf is decided
    # by its empty window, so the rule's decision (and a derive rule's outcome) depends only on which sections
    # the record leaves unknown (and the language of the texts): it is decided once and kept.

    def _scopes(self, key: str, nodes: Iterable[Node]) -> tuple[str, ...]:
        found: tuple[str, ...] | None = self.plan.get(key)
        if found is None:
            found = tuple(dict.fromkeys(lf.scope for n in nodes for lf in leaves(n)))
            self.plan[key] = found
        return found

    def _all_empty(self, qids: tuple[str, ...]) -> bool:
        tuples = self.session.tuples
        return not any(tuples(q) for q in qids)

    def rule(self, cr: CompiledRule) -> tuple[NodeResult, dict[str, Binding]]:
        if not self._all_empty(self._scopes("when " + cr.id, (cr.root,))):
            return super().rule(cr)
        key = ("rule", cr.id, self.unknown_sections)
        found: NodeResult | None = self.plan.get(key)
        if found is None:
            found, bindings = super().rule(cr)
            assert not bindings  # empty windows bind nothing
            self.plan[key] = found
        return found, {}

    def outcome(self, cr: CompiledRule, res: NodeResult, rule: Rule, lang: str) -> Outcome:
        nodes: list[Node] = [cr.root]
        if cr.applies_to is not None:
            nodes.append(cr.applies_to.node)
        nodes.extend(c.node for c in cr.caveats)
        if cr.score is not None:
            for term in cr.score.terms:
                nodes.extend(term.nodes)
                if term.leaf is not None:
                    nodes.append(term.leaf)
        if not self._all_empty(self._scopes("outcome " + cr.id, nodes)):
            return super().outcome(cr, res, rule, lang)
        key = ("outcome", cr.id, self.unknown_sections, lang)
        found: tuple[NodeResult, Outcome] | None = self.plan.get(key)
        if found is None:
            found = (res, super().outcome(cr, res, rule, lang))
            self.plan[key] = found
        if found[0] is not res:  # not the kept decision (its evaluation failed): decide afresh
            return super().outcome(cr, res, rule, lang)
        return found[1]

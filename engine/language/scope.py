"""The knowledge base's scope: which patients it is about, decided for one record at one time.

A patient is in scope with a scope diagnosis recorded (sJIA, MAS, HLH: active or resolved, begun by the evaluation
time) or a course, dose, order or reaction of a drug its safety rules watch. Outside it the result still holds
everything the rules decided, but nothing is shown to the clinician (text headline, CDS Hooks cards): a
60-year-old without any of these conditions gets no "undecided: measure X" on every chart.

Two guarantees keep the scope from hiding advice:
- at load, every recommendation rule must require a scope diagnosis or a watched drug (``unscoped_rules``, E210),
  so no recommendation can fire outside the scope;
- at evaluation, a recommendation that fired puts the patient in scope whatever the record says (belt and braces).

When the record cannot say (diagnoses, or the sections holding drugs, not recorded), the scope is
``undetermined``: fired advice is shown as for a patient in scope, undecided rules are not (they would be
undecided for everyone whose record lacks the section), and one notice names the section to record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.snapshot import Snapshot
from ..core.times import iso
from ..core.vocab import vocabulary
from .conditions import (
    AllCond,
    AnyCond,
    AtLeastCond,
    DerivedCond,
    DiagnosisCond,
    MedicationCond,
    OrderCond,
    ReactionCond,
)
from .metadata import Scope
from .rulemodel import Rule

IN_SCOPE, OUT_OF_SCOPE, UNDETERMINED = "in_scope", "out_of_scope", "undetermined"
# Sections whose absence leaves a scope criterion undecidable.
_DRUG_SECTIONS = ("medications", "orders", "reactions")


@dataclass(frozen=True)
class ScopeVerdict:
    """Whether the patient is one the knowledge base is about, and why."""

    status: str  # in_scope | out_of_scope | undetermined
    reasons: tuple[str, ...]
    missing: tuple[str, ...] = ()  # record sections that would decide an undetermined scope

    @property
    def shown(self) -> bool:
        """Whether undecided rules and assessments are shown to the clinician."""
        return self.status == IN_SCOPE

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "reasons": list(self.reasons), "missing": list(self.missing)}


EVERYONE = ScopeVerdict(IN_SCOPE, ("the knowledge base states no scope: every patient is in scope",))


def scope_drugs(scope: Scope) -> frozenset[str]:
    """Every drug the scope names (classes expanded)."""
    v = vocabulary()
    return frozenset(d for entry in scope.drugs for d in v.target_drugs(entry.target))


def decide_scope(scope: Scope | None, snapshot: Snapshot, as_of: int, fired: Sequence[str] = ()) -> ScopeVerdict:
    """The scope verdict for ``snapshot`` at ``as_of``; ``fired`` are the rules that recommended something."""
    if scope is None:
        return EVERYONE
    v = vocabulary()
    reasons: list[str] = []
    wanted = {d.code: d for d in scope.diagnoses}
    for dx in snapshot.diagnoses:
        entry = wanted.get(dx.code)
        if entry is not None and (dx.onset is None or dx.onset <= as_of):
            state = "resolved" if dx.resolved is not None and dx.resolved <= as_of else "recorded"
            reasons.append(f"{v.diagnoses[dx.code].name} {state}: {entry.reason}")
    for watched in scope.drugs:
        drugs = v.target_drugs(watched.target)
        seen = [(f"course from {iso(c.start)}", c.drug) for c in snapshot.courses if c.drug in drugs
                and c.start <= as_of]
        seen += [(f"{o.status} order at {iso(o.time)}", o.drug) for o in snapshot.orders if o.drug in drugs
                 and o.time <= as_of]
        seen += [(f"reaction at {iso(r.time)}", r.drug) for r in snapshot.reactions if r.drug in drugs
                 and r.time <= as_of]
        if seen:
            what, drug = seen[0]
            reasons.append(f"{v.drugs[drug].name} ({what}): {watched.reason}")
    if reasons:
        return ScopeVerdict(IN_SCOPE, tuple(dict.fromkeys(reasons)))
    if fired:
        return ScopeVerdict(IN_SCOPE, tuple(f"rule {rid} recommended an action for this patient" for rid in fired))
    unknown = snapshot.unknown_sections
    missing = tuple(s for s in ("diagnoses", *(_DRUG_SECTIONS if scope.drugs else ())) if s in unknown)
    dx_names = ", ".join(v.diagnoses[d.code].name for d in scope.diagnoses)
    drug_names = ", ".join(v.target_name(d.target) for d in scope.drugs)
    if missing:
        return ScopeVerdict(UNDETERMINED, (
            f"the record does not hold {' or '.join(s.replace('_', ' ') for s in missing)}, so it cannot say "
            f"whether the patient has {dx_names}" + (f" or has been given {drug_names}" if scope.drugs else ""),
            scope.description), missing)
    why = f"no {dx_names} recorded" + (f", and no {drug_names} recorded" if scope.drugs else "")
    return ScopeVerdict(OUT_OF_SCOPE, (why, scope.description))


# --- the load-time check: no recommendation can fire outside the scope ---------------------------------------

def _requires(cond: Any, scope: Scope, producers: dict[str, Rule], watched: frozenset[str],
              seen: frozenset[str]) -> bool:
    """Whether ``cond`` can hold only for a patient in scope (conservative: False when unsure)."""
    v = vocabulary()
    if isinstance(cond, AllCond):
        return any(_requires(c, scope, producers, watched, seen) for c in cond.all)
    if isinstance(cond, AnyCond):
        return all(_requires(c, scope, producers, watched, seen) for c in cond.any)
    if isinstance(cond, AtLeastCond):
        # at least n of m hold: some required one is among them when fewer than n may be unscoped
        unscoped = sum(not _requires(c, scope, producers, watched, seen) for c in cond.at_least.of)
        return unscoped < cond.at_least.count
    if isinstance(cond, DiagnosisCond):
        return cond.diagnosis.code in {d.code for d in scope.diagnoses}
    for kind, attr in ((MedicationCond, "medication"), (OrderCond, "order"), (ReactionCond, "reaction")):
        if isinstance(cond, kind):
            spec = getattr(cond, attr)
            drugs = v.target_drugs(spec.drug) if spec.drug else (v.target_drugs(spec.class_) if spec.class_
                                                                 else frozenset())
            return bool(drugs) and drugs <= watched
    if isinstance(cond, DerivedCond):
        fact = cond.derived.fact
        rule = producers.get(fact)
        if rule is None or fact in seen:
            return False
        inner = seen | {fact}
        by_population = rule.applies_to is not None and _requires(rule.applies_to.when, scope, producers,
                                                                  watched, inner)
        if cond.derived.is_ == "not_met":  # a rule whose 'when' is false is "not met": only applies_to confines it
            return by_population
        return by_population or _requires(rule.when, scope, producers, watched, inner)
    return False  # not, observations, findings, organ support, patient: anyone may have them


def unscoped_rules(rules: Iterable[Rule], scope: Scope) -> list[Rule]:
    """Recommendation rules that could fire for a patient outside ``scope``."""
    rules = list(rules)
    producers = {r.derive.fact: r for r in rules if r.derive is not None}
    watched = scope_drugs(scope)
    return [r for r in rules if r.recommend is not None
            and not _requires(r.when, scope, producers, watched, frozenset())]


__all__ = ["EVERYONE", "IN_SCOPE", "OUT_OF_SCOPE", "UNDETERMINED", "ScopeVerdict", "decide_scope", "scope_drugs",
           "unscoped_rules"]

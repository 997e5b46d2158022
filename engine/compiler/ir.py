"""The engine-agnostic compiled form of a knowledge base.

A rule compiles to a tree of nodes whose leaves name *queries*. A query is what a matching backend
answers: every tuple of facts (one per alias) that satisfies a conjunction of single-fact tests and
tests relating facts to each other (time windows relative to the evaluation time or to another matched
fact, comparisons with another fact's value). Both backends - durable_rules and the plain-Python
reference - answer the same queries; selection (latest, n-th, counts), absence and three-valued logic are
decided afterwards in ordinary Python (``engine.runtime.evaluate``), never inside the Rete.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

Op = Literal["eq", "gt", "gte", "lt", "lte"]
Verdict = Literal["true", "false", "unknown"]

# Fact kinds (the ``k`` field of every fact).
OBS, FINDING, COURSE, ADMIN, ORDER, REACTION, SUPPORT, DIAGNOSIS, DERIVED, PATIENT, CLOCK = (
    "obs", "fnd", "course", "admin", "ord", "rx", "sup", "dx", "drv", "pt", "clk")

# An interval that has not ended by the evaluation time ends here (far beyond any real time).
ONGOING = 10.0 ** 12


@dataclass(frozen=True)
class FieldRef:
    """The value of ``field`` on the fact bound to join alias ``alias``, plus ``offset``."""

    alias: str
    field: str
    offset: float = 0.0


@dataclass(frozen=True)
class FieldTest:
    field: str
    op: Op
    operand: float | str | FieldRef


@dataclass(frozen=True)
class AnyOf:
    """At least one alternative (a conjunction of tests) holds."""

    alternatives: tuple[tuple[FieldTest | AnyOf, ...], ...]


@dataclass(frozen=True)
class Pattern:
    kind: str
    tests: tuple[FieldTest | AnyOf, ...] = ()


@dataclass(frozen=True)
class Query:
    id: str
    joins: tuple[tuple[str, Pattern], ...]  # other facts the target is related to, in order
    target: Pattern  # bound to alias "x"

    @functools.cached_property
    def aliases(self) -> tuple[str, ...]:
        return (*(a for a, _ in self.joins), "x")


@dataclass(frozen=True)
class Selector:
    mode: Literal["latest", "earliest", "any", "all", "max", "min", "count", "nth", "distinct", "trend", "derived",
                  "single"]
    op: Op | None = None
    n: int | None = None
    direction: Literal["rising", "falling"] | None = None
    distinct_field: str | None = None
    recent: float | None = None  # trend with compared_within: the latest must be this recent (seconds)


@dataclass(frozen=True)
class Bound:
    """A window bound that depends on an anchor: ``fact(alias).field + offset``."""

    alias: str  # rule alias
    field: str
    offset: float


@dataclass(frozen=True)
class Missing:
    """An input that would decide an undecided condition."""

    what: str
    detail: str
    condition: str = ""

    def to_json(self) -> dict[str, str]:
        return {"what": self.what, "detail": self.detail, "condition": self.condition}


@dataclass(frozen=True)
class Leaf:
    path: str  # document path of the condition, e.g. when.all[2].medication
    kind: str  # condition kind as written (observation, medication, ...)
    fact_kind: str
    section: str  # snapshot section the facts come from
    world: Literal["open", "closed"]  # open: absence means unknown; closed: absence means no
    scope: str  # query id: facts in the window with the right identity
    match: str | None  # query id: those that also pass the value tests (None: same as scope)
    selector: Selector
    anchors: tuple[tuple[str, str], ...]  # (join alias in the queries, rule alias)
    window_starts: tuple[Bound, ...]  # lower bounds that depend on anchors (window not open yet?)
    value_refs: tuple[str, ...]  # rule aliases whose value is compared with
    alias: str | None
    undecidable: tuple[str, ...]  # tested fields a fact may lack (dose per kg without a weight)
    label: str  # what the condition asks, in words
    missing: tuple[Missing, ...]  # what to record when nothing is in the window (open world)
    undecided: tuple[Missing, ...]  # what would decide a fact that lacks a tested value (e.g. a weight)
    derived_fact: str | None = None
    derived_status: str | None = None  # met | not_met | None (any status: only the value is compared)
    derived_values: tuple[tuple[str, float], ...] = ()  # value comparisons with numbers
    drug_join: str | None = None  # rule alias whose drug this leaf's facts must have (same_drug_as)

    line: int = 0
    col: int = 0


@dataclass(frozen=True)
class All:
    path: str
    children: tuple[Node, ...]
    label: str = "all of"


@dataclass(frozen=True)
class Any_:
    path: str
    children: tuple[Node, ...]
    label: str = "any of"
    defines: tuple[str, ...] = ()  # aliases every branch binds (the first true branch wins)


@dataclass(frozen=True)
class Not:
    path: str
    child: Node
    label: str = "not"


@dataclass(frozen=True)
class AtLeast:
    path: str
    n: int
    children: tuple[Node, ...]
    label: str = ""


Node = All | Any_ | Not | AtLeast | Leaf


@dataclass(frozen=True)
class BandRule:
    """Points for an input in [lower, upper] (bounds exact, in canonical units); None means open."""

    lower: Fraction | None
    lower_inclusive: bool
    upper: Fraction | None
    upper_inclusive: bool
    points: Fraction

    def contains(self, x: Fraction) -> bool:
        if self.lower is not None and (x < self.lower or (x == self.lower and not self.lower_inclusive)):
            return False
        return not (self.upper is not None and (x > self.upper or (x == self.upper and not self.upper_inclusive)))

    def meets(self, lo: Fraction, hi: Fraction) -> bool:
        """Whether any value in [lo, hi] falls in the band."""
        if self.lower is not None and (hi < self.lower or (hi == self.lower and not self.lower_inclusive)):
            return False
        return not (self.upper is not None and (lo > self.upper or (lo == self.upper and not self.upper_inclusive)))


@dataclass(frozen=True)
class ScoreTerm:
    label: str
    kind: Literal["value", "if", "count"]
    leaf: Leaf | None  # value input
    nodes: tuple[Node, ...]  # if: one node; count: several
    weight: Fraction | None
    points: Fraction | None
    bands: tuple[BandRule, ...]
    plausible: tuple[Fraction, Fraction] = (Fraction(0), Fraction(0))  # range of a value input when unmeasured
    # (factor, offset) from the canonical unit to the unit the term is written in: canonical = (x + offset) *
    # factor. Weights and ratios apply to the value in that unit; bands were converted to canonical instead.
    unit: tuple[Fraction, Fraction] | None = None


@dataclass(frozen=True)
class CompiledScore:
    kind: Literal["sum", "ratio"]
    terms: tuple[ScoreTerm, ...]  # for a ratio: numerator, denominator
    constant: Fraction
    cutoff: Any  # language.derivations.Threshold, or None
    interpretation: tuple[Any, ...]  # language.derivations.Interpretation


@dataclass(frozen=True)
class CompiledCaveat:
    node: Node
    applies_to: tuple[str, ...]
    text: Any  # rulemodel Text


@dataclass(frozen=True)
class CompiledApplicability:
    """The population an assessment is defined for: outside it (``node`` false) the result is not_applicable."""

    node: Node
    reason: Any  # rulemodel Text


@dataclass(frozen=True)
class CompiledRule:
    id: str
    version: str
    file: str
    status: str
    stratum: int
    root: Node
    derives: str | None
    uses: frozenset[str]
    aliases: dict[str, Leaf] = field(default_factory=dict)
    score: CompiledScore | None = None
    caveats: tuple[CompiledCaveat, ...] = ()
    applies_to: CompiledApplicability | None = None


def leaves(node: Node) -> list[Leaf]:
    if isinstance(node, Leaf):
        return [node]
    if isinstance(node, Not):
        return leaves(node.child)
    out: list[Leaf] = []
    for child in node.children:
        out.extend(leaves(child))
    return out


def node_words(node: Node) -> str:
    """A condition tree in words, from the labels the compiler gives each leaf."""
    if isinstance(node, Leaf):
        return node.label
    if isinstance(node, Not):
        return f"not ({node_words(node.child)})"
    if isinstance(node, AtLeast):
        return f"at least {node.n} of (" + "; ".join(node_words(c) for c in node.children) + ")"
    joiner = " and " if isinstance(node, All) else " or "
    return "(" + joiner.join(node_words(c) for c in node.children) + ")"

"""Scores and ratios with honest missing data: interval arithmetic over what each input could be.

A measured input contributes its exact value; an unmeasured one contributes every value it could take (its
physically possible range, from the reviewed analyte table); a condition that is undecided contributes 0 or its
points. The score is then a range, and the assessment is decided only when the whole range falls on one side of
the cut-off. A missing input is never counted as zero or normal. Arithmetic is exact (fractions), so published
boundaries such as -2.1 are compared exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

from ..compiler.ir import CompiledScore, Missing, ScoreTerm
from .result import Interval, NodeResult, ScoreResult, TermResult


def _scale(interval: Interval, w: Fraction) -> Interval:
    a, b = interval[0] * w, interval[1] * w
    return (a, b) if a <= b else (b, a)


def _in_unit(rng: Interval, unit: tuple[Fraction, Fraction], measured: bool) -> Interval:
    """A canonical interval in another unit. A measured value is rounded as ingest rounds (10 significant digits),
    so a value recorded in that unit comes back exactly as written."""
    factor, offset = unit
    lo, hi = rng[0] / factor - offset, rng[1] / factor - offset
    if measured:
        lo = hi = Fraction(f"{float(lo):.10g}")
    return lo, hi


def _banded(term: ScoreTerm, lo: Fraction, hi: Fraction) -> Interval:
    points = [b.points for b in term.bands if b.meets(lo, hi)]
    if not points:
        raise ValueError(f"no band of '{term.label}' covers {float(lo):g}..{float(hi):g}")
    return min(points), max(points)


def evaluate_term(term: ScoreTerm, decide_leaf: Callable[[Any], NodeResult],
                  decide_node: Callable[[Any], NodeResult]) -> TermResult:
    if term.kind == "value":
        assert term.leaf is not None
        res = decide_leaf(term.leaf)
        measured = res.verdict == "true" and bool(res.facts)
        if measured:
            x = Fraction(str(res.facts[-1].data["v"]))
            rng: Interval = (x, x)
            missing: tuple[Missing, ...] = ()
        else:
            rng = term.plausible
            missing = res.missing
        # bands compare in the canonical unit (thresholds were converted exactly, as patient values are);
        # weights and ratios apply to the value in the unit the term is written in
        written = _in_unit(rng, term.unit, measured) if term.unit is not None else rng
        if term.weight is not None:
            contrib = _scale(written, term.weight)
        elif term.bands:
            contrib = _banded(term, *rng)
        else:  # a ratio's numerator or denominator: the value itself
            contrib = written
        return TermResult(term.label, written, contrib, missing, (res,))
    if term.kind == "if":
        res = decide_node(term.nodes[0])
        worth = term.points if term.points is not None else term.weight
        assert worth is not None
        low_high = {"true": (worth, worth), "false": (Fraction(0), Fraction(0)),
                    "unknown": (min(Fraction(0), worth), max(Fraction(0), worth))}[res.verdict]
        return TermResult(term.label, None, low_high, res.missing if res.verdict == "unknown" else (), (res,))
    results = [decide_node(n) for n in term.nodes]
    t = sum(1 for r in results if r.verdict == "true")
    u = sum(1 for r in results if r.verdict == "unknown")
    rng = (Fraction(t), Fraction(t + u))
    contrib = _scale(rng, term.weight) if term.weight is not None else _banded(term, *rng)
    missing = tuple(m for r in results if r.verdict == "unknown" for m in r.missing)
    return TermResult(term.label, rng, contrib, missing, tuple(results))


def evaluate_score(score: CompiledScore, decide_leaf: Callable[[Any], NodeResult],
                   decide_node: Callable[[Any], NodeResult]) -> ScoreResult:
    terms = tuple(evaluate_term(t, decide_leaf, decide_node) for t in score.terms)
    missing = tuple(m for t in terms for m in t.missing)
    if score.kind == "ratio":
        zero: Interval = (Fraction(0), Fraction(0))
        (a, b), (c, d) = terms[0].input_range or zero, terms[1].input_range or zero
        if d == 0:  # the denominator is certainly zero: no ratio
            return ScoreResult(None, None, terms, missing)
        low = a / d
        high = b / c if c > 0 else None  # a denominator that may be zero leaves the ratio unbounded above
        return ScoreResult(low, high, terms, missing)
    low = score.constant + sum((t.contribution[0] for t in terms), Fraction(0))
    high = score.constant + sum((t.contribution[1] for t in terms), Fraction(0))
    return ScoreResult(low, high, terms, missing)


def classify(cutoff: Any, low: Fraction, high: Fraction | None) -> str:
    """met when the whole range is within the cut-off range, not_met when none of it is, else indeterminate."""
    top = high if high is not None else None
    inside_low = cutoff.holds(low)
    inside_high = cutoff.holds(top) if top is not None else _holds_unbounded(cutoff)
    if inside_low and inside_high:
        return "met"
    if _intersects(cutoff, low, top):
        return "indeterminate"
    return "not_met"


def _holds_unbounded(cutoff: Any) -> bool:
    return cutoff.lt is None and cutoff.lte is None and cutoff.eq is None


def _intersects(cutoff: Any, low: Fraction, high: Fraction | None) -> bool:
    def f(b: float | int) -> Fraction:
        return Fraction(str(b))

    if cutoff.eq is not None:
        x = f(cutoff.eq)
        return low <= x and (high is None or x <= high)
    if cutoff.gt is not None and high is not None and high <= f(cutoff.gt):
        return False
    if cutoff.gte is not None and high is not None and high < f(cutoff.gte):
        return False
    if cutoff.lt is not None and low >= f(cutoff.lt):
        return False
    return not (cutoff.lte is not None and low > f(cutoff.lte))


def interpretation(bands: Sequence[Any], low: Fraction, high: Fraction | None, text_of: Callable[[Any], str]) \
        -> str | None:
    """The published wording whose range holds the whole score range, if any."""
    for band in bands:
        if band.holds(low) and high is not None and band.holds(high):
            return text_of(band.text)
    return None

"""What a rule derives: derived facts, and the scores and ratios that decide them (terms, bands,
thresholds, interpretations).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..core.vocab import vocabulary
from .conditions import Condition, _vocab_check
from .fields import _ID, Duration, Strict, Text, _duration, _err
from .metadata import _TCZ_CAVEAT_TEXT, Caveat


class Threshold(Strict):
    """A bound on a number: one or two of gt/gte/lt/lte, or eq."""

    gt: float | int | None = Field(default=None, description="Exclusive lower bound: the number (a score or ratio; "
                                   "for a band, the term's value in its input's unit, or its count) must be greater "
                                   "than this; combine with lt or lte for a range.", examples=[21.5, 39.4])
    gte: float | int | None = Field(default=None, description="Inclusive lower bound: the number (a score or ratio; "
                                    "for a band, the term's value in its input's unit, or its count) must be at "
                                    "least this; combine with lt or lte for a range.", examples=[-2.1, 168])
    lt: float | int | None = Field(default=None, description="Exclusive upper bound: the number (a score or ratio; "
                                   "for a band, the term's value in its input's unit, or its count) must be less "
                                   "than this; combine with gt or gte for a range.", examples=[38.4, 2000])
    lte: float | int | None = Field(default=None, description="Inclusive upper bound: the number (a score or ratio; "
                                    "for a band, the term's value in its input's unit, or its count) must be at most "
                                    "this; combine with gt or gte for a range.", examples=[90, 4])
    eq: float | int | None = Field(default=None, description="Exact value: the number (a score or ratio; for a band, "
                                   "the term's value in its input's unit, or its count) must equal this; not combined "
                                   "with other bounds.", examples=[0, 2])

    @model_validator(mode="after")
    def _bounds(self) -> Threshold:
        lower = [x for x in (self.gt, self.gte) if x is not None]
        upper = [x for x in (self.lt, self.lte) if x is not None]
        if len(lower) > 1 or len(upper) > 1:
            raise _err("E113", "give at most one lower bound (gt/gte) and one upper bound (lt/lte)", "")
        if self.eq is not None and (lower or upper):
            raise _err("E113", "eq cannot be combined with other bounds", "")
        if self.eq is None and not lower and not upper:
            raise _err("E101", "a threshold needs a bound", "e.g. {gte: -2.1}")
        if lower and upper and lower[0] > upper[0]:
            raise _err("E103", f"the range {lower[0]}..{upper[0]} is empty", "swap the bounds")
        return self

    def holds(self, x: Fraction) -> bool:
        """Whether ``x`` is in the range (exact arithmetic: -2.1 is -21/10, not a binary approximation)."""
        def f(b: float | int) -> Fraction:
            return Fraction(str(b))

        return ((self.gt is None or x > f(self.gt)) and (self.gte is None or x >= f(self.gte))
                and (self.lt is None or x < f(self.lt)) and (self.lte is None or x <= f(self.lte))
                and (self.eq is None or x == f(self.eq)))

    def words(self) -> str:
        parts = [f"{sym} {b:g}" for b, sym in ((self.gt, ">"), (self.gte, "≥"), (self.lt, "<"), (self.lte, "≤"),
                                               (self.eq, "=")) if b is not None]
        return " and ".join(parts)


class Band(Threshold):
    """A band of an input with the points it scores."""

    points: float | int = Field(description="Points scored when the input falls in this band.", examples=[33, 0])


class Interpretation(Threshold):
    """Wording for a range of the score, as published."""

    text: Text = Field(description="What the source says about scores in this range.",
                       examples=["Probability of reactive haemophagocytic syndrome below 1% (Fardet 2014)."])


class ValueInput(Strict):
    """A measured value used by a score or a ratio, in the unit it is written in (default: canonical)."""

    analyte: str = Field(description="Analyte id.")
    unit: str | None = Field(default=None, description="The unit the term is written in, as its source writes it: "
                             "band bounds are in this unit, and a weight or a ratio applies to the value converted "
                             "to it (default: the analyte's canonical unit).", examples=["mmol/L"])
    within: Duration = Field(description="Only measurements from this long before the evaluation time.")
    which: Literal["latest", "highest", "lowest"] = Field(default="latest", description="Which measurement in the "
                                                          "window: latest (default), highest or lowest.",
                                                          examples=["highest"])

    @field_validator("analyte")
    @classmethod
    def _analyte(cls, v: str) -> str:
        return _vocab_check(v, vocabulary().analytes, "E104", "analyte")

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        return _duration(v)

    @model_validator(mode="after")
    def _unit_fits(self) -> ValueInput:
        if self.unit is not None:
            vocab = vocabulary()
            code = vocab.unit_code(self.unit)
            if code is None or code not in vocab.analytes[self.analyte].units:
                raise _err("E105", f"unit '{self.unit}' is not a unit of {vocab.analytes[self.analyte].name}",
                           "use a unit from the reviewed table", at="unit")
        return self


class Term(Strict):
    """One term of a score: an input (a value, a condition, or a count of conditions) and what it is worth."""

    value: ValueInput | None = Field(default=None, description="A measured value.",
                                     examples=[{"analyte": "temperature", "which": "highest", "within": "72h"}])
    if_: Condition | None = Field(default=None, alias="if", description="A condition (1 when it holds, else 0).",
                                  examples=[{"finding": {"code": "cns-involvement", "within": "72h"}}])
    count: list[Condition] | None = Field(default=None, description="How many of these conditions hold.",
                                          examples=[[{"finding": {"code": "hepatomegaly", "within": "72h"}},
                                                     {"finding": {"code": "splenomegaly", "within": "72h"}}]])
    weight: float | int | None = Field(default=None, description="Multiplies the input.", examples=[2.44, -0.003])
    points: float | int | None = Field(default=None, description="Scored when the condition holds.", examples=[35])
    bands: list[Band] | None = Field(default=None, description="Points by band of the input.",
                                     examples=[[{"lt": 38.4, "points": 0}, {"gte": 38.4, "lte": 39.4, "points": 33},
                                                {"gt": 39.4, "points": 49}]])
    label: str | None = Field(default=None, description="Name of the term, for explanations.",
                              examples=["CNS involvement"])

    @model_validator(mode="after")
    def _shape(self) -> Term:
        inputs = [n for n in ("value", "if_", "count") if getattr(self, n) is not None]
        worth = [n for n in ("weight", "points", "bands") if getattr(self, n) is not None]
        if len(inputs) != 1:
            raise _err("E113", "a term has exactly one input: value, if or count", "")
        if len(worth) != 1:
            raise _err("E113", "a term has exactly one of weight, points or bands", "")
        if worth == ["points"] and inputs != ["if_"]:
            raise _err("E113", "points go with an 'if' condition; use bands for values and counts", "")
        if worth == ["bands"] and inputs == ["if_"]:
            raise _err("E113", "an 'if' condition scores points, not bands", "")
        if self.count is not None and not self.count:
            raise _err("E103", "count needs at least one condition", "")
        if self.bands is not None:
            _check_bands(self.bands, counts=self.count is not None, n=len(self.count or []))
        return self


def _check_bands(bands: list[Band], counts: bool, n: int) -> None:
    if not bands:
        raise _err("E103", "bands need at least one band", "")
    if counts:
        for k in range(n + 1):
            hits = sum(1 for b in bands if b.holds(Fraction(k)))
            if hits != 1:
                raise _err("E103", f"a count of {k} falls in {hits} bands", "bands must cover every count once")


# The MS score's terms (Minoia 2019; rules/assessments/minoia2019.ms-score.yaml), an example for the schema.
_MS_SCORE_TERMS: list[dict[str, Any]] = [
    {"label": "CNS involvement", "if": {"finding": {"code": "cns-involvement", "within": "72h"}}, "weight": 2.44},
    {"label": "haemorrhagic manifestations",
     "if": {"finding": {"code": "haemorrhagic-manifestations", "within": "72h"}}, "weight": 1.54},
    {"label": "active arthritis", "if": {"finding": {"code": "active-arthritis", "within": "72h"}}, "weight": -1.30},
    {"value": {"analyte": "platelets", "within": "72h"}, "weight": -0.003},
    {"value": {"analyte": "ldh", "within": "72h"}, "weight": 0.001},
    {"value": {"analyte": "fibrinogen", "within": "72h"}, "weight": -0.004},
    {"value": {"analyte": "ferritin", "within": "72h"}, "weight": 0.0001},
]


class Score(Strict):
    """A score summed from terms (MS score, HScore, a criteria count)."""

    terms: list[Term] = Field(min_length=1, description="The terms summed; a missing input is never scored as zero "
                              "or normal, so the score may be a range.", examples=[_MS_SCORE_TERMS])
    constant: float | int = Field(default=0, description="Added to the sum.", examples=[0])
    cutoff: Threshold | None = Field(default=None, description="The fact is met when the score is in this range.",
                                     examples=[{"gte": -2.1}, {"gte": 168}])
    interpretation: list[Interpretation] = Field(
        default_factory=list, description="Published wording by range, shown only when the whole score range lies "
        "in it.", examples=[[{"lte": 90, "text": "Probability of reactive haemophagocytic syndrome below 1% (Fardet "
                             "2014)."},
                            {"gte": 250, "text": "Probability of reactive haemophagocytic syndrome above 99% (Fardet "
                             "2014)."}]])


class Ratio(Strict):
    """A ratio of two measured values (ferritin/ESR)."""

    numerator: ValueInput = Field(description="The measured value divided, taken in the analyte's canonical unit.",
                                  examples=[{"analyte": "ferritin", "within": "72h"}])
    denominator: ValueInput = Field(description="The measured value divided by, taken in the analyte's canonical "
                                                "unit.",
                                    examples=[{"analyte": "esr", "within": "72h"}])
    cutoff: Threshold = Field(description="The fact is met when the ratio is in this range.",
                              examples=[{"gt": 21.5}])


Term.model_rebuild()


class Derive(Strict):
    fact: str = Field(pattern=_ID, description="Name of the derived fact (an assessment other rules can use).",
                      examples=["refractory-sjia-mas", "ms-score"])
    summary: Text | None = Field(default=None, description="What the fact means when met, for display.",
                                 examples=["Classified as MAS by the 2016 EULAR/ACR/PRINTO criteria."])
    score: Score | None = Field(default=None, description="Compute a score; 'when' says where it applies.",
                                examples=[{"terms": _MS_SCORE_TERMS, "cutoff": {"gte": -2.1}}])
    ratio: Ratio | None = Field(default=None, description="Compute a ratio; 'when' says where it applies.",
                                examples=[{"numerator": {"analyte": "ferritin", "within": "72h"},
                                           "denominator": {"analyte": "esr", "within": "72h"},
                                           "cutoff": {"gt": 21.5}}])
    caveats: list[Caveat] = Field(default_factory=list, description="Situations that make the result unreliable.",
                                  examples=[[{"when": {"medication": {"drug": "tocilizumab", "within": "28d"}},
                                              "applies_to": ["not_met"],
                                              "text": _TCZ_CAVEAT_TEXT}]])

    @model_validator(mode="after")
    def _one(self) -> Derive:
        if self.score is not None and self.ratio is not None:
            raise _err("E113", "derive either a score or a ratio", "")
        if self.score is not None and self.score.cutoff is None and not self.score.interpretation:
            raise _err("E101", "a score needs a cutoff or an interpretation", "say what the value means")
        return self

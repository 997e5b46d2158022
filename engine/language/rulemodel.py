"""The rule language: pydantic models of a rule file (see docs/rule-language.md).

Models are strict (no "684" silently read as 684) and closed (``extra="forbid"``); names of analytes,
drugs, units and terms are checked against the vocabulary here, so every mistake is reported where it
was written, with a did-you-mean. Cross-rule checks (aliases, derived facts, templates) live in
``engine.language.check``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..core.errors import choices_hint, did_you_mean
from ..core.times import DURATION_HINT, TimeFormatError, parse_duration
from ..core.units import UnitError, exact_number, parse_dose, shown
from ..core.vocab import vocabulary

LANGUAGES = ("en", "zh-CN")
EVIDENCE_LEVELS = (
    "guideline",
    "consensus",
    "classification-criteria",
    "validated-score",
    "rct",
    "cohort",
    "case-series",
    "case-report",
    "regulatory-label",
    "expert-opinion",
)
EvidenceLevel = Literal[
    "guideline",
    "consensus",
    "classification-criteria",
    "validated-score",
    "rct",
    "cohort",
    "case-series",
    "case-report",
    "regulatory-label",
    "expert-opinion",
]
ACTION_KINDS = ("start", "stop", "avoid", "consider", "reduce", "monitor", "escalate_care", "record_allergy")
CONDITION_KEYS = (
    "all",
    "any",
    "not",
    "at_least",
    "diagnosis",
    "observation",
    "finding",
    "medication",
    "order",
    "reaction",
    "organ_support",
    "derived",
    "patient",
)
Op = Literal["gt", "gte", "lt", "lte", "eq"]
COMPARATORS: tuple[Op, ...] = ("gt", "gte", "lt", "lte", "eq")

_ID = r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$"
_ALIAS = r"^[a-z][a-z0-9_]*$"
_DOI = re.compile(r"^10\.\d{4,9}/\S+$")
_PMID = re.compile(r"^[1-9]\d{0,8}$")


def _err(code: str, message: str, hint: str = "", at: str | None = None) -> PydanticCustomError:
    """An error whose type is our diagnostic code; ``at`` names the key it is about, for model-level checks."""
    ctx: dict[str, str] = {"hint": hint}
    if at is not None:
        ctx["at"] = at
    return PydanticCustomError(code, message, ctx)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)

    @model_validator(mode="after")
    def _exact_numbers(self) -> Any:
        """Every number of a rule is compared or computed exactly: NaN, infinity, a number beyond a float
        (10**400) or an integer beyond 2**53 cannot be, and crashed the unit conversion or the rule engine."""
        for name, value in self.__dict__.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and not exact_number(value):
                key = type(self).model_fields[name].alias or name
                raise _err("E114", f"{key}: {shown(value)} is not a number that can be compared exactly",
                           "write a finite number (at most 2**53 for a whole number)", at=key)
        return self


# --- small value types ------------------------------------------------------------------------------

def _duration(value: Any) -> str:
    if not isinstance(value, str):
        raise _err("E108", f"expected a duration like '72h', got {value!r}", DURATION_HINT)
    try:
        parse_duration(value)
    except TimeFormatError as exc:
        raise _err("E108", str(exc), DURATION_HINT) from exc
    return value


Duration = Annotated[str, Field(description="A duration: a number and a unit (min, h, d, w), e.g. 72h.",
                                examples=["24h", "3d"])]
AliasName = Annotated[str, Field(pattern=_ALIAS, description="A name for the matched fact, used by later "
                                 "conditions and in rationale templates.", examples=["third_pulse"])]
Number = Annotated[float | int, Field(description="A number, in the unit the condition gives (the observation's "
                                      "or dose's unit); a derived score or ratio as computed.")]


class LocalText(Strict):
    """Text with translations; ``en`` is required."""

    en: str = Field(min_length=1, description="English text; required, and shown when no translation exists.",
                    examples=["Stop tocilizumab."])
    zh_CN: str | None = Field(default=None, alias="zh-CN", description="Simplified Chinese text; optional (English "
                              "is shown when it is left out).", examples=["停用托珠单抗。"])


Text = Annotated[str | LocalText, Field(description="Text, or a mapping of language to text "
                                        "(en required; zh-CN optional).")]


def text_in(text: str | LocalText, lang: str = "en") -> str:
    """The text in ``lang`` (English when there is no translation), without YAML's trailing newline."""
    if isinstance(text, str):
        return text.strip()
    if lang == "zh-CN" and text.zh_CN:
        return text.zh_CN.strip()
    return text.en.strip()


class Ref(Strict):
    """Compare with the value of another matched fact (named by its alias)."""

    ref: AliasName = Field(description="Alias of an earlier condition whose matched value is compared with.")


Operand = Annotated[Number | Ref, Field(description="A number, or {ref: alias} for another fact's value.")]


class Count(Strict):
    """How many matching facts are needed."""

    gt: int | None = Field(default=None, ge=0, description="Holds when the number counted (matching facts, courses, "
                           "administrations or drugs; for patient age_years, the age in whole years) is greater "
                           "than this whole number; give exactly one of gt, gte, lt, lte, eq.", examples=[2])
    gte: int | None = Field(default=None, ge=0, description="Holds when the number counted (matching facts, courses, "
                            "administrations or drugs; for patient age_years, the age in whole years) is at least "
                            "this whole number; give exactly one of gt, gte, lt, lte, eq.", examples=[3, 2])
    lt: int | None = Field(default=None, ge=0, description="Holds when the number counted (matching facts, courses, "
                           "administrations or drugs; for patient age_years, the age in whole years) is less than "
                           "this whole number; give exactly one of gt, gte, lt, lte, eq.", examples=[16])
    lte: int | None = Field(default=None, ge=0, description="Holds when the number counted (matching facts, courses, "
                            "administrations or drugs; for patient age_years, the age in whole years) is at most "
                            "this whole number; give exactly one of gt, gte, lt, lte, eq.", examples=[1])
    eq: int | None = Field(default=None, ge=0, description="Holds when the number counted (matching facts, courses, "
                           "administrations or drugs; for patient age_years, the age in whole years) equals this "
                           "whole number; give exactly one of gt, gte, lt, lte, eq.", examples=[2])

    @model_validator(mode="after")
    def _one(self) -> Count:
        if sum(v is not None for v in (self.gt, self.gte, self.lt, self.lte, self.eq)) != 1:
            raise _err("E113", "a count needs exactly one of gt, gte, lt, lte, eq", "e.g. {gte: 3}")
        return self

    def op(self) -> tuple[Op, int]:
        for name in COMPARATORS:
            value = getattr(self, name)
            if value is not None:
                return name, int(value)
        raise AssertionError("validated to have one comparator")


class Anchor(Strict):
    """A window relative to another matched fact."""

    fact: AliasName = Field(description="Alias of an earlier condition.")
    edge: Literal["start", "end", "time"] | None = Field(
        default=None, description="Which edge of the other fact: start or end of an interval (course, organ "
        "support); 'time' for a point in time. Default: end for 'after', start for 'before'.",
        examples=["end", "start", "time"])
    within: Duration | None = Field(default=None, description="Only facts within this long after (or before) the "
                                    "edge; left out, the window stays open up to the evaluation time (or back to the "
                                    "start of the record).", examples=["24h", "7d"])

    @field_validator("within", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        return v if v is None else _duration(v)


class WindowFields(Strict):
    within: Duration | None = Field(default=None, description="Only facts from this long before the "
                                    "evaluation time.", examples=["72h"])
    after: Anchor | None = Field(default=None, description="Only facts at or after another fact.",
                                 examples=[{"fact": "third_pulse", "edge": "end"}, {"fact": "serious", "edge": "time"}])
    before: Anchor | None = Field(default=None, description="Only facts at or before another fact.",
                                  examples=[{"fact": "ventilation", "edge": "start", "within": "7d"}])
    during: AliasName | None = Field(default=None, description="Only facts overlapping another fact's interval.",
                                     examples=["third_pulse"])
    which: Literal["latest", "earliest", "any", "all", "highest", "lowest"] | None = Field(
        default=None, description="Which of the facts in the window decides: the latest (default for "
        "observations and findings), the earliest, any (default for medications and events), all, or the "
        "highest / lowest value (observations).", examples=["any", "latest"])
    started_before: Duration | None = Field(
        default=None, description="Only facts that started at least this long before the evaluation time (a "
        "course running for at least 12 weeks: active: true, started_before: 12w).", examples=["12w"])
    count: Count | None = Field(default=None, description="How many facts in the window must match (instead of "
                                "'which').", examples=[{"gte": 2}])
    as_: AliasName | None = Field(default=None, alias="as", description="Name the matched fact (the latest when "
                                  "several match; the n-th for nth_course), for later conditions and {name.field} "
                                  "in the rationale.",
                                  examples=["third_pulse", "tcz"])

    @field_validator("within", "started_before", mode="before")
    @classmethod
    def _within(cls, v: Any) -> Any:
        return v if v is None else _duration(v)

    @model_validator(mode="after")
    def _selectors(self) -> WindowFields:
        if self.which in ("highest", "lowest") and not isinstance(self, ObservationSpec):
            raise _err("E103", f"'which: {self.which}' compares values; only observations have one",
                       "use latest, earliest, any or all", at="which")
        if self.which is not None and self.count is not None:
            raise _err("E113", "use either 'which' or 'count', not both",
                       "'count' already says how many facts must match", at="count")
        return self


class ValueFields(Strict):
    gt: Operand | None = Field(default=None, description="Value greater than: a number in the condition's unit (a "
                               "derived score or ratio as computed), or {ref: alias} for another matched fact's value "
                               "(not for doses).", examples=[684, 48])
    gte: Operand | None = Field(default=None, description="Value greater than or equal to: a number in the "
                                "condition's unit (a derived score or ratio as computed), or {ref: alias} for another "
                                "matched fact's value (not for doses).", examples=[38.4, 30])
    lt: Operand | None = Field(default=None, description="Value less than: a number in the condition's unit (a "
                               "derived score or ratio as computed), or {ref: alias} for another matched fact's value "
                               "(not for doses).", examples=[90, 100])
    lte: Operand | None = Field(default=None, description="Value less than or equal to: a number in the condition's "
                                "unit (a derived score or ratio as computed), or {ref: alias} for another matched "
                                "fact's value (not for doses).", examples=[181, 360])
    eq: Operand | None = Field(default=None, description="Value equal to: a number in the condition's unit (a "
                               "derived score or ratio as computed), or {ref: alias} for another matched fact's value "
                               "(not for doses).", examples=[2])

    def comparisons(self) -> list[tuple[Op, float | int | Ref]]:
        return [(name, getattr(self, name)) for name in COMPARATORS if getattr(self, name) is not None]


# --- leaf conditions --------------------------------------------------------------------------------

def _vocab_check(value: str, table: dict[str, Any], code: str, what: str) -> str:
    if value not in table:
        raise _err(code, f"unknown {what} '{value}'", choices_hint(value, table))
    return value


class ObservationSpec(WindowFields, ValueFields):
    """A lab or vital-sign measurement, compared in the analyte's canonical unit."""

    analyte: str = Field(description="Analyte id from the vocabulary (e.g. ferritin, platelets, temperature).",
                         examples=["ferritin"])
    unit: str | None = Field(default=None, description="The unit the comparison's numbers are written in: any unit "
                             "of the analyte in the reviewed table (a unit other than the canonical one is converted "
                             "exactly and warned about, E115); required when comparing with a number.",
                             examples=["ng/mL", "10*9/L", "Cel"])
    trend: Literal["rising", "falling"] | None = Field(
        default=None, description="The latest measurement is higher (rising) or lower (falling) than the one "
        "before it, both in the window (or the earlier one in compared_within).", examples=["rising", "falling"])
    compared_within: Duration | None = Field(
        default=None, description="With trend: how far back the measurement the latest is compared with may lie. "
        "'within' then bounds only the latest, so a decided trend does not turn undecided as soon as the earlier "
        "value leaves the short window; must be at least as long as 'within'.", examples=["7d"])

    @field_validator("compared_within", mode="before")
    @classmethod
    def _compared_within(cls, v: Any) -> Any:
        return v if v is None else _duration(v)

    @field_validator("analyte")
    @classmethod
    def _analyte(cls, v: str) -> str:
        return _vocab_check(v, vocabulary().analytes, "E104", "analyte")

    @model_validator(mode="after")
    def _unit(self) -> ObservationSpec:
        vocab = vocabulary()
        analyte = vocab.analytes[self.analyte]
        numeric = [op for op, value in self.comparisons() if not isinstance(value, Ref)]
        if numeric and self.unit is None:
            raise _err("E101", f"comparing {analyte.name} needs 'unit'",
                       f"add unit: {vocab.display_unit(analyte.canonical)}", at="analyte")
        if self.unit is not None:
            code = vocab.unit_code(self.unit)
            if code is None or code not in analyte.units:
                canonical = vocab.display_unit(analyte.canonical)
                hint = did_you_mean(self.unit, [canonical, analyte.canonical])
                raise _err("E105", f"unit '{self.unit}' is not a unit of {analyte.name}",
                           (hint + " " if hint else "") + f"the canonical unit is {canonical}", at="unit")
        if self.compared_within is not None:
            if self.trend is None or self.within is None:
                raise _err("E113", "'compared_within' needs 'trend' and 'within'",
                           "within bounds the latest measurement, compared_within the one it is compared with",
                           at="compared_within")
            if parse_duration(self.compared_within) < parse_duration(self.within):
                raise _err("E103", "'compared_within' is shorter than 'within'",
                           "the earlier measurement's window must include the latest one's", at="compared_within")
        if self.trend is not None and (self.comparisons() or self.which or self.count):
            raise _err("E113", "'trend' compares measurements with each other; it cannot be combined with "
                       "comparisons, 'which' or 'count'", "use a separate condition for a threshold", at="trend")
        return self


class FindingSpec(WindowFields):
    """An examination or investigation finding recorded as present or absent."""

    code: str = Field(description="Finding id from the vocabulary (e.g. splenomegaly).",
                      examples=["splenomegaly", "haemophagocytosis"])
    present: bool = Field(default=True, description="Match a finding recorded as present (default) or absent.",
                          examples=[True, False])

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        return _vocab_check(v, vocabulary().findings, "E111", "finding")


class DoseTest(ValueFields):
    unit: str = Field(description="Dose unit, which decides what is compared: per administration (mg, g, mg/kg), "
                      "per day (mg/day, mg/kg/day) or infusion rate (µg/kg/min).", examples=["mg/kg"])

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str) -> str:
        try:
            parse_dose(1, v)
        except UnitError as exc:
            raise _err("E105", str(exc), exc.hint) from exc
        return v

    @model_validator(mode="after")
    def _numeric(self) -> DoseTest:
        if not self.comparisons():
            raise _err("E101", "a dose test needs a comparison", "e.g. {gte: 30, unit: mg/kg}")
        if any(isinstance(v, Ref) for _, v in self.comparisons()):
            raise _err("E107", "a dose is compared with a number, not another fact", "write a number")
        return self


class DrugFields(Strict):
    drug: str | None = Field(default=None, description="Drug id or any synonym in the vocabulary.")
    class_: str | None = Field(default=None, alias="class", description="Drug class (e.g. vasoactive).")
    same_drug_as: str | None = Field(default=None, description="The drug of another matched fact, named with "
                                     "'as' earlier in the same 'all' list (e.g. the drug a reaction was to).",
                                     examples=["serious"])

    @field_validator("drug")
    @classmethod
    def _drug(cls, v: str | None) -> str | None:
        if v is None:
            return v
        vocab = vocabulary()
        found = vocab.drug_id(v)
        if found is None:
            raise _err("E106", f"unknown drug '{v}'", choices_hint(v, vocab.drug_choices()))
        return found

    @field_validator("class_")
    @classmethod
    def _class(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return _vocab_check(v, vocabulary().drug_classes, "E106", "drug class")

    @model_validator(mode="after")
    def _drug_or_class(self) -> DrugFields:
        named = [k for k in ("drug", "class_", "same_drug_as") if getattr(self, k) is not None]
        if len(named) != 1 and not (isinstance(self, ReactionSpec) and not named):
            raise _err("E113", "name exactly one of 'drug', 'class' or 'same_drug_as'", "e.g. drug: tocilizumab",
                       at="class" if self.class_ is not None else None)
        return self


class MedicationSpec(WindowFields, DrugFields):
    """Exposure to a drug: administrations (default) or courses."""

    route: str | None = Field(default=None, description="Route (iv, oral, sc, im).")
    regimen: str | None = Field(default=None, description="Course label, e.g. pulse.")
    dose: DoseTest | None = Field(default=None, description="Dose per administration, per day or per kg, "
                                  "by the unit given.", examples=[{"gte": 30, "unit": "mg/kg"}])
    active: bool | None = Field(default=None, description="A course that is running at the evaluation time.",
                                examples=[True])
    exposed: bool | None = Field(default=None, description="Exposed to the drug at the evaluation time: a course "
                                 "running, or whose last dose (its end) was given less than one dosing interval "
                                 "ago, the interval taken from the course's recorded frequency (a single dose "
                                 "recorded as 'once' has none). The one definition of 'on drug X'.",
                                 examples=[True])
    courses: Count | None = Field(default=None, description="Number of matching courses.",
                                  examples=[{"gte": 3}])
    doses: Count | None = Field(default=None, description="Number of matching administrations.",
                                examples=[{"gte": 3}])
    drugs: Count | None = Field(default=None, description="Number of distinct matching drugs (with class).",
                                examples=[{"gte": 2}])
    nth_course: int | None = Field(default=None, ge=1, description="The n-th matching course by start time.",
                                   examples=[3])

    @field_validator("route")
    @classmethod
    def _route(cls, v: str | None) -> str | None:
        if v is None:
            return v
        found = vocabulary().route_id(v)
        if found is None:
            raise _err("E111", f"unknown route '{v}'", choices_hint(v, vocabulary().routes))
        return found

    @field_validator("regimen")
    @classmethod
    def _regimen(cls, v: str | None) -> str | None:
        return v if v is None else _vocab_check(v, vocabulary().regimens, "E111", "regimen")

    @model_validator(mode="after")
    def _counts(self) -> MedicationSpec:
        chosen = [n for n in ("courses", "doses", "drugs", "nth_course", "count", "which")
                  if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise _err("E113", f"use only one of {', '.join(chosen)}", "each says how matches are counted")
        if self.active is False:
            raise _err("E103", "'active: false' is not supported", "wrap the condition in 'not:'")
        if self.exposed is False:
            raise _err("E103", "'exposed: false' is not supported", "wrap the condition in 'not:'", at="exposed")
        if self.exposed and self.active:
            raise _err("E113", "use only one of active, exposed", "exposed already includes a running course",
                       at="exposed")
        return self

    def level(self) -> Literal["course", "admin"]:
        """Courses when the condition is about courses; otherwise administrations (exposures)."""
        if self.doses is not None:
            return "admin"
        if self.active or self.exposed or self.courses is not None or self.nth_course is not None \
                or self.regimen is not None:
            return "course"
        return "admin"


_BOTH_STATUSES: list[Literal["draft", "active"]] = ["draft", "active"]


class OrderSpec(WindowFields, DrugFields):
    """A medication order (e.g. a draft order being signed)."""

    status: list[Literal["draft", "active"]] = Field(default_factory=_BOTH_STATUSES.copy,
                                                     description="Order statuses that count (draft: not yet "
                                                     "signed; active: in force); default both.",
                                                     examples=[["draft"]])


class Severity(Strict):
    gte: str | None = Field(default=None, description="At least this severity (mild < moderate < severe); give "
                            "gte or eq.", examples=["severe"])
    eq: str | None = Field(default=None, description="Exactly this severity (mild, moderate or severe); give gte or "
                           "eq.", examples=["severe"])

    @model_validator(mode="after")
    def _one(self) -> Severity:
        if (self.gte is None) == (self.eq is None):
            raise _err("E113", "severity needs exactly one of gte or eq", "e.g. {gte: severe}")
        value = self.gte or self.eq
        assert value is not None
        if value not in vocabulary().severities:
            raise _err("E111", f"unknown severity '{value}'", choices_hint(value, vocabulary().severities))
        return self


class ReactionSpec(WindowFields, DrugFields):
    """An adverse reaction attributed to a drug."""

    manifestation: list[str] | None = Field(default=None, description="Any of these manifestations (vocabulary "
                                            "ids or synonyms).", examples=[["anaphylaxis"]])
    severity: Severity | None = Field(default=None, description="Severity, e.g. {gte: severe}; a reaction recorded "
                                      "without a severity leaves the condition undecided.",
                                      examples=[{"gte": "severe"}])
    anaphylaxis: bool | None = Field(default=None, description="true: the reaction meets the anaphylaxis clinical "
                                     "criteria (NIAID/FAAN 2006, WAO 2020) decided from its manifestations, onset "
                                     "and blood pressure (engine/runtime/anaphylaxis.py), or was recorded as "
                                     "anaphylaxis; "
                                     "false: it does not. Undecided, naming what to record, when the record cannot "
                                     "decide it.", examples=[True])
    except_drugs: list[str] | None = Field(default=None, description="With no drug or class (a reaction to any "
                                           "drug): drugs left out, e.g. those a rule of their own covers.",
                                           examples=[["tocilizumab"]])

    @field_validator("except_drugs")
    @classmethod
    def _except(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = []
        for d in v:
            found = vocabulary().drug_id(d)
            if found is None:
                raise _err("E106", f"unknown drug '{d}'", choices_hint(d, vocabulary().drug_choices()))
            out.append(found)
        return out

    @model_validator(mode="after")
    def _except_any(self) -> ReactionSpec:
        if self.except_drugs is not None and (self.drug or self.class_ or self.same_drug_as):
            raise _err("E113", "except_drugs goes with a reaction to any drug (no drug, class or same_drug_as)",
                       "leave out drug/class, or leave out except_drugs", at="except_drugs")
        return self

    @field_validator("manifestation")
    @classmethod
    def _manifestation(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if not v:
            raise _err("E103", "list at least one manifestation", "e.g. [anaphylaxis]")
        out = []
        for m in v:
            found = vocabulary().manifestation_id(m)
            if found is None:
                raise _err("E111", f"unknown manifestation '{m}'", choices_hint(m, vocabulary().manifestations))
            out.append(found)
        return out


class OrganSupportSpec(WindowFields):
    kind: str = Field(description="Kind of organ support: mechanical-ventilation, non-invasive-ventilation, "
                      "high-flow-oxygen, ecmo or renal-replacement-therapy.",
                      examples=["mechanical-ventilation", "ecmo"])
    active: bool | None = Field(default=None, description="Running at the evaluation time.", examples=[True])

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        return _vocab_check(v, vocabulary().organ_support, "E111", "organ support")


class DiagnosisSpec(WindowFields):
    code: str = Field(description="Diagnosis id (sjia, mas, hlh, …) or a synonym.", examples=["sjia", "mas"])
    active: bool | None = Field(default=None, description="Not resolved at the evaluation time; left out, a "
                                "resolved diagnosis matches too.", examples=[True])

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        found = vocabulary().diagnosis_id(v)
        if found is None:
            raise _err("E111", f"unknown diagnosis '{v}'", choices_hint(v, vocabulary().diagnoses))
        return found


class DerivedSpec(ValueFields):
    fact: str = Field(pattern=_ID, description="Name of a fact derived by another rule.",
                      examples=["refractory-sjia-mas", "febrile"])
    is_: Literal["met", "not_met"] | None = Field(
        default=None, alias="is", description="met or not_met; default met, or any status when comparing the "
        "derived value (a score) with a number.", examples=["not_met"])
    as_: AliasName | None = Field(default=None, alias="as", description="Name the derived fact, so the rationale can "
                                  "quote {name.fact}, {name.status} or {name.value}.", examples=["refractory"])

    def status_test(self) -> str | None:
        if self.is_ is not None:
            return self.is_
        return None if self.comparisons() else "met"


class PatientSpec(Strict):
    age_years: Count | None = Field(default=None, description="Age at the evaluation time, in whole years; "
                                    "undecided when no age is recorded or the possible ages disagree.",
                                    examples=[{"lt": 16}])
    sex: Literal["female", "male"] | None = Field(default=None, description="The patient's sex: female or male; "
                                                  "left out, any sex.", examples=["female"])
    as_: AliasName | None = Field(default=None, alias="as", description="Name the patient fact, so the rationale "
                                  "can quote {name.age}, {name.sex} or {name.weight}.", examples=["pt"])

    @model_validator(mode="after")
    def _some(self) -> PatientSpec:
        if self.age_years is None and self.sex is None:
            raise _err("E101", "a patient condition needs age_years or sex", "e.g. {age_years: {lt: 18}}")
        return self


# --- condition tree -----------------------------------------------------------------------------------

class AllCond(Strict):
    all: list[Condition] = Field(min_length=1, description="Every condition holds (false as soon as one is false, "
                                 "undecided if none is false but one is undecided).",
                                 examples=[[{"derived": {"fact": "refractory-sjia-mas"}},
                                            {"medication": {"drug": "tocilizumab", "active": True, "as": "tcz"}}]])


class AnyCond(Strict):
    any: list[Condition] = Field(min_length=1, description="At least one condition holds (true as soon as one is "
                                 "true, undecided if none is true but one is undecided).",
                                 examples=[[{"derived": {"fact": "febrile"}}, {"derived": {"fact": "active-mas"}}]])


class NotCond(Strict):
    not_: Condition = Field(alias="not", description="The condition does not hold (undecided stays undecided).",
                            examples=[{"medication": {"class": "jak-inhibitor", "active": True}}])


class AtLeastSpec(Strict):
    count: int = Field(ge=1, description="How many of the conditions must hold (at most the number listed).",
                       examples=[2])
    of: list[Condition] = Field(min_length=1, description="The conditions counted.", examples=[[
        {"observation": {"analyte": "platelets", "lte": 181, "unit": "10*9/L", "within": "72h"}},
        {"observation": {"analyte": "ast", "gt": 48, "unit": "U/L", "within": "72h"}},
        {"observation": {"analyte": "triglycerides", "gt": 156, "unit": "mg/dL", "within": "72h"}},
        {"observation": {"analyte": "fibrinogen", "lte": 360, "unit": "mg/dL", "within": "72h"}}]])

    @model_validator(mode="after")
    def _fits(self) -> AtLeastSpec:
        if self.count > len(self.of):
            raise _err("E103", f"at_least {self.count} of {len(self.of)} conditions can never hold",
                       "lower the count or add conditions")
        return self


class AtLeastCond(Strict):
    at_least: AtLeastSpec = Field(description="At least `count` of the conditions hold (decided as soon as the "
                                  "known ones settle it).", examples=[{"count": 2, "of": [
                                      {"observation": {"analyte": "platelets", "lte": 181, "unit": "10*9/L",
                                                       "within": "72h"}},
                                      {"observation": {"analyte": "ast", "gt": 48, "unit": "U/L", "within": "72h"}},
                                      {"observation": {"analyte": "fibrinogen", "lte": 360, "unit": "mg/dL",
                                                       "within": "72h"}}]}])


class ObservationCond(Strict):
    observation: ObservationSpec = Field(
        description="A lab or vital-sign measurement; undecided when nothing is measured in the window.",
        examples=[{"analyte": "ferritin", "gt": 684, "unit": "ng/mL", "within": "72h"},
                  {"analyte": "alt", "trend": "rising", "after": {"fact": "third_pulse", "edge": "end"}}])


class FindingCond(Strict):
    finding: FindingSpec = Field(
        description="An examination or investigation finding recorded present or absent; undecided when nothing is "
        "recorded in the window.", examples=[{"code": "splenomegaly", "within": "72h"}])


class MedicationCond(Strict):
    medication: MedicationSpec = Field(
        description="Exposure to a drug or drug class (administrations, or courses); false when none is recorded.",
        examples=[{"drug": "methylprednisolone", "route": "iv", "regimen": "pulse", "courses": {"gte": 3}},
                  {"class": "il6-inhibitor", "within": "28d"}])


class OrderCond(Strict):
    order: OrderSpec = Field(description="A medication order (draft or active); false when none is recorded.",
                             examples=[{"drug": "tocilizumab", "status": ["draft"], "within": "24h"}])


class ReactionCond(Strict):
    reaction: ReactionSpec = Field(description="An adverse reaction attributed to a drug; false when none is "
                                   "recorded.", examples=[{"drug": "tocilizumab", "manifestation": ["anaphylaxis"]},
                                                          {"drug": "tocilizumab", "severity": {"gte": "severe"}}])


class OrganSupportCond(Strict):
    organ_support: OrganSupportSpec = Field(
        description="Organ support such as mechanical ventilation or ECMO; false when none is recorded.",
        examples=[{"kind": "mechanical-ventilation", "active": True, "as": "ventilation"}])


class DiagnosisCond(Strict):
    diagnosis: DiagnosisSpec = Field(description="A recorded diagnosis; false when it is not recorded.",
                                     examples=[{"code": "sjia"}, {"code": "mas", "active": True}])


class DerivedCond(Strict):
    derived: DerivedSpec = Field(description="A fact derived by another rule (an assessment), by status or value; "
                                 "undecided when that rule is undecided.",
                                 examples=[{"fact": "active-mas"}, {"fact": "febrile", "is": "not_met"}])


class PatientCond(Strict):
    patient: PatientSpec = Field(description="The patient's age or sex at the evaluation time.",
                                 examples=[{"age_years": {"lt": 16}}, {"sex": "female"}])


def condition_key(value: Any) -> str | None:
    """The kind of a condition mapping (its single known key), or None when it has none or several."""
    if isinstance(value, dict):
        keys = [k for k in value if k in CONDITION_KEYS]
        if len(keys) == 1 and len(value) == 1:
            return str(keys[0])
        return None
    if isinstance(value, BaseModel):
        for key in CONDITION_KEYS:
            if key in type(value).model_fields or f"{key}_" in type(value).model_fields:
                return key
    return None


Condition = Annotated[
    Annotated[AllCond, Tag("all")]
    | Annotated[AnyCond, Tag("any")]
    | Annotated[NotCond, Tag("not")]
    | Annotated[AtLeastCond, Tag("at_least")]
    | Annotated[ObservationCond, Tag("observation")]
    | Annotated[FindingCond, Tag("finding")]
    | Annotated[MedicationCond, Tag("medication")]
    | Annotated[OrderCond, Tag("order")]
    | Annotated[ReactionCond, Tag("reaction")]
    | Annotated[OrganSupportCond, Tag("organ_support")]
    | Annotated[DiagnosisCond, Tag("diagnosis")]
    | Annotated[DerivedCond, Tag("derived")]
    | Annotated[PatientCond, Tag("patient")],
    Discriminator(condition_key, custom_error_type="E112",
                  custom_error_message="a condition must have exactly one kind"),
]

for _m in (AllCond, AnyCond, NotCond, AtLeastSpec):
    _m.model_rebuild()


# --- outcome ------------------------------------------------------------------------------------------

class Source(Strict):
    """A publication the rule relies on."""

    doi: str | None = Field(default=None, description="DOI without the https://doi.org/ prefix.",
                            examples=["10.12372/jcp.2025.24e0236"])
    pmid: str | None = Field(default=None, description="PubMed id.", examples=["26865703"])
    reference: str = Field(min_length=10, description="Formatted reference: authors, title, journal, year.",
                           examples=["Wu J, Shen D, Lu M. Salvage therapy for refractory macrophage activation "
                                     "syndrome associated with systemic juvenile idiopathic arthritis: a case report. "
                                     "J Clin Pediatr 2025;43(3):216-219."])
    reported: str = Field(min_length=10, description="What the source reported that this rule relies on.",
                          examples=["A febrile patient with known or suspected sJIA is classified as having MAS if "
                                    "ferritin > 684 ng/mL and any 2 of: platelets ≤ 181 ×10⁹/L, AST > 48 U/L, "
                                    "triglycerides > 156 mg/dL, fibrinogen ≤ 360 mg/dL."])

    @field_validator("doi")
    @classmethod
    def _doi(cls, v: str | None) -> str | None:
        if v is not None and not _DOI.match(v):
            raise _err("E110", f"'{v}' is not a DOI", "write it like 10.1002/art.39332, without https://doi.org/")
        return v

    @field_validator("pmid")
    @classmethod
    def _pmid(cls, v: str | None) -> str | None:
        if v is not None and not _PMID.match(v):
            raise _err("E110", f"'{v}' is not a PubMed id", "a PMID is digits only, e.g. 26865703")
        return v

    @model_validator(mode="after")
    def _identified(self) -> Source:
        if self.doi is None and self.pmid is None:
            raise _err("E110", "a source needs a DOI or a PMID", "add doi: or pmid:")
        return self


class TargetOf(Strict):
    """An action target taken from a matched fact: the drug of the fact named ``drug_of``."""

    drug_of: str = Field(description="Alias ('as') of a reaction, medication or order condition that holds whenever "
                         "the rule fires; the action is on its drug, once per different drug matched.",
                         examples=["serious"])


def target_label(target: str | TargetOf) -> str:
    """A written target in words, for listings: the vocabulary's name, or the drug of a named match."""
    if isinstance(target, TargetOf):
        return f"the drug of '{target.drug_of}'"
    return vocabulary().target_name(target)


class Action(Strict):
    kind: Literal["start", "stop", "avoid", "consider", "reduce", "monitor", "escalate_care", "record_allergy"] = \
        Field(description="What to do with the target (reduce: lower the dose or taper).",
              examples=["stop", "consider"])
    target: str | TargetOf = Field(
        description="A drug (any synonym), drug class or procedure from the vocabulary; or {drug_of: alias}, the "
        "drug of a matched fact. Actions on the same drug or class can conflict.",
        examples=["tocilizumab", "il6-inhibitor", "expert-centre-referral", {"drug_of": "serious"}])
    text: Text = Field(description="The action in words, for the clinician.",
                       examples=["Stop tocilizumab.", {"en": "Stop tocilizumab.", "zh-CN": "停用托珠单抗。"}])
    reported_dose: Text | None = Field(
        default=None, description="Dose wording exactly as the source reported it (never a computed dose); "
        "or a statement that the source gives none.",
        examples=["The guideline gives no dose.",
                  "As reported, not a dosing rule: 2 mg/kg/day subcutaneously as maintenance in sJIA-associated MAS "
                  "(Bruck 2011). EULAR/PReS 2024 give no dose."])

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | TargetOf) -> str | TargetOf:
        if isinstance(v, TargetOf):
            return v
        vocab = vocabulary()
        drug = vocab.drug_id(v)
        if drug is not None:
            return drug
        if not vocab.is_target(v):
            raise _err("E209", f"unknown action target '{v}'", choices_hint(v, vocab.target_choices()))
        return v


class Recommend(Strict):
    indicator: Literal["info", "warning", "critical"] = Field(description="Urgency, as in CDS Hooks cards.",
                                                              examples=["warning", "critical"])
    rationale: Text = Field(description="Why, in words; may quote matched values as {alias.field}.",
                            examples=["The MAS has not improved after three pulse courses with ciclosporin while on "
                                      "tocilizumab (course since {tcz.start}). The source case stopped tocilizumab "
                                      "at this point."])
    actions: list[Action] = Field(min_length=1, description="What to do: one or more actions, each settled on its "
                                  "own when recommendations conflict.",
                                  examples=[[{"kind": "stop", "target": "tocilizumab", "text": "Stop tocilizumab."}]])
    priority: int = Field(default=0, ge=-100, le=100, description="Higher wins when two recommendations "
                          "conflict on the same target; see the knowledge base's conflict policy.",
                          examples=[10, 5])


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


# The 2016 criteria's caveat (rules/assessments/ravelli2016.mas-classification.yaml), an example for the schema.
_TCZ_CAVEAT_TEXT = "On tocilizumab the 2016 criteria are not applicable (Shimizu 2020); do not rule MAS out on them."


class Caveat(Strict):
    """When the assessment cannot be trusted (the 2016 criteria under tocilizumab)."""

    when: Condition = Field(description="Situation that makes the result unreliable.",
                            examples=[{"medication": {"drug": "tocilizumab", "within": "28d"}}])
    applies_to: list[Literal["met", "not_met"]] = Field(min_length=1, description="Results it makes unreliable "
                                                        "(met, not_met or both).", examples=[["not_met"]])
    text: Text = Field(description="Why, for the clinician.",
                       examples=[_TCZ_CAVEAT_TEXT])


Term.model_rebuild()
Caveat.model_rebuild()


class Applicability(Strict):
    """The population a criterion or score was defined for; outside it the assessment is ``not_applicable``."""

    when: Condition = Field(description="Who the assessment is defined for (e.g. a recorded sJIA diagnosis); when "
                            "this is false the assessment is not applicable, when undecided it is undecided.",
                            examples=[{"diagnosis": {"code": "sjia"}}])
    reason: Text = Field(description="Why the assessment does not apply outside that population, for the "
                         "clinician (shown beside 'not applicable').",
                         examples=["Defined for patients with sJIA; no sJIA diagnosis is recorded."])


Applicability.model_rebuild()


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


class Rule(Strict):
    """One cited rule."""

    id: str = Field(pattern=_ID, max_length=100, description="Stable rule id, lowercase with dots/dashes.",
                    examples=["wu2025.refractory-sjia-mas"])
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Semantic version of this rule.",
                         examples=["1.0.0"])
    title: Text = Field(description="Short title (at most 120 characters), shown as a card summary.",
                        examples=["Refractory sJIA-MAS on tocilizumab - stop tocilizumab",
                                  {"en": "Refractory sJIA-MAS on tocilizumab - stop tocilizumab",
                                   "zh-CN": "使用托珠单抗期间的难治性 sJIA-MAS：停用托珠单抗"}])
    status: Literal["draft", "active", "retired"] = Field(description="Only active rules are evaluated "
                                                          "(drafts on request).", examples=["active"])
    description: Text = Field(description="What the rule encodes and its limits.",
                              examples=["In Wu 2025 tocilizumab was discontinued when the MAS proved refractory to "
                                        "three pulse courses with ciclosporin, before salvage therapy was started. "
                                        "Fires only while a tocilizumab course is running."])
    evidence_level: EvidenceLevel = Field(description="Strength of the evidence behind the rule.",
                                          examples=["case-report", "classification-criteria"])
    sources: list[Source] = Field(description="At least one cited publication.", examples=[[{
        "doi": "10.1136/annrheumdis-2015-208982", "pmid": "26865703",
        "reference": "Ravelli A, Minoia F, Davì S, et al. 2016 Classification Criteria for Macrophage Activation "
                     "Syndrome Complicating Systemic Juvenile Idiopathic Arthritis: A European League Against "
                     "Rheumatism/American College of Rheumatology/Paediatric Rheumatology International Trials "
                     "Organisation Collaborative Initiative. Ann Rheum Dis 2016;75(3):481-489.",
        "reported": "A febrile patient with known or suspected sJIA is classified as having MAS if ferritin > 684 "
                    "ng/mL and any 2 of: platelets ≤ 181 ×10⁹/L, AST > 48 U/L, triglycerides > 156 mg/dL, "
                    "fibrinogen ≤ 360 mg/dL."}]])
    when: Condition = Field(description="The condition tree.", examples=[{"all": [
        {"derived": {"fact": "refractory-sjia-mas"}},
        {"medication": {"drug": "tocilizumab", "active": True, "as": "tcz"}}]}])
    applies_to: Applicability | None = Field(
        default=None, description="For an assessment defined for one population (the 2016 criteria, the MS score: "
        "sJIA): who it applies to; outside it the assessment is not_applicable with the reason, never 'not met'.",
        examples=[{"when": {"diagnosis": {"code": "sjia"}},
                   "reason": "Defined for patients with sJIA; no sJIA diagnosis is recorded."}])
    derive: Derive | None = Field(default=None, description="Produce a derived fact (assessment).", examples=[{
        "fact": "refractory-sjia-mas",
        "summary": "Active sJIA-MAS not improving after three IV methylprednisolone pulse courses with ciclosporin "
                   "(Wu 2025)."}])
    recommend: Recommend | None = Field(default=None, description="Produce a recommendation.", examples=[{
        "indicator": "warning",
        "rationale": "The MAS has not improved after three pulse courses with ciclosporin while on tocilizumab "
                     "(course since {tcz.start}). The source case stopped tocilizumab at this point.",
        "actions": [{"kind": "stop", "target": "tocilizumab", "text": "Stop tocilizumab."}]}])

    @field_validator("title")
    @classmethod
    def _title(cls, v: str | LocalText) -> str | LocalText:
        for text in ([v] if isinstance(v, str) else [v.en, v.zh_CN or ""]):
            if len(text) > 120:
                raise _err("E103", f"title is {len(text)} characters; at most 120",
                           "shorten it; details belong in the rationale")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[Source]) -> list[Source]:
        if not v:
            raise _err("E109", "a rule must cite at least one source", "add a source with a DOI or PMID")
        return v

    @model_validator(mode="after")
    def _outcome(self) -> Rule:
        if (self.derive is None) == (self.recommend is None):
            raise _err("E113", "a rule has exactly one of 'derive' or 'recommend'",
                       "split it: one rule derives an assessment, another recommends from it")
        if self.applies_to is not None and self.derive is None:
            raise _err("E113", "applies_to is for assessments (rules with 'derive')",
                       "a recommendation says who it is for in 'when'")
        return self


class ScopeDiagnosis(Strict):
    code: str = Field(description="Diagnosis id (or synonym) from the vocabulary; a patient with it recorded (active "
                      "or resolved, onset before the evaluation time) is in scope.", examples=["sjia"])
    reason: str = Field(min_length=10, description="Why patients with this diagnosis are in scope.",
                        examples=["The population the knowledge base's criteria and treatment rules are about."])

    @field_validator("code")
    @classmethod
    def _code(cls, v: str) -> str:
        found = vocabulary().diagnosis_id(v)
        if found is None:
            raise _err("E111", f"unknown diagnosis '{v}'", choices_hint(v, vocabulary().diagnoses))
        return found


class ScopeDrug(Strict):
    target: str = Field(description="Drug or drug class from the vocabulary; a patient with a course, dose, order "
                        "or reaction of it recorded (at or before the evaluation time) is in scope.",
                        examples=["tocilizumab", "il1-inhibitor"])
    reason: str = Field(min_length=10, description="Which safety rules watch this drug, and why.",
                        examples=["Anaphylaxis, re-challenge and lung-disease rules of tocilizumab."])

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        vocab = vocabulary()
        drug = vocab.drug_id(v)
        if drug is not None:
            return drug
        if v in vocab.drug_classes:
            return v
        raise _err("E106", f"unknown drug or drug class '{v}'",
                   choices_hint(v, [*vocab.drugs, *vocab.drug_classes]))


class Scope(Strict):
    """Who the knowledge base is about: a patient is in scope with one of these diagnoses or drugs recorded."""

    description: str = Field(min_length=10, description="Why the knowledge base is limited to these patients.",
                             examples=["Patients with sJIA, MAS or HLH, and patients exposed to a drug whose safety "
                                       "rules apply whatever the diagnosis."])
    diagnoses: list[ScopeDiagnosis] = Field(min_length=1, description="Diagnoses that put a patient in scope.",
                                            examples=[[{"code": "sjia", "reason": "The population of the criteria "
                                                        "and treatment rules."}]])
    drugs: list[ScopeDrug] = Field(default_factory=list, description="Drugs (or classes) whose safety rules apply "
                                   "to any patient exposed to them; every recommendation rule must require one of "
                                   "these or a scope diagnosis (checked at load, E210).",
                                   examples=[[{"target": "tocilizumab", "reason": "Anaphylaxis and re-challenge "
                                               "rules of tocilizumab (Yang 2023)."}]])


class KnowledgeBaseManifest(Strict):
    """``rules/knowledge-base.yaml``: the knowledge base's name, version and conflict policy."""

    name: str = Field(pattern=_ID, description="Stable name of the knowledge base, lowercase with dots/dashes; "
                      "reported in every result.", examples=["mascds-sjia-mas"])
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$", description="Semantic version of the knowledge base; "
                         "reported in every result.", examples=["0.1.0"])
    title: str = Field(description="Human-readable title of the knowledge base.",
                       examples=["Macrophage activation syndrome in systemic juvenile idiopathic arthritis"])
    description: str = Field(default="", description="What the knowledge base covers; optional (empty when left "
                             "out).", examples=["Cited rules for recognising and escalating treatment of "
                                                "sJIA-associated macrophage activation syndrome, and for tocilizumab "
                                                "safety."])
    conflict_resolution: Literal["restrictive-wins", "priority-only"] = Field(
        description="When two fired recommendations act in opposite directions on the same target: "
        "the higher priority wins; at equal priority 'restrictive-wins' lets stop/avoid beat "
        "start/consider, 'priority-only' reports an unresolved conflict as an error.",
        examples=["restrictive-wins"])

    scope: Scope | None = Field(
        default=None, description="The patients the knowledge base is about. Outside it a result reports no "
        "recommendations, assessments or undecided rules to the clinician (CDS Hooks: no cards); left out, "
        "every patient is in scope.",
        examples=[{"description": "Children with sJIA, MAS or HLH, and patients on the drugs its safety rules watch.",
                   "diagnoses": [{"code": "sjia", "reason": "The population of the knowledge base."}],
                   "drugs": [{"target": "tocilizumab", "reason": "Watched by the tocilizumab safety rules."}]}])

"""What a rule's conditions model: leaf conditions over observations, findings, medications,
orders, reactions, organ support, diagnoses, derived facts and the patient, with their windows and value tests,
and the condition tree (all, any, not, at least) over them (docs/rule-language.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Discriminator, Field, Tag, field_validator, model_validator

from ..core.errors import choices_hint, did_you_mean
from ..core.times import parse_duration
from ..core.units import UnitError, parse_dose
from ..core.vocab import vocabulary
from .fields import _ID, COMPARATORS, AliasName, Duration, Number, Op, Strict, _duration, _err

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

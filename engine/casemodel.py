"""The patient case format: pydantic models of a case file (see docs/case-format.md).

A case is a patient timeline (diagnoses, observations, findings, medication courses, orders, reactions,
organ support) plus expectations: at a time, which rules must fire, must not, or must be undecided.
Values a reconstructed publication does not state are marked ``illustrative``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Illustrative = Annotated[
    bool | list[str] | None,
    Field(description="true when every value of this entry is illustrative (not stated by the source), or the "
          "list of fields that are."),
]
Reported = Annotated[str | None, Field(description="What the source reported for this entry (a paraphrase).")]
TimeText = Annotated[str, Field(description="ISO 8601 date-time, date, or 'day N HH:MM' relative to "
                                "timeline.start.", examples=["day 3 08:00", "2024-03-01T08:00"])]


class CaseModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)


class Marked(CaseModel):
    illustrative: Illustrative = None
    reported: Reported = None

    def is_marked(self) -> bool:
        return self.illustrative not in (None, False, []) or self.reported is not None

    def illustrative_fields(self) -> set[str] | bool:
        if self.illustrative is True:
            return True
        if isinstance(self.illustrative, list):
            return set(self.illustrative)
        return set()


class Quantity(CaseModel):
    value: float | int
    unit: str


class CaseSource(CaseModel):
    doi: str | None = None
    pmid: str | None = None
    reference: str = Field(description="The publication this case reconstructs.")


class CaseInfo(CaseModel):
    id: str = Field(pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$", description="Case id.")
    title: str
    description: str = ""
    reconstruction_of: CaseSource | None = Field(
        default=None, description="The publication this case reconstructs; every entry must then say "
        "whether it is reported or illustrative.")


class Patient(Marked):
    sex: Literal["female", "male"] | None = None
    age_years: float | int | None = Field(default=None, ge=0, le=120, description="Age at timeline.start.")
    birth_date: TimeText | None = None
    weight: Quantity | None = Field(default=None, description="Body weight at timeline.start.")

    @model_validator(mode="after")
    def _age(self) -> Patient:
        if self.age_years is not None and self.birth_date is not None:
            raise PydanticCustomError("E113", "give either age_years or birth_date, not both",
                                      {"hint": "keep birth_date when known"})
        return self


class Timeline(CaseModel):
    start: TimeText = Field(description="Day 0 of the timeline (e.g. admission), a date or date-time.")


class Diagnosis(Marked):
    code: str
    onset: TimeText | None = None
    resolved: TimeText | None = None


class Observation(Marked):
    analyte: str | None = Field(default=None, description="Analyte id (ferritin, platelets, temperature, …).")
    loinc: str | None = Field(default=None, description="LOINC code, instead of analyte.")
    value: float | int
    unit: str
    time: TimeText

    @model_validator(mode="after")
    def _which(self) -> Observation:
        if (self.analyte is None) == (self.loinc is None):
            raise PydanticCustomError("E113", "name the analyte or its LOINC code (one of them)",
                                      {"hint": "e.g. analyte: ferritin"})
        return self


class Finding(Marked):
    code: str
    present: bool = True
    time: TimeText


class Medication(Marked):
    drug: str
    route: str | None = None
    dose: float | int | None = Field(default=None, ge=0, description="Dose per administration (or rate).")
    unit: str | None = Field(default=None, description="Dose unit: mg, mg/kg, µg/kg/min, …")
    frequency: str = Field(default="once", description="once, continuous, q24h (daily), q12h (bid), q2w, …")
    regimen: str | None = Field(default=None, description="Course label, e.g. pulse.")
    start: TimeText
    end: TimeText | None = Field(default=None, description="Time of the last dose or end of infusion; absent "
                                 "while ongoing.")

    @model_validator(mode="after")
    def _dose(self) -> Medication:
        if (self.dose is None) != (self.unit is None):
            raise PydanticCustomError("E101", "give dose and unit together", {"hint": "e.g. dose: 8, unit: mg/kg"})
        return self


class Order(Marked):
    drug: str
    status: Literal["draft", "active"] = "draft"
    time: TimeText
    dose: float | int | None = Field(default=None, ge=0)
    unit: str | None = None


class Reaction(Marked):
    drug: str
    manifestations: list[str] = Field(min_length=1)
    severity: str | None = Field(default=None, description="mild, moderate or severe; leave it out "
                                 "when not recorded (rules on severity are then undecided, never answered as mild).")
    time: TimeText


class OrganSupport(Marked):
    kind: str
    start: TimeText
    end: TimeText | None = None


class Expectation(CaseModel):
    at: TimeText = Field(description="Evaluation time.")
    note: str = ""
    fires: list[str] = Field(default_factory=list, description="Rules whose recommendation must be given "
                             "(not suppressed), or whose derived fact must be met.")
    not_fires: list[str] = Field(default_factory=list, description="Rules that must not fire.")
    indeterminate: list[str] = Field(default_factory=list, description="Rules that must be undecided.")
    suppressed: list[str] = Field(default_factory=list, description="Recommendations that must be suppressed.")
    suppressed_actions: dict[str, list[str]] = Field(
        default_factory=dict, description="Rule id -> action targets whose actions must have lost a conflict "
        "(the recommendation itself may still stand), e.g. {acr2021.consider-il1-il6-blockade: [il6-inhibitor]}.")
    assessments: dict[str, Literal["met", "not_met", "indeterminate", "met_unreliable", "not_met_unreliable"]] = \
        Field(default_factory=dict, description="Derived facts and the status each must have (a status with "
              "_unreliable: the result holds but a caveat applies, e.g. the 2016 criteria under tocilizumab).")


SECTION_NAMES = ("diagnoses", "observations", "findings", "medications", "orders", "reactions", "organ_support")


class Case(CaseModel):
    case: CaseInfo
    patient: Patient
    timeline: Timeline | None = None
    not_recorded: list[Literal["diagnoses", "observations", "findings", "medications", "orders", "reactions",
                               "organ_support"]] = Field(
        default_factory=list, description="Sections this record does not hold (rules treat them as unknown, "
        "not empty).")
    diagnoses: list[Diagnosis] = Field(default_factory=list)
    observations: list[Observation] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    medications: list[Medication] = Field(default_factory=list)
    orders: list[Order] = Field(default_factory=list)
    reactions: list[Reaction] = Field(default_factory=list)
    organ_support: list[OrganSupport] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)

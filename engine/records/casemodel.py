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
          "list of fields that are (e.g. [dose, start, end]); illustrative values are marked in every output.",
          examples=[True]),
]
Reported = Annotated[str | None, Field(description="What the source reported for this entry (a paraphrase); in a "
                                       "reconstruction every entry needs reported or illustrative.",
                                       examples=["Third round of pulse therapy; the condition failed to improve.",
                                                 "An 11-year-old girl."])]
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
    value: float | int = Field(description="The amount, in `unit`.", examples=[35])
    unit: str = Field(description="Unit of the value, as in the reviewed unit table (for a body weight: kg, g or "
                      "lb).", examples=["kg"])


class CaseSource(CaseModel):
    doi: str | None = Field(default=None, description="DOI of the publication, without the https://doi.org/ "
                            "prefix; optional.", examples=["10.12372/jcp.2025.24e0236"])
    pmid: str | None = Field(default=None, description="PubMed id of the publication (digits); optional.",
                             examples=["26865703"])
    reference: str = Field(description="The publication this case reconstructs.",
                           examples=["Wu J, Shen D, Lu M. J Clin Pediatr 2025;43(3):216-219."])


class CaseInfo(CaseModel):
    id: str = Field(pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$", description="Case id, lowercase with dots/dashes; "
                    "names the case in test output.", examples=["wu-2025-ruxolitinib"])
    title: str = Field(description="Short title of the case, shown in test and evaluation output.",
                       examples=["Wu 2025: refractory sJIA-MAS after three pulse courses, ruxolitinib salvage"])
    description: str = Field(default="", description="What the case shows and where its values come from; "
                             "optional (empty when left out).",
                             examples=["Synthetic timeline (all values illustrative): sJIA on anakinra; a rash "
                                       "alone, then eosinophilia with a rash and a raised AST - the DRESS pattern of "
                                       "Saper 2022."])
    reconstruction_of: CaseSource | None = Field(
        default=None, description="The publication this case reconstructs; every entry must then say "
        "whether it is reported or illustrative.",
        examples=[{"doi": "10.12372/jcp.2025.24e0236",
                   "reference": "Wu J, Shen D, Lu M. J Clin Pediatr 2025;43(3):216-219."}])


class Patient(Marked):
    sex: Literal["female", "male"] | None = Field(default=None, description="Sex: female or male; leave it out "
                                                  "when not recorded.", examples=["female"])
    age_years: float | int | None = Field(default=None, ge=0, le=120, description="Age at timeline.start, in "
                                          "years (needs timeline.start; give this or birth_date, not both).",
                                          examples=[11])
    birth_date: TimeText | None = Field(default=None, description="Date of birth (ISO 8601); ages are then exact "
                                        "(give this or age_years, not both).", examples=["2012-02-10"])
    weight: Quantity | None = Field(default=None, description="Body weight at timeline.start (later weights are "
                                    "observations).", examples=[{"value": 35, "unit": "kg"}])

    @model_validator(mode="after")
    def _age(self) -> Patient:
        if self.age_years is not None and self.birth_date is not None:
            raise PydanticCustomError("E113", "give either age_years or birth_date, not both",
                                      {"hint": "keep birth_date when known"})
        return self


class Timeline(CaseModel):
    start: TimeText = Field(description="Day 0 of the timeline (e.g. admission), a date or date-time.")


class Diagnosis(Marked):
    code: str = Field(description="Diagnosis id (sjia, mas, hlh, …) or a synonym from the vocabulary.",
                      examples=["sjia", "mas"])
    onset: TimeText | None = Field(default=None, description="When the diagnosis began; left out, it counts as "
                                   "present from before the record starts.", examples=["day -400", "day 2 12:00"])
    resolved: TimeText | None = Field(default=None, description="When the diagnosis resolved; left out, it is "
                                      "still active.", examples=["day 60"])


class Observation(Marked):
    analyte: str | None = Field(default=None, description="Analyte id (ferritin, platelets, temperature, …).")
    loinc: str | None = Field(default=None, description="LOINC code, instead of analyte.", examples=["777-3"])
    value: float | int = Field(description="The measured value, in `unit`.", examples=[6800, 39.6])
    unit: str = Field(description="Unit of the value: any unit of the analyte in the reviewed table (UCUM codes and "
                      "common spellings); converted to the canonical unit at ingest.",
                      examples=["ng/mL", "10*9/L", "Cel"])
    time: TimeText

    @model_validator(mode="after")
    def _which(self) -> Observation:
        if (self.analyte is None) == (self.loinc is None):
            raise PydanticCustomError("E113", "name the analyte or its LOINC code (one of them)",
                                      {"hint": "e.g. analyte: ferritin"})
        return self


class Finding(Marked):
    code: str = Field(description="Finding id from the vocabulary (e.g. splenomegaly, haemophagocytosis).",
                      examples=["splenomegaly"])
    present: bool = Field(default=True, description="true (default) when the finding was present, false when it "
                          "was looked for and absent.", examples=[True, False])
    time: TimeText


class Medication(Marked):
    drug: str = Field(description="Drug id or any synonym in the vocabulary (e.g. MP, Actemra).")
    route: str | None = Field(default=None, description="Route: iv, oral, sc or im (or a synonym such as "
                              "intravenous); left out, a rule condition naming a route does not match the course.")
    dose: float | int | None = Field(default=None, ge=0, description="Dose per administration (or rate).",
                                     examples=[500, 30])
    unit: str | None = Field(default=None, description="Dose unit: mg, mg/kg, µg/kg/min, …",
                             examples=["mg", "mg/kg", "ug/kg/min"])
    frequency: str = Field(default="once", description="once, continuous, q24h (daily), q12h (bid), q2w, …")
    regimen: str | None = Field(default=None, description="Course label, e.g. pulse.")
    start: TimeText
    end: TimeText | None = Field(default=None, description="Time of the last dose or end of infusion; absent "
                                 "while ongoing (a single dose, frequency once, ends when given).",
                                 examples=["day 15 10:00"])
    stop_reason: str | None = Field(default=None, description="Why the course was stopped, once it has an end: "
                                    "inefficacy, adverse-reaction, completed, remission, other or unknown. The "
                                    "treatment history reads inefficacy as a failed line; left out, the history "
                                    "decides from what followed (a later line started while the disease stayed "
                                    "active).", examples=["inefficacy"])

    @model_validator(mode="after")
    def _dose(self) -> Medication:
        if (self.dose is None) != (self.unit is None):
            raise PydanticCustomError("E101", "give dose and unit together", {"hint": "e.g. dose: 8, unit: mg/kg"})
        return self


class Order(Marked):
    drug: str = Field(description="Ordered drug: id or any synonym in the vocabulary (e.g. RoActemra).")
    status: Literal["draft", "active"] = Field(default="draft", description="draft (not yet signed, e.g. being "
                                               "prescribed; the default) or active (in force).", examples=["draft"])
    time: TimeText
    dose: float | int | None = Field(default=None, ge=0, description="Ordered dose, given with unit; kept with the "
                                     "order but not tested by rule conditions.", examples=[12])
    unit: str | None = Field(default=None, description="Unit of the ordered dose: mg, mg/kg, …",
                             examples=["mg/kg"])


class Reaction(Marked):
    drug: str = Field(description="Drug the reaction is attributed to: id or any synonym in the vocabulary.")
    manifestations: list[str] = Field(min_length=1, description="What the reaction showed, at least one "
                                      "manifestation from the vocabulary.",
                                      examples=[["anaphylaxis", "palpitations", "chest-tightness"]])
    severity: str | None = Field(default=None, description="mild, moderate or severe; leave it out "
                                 "when not recorded (rules on severity are then undecided, never answered as mild).")
    time: TimeText
    time_is_onset: bool = Field(default=True, description="Whether `time` is when the manifestations began (the "
                                "default). false: it is only when the reaction was recorded; the onset after the "
                                "dose is then unknown and anaphylaxis by the clinical criteria undecided.",
                                examples=[False])


class OrganSupport(Marked):
    kind: str = Field(description="Kind of organ support: mechanical-ventilation, non-invasive-ventilation, "
                      "high-flow-oxygen, ecmo or renal-replacement-therapy.",
                      examples=["mechanical-ventilation", "ecmo"])
    start: TimeText
    end: TimeText | None = Field(default=None, description="When the support stopped; left out, it is ongoing.",
                                 examples=["day 9 10:00"])


class RecommendsClaim(CaseModel):
    """A recommendation as a clinician reads it: what to do, to which drug or class, how urgently, on whose word."""

    kind: Literal["start", "stop", "avoid", "consider", "reduce", "monitor", "escalate_care", "record_allergy"] = \
        Field(description="The action kind.", examples=["consider", "stop"])
    target: str = Field(description="The action's target as the rule names it: a drug (any synonym), drug class or "
                        "procedure from the vocabulary; matched exactly (a class is not its members).",
                        examples=["ruxolitinib", "il6-inhibitor"])
    indicator: Literal["info", "warning", "critical"] | None = Field(
        default=None, description="Urgency the recommendation must have; left out, any.", examples=["warning"])
    doi: str | None = Field(default=None, description="DOI one of the recommendation's sources must have; left out, "
                            "any.", examples=["10.12372/jcp.2025.24e0236"])
    rule: str | None = Field(default=None, description="Rule id that must give it; left out, any rule.",
                             examples=["wu2025.consider-ruxolitinib"])


class Expectation(CaseModel):
    at: TimeText = Field(description="Evaluation time.")
    note: str = Field(default="", description="What this time point shows, printed with its checks; optional.",
                      examples=["Two courses are not three - the refractory pattern is not met and nothing is "
                                "recommended."])
    fires: list[str] = Field(default_factory=list, description="Rules whose recommendation must be given "
                             "(not suppressed), or whose derived fact must be met.",
                             examples=[["wu2025.consider-ruxolitinib", "wu2025.stop-tocilizumab"]])
    not_fires: list[str] = Field(default_factory=list, description="Rules that must not fire.",
                                 examples=[["yang2023.consider-ecmo"]])
    indeterminate: list[str] = Field(default_factory=list, description="Rules that must be undecided.",
                                     examples=[["yang2023.tocilizumab-anaphylaxis",
                                                "yang2023.tocilizumab-rechallenge"]])
    suppressed: list[str] = Field(default_factory=list, description="Recommendations that must be suppressed.",
                                  examples=[["eular2024.refractory-consider-anakinra"]])
    suppressed_actions: dict[str, list[str]] = Field(
        default_factory=dict, description="Rule id -> action targets whose actions must have lost a conflict "
        "(the recommendation itself may still stand), e.g. {acr2021.consider-il1-il6-blockade: [il6-inhibitor]}.",
        examples=[{"acr2021.consider-il1-il6-blockade": ["il6-inhibitor"]}])
    assessments: dict[str, Literal["met", "not_met", "indeterminate", "met_unreliable", "not_met_unreliable",
                                   "not_applicable"]] = \
        Field(default_factory=dict, description="Derived facts and the status each must have (a status with "
              "_unreliable: the result holds but a caveat applies, e.g. the 2016 criteria under tocilizumab; "
              "not_applicable: the patient is outside the population the assessment is defined for).",
              examples=[{"refractory-sjia-mas": "met"},
                        {"mas-classification-2016": "not_met_unreliable", "ms-score": "met"}])
    recommends: list[RecommendsClaim] = Field(
        default_factory=list, description="Recommendations that must stand (given and not suppressed), by action "
        "kind and target, optionally urgency, a source's DOI and the rule.",
        examples=[[{"kind": "consider", "target": "ruxolitinib", "indicator": "warning",
                    "doi": "10.12372/jcp.2025.24e0236"}]])
    no_suggestion_of: list[str] = Field(
        default_factory=list, description="Drugs or classes nothing may suggest: no standing start or consider "
        "action on them, a class covering its members and a drug the classes it belongs to.",
        examples=[["il6-inhibitor", "tocilizumab"]])
    undecided: dict[str, list[str]] = Field(
        default_factory=dict, description="Rule id or derived fact -> what its undecided answer must name as missing "
        "(each item found in one of the missing inputs, e.g. triglycerides); an empty list: undecided, naming "
        "anything.", examples=[{"fardet2014.hscore": ["triglycerides", "hepatomegaly"]}])
    decided_not_fired: list[str] = Field(
        default_factory=list, description="Rule ids or derived facts that must be decided and not fire: a "
        "recommendation not given and not undecided, an assessment not met (not undecided, not unreliable, not "
        "not applicable).", examples=[["yang2023.consider-ecmo", "refractory-sjia-mas"]])
    scope: Literal["in_scope", "out_of_scope", "undetermined"] | None = Field(
        default=None, description="Whether the patient must be in the knowledge base's scope (out of it nothing is "
        "shown); left out, not checked.", examples=["out_of_scope"])


SECTION_NAMES = ("diagnoses", "observations", "findings", "medications", "orders", "reactions", "organ_support")


class Case(CaseModel):
    case: CaseInfo = Field(description="Id, title and description of the case, and the publication it reconstructs "
                           "if any.", examples=[{"id": "wu-2025-ruxolitinib",
                                                 "title": "Wu 2025: refractory sJIA-MAS after three pulse courses, "
                                                          "ruxolitinib salvage",
                                                 "reconstruction_of": {
                                                     "doi": "10.12372/jcp.2025.24e0236",
                                                     "reference": "Wu J, Shen D, Lu M. J Clin Pediatr "
                                                                  "2025;43(3):216-219."}}])
    patient: Patient = Field(description="Sex, age (or birth date) and weight of the patient; any of them may be "
                             "left out when not recorded.",
                             examples=[{"sex": "male", "age_years": 8}, {"sex": "female", "age_years": 11,
                                                                         "weight": {"value": 35, "unit": "kg"}}])
    timeline: Timeline | None = Field(default=None, description="Day 0 of the timeline; needed for 'day N' times "
                                      "and for age_years.", examples=[{"start": "2024-03-01"}])
    not_recorded: list[Literal["diagnoses", "observations", "findings", "medications", "orders", "reactions",
                               "organ_support"]] = Field(
        default_factory=list, description="Sections this record does not hold (rules treat them as unknown, "
        "not empty).", examples=[["medications"]])
    diagnoses: list[Diagnosis] = Field(default_factory=list, description="Recorded diagnoses; one not listed counts "
                                       "as absent (unless diagnoses is in not_recorded).",
                                       examples=[[{"code": "sjia", "onset": "day -400"},
                                                  {"code": "mas", "onset": "day 1"}]])
    observations: list[Observation] = Field(default_factory=list, description="Lab and vital-sign measurements; "
                                            "conditions on an analyte with no measurement in their window are "
                                            "undecided.",
                                            examples=[[{"analyte": "ferritin", "value": 6800, "unit": "ng/mL",
                                                        "time": "day 2 08:00"},
                                                       {"analyte": "platelets", "value": 142, "unit": "10*9/L",
                                                        "time": "day 2 08:00"}]])
    findings: list[Finding] = Field(default_factory=list, description="Examination and investigation findings, "
                                    "present or absent; conditions on a finding not recorded in their window are "
                                    "undecided.", examples=[[{"code": "splenomegaly", "present": True,
                                                              "time": "day 2 09:00"}]])
    medications: list[Medication] = Field(default_factory=list, description="Medication courses and single doses; "
                                          "a drug not listed was not given (unless medications is in not_recorded).",
                                          examples=[[{"drug": "methylprednisolone", "route": "iv",
                                                      "regimen": "pulse", "dose": 30, "unit": "mg/kg",
                                                      "frequency": "q24h", "start": "day 2 10:00",
                                                      "end": "day 4 10:00"}]])
    orders: list[Order] = Field(default_factory=list, description="Medication orders, e.g. a draft order being "
                                "signed; none listed means none (unless orders is in not_recorded).",
                                examples=[[{"drug": "tocilizumab", "status": "draft", "time": "day 12 09:00"}]])
    reactions: list[Reaction] = Field(default_factory=list, description="Adverse reactions attributed to drugs; "
                                      "none listed means none (unless reactions is in not_recorded).",
                                      examples=[[{"drug": "tocilizumab", "manifestations": ["urticaria"],
                                                  "severity": "mild", "time": "day 28 10:30"}]])
    organ_support: list[OrganSupport] = Field(default_factory=list, description="Organ support (ventilation, ECMO, "
                                              "…); none listed means none (unless organ_support is in not_recorded).",
                                              examples=[[{"kind": "mechanical-ventilation", "start": "day 4 14:30",
                                                          "end": "day 9 10:00"}]])
    expect: list[Expectation] = Field(default_factory=list, description="Expectations checked by mascds test, each "
                                      "at one evaluation time; optional.",
                                      examples=[[{"at": "day 16 08:00", "note": "Decision point.",
                                                  "fires": ["wu2025.consider-ruxolitinib", "wu2025.stop-tocilizumab"],
                                                  "assessments": {"refractory-sjia-mas": "met"}}]])

"""What a rule and a knowledge base say about themselves: sources and evidence levels, caveats,
applicability, the knowledge base's manifest and who it is about (its scope).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..core.errors import choices_hint
from ..core.vocab import vocabulary
from .conditions import Condition
from .fields import _ID, Strict, Text, _err

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


_DOI = re.compile(r"^10\.\d{4,9}/\S+$")


_PMID = re.compile(r"^[1-9]\d{0,8}$")


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

"""The rule language: pydantic models of a rule file (see docs/rule-language.md).

Models are strict (no "684" silently read as 684) and closed (``extra="forbid"``); names of analytes,
drugs, units and terms are checked against the vocabulary here, so every mistake is reported where it
was written, with a did-you-mean. Cross-rule checks (aliases, derived facts, templates) live in
``engine.language.check``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .actions import Recommend
from .conditions import Condition
from .derivations import Derive
from .fields import _ID, LocalText, Strict, Text, _err
from .metadata import Applicability, EvidenceLevel, Source


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

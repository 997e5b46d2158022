"""What a rule recommends: the actions (kind, target) and the recommendation around them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..core.errors import choices_hint
from ..core.vocab import vocabulary
from .fields import Strict, Text, _err

ACTION_KINDS = ("start", "stop", "avoid", "consider", "reduce", "monitor", "escalate_care", "record_allergy")


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

"""Order-sign for any drug: a draft order of a drug after anaphylaxis to it - decided from the recorded
manifestations, with no severity and no anaphylaxis code - gets a critical card suggesting to delete the draft;
a draft of another drug gets no hypersensitivity card."""

from __future__ import annotations

import time
from typing import Any

import pytest

import engine
from engine.service.cards import KnowledgeBaseView
from tests.test_service_cards import _order_sign
from tests.test_service_harness import ROOT, draft_order, empty_record, iso, sjia

SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
HYPERSENSITIVITY = {"sampson2006.serious-reaction-any-drug", "sampson2006.order-after-serious-reaction"}


@pytest.fixture(scope="module")
def view() -> KnowledgeBaseView:
    return KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))


def _anakinra_reaction_record(pid: str) -> list[dict[str, Any]]:
    """Anakinra given 40 days ago; 30 minutes later urticaria and wheeze, recorded as manifestations only."""
    dose = time.time() - 40 * 86400
    administration = {
        "resourceType": "MedicationAdministration", "id": "ana-dose", "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "72435", "display": "anakinra"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": iso(dose),
    }
    allergy = {
        "resourceType": "AllergyIntolerance", "id": "ana-reaction",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                       "code": "active"}]},
        "category": ["medication"], "patient": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": RXNORM, "code": "72435", "display": "anakinra"}]},
        "reaction": [{"manifestation": [{"coding": [{"system": SCT, "code": "126485001", "display": "Urticaria"}]},
                                        {"coding": [{"system": SCT, "code": "56018004", "display": "Wheezing"}]}],
                      "onset": iso(dose + 1800)}],
    }
    return [*empty_record(pid)["patient"], sjia(pid), administration, allergy]


def test_draft_order_after_anaphylaxis_by_manifestations_gets_a_critical_delete_card(view: KnowledgeBaseView) -> None:
    pid = "ana-1"
    draft = draft_order(pid, "ana-draft", "72435", "anakinra")
    body = _order_sign(view, pid, _anakinra_reaction_record(pid), [draft])
    first = body["cards"][0]
    assert first["indicator"] == "critical"
    assert first["extension"]["org.mascds"]["rule_id"] == "sampson2006.order-after-serious-reaction"
    deletes = [a for c in body["cards"] for s in c.get("suggestions", ()) for a in s["actions"]
               if a["type"] == "delete"]
    assert deletes == [{"type": "delete", "description": "Delete the draft order MedicationRequest/ana-draft "
                        "(anakinra)", "resourceId": "MedicationRequest/ana-draft"}]
    assert "anaphylaxis by the clinical criteria" in first["detail"]
    # the stop/avoid/record card is there too, citing the anakinra product information as well as the criteria
    allergy = next(c for c in body["cards"]
                   if c["extension"]["org.mascds"]["rule_id"] == "sampson2006.serious-reaction-any-drug")
    assert allergy["indicator"] == "critical"
    assert "Kineret (anakinra)" in allergy["detail"] and "10.1016/j.jaci.2005.12.1303" in allergy["detail"]
    assert "already recorded (AllergyIntolerance/ana-reaction)" in allergy["detail"]


def test_draft_order_of_another_drug_gets_no_hypersensitivity_card(view: KnowledgeBaseView) -> None:
    pid = "ana-2"
    draft = draft_order(pid, "pred-draft", "8638", "prednisolone")
    body = _order_sign(view, pid, _anakinra_reaction_record(pid), [draft])
    rules = {c["extension"]["org.mascds"].get("rule_id") for c in body["cards"]}
    assert not rules & HYPERSENSITIVITY
    assert not any(c["indicator"] == "critical" for c in body["cards"])
    assert not any(a["type"] == "delete" for c in body["cards"] for s in c.get("suggestions", ()) for a in s["actions"])


def test_draft_order_after_an_undecided_reaction_is_never_silent(view: KnowledgeBaseView) -> None:
    """Urticaria 30 minutes after anakinra, no blood pressure or severity recorded: whether it was serious cannot
    be decided. A new anakinra order still gets a card from the order rule, naming the reaction and what to
    record: an undecided card, at warning rather than info, since the rule decided would be critical."""
    pid = "ana-undecided"
    record = _anakinra_reaction_record(pid)
    allergy = next(r for r in record if r["resourceType"] == "AllergyIntolerance")
    allergy["reaction"][0]["manifestation"] = allergy["reaction"][0]["manifestation"][:1]  # urticaria only
    body = _order_sign(view, pid, record, [draft_order(pid, "ana-draft", "72435", "anakinra")])
    (card,) = [c for c in body["cards"]
               if c["extension"]["org.mascds"].get("rule_id") == "sampson2006.order-after-serious-reaction"]
    assert card["extension"]["org.mascds"]["kind"] == "undecided"
    assert card["indicator"] == "warning"
    assert "would give a critical warning about the order being signed" in card["detail"]
    assert "systolic blood pressure during the reaction" in card["summary"]
    assert "reaction to anakinra" in card["detail"] and "severity" in card["detail"]

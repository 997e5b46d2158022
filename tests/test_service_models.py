"""The CDS Hooks models accept the examples published in the specification and enforce its invariants."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from engine.service.models import (
    Action,
    Card,
    CDSHooksRequest,
    CDSHooksResponse,
    CDSServicesResponse,
    FeedbackRequest,
    OrderSignContext,
    PatientViewContext,
)
from tests.test_service_harness import spec_example


@pytest.mark.parametrize("name", ["response-empty.json", "response-cards.json", "response-system-actions.json"])
def test_published_responses_validate(name: str) -> None:
    CDSHooksResponse.model_validate(spec_example(name))


def test_published_autolaunchable_example_lacks_the_required_indicator() -> None:
    # The specification's own autolaunchable example omits `indicator`, which its Card table marks REQUIRED; the
    # model is strict about what the service sends, so it refuses the example for exactly that.
    with pytest.raises(ValidationError) as err:
        CDSHooksResponse.model_validate(spec_example("response-autolaunchable.json"))
    assert [e["loc"] for e in err.value.errors()] == [("cards", 0, "indicator")]


@pytest.mark.parametrize("name", ["discovery-response.json", "discovery-with-extension.json"])
def test_published_discovery_answers_validate(name: str) -> None:
    body = CDSServicesResponse.model_validate(spec_example(name))
    assert body.services


@pytest.mark.parametrize("name", ["action-create.json", "action-update.json", "action-delete.json"])
def test_published_actions_validate(name: str) -> None:
    Action.model_validate(spec_example(name))


@pytest.mark.parametrize("name", ["feedback-accepted.json", "feedback-overridden.json",
                                  "feedback-overridden-with-reason.json"])
def test_published_feedback_validates(name: str) -> None:
    assert FeedbackRequest.model_validate(spec_example(name)).feedback


def test_published_requests_and_contexts_validate() -> None:
    req = CDSHooksRequest.model_validate(spec_example("patient-view-request.json"))
    assert PatientViewContext.model_validate(req.context).patientId == "1288992"
    for name in ("patient-view-context-1.json", "patient-view-context-2.json"):
        PatientViewContext.model_validate(spec_example(name)["context"])
    order = OrderSignContext.model_validate(spec_example("order-sign-context-r4.json")["context"])
    assert [e["resource"]["resourceType"] for e in order.draftOrders["entry"]] == ["NutritionOrder",
                                                                                  "MedicationRequest"]
    # The extension example's context has no patientId: a patient-view service cannot use it.
    ext = CDSHooksRequest.model_validate(spec_example("request-with-extension.json"))
    with pytest.raises(ValidationError, match="patientId"):
        PatientViewContext.model_validate(ext.context)


def _card(**over: Any) -> dict[str, Any]:
    card: dict[str, Any] = {"summary": "A summary", "indicator": "info", "source": {"label": "A source"}}
    card.update(over)
    return card


def _suggestion(**over: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"label": "Do it", "actions": [{"type": "delete", "description": "Remove it",
                                                       "resourceId": "MedicationRequest/1"}]}
    s.update(over)
    return s


BROKEN_CARDS = {
    "summary of 140 characters": (_card(summary="x" * 140), "fewer than 140"),
    "summary on two lines": (_card(summary="one\ntwo"), "one line"),
    "unknown indicator": (_card(indicator="urgent"), "indicator"),
    "cds-resp-6 suggestions without selectionBehavior": (_card(suggestions=[_suggestion()]), "cds-resp-6"),
    "cds-resp-1 two recommended with at-most-one": (
        _card(suggestions=[_suggestion(isRecommended=True), _suggestion(isRecommended=True)],
              selectionBehavior="at-most-one"), "cds-resp-1"),
    "cds-resp-2 delete with a resource": (
        _card(suggestions=[_suggestion(actions=[{"type": "delete", "description": "x", "resourceId": "Task/1",
                                                 "resource": {"resourceType": "Task"}}])],
              selectionBehavior="any"), "cds-resp-2"),
    "cds-resp-2 delete without resourceId": (
        _card(suggestions=[_suggestion(actions=[{"type": "delete", "description": "x"}])], selectionBehavior="any"),
        "cds-resp-2"),
    "cds-resp-3 appContext on an absolute link": (
        _card(links=[{"label": "l", "url": "https://example.org", "type": "absolute", "appContext": "x"}]),
        "cds-resp-3"),
    "cds-resp-4 override reason without display": (
        _card(overrideReasons=[{"code": "c", "system": "https://example.org"}]), "cds-resp-4"),
    "cds-resp-5 suggestion action without description": (
        _card(suggestions=[_suggestion(actions=[{"type": "delete", "resourceId": "Task/1"}])], selectionBehavior="any"),
        "cds-resp-5"),
    "create without a resource": (
        _card(suggestions=[_suggestion(actions=[{"type": "create", "description": "x"}])], selectionBehavior="any"),
        "carries the resource"),
    "null optional field": (_card(detail=None), "null or empty"),
    "empty optional array": (_card(links=[]), "null or empty"),
    "unknown field": (_card(colour="red"), "Extra inputs"),
    "relative source url": (_card(source={"label": "s", "url": "/doc"}), "absolute"),
    "uuid that is not one": (_card(uuid="card-1"), "not a UUID"),
}


@pytest.mark.parametrize("name", sorted(BROKEN_CARDS))
def test_card_invariants_are_enforced(name: str) -> None:
    card, message = BROKEN_CARDS[name]
    with pytest.raises(ValidationError, match=message):
        Card.model_validate(card)


def test_a_valid_card_with_every_part_passes() -> None:
    card = _card(uuid="4e0a3a1e-3283-4575-ab82-028d55fe2719", detail="**why**",
                 suggestions=[_suggestion(isRecommended=True, uuid="e56e1945-20b3-4393-8503-a1a20fd73152")],
                 selectionBehavior="at-most-one",
                 links=[{"label": "doc", "url": "https://x.org/d", "type": "absolute"}],
                 overrideReasons=[{"code": "c", "system": "https://x.org", "display": "Reason"}])
    assert Card.model_validate(card).suggestions


def test_response_cards_may_be_empty_but_not_absent() -> None:
    assert CDSHooksResponse.model_validate({"cards": []}).cards == []
    with pytest.raises(ValidationError, match="cards"):
        CDSHooksResponse.model_validate({})


def test_request_invariants() -> None:
    base = spec_example("patient-view-request.json")
    broken = copy.deepcopy(base)
    del broken["fhirServer"]
    with pytest.raises(ValidationError, match="cds-r-1"):
        CDSHooksRequest.model_validate(broken)
    broken = copy.deepcopy(base) | {"hookInstance": "not-a-uuid"}
    with pytest.raises(ValidationError, match="not a UUID"):
        CDSHooksRequest.model_validate(broken)
    with pytest.raises(ValidationError, match="FHIR id"):
        PatientViewContext.model_validate({"userId": "Practitioner/1", "patientId": "a b"})
    with pytest.raises(ValidationError, match="Bundle"):
        OrderSignContext.model_validate({"userId": "Practitioner/1", "patientId": "p", "draftOrders": {"a": 1}})


def test_feedback_invariants() -> None:
    accepted = spec_example("feedback-accepted.json")
    del accepted["feedback"][0]["acceptedSuggestions"]
    with pytest.raises(ValidationError, match="cds-fb-2"):
        FeedbackRequest.model_validate(accepted)
    reason = spec_example("feedback-overridden-with-reason.json")
    reason["feedback"][0]["overrideReason"] = {}
    with pytest.raises(ValidationError, match="cds-fb-3"):
        FeedbackRequest.model_validate(reason)
    outcome = spec_example("feedback-overridden.json")
    outcome["feedback"][0]["outcome"] = "ignored"
    with pytest.raises(ValidationError, match="outcome"):
        FeedbackRequest.model_validate(outcome)
    naive = spec_example("feedback-overridden.json")
    naive["feedback"][0]["outcomeTimestamp"] = "2020-12-11T00:00:00"
    with pytest.raises(ValidationError, match="time zone"):
        FeedbackRequest.model_validate(naive)
    with pytest.raises(ValidationError, match="feedback"):
        FeedbackRequest.model_validate({"feedback": []})

"""Hostile and careless FHIR input: a resource sent twice, two versions of one Patient, a Quantity whose UCUM code
and unit disagree or whose code has no system, contained resources of no FHIR type, extensions nested hundreds
deep, NaN in the JSON. Each is read once, or refused with a message naming the entry; none crashes, none is
counted twice, and a value left out marks the result incomplete (docs/fhir.md)."""

from __future__ import annotations

import copy
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.core.errors import LoadError
from engine.records.fhir import load_fhir, snapshot_from_bundle, snapshot_from_resources

from .conftest import CASES
from .test_fhir import LOINC, UCUM, bundle, cc, obs, read

TWO_PULSES = CASES / "controls" / "wu-control-two-pulse-courses.yaml"
RUXOLITINIB = "wu2025.consider-ruxolitinib"


def _pulse_bundle() -> tuple[engine.Snapshot, dict[str, Any]]:
    snap = engine.load_case(TWO_PULSES)
    return snap, json.loads(json.dumps(engine.case_to_bundle(snap)))


def _methylprednisolone_entries(b: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in b["entry"] if e["resource"]["resourceType"].startswith("Medication")
            and "methylprednisolone" in json.dumps(e["resource"]).lower()]


def test_a_repeated_pulse_course_is_read_once_and_does_not_make_two_courses_refractory(
        kb: engine.KnowledgeBase) -> None:
    snap, b = _pulse_bundle()
    pulses = _methylprednisolone_entries(b)
    assert len(pulses) >= 2
    b["entry"] += copy.deepcopy(pulses)  # the whole record sent twice over for the pulses: 2 courses, not 4
    ingest = snapshot_from_bundle(b, "twice")
    assert len(ingest.snapshot.courses) == len(snap.courses)
    assert any("hold the same resource; read once" in w for w in ingest.snapshot.warnings)
    assert ingest.snapshot.input_errors == ()
    at = snap.expectations[0].at
    result = kb.evaluate(ingest.snapshot, at)
    assert RUXOLITINIB not in result.fired()
    assert result.fired() == kb.evaluate(snap, at).fired()


def test_identical_copies_differing_only_in_meta_are_one_resource() -> None:
    o = obs("plt", "777-3", 95, "10*9/L")
    again = o | {"meta": {"versionId": "2", "lastUpdated": "2024-04-03T09:00:00Z"}}
    ingest = read(o, again)
    assert len(ingest.snapshot.observations) == 1 and ingest.snapshot.input_errors == ()


def test_two_versions_of_one_resource_are_both_left_out_with_an_input_error(kb: engine.KnowledgeBase) -> None:
    ingest = read(obs("plt", "777-3", 95, "10*9/L"), obs("plt", "777-3", 250, "10*9/L"))
    snap = ingest.snapshot
    assert snap.observations == ()
    (error,) = snap.input_errors
    assert error.startswith("Observation/plt: Bundle.entry[1], Bundle.entry[2] hold different resources")
    assert kb.evaluate(snap, "2024-04-04T00:00:00Z").complete is False


def test_two_different_patients_with_one_id_are_an_input_error_not_the_first_one() -> None:
    b = bundle(obs("plt", "777-3", 95, "10*9/L"))
    b["entry"].append({"resource": {"resourceType": "Patient", "id": "p", "gender": "male",
                                    "birthDate": "1950-01-01"}})
    snap = snapshot_from_bundle(b).snapshot
    assert snap.patient.sex is None and snap.patient.birth is None  # neither version is trusted
    assert any(e.startswith("Patient/p: ") and "different resources" in e for e in snap.input_errors)
    assert len(snap.observations) == 1  # the rest of the record is read


def test_the_same_resource_twice_in_a_cds_hooks_call_is_read_once() -> None:
    p = {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "2014-03-01"}
    o = obs("plt", "777-3", 95, "10*9/L", subject={"reference": "Patient/p"})
    ingest = snapshot_from_resources([p, o, copy.deepcopy(o)], patient_id="p")
    assert len(ingest.snapshot.observations) == 1


def _obs_qty(quantity: dict[str, Any], loinc: str = "3255-7") -> dict[str, Any]:
    return {"resourceType": "Observation", "id": "q", "status": "final", "code": cc(LOINC, loinc),
            "effectiveDateTime": "2024-04-03T08:00:00Z", "valueQuantity": quantity}


@pytest.mark.parametrize(("quantity", "loinc"), [
    ({"value": 150, "system": UCUM, "code": "mg/dL", "unit": "g/L"}, "3255-7"),  # fibrinogen: both apply
    ({"value": 15, "system": UCUM, "code": "mg/dL", "unit": "g/L"}, "1988-5"),  # CRP: g/L does not apply
    ({"value": 150, "code": "mg/dL", "unit": "g/L"}, "3255-7"),  # and without a system
])
def test_a_quantity_whose_code_and_unit_disagree_is_left_out(quantity: dict[str, Any], loinc: str) -> None:
    snap = read(_obs_qty(quantity, loinc)).snapshot
    assert snap.observations == ()
    (error,) = snap.input_errors
    assert "code 'mg/dL' and unit 'g/L' name different units; left out" in error


@pytest.mark.parametrize("quantity", [
    {"value": 150, "system": UCUM, "code": "mg/dL", "unit": "mg/dl"},  # the same unit, spelt otherwise
    {"value": 150, "system": UCUM, "code": "mg/dL", "unit": "milligrams per decilitre"},  # display text only
    {"value": 1.5, "system": UCUM, "code": "g/L"},
])
def test_a_quantity_whose_unit_agrees_or_is_display_text_is_read_by_its_code(quantity: dict[str, Any]) -> None:
    snap = read(_obs_qty(quantity)).snapshot
    assert [o.value for o in snap.observations] == [150] and snap.input_errors == () and snap.warnings == ()


def test_a_unit_code_without_a_system_is_read_as_ucum_with_a_warning() -> None:
    snap = read(_obs_qty({"value": 150, "code": "mg/dL"})).snapshot
    assert [o.value for o in snap.observations] == [150]
    assert any("has no system (FHIR qty-3)" in w for w in snap.warnings)


def test_a_code_of_another_system_is_not_read_as_ucum() -> None:
    snap = read(_obs_qty({"value": 1.5, "system": "http://snomed.info/sct", "code": "258796002",
                          "unit": "g/L"})).snapshot
    assert [o.value for o in snap.observations] == [150]


def test_a_dose_whose_code_and_unit_disagree_is_not_used() -> None:
    from .test_fhir import RXNORM, instruction, request

    mp = request("mp", cc(RXNORM, "6902"), dosageInstruction=instruction(
        {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d", "boundsPeriod": {"start": "2024-04-01"}}},
        {"value": 30, "system": UCUM, "code": "mg/kg", "unit": "mg"}))
    snap = read(mp).snapshot
    assert [c.dose for c in snap.courses] == [None]
    assert any("code 'mg/kg' and unit 'mg' name different units" in e for e in snap.input_errors)


def _nested_extension(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/e", "valueString": "x"}
    for _ in range(depth):
        ext = {"url": "http://example.org/e", "extension": [ext]}
    return ext


@pytest.mark.parametrize(("resource", "message"), [
    (_obs_qty({"value": 1, "system": UCUM, "code": "g/L"}) | {"extension": [_nested_extension(200)]},
     "nested more than 64 levels deep"),
    (_obs_qty({"value": 1, "system": UCUM, "code": "g/L"}) | {"contained": [{"resourceType": "NoSuchType"}]},
     "a contained resource of type 'NoSuchType', which is not a FHIR R4 resource type"),
    (_obs_qty({"value": 1, "system": UCUM, "code": "g/L"}) | {"contained": [{"id": "x"}]},
     "a contained resource of type 'None'"),
])
def test_resources_fhir_resources_cannot_parse_are_load_errors(resource: dict[str, Any], message: str) -> None:
    with pytest.raises(LoadError) as info:
        read(resource)
    (diag,) = info.value.diagnostics
    assert diag.code == "E501" and message in diag.message and "Observation/q" in diag.message


@pytest.mark.parametrize(("text", "message"), [
    ('{"resourceType": "Bundle", "type": "collection", "entry": ' + "[" * 5000 + "]" * 5000 + "}",
     "nested too deep to read"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation",'
     ' "valueQuantity": {"value": NaN}}}]}', "NaN is not a JSON number"),
    ('{"resourceType": "Bundle", "type": "collection", "entry": [], "x": -Infinity}',
     "-Infinity is not a JSON number"),
])
def test_json_python_reads_but_fhir_does_not_have_is_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LoadError) as info:
        load_fhir(path)
    assert message in info.value.diagnostics[0].message


# --- the CDS Hooks service reads FHIR through the same functions (in process, as the service calls them) -------
def _order_sign(resources: list[dict[str, Any]], drafts: list[dict[str, Any]], now: float | None = None) -> \
        dict[str, Any]:

    from engine.service.app import draft_resources, evaluate_call
    from engine.service.cards import KnowledgeBaseView
    from engine.service.models import OrderSignContext
    from engine.service.prefetch import SERVICES, Gathered

    from .test_service_harness import ROOT

    ctx = OrderSignContext.model_validate({"userId": "Practitioner/1", "patientId": "child-1", "draftOrders": {
        "resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}})
    view = KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))
    service = next(s for s in SERVICES if s.hook == "order-sign")
    now = time.time() if now is None else now
    return evaluate_call(view, service, ctx, Gathered(resources), draft_resources(ctx, now), now,
                         lambda rule: f"https://cds.test.invalid/rules/{rule}").response


def _record() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from .test_service_harness import ROOT

    b = json.loads((ROOT / "tests/fixtures/fhir/tocilizumab-draft-after-anaphylaxis.json").read_text())
    resources = [e["resource"] for e in b["entry"]]
    for r in resources:
        for field in ("subject", "patient"):
            if field in r:
                r[field] = {"reference": "Patient/child-1"}
    drafts = [r for r in resources if r.get("status") == "draft"]
    return [r for r in resources if r not in drafts], drafts


def test_the_service_reads_a_repeated_resource_once_and_a_stored_copy_of_a_draft_gives_way() -> None:
    record, drafts = _record()
    now = time.time()  # one evaluation time: the cards quote it (e.g. how long after the last recorded event)
    once = _order_sign(record, drafts, now)
    stored_draft = copy.deepcopy(drafts[0]) | {"status": "active"}  # the EHR's copy: the draft is newer
    twice = _order_sign([*record, *copy.deepcopy(record), stored_draft], drafts, now)
    def cards(body: dict[str, Any]) -> Any:
        return json.loads(re.sub(r'"uuid": "[^"]*"', '"uuid": ""', json.dumps(body["cards"])))

    assert cards(twice) == cards(once) and cards(once)


@pytest.mark.parametrize("bad", ["two versions", "deep extension", "unknown contained"])
def test_the_service_answers_hostile_fhir_with_a_4xx_problem(bad: str) -> None:
    from engine.service.app import Problem

    record, drafts = _record()
    target = next(r for r in record if r["resourceType"] == "AllergyIntolerance")
    if bad == "two versions":
        record.append(copy.deepcopy(target) | {"criticality": "low"})
    elif bad == "deep extension":
        target["extension"] = [_nested_extension(300)]
    else:
        target["contained"] = [{"resourceType": "NoSuchType", "id": "x"}]
    if bad == "two versions":  # an input error: the allergy is left out and the answer says it is incomplete
        body = _order_sign(record, drafts)
        assert any("different resources with the same type and id" in json.dumps(c) for c in body["cards"])
        return
    with pytest.raises(Problem) as info:
        _order_sign(record, drafts)
    assert 400 <= info.value.status < 500

"""Every shipped case written as a FHIR R4 Bundle and read back gives the same snapshot and the same evaluation
(recommendations, assessments, undecided rules - the whole JSON but the case and source fields) at every
expectation time, on the durable_rules backend; and a bundle converted to a case file reads back the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.authoring.casetest import case_files
from engine.records.fhir_export import snapshot_to_case

from .conftest import CASES

CASE_PATHS = case_files([CASES])


def _without_sources(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_sources(v) for k, v in data.items() if k not in ("case", "source", "warnings")}
    if isinstance(data, list):
        return [_without_sources(v) for v in data]
    return data


def _entries(snap: engine.Snapshot) -> dict[str, Any]:
    """Every entry without its reference (a file position in one, a resource id in the other)."""
    sections = ("diagnoses", "observations", "findings", "courses", "orders", "reactions", "supports")
    out: dict[str, Any] = {s: [{k: v for k, v in vars(e).items() if k != "ref"} for e in getattr(snap, s)]
                           for s in sections}
    out["patient"] = {k: v for k, v in vars(snap.patient).items() if k != "ref"}
    out["start"], out["unknown"] = snap.start, snap.unknown_sections
    return out


def test_the_seed_cases_are_among_those_converted() -> None:
    names = {p.name for p in CASE_PATHS}
    assert {"wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml"} <= names


@pytest.mark.parametrize("path", CASE_PATHS, ids=[str(p.relative_to(CASES)) for p in CASE_PATHS])
def test_case_to_fhir_and_back_gives_the_same_evaluation(kb: engine.KnowledgeBase, path: Path) -> None:
    snap = engine.load_case(path)
    bundle = json.loads(json.dumps(engine.case_to_bundle(snap)))  # exactly what a file would hold
    assert engine.is_fhir_bundle(bundle) and bundle["type"] == "collection"
    ingest = engine.snapshot_from_bundle(bundle, source="roundtrip")
    back = ingest.snapshot
    # a case file's only warnings are about its own content (a pulse label its dose contradicts): kept, not added
    assert len(back.warnings) == len(snap.warnings) and back.input_errors == ()
    assert ingest.mapped == ingest.relevant == len(bundle["entry"])
    assert _entries(back) == _entries(snap)
    assert snap.expectations, "every shipped case has expectations"
    for exp in snap.expectations:
        yaml_result = kb.evaluate(snap, exp.at, backend="durable")
        fhir_result = kb.evaluate(back, exp.at, backend="durable")
        assert _without_sources(fhir_result.to_json()) == _without_sources(yaml_result.to_json()), exp.ref


def test_standard_codes_are_written_where_the_tables_have_them() -> None:
    bundle = engine.case_to_bundle(engine.load_case(CASES / "yang-2023-ecmo-tocilizumab.yaml"))
    resources = [e["resource"] for e in bundle["entry"]]
    codes = {(c["system"], c["code"]) for r in resources for key in ("code", "medicationCodeableConcept")
             for c in r.get(key, {}).get("coding", [])}
    assert ("http://snomed.info/sct", "201796004") in codes  # sJIA
    assert ("http://snomed.info/sct", "233573008") in codes  # ECMO
    assert ("http://www.nlm.nih.gov/research/umls/rxnorm", "612865") in codes  # tocilizumab
    assert ("http://loinc.org", "2708-6") in codes  # SpO2
    allergy = next(r for r in resources if r["resourceType"] == "AllergyIntolerance")
    assert {"system": "http://snomed.info/sct", "code": "39579001", "display": "Anaphylaxis (disorder)"} in \
        allergy["reaction"][0]["manifestation"][0]["coding"]
    spo2 = next(r for r in resources if r["resourceType"] == "Observation")
    assert spo2["valueQuantity"] == {"value": 93, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
    order_case = engine.load_case(CASES / "controls" / "tocilizumab-order-after-anaphylaxis.yaml")
    order_bundle = engine.case_to_bundle(order_case)
    drafts = [e["resource"] for e in order_bundle["entry"] if e["resource"].get("status") == "draft"]
    assert [(r["resourceType"], r["intent"]) for r in drafts] == [("MedicationRequest", "order")]


@pytest.mark.parametrize("name", ["wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml",
                                  "controls/tocilizumab-order-after-anaphylaxis.yaml"])
def test_fhir_to_case_file_and_back_gives_the_same_evaluation(kb: engine.KnowledgeBase, name: str) -> None:
    snap = engine.load_case(CASES / name)
    from_fhir = engine.snapshot_from_bundle(engine.case_to_bundle(snap)).snapshot
    case, left_out = snapshot_to_case(from_fhir)
    assert left_out == []
    again = engine.snapshot_from_dict(case)
    for exp in snap.expectations:
        assert _without_sources(kb.evaluate(again, exp.at).to_json()) == _without_sources(
            kb.evaluate(snap, exp.at).to_json()), exp.ref

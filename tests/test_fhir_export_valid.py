"""Every shipped case written as FHIR (``mascds convert --to fhir``) is valid FHIR R4, as judged by validators that
are not mascds: @medplum/core's ``validateResource`` (structure, cardinalities, primitive formats and
the FHIRPath invariants of the R4 StructureDefinitions, mad-1 among them) and the NLM UCUM library for every
UCUM code. Reading the bundle back with mascds (tests/test_fhir_roundtrip.py) cannot catch what mascds itself
gets wrong about FHIR.

The validator is a pinned npm package set (tests/fhir_validator/package.json and its lock file), installed with
``npm ci`` by ``./dev test`` or, when missing, by this module; the tests skip only when node or npm is absent."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.authoring.casetest import case_files

from .conftest import CASES

VALIDATOR = Path(__file__).parent / "fhir_validator"
CASE_PATHS = case_files([CASES])


def _installed() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the independent FHIR validator (tests/fhir_validator)")
    if not (VALIDATOR / "node_modules" / "@medplum" / "core").is_dir():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=VALIDATOR,
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, f"npm ci in {VALIDATOR} failed: {done.stderr[-2000:]}"
    return Path(node)


def validate(resources: list[dict[str, Any]]) -> list[list[str]]:
    """The validator's errors for each resource (an empty list: valid)."""
    node = _installed()
    done = subprocess.run([str(node), "validate.mjs"], cwd=VALIDATOR, input=json.dumps(resources),
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out: list[list[str]] = json.loads(done.stdout)
    assert len(out) == len(resources)
    return out


@pytest.fixture(scope="module")
def problems() -> dict[str, list[str]]:
    bundles = [json.loads(json.dumps(engine.case_to_bundle(engine.load_case(p)))) for p in CASE_PATHS]
    return {str(p.relative_to(CASES)): found for p, found in zip(CASE_PATHS, validate(bundles), strict=True)}


@pytest.mark.parametrize("case", [str(p.relative_to(CASES)) for p in CASE_PATHS])
def test_every_shipped_case_exports_valid_fhir(problems: dict[str, list[str]], case: str) -> None:
    assert problems[case] == []


def test_the_seed_cases_are_validated(problems: dict[str, list[str]]) -> None:
    assert {"wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml"} <= set(problems)


def test_the_validator_finds_what_mascds_used_to_write() -> None:
    """The check can fail: a route-only dosage (mad-1) and mm/[hr] (not UCUM) are what exports held before."""
    bundle = engine.case_to_bundle(engine.load_case(CASES / "yang-2023-ecmo-tocilizumab.yaml"))
    admin = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "MedicationAdministration")
    bad_admin = copy.deepcopy(admin) | {"dosage": {"route": {"text": "intravenous"}}}
    esr = {"resourceType": "Observation", "status": "final", "code": {"text": "ESR"},
           "valueQuantity": {"value": 30, "unit": "mm/hr", "system": "http://unitsofmeasure.org", "code": "mm/[hr]"}}
    found = validate([bad_admin, esr, admin])
    assert any("mad-1" in p for p in found[0])
    assert found[1] == ["Observation.valueQuantity.code: 'mm/[hr]' is not a valid UCUM code"]
    assert found[2] == []


def test_a_course_with_a_route_and_no_dose_keeps_its_route_through_fhir() -> None:
    snap = engine.load_case(CASES / "yang-2023-ecmo-tocilizumab.yaml")
    routed = [c for c in snap.courses if c.route is not None and c.dose is None and c.frequency == "continuous"]
    assert routed, "the Yang case has an infusion (vasopressin) with a route and no dose"
    back = engine.snapshot_from_bundle(json.loads(json.dumps(engine.case_to_bundle(snap)))).snapshot
    assert [(c.drug, c.route) for c in back.courses] == [(c.drug, c.route) for c in snap.courses]


def test_an_analyte_without_a_loinc_code_is_written_with_the_mascds_code_system_and_read_back(
        tmp_path: Path) -> None:
    case = tmp_path / "scd25.yaml"
    case.write_text("""\
case: {id: scd25-export, title: sCD25 export, description: An sCD25 value written as FHIR.}
patient: {sex: female, age_years: 8, illustrative: true}
timeline: {start: "2024-01-01T00:00:00Z"}
diagnoses: [{code: sjia, onset: "2023-06-01T00:00:00Z", illustrative: true}]
observations:
  - {analyte: scd25, value: 12000, unit: U/mL, time: "2024-01-02T08:00:00Z", illustrative: true}
expect:
  - {at: "2024-01-03T00:00:00Z", note: Nothing is expected of one sCD25 value., not_fires: []}
""", encoding="utf-8")
    snap = engine.load_case(case)
    bundle = json.loads(json.dumps(engine.case_to_bundle(snap)))
    obs = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    assert obs["code"]["coding"][0]["system"] == "https://mascds.invalid/fhir/CodeSystem/analyte"
    back = engine.snapshot_from_bundle(bundle).snapshot
    assert [(o.analyte, o.value) for o in back.observations] == [("scd25", 12000)]
    assert back.warnings == () and back.input_errors == ()
    assert validate([bundle]) == [[]]

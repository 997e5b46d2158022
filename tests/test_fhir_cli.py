"""The command line with FHIR: evaluate and explain read a Bundle as well as a case file, told apart by content;
convert writes a case as a Bundle and a Bundle as a case file; bad input is a message and exit 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.cli import main

from .conftest import CASES, FIXTURES, RULES

FX = FIXTURES / "fhir"
YANG = str(CASES / "yang-2023-ecmo-tocilizumab.yaml")
DRAFT = str(FX / "tocilizumab-draft-after-anaphylaxis.json")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _strip(data: object) -> object:
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in ("case", "source")}
    if isinstance(data, list):
        return [_strip(v) for v in data]
    return data


def test_evaluate_reads_a_fhir_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", DRAFT, "--rules", str(RULES), "--no-color")
    assert code == 0, err
    assert "Tocilizumab given or ordered after a serious reaction" in out and "doi:10.1002/pdi3.32" in out
    code, out, err = run(capsys, "evaluate", DRAFT, "--rules", str(RULES), "--format", "json")
    data = json.loads(out)
    assert data["as_of"] == "2024-06-10T09:00:00Z"  # the last event: the draft order
    assert "yang2023.tocilizumab-rechallenge" in {r["rule_id"] for r in data["recommendations"]}
    assert data["case"]["id"] == "tocilizumab-draft-after-anaphylaxis"


def test_evaluate_shows_what_was_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", str(FX / "labs-with-errors.json"), "--rules", str(RULES), "--format",
                         "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["complete"] is False
    assert any(e.startswith("Observation/ferritin-2: unknown unit") for e in data["input_errors"])
    assert "Observation/temp-1: status entered-in-error; not used" in data["warnings"]


def test_several_patients_need_the_patient_option(capsys: pytest.CaptureFixture[str]) -> None:
    two = str(FX / "two-patients.json")
    code, out, err = run(capsys, "evaluate", two, "--rules", str(RULES))
    assert code == 1 and "holds 2 patients (anna, ben)" in err and "--patient" in err and "Traceback" not in err
    code, out, err = run(capsys, "evaluate", two, "--patient", "ben", "--rules", str(RULES), "--format", "json")
    assert code == 0, err
    assert json.loads(out)["as_of"] == "2024-05-02T08:00:00Z"
    code, out, err = run(capsys, "evaluate", YANG, "--patient", "ben", "--rules", str(RULES))
    assert code == 1 and "--patient applies to FHIR bundles" in err


def test_explain_reads_a_fhir_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "explain", DRAFT, "yang2023.tocilizumab-rechallenge", "--rules", str(RULES),
                         "--no-color")
    assert code == 0, err
    assert "tocilizumab" in out and "AllergyIntolerance" not in err


@pytest.mark.parametrize(("text", "message"), [
    ("{\"resourceType\": \"Bundle\", \"type\": \"collection\", \"entry\": [", "E500"),
    ("{\"resourceType\": \"Bundle\", \"type\": \"message\"}", "Bundle.type is 'message'"),
    ("{\"resourceType\": \"Observation\", \"status\": \"final\"}", "not 'Bundle'"),
])
def test_bad_bundles_are_a_message_and_exit_1(capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str,
                                              message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    code, out, err = run(capsys, "evaluate", str(path), "--rules", str(RULES))
    assert code == 1 and message in err and "Traceback" not in err + out


def test_invalid_resource_names_the_entry(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "evaluate", str(FX / "invalid-observation.json"), "--rules", str(RULES))
    assert code == 1
    assert "E501 Bundle.entry[1] (Observation/bad-date): Observation.effectiveDateTime" in err


def test_convert_case_to_fhir_and_evaluate_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "convert", YANG, "--to", "fhir")
    assert code == 0, err
    bundle = json.loads(out)
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    target = tmp_path / "yang.json"
    code, _, err = run(capsys, "convert", YANG, "--to", "fhir", "-o", str(target))
    assert code == 0 and json.loads(target.read_text()) == bundle
    for at in ("day 5 02:00", "day 20 10:40"):
        _, from_yaml, _ = run(capsys, "evaluate", YANG, "--at", at, "--rules", str(RULES), "--format", "json")
        code, from_fhir, err = run(capsys, "evaluate", str(target), "--at", at, "--rules", str(RULES), "--format",
                                   "json")
        assert code == 0, err
        assert _strip(json.loads(from_fhir)) == _strip(json.loads(from_yaml))


def test_convert_fhir_to_case(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "draft.yaml"
    code, out, err = run(capsys, "convert", DRAFT, "--to", "case", "-o", str(target))
    assert code == 0, err
    case = yaml.safe_load(target.read_text())
    assert case["orders"] == [{"drug": "tocilizumab", "status": "draft", "time": "2024-06-10T09:00:00Z",
                               "dose": 12, "unit": "mg/kg"}]
    assert case["reactions"][0]["manifestations"] == ["anaphylaxis", "bronchospasm"]
    code, out, err = run(capsys, "evaluate", str(target), "--rules", str(RULES), "--format", "json")
    assert code == 0, err
    assert "yang2023.tocilizumab-rechallenge" in {r["rule_id"] for r in json.loads(out)["recommendations"]}


def test_convert_lists_what_the_bundle_held_but_mascds_does_not_use(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    target = tmp_path / "labs.yaml"
    code, _, err = run(capsys, "convert", str(FX / "labs-with-errors.json"), "--to", "case", "-o", str(target))
    assert code == 0, err
    assert "input error: Observation/ferritin-2" in err and "not used: Observation/bmi-1" in err
    text = target.read_text()
    assert text.startswith("# input error: Observation/ferritin-2")


@pytest.mark.parametrize(("args", "message"), [
    (["convert", DRAFT, "--to", "fhir"], "already FHIR"),
    (["convert", YANG, "--to", "case"], "is not a FHIR Bundle"),
    (["convert", "cases/none.yaml", "--to", "fhir"], "E004"),
    (["convert", YANG, "--to", "fhir", "-o", "/nonexistent-dir/x.json"], "cannot write"),
])
def test_convert_bad_input_is_a_message_and_exit_1(capsys: pytest.CaptureFixture[str], args: list[str],
                                                   message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 1 and message in err and "Traceback" not in err + out


def test_convert_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    out, _ = capsys.readouterr()
    assert "--to {fhir,case}" in out and "mascds convert cases/wu-2025-ruxolitinib.yaml --to fhir" in out

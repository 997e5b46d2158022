"""The mascds command: exit codes, output shapes, determinism, help text and error messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from engine.cli import main

from .conftest import CASES, FIXTURES, ROOT, RULES

WU = str(CASES / "wu-2025-ruxolitinib.yaml")
SCHEMA = json.loads((ROOT / "schemas" / "result.schema.json").read_text())


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_evaluate_text_is_for_a_clinician(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "evaluate", WU, "--at", "day 16 08:00", "--rules", str(RULES), "--no-color")
    assert code == 0, err
    for text in ("CONSIDER", "STOP", "ruxolitinib", "doi:10.12372/jcp.2025.24e0236", "single case report",
                 "body temperature 39.7 °C at day 16 06:00", "10 mg twice daily", "[illustrative]"):
        assert text in out, text


def test_evaluate_json_follows_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    for case in sorted(CASES.rglob("*.yaml")):
        code, out, err = run(capsys, "evaluate", str(case), "--format", "json", "--rules", str(RULES))
        assert code == 0, err
        data = json.loads(out)
        jsonschema.validate(data, SCHEMA)
    code, out, _ = run(capsys, "evaluate", WU, "--at", "day 16 08:00", "--format", "json", "--rules", str(RULES))
    data = json.loads(out)
    wu = [r for r in data["recommendations"] if r["rule_id"].startswith("wu2025.")]
    assert {a["kind"] for r in wu for a in r["actions"]} == {"consider", "stop"}
    rec = next(r for r in wu if r["rule_id"] == "wu2025.consider-ruxolitinib")
    assert rec["citations"][0]["doi"] == "10.12372/jcp.2025.24e0236"
    assert rec["matched"] and rec["evidence_level"] == "case-report"
    assert data["knowledge_base"]["content_hash"].startswith("sha256:")


def test_json_is_byte_identical_across_runs_and_processes() -> None:
    cmd = [sys.executable, "-m", "engine.cli", "evaluate", WU, "--format", "json", "--rules", str(RULES)]
    first = subprocess.run(cmd, capture_output=True, check=True).stdout
    second = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert first == second and len(first) > 1000


def test_default_time_is_the_last_event(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "evaluate", WU, "--format", "json", "--rules", str(RULES))
    assert code == 0 and json.loads(out)["as_of"] == "2024-06-17T08:00:00Z"  # the day-108 temperature


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", WU, "--at", "next tuesday"], "bad evaluation time"),
    (["evaluate", "cases/none.yaml"], "E004"),
    (["evaluate", WU, "--rules", "tests/rule_errors/E202-cycle"], "E208"),
    (["explain", WU, "wu2025.consider-ruxolitinb"], "did you mean 'wu2025.consider-ruxolitinib'"),
])
def test_bad_input_gets_a_message_and_exit_1(capsys: pytest.CaptureFixture[str], args: list[str],
                                             message: str) -> None:
    code, out, err = run(capsys, *args)
    assert code == 1
    assert message in err and "Traceback" not in err + out


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate"], "required"),
    (["evaluate", WU, "--format", "xml"], "invalid choice"),
    ([], "usage"),
])
def test_usage_errors_exit_64(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 64 and message in proc.stderr and "Traceback" not in proc.stderr


def test_validate_lists_every_problem_as_file_line_col(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "validate", str(RULES))
    assert code == 0 and "ok" in err
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "knowledge-base.yaml").write_text(
        "name: t\nversion: 1.0.0\ntitle: T\nconflict_resolution: restrictive-wins\n")
    for name in ("E104-unknown-analyte.yaml", "E106-unknown-drug.yaml", "E205-template-field.yaml"):
        text = (ROOT / "tests" / "rule_errors" / name).read_text().replace("id: test.rule", f"id: t.{name[:4].lower()}")
        (kb / name).write_text(text)
    code, out, err = run(capsys, "validate", str(kb))
    lines = out.strip().splitlines()
    assert code == 1 and len(lines) == 3
    assert all(re.match(r"^.+\.yaml:\d+:\d+: E\d{3} .+ \(hint: .+\)$", line) for line in lines), lines
    code, out, _ = run(capsys, "validate", str(kb), "--format", "json")
    data = json.loads(out)
    assert code == 1 and not data["ok"] and {p["code"] for p in data["problems"]} == {"E104", "E106", "E205"}


def test_test_command_reports_each_expectation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "test", str(CASES), "--rules", str(RULES))
    assert code == 0
    assert re.search(r"^\d+ cases, (\d+) checks: \1 passed, 0 failed$", out.strip().splitlines()[-1])
    wrong = tmp_path / "wrong.yaml"
    original = (CASES / "wu-2025-ruxolitinib.yaml").read_text()
    claim = "      - {kind: consider, target: anakinra, indicator: warning,"
    assert original.count(claim) == 1
    wrong.write_text(original.replace(claim, claim.replace("anakinra", "ruxolitinib")))
    code, out, _ = run(capsys, "test", str(wrong), "--rules", str(RULES))
    assert code == 2
    assert ("FAIL wu-2025-ruxolitinib @ day 6 08:00: recommends consider ruxolitinib (warning, doi "
            "10.1136/ard-2024-225851) — expected consider ruxolitinib (warning, doi 10.1136/ard-2024-225851), "
            "got not found; standing: ") in out
    assert "consider anakinra (warning, eular2024.refractory-consider-anakinra, doi 10.1136/ard-2024-225851" in out
    code, out, _ = run(capsys, "test", str(wrong), "--rules", str(RULES), "--format", "json")
    data = json.loads(out)
    assert code == 2 and data["failed"] == 1 and data["passed"] == data["checks"] - 1


def test_test_command_rejects_unknown_rule_ids(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((CASES / "controls" / "tocilizumab-no-reaction.yaml").read_text().replace(
        "yang2023.tocilizumab-rechallenge]", "yang2023.tocilizumab-rechalenge]", 1))
    code, _, err = run(capsys, "test", str(bad), "--rules", str(RULES))
    assert code == 1
    assert ("E401 unknown rule 'yang2023.tocilizumab-rechalenge' "
            "(hint: did you mean 'yang2023.tocilizumab-rechallenge'?)") in err


def test_unresolved_conflicts_make_evaluate_and_test_fail(capsys: pytest.CaptureFixture[str]) -> None:
    rules = str(FIXTURES / "kb-priority-only" / "rules")
    case = str(FIXTURES / "kb-priority-only" / "cases" / "equal-priority.yaml")
    code, out, _ = run(capsys, "evaluate", case, "--rules", rules, "--no-color")
    assert code == 3 and "unresolved conflict" in out
    code, _, err = run(capsys, "test", case, "--rules", rules)
    assert code == 1 and "E301" in err


def test_explain_shows_each_condition_with_values_and_what_is_missing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "explain", str(CASES / "controls" / "wu-control-missing-data.yaml"),
                       "wu2025.consider-ruxolitinib", "--rules", str(RULES), "--no-color")
    assert code == 0
    assert "UNDECIDED" in out and "derived by wu2025.refractory-sjia-mas" in out
    assert "missing: body temperature" in out and "✔" in out and "?" in out
    code, out, _ = run(capsys, "explain", WU, "wu2025.consider-ruxolitinib", "--at", "day 11 16:00", "--format",
                       "json", "--rules", str(RULES))
    tree = json.loads(out)
    assert tree["outcome"] == "not fired" and tree["tree"]["verdict"] == "false"
    # refractory-sjia-mas: sJIA is its applies_to, so the pulse-course count is the second condition of its when
    assert tree["tree"]["children"][0]["children"][0]["children"][1]["note"] == "2 matching"


def test_every_command_has_help_with_an_example() -> None:
    from engine.cli import COMMANDS, command

    assert len(COMMANDS) >= 9
    for name in COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "engine.cli", name, "--help"], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0 and "example" in proc.stdout, name
        assert all("mascds " in e and e in proc.stdout for e in command(name).EXAMPLES), name


def test_internal_errors_never_show_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from engine import cli
    from engine.commands import validate

    def boom(args: object) -> int:
        raise RuntimeError("unexpected")

    monkeypatch.setattr(validate, "run", boom)
    code = cli.main(["validate"])
    err = capsys.readouterr().err
    assert code == 70 and "internal error: RuntimeError: unexpected" in err and "Traceback" not in err

"""Commands that must not succeed quietly: a case folder with nothing to test, a --cases path that does not exist,
and a case whose wrong-typed entry would hide the problems of its other entries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine.core.errors import LoadError

from .conftest import RULES

HERE = Path(__file__).resolve().parent


def _mascds(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_testing_an_empty_folder_fails_and_says_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a case")
    proc = _mascds("test", str(tmp_path), "--rules", str(RULES))
    assert proc.returncode != 0
    assert "E405" in proc.stderr and "no case files" in proc.stderr


def test_lint_with_a_missing_cases_path_reports_that_alone(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = _mascds("lint", str(RULES), "--cases", str(missing))
    assert proc.returncode != 0
    found = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if " E004 " in line]
    assert len(found) == 1 and "nope" in found[0]
    assert " L103 " not in proc.stdout + proc.stderr and " L104 " not in proc.stdout + proc.stderr


def test_a_type_error_does_not_hide_the_other_entries_problems_and_paths_stay_the_authors() -> None:
    with pytest.raises(LoadError) as err:
        engine.load_case(HERE / "case_errors" / "E102-with-unit-and-range-errors.yaml")
    paths = {(d.code, d.path) for d in err.value.diagnostics}
    assert ("E105", "observations[1].unit") in paths and ("E114", "observations[2].value") in paths
    assert ("E114", "medications[1].dose") in paths


def test_a_problem_outside_the_entries_adds_no_knock_on_errors(tmp_path: Path) -> None:
    case = tmp_path / "c.yaml"
    case.write_text("case: {id: c, title: c}\npatient: {sex: male, age_years: 7}\ntimeline: {start: 12}\n"
                    "observations:\n  - {analyte: ferritin, value: 500, unit: ng/dl, time: day 1}\n")
    with pytest.raises(LoadError) as err:
        engine.load_case(case)
    assert [d.code for d in err.value.diagnostics] == ["E102"]

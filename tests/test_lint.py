"""mascds lint: a corpus of small knowledge bases (tests/lint/*/rules, optional cases/) whose files state the
findings they must produce as ``# expect: CODE at LINE:COL SEVERITY`` comments. For the codes a corpus states,
the findings must be exactly those; other codes are the business of other corpora."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.authoring.lint import lint_knowledge_base
from engine.cli import main
from engine.core.errors import CODES

from .conftest import CASES, RULES

CORPUS = Path(__file__).resolve().parent / "lint"
EXPECT = re.compile(r"^#\s*expect:\s*([EL]\d{3})\s+at\s+(\d+):(\d+)\s+(error|warning|info)\s*$", re.MULTILINE)
KBS = sorted(p for p in CORPUS.iterdir() if (p / "rules").is_dir())


def _expected(kb: Path) -> set[tuple[str, str, int, int, str]]:
    out = set()
    for path in (kb / "rules").glob("*.yaml"):
        for code, line, col, severity in EXPECT.findall(path.read_text(encoding="utf-8")):
            out.add((path.name, code, int(line), int(col), severity))
    return out


@pytest.mark.parametrize("kb", KBS, ids=[p.name for p in KBS])
def test_lint_corpus(kb: Path) -> None:
    expected = _expected(kb)
    assert expected, f"{kb.name} states no expectation"
    codes = {e[1] for e in expected}
    cases = [kb / "cases"] if (kb / "cases").is_dir() else []
    report = lint_knowledge_base(kb / "rules", cases)
    got = {(Path(d.file).name, d.code, d.line, d.col, d.severity) for d in report.findings if d.code in codes}
    assert got == expected, "\n".join(d.format() for d in report.findings)
    for d in report.findings:
        assert d.message and d.hint, d.format()


def test_every_lint_code_is_exercised() -> None:
    seen = {e[1] for kb in KBS for e in _expected(kb) if e[1].startswith("L")} | {"L106"}  # L106: below
    assert {c for c in CODES if c.startswith("L")} == seen


def test_without_cases_coverage_is_not_checked_and_says_so() -> None:
    report = lint_knowledge_base(CORPUS / "coverage" / "rules", [])
    assert [d.code for d in report.findings if d.code.startswith(("L103", "L104", "L106"))] == ["L106"]


def test_the_shipped_knowledge_base_lints_without_errors_or_warnings() -> None:
    report = lint_knowledge_base(RULES, [CASES])
    problems = [d.format() for d in report.findings if d.severity != "info" and d.code != "E115"]
    assert problems == []


def test_lint_command_exit_codes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    coverage = str(CORPUS / "coverage" / "rules")
    assert main(["lint", coverage, "--cases", str(CORPUS / "coverage" / "cases")]) == 1
    out = capsys.readouterr().out
    assert "untested.yaml:1:5: L103 no case where lint.untested fires (hint:" in out
    assert main(["lint", coverage, "--cases", str(CORPUS / "coverage" / "cases"), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["errors"] == 3 and data["warnings"] == 5 and data["infos"] == 1
    assert {"file", "line", "col", "code", "severity", "message", "hint"} <= set(data["findings"][0])
    warnings_only = str(CORPUS / "conflicts-restrictive-wins" / "rules")
    cases = str(CORPUS / "coverage" / "cases")
    assert main(["lint", warnings_only, "--cases", cases]) == 1  # its rules have no cases: L103 errors
    assert main(["lint", str(CORPUS / "missing")]) == 1
    assert "E004" in capsys.readouterr().out

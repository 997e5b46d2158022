"""mascds test --coverage: outcomes per rule and verdicts per condition over every case and time point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import engine
from engine.authoring.coverage import measure_coverage
from engine.cli import main

from .conftest import CASES, RULES

CORPUS = Path(__file__).resolve().parent / "lint" / "coverage"


def test_counts_are_per_time_point_and_per_condition() -> None:
    """One case, five time points (the sJIA onset at day -10, two temperatures, two expectation times):
    febrile is undecided before any temperature, met twice, not met twice."""
    kb = engine.load_knowledge_base(CORPUS / "rules")
    cov = measure_coverage(kb, [CORPUS / "cases"])
    assert (cov.cases, cov.evaluations) == (1, 5)
    febrile = cov.rules["lint.febrile"]
    assert (febrile.fired, febrile.not_fired, febrile.undecided, febrile.covered) == (2, 2, 1, True)
    [cond] = febrile.conditions.values()
    assert (cond.true, cond.false, cond.unknown) == (2, 2, 1)
    tested = cov.rules["lint.tested"]
    assert (tested.fired, tested.not_fired, tested.covered) == (5, 0, False)
    untested = cov.rules["lint.untested"]
    assert (untested.fired, untested.not_fired) == (0, 5)
    assert "lint.draft" not in cov.rules  # drafts are not evaluated
    assert cov.rule_percent == pytest.approx(100 / 3) and cov.condition_percent == pytest.approx(100 / 3)


def test_min_fails_the_command_and_json_carries_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["test", str(CORPUS / "cases"), "--rules", str(CORPUS / "rules"), "--coverage"]
    assert main([*args, "--min", "30"]) == 0
    out = capsys.readouterr().out
    assert "never true: macrophage activation syndrome (line 12, when)" in out
    assert "conditions covered: 1/3 (33.3%)" in out
    assert main([*args, "--min", "50"]) == 2
    assert "below the minimum 50%" in capsys.readouterr().out
    assert main([*args, "--min", "50", "--format", "json"]) == 2
    data = json.loads(capsys.readouterr().out)["coverage"]
    assert data["below_min"] is True and data["condition_coverage"] == 33.3 and data["evaluations"] == 5
    by_rule = {r["rule_id"]: r for r in data["by_rule"]}
    assert by_rule["lint.untested"]["conditions"][0]["true"] == 0


def test_min_implies_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["test", str(CORPUS / "cases"), "--rules", str(CORPUS / "rules"), "--min", "50"]) == 2
    assert "conditions covered: 1/3 (33.3%)" in capsys.readouterr().out


def test_the_shipped_cases_cover_every_rule_both_ways() -> None:
    cov = measure_coverage(engine.load_knowledge_base(RULES), [CASES])
    assert [r.rule_id for r in cov.rules.values() if not r.covered] == []

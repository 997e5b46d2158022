"""An evaluation time the record cannot speak to (before birth, or beyond every rule's look-back after the last
event) still answers, but says what the answer rests on: in the result's warnings, its text, JSON and cards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import engine
from engine.runtime.timing import TIME_WARNING_PREFIX, longest_lookback
from engine.service.cards import CardContext, KnowledgeBaseView, build_cards
from engine.service.models import CDSHooksResponse

from .conftest import CASES, RULES

BORN = CASES / "controls" / "wu-control-no-ciclosporin.yaml"  # birth_date 2012-02-10


def _timing(result: engine.Result) -> list[str]:
    return [w for w in result.warnings if w.startswith(TIME_WARNING_PREFIX)]


def test_the_longest_look_back_comes_from_the_rules(kb: engine.KnowledgeBase) -> None:
    """The shipped rules' widest window is 30 days (no relative window reaches further)."""
    assert longest_lookback(kb.compiled) == 30 * 86400


@pytest.mark.parametrize("backend", ["durable", "reference"])
def test_before_birth_is_said(kb: engine.KnowledgeBase, backend: str) -> None:
    result = kb.evaluate(engine.load_case(BORN), at="2011-01-01", backend=backend)  # type: ignore[arg-type]
    [warning] = _timing(result)
    assert "before the patient's birth (2012-02-10" in warning
    assert warning in result.to_json()["warnings"]


def test_long_after_the_last_event_is_said_and_within_the_window_is_not(kb: engine.KnowledgeBase) -> None:
    snap = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    last = snap.last_event()
    assert last is not None
    window = longest_lookback(kb.compiled)
    assert _timing(kb.evaluate(snap)) == []
    assert _timing(kb.evaluate(snap, at=last + window)) == []
    [warning] = _timing(kb.evaluate(snap, at=last + window + 1))
    assert "after the last recorded event" in warning and "(30 days)" in warning


def test_shipped_cases_at_their_expectations_carry_no_time_warning(kb: engine.KnowledgeBase) -> None:
    for path in sorted(CASES.rglob("*.yaml")):
        snap = engine.load_case(path)
        for e in snap.expectations:
            assert _timing(kb.evaluate(snap, at=e.at)) == [], f"{path.name} at {e.at}"


def test_the_cli_shows_it_in_text_and_json() -> None:
    base = [sys.executable, "-m", "engine.cli", "evaluate", str(BORN), "--at", "2011-01-01", "--rules", str(RULES)]
    text = subprocess.run([*base, "--no-color"], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "warning: evaluation time 2011-01-01T00:00:00Z is before the patient's birth" in " ".join(text.split())
    data = json.loads(subprocess.run([*base, "--format", "json"], capture_output=True, text=True, timeout=120,
                                     check=True).stdout)
    assert any(w.startswith(TIME_WARNING_PREFIX) for w in data["warnings"])


def test_cards_carry_it_as_a_notice(kb: engine.KnowledgeBase) -> None:
    view = KnowledgeBaseView.of(kb)
    ctx = CardContext("patient-view", "case", lambda rid: "https://cds.test.invalid/" + rid)
    result = kb.evaluate(engine.load_case(BORN), at="2011-01-01")
    body = CDSHooksResponse(cards=build_cards(result, view, ctx)).model_dump(exclude_none=True)
    notices = [c for c in body["cards"] if "before the patient's birth" in c.get("detail", "")]
    assert len(notices) == 1 and notices[0]["indicator"] == "warning"
    plain = kb.evaluate(engine.load_case(BORN))
    assert not any("evaluation time" in c.get("detail", "")
                   for c in CDSHooksResponse(cards=build_cards(plain, view, ctx)).model_dump(exclude_none=True)
                   ["cards"])

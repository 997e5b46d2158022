"""mascds replay: one incremental session through a timeline gives exactly what evaluating each time from
scratch gives; the spans say when each finding appeared and disappeared; charts are written offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import engine
import engine.outputs.timeline
from engine import replay
from engine.authoring.casetest import case_files
from engine.cli import main

from . import generate
from .conftest import CASES, RULES

WU = CASES / "wu-2025-ruxolitinib.yaml"
CASE_FILES = case_files([CASES])


@pytest.fixture(scope="module")
def shipped() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


def _same(a: engine.outputs.timeline.Replay, b: engine.outputs.timeline.Replay) -> None:
    assert a.times == b.times
    for t, x, y in zip(a.times, a.results, b.results, strict=True):
        assert x.to_json() == y.to_json(), f"{a.snapshot.id} at {t}"


@pytest.mark.parametrize("backend", ["durable", "reference"])
@pytest.mark.parametrize("path", CASE_FILES, ids=[str(p.relative_to(CASES)) for p in CASE_FILES])
def test_replay_equals_evaluation_from_scratch(shipped: engine.KnowledgeBase, path: Path, backend: Any) -> None:
    snap = engine.load_case(path)
    _same(replay(shipped, snap, backend=backend), replay(shipped, snap, backend=backend, incremental=False))


def test_a_long_timeline_in_several_sessions_still_equals_from_scratch(shipped: engine.KnowledgeBase,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """60 days (191 events); the session is renewed every few hundred ids, as it is for very long records."""
    snap = engine.snapshot_from_dict(generate.long_timeline(60))
    assert len(snap.event_times()) == 191
    monkeypatch.setattr(engine.outputs.timeline, "SESSION_IDS", 600)
    _same(replay(shipped, snap), replay(shipped, snap, incremental=False))


def test_spans_say_when_each_finding_appeared_and_disappeared(shipped: engine.KnowledgeBase) -> None:
    rp = replay(shipped, engine.load_case(WU))
    spans = {rid: [(s.state, s.to_json(rp.snapshot.start)["from_label"], s.to_json(rp.snapshot.start)["to_label"])
                   for s in items] for rid, items in rp.spans().items()}
    # The third pulse course ends on day 15 10:00. Until a temperature or a second enzyme value after it is
    # recorded, refractoriness is undecided; the fever at 16:00 decides it. Tocilizumab is still running at the
    # moment it ends (day 16 12:00), so "stop it" holds until the next event; ruxolitinib starts on day 17 08:00.
    assert spans["wu2025.stop-tocilizumab"] == [("undecided", "day 15 10:00", "day 15 16:00"),
                                                ("fired", "day 15 16:00", "day 17 06:00")]
    assert spans["wu2025.consider-ruxolitinib"] == [("undecided", "day 15 10:00", "day 15 16:00"),
                                                    ("fired", "day 15 16:00", "day 17 08:00")]
    assert spans["wu2025.consider-stopping-ruxolitinib"][0] == ("fired", "day 106 06:00", "day 107 08:00")
    assert "yang2023.consider-ecmo" not in spans  # never anything but quiet in this case


def test_replay_command_text_json_and_from_scratch(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(WU), "--rules", str(RULES), "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "47 evaluations (one incremental session), day -1461 00:00 to day 108 08:00" in out
    assert "wu2025.stop-tocilizumab" in out and "(still at the end)" in out
    assert main(["replay", str(WU), "--rules", str(RULES), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "mascds.replay/1" and data["evaluations"] == 47
    assert main(["replay", str(WU), "--rules", str(RULES), "--format", "json", "--from-scratch"]) == 0
    assert json.loads(capsys.readouterr().out) == data


def test_plots_are_written_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png, page, svg = tmp_path / "wu.png", tmp_path / "wu.html", tmp_path / "wu.svg"
    for target in (png, page, svg):
        assert main(["replay", str(WU), "--rules", str(RULES), "--plot", str(target)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text and "wu2025.consider-ruxolitinib" in text
    assert "<script" not in text and "src=" not in text and 'href="http' not in text  # nothing fetched
    assert svg.read_text(encoding="utf-8").lstrip().startswith("<?xml")
    capsys.readouterr()
    assert main(["replay", str(WU), "--rules", str(RULES), "--plot", str(tmp_path / "wu.pdf")]) == 1
    assert "use a file ending in .png, .svg, .html" in capsys.readouterr().err

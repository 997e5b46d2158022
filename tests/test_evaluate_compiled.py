"""The compiled evaluation path against its oracle, the interpreter (``kb.evaluate(..., _path="interpreted")``):
the whole result (its JSON and the decision traces) must be identical on every shipped case at every event, in
both languages and on both backends, through incremental replay, and on 10,000 generated snapshots. Also: the
fast JSON text (orjson) is byte-identical to the standard library's.

Cost: the 10,000 generated snapshots run on the durable backend (the default one), every twentieth also on
the reference backend; the backends themselves are compared in tests/test_differential.py."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.authoring.casetest import case_files
from engine.outputs.timeline import replay

from . import generate
from .conftest import CASES, fixture_kbs

GENERATED = 10_000
SEED = 20261203


def _same(kb: engine.KnowledgeBase, snap: engine.Snapshot, at: int, backend: engine.BackendName, label: str,
          lang: str = "en", text: bool = False, traces: bool = False) -> engine.Result:
    old = kb.evaluate(snap, at, backend=backend, lang=lang, _path="interpreted")
    new = kb.evaluate(snap, at, backend=backend, lang=lang)
    assert new.to_json() == old.to_json(), f"{label} ({backend}, {lang}): the compiled path's result differs"
    if traces:
        assert new.traces == old.traces, f"{label} ({backend}, {lang}): decision traces differ"
        assert new.populations == old.populations, f"{label} ({backend}, {lang}): populations differ"
    if text:
        assert new.to_json_text() == old._to_json_text_json(), f"{label} ({backend}, {lang}): JSON text differs"
    return new


def _times(snap: engine.Snapshot) -> list[int]:
    return sorted({*snap.event_times(), *(e.at for e in snap.expectations)})


@pytest.mark.parametrize("path", case_files([CASES]), ids=lambda p: p.name)
def test_shipped_cases_at_every_event(kb: engine.KnowledgeBase, path: Path) -> None:
    snap = engine.load_case(path)
    for t in _times(snap):
        for backend in ("durable", "reference"):
            _same(kb, snap, t, backend, f"{path.name} @ {t}", text=True, traces=True)  # type: ignore[arg-type]
        _same(kb, snap, t, "durable", f"{path.name} @ {t}", lang="zh-CN", text=True)


@pytest.mark.parametrize("kb_dir", fixture_kbs(), ids=lambda p: p.name)
def test_fixture_knowledge_bases(kb_dir: Path) -> None:
    """The small knowledge bases of the tests (languages, conflicts, ...) with their cases, at every event."""
    fixture_kb = engine.load_knowledge_base(kb_dir / "rules")
    for path in case_files([kb_dir / "cases"]):
        snap = engine.load_case(path)
        for t in _times(snap):
            for backend in ("durable", "reference"):
                _same(fixture_kb, snap, t, backend, f"{kb_dir.name}/{path.name} @ {t}",  # type: ignore[arg-type]
                      text=True, traces=True)


@pytest.mark.parametrize("path", case_files([CASES]), ids=lambda p: p.name)
def test_incremental_replay_matches_the_interpreter(kb: engine.KnowledgeBase, path: Path) -> None:
    snap = engine.load_case(path)
    run = replay(kb, snap)
    for t, result in zip(run.times, run.results, strict=True):
        old = kb.evaluate(snap, t, _path="interpreted")
        assert result.to_json() == old.to_json(), f"{path.name} @ {t}: incremental replay differs"


def test_generated_snapshots(kb: engine.KnowledgeBase) -> None:
    rng = random.Random(SEED)
    fired: set[str] = set()
    undecided: set[str] = set()
    for n in range(GENERATED):
        snap, at = generate.snapshot(rng, n)
        label = f"generated #{n} (seed {SEED})"
        result = _same(kb, snap, at, "durable", label, text=n % 20 == 0)
        if n % 20 == 0:
            _same(kb, snap, at, "reference", label, traces=True)
        fired |= {r.rule_id for r in result.recommendations} | {a.rule_id for a in result.assessments
                                                                if a.status == "met"}
        undecided |= {u.rule_id for u in result.indeterminate}
    # snapshots that never fire a rule, or never leave one undecided, would compare nothing of interest
    assert fired == set(kb.rule_ids), f"never fired: {sorted(set(kb.rule_ids) - fired)}"
    assert undecided, "no generated snapshot left a rule undecided"


def _with_value(result: engine.Result, value: Any) -> engine.Result:
    first = result.assessments[0]
    return dataclasses.replace(result, assessments=(dataclasses.replace(first, value=value), *result.assessments[1:]))


@pytest.mark.parametrize("value", [5e-07, 1.5e-05, 2.5e-09, 1e-10, 1e16, -0.0, 2 ** 70,
                                   "\u2028 é \x7f \x00"],
                         ids=["5e-07", "1.5e-05", "2.5e-09", "1e-10", "1e16", "minus-zero", "2**70", "unicode"])
def test_json_text_is_the_standard_librarys(kb: engine.KnowledgeBase, value: Any) -> None:
    """The spellings where orjson and json could part (small exponents, big integers, control characters)."""
    case = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    result = kb.evaluate(case)
    assert result.assessments, "the case must hold an assessment to carry the value"
    odd = _with_value(result, value)
    text = odd.to_json_text()
    assert text == json.dumps(odd.to_json(), ensure_ascii=False, indent=2, allow_nan=False)
    assert json.loads(text)["assessments"][0]["value"] == value


def test_json_text_refuses_what_json_refuses(kb: engine.KnowledgeBase) -> None:
    """orjson would write a dataclass as an object; the text must fail as json's does (a bug, not a result)."""
    result = kb.evaluate(engine.load_case(CASES / "wu-2025-ruxolitinib.yaml"))
    with pytest.raises(TypeError):
        _with_value(result, result.knowledge_base).to_json_text()

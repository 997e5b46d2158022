"""The comparison benchmark's correctness gate (benchmarks/peers/): the 2016 MAS classification written by hand, in
durable_rules directly, as a zen-engine JDM graph and in CQL gives mascds's answer on every input.

zen-engine (the `peers` extra) and node with `npm ci` in benchmarks/peers are optional: their tests are skipped,
with the reason, when they are not installed."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

import engine
from tests.conftest import ROOT

PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import mas2016  # noqa: E402

Inputs = list[tuple[engine.Snapshot, int]]


@pytest.fixture(scope="module")
def kb() -> engine.KnowledgeBase:
    return mas2016.load_kb_2016()


@pytest.fixture(scope="module")
def data() -> list[tuple[engine.Snapshot, int]]:
    return mas2016.inputs(300, 2016)


def test_the_2016_only_knowledge_base_holds_the_shipped_rules(kb: engine.KnowledgeBase) -> None:
    assert sorted(kb.rule_ids) == ["fardet2014.febrile", "ravelli2016.mas-classification"]


def test_gate_hand_written_and_durable_direct(kb: engine.KnowledgeBase, data: Inputs) -> None:
    durable = mas2016.DurableDirect()
    try:
        counts = mas2016.gate(kb, data, None, durable)
    finally:
        durable.close()
    # the inputs exercise every outcome, so agreement is not agreement on one answer
    assert set(counts) == {"met", "not_met", "undecided", "not_applicable"}
    assert min(counts.values()) >= 20


def test_gate_refuses_a_wrong_implementation(kb: engine.KnowledgeBase, data: Inputs,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    right = mas2016.criteria

    def off_by_one(v: dict[str, Any]) -> dict[str, bool | None]:
        c = right(v)
        if v["ferritin"] is not None:
            c["ferritin"] = v["ferritin"] >= 684  # the criterion is "above 684"
        return c

    monkeypatch.setattr(mas2016, "criteria", off_by_one)
    with pytest.raises(mas2016.GateError, match="hand-written answered"):
        mas2016.gate(kb, data, None, None)


def test_gate_zen_engine(kb: engine.KnowledgeBase, data: Inputs) -> None:
    pytest.importorskip("zen", reason="zen-engine is not installed (pip install -e '.[peers]')")
    counts = mas2016.gate(kb, data, mas2016.Zen.load(), None)
    assert sum(counts.values()) == len(data)


def test_gate_cql_execution(kb: engine.KnowledgeBase, data: Inputs, tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not (PEERS / "node_modules" / "cql-execution").is_dir():
        pytest.skip(f"cql-execution is not installed (npm ci in {PEERS})")
    items = []
    for snap, at in data[:60]:
        p = tmp_path / f"{snap.id}.json"
        p.write_text(json.dumps(engine.case_to_bundle(snap)))
        items.append((p, at))
    synthea = mas2016.synthea_patients(3)
    items += [(p, mas2016.bundle_time(json.loads(p.read_text()))) for p in synthea]
    runner = mas2016.CqlRunner(items)
    try:
        out = runner.round()
    finally:
        runner.close()
    got = [mas2016.CqlRunner.answer(o) for o in out]
    want = [mas2016.from_bundle(kb, json.loads(p.read_text()), at) for p, at in items]
    assert got == want
    assert {status for status, _ in want} == {"met", "not_met", "undecided", "not_applicable"}

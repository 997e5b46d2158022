"""Differential test: the durable_rules backend and the plain-Python reference must agree exactly - on the
answer of every query and on the whole result - for every shipped case at every event time, and for 10,000
generated snapshots per knowledge base."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

import engine
from engine.authoring.casetest import case_files
from engine.core.snapshot import Snapshot
from engine.runtime.evaluate import evaluate_snapshot

from . import generate
from .conftest import CASES, FIXTURES, RULES

GENERATED = 10_000


def _compare(kb: engine.KnowledgeBase, snap: Snapshot, at: int, label: str) -> engine.Result:
    results: dict[str, Any] = {}
    tuples: dict[str, dict[str, Any]] = {}
    for name in ("durable", "reference"):
        backend = kb.backend(name)  # type: ignore[arg-type]
        session = backend.open()
        try:
            result = evaluate_snapshot(kb.compiled, session, snap, at, backend.name)
            tuples[name] = {q: session.tuples(q) for q in kb.compiled.queries}
        finally:
            session.close()
        data = result.to_json()
        data.pop("backend")
        results[name] = json.dumps(data, sort_keys=True)
        last = result
    for q in kb.compiled.queries:
        assert tuples["durable"][q] == tuples["reference"][q], (
            f"{label}: query {q} differs\n{kb.compiled.queries[q]}\n"
            f"durable only: {sorted(tuples['durable'][q] - tuples['reference'][q])}\n"
            f"reference only: {sorted(tuples['reference'][q] - tuples['durable'][q])}")
    assert results["durable"] == results["reference"], f"{label}: results differ"
    return last


@pytest.mark.parametrize("path", case_files([CASES]), ids=lambda p: p.name)
def test_shipped_cases_at_every_event(kb: engine.KnowledgeBase, path: Any) -> None:
    snap = engine.load_case(path)
    times = sorted({*snap.event_times(), *(e.at for e in snap.expectations)})
    for t in times:
        _compare(kb, snap, t, f"{path.name} @ {t}")


@pytest.mark.parametrize("kb_dir", [RULES, FIXTURES / "kb-language" / "rules", FIXTURES / "kb-conflicts" / "rules"],
                         ids=["shipped", "language", "conflicts"])
def test_generated_snapshots(kb_dir: Any) -> None:
    kb = engine.load_knowledge_base(kb_dir)
    rng = random.Random(20261122)
    fired: set[str] = set()
    undecided: set[str] = set()
    for n in range(GENERATED):
        snap, at = generate.snapshot(rng, n)
        result = _compare(kb, snap, at, f"generated #{n} (seed 20261122)")
        fired |= {r.rule_id for r in result.recommendations} | {a.rule_id for a in result.assessments
                                                                if a.status == "met"}
        undecided |= {u.rule_id for u in result.indeterminate}
    # a generator that never makes a rule fire, or never leaves one undecided, compares nothing of interest
    assert fired == set(kb.rule_ids), f"never fired: {sorted(set(kb.rule_ids) - fired)}"
    assert undecided, "no generated snapshot left a rule undecided"

"""The durable_rules traps (docs/design notes and what the differential test found), each pinned by a test."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import engine
from engine.compiler.ir import AnyOf, FieldRef, FieldTest, Pattern, Query
from engine.core.errors import EvaluationError
from engine.runtime.durable_backend import (
    ENGINE_NUMBER,
    MAX_FACTS,
    DurableBackend,
    EngineNumberError,
    check_engine_number,
    engine_number,
    fnv1_32,
    pattern_json,
    shard,
)
from engine.runtime.facts import Fact

from .conftest import CASES, RULES, fixture_kbs, rule_text, write_kb
from .magnitudes import MAGNITUDES, with_value

RAW_PROBE = textwrap.dedent("""
    import json, sys, durable_rules_engine as d
    x = json.loads(sys.argv[1])
    rs = {"q": {"all": [{"a0": {"$and": [{"k": "anc"}, {"d": "mp"}]}}, {"x": x}], "cap": 1000},
          "catch": {"all": [{"m": {"$ex": {"k": 1}}}], "cap": 1000}}
    h = d.create_ruleset("r", json.dumps(rs))
    facts = [{"id": "c", "sid": "s", "k": "anc", "d": "mp", "now": 100}]
    facts += [{"id": str(i + 1), "sid": "s", "k": "obs", "an": "alt", "ts": 10, "te": te}
              for i, te in enumerate(json.loads(sys.argv[2]))]
    code, off = d.assert_facts(h, json.dumps(facts))
    out = []
    r = d.start_action_for_state(h, off)
    r = r[1] if r else None
    while r:
        out += [f["x"]["id"] for f in json.loads(r).get("q", [])]
        r = d.complete_and_start_action(h, off)
    print(json.dumps(sorted(out)))
""")
REF = FieldTest("te", "gte", FieldRef("a0", "now"))
OR = AnyOf(((FieldTest("an", "eq", "alt"),), (FieldTest("an", "eq", "ast"),)))


def _probe(pattern: dict[str, object], ends: list[int]) -> tuple[int, list[str] | None]:
    """Run one query in a fresh process (so a crash fails the test instead of killing the test run)."""
    proc = subprocess.run([sys.executable, "-c", RAW_PROBE, json.dumps(pattern), json.dumps(ends)],
                          capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else None


def _relating(test: object) -> bool:
    """A test relating the fact to another: {"$gte": {"te": {"a0": "ts"}}}, or an equality {"d": {"a0": "d"}}."""
    if not isinstance(test, dict) or "$or" in test or "$and" in test:
        return False
    return any(isinstance(v, dict) and (not k.startswith("$") or any(isinstance(x, dict) for x in v.values()))
               for k, v in test.items())


def _check_order(pattern: dict[str, object]) -> None:
    parts = pattern.get("$and", [pattern])
    assert isinstance(parts, list)
    relating = [i for i, t in enumerate(parts) if _relating(t)]
    ors = [i for i, t in enumerate(parts) if isinstance(t, dict) and "$or" in t]
    assert len(relating) != 1, f"a lone cross-fact test: {pattern}"
    assert not ors or not relating or min(ors) > max(relating), f"$or before a cross-fact test: {pattern}"


@pytest.mark.parametrize("rules", [RULES, *[d / "rules" for d in fixture_kbs()]], ids=lambda p: p.parent.name)
def test_every_emitted_pattern_has_the_safe_shape(rules: Path) -> None:
    """The engine mis-evaluates a lone cross-fact test that is false (it reads past its expression list) and
    skips cross-fact tests written after a $or. No pattern we send may have either shape."""
    kb = engine.load_knowledge_base(rules)
    for q in kb.compiled.queries.values():
        for _, p in (*q.joins, ("x", q.target)):
            _check_order(pattern_json(p))


def test_our_patterns_are_right_where_the_raw_engine_crashed() -> None:
    ours = pattern_json(Pattern("obs", (FieldTest("an", "eq", "alt"), REF)))
    assert _probe(ours, [50]) == (0, [])  # the configuration that segfaulted in 3 of 3 runs before the fix
    assert _probe(ours, [50, 500]) == (0, ["2"])


def test_an_or_before_a_cross_fact_test_silently_skips_it_in_the_raw_engine_but_not_ours() -> None:
    naive = {"$and": [{"k": "obs"}, {"$or": [{"an": "alt"}, {"an": "ast"}]}, {"$gte": {"te": {"a0": "now"}}},
                      {"$lte": {"ts": {"a0": "now"}}}]}
    assert _probe(naive, [50, 500]) == (0, ["1", "2"]), "fact 1 ended at 50 < 100 yet matched: a test was skipped"
    ours = pattern_json(Pattern("obs", (OR, REF, FieldTest("ts", "lte", FieldRef("a0", "now")))))
    assert _probe(ours, [50, 500]) == (0, ["2"])


def test_alternatives_may_not_relate_facts() -> None:
    with pytest.raises(EvaluationError):
        pattern_json(Pattern("obs", (AnyOf(((REF,), (FieldTest("d", "eq", "x"),))),)))


def test_fact_ids_cannot_collide() -> None:
    # our FNV-1 reproduces the collision the design notes measured in the engine
    assert fnv1_32("lab-937") == fnv1_32("lab-423550")
    ids = [str(i) for i in range(MAX_FACTS)] + ["c"] + [f"d{i}" for i in range(2000)]
    assert len({fnv1_32(i) for i in ids}) == len(ids)


def test_a_dropped_fact_is_an_error_not_a_silent_loss() -> None:
    backend = DurableBackend({})
    session = backend.open()
    try:
        with pytest.raises(EvaluationError, match=r"refused the facts|did not keep every fact"):
            session.add([Fact("lab-937", {"k": "obs", "a": "ferritin", "v": 1.0, "ts": 0.0, "te": 0.0}, None),
                         Fact("lab-423550", {"k": "obs", "a": "ferritin", "v": 2.0, "ts": 0.0, "te": 0.0}, None)])
    finally:
        session.close()
        backend.close()


def test_empty_batches_are_never_sent() -> None:
    backend = DurableBackend({})
    session = backend.open()
    session.add([])
    session.close()
    backend.close()


def test_sessions_are_deleted_so_thousands_of_evaluations_do_not_exhaust_the_engine(kb: engine.KnowledgeBase) -> None:
    reaction = engine.load_case(CASES / "yang-2023-ecmo-tocilizumab.yaml")
    quiet = engine.load_case(CASES / "controls" / "tocilizumab-no-reaction.yaml")
    for i in range(2_500):  # above the engine's 1,024 live sessions
        if i % 2:
            assert kb.evaluate(quiet, "day 20").recommendations == ()
        else:
            assert "yang2023.tocilizumab-anaphylaxis" in kb.evaluate(reaction, "day 20 10:40").fired()


def test_concurrent_callers_each_get_their_own_patient(kb: engine.KnowledgeBase) -> None:
    picks = {
        "wu": (engine.load_case(CASES / "wu-2025-ruxolitinib.yaml"), "day 16 08:00",
               {"wu2025.consider-ruxolitinib", "wu2025.stop-tocilizumab"}),
        "yang": (engine.load_case(CASES / "yang-2023-ecmo-tocilizumab.yaml"), "day 5 02:00",
                 {"yang2023.consider-ecmo"}),
        "quiet": (engine.load_case(CASES / "controls" / "tocilizumab-no-reaction.yaml"), "day 20", set()),
    }
    # what each patient must get, from the reference matcher alone; the seed rules must be among it
    cases = {}
    for name, (snap, at, seed) in picks.items():
        alone = kb.evaluate(snap, at, backend="reference").fired()
        assert seed <= alone and (seed or not alone), (name, alone)
        cases[name] = (snap, at, alone)
    errors: list[str] = []

    def worker(name: str) -> None:
        snap, at, expected = cases[name]
        for _ in range(150):
            result = kb.evaluate(snap, at)
            if result.fired() != expected or result.case_id != snap.id:
                errors.append(f"{name}: {sorted(result.fired())}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in cases for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_many_patterns_on_one_branch_are_split_over_rulesets(tmp_path: Path) -> None:
    """More than 64 patterns that can match one fact fail the engine's assert (error 303) in one ruleset."""
    rules = {f"r{i}.yaml": rule_text(f"limit.r{i}", f"observation: {{analyte: ferritin, gt: {100 + i}, unit: ng/mL}}",
                                     f"derive: {{fact: f{i}}}") for i in range(70)}
    write_kb(tmp_path, rules)
    kb = engine.load_knowledge_base(tmp_path)
    backend = kb.backend("durable")
    assert isinstance(backend, DurableBackend) and backend.shards >= 2
    snap = engine.snapshot_from_dict({
        "case": {"id": "limits", "title": "One ferritin matching every pattern"},
        "patient": {"sex": "female", "age_years": 5}, "timeline": {"start": "2024-01-01"},
        "observations": [{"analyte": "ferritin", "value": 5000, "unit": "ng/mL", "time": "day 1"}]})
    for name in ("durable", "reference"):
        result = kb.evaluate(snap, backend=name)  # type: ignore[arg-type]
        assert {a.status for a in result.assessments} == {"met"} and len(result.assessments) == 70


def test_shards_respect_every_limit() -> None:
    queries = [Query(f"q{i}", (("clk", Pattern("clk")),), Pattern("obs", (FieldTest("a", "eq", "ferritin"),)))
               for i in range(300)]
    parts = shard(queries)
    assert sum(len(p) for p in parts) == 300
    assert all(len(p) <= 60 for p in parts)


# --- numbers: the engine's JSON reader takes -?digits or -?digits.digits[e±digits], nothing else ---------------

RAW_NUMBER = textwrap.dedent("""
    import json, sys, durable_rules_engine as d
    rs = {"q": {"all": [{"x": {"$and": [{"k": "obs"}, {"$gt": {"v": 684}}]}}], "cap": 10},
          "catch": {"all": [{"m": {"$ex": {"k": 1}}}], "cap": 10}}
    h = d.create_ruleset("r", json.dumps(rs))
    code, off = d.assert_facts(h, '[{"id": "1", "sid": "s", "k": "obs", "v": %s}]' % sys.argv[1])
    r = d.start_action_for_state(h, off)
    print(r is not None)
""")


@pytest.mark.parametrize("text", ["5e-07", "1e+16"])
def test_a_bare_exponent_crashes_the_raw_engine(text: str) -> None:
    """The trap the encoding avoids (what Python and orjson write below 1e-4 and from 1e16 up). The catch-all
    matches every fact, so a fact the engine kept always yields an action; with a bare exponent the engine
    either crashes or yields none (the fact is lost) - which of the two depends on the process's memory (both
    were seen, on Python 3.12 and 3.11). The encoded spelling always yields the action."""
    proc = subprocess.run([sys.executable, "-c", RAW_NUMBER, text], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode != 0 or proc.stdout.strip() == "False", (proc.returncode, proc.stdout)
    fixed = subprocess.run([sys.executable, "-c", RAW_NUMBER, engine_number(float(text))], capture_output=True,
                           text=True, timeout=60, check=False)
    assert fixed.returncode == 0 and fixed.stdout.strip() == "True"


@pytest.mark.parametrize("value", [*MAGNITUDES, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 2.0**53, -0.0,
                                   1e-4, 9.999999999999999e15, 1e16])
def test_every_number_is_written_in_the_readers_grammar_and_reads_back_exactly(value: float) -> None:
    text = check_engine_number(value)
    assert ENGINE_NUMBER.fullmatch(text) and float(text) == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 2**53 + 1, -(10**400), True])
def test_numbers_the_engine_cannot_hold_exactly_are_refused(value: object) -> None:
    with pytest.raises(EngineNumberError):
        engine_number(value)  # type: ignore[arg-type]


def test_a_tiny_ferritin_no_longer_crashes_the_cli(tmp_path: Path) -> None:
    """A ferritin of 0.0001 ng/mL gave a ferritin/ESR ratio of 5e-07, whose bare exponent segfaulted the engine."""
    case = tmp_path / "tiny.yaml"
    case.write_text("case: {id: tiny, title: tiny ferritin}\npatient: {sex: male, age_years: 7}\n"
                    "timeline: {start: 2024-01-01}\ndiagnoses:\n  - {code: sjia, onset: day -300}\n"
                    "observations:\n  - {analyte: ferritin, value: 0.0001, unit: ng/mL, time: day 1}\n")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "evaluate", str(case), "--at", "day 2",
                           "--format", "json", "--rules", str(RULES)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["case"]["id"] == "tiny"


def _both(kb: engine.KnowledgeBase, snap: engine.Snapshot, at: int) -> tuple[str, str]:
    out = []
    for name in ("durable", "reference"):
        data = kb.evaluate(snap, at=at, backend=name).to_json()  # type: ignore[arg-type]
        data.pop("backend")
        out.append(json.dumps(data, sort_keys=True))
    return out[0], out[1]


@pytest.mark.parametrize("case", ["wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml",
                                  "assessments/mas-2016-criteria.yaml", "assessments/scores-complete.yaml"])
def test_magnitude_sweep_both_backends_agree(kb: engine.KnowledgeBase, case: str) -> None:
    """Every observation value and dose at each magnitude 1e-12..1e15, both signs (and the weight across positive
    magnitudes): no crash, no lost fact, and the two backends give the same whole result."""
    snap = engine.load_case(CASES / case)
    at = max(snap.event_times())
    for value in MAGNITUDES:
        weight = abs(value) if value else None
        durable, reference = _both(kb, with_value(snap, value, weight), at)
        assert durable == reference, f"{case} with every value {value!r}: the backends differ"


def test_constants_in_patterns_are_checked_when_the_ruleset_is_built() -> None:
    q = Query("q1", (), Pattern("obs", (FieldTest("v", "gt", math.nan),)))
    with pytest.raises(EvaluationError, match="cannot hold"):
        DurableBackend({"q1": q})
    tiny = Query("q1", (), Pattern("obs", (FieldTest("v", "gt", 1e-7),)))
    be = DurableBackend({"q1": tiny})
    try:
        s = be.open()
        try:
            s.add([Fact("0", {"k": "obs", "v": 2e-7}, None), Fact("1", {"k": "obs", "v": 5e-8}, None),
                   Fact("2", {"k": "obs", "v": 3e16}, None)])
            assert s.tuples("q1") == {("0",), ("2",)}
        finally:
            s.close()
    finally:
        be.close()


@pytest.mark.parametrize("value", [math.nan, math.inf, 2**60])
def test_a_fact_number_orjson_would_write_wrongly_is_refused_not_sent(value: float) -> None:
    """orjson writes NaN and infinity as null: the fast path must not pass that on as a missing value."""
    be = DurableBackend({"q1": Query("q1", (), Pattern("obs", (FieldTest("v", "gt", 1.0),)))})
    try:
        s = be.open()
        try:
            with pytest.raises(EvaluationError, match="cannot be evaluated"):
                s.add([Fact("0", {"k": "obs", "v": value}, None)])
        finally:
            s.close()
    finally:
        be.close()


def test_the_fast_path_and_the_exact_encoder_write_the_same_facts(kb: engine.KnowledgeBase) -> None:
    from engine.runtime.durable_backend import engine_json, facts_json
    from engine.runtime.facts import build_facts, clock_fact

    for path in sorted(CASES.rglob("*.yaml")):
        snap = engine.load_case(path)
        at = max(snap.event_times())
        rows = [{"id": f.id, "sid": "s", **f.data} for f in [*build_facts(snap, at), clock_fact(at)]]
        assert json.loads(facts_json(rows)) == json.loads(engine_json(rows)), path.name

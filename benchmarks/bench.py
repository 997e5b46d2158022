"""Benchmark: per-snapshot latency and throughput of both backends and both evaluation paths, the split of the
call into stages, knowledge-base load, CLI cold start.

    python benchmarks/bench.py [--snapshots 5000] [--rounds 3] [--rules rules] [--json out.json]

Snapshots are generated (seeded) and kept only when they hold 30-60 facts, like a real inpatient record in the
window the rules look at. Both backends, each through the compiled evaluation path and through the reference
interpreter (``_path="interpreted"``, what the compiled path replaced), evaluate the same snapshots in the same
run, pinned to one core, in interleaved rounds (the order alternates each round) so that drift of the machine
affects all alike. "evaluate" is the whole public call (facts, matching, three-valued decisions, result with
citations and matched values); its stages are facts (building them from the snapshot), match (adding facts to
the backend's session, derived facts included; the reference backend matches lazily, inside decisions),
decisions (every rule and assessment), result (reasons, actions, conflicts, treatment history, scope) and json
(``Result.to_json_text``, not part of the call; the interpreted rows use the standard library's json, as
before). "match" is the matching stage alone, where the backends differ.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.runtime.facts import build_facts, clock_fact  # noqa: E402
from tests import generate  # noqa: E402


def pin_one_core() -> str:
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        return f"pinned to CPU {min(os.sched_getaffinity(0))}"
    except (AttributeError, OSError):
        return "not pinned"


def snapshots(n: int, seed: int) -> list[tuple[engine.Snapshot, int]]:
    rng = random.Random(seed)
    out = []
    i = 0
    while len(out) < n:
        snap, at = generate.snapshot(rng, i)
        i += 1
        if 30 <= len(build_facts(snap, at)) <= 60:
            out.append((snap, at))
    return out


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": statistics.median(s) * 1e3, "p99_ms": s[int(len(s) * 0.99) - 1] * 1e3,
            "max_ms": s[-1] * 1e3, "per_second": len(s) / sum(s)}


PATHS = ("compiled", "interpreted")
BACKENDS = ("durable", "reference")
STAGES = ("facts", "match", "decisions", "result", "json")


def time_evaluate(kb: engine.KnowledgeBase, data: list[tuple[engine.Snapshot, int]], backend: str,
                  path: str = "compiled", stages: dict[str, float] | None = None) -> list[float]:
    """Seconds per whole call; ``stages`` gets the seconds of each stage added, and of the JSON text after it."""
    out = []
    for snap, at in data:
        t0 = time.perf_counter()
        result = kb.evaluate(snap, at, backend=backend, _path=path, _stages=stages)  # type: ignore[arg-type]
        out.append(time.perf_counter() - t0)
        if stages is not None:
            t0 = time.perf_counter()
            result.to_json_text() if path == "compiled" else result._to_json_text_json()
            stages["json"] = stages.get("json", 0.0) + time.perf_counter() - t0
    return out


def match_once(backend: Any, facts: list[Any], queries: list[str]) -> None:
    """The match stage of one evaluation: a fresh session, the facts added, every query's tuples read, the
    session closed (also timed by benchmarks/match_bench.py and benchmarks/peers/peers_bench.py)."""
    session = backend.open()
    try:
        session.add(facts)
        for q in queries:
            session.tuples(q)
    finally:
        session.close()


def time_match(kb: engine.KnowledgeBase, data: list[tuple[engine.Snapshot, int]], backend: str) -> list[float]:
    be = kb.backend(backend)  # type: ignore[arg-type]
    queries = list(kb.compiled.queries)
    out = []
    for snap, at in data:
        facts = [*build_facts(snap, at), clock_fact(at)]
        t0 = time.perf_counter()
        match_once(be, facts, queries)
        out.append(time.perf_counter() - t0)
    return out


def cold_start(case: str, rules: str, runs: int) -> list[float]:
    cmd = [sys.executable, "-m", "engine.cli", "evaluate", case, "--rules", rules, "--format", "json"]
    cpu = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT,
                       preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", default=str(ROOT / "rules"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    pinned = pin_one_core()
    data = snapshots(args.snapshots, args.seed)
    facts = [len(build_facts(s, at)) for s, at in data]

    loads = []
    for _ in range(20):
        t0 = time.perf_counter()
        kb = engine.load_knowledge_base(args.rules)
        loads.append(time.perf_counter() - t0)
        kb.close()
    kb = engine.load_knowledge_base(args.rules)
    for backend in BACKENDS:  # warm up
        for path in PATHS:
            time_evaluate(kb, data[:200], backend, path)

    runs = [(b, p) for b in BACKENDS for p in PATHS]
    evaluate: dict[tuple[str, str], list[float]] = {r: [] for r in runs}
    stages: dict[tuple[str, str], dict[str, float]] = {r: {} for r in runs}
    match: dict[str, list[float]] = {b: [] for b in BACKENDS}
    gc_before = gc.get_stats()
    for n in range(args.rounds):
        for backend, path in (runs if n % 2 == 0 else runs[::-1]):
            evaluate[(backend, path)] += time_evaluate(kb, data, backend, path, stages[(backend, path)])
        for backend in (BACKENDS if n % 2 == 0 else BACKENDS[::-1]):
            match[backend] += time_match(kb, data, backend)
    full_collections = gc.get_stats()[2]["collections"] - gc_before[2]["collections"]
    cli = cold_start("cases/wu-2025-ruxolitinib.yaml", os.path.relpath(args.rules, ROOT), 10)

    calls = len(data) * args.rounds
    ev = {f"{b}/{p}": summary(v) for (b, p), v in evaluate.items()}
    figures: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores_available": os.cpu_count(), "affinity": pinned, "loadavg": _loadavg()},
        "knowledge_base": {"rules": len(kb.rule_ids), "queries": len(kb.compiled.queries),
                           "load_compile_ms_median": statistics.median(loads) * 1e3},
        "snapshots": {"count": len(data), "rounds": args.rounds, "facts_median": statistics.median(facts),
                      "facts_min": min(facts), "facts_max": max(facts)},
        "evaluate": ev,
        "stages_ms_mean": {f"{b}/{p}": {k: stages[(b, p)].get(k, 0.0) / calls * 1e3 for k in STAGES}
                           for b, p in runs},
        "match": {b: summary(v) for b, v in match.items()},
        "full_gc_collections": full_collections,
        "cli_cold_start_s": {"median": statistics.median(cli), "max": max(cli)},
    }
    figures["ratio_interpreted_over_compiled"] = {
        b: {"median": ev[f"{b}/interpreted"]["median_ms"] / ev[f"{b}/compiled"]["median_ms"],
            "p99": ev[f"{b}/interpreted"]["p99_ms"] / ev[f"{b}/compiled"]["p99_ms"]} for b in BACKENDS}
    figures["ratio_reference_over_durable"] = {
        **{f"evaluate_{p}_median": ev[f"reference/{p}"]["median_ms"] / ev[f"durable/{p}"]["median_ms"]
           for p in PATHS},
        "match_median": figures["match"]["reference"]["median_ms"] / figures["match"]["durable"]["median_ms"],
    }
    print(f"mascds benchmark - Python {figures['machine']['python']}, {pinned}, load average {_loadavg()}")
    print(f"knowledge base: {len(kb.rule_ids)} rules, {len(kb.compiled.queries)} queries, load+compile "
          f"{figures['knowledge_base']['load_compile_ms_median']:.1f} ms (median of 20)")
    print(f"snapshots: {len(data)} x {args.rounds} rounds, {min(facts)}-{max(facts)} facts "
          f"(median {statistics.median(facts):g})\n")
    print("| stage | backend | path | median | p99 | p99/median | max | snapshots/s |")
    print("|---|---|---|---|---|---|---|---|")
    for backend, path in runs:
        f = ev[f"{backend}/{path}"]
        print(f"| evaluate | {backend} | {path} | {f['median_ms']:.3f} ms | {f['p99_ms']:.3f} ms | "
              f"{f['p99_ms'] / f['median_ms']:.2f} | {f['max_ms']:.2f} ms | {f['per_second']:,.0f} |")
    for backend in BACKENDS:
        f = figures["match"][backend]
        print(f"| match | {backend} | - | {f['median_ms']:.3f} ms | {f['p99_ms']:.3f} ms | "
              f"{f['p99_ms'] / f['median_ms']:.2f} | {f['max_ms']:.2f} ms | {f['per_second']:,.0f} |")
    print("\nstages of the call, mean ms per call (json: Result.to_json_text, after the call)\n")
    print("| backend | path | " + " | ".join(STAGES) + " |")
    print("|---|---|" + "---|" * len(STAGES))
    for backend, path in runs:
        row = figures["stages_ms_mean"][f"{backend}/{path}"]
        print(f"| {backend} | {path} | " + " | ".join(f"{row[k]:.3f}" for k in STAGES) + " |")
    print()
    for backend in BACKENDS:
        r = figures["ratio_interpreted_over_compiled"][backend]
        print(f"interpreted / compiled, {backend}: median {r['median']:.2f}x, p99 {r['p99']:.2f}x")
    r = figures["ratio_reference_over_durable"]
    print(f"reference / durable (median): evaluate compiled {r['evaluate_compiled_median']:.2f}x, interpreted "
          f"{r['evaluate_interpreted_median']:.2f}x, match {r['match_median']:.2f}x")
    print(f"full garbage collections during the timed rounds: {full_collections}")
    print(f"CLI cold start, `mascds evaluate cases/wu-2025-ruxolitinib.yaml`: median "
          f"{figures['cli_cold_start_s']['median']:.2f} s, max {figures['cli_cold_start_s']['max']:.2f} s (10 runs)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark: per-snapshot latency and throughput of both backends, knowledge-base load, CLI cold start.

    python benchmarks/bench.py [--snapshots 5000] [--rules rules] [--json out.json]

Snapshots are generated (seeded) and kept only when they hold 30-60 facts, like a real inpatient record in the
window the rules look at. Both backends evaluate the same snapshots in the same run, pinned to one core, in
alternating rounds so that drift of the machine affects both alike. "evaluate" is the whole public call (facts,
matching, three-valued decisions, result with citations and matched values); "match" is the matching stage
alone, where the backends differ.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.facts import build_facts, clock_fact  # noqa: E402
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


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_ms": statistics.median(s) * 1e3, "p99_ms": s[int(len(s) * 0.99) - 1] * 1e3,
            "max_ms": s[-1] * 1e3, "per_second": len(s) / sum(s)}


def time_evaluate(kb: engine.KnowledgeBase, data: list[tuple[engine.Snapshot, int]], backend: str) -> list[float]:
    out = []
    for snap, at in data:
        t0 = time.perf_counter()
        kb.evaluate(snap, at, backend=backend)  # type: ignore[arg-type]
        out.append(time.perf_counter() - t0)
    return out


def time_match(kb: engine.KnowledgeBase, data: list[tuple[engine.Snapshot, int]], backend: str) -> list[float]:
    be = kb.backend(backend)  # type: ignore[arg-type]
    queries = list(kb.compiled.queries)
    out = []
    for snap, at in data:
        facts = [*build_facts(snap, at), clock_fact(at)]
        t0 = time.perf_counter()
        session = be.open()
        try:
            session.add(facts)
            for q in queries:
                session.tuples(q)
        finally:
            session.close()
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
    for backend in ("durable", "reference"):  # warm up
        time_evaluate(kb, data[:200], backend)

    evaluate: dict[str, list[float]] = {"durable": [], "reference": []}
    match: dict[str, list[float]] = {"durable": [], "reference": []}
    for _ in range(args.rounds):
        for backend in ("durable", "reference"):
            evaluate[backend] += time_evaluate(kb, data, backend)
            match[backend] += time_match(kb, data, backend)
    cli = cold_start("cases/wu-2025-ruxolitinib.yaml", os.path.relpath(args.rules, ROOT), 10)

    figures = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores_available": os.cpu_count(), "affinity": pinned},
        "knowledge_base": {"rules": len(kb.rule_ids), "queries": len(kb.compiled.queries),
                           "load_compile_ms_median": statistics.median(loads) * 1e3},
        "snapshots": {"count": len(data), "rounds": args.rounds, "facts_median": statistics.median(facts),
                      "facts_min": min(facts), "facts_max": max(facts)},
        "evaluate": {b: summary(v) for b, v in evaluate.items()},
        "match": {b: summary(v) for b, v in match.items()},
        "cli_cold_start_s": {"median": statistics.median(cli), "max": max(cli)},
    }
    figures["ratio_reference_over_durable"] = {
        "evaluate_median": figures["evaluate"]["reference"]["median_ms"] / figures["evaluate"]["durable"]["median_ms"],
        "match_median": figures["match"]["reference"]["median_ms"] / figures["match"]["durable"]["median_ms"],
    }
    print(f"mascds benchmark - Python {figures['machine']['python']}, {pinned}")
    print(f"knowledge base: {len(kb.rule_ids)} rules, {len(kb.compiled.queries)} queries, load+compile "
          f"{figures['knowledge_base']['load_compile_ms_median']:.1f} ms (median of 20)")
    print(f"snapshots: {len(data)} x {args.rounds} rounds, {min(facts)}-{max(facts)} facts "
          f"(median {statistics.median(facts):g})\n")
    print("| stage | backend | median | p99 | max | snapshots/s |")
    print("|---|---|---|---|---|---|")
    for stage in ("evaluate", "match"):
        for backend in ("durable", "reference"):
            f = figures[stage][backend]
            print(f"| {stage} | {backend} | {f['median_ms']:.3f} ms | {f['p99_ms']:.3f} ms | {f['max_ms']:.2f} ms | "
                  f"{f['per_second']:,.0f} |")
    r = figures["ratio_reference_over_durable"]
    print(f"\nreference / durable (median): evaluate {r['evaluate_median']:.2f}x, match {r['match_median']:.2f}x")
    print(f"CLI cold start, `mascds evaluate cases/wu-2025-ruxolitinib.yaml`: median "
          f"{figures['cli_cold_start_s']['median']:.2f} s, max {figures['cli_cold_start_s']['max']:.2f} s (10 runs)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

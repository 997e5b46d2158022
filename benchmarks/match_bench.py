"""Benchmark: the durable_rules match stage alone, the former implementation against the current one.

    python benchmarks/match_bench.py [--snapshots 1000] [--rounds 2]

The match stage is what the evaluation asks of the backend: open a session, assert the snapshot's facts, read
every query's tuples, close. "old" proves every fact was kept with a catch-all rule that returns every fact;
"new" checks the ids' hashes before sending and closes each batch with a sentinel fact
(engine/runtime/durable_backend.py).
Both run on the same generated snapshots as benchmarks/bench.py (tests/generate.py, 30-60 facts), pinned to one
core, in alternating rounds.

The allocator setting (tune_allocator) is process-wide and cannot be undone, so the run has two phases: first
both implementations with the allocator as the process started, then both after tune_allocator(). Page faults
and kernel CPU per evaluation are getrusage deltas over each implementation's evaluations.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from benchmarks.bench import match_once  # noqa: E402
from engine.runtime.durable_backend import DurableBackend, tune_allocator  # noqa: E402
from engine.runtime.facts import Fact, build_facts, clock_fact  # noqa: E402
from tests import generate  # noqa: E402


def fact_sets(n: int, seed: int) -> list[list[Fact]]:
    rng = random.Random(seed)
    out: list[list[Fact]] = []
    i = 0
    while len(out) < n:
        snap, at = generate.snapshot(rng, i)
        i += 1
        facts = build_facts(snap, at)
        if 30 <= len(facts) <= 60:
            out.append([*facts, clock_fact(at)])
    return out


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Tally:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.faults = 0
        self.system = 0.0
        self.user = 0.0

    def run(self, backend: DurableBackend, data: list[list[Fact]], queries: list[str]) -> None:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for facts in data:
            t0 = time.perf_counter()
            match_once(backend, facts, queries)
            self.times.append(time.perf_counter() - t0)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.faults += r1.ru_minflt - r0.ru_minflt + r1.ru_majflt - r0.ru_majflt
        self.system += r1.ru_stime - r0.ru_stime
        self.user += r1.ru_utime - r0.ru_utime

    def row(self) -> dict[str, float]:
        s = sorted(self.times)
        n = len(s)
        return {"median_ms": statistics.median(s) * 1e3, "p99_ms": s[max(int(n * 0.99) - 1, 0)] * 1e3,
                "faults": self.faults / n, "system_ms": self.system / n * 1e3, "user_ms": self.user / n * 1e3}


def phase(kb: engine.KnowledgeBase, data: list[list[Fact]], rounds: int, tune: bool) -> dict[str, dict[str, float]]:
    queries = dict(kb.compiled.queries)
    backends = {"old": DurableBackend(queries, catch_all=True, tune=tune),
                "new": DurableBackend(queries, tune=tune)}
    names = list(queries)
    tallies = {k: Tally() for k in backends}
    for be in backends.values():  # warm up
        Tally().run(be, data[:100], names)
    for r in range(rounds):
        for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
            tallies[k].run(backends[k], data, names)
    for be in backends.values():
        be.close()
    return {k: t.row() for k, t in tallies.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rules", default=str(ROOT / "rules"))
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    try:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        pinned = "pinned to one core"
    except (AttributeError, OSError):
        pinned = "not pinned"
    data = fact_sets(args.snapshots, args.seed)
    kb = engine.load_knowledge_base(args.rules)
    print(f"match stage, durable_rules: {len(data)} snapshots x {args.rounds} rounds, "
          f"{len(kb.compiled.queries)} queries, {pinned}; load average {loadavg()}")
    before = phase(kb, data, args.rounds, tune=False)
    tuned = tune_allocator()
    after = phase(kb, data, args.rounds, tune=True)
    print(f"allocator setting in force after tune_allocator(): {tuned}\n")
    print("| allocator | proof | median ms | p99 ms | page faults/eval | kernel CPU ms/eval | user CPU ms/eval |")
    print("|---|---|---|---|---|---|---|")
    for label, res in (("as started", before), ("tuned", after)):
        for k in ("old", "new"):
            r = res[k]
            proof = "catch-all (old)" if k == "old" else "sentinel (new)"
            print(f"| {label} | {proof} | {r['median_ms']:.3f} | {r['p99_ms']:.3f} | {r['faults']:.1f} | "
                  f"{r['system_ms']:.3f} | {r['user_ms']:.3f} |")
    print()
    for label, res in (("allocator as started", before), ("tuned allocator", after)):
        print(f"proof only ({label}), old/new median: {res['old']['median_ms'] / res['new']['median_ms']:.2f}x, "
              f"p99: {res['old']['p99_ms'] / res['new']['p99_ms']:.2f}x")
    print(f"allocator only (old proof), as started/tuned median: "
          f"{before['old']['median_ms'] / after['old']['median_ms']:.2f}x")
    print(f"both (old as started / new tuned), median: {before['old']['median_ms'] / after['new']['median_ms']:.2f}x, "
          f"p99: {before['old']['p99_ms'] / after['new']['p99_ms']:.2f}x")
    print(f"load average at the end {loadavg()}")


if __name__ == "__main__":
    main()

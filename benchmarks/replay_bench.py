"""Benchmark: replaying a timeline in one incremental session against evaluating each event from scratch.

    python benchmarks/replay_bench.py [--days 15 30 60 120] [--rounds 3] [--json out.json]

The timelines are tests/generate.py's synthetic admissions (labs daily, temperatures twice a day, three pulse
courses, ciclosporin then ruxolitinib twice a day): 60 days give 191 events. Both ways run in the same process,
pinned to one core, in alternating rounds; each figure is the median over the rounds. The results of the two
ways are compared for equality at every event before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from benchmarks.bench import pin_one_core  # noqa: E402
from engine.outputs.timeline import replay  # noqa: E402
from tests import generate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, nargs="+", default=[15, 30, 60, 120])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rules", default=str(ROOT / "rules"))
    ap.add_argument("--backend", default="durable", choices=("durable", "reference"))
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    print(pin_one_core(), file=sys.stderr)
    kb = engine.load_knowledge_base(args.rules)
    rows = []
    for days in args.days:
        snap = engine.snapshot_from_dict(generate.long_timeline(days))
        n = len(snap.event_times())
        a, b = replay(kb, snap, backend=args.backend), replay(kb, snap, backend=args.backend, incremental=False)
        if any(x.to_json() != y.to_json() for x, y in zip(a.results, b.results, strict=True)):
            sys.exit(f"{days} days: the incremental replay differs from evaluation from scratch")
        timings: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.rounds):
            for incremental in (True, False):
                t0 = time.perf_counter()
                replay(kb, snap, backend=args.backend, incremental=incremental)
                timings[incremental].append(time.perf_counter() - t0)
        inc, scratch = statistics.median(timings[True]), statistics.median(timings[False])
        facts = len(engine.runtime.facts.build_facts(snap, snap.event_times()[-1]))
        rows.append({"days": days, "events": n, "facts_at_end": facts, "incremental_s": round(inc, 3),
                     "scratch_s": round(scratch, 3), "incremental_ms_per_event": round(1000 * inc / n, 2),
                     "scratch_ms_per_event": round(1000 * scratch / n, 2), "speed-up": round(scratch / inc, 2)})
    header = f"{'days':>5} {'events':>7} {'facts':>6} {'incremental':>12} {'from scratch':>13} {'per event':>20} " \
             f"{'speed-up':>9}"
    print(header)
    for r in rows:
        print(f"{r['days']:>5} {r['events']:>7} {r['facts_at_end']:>6} {r['incremental_s']:>11.3f}s "
              f"{r['scratch_s']:>12.3f}s {r['incremental_ms_per_event']:>8.2f} vs {r['scratch_ms_per_event']:>6.2f} ms "
              f"{r['speed-up']:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": args.backend, "rounds": args.rounds, "rows": rows},
                                              indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

"""Benchmark: mascds against zen-engine, durable_rules used directly, hand-written Python and cql-execution, on one
decision - the 2016 EULAR/ACR/PRINTO MAS classification - with the same inputs.

    python benchmarks/peers/peers_bench.py [--inputs 1000] [--rounds 4] [--bundles 60] [--synthea 93] [--json F]

Set-up: `pip install -e '.[peers]'` (zen-engine) and `npm ci` in benchmarks/peers (cql-execution, cql-exec-fhir,
@cqframework/cql); see the README beside this file. Without zen-engine or node the rows they need are left out
and said so.

One run, pinned to one core (the node process to the same core), in alternating rounds so that the machine's drift
affects every implementation alike. Before any timing, a correctness gate: every implementation's answer (status
and the missing values) must equal mascds's on every input and Bundle, else the benchmark prints the disagreement
and no figures (exit code 1).

Per decision (seeded generated patients, a spread of met / not met / undecided / not applicable):
  mascds evaluate   KnowledgeBase.evaluate on the 2016-only knowledge base (durable backend): facts, matching,
                    three-valued decisions, the result with citations, matched values, caveats.
  mascds match      its matching stage alone (the Rete session: add the facts, read every query).
  hand-written      plain Python from the Snapshot: window, latest / highest value, the decision (the floor).
  durable direct    the same values as facts in a minimal durable_rules ruleset (C engine), combined in Python.
  zen-engine        the JDM graph evaluated on the values the hand-written code reads (given, not extracted).
Per patient from FHIR Bundles (CPU time): cql-execution (patient source loaded with the Bundle, the CQL library
run, results) and mascds (engine.snapshot_from_bundle + evaluate), with the 2016-only and with the full
knowledge base; the Bundles are parsed JSON for both (file reading and parsing not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path[:0] = [str(ROOT), str(HERE)]

import mas2016 as m  # noqa: E402

import engine  # noqa: E402
from benchmarks.bench import match_once  # noqa: E402
from engine.runtime.facts import build_facts, clock_fact  # noqa: E402

Inputs = Sequence[tuple[engine.Snapshot, int]]


def pin_one_core() -> int | None:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


Sample = tuple[float, float]  # (wall, CPU of the whole process) seconds


def summary(samples: Sequence[Sample]) -> dict[str, float]:
    s = sorted(w for w, _ in samples)
    return {"median_us": statistics.median(s) * 1e6, "p99_us": s[max(int(len(s) * 0.99) - 1, 0)] * 1e6,
            "cpu_median_us": statistics.median(c for _, c in samples) * 1e6, "n": len(s)}


def timed(data: Inputs, fn: Callable[[engine.Snapshot, int], object]) -> list[Sample]:
    """Wall and process CPU time of each call (CPU of every thread, so an engine working in threads of its own
    is counted; on a loaded machine the wall time includes waiting for the core, the CPU time does not)."""
    out = []
    wall, cpu = time.perf_counter, time.process_time
    for snap, at in data:
        w0, c0 = wall(), cpu()
        fn(snap, at)
        out.append((wall() - w0, cpu() - c0))
    return out


def match_stage(kb: engine.KnowledgeBase) -> Callable[[engine.Snapshot, int], object]:
    be = kb.backend("durable")
    queries = list(kb.compiled.queries)

    def run(snap: engine.Snapshot, at: int) -> object:
        match_once(be, [*build_facts(snap, at), clock_fact(at)], queries)
        return None
    return run


def available(mod: str) -> str | None:
    """None when ``mod`` imports, else why not."""
    try:
        __import__(mod)
    except ImportError as exc:
        return f"{exc} (pip install -e '.[peers]')"
    return None


def node_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    if not (HERE / "node_modules" / "cql-execution").is_dir():
        return f"no node_modules in {HERE} (run `npm ci` there)"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1000, help="generated patients for the per-decision figures")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the per-decision figures")
    ap.add_argument("--bundles", type=int, default=60, help="generated FHIR Bundles (from the first patients)")
    ap.add_argument("--synthea", type=int, default=93, help=f"Synthea patient Bundles read in place from {m.SYNTHEA}")
    ap.add_argument("--bundle-rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2016)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    cpu = pin_one_core()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"]
    data = m.inputs(args.inputs, args.seed)
    kb = m.load_kb_2016()
    skipped: dict[str, str] = {}
    zen_why = available("zen")
    zen = m.Zen.load() if zen_why is None else None
    if zen_why:
        skipped["zen-engine"] = zen_why
    durable = m.DurableDirect()

    # ---- the gate, per decision
    try:
        counts = m.gate(kb, data, zen, durable)
    except m.GateError as exc:
        print(f"correctness gate FAILED, no figures: {exc}", file=sys.stderr)
        return 1
    given = [m.values(s, at) for s, at in data]

    # ---- per decision, interleaved rounds
    kinds: dict[str, Callable[[], list[Sample]]] = {
        "mascds evaluate": lambda: timed(data, kb.evaluate),
        "mascds match": lambda: timed(data, match_stage(kb)),
        "hand-written": lambda: timed(data, m.hand_written),
        "durable direct": lambda: timed(data, durable.answer),
    }
    if zen is not None:
        def zen_round() -> list[Sample]:
            return timed([(v, 0) for v in given], lambda v, _: zen.evaluate(v))
        kinds["zen-engine"] = zen_round
    for run in kinds.values():  # warm up
        run()
    per_decision: dict[str, list[Sample]] = {k: [] for k in kinds}
    for _ in range(args.rounds):
        for name, run in kinds.items():
            per_decision[name] += run()

    # ---- per patient from Bundles
    node_why = node_missing()
    bundle_figs: dict[str, Any] = {}
    if node_why:
        skipped["cql-execution"] = node_why
    else:
        bundle_figs = bundles_part(args, data, kb, cpu)
        if "gate" in bundle_figs:
            print(f"correctness gate FAILED, no figures: {bundle_figs['gate']}", file=sys.stderr)
            return 1

    figures: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "pinned_cpu": cpu, "loadavg": load},
        "inputs": {"count": len(data), "rounds": args.rounds, "seed": args.seed, "answers": counts},
        "per_decision": {k: summary(v) for k, v in per_decision.items()},
        "bundles": bundle_figs, "skipped": skipped,
    }
    pd = figures["per_decision"]
    ratios: dict[str, float] = {}
    ours = pd["mascds evaluate"]
    for name, goal in (("zen-engine", " (goal <= 1)"), ("hand-written", " (goal <= 5)"), ("durable direct", "")):
        if name in pd:
            ratios[f"mascds/{name}{goal}"] = ours["median_us"] / pd[name]["median_us"]
            ratios[f"mascds/{name}, CPU{goal}"] = ours["cpu_median_us"] / pd[name]["cpu_median_us"]
    for label, fig in bundle_figs.get("per_patient", {}).items():
        if label.startswith("cql-execution"):
            src = label.split(", ")[1]
            for kbname in ("2016-only", "full"):
                theirs = bundle_figs["per_patient"][f"mascds {kbname} KB, {src}"]["cpu_median_us"]
                ratios[f"cql/mascds {kbname} KB, {src}, CPU (goal >= 10)"] = fig["cpu_median_us"] / theirs
    figures["ratios"] = ratios
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    durable.close()
    return 0


def bundles_part(args: argparse.Namespace, data: Inputs, kb: engine.KnowledgeBase, cpu: int | None) -> dict[str, Any]:
    full = engine.load_knowledge_base(ROOT / "rules")
    with tempfile.TemporaryDirectory(prefix="mascds-peers-") as tmp:
        items: list[tuple[Path, int, str]] = []
        for snap, at in data[:args.bundles]:
            p = Path(tmp) / f"{snap.id}.json"
            p.write_text(json.dumps(engine.case_to_bundle(snap)))
            items.append((p, at, "generated"))
        for p in m.synthea_patients(args.synthea):
            items.append((p, m.bundle_time(json.loads(p.read_text())), "Synthea"))
        parsed = [json.loads(p.read_text()) for p, _, _ in items]
        runner = m.CqlRunner([(p, at) for p, at, _ in items], cpu)
        try:
            first = runner.round()  # also the warm-up
            for (p, at, _), b, out in zip(items, parsed, first, strict=True):
                want = m.from_bundle(kb, b, at)
                whole = m.from_bundle(full, b, at)
                if whole != want:
                    return {"gate": f"{p.name}: the full knowledge base answered {whole}, the 2016-only {want}"}
                if m.CqlRunner.answer(out) != want:
                    return {"gate": f"{p.name}: cql-execution answered {m.CqlRunner.answer(out)}, mascds {want}"}
            answers: dict[str, dict[str, int]] = {}
            for (_, _, src), out in zip(items, first, strict=True):
                answers.setdefault(src, {})
                answers[src][out["status"]] = answers[src].get(out["status"], 0) + 1
            samples: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.bundle_rounds):
                for (_, _, src), out in zip(items, runner.round(), strict=True):
                    samples.setdefault(f"cql-execution, {src}", []).append((out["cpu_us"] / 1e6, out["wall_us"] / 1e6))
                for name, k in (("2016-only", kb), ("full", full)):
                    for (_, at, src), b in zip(items, parsed, strict=True):
                        c0, w0 = time.process_time(), time.perf_counter()
                        k.evaluate(engine.snapshot_from_bundle(b).snapshot, at)
                        samples.setdefault(f"mascds {name} KB, {src}", []).append(
                            (time.process_time() - c0, time.perf_counter() - w0))
        finally:
            runner.close()
    per_patient = {}
    for label, xs in samples.items():
        cpus, walls = sorted(c for c, _ in xs), sorted(w for _, w in xs)
        per_patient[label] = {"cpu_median_us": statistics.median(cpus) * 1e6,
                              "cpu_p99_us": cpus[max(int(len(cpus) * 0.99) - 1, 0)] * 1e6,
                              "wall_median_us": statistics.median(walls) * 1e6, "n": len(xs)}
    sizes = {src: statistics.median(len(b.get("entry", ())) for (_, _, s), b in zip(items, parsed, strict=True)
                                    if s == src) for src in answers}
    return {"answers": answers, "entries_median": sizes, "rounds": args.bundle_rounds, "per_patient": per_patient}


def report(f: dict[str, Any]) -> None:
    mach, inp = f["machine"], f["inputs"]
    print(f"mascds vs peers on the 2016 MAS classification - Python {mach['python']}, "
          f"pinned to CPU {mach['pinned_cpu']}, load average {' '.join(mach['loadavg'])}")
    print(f"correctness gate passed: every implementation gave mascds's answer on {inp['count']} patients "
          f"({', '.join(f'{k} {v}' for k, v in sorted(inp['answers'].items()))})")
    print(f"\nper decision: {inp['count']} patients x {inp['rounds']} interleaved rounds\n")
    print("| implementation | median | p99 | CPU median |")
    print("|---|---|---|---|")
    for name, s in f["per_decision"].items():
        print(f"| {name} | {s['median_us']:.1f} µs | {s['p99_us']:.1f} µs | {s['cpu_median_us']:.1f} µs |")
    b = f["bundles"]
    if b:
        print(f"\nper patient from FHIR Bundles, CPU time, {b['rounds']} interleaved rounds; answers "
              + "; ".join(f"{src} ({b['entries_median'][src]:g} entries median): "
                          + ", ".join(f"{k} {v}" for k, v in sorted(c.items())) for src, c in b["answers"].items())
              + "\n")
        print("| implementation | Bundles | CPU median | CPU p99 | wall median |")
        print("|---|---|---|---|---|")
        for label, s in sorted(b["per_patient"].items(), key=lambda kv: kv[0].split(", ")[::-1]):
            name, src = label.split(", ")
            print(f"| {name} | {src} | {s['cpu_median_us'] / 1e3:.2f} ms | {s['cpu_p99_us'] / 1e3:.2f} ms | "
                  f"{s['wall_median_us'] / 1e3:.2f} ms |")
    print("\nratios (medians):")
    for k, v in f["ratios"].items():
        print(f"  {k}: {v:.2f}")
    for k, why in f["skipped"].items():
        print(f"skipped {k}: {why}")


if __name__ == "__main__":
    sys.exit(main())

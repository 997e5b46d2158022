"""Population runs: patients/s for 1 and 2 workers, as plain processes and on a Dask LocalCluster, in one run.

    python benchmarks/batch_bench.py [--copies 3] [--data ../shared/data/fhir/synthea-r4] [--json FILE]

The input is a FHIR Bulk Data export written from the Synthea R4 bundles, ``--copies`` times (each copy other
patients). Measured, in this order:

- in process, no workers: ``kb.evaluate`` alone on snapshots already read; reading the patient's resources and
  evaluating (``snapshot_from_resources`` + ``evaluate``); and the worker's whole task (reading the patients from
  the spill, evaluating, building rows) run in this process - the per-patient cost a worker should match;
- plain processes (``multiprocessing``, 1 and 2) running the same partition tasks over the same spill;
- ``mascds batch`` on a Dask LocalCluster of 1 and 2 workers: the whole run (split, evaluation, journal,
  Parquet, summary, chart), the cluster started beforehand; with the seconds of each stage as the client saw
  them, the straggler time, and the resident memory of each worker afterwards.

The per-patient cost is compared with reading and evaluating the same patients in this process
(``snapshot_from_resources`` + ``kb.evaluate``, the resources already parsed from the spill).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from engine.population.batch import install_kb, kb_payload  # noqa: E402
from engine.population.batch_run import run_batch  # noqa: E402
from engine.population.bulk import Options, plan_chunks, run_partition, split_chunk  # noqa: E402
from tests.bulkdata import write_export  # noqa: E402

PARTITIONS = 8


def _init(payload: bytes) -> None:
    install_kb(payload)


def _partition(args: tuple[str, str, int]) -> int:
    h, spill, p = args
    return len(run_partition(h, "export", spill, p, [], Options()))


def spill_export(export: Path, spill: Path) -> None:
    files = sorted(str(p) for p in export.glob("*.ndjson"))
    for chunk in plan_chunks(files):
        split_chunk(chunk, PARTITIONS, str(spill))


def patients_resources(spill: Path) -> list[list[dict[str, Any]]]:
    """Every patient's resources, read from the spill (the in-process baseline reads them beforehand)."""
    records: dict[str, list[dict[str, Any]]] = {}
    for f in sorted(spill.glob("p*/*.ndjson")):
        for line in f.read_bytes().splitlines():
            key, _, body = line.partition(b"\t")
            records.setdefault(key.decode(), []).append(json.loads(body))
    return list(records.values())


def rss_mib(pid: int | None = None) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1 << 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fhir" / "synthea-r4")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    bundles = sorted(args.data.glob("*.json"))
    kb = engine.load_knowledge_base(ROOT / "rules")
    payload = kb_payload(kb)
    h = install_kb(payload)
    figures: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                               "copies": args.copies, "cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for k in range(args.copies):
            write_export(bundles, t / "export", 1, suffix=f"-c{k}" if k else "")
        spill = t / "spill"
        spill_export(t / "export", spill)
        records = patients_resources(spill)
        n = len(records)
        figures["patients"] = n
        figures["export_mib"] = round(sum(p.stat().st_size for p in (t / "export").iterdir()) / (1 << 20), 1)

        # in process
        from engine.records.fhir import snapshot_from_resources

        t0 = time.perf_counter()
        snaps = [snapshot_from_resources(r, "bench").snapshot for r in records]
        read = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in snaps:
            kb.evaluate(s)
        evaluate = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows = sum(_partition((h, str(spill), p)) for p in range(PARTITIONS))
        task = time.perf_counter() - t0
        assert rows == n
        figures["in_process_ms_per_patient"] = {"evaluate": 1000 * evaluate / n, "read_and_evaluate":
                                                1000 * (read + evaluate) / n, "worker_task": 1000 * task / n}

        # plain processes
        figures["processes"] = {}
        ctx = multiprocessing.get_context("spawn")
        for workers in (1, 2):
            with ctx.Pool(workers, initializer=_init, initargs=(payload,)) as pool:
                pool.map(_partition, [(h, str(spill), 0)])  # warm: imports and the rulesets built
                t0 = time.perf_counter()
                done = sum(pool.map(_partition, [(h, str(spill), p) for p in range(PARTITIONS)], chunksize=1))
                wall = time.perf_counter() - t0
            assert done == n
            figures["processes"][workers] = {"patients_per_s": n / wall, "seconds": wall}

        # Dask
        figures["dask"] = {}
        for workers in (1, 2):
            t0 = time.perf_counter()
            with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=":0", scheduler_port=0, silence_logs=50) as cluster, \
                    Client(cluster) as client:
                start = time.perf_counter() - t0
                warm = t / f"warm-{workers}"
                warm.mkdir()
                (warm / "Patient.ndjson").write_text((t / "export" / "Patient.ndjson").read_text().splitlines()[0]
                                                     + "\n")
                run_batch(kb, [warm], t / f"out-warm-{workers}", client=client, progress=False)
                t0 = time.perf_counter()
                outcome = run_batch(kb, [t / "export"], t / f"out-{workers}", client=client, progress=False)
                wall = time.perf_counter() - t0
                memory = sorted(client.run(rss_mib).values())
            assert outcome.patients == n, outcome.patients
            figures["dask"][workers] = {"patients_per_s": n / wall, "seconds": wall, "cluster_start_s": start,
                                        "worker_rss_mib": memory, "stages_s": outcome.stages,
                                        "straggler_s": outcome.straggler}
        # the baseline again, after the runs: on a shared machine the load changes during the benchmark, and the
        # ratios use the mean of the two
        t0 = time.perf_counter()
        for r in records:
            kb.evaluate(snapshot_from_resources(r, "bench").snapshot)
        again = 1000 * (time.perf_counter() - t0) / n
        ip = figures["in_process_ms_per_patient"]
        ip["read_and_evaluate_after"] = again
        ip["read_and_evaluate_before"] = ip["read_and_evaluate"]
        ip["read_and_evaluate"] = (ip["read_and_evaluate_before"] + again) / 2
    figures["load_after"] = os.getloadavg()[0]
    show(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def show(f: dict[str, Any]) -> None:
    ip = f["in_process_ms_per_patient"]
    print(f"{f['patients']} patients ({f['copies']} copies of the Synthea bundles), export {f['export_mib']} MiB; "
          f"Python {f['python']} {f['machine']}; {f['cores']} cores, load average {f['load_before']:.1f} before, "
          f"{f['load_after']:.1f} after (other processes share the cores: scaling needs an idle machine)")
    print(f"in process: evaluate {ip['evaluate']:.2f} ms/patient; read + evaluate {ip['read_and_evaluate']:.2f} "
          f"ms (the baseline: {ip['read_and_evaluate_before']:.2f} before the runs, "
          f"{ip['read_and_evaluate_after']:.2f} after); the worker's task in process {ip['worker_task']:.2f} ms")
    for kind in ("processes", "dask"):
        one, two = f[kind][1], f[kind][2]
        per = 1000 / one["patients_per_s"]
        extra = ""
        if kind == "dask":
            extra = (f"; cluster start {one['cluster_start_s']:.1f} / {two['cluster_start_s']:.1f} s; worker RSS "
                     f"{statistics.mean(one['worker_rss_mib']):.0f} / "
                     f"{', '.join(f'{m:.0f}' for m in two['worker_rss_mib'])} MiB")
        if kind == "dask":
            for w in (1, 2):
                st = f[kind][w]
                print(f"dask, {w} worker{'s' if w > 1 else ''}, client-side stages (s): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in st["stages_s"].items())
                      + f"; straggler {st['straggler_s']:.2f} s (last worker's end - first worker's end)")
            # steady state: the evaluation stage alone (the partition tasks, once the split is done), without the
            # run's fixed costs (split pass, Parquet merge, summary, chart) - the rate a much larger run tends to
            # only as far as the split pass is a small part of it; the whole-run figures below include everything
            steady = {w: f["patients"] / f[kind][w]["stages_s"]["evaluate"] for w in (1, 2)}
            print(f"dask, steady state (evaluation stage only): 1 worker {steady[1]:.1f} patients/s "
                  f"({1000 / steady[1]:.2f} ms/patient, {1000 / steady[1] / ip['read_and_evaluate']:.2f}x read + "
                  f"evaluate in process), 2 workers {steady[2]:.1f} patients/s, scaling {steady[2] / steady[1]:.2f}x")
        label = "dask, whole run" if kind == "dask" else kind
        print(f"{label}: 1 worker {one['patients_per_s']:.1f} patients/s ({per:.2f} ms/patient, "
              f"{per / ip['read_and_evaluate']:.2f}x read + evaluate in process), 2 workers "
              f"{two['patients_per_s']:.1f} patients/s, scaling {two['patients_per_s'] / one['patients_per_s']:.2f}x"
              + extra)


if __name__ == "__main__":
    main()

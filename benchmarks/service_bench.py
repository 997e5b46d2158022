"""Benchmark: latency of the CDS Hooks service (``mascds serve``) for patient-view at 1, 10 and 50 concurrent clients.

    python benchmarks/service_bench.py [--requests 400] [--concurrency 1,10,50] [--size small,typical]
                                       [--workers 1,2] [--in-process] [--json out.json]
    python benchmarks/service_bench.py --client wrk [--seconds 10]   # load from wrk (C) instead of Python
    python benchmarks/service_bench.py --profile        # where one call's time goes, in-process (cProfile)
    python benchmarks/service_bench.py --stages         # the same, as medians per stage, without a profiler
    python benchmarks/service_bench.py --handoff        # the evaluation child's messages: pickled objects vs wire

One run prints, for each record size and worker count, the latency table (median, p90, p99, requests per
second, server CPU per call) and the stage budget: the server's ``Server-Timing`` header (the ``server_timing``
setting, on for the benchmark) read from ``--budget`` calls made one at a time before the load, as medians per
stage, with ``outside`` = client latency - the server's ``total`` (HTTP parsing in uvicorn, the loopback, the
client).

A real server is started for each ``--workers`` count (``python -m engine.cli serve`` on 127.0.0.1, a free port,
authentication on: every request carries its own ES384-signed JWT). Each request is a different patient with its
own values, so nothing a cache could reuse; the JWTs and request bodies are made before the clock starts. Each
client sends its requests one after another (a closed loop: at 50 clients, 50 calls are always in flight);
latency is measured per request, from sending to the last byte of the answer, after a warm-up. The server and the
load generator share the machine's cores; the figures are for this machine only. The load generator is this
Python process (httpx), or with ``--client wrk`` the C load generator wrk (Debian package ``wrk``), which takes
far less CPU from the server: each of its connections is a client, run for ``--seconds``, with
``benchmarks/service_bench.lua`` sending each prepared request once.

Records: ``small`` is a patient with sJIA and one set of MAS laboratory values (8 resources); ``typical`` is three
days of MAS work-up in an sJIA patient on glucocorticoids with a tocilizumab allergy (about 60 resources).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.service.timing import HEADER as TIMING_HEADER  # noqa: E402
from engine.service.timing import parse_header  # noqa: E402
from tests.test_service_harness import (  # noqa: E402
    PATIENT_VIEW,
    ServiceProcess,
    allergy,
    as_prefetch,
    hook_request,
    iso,
    mas_record,
    observation,
)

BASE_URL = "https://cds.bench.invalid"
ISSUER = "https://ehr.bench.invalid"
PATH = f"/cds-services/{PATIENT_VIEW}"


def record(pid: str, size: str, i: int) -> dict[str, list[dict[str, Any]]]:
    rec = mas_record(pid, ferritin=1500 + i)
    if size == "small":
        return rec
    obs = rec["observations"]
    for day in range(3):  # three days of work-up: labs every morning, temperature every 4 hours
        h = 24 * day + 8
        for analyte, value in (("ferritin", 1800 + i + 300 * day), ("platelets", 150 - 20 * day),
                               ("ast", 80 + 20 * day), ("alt", 60 + 10 * day), ("triglycerides", 200 + 30 * day),
                               ("fibrinogen", 250 - 40 * day), ("ldh", 600 + 100 * day), ("crp", 90 - 10 * day),
                               ("esr", 40 - 5 * day), ("wbc", 4.0 - 0.5 * day), ("haemoglobin", 100 - 5 * day)):
            obs.append(observation(pid, analyte, value, h, rid=f"{analyte}-{pid}-d{day}"))
        for k in range(6):
            obs.append(observation(pid, "temperature", 38.2 + 0.2 * k, h + 4 * k, rid=f"t-{pid}-{day}-{k}"))
    now = time.time()
    rec["medication-administrations"] = [{
        "resourceType": "MedicationAdministration", "id": f"mp-{pid}-{k}", "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "6902", "display": "methylprednisolone"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": iso(now - (72 - 24 * k) * 3600),
        "dosage": {"route": {"coding": [{"system": "http://snomed.info/sct", "code": "47625008"}]},
                   "dose": {"value": 30, "unit": "mg/kg", "system": "http://unitsofmeasure.org", "code": "mg/kg"}},
    } for k in range(3)]
    rec["allergies"] = [allergy(pid, now - 200 * 86400)]
    return rec


def prepare(n: int, size: str, key: Any) -> list[tuple[bytes, dict[str, str]]]:
    """(body, headers) for n distinct patients, each with a fresh token."""
    out = []
    for i in range(n):
        pid = f"bench-{i}-{uuid.uuid4().hex[:8]}"
        body = request_body(pid, size, i)
        now = int(time.time())
        token = jwt.encode({"iss": ISSUER, "aud": f"{BASE_URL}{PATH}", "iat": now, "exp": now + 900,
                            "jti": str(uuid.uuid4())}, key, algorithm="ES384", headers={"kid": "bench"})
        out.append((body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}))
    return out


async def run_level(url: str, work: list[tuple[bytes, dict[str, str]]], clients: int) -> tuple[list[float], float]:
    queue = list(reversed(work))
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        async def worker() -> None:
            while queue:
                body, headers = queue.pop()
                t = time.perf_counter()
                r = await c.post(PATH, content=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return latencies, time.perf_counter() - started


STAGE_ORDER = ("http", "auth", "parse", "prefetch", "queue", "handoff", "fhir", "evaluate", "cards", "serialise",
               "store", "total")


async def run_budget(url: str, work: list[tuple[bytes, dict[str, str]]]) -> dict[str, float]:
    """Median milliseconds per stage (Server-Timing) over calls made one at a time, ``other`` (the call's total
    less its stages: the gaps between them) and ``outside`` (the client's latency less the total)."""
    per_stage: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=url, timeout=120) as c:
        for body, headers in work:
            t = time.perf_counter()
            r = await c.post(PATH, content=body, headers=headers)
            latency = (time.perf_counter() - t) * 1e3
            if r.status_code != 200 or TIMING_HEADER not in r.headers:
                raise RuntimeError(f"HTTP {r.status_code} without {TIMING_HEADER}: {r.text[:300]}")
            stages = parse_header(r.headers[TIMING_HEADER])
            stages["other"] = stages["total"] - sum(v for k, v in stages.items() if k != "total")
            stages["outside"] = latency - stages["total"]
            for k, v in stages.items():
                per_stage.setdefault(k, []).append(v)
    return {k: statistics.median(v) for k, v in per_stage.items()}


def run_wrk(url: str, work: list[tuple[bytes, dict[str, str]]], clients: int, seconds: float,
            workdir: Path) -> dict[str, float]:
    """The same closed loop from wrk: ``clients`` connections for ``seconds``, each request sent once."""
    requests = workdir / "wrk-requests.txt"
    with requests.open("wb") as f:
        for body, headers in work:
            f.write(headers["Authorization"].encode() + b"\t" + body + b"\n")
    threads = min(2, clients)
    env = {**os.environ, "MASCDS_BENCH_REQUESTS": str(requests), "MASCDS_BENCH_PATH": PATH,
           "MASCDS_BENCH_THREADS": str(threads)}
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s",
                          "-s", str(ROOT / "benchmarks" / "service_bench.lua"), url],
                         capture_output=True, text=True, env=env, check=False)
    m = re.search(r"MASCDS (.*)", out.stdout)
    if out.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr[-500:]}{out.stdout[-500:]}")
    got = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    if got["non2xx"] or got["errors"]:
        raise RuntimeError(f"{got['non2xx']:.0f} answers were not 200 and {got['errors']:.0f} requests failed "
                           f"out of {got['requests']:.0f} (if replayed tokens: more --requests)")
    if got["requests"] > len(work):
        raise RuntimeError(f"wrk sent {got['requests']:.0f} requests, more than the {len(work)} prepared")
    return {"requests": got["requests"], "median_ms": got["median_us"] / 1e3, "p90_ms": got["p90_us"] / 1e3,
            "p99_ms": got["p99_us"] / 1e3, "max_ms": got["max_us"] / 1e3,
            "per_second": got["requests"] / got["seconds"]}


def server_cpu(pid: int) -> float:
    """CPU seconds used so far by the server process and its workers (Linux /proc; NaN elsewhere)."""
    try:
        total, todo = 0.0, [pid]
        while todo:
            p = todo.pop()
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():  # children started by any thread (evaluation)
                todo.extend(int(c) for c in (task / "children").read_text().split())
        return total
    except (OSError, ValueError, IndexError):
        return math.nan


def stats(latencies: list[float], wall: float) -> dict[str, float]:
    s = sorted(latencies)
    q = statistics.quantiles(s, n=100, method="inclusive")
    return {"requests": len(s), "median_ms": statistics.median(s) * 1e3, "p90_ms": q[89] * 1e3,
            "p99_ms": q[98] * 1e3, "max_ms": s[-1] * 1e3, "per_second": len(s) / wall}


def read_call(body: bytes) -> tuple[Any, list[dict[str, Any]]]:
    """What the server reads from a patient-view request body: its context and the prefetched resources."""
    from engine.service.models import CDSHooksRequest, PatientViewContext
    from engine.service.prefetch import read_value

    req = CDSHooksRequest.model_validate(orjson.loads(body))
    resources: list[dict[str, Any]] = []
    for k, v in (req.prefetch or {}).items():
        value = read_value(k, v)
        if isinstance(value, list):
            resources.extend(value)
    return PatientViewContext.model_validate(req.context), resources


def request_body(pid: str, size: str, i: int) -> bytes:
    return orjson.dumps(hook_request("patient-view", pid, as_prefetch(record(pid, size, i))))


def profile(size: str, n: int) -> None:
    """Where the time of one call goes, without HTTP: the same functions the server runs, under cProfile."""
    import engine
    from engine.service.app import evaluate_call
    from engine.service.cards import KnowledgeBaseView
    from engine.service.prefetch import SERVICES, Gathered

    view = KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))
    svc = next(s for s in SERVICES if s.hook == "patient-view")
    calls = []
    for i in range(n):
        ctx, resources = read_call(request_body(f"prof-{i}", size, i))
        calls.append((ctx, Gathered(resources)))
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    for ctx, gathered in calls:
        evaluate_call(view, svc, ctx, gathered, [], time.time(), lambda r: f"{BASE_URL}/rules/{r}")
    prof.disable()
    per_call = (time.perf_counter() - started) / n * 1e3
    print(f"{n} calls of {len(calls[0][1].resources)} resources: {per_call:.1f} ms per call under cProfile")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def handoff(size: str, n: int) -> None:
    """The messages to and from the evaluation child, without the pipe: the objects pickled (a Job and the
    IssuedCard dataclasses) against the wire format the service uses (FHIR data as JSON, cards as tuples),
    written and read, in alternating rounds in this process."""
    import pickle

    import engine
    from engine.service.app import evaluate_call
    from engine.service.cards import KnowledgeBaseView
    from engine.service.feedback import IssuedCard
    from engine.service.isolate import Job, _cards_wire
    from engine.service.prefetch import SERVICES, Gathered

    view = KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))
    svc = next(s for s in SERVICES if s.hook == "patient-view")
    ctx, resources = read_call(request_body("handoff-0", size, 0))
    now = time.time()
    ev = evaluate_call(view, svc, ctx, Gathered(resources), [], now, lambda r: f"{BASE_URL}/rules/{r}")
    job, answer, stages_ms = Job("hash", svc, ctx, Gathered(resources), [], now), orjson.dumps(ev.response), {"x": 1.0}

    def objects() -> int:
        sent = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(sent)
        back = pickle.dumps(("ok", answer, ev.cards), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(back)
        return len(sent) + len(back)

    def wire() -> int:
        sent = job.wire()
        Job.unwire(sent)
        back = pickle.dumps(("ok", answer, _cards_wire(ev.cards), stages_ms), protocol=pickle.HIGHEST_PROTOCOL)
        [IssuedCard(*c) for c in pickle.loads(back)[2]]
        return len(sent) + len(back)

    times: dict[str, list[float]] = {"objects": [], "wire": []}
    sizes: dict[str, int] = {}
    for _ in range(n):
        for name, f in (("objects", objects), ("wire", wire)):
            t = time.perf_counter()
            sizes[name] = f()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"hand-off, {size} records ({len(resources)} resources, {len(ev.cards)} cards), {n} rounds, load average "
          f"{_loadavg()}: pickled objects {med['objects']:.3f} ms ({sizes['objects']} bytes), wire "
          f"{med['wire']:.3f} ms ({sizes['wire']} bytes), ratio {med['objects'] / med['wire']:.2f}")


def stages(size: str, n: int, warmup: int = 30) -> None:
    """Median CPU time per stage of one call, in-process and unprofiled: reading the request, FHIR validation and
    mapping to a snapshot, evaluation, and the whole call (``evaluate_call``: FHIR + evaluation + cards)."""
    import engine
    from engine.records.fhir import snapshot_from_resources
    from engine.service.app import evaluate_call
    from engine.service.cards import KnowledgeBaseView
    from engine.service.prefetch import SERVICES, Gathered

    view = KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))
    svc = next(s for s in SERVICES if s.hook == "patient-view")
    times: dict[str, list[float]] = {"request": [], "fhir": [], "evaluation": [], "call": []}
    resources: list[dict[str, Any]] = []
    for i in range(warmup + n):
        pid = f"stages-{i}"
        body = request_body(pid, size, i)
        t0 = time.perf_counter()
        ctx, resources = read_call(body)
        t1 = time.perf_counter()
        snapshot = snapshot_from_resources(resources, source="bench", patient_id=pid, not_fetched=[]).snapshot
        t2 = time.perf_counter()
        view.kb.evaluate(snapshot, int(time.time()))
        t3 = time.perf_counter()
        evaluate_call(view, svc, ctx, Gathered(resources), [], time.time(), lambda r: f"{BASE_URL}/rules/{r}")
        t4 = time.perf_counter()
        if i >= warmup:
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key].append(dt)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"{size} records ({len(resources)} resources), {n} calls, median ms: request {med['request']:.2f}, "
          f"FHIR validation and mapping {med['fhir']:.2f}, evaluation {med['evaluation']:.2f}; whole call "
          f"{med['call']:.2f} (of which cards and response about {med['call'] - med['fhir'] - med['evaluation']:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=None,
                    help="requests prepared per concurrency level (default 400; with --client wrk 5000, of which "
                         "wrk sends what it can in --seconds)")
    ap.add_argument("--warmup", type=int, default=40)
    ap.add_argument("--concurrency", default="1,10,50")
    ap.add_argument("--size", default="small,typical", help="record sizes, small and/or typical")
    ap.add_argument("--budget", type=int, default=60, help="calls one at a time for the stage budget")
    ap.add_argument("--client", choices=("httpx", "wrk"), default="httpx", help="the load generator")
    ap.add_argument("--seconds", type=float, default=10, help="with --client wrk: the length of each run")
    ap.add_argument("--workers", default="1,2", help="service processes (workers setting)")
    ap.add_argument("--shared-replay", action="store_true",
                    help="record used token ids in a SQLite file (auth.replay_db) instead of in memory")
    ap.add_argument("--in-process", action="store_true",
                    help="evaluate in the service process (isolate_evaluation: false) instead of a child process")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--profile", action="store_true", help="profile one call in-process instead")
    ap.add_argument("--stages", action="store_true", help="median time per stage of one call, in-process")
    ap.add_argument("--handoff", action="store_true", help="the child's messages: pickled objects vs wire format")
    args = ap.parse_args()
    sizes = args.size.split(",")
    if any(s not in ("small", "typical") for s in sizes):
        ap.error("--size: small and/or typical")
    if args.profile:
        for size in sizes:
            profile(size, 200)
        return 0
    if args.stages:
        for size in sizes:
            stages(size, args.requests or 100)
        return 0
    if args.handoff:
        for size in sizes:
            handoff(size, args.requests or 300)
        return 0
    if args.requests is None:
        args.requests = 5000 if args.client == "wrk" else 400
    if args.client == "wrk" and shutil.which("wrk") is None:
        print("--client wrk needs wrk (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    levels = [int(x) for x in args.concurrency.split(",")]
    worker_counts = [int(x) for x in args.workers.split(",")]
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.get_algorithm_by_name("ES384").to_jwk(key.public_key())) | {"kid": "bench", "alg": "ES384"}
    workdir = Path(tempfile.mkdtemp(prefix="mascds-bench-"))
    (workdir / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    results: dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                               "python": platform.python_version(), "client": args.client,
                               "loadavg_before": _loadavg(), "runs": []}
    try:
        for size in sizes:
            for workers in worker_counts:
                print(f"{size} records, {workers} worker(s): preparing {args.warmup + args.requests} x {len(levels)} "
                      "requests ...", file=sys.stderr)
                results["runs"].append(measure(args, size, workers, levels, key, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["loadavg_after"] = _loadavg()
    report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def measure(args: argparse.Namespace, size: str, workers: int, levels: list[int], key: Any,
            workdir: Path) -> dict[str, Any]:
    """One server (``workers`` processes): the stage budget, then each concurrency level."""
    tag = f"{size}-{workers}"
    config = {"base_url": BASE_URL, "knowledge_base": str(ROOT / "rules"), "workers": workers,
              "feedback_db": str(workdir / f"f{tag}.db"), "log_level": "warning", "server_timing": True,
              "reload": {"watch": False}, "isolate_evaluation": not args.in_process,
              "auth": {"issuers": [{"iss": ISSUER, "jwks_file": str(workdir / "jwks.json")}],
                       "max_token_lifetime_seconds": 900,
                       **({"replay_db": str(workdir / f"replay{tag}.sqlite3")} if args.shared_replay else {})}}
    work = {c: prepare(args.warmup + args.requests, size, key) for c in levels}
    budget_work = prepare(args.warmup + args.budget, size, key)
    run: dict[str, Any] = {"size": size, "workers": workers, "levels": {},
                           "mean_request_bytes": round(statistics.mean(len(b) for b, _ in work[levels[0]]))}
    server = ServiceProcess(workdir / f"server{tag}", config)
    try:
        asyncio.run(run_level(server.url, budget_work[:args.warmup], max(levels)))  # every worker warmed up
        run["budget"] = asyncio.run(run_budget(server.url, budget_work[args.warmup:]))
        for clients in levels:
            batch = work[clients]
            asyncio.run(run_level(server.url, batch[:args.warmup], clients))
            cpu = server_cpu(server.proc.pid)
            if args.client == "wrk":
                run["levels"][str(clients)] = run_wrk(server.url, batch[args.warmup:], clients, args.seconds,
                                                      workdir)
            else:
                latencies, wall = asyncio.run(run_level(server.url, batch[args.warmup:], clients))
                run["levels"][str(clients)] = stats(latencies, wall)
            level = run["levels"][str(clients)]
            level["server_cpu_ms"] = (server_cpu(server.proc.pid) - cpu) / level["requests"] * 1e3
    finally:
        server.stop()
    return run


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    # one worker keeps used token ids in memory; several share a SQLite file (auth.replay_db or its default)
    replay = "shared SQLite" if args.shared_replay else "in memory with 1 worker, shared SQLite with more"
    where = "in the service process" if args.in_process else "in a child process"
    print(f"patient-view, {results['machine']}, Python {results['python']}, JWT auth on (ES384), used token ids "
          f"{replay}, evaluation {where}, load from {args.client}; load average {results['loadavg_before']} before, "
          f"{results['loadavg_after']} after")
    print(f"{'records':>8} {'workers':>8} {'clients':>8} {'requests':>9} {'median ms':>10} {'p90 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'req/s':>7} {'server CPU ms/call':>19}")
    for run in results["runs"]:
        for clients, st in run["levels"].items():
            print(f"{run['size']:>8} {run['workers']:>8} {clients:>8} {st['requests']:>9} {st['median_ms']:>10.1f} "
                  f"{st['p90_ms']:>8.1f} {st['p99_ms']:>8.1f} {st['max_ms']:>8.1f} {st['per_second']:>7.0f} "
                  f"{st['server_cpu_ms']:>19.1f}")
    print(f"\nstage budget: median ms per stage (Server-Timing), {args.budget} calls one at a time; other = total - "
          "the stages (per call); outside = client latency - total (uvicorn's HTTP, the loopback, the httpx client)")
    names = [s for s in STAGE_ORDER if any(s in r["budget"] for r in results["runs"])]
    print(f"{'records':>8} {'workers':>8} " + " ".join(f"{n:>9}" for n in [*names, "other", "outside"]))
    for run in results["runs"]:
        b = run["budget"]
        cells = [b.get(n, math.nan) for n in [*names, "other", "outside"]]
        print(f"{run['size']:>8} {run['workers']:>8} " + " ".join(f"{v:>9.2f}" for v in cells))


if __name__ == "__main__":
    sys.exit(main())

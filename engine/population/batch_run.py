"""Population runs, the client side: schedule the workers' tasks on Dask, write their rows, resume, summarise.

The output folder holds ``results.ndjson`` (the journal: one row per patient and evaluation time, appended as
tasks finish, so an interrupted run keeps what was done), ``run.json`` (what the run was made with, checked on
``--resume``), and at the end ``results.parquet``, ``summary.json``, ``summary.txt`` and ``summary.png``.
Dask runs embedded (a ``LocalCluster`` of processes) unless a scheduler address is given. docs/population.md
describes the whole thing.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..runtime.kb import KnowledgeBase
from .batch import (
    INTERNAL_ERROR,
    NOT_EVALUATED,
    BatchError,
    FileTask,
    TaskRows,
    collect_inputs,
    install_kb,
    kb_payload,
    parquet_schema,
    rule_kinds,
)
from .bulk import Options, SplitStats, plan_chunks

RUN_FORMAT = "mascds.batch-run/1"
SUMMARY_FORMAT = "mascds.batch-summary/1"
JOURNAL = "results.ndjson"
SPILL = ".spill"
PARTS = ".parts"
FILES_PER_TASK = 16
BULK_BYTES_PER_TASK = 8 << 20  # of the export, all types: roughly 50 Synthea patients, 0.3 s of a worker
EXTRA_HINT = "population runs need the batch extra: pip install 'mascds[batch]' (Dask distributed and pyarrow)"


def require_extras() -> None:
    """Fail with the extra to install, not a traceback, when Dask or pyarrow is missing."""
    missing = []
    for module in ("distributed", "pyarrow"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise BatchError(f"{', '.join(missing)} not installed; {EXTRA_HINT}")


# --- the worker plugin ----------------------------------------------------------------------------------------


def _plugin(payload: bytes, content_hash: str) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class KnowledgeBasePlugin(WorkerPlugin):
        """Builds the knowledge base once on each worker, including workers that join later."""

        def __init__(self) -> None:
            self.name = f"mascds-kb-{content_hash[7:23]}"
            self.payload = payload

        def setup(self, worker: Any) -> None:
            install_kb(self.payload)

    return KnowledgeBasePlugin()


# --- the output folder ----------------------------------------------------------------------------------------


def _run_record(kb: KnowledgeBase, inputs: Sequence[str], options: Options) -> dict[str, Any]:
    return {"format": RUN_FORMAT, "inputs": [str(p) for p in inputs], "at": options.at,
            "every_event": options.every_event, "backend": options.backend, "lang": options.lang,
            "kb_name": kb.name, "kb_version": kb.version, "kb_hash": kb.content_hash}


def _prepare_out(out: Path, record: dict[str, Any], resume: bool) -> set[str]:
    """Check the output folder and return the keys of patients already written (``resume``)."""
    journal, run_file = out / JOURNAL, out / "run.json"
    if not resume:
        if journal.exists() or run_file.exists():
            raise UsageError(f"{out} holds the results of an earlier run; continue it with --resume, or choose "
                             "another --out folder")
        out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        journal.touch()
        return set()
    if not run_file.exists():
        raise UsageError(f"--resume: {out} holds no earlier run (no run.json); run without --resume")
    try:
        before = json.loads(run_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--resume: {run_file} cannot be read ({exc}); start again in another folder") from None
    changed = [k for k in ("inputs", "at", "every_event", "backend", "lang", "kb_hash") if before.get(k) != record[k]]
    if changed:
        raise UsageError(f"--resume: the earlier run in {out} was made with other {', '.join(changed)} "
                         f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); resume with the same inputs "
                         "and options, or choose another --out folder")
    return _recover_journal(journal)


def _recover_journal(journal: Path) -> set[str]:
    """Keys of the patients whose every row was written; rows of a patient cut off by an interruption (and a
    half-written last line) are dropped so that the patient is evaluated again."""
    if not journal.exists():
        journal.touch()
        return set()
    rows: dict[str, list[bytes]] = {}
    expected: dict[str, int] = {}
    dropped = False
    with open(journal, "rb") as f:
        for line in f:
            try:
                row = json.loads(line)
                key, n = row["key"], int(row["evaluations"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                dropped = True
                continue
            rows.setdefault(key, []).append(line if line.endswith(b"\n") else line + b"\n")
            expected[key] = n
    complete = {k for k, lines in rows.items() if len(lines) == expected[k]}
    if dropped or len(complete) != len(rows):
        tmp = journal.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for k, lines in rows.items():
                if k in complete:
                    f.writelines(lines)
        tmp.replace(journal)
    return complete


def journal_rows(out: Path) -> Iterator[dict[str, Any]]:
    with open(out / JOURNAL, "rb") as f:
        for line in f:
            yield json.loads(line)


# --- progress -------------------------------------------------------------------------------------------------


class Progress:
    """A rich progress bar with rate and ETA on a terminal; plain lines (at most every few seconds) otherwise."""

    def __init__(self, total: int, done: int, enabled: bool = True, stream: Any = None) -> None:
        self.total, self.done, self.start_done = total, done, done
        self.stream = stream or sys.stderr
        self.started = self.last = time.monotonic()
        self.bar: Any = None
        self.enabled = enabled
        if enabled and self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("batch"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                console=Console(file=self.stream), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("patients", total=total, completed=done, rate="")

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        rate = self.rate()
        left = max(0, self.total - self.done)
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and left else ""
        pct = f" ({100 * self.done / self.total:.0f} %)" if self.total else ""
        return f"batch: {self.done}/{self.total} patients{pct}, {rate:.1f} patients/s{eta}"

    def advance(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, total=max(self.total, self.done),
                            rate=f"{self.rate():.1f} patients/s")
        elif time.monotonic() - self.last >= 2.0 or self.done >= self.total:
            self.last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --- the run --------------------------------------------------------------------------------------------------


@dataclass
class BatchOutcome:
    """What a run did: patients evaluated now and before, whether it was interrupted, and the summary."""

    out: Path
    patients: int = 0
    resumed: int = 0
    interrupted: bool = False
    summary: dict[str, Any] = field(default_factory=dict)
    bulk: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    straggler: float = 0.0

    @property
    def exit_status(self) -> str:
        """"interrupted", "internal_errors", "rule_errors", "input_errors" or "ok" - the exit code's reason."""
        if self.interrupted:
            return "interrupted"
        if self.summary.get("patients_with_internal_errors"):
            return "internal_errors"
        if self.summary.get("patients_with_rule_errors"):
            return "rule_errors"
        if self.summary.get("patients_with_input_errors") or self.bulk.get("unreadable") or self.bulk.get(
                "unassigned"):
            return "input_errors"
        return "ok"


def _client(workers: int | None, scheduler: str | None) -> tuple[Any, Any]:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise BatchError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
    n = workers or os.cpu_count() or 1
    # one thread per worker: the GIL and the engine's per-ruleset lock make threads useless for evaluation
    # Worker processes started while SIGINT is ignored keep ignoring it: Ctrl-C (sent to the whole process group)
    # then reaches only this process, which cancels the tasks and closes the workers itself.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
            scheduler_port=0, silence_logs=logging.CRITICAL)
    except RuntimeError as exc:
        raise BatchError(f"the local Dask workers could not start ({exc}); a script that starts a run must guard "
                         "it with `if __name__ == \"__main__\":`") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return Client(cluster), cluster  # type: ignore[no-untyped-call]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _file_groups(tasks: Sequence[FileTask], partitions: int) -> list[list[FileTask]]:
    size = max(1, -(-len(tasks) // max(1, partitions)))
    return [list(tasks[i:i + size]) for i in range(0, len(tasks), size)]


def run_batch(kb: KnowledgeBase, inputs: Sequence[str | Path], out: str | Path, options: Options | None = None, *,
              workers: int | None = None, scheduler: str | None = None, client: Any = None, resume: bool = False,
              partitions: int | None = None, progress: bool = True,
              on_rows: Callable[[int], None] | None = None) -> BatchOutcome:
    """Evaluate every patient of ``inputs`` and write the results to ``out``.

    ``client`` (a ``distributed.Client``) overrides ``workers``/``scheduler``; ``partitions`` is the number of
    tasks the patients are spread over (default: four per worker); ``on_rows`` is called with the number of
    patients written after each task (an exception it raises, e.g. ``KeyboardInterrupt``, stops the run as
    Ctrl-C does). ``BatchOutcome.stages`` holds the seconds of each stage, measured on the client."""
    require_extras()
    from distributed import as_completed

    options = options or Options()
    out = Path(out)
    started = time.monotonic()
    stages: dict[str, float] = {}
    clock = [started]

    def stage(name: str) -> None:
        now = time.monotonic()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    found = collect_inputs(inputs, exclude=out)
    own_client, cluster = (client, None) if client is not None else _client(workers, scheduler)
    try:
        done = _prepare_out(out, _run_record(kb, [str(p) for p in inputs], options), resume)
    except BaseException:
        if client is None:
            own_client.close()
            if cluster is not None:
                cluster.close()
        raise
    outcome = BatchOutcome(out, resumed=len(done))
    spill, parts = out / SPILL, out / PARTS
    # Workers write the Parquet parts of a fresh run; a resumed run's Parquet is made from the journal, which
    # holds the earlier rows too.
    if parts.exists():
        shutil.rmtree(parts)
    parts_dir: str | None = None
    if not done:
        parts.mkdir()
        parts_dir = str(parts)
    futures: list[Any] = []
    bar: Progress | None = None
    results: list[TaskRows] = []
    stage("prepare")
    try:
        nworkers = max(1, len(own_client.scheduler_info(n_workers=-1).get("workers", {})) if client is not None
                       or scheduler else (workers or os.cpu_count() or 1))
        # at least four tasks per worker, and small ones (for the progress shown and what an interruption loses)
        files_parts = partitions or max(4 * nworkers, -(-len(found.files) // FILES_PER_TASK))
        own_client.register_plugin(_plugin(kb_payload(kb), kb.content_hash))
        stage("workers")
        from .batch import files_task, partition_task
        from .bulk import partition_of, split_chunk

        todo = [t for t in found.files if t.key not in done]
        total = len(todo)
        for group in _file_groups(todo, files_parts):
            skip = [k for k in done if any(k.startswith(t.key + "#") for t in group)]
            futures.append(own_client.submit(files_task, kb.content_hash, group, options, skip, parts_dir,
                                             pure=False))
        bulk_stats = SplitStats()
        for n, (label, files) in enumerate(found.exports):
            where = spill / f"e{n:03d}"
            if where.exists():
                shutil.rmtree(where)
            chunks = plan_chunks(files)
            size = sum(os.path.getsize(f) for f in files)
            nparts = partitions or max(4 * nworkers, -(-size // BULK_BYTES_PER_TASK))
            splits = own_client.map(split_chunk, chunks, partitions=nparts, spill=str(where), pure=False)
            export_stats = SplitStats()
            for s in own_client.gather(splits):
                export_stats.add(s)
            # The partition of a patient is known here (crc32), so no pass over the spill is needed to skip the
            # patients written before. The partition tasks are submitted once the split is done, rather than
            # made to depend on the split tasks: tasks without dependencies wait in the scheduler's queue and go
            # to whichever worker is free, where dependent ones were placed by where their inputs lay and left
            # a worker idle until work stealing moved them (measured: up to 2 s of 10 with 2 workers).
            skips: list[list[str]] = [[] for _ in range(nparts)]
            for k in done:
                if k.startswith("Patient/"):
                    skips[partition_of(k, nparts)].append(k)
            for p in range(nparts):
                futures.append(own_client.submit(partition_task, kb.content_hash, label, str(where), p, skips[p],
                                                 options, parts_dir, pure=False))
            bulk_stats.add(export_stats)
            # the Patient resources counted by the split give the progress total
            total += max(0, export_stats.patients - sum(len(x) for x in skips))
        outcome.bulk = bulk_stats.to_json() if found.exports else {}
        stage("split")
        # The client mostly waits while the workers evaluate: import the end's libraries meanwhile (matplotlib
        # alone takes about 0.4 s, a fixed cost of every run otherwise paid after the last patient).
        threading.Thread(target=_import_end_libraries, name="mascds-batch-imports", daemon=True).start()
        bar = Progress(total, 0, enabled=progress)
        with open(out / JOURNAL, "ab") as journal:
            for future in as_completed(futures):  # type: ignore[no-untyped-call]
                task: TaskRows = future.result()
                future.release()
                results.append(task)
                journal.write(task.journal)
                journal.flush()
                outcome.patients += task.patients
                bar.advance(task.patients)
                if on_rows is not None:
                    on_rows(outcome.patients)
        stage("evaluate")
    except KeyboardInterrupt:
        outcome.interrupted = True
        own_client.cancel(futures)
    finally:
        if bar is not None:
            bar.close()
        if client is None:
            own_client.close()
            if cluster is not None:
                cluster.close()
        if spill.exists():
            shutil.rmtree(spill, ignore_errors=True)
    outcome.straggler = _straggler(results)
    if not outcome.interrupted:
        outcome.summary = summarise(kb, out, outcome.bulk)
        stage("summary")
        if parts_dir is not None:
            merge_parquet(out, [t.part for t in results if t.part])
        else:
            write_parquet(out)
        stage("parquet")
        write_summary(out, outcome.summary)
        stage("chart")
    if parts.exists():
        shutil.rmtree(parts, ignore_errors=True)
    outcome.stages = stages
    outcome.seconds = time.monotonic() - started
    return outcome


def _import_end_libraries() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
        import pyarrow.parquet  # noqa: F401
    except Exception:  # an import that fails here fails again, with its message, where it is used
        pass


def _straggler(results: Sequence[TaskRows]) -> float:
    """Seconds between the first worker running out of tasks and the last one: what one slow task costs."""
    last: dict[str, float] = {}
    for t in results:
        last[t.worker] = max(last.get(t.worker, 0.0), t.ended)
    return max(last.values()) - min(last.values()) if len(last) > 1 else 0.0


# --- results and summary --------------------------------------------------------------------------------------


def write_parquet(out: Path, batch_rows: int = 2000) -> Path:
    """results.parquet from the journal, in batches (the journal is never read whole), rows sorted by nothing
    but the order tasks finished in; sort by ``key`` and ``evaluation`` when comparing runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    target = out / "results.parquet"
    tmp = target.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, schema) as writer:
        batch: list[dict[str, Any]] = []
        for row in journal_rows(out):
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    tmp.replace(target)
    return target


def merge_parquet(out: Path, parts: Sequence[str]) -> Path:
    """results.parquet from the parts the workers wrote (one per task, in the order the tasks finished, as the
    journal), copied as Arrow tables: no row passes through Python on the client."""
    import pyarrow.parquet as pq

    target = out / "results.parquet"
    tmp = target.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, parquet_schema()) as writer:
        for part in parts:
            writer.write_table(pq.read_table(part))
    tmp.replace(target)
    return target


def summarise(kb: KnowledgeBase, out: Path, bulk: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts per rule and status (over evaluations), patients with input or rule errors, from the journal."""
    kinds = rule_kinds(kb)
    per_rule: dict[str, dict[str, int]] = {rid: {} for rid, _ in kinds}
    ever: dict[str, set[str]] = {rid: set() for rid, _ in kinds}
    patients: set[str] = set()
    input_errors: dict[str, str] = {}
    not_evaluated: set[str] = set()
    internal: dict[str, str] = {}
    rule_errors: dict[str, str] = {}
    evaluations = 0
    for row in journal_rows(out):
        key = row["key"]
        patients.add(key)
        if row["status"] == INTERNAL_ERROR:
            internal[key] = row["load_error"]
            continue
        if row["status"] == NOT_EVALUATED:
            not_evaluated.add(key)
            input_errors.setdefault(key, row["load_error"])
            continue
        evaluations += 1
        if row["input_errors"]:
            input_errors.setdefault(key, f"{len(row['input_errors'])} input error(s): {row['input_errors'][0]}")
        if row["errors"]:
            rule_errors.setdefault(key, "; ".join(f"{e['rule_id']}: {e['message']}" for e in row["errors"]))
        for rid, status in row["rules"].items():
            counts = per_rule.setdefault(rid, {})
            counts[status] = counts.get(status, 0) + 1
            if status in ("fired", "met"):
                ever.setdefault(rid, set()).add(key)
    return {
        "format": SUMMARY_FORMAT, "kb_name": kb.name, "kb_version": kb.version, "kb_hash": kb.content_hash,
        "patients": len(patients), "evaluations": evaluations,
        "patients_not_evaluated": len(not_evaluated),
        "patients_with_input_errors": len(input_errors), "patients_with_rule_errors": len(rule_errors),
        "rules": {rid: {"kind": kind, "statuses": dict(sorted(per_rule[rid].items())),
                        "patients_fired_or_met": len(ever[rid])} for rid, kind in kinds},
        "input_errors": dict(sorted(input_errors.items())[:200]),
        "rule_errors": dict(sorted(rule_errors.items())[:200]),
        "patients_with_internal_errors": len(internal), "internal_errors": dict(sorted(internal.items())[:200]),
        "bulk": bulk or {},
    }


def render_summary(summary: dict[str, Any]) -> str:
    lines = [f"knowledge base {summary['kb_name']} {summary['kb_version']} ({summary['kb_hash']})",
             f"{summary['patients']} patients, {summary['evaluations']} evaluations; "
             f"{summary['patients_with_input_errors']} with input errors, "
             f"{summary['patients_with_rule_errors']} with rules that could not be evaluated", ""]
    width = max((len(r) for r in summary["rules"]), default=10)
    lines.append(f"{'rule':<{width}}  patients fired/met  statuses (evaluations)")
    for rid, info in summary["rules"].items():
        statuses = ", ".join(f"{k} {v}" for k, v in info["statuses"].items())
        lines.append(f"{rid:<{width}}  {info['patients_fired_or_met']:>18}  {statuses}")
    if summary["input_errors"]:
        lines += ["", "patients with input errors:"]
        lines += [f"  {k}: {v}" for k, v in summary["input_errors"].items()]
    if summary["rule_errors"]:
        lines += ["", "patients with rules that could not be evaluated:"]
        lines += [f"  {k}: {v}" for k, v in summary["rule_errors"].items()]
    if summary.get("internal_errors"):
        lines += ["", "patients not evaluated because of an internal error (please report it):"]
        lines += [f"  {k}: {v}" for k, v in summary["internal_errors"].items()]
    bulk = summary.get("bulk") or {}
    if bulk:
        skipped = sum(bulk["skipped_types"].values())
        lines += ["", f"Bulk Data: {bulk['resources']} resources read, {bulk['kept']} used, {skipped} of types "
                  f"mascds does not read, {bulk['unassigned']} naming no patient, {bulk['unreadable']} unreadable"]
        lines += [f"  {p}" for p in bulk["problems"]]
    return "\n".join(lines) + "\n"


STATUS_COLOURS = {"fired": "#2e7d32", "met": "#66bb6a", "suppressed": "#8e24aa", "undecided": "#f9a825",
                  "indeterminate": "#fdd835", "not_fired": "#cfd8dc", "not_met": "#eceff1", "error": "#c62828"}


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (out / "summary.txt").write_text(render_summary(summary), encoding="utf-8")
    write_chart(out / "summary.png", summary)


def write_chart(path: Path, summary: dict[str, Any]) -> None:
    """Per rule, a bar of its evaluations split by status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = list(summary["rules"])
    statuses = sorted({s for info in summary["rules"].values() for s in info["statuses"]},
                      key=lambda s: (list(STATUS_COLOURS).index(s.removesuffix("_unreliable"))
                                     if s.removesuffix("_unreliable") in STATUS_COLOURS else 99, s))
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rules) + 1.6))
    left = [0] * len(rules)
    for status in statuses:
        counts = [summary["rules"][r]["statuses"].get(status, 0) for r in rules]
        ax.barh(rules, counts, left=left, label=status.replace("_", " "),
                color=STATUS_COLOURS.get(status.removesuffix("_unreliable"), "#90a4ae"),
                hatch="//" if status.endswith("_unreliable") else None, edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("evaluations")
    ax.set_title(f"{summary['patients']} patients, {summary['evaluations']} evaluations - "
                 f"{summary['kb_name']} {summary['kb_version']}", fontsize=9)
    if statuses:
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["BatchOutcome", "Progress", "journal_rows", "merge_parquet", "parquet_schema", "render_summary",
           "require_extras", "run_batch", "summarise", "write_parquet", "write_summary"]

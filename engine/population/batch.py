"""Population runs, the part every worker runs: evaluate many patients and turn each result into a compact row.

:func:`evaluate_many` is the building block of both paths (in-process and on Dask, ``engine/population/batch_run.py``).
Workers read their own input - case files, FHIR bundles, or a partition of a Bulk Data export
(``engine/population/bulk.py``) - and return rows of plain data (a pickled :class:`~engine.runtime.result.Result`
costs about half an evaluation to ship). The knowledge base reaches a worker once, in its compiled form, and is kept
per process under its content hash. This module imports neither Dask nor pyarrow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from ..core.errors import LoadError, MascdsError, UsageError
from ..core.snapshot import Snapshot
from ..runtime.kb import BackendName, KnowledgeBase
from ..runtime.result import Result
from .bulk import Options, is_fhir_file, split_bundle

ROW_FORMAT = "mascds.batch-row/1"
NOT_EVALUATED = "not_evaluated"
INTERNAL_ERROR = "internal_error"


class BatchError(MascdsError):
    """A population run cannot start or go on: an extra not installed, an output folder in the way, a worker
    without the knowledge base."""


def evaluate_many(kb: KnowledgeBase, snapshots: Iterable[Snapshot], at: int | str | datetime | None = None, *,
                  every_event: bool = False, backend: BackendName = "durable", lang: str = "en",
                  on_error: Callable[[Snapshot, MascdsError], None] | None = None) -> Iterator[Result]:
    """Evaluate each snapshot as of ``at`` (default: its own last event), or with ``every_event`` at every event
    of its timeline (one incremental session per patient), yielding the results in order.

    A snapshot that cannot be evaluated (no events and no time, a bad time, an engine failure) raises its
    :class:`MascdsError`, unless ``on_error`` is given: then it is called with the snapshot and the error, and
    the run goes on with the next snapshot. Snapshots are read lazily, one at a time."""
    from ..outputs.timeline import replay

    for snap in snapshots:
        try:
            if every_event:
                times = snap.event_times()
                if not times:
                    raise UsageError("the record has no events to evaluate at")
                yield from replay(kb, snap, times, backend=backend, lang=lang).results
            else:
                yield kb.evaluate(snap, at, backend=backend, lang=lang)
        except MascdsError as exc:
            if on_error is None:
                raise
            on_error(snap, exc)


# --- rows -------------------------------------------------------------------------------------------------------


def rule_kinds(kb: KnowledgeBase) -> list[tuple[str, str]]:
    """(rule id, "assessment" | "recommendation") for every rule evaluated, in the knowledge base's order."""
    return [(rid, "assessment" if kb.compiled.models[rid].derive is not None else "recommendation")
            for rid in kb.rule_ids]


def rule_statuses(kinds: Sequence[tuple[str, str]], result: Result) -> dict[str, str]:
    """Every rule's status in one result: fired | suppressed | undecided | not_fired for recommendations,
    met | not_met | indeterminate (``_unreliable`` appended when the assessment says so) for assessments,
    error for a rule that could not be evaluated. The vocabulary of ``mascds replay``."""
    errors = {e.rule_id for e in result.errors}
    assessed = {a.rule_id: a.status + ("" if a.reliable else "_unreliable") for a in result.assessments}
    recommended = {r.rule_id: "fired" if r.status == "active" else "suppressed" for r in result.recommendations}
    undecided = {u.rule_id for u in result.indeterminate}
    out: dict[str, str] = {}
    for rid, kind in kinds:
        if rid in errors:
            out[rid] = "error"
        elif rid in assessed:
            out[rid] = assessed[rid]
        elif rid in recommended:
            out[rid] = recommended[rid]
        elif rid in undecided:
            out[rid] = "undecided" if kind == "recommendation" else "indeterminate"
        else:
            out[rid] = "not_fired" if kind == "recommendation" else "not_met"
    return out


def _kb_fields(kb: KnowledgeBase) -> dict[str, str]:
    return {"kb_name": kb.name, "kb_version": kb.version, "kb_hash": kb.content_hash}


def result_row(kb: KnowledgeBase, kinds: Sequence[tuple[str, str]], key: str, source: str, result: Result,
               evaluation: int = 0, evaluations: int = 1) -> dict[str, Any]:
    """One evaluation as a row of plain data (the per-patient table; docs/population.md lists the columns)."""
    if result.errors:
        status = "rule_errors"
    elif result.input_errors:
        status = "input_errors"
    else:
        status = "ok"
    return {
        "key": key, "patient": result.case_id, "source": source, "as_of": result.as_of,
        "as_of_epoch": result.as_of_epoch, "evaluation": evaluation, "evaluations": evaluations,
        "status": status, "complete": result.complete, "load_error": None,
        "rules": rule_statuses(kinds, result),
        "recommendations": [{
            "rule_id": r.rule_id, "indicator": r.indicator, "status": r.status, "evidence_level": r.evidence_level,
            "actions": [{"kind": a.kind, "target": a.target, "suppressed": a.suppressed_by is not None}
                        for a in r.actions],
            "citations": [c.doi or f"PMID:{c.pmid}" for c in r.citations if c.doi or c.pmid],
        } for r in result.recommendations],
        "undecided": [{"rule_id": u.rule_id, "produces": u.produces,
                       "missing": [{"what": m.what, "detail": m.detail} for m in u.missing]}
                      for u in result.indeterminate],
        "errors": [{"rule_id": e.rule_id, "message": e.message} for e in result.errors],
        "input_errors": list(result.input_errors), "warnings": list(result.warnings),
        **_kb_fields(kb),
    }


def error_row(kb: KnowledgeBase, key: str, source: str, patient: str | None, exc: MascdsError) -> dict[str, Any]:
    """A patient that could not be evaluated at all: its row names why, and every rule is left out."""
    if isinstance(exc, LoadError):
        message = "; ".join([exc.what] + [d.format() for d in exc.diagnostics[:20]])
        if len(exc.diagnostics) > 20:
            message += f"; … ({len(exc.diagnostics) - 20} more)"
    else:
        message = str(exc)
    return {
        "key": key, "patient": patient, "source": source, "as_of": None, "as_of_epoch": None,
        "evaluation": 0, "evaluations": 1, "status": NOT_EVALUATED, "complete": False, "load_error": message,
        "rules": {}, "recommendations": [], "undecided": [], "errors": [], "input_errors": [], "warnings": [],
        **_kb_fields(kb),
    }


def patient_rows(kb: KnowledgeBase, key: str, source: str, load: Callable[[], Snapshot],
                 options: Options) -> list[dict[str, Any]]:
    """Every row of one patient: read it with ``load``, evaluate it, and never raise for its own bad data. An
    unexpected failure (a defect, not the patient's data) is a row too, with status ``internal_error``, so that
    one record cannot stop a population run; the run's exit code then says so."""
    try:
        return _patient_rows(kb, key, source, load, options)
    except Exception as exc:
        row = error_row(kb, key, source, None, MascdsError(f"internal error: {type(exc).__name__}: {exc}"))
        row["status"] = INTERNAL_ERROR
        return [row]


def _patient_rows(kb: KnowledgeBase, key: str, source: str, load: Callable[[], Snapshot],
                  options: Options) -> list[dict[str, Any]]:
    kinds = rule_kinds(kb)
    try:
        snap = load()
    except MascdsError as exc:
        return [error_row(kb, key, source, None, exc)]
    failed: list[MascdsError] = []
    results = list(evaluate_many(kb, [snap], options.at, every_event=options.every_event, backend=options.backend,
                                 lang=options.lang, on_error=lambda _s, e: failed.append(e)))
    if failed:
        return [error_row(kb, key, source, snap.id, failed[0])]
    return [result_row(kb, kinds, key, source, r, i, len(results)) for i, r in enumerate(results)]


# --- the knowledge base on a worker -------------------------------------------------------------------------------

_KBS: dict[str, KnowledgeBase] = {}


def kb_payload(kb: KnowledgeBase) -> bytes:
    """The compiled knowledge base as bytes for workers (a loaded one holds a lock and cannot be pickled)."""
    return pickle.dumps(kb.compiled, protocol=pickle.HIGHEST_PROTOCOL)


def install_kb(payload: bytes) -> str:
    """Build the knowledge base from :func:`kb_payload` bytes once per process; returns its content hash."""
    compiled = pickle.loads(payload)  # the client's own compiled rules, sent by the client
    found = _KBS.get(compiled.content_hash)
    if found is None:
        found = KnowledgeBase(compiled)
        found.backend("durable")  # the rulesets are built now, not at the first patient
        _KBS[compiled.content_hash] = found
    return found.content_hash


def worker_kb(content_hash: str) -> KnowledgeBase:
    found = _KBS.get(content_hash)
    if found is None:
        raise BatchError(f"this worker has no knowledge base {content_hash[:19]}…; it joined without the "
                         "mascds worker plugin (start the run again)")
    return found


# --- inputs: case files and FHIR bundles ----------------------------------------------------------------------------

CASE_SUFFIXES = (".yaml", ".yml")
BUNDLE_SUFFIXES = (".json",)
BULK_SUFFIXES = (".ndjson",)


@dataclass(frozen=True)
class FileTask:
    """One patient file: a case file (YAML) or a FHIR R4 Bundle (JSON)."""

    key: str
    path: str
    kind: str  # case | bundle


@dataclass(frozen=True)
class Inputs:
    files: tuple[FileTask, ...]
    exports: tuple[tuple[str, tuple[str, ...]], ...]  # (label, NDJSON files) for each Bulk Data export


def collect_inputs(paths: Sequence[str | Path], exclude: Path | None = None) -> Inputs:
    """Sort the command line's inputs: folders of case files and bundles, single files, and Bulk Data exports (a
    folder holding ``*.ndjson`` files, or NDJSON files named directly, which together form one export). Hidden
    folders and ``exclude`` (the output folder) are not searched."""
    skip = exclude.resolve() if exclude is not None else None

    def wanted(f: Path, top: Path) -> bool:
        if not f.is_file() or f.suffix not in CASE_SUFFIXES + BUNDLE_SUFFIXES:
            return False
        if any(part.startswith(".") for part in f.relative_to(top).parts):
            return False
        return skip is None or not f.resolve().is_relative_to(skip)

    files: list[FileTask] = []
    exports: list[tuple[str, tuple[str, ...]]] = []
    loose: list[str] = []
    seen: set[str] = set()

    def add_file(p: Path, kind: str) -> None:
        key = str(p)
        if key not in seen:
            seen.add(key)
            files.append(FileTask(key, key, kind))

    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            ndjson = sorted(str(f) for f in p.iterdir() if f.is_file() and f.suffix in BULK_SUFFIXES)
            if ndjson:
                exports.append((str(p), tuple(ndjson)))
                continue
            found = sorted(f for f in p.rglob("*") if wanted(f, p))
            if not found:
                raise UsageError(f"{p}: no case files (*.yaml), FHIR bundles (*.json) or Bulk Data files (*.ndjson) "
                                 "in this folder")
            for f in found:
                add_file(f, "case" if f.suffix in CASE_SUFFIXES else "bundle")
        elif p.is_file():
            if p.suffix in BULK_SUFFIXES:
                loose.append(str(p))
            elif p.suffix in CASE_SUFFIXES:
                add_file(p, "case")
            else:
                add_file(p, "bundle" if is_fhir_file(str(p)) else "case")
        else:
            raise UsageError(f"{p}: no such file or folder")
    if loose:
        exports.append((str(Path(loose[0]).parent), tuple(sorted(loose))))
    return Inputs(tuple(files), tuple(exports))


def _load_file(task: FileTask) -> Snapshot:
    if task.kind == "bundle":
        from ..records.fhir import load_fhir

        return load_fhir(task.path).snapshot
    from ..records.ingest import load_case

    return load_case(task.path)


def _bundle_parts(task: FileTask) -> tuple[list[tuple[str, dict[str, Any]]], list[str]] | None:
    """The patients of a bundle that holds several (:func:`engine.population.bulk.split_bundle`), or None to read
    it whole (one patient, or a file the FHIR reader reports on)."""
    try:
        with open(task.path, "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    return split_bundle(data) if isinstance(data, dict) and data.get("resourceType") == "Bundle" else None


def _part_loader(task: FileTask, bundle: dict[str, Any], unplaced: Sequence[str]) -> Callable[[], Snapshot]:
    def load() -> Snapshot:
        from ..language.load import display_path
        from ..records.fhir import snapshot_from_bundle

        snap = snapshot_from_bundle(bundle, display_path(Path(task.path))).snapshot
        if not unplaced:
            return snap
        more = f" (and {len(unplaced) - 1} more)" if len(unplaced) > 1 else ""
        return dataclasses.replace(snap, warnings=(*snap.warnings, f"{unplaced[0]}{more}: names no patient, and the "
                                                   "bundle holds several; not used"))

    return load


def run_files(content_hash: str, tasks: Sequence[FileTask], options: Options,
              skip: Sequence[str] = ()) -> list[dict[str, Any]]:
    """A worker's task: read and evaluate its own files, return their rows. A bundle holding several patients is
    a row per patient (key ``FILE#Patient/ID``), each evaluated with its own resources only; ``skip`` names such
    patients already written (``--resume``)."""
    kb = worker_kb(content_hash)
    done = set(skip)
    rows: list[dict[str, Any]] = []
    for task in tasks:
        parts = _bundle_parts(task) if task.kind == "bundle" else None
        if parts is None:
            rows.extend(patient_rows(kb, task.key, task.path, partial(_load_file, task), options))
            continue
        for patient, bundle in parts[0]:
            key = f"{task.key}#{patient}"
            if key not in done:
                rows.extend(patient_rows(kb, key, key, _part_loader(task, bundle, parts[1]), options))
    return rows


# --- the tasks Dask runs: rows written on the worker ----------------------------------------------------------------


@dataclass(frozen=True)
class TaskRows:
    """What a task sends back: its rows already encoded as journal lines (the client only appends them), the
    Parquet part it wrote (or None), and when and where it ran (for the straggler time)."""

    journal: bytes
    patients: int
    rows: int
    part: str | None
    worker: str
    started: float
    ended: float


def parquet_schema() -> Any:
    import pyarrow as pa

    s = pa.string()
    return pa.schema([
        ("key", s), ("patient", s), ("source", s), ("as_of", s), ("as_of_epoch", pa.int64()),
        ("evaluation", pa.int32()), ("evaluations", pa.int32()), ("status", s), ("complete", pa.bool_()),
        ("load_error", s), ("rules", pa.map_(s, s)),
        ("recommendations", pa.list_(pa.struct([
            ("rule_id", s), ("indicator", s), ("status", s), ("evidence_level", s),
            ("actions", pa.list_(pa.struct([("kind", s), ("target", s), ("suppressed", pa.bool_())]))),
            ("citations", pa.list_(s))]))),
        ("undecided", pa.list_(pa.struct([("rule_id", s), ("produces", s),
                                          ("missing", pa.list_(pa.struct([("what", s), ("detail", s)])))]))),
        ("errors", pa.list_(pa.struct([("rule_id", s), ("message", s)]))),
        ("input_errors", pa.list_(s)), ("warnings", pa.list_(s)),
        ("kb_name", s), ("kb_version", s), ("kb_hash", s),
    ])


def _task_rows(rows: list[dict[str, Any]], parts: str | None, started: float) -> TaskRows:
    part = None
    if parts is not None and rows:
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = str(Path(parts) / f"{uuid.uuid4().hex}.parquet")
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), part)
    journal = b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)
    return TaskRows(journal, len({r["key"] for r in rows}), len(rows), part, f"{os.uname().nodename}:{os.getpid()}",
                    started, time.time())


def files_task(content_hash: str, tasks: Sequence[FileTask], options: Options, skip: Sequence[str],
               parts: str | None) -> TaskRows:
    """:func:`run_files` as a Dask task: the rows as journal lines, and as a Parquet part in ``parts``."""
    started = time.time()
    return _task_rows(run_files(content_hash, tasks, options, skip), parts, started)


def partition_task(content_hash: str, label: str, spill: str, partition: int, skip: Sequence[str],
                   options: Options, parts: str | None) -> TaskRows:
    """:func:`engine.population.bulk.run_partition` as a Dask task (see :func:`files_task`), submitted once the export's
    split is done."""
    from .bulk import run_partition

    started = time.time()
    return _task_rows(run_partition(content_hash, label, spill, partition, skip, options), parts, started)


__all__ = ["BatchError", "FileTask", "Inputs", "Options", "TaskRows", "collect_inputs", "error_row", "evaluate_many",
           "files_task", "install_kb", "kb_payload", "parquet_schema", "partition_task", "patient_rows", "result_row",
           "rule_kinds", "rule_statuses", "run_files"]

"""FHIR Bulk Data exports (the ``$export`` output: NDJSON files, one resource a line) read patient by patient.

An export is joined by patient reference without ever being held in memory, in two passes that workers run:

1. **split**: each file is cut into byte ranges (:func:`plan_chunks`); a task reads its range line by line and
   appends every resource mascds reads to the spill file of its patient's partition (``crc32(patient) % n``),
   prefixed by the patient key (``Patient/ID<TAB>json``). Medication resources, which belong to no patient but are
   named by medication resources, go to a shared spill. Other resource types are counted and skipped.
2. **evaluate** (:func:`run_partition`): a task indexes its partition's spill files - the byte offset and length
   of each line, by patient - and then reads, evaluates and forgets one patient at a time.

A worker's memory is thus the offsets of one partition plus one patient's resources; the spill takes about the
disk space of the relevant resources.

The same join by patient reference cuts a FHIR Bundle that holds several patients into one bundle per patient
(:func:`split_bundle`). :func:`is_fhir_file` tells a FHIR JSON file from a case file. This module imports
neither Dask nor fhir.resources.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..runtime.kb import BackendName

if TYPE_CHECKING:
    from ..core.snapshot import Snapshot

# The types the FHIR reader maps (engine.records.fhir.RELEVANT_TYPES, without importing fhir.resources here) and the
# one it follows references to.
PATIENT_TYPES = ("Patient", "Observation", "Condition", "MedicationAdministration", "MedicationRequest",
                 "MedicationStatement", "AllergyIntolerance", "Procedure", "AdverseEvent")
SHARED_TYPES = ("Medication",)
MEDICATION_TYPES = ("MedicationAdministration", "MedicationRequest", "MedicationStatement")
# small ranges: the split tasks are spread evenly over the workers (a range costs one task and a spill file
# per partition it writes to)
CHUNK_BYTES = 8 << 20
MAX_PROBLEMS = 20
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_SHARED_REF = re.compile(r"(?:^|/)(Medication/[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_SHARED = "shared"
# A resource's first key, when it is resourceType: a line of a type mascds does not read (Claim, Encounter, ...,
# most of an export's bytes) is counted without being parsed. FHIR JSON has no duplicate keys, so the first key
# is the resource's type; lines that do not start so are parsed in full.
_TYPE_FIRST = re.compile(rb'\s*\{\s*"resourceType"\s*:\s*"([A-Za-z]{1,64})"\s*[,}]')
_READ_TYPES = frozenset(t.encode() for t in PATIENT_TYPES + SHARED_TYPES)


def _loads(line: bytes) -> Any:
    """``json.loads`` at orjson's speed: orjson gives the same values for what both accept, and json.loads is
    asked only about what orjson refuses (NaN, lone surrogates, integers past 64 bits, invalid JSON), so its
    values - and its errors, with their messages - stay what every line gets."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def is_fhir_file(path: str) -> bool:
    """Whether a file holds FHIR JSON rather than a case file: a JSON object with a resourceType (or, when it does
    not parse, one that names a resourceType, so that its JSON syntax error is reported as such)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False  # the case loader reports unreadable files with their place
    if not text.lstrip().startswith("{"):
        return False
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):  # nested too deep: the FHIR reader says so with its place
        return '"resourceType"' in text
    return isinstance(data, dict) and "resourceType" in data


def partition_of(key: str, partitions: int) -> int:
    """The partition of a patient key: stable across processes and runs (unlike ``hash``)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def patient_key(resource: dict[str, Any]) -> str | None:
    """``Patient/ID`` for the patient a resource belongs to, or None when it names none that can be read."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) and rid else None
    ref = resource.get("patient" if rtype == "AllergyIntolerance" else "subject")
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str):
        return None
    m = _PATIENT_REF.search(text.strip())
    return f"Patient/{m.group(1)}" if m else None


@dataclass(frozen=True)
class Chunk:
    """Lines of one NDJSON file whose first byte lies in [start, end)."""

    path: str
    start: int
    end: int
    index: int


def plan_chunks(files: Sequence[str], chunk_bytes: int = CHUNK_BYTES) -> list[Chunk]:
    chunks: list[Chunk] = []
    for path in files:
        size = os.path.getsize(path)
        for start in range(0, max(size, 1), chunk_bytes):
            chunks.append(Chunk(path, start, min(size, start + chunk_bytes), len(chunks)))
    return chunks


@dataclass
class SplitStats:
    """What a split pass saw: lines per use, and the lines it could not place (with their place)."""

    resources: int = 0
    kept: int = 0
    skipped_types: dict[str, int] = field(default_factory=dict)
    patients: int = 0  # Patient resources
    unassigned: int = 0  # a type mascds reads that names no patient
    unreadable: int = 0  # not JSON, or not a resource
    problems: list[str] = field(default_factory=list)

    def add(self, other: SplitStats) -> None:
        self.resources += other.resources
        self.kept += other.kept
        for k, v in other.skipped_types.items():
            self.skipped_types[k] = self.skipped_types.get(k, 0) + v
        self.patients += other.patients
        self.unassigned += other.unassigned
        self.unreadable += other.unreadable
        self.problems.extend(other.problems[:max(0, MAX_PROBLEMS - len(self.problems))])

    def to_json(self) -> dict[str, Any]:
        return {"resources": self.resources, "kept": self.kept, "patients": self.patients,
                "skipped_types": dict(sorted(self.skipped_types.items())), "unassigned": self.unassigned,
                "unreadable": self.unreadable, "problems": self.problems}


def _lines(path: str, start: int, end: int) -> Any:
    """(offset, bytes) of each line that starts in [start, end)."""
    with open(path, "rb") as f:
        if start > 0:
            f.seek(start - 1)
            f.readline()  # the rest of the line that started before ``start`` belongs to the chunk before
        pos = f.tell()
        while pos < end:
            line = f.readline()
            if not line:
                break
            yield pos, line
            pos += len(line)


def split_chunk(chunk: Chunk, partitions: int, spill: str) -> SplitStats:
    """Pass 1 for one byte range: every resource a patient's record needs goes to its partition's spill file."""
    stats = SplitStats()
    outs: dict[str, Any] = {}

    def out(name: str) -> Any:
        f = outs.get(name)
        if f is None:
            d = Path(spill) / name
            d.mkdir(parents=True, exist_ok=True)
            f = outs[name] = open(d / f"c{chunk.index:06d}.ndjson", "wb")  # noqa: SIM115 - closed below
        return f

    try:
        for offset, line in _lines(chunk.path, chunk.start, chunk.end):
            if not line.strip():
                continue
            stats.resources += 1
            first = _TYPE_FIRST.match(line)
            if first is not None and first.group(1) not in _READ_TYPES:
                skipped = first.group(1).decode()
                stats.skipped_types[skipped] = stats.skipped_types.get(skipped, 0) + 1
                continue
            try:
                resource = _loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                resource, why = None, f"not JSON ({exc})"
            else:
                why = "not a FHIR resource (no resourceType)"
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                stats.unreadable += 1
                if len(stats.problems) < MAX_PROBLEMS:
                    stats.problems.append(f"{chunk.path}: the line at byte {offset}: {why}; not used")
                continue
            rtype = resource["resourceType"]
            body = line.rstrip(b"\r\n")
            if rtype in SHARED_TYPES:
                rid = resource.get("id")
                if isinstance(rid, str):
                    out(_SHARED).write(f"{rtype}/{rid}\t".encode() + body + b"\n")
                    stats.kept += 1
                continue
            if rtype not in PATIENT_TYPES:
                stats.skipped_types[rtype] = stats.skipped_types.get(rtype, 0) + 1
                continue
            key = patient_key(resource)
            if key is None:
                stats.unassigned += 1
                if len(stats.problems) < MAX_PROBLEMS:
                    stats.problems.append(f"{chunk.path}: {rtype}/{resource.get('id')} (byte {offset}) names no "
                                          "patient (subject or patient reference to Patient/ID); not used")
                continue
            stats.patients += rtype == "Patient"
            out(f"p{partition_of(key, partitions):05d}").write(key.encode() + b"\t" + body + b"\n")
            stats.kept += 1
    finally:
        for f in outs.values():
            f.close()
    return stats


def _index(files: Sequence[Path]) -> dict[str, list[tuple[int, int, int]]]:
    """key -> [(file number, offset, length)] of each spilled line, in file order."""
    index: dict[str, list[tuple[int, int, int]]] = {}
    for n, path in enumerate(files):
        with open(path, "rb") as f:
            pos = 0
            for line in f:
                key = line[:line.index(b"\t")].decode()
                index.setdefault(key, []).append((n, pos, len(line)))
                pos += len(line)
    return index


def _read(handles: list[Any], places: list[tuple[int, int, int]]) -> list[dict[str, Any]]:
    out = []
    for n, offset, length in places:
        f = handles[n]
        f.seek(offset)
        line = f.read(length)
        out.append(_loads(line[line.index(b"\t") + 1:]))
    return out


def partition_keys(spill: str, partition: int) -> list[str]:
    files = sorted((Path(spill) / f"p{partition:05d}").glob("*.ndjson"))
    return sorted(_index(files))


def run_partition(content_hash: str, label: str, spill: str, partition: int, skip: Sequence[str],
                  options: Options) -> list[dict[str, Any]]:
    """Pass 2, a worker's task: every patient of one partition, read from the spill, evaluated, as rows."""
    from .batch import patient_rows, worker_kb

    kb = worker_kb(content_hash)
    files = sorted((Path(spill) / f"p{partition:05d}").glob("*.ndjson"))
    shared_files = sorted((Path(spill) / _SHARED).glob("*.ndjson"))
    index = _index(files)
    shared = _index(shared_files)
    done = set(skip)
    rows: list[dict[str, Any]] = []
    handles = [open(f, "rb") for f in files]  # noqa: SIM115 - closed below
    shared_handles = [open(f, "rb") for f in shared_files]  # noqa: SIM115 - closed below
    try:
        for key in sorted(index):
            if key in done:
                continue
            resources = _read(handles, index[key])
            wanted = {r["medicationReference"]["reference"] for r in resources
                      if r.get("resourceType") in MEDICATION_TYPES and isinstance(r.get("medicationReference"), dict)
                      and isinstance(r["medicationReference"].get("reference"), str)}
            for ref in sorted(wanted):
                m = _SHARED_REF.search(ref.strip())
                places = shared.get(m.group(1)) if m else None
                if places:
                    resources.extend(_read(shared_handles, places[:1]))
            # the Patient first, then the record's resources in the order of the reader's types
            order = {t: i for i, t in enumerate(PATIENT_TYPES + SHARED_TYPES)}
            resources.sort(key=lambda r: order.get(r.get("resourceType", ""), len(order)))
            source = f"{label}#{key}"
            rows.extend(patient_rows(kb, key, source, _loader(resources, source, key), options))
    finally:
        for f in handles + shared_handles:
            f.close()
    return rows


def _loader(resources: list[dict[str, Any]], source: str, key: str) -> Callable[[], Snapshot]:
    def load() -> Snapshot:
        from ..records.fhir import snapshot_from_resources

        return snapshot_from_resources(resources, source, patient_id=key.removeprefix("Patient/")).snapshot

    return load


def _reference(resource: dict[str, Any]) -> str | None:
    ref = resource.get("patient" if resource.get("resourceType") == "AllergyIntolerance" else "subject")
    text = ref.get("reference") if isinstance(ref, dict) else None
    return text.strip() if isinstance(text, str) else None


def split_bundle(bundle: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], list[str]] | None:
    """A Bundle holding several Patient resources, cut into one bundle per patient, as an export is joined:
    ([(``Patient/ID``, bundle)], the resources naming no patient of it). Each bundle holds the patient's own
    resources (``subject``/``patient`` naming its ``fullUrl``, ``Patient/ID`` or an URL ending so) and every entry
    of a type that belongs to no patient (Medication, ...); a resource of a patient's type naming no patient is
    in none. None when the bundle holds fewer than two patients, or a Patient without an id (the FHIR reader
    then reads or rejects the bundle whole)."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return None
    resources = [e.get("resource") if isinstance(e, dict) and isinstance(e.get("resource"), dict) else None
                 for e in entries]
    keys: dict[str, str] = {}
    for e, r in zip(entries, resources, strict=True):
        if r is not None and r.get("resourceType") == "Patient":
            rid = r.get("id")
            if not isinstance(rid, str) or not rid:
                return None
            keys[f"Patient/{rid}"] = f"Patient/{rid}"
            if isinstance(e.get("fullUrl"), str):
                keys[e["fullUrl"]] = f"Patient/{rid}"
    if len(set(keys.values())) < 2:
        return None
    owner: list[str | None] = []  # per entry: its patient's key, "" for every patient, None for none
    unplaced: list[str] = []
    for e, r in zip(entries, resources, strict=True):
        rtype = r.get("resourceType") if r is not None else None
        if rtype == "Patient":
            owner.append(keys[f"Patient/{r['id']}"])  # type: ignore[index]
        elif rtype not in PATIENT_TYPES or r is None:
            owner.append("")
        else:
            ref = _reference(r)
            m = _PATIENT_REF.search(ref) if ref else None
            key = keys.get(ref or "") or (f"Patient/{m.group(1)}" if m else None)
            owner.append(key)
            if key is None:
                unplaced.append(f"{rtype}/{r.get('id')}" if r.get("id") else str(e.get("fullUrl") or rtype))
    patients = list(dict.fromkeys(k for k in owner if k))
    parts = [(key, {"resourceType": "Bundle", "type": bundle.get("type", "collection"),
                    "entry": [e for e, o in zip(entries, owner, strict=True) if o in (key, "")]})
             for key in patients]
    return parts, unplaced


__all__ = ["Chunk", "SplitStats", "is_fhir_file", "partition_keys", "partition_of", "patient_key", "plan_chunks",
           "run_partition", "split_bundle", "split_chunk"]


@dataclass(frozen=True)
class Options:
    """What every patient of a run is evaluated with."""

    at: str | None = None
    every_event: bool = False
    backend: BackendName = "durable"
    lang: str = "en"

"""Population runs (``mascds batch``) on a real Dask LocalCluster of two worker processes: every row is what
evaluating that patient alone gives, whatever the partitioning; bad patients are rows, not stopped runs; an
interrupted run resumes; a Bulk Data export gives the same per-patient results as the bundles it came from."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.cli import main
from engine.population.batch import FileTask, _load_file, install_kb, kb_payload, result_row, rule_kinds
from engine.population.batch_run import Progress, journal_rows, run_batch
from engine.population.bulk import (
    PATIENT_TYPES,
    SHARED_TYPES,
    Options,
    partition_keys,
    plan_chunks,
    run_partition,
    split_chunk,
)

from .bulkdata import write_export
from .conftest import CASES, RULES, SHARED

distributed = pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")

SYNTHEA = SHARED / "data" / "fhir" / "synthea-r4"
# patients with and without MAS-relevant data: a few bundles, chosen by name so the test is stable
BUNDLES = sorted(SYNTHEA.glob("*.json"))[:10]
# compared between runs; "key" and "source" name the input, which differs between a bundle and an export
CLINICAL = ("patient", "as_of", "as_of_epoch", "evaluation", "evaluations", "status", "complete", "load_error",
            "rules", "recommendations", "undecided", "errors", "input_errors", "kb_hash")


@pytest.fixture(scope="module")
def kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
                      scheduler_port=0, silence_logs=50) as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    from distributed import Client

    with Client(cluster) as c:
        yield c


def by_key(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in journal_rows(out):
        k = (r["key"], r["evaluation"])
        assert k not in rows, f"{k} written twice"
        rows[k] = r
    return rows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Case files and bundles, with a broken case file in the middle of them."""
    d = tmp_path_factory.mktemp("mixed")
    for p in sorted(CASES.rglob("*.yaml"))[:6]:
        shutil.copy(p, d / p.name)
    for p in BUNDLES[:4]:
        shutil.copy(p, d / p.name)
    good = sorted(CASES.rglob("*.yaml"))[0].read_text(encoding="utf-8")
    (d / "m-broken.yaml").write_text(good.replace("analyte: ferritin", "analyte: ferritinn", 1)
                                     if "analyte: ferritin" in good else good + "\n  - [unclosed\n", encoding="utf-8")
    (d / "n-not-yaml.yaml").write_text("case: [unclosed\n", encoding="utf-8")
    return d


def alone(kb: engine.KnowledgeBase, folder: Path, at: str | None = None) -> dict[str, dict[str, Any]]:
    """Each file evaluated on its own, in this process, with the public API."""
    kinds = rule_kinds(kb)
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(folder.iterdir()):
        task = FileTask(str(p), str(p), "bundle" if p.suffix == ".json" else "case")
        try:
            snap = _load_file(task)
        except engine.MascdsError:
            continue
        result = engine.evaluate(kb, snap, at)
        out[str(p)] = result_row(kb, kinds, task.key, task.path, result)
        assert {rid for rid, s in out[str(p)]["rules"].items() if s == "fired"} == result.fired()
    return out


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_rows_are_each_patient_evaluated_alone_whatever_the_partitioning(
        kb: engine.KnowledgeBase, client: Any, mixed: Path, tmp_path: Path, partitions: int) -> None:
    outcome = run_batch(kb, [mixed], tmp_path / "out", client=client, partitions=partitions, progress=False)
    rows = by_key(tmp_path / "out")
    expected = alone(kb, mixed)
    assert outcome.patients == len(list(mixed.iterdir())) == len(rows)
    for key, row in expected.items():
        assert rows[(key, 0)] == row, key
    # the broken files are rows that say why, and the run went on past them
    bad = {k[0]: r for k, r in rows.items() if r["status"] == "not_evaluated"}
    assert set(bad) == {str(mixed / "m-broken.yaml"), str(mixed / "n-not-yaml.yaml")}
    for name, r in bad.items():
        assert re.search(rf"{re.escape(Path(name).name)}:\d+:\d+: E\d{{3}} ", r["load_error"]), r["load_error"]
        assert r["rules"] == {} and r["recommendations"] == []
    assert outcome.exit_status == "input_errors"
    assert outcome.summary["patients_with_input_errors"] == 2
    assert outcome.summary["patients"] == len(rows)


def test_parquet_holds_the_journal_rows(kb: engine.KnowledgeBase, client: Any, mixed: Path, tmp_path: Path) -> None:
    run_batch(kb, [mixed], tmp_path, client=client, progress=False)
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    rows = by_key(tmp_path)
    assert len(table) == len(rows)
    for t in table:
        r = rows[(t["key"], t["evaluation"])]
        assert dict(t["rules"]) == r["rules"]
        assert t["recommendations"] == r["recommendations"]
        assert t["undecided"] == r["undecided"]
        assert (t["status"], t["load_error"], t["kb_hash"]) == (r["status"], r["load_error"], kb.content_hash)
    summary = json.loads((tmp_path / "summary.json").read_text())
    fired = sum(1 for r in rows.values() if r["rules"].get("acr2021.evaluate-infection") == "fired")
    assert summary["rules"]["acr2021.evaluate-infection"]["statuses"].get("fired", 0) == fired
    assert (tmp_path / "summary.png").stat().st_size > 1000
    assert "patients with input errors" in (tmp_path / "summary.txt").read_text()


def test_every_event_rows_follow_the_replay(kb: engine.KnowledgeBase, client: Any, tmp_path: Path) -> None:
    case = CASES / "wu-2025-ruxolitinib.yaml"
    run_batch(kb, [case], tmp_path, Options(every_event=True), client=client, progress=False)
    rows = sorted(journal_rows(tmp_path), key=lambda r: r["evaluation"])
    snap = engine.load_case(case)
    rp = engine.replay(kb, snap)
    assert len(rows) == len(rp.times) == rows[0]["evaluations"]
    for row, t, result in zip(rows, rp.times, rp.results, strict=True):
        assert row["as_of_epoch"] == t
        quiet = ("not_fired", "not_met")
        assert {k: v for k, v in row["rules"].items() if v not in quiet} == rp.states(result)


def test_interrupted_run_resumes_without_evaluating_anyone_twice(
        kb: engine.KnowledgeBase, client: Any, mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"

    def stop(written: int) -> None:
        raise KeyboardInterrupt

    first = run_batch(kb, [mixed], out, client=client, partitions=6, progress=False, on_rows=stop)
    assert first.interrupted and 0 < first.patients < len(list(mixed.iterdir()))
    assert not (out / "results.parquet").exists()
    with open(out / "results.ndjson", "ab") as f:  # a line cut off by a kill
        f.write(b'{"key": "half')
    with pytest.raises(engine.UsageError, match="--resume"):
        run_batch(kb, [mixed], out, client=client, progress=False)
    with pytest.raises(engine.UsageError, match="other at"):
        run_batch(kb, [mixed], out, Options(at="2024-01-01T00:00:00Z"), client=client, resume=True, progress=False)
    second = run_batch(kb, [mixed], out, client=client, resume=True, progress=False)
    assert not second.interrupted
    assert second.resumed == first.patients
    assert second.resumed + second.patients == len(list(mixed.iterdir()))
    fresh = tmp_path / "fresh"
    run_batch(kb, [mixed], fresh, client=client, progress=False)
    assert by_key(out) == by_key(fresh)
    assert len(pq.read_table(out / "results.parquet")) == len(by_key(fresh))


def clinical(row: dict[str, Any], warnings: bool) -> dict[str, Any]:
    out = {k: row[k] for k in CLINICAL}
    out["warnings"] = sorted(row["warnings"]) if warnings else len(row["warnings"])
    return out


@pytest.mark.parametrize("files_per_type", [1, 3])
def test_bulk_export_gives_the_bundles_results(kb: engine.KnowledgeBase, cluster: Any, tmp_path: Path,
                                               files_per_type: int) -> None:
    write_export(BUNDLES, tmp_path / "export", files_per_type)
    bundles = tmp_path / "bundles"
    bundles.mkdir()
    for p in BUNDLES:
        shutil.copy(p, bundles / p.name)
    # through the scheduler's address, as on a cluster: the knowledge base reaches the workers by the plugin
    a = run_batch(kb, [tmp_path / "export"], tmp_path / "a", scheduler=cluster.scheduler_address, progress=False)
    b = run_batch(kb, [bundles], tmp_path / "b", scheduler=cluster.scheduler_address, progress=False)
    from_export = {r["patient"]: r for r in journal_rows(tmp_path / "a")}
    from_bundles = {r["patient"]: r for r in journal_rows(tmp_path / "b")}
    assert len(from_bundles) == len(BUNDLES) == a.patients
    assert a.bulk["unassigned"] == a.bulk["unreadable"] == 0 and a.bulk["patients"] == len(BUNDLES)
    # the order of a record's warnings follows its files: with one file per type they are the same warnings;
    # with several, a grouped warning ("X (and 2 more)") may name another of its resources first
    for pid, row in from_bundles.items():
        assert clinical(from_export[pid], files_per_type == 1) == clinical(row, files_per_type == 1), pid
    assert b.summary["rules"] == a.summary["rules"]


def test_bulk_split_at_any_byte_range_gives_the_same_rows(kb: engine.KnowledgeBase, client: Any,
                                                           tmp_path: Path) -> None:
    """Small byte ranges cut the files everywhere: every line is still read once, by the range it starts in."""
    export = tmp_path / "export"
    write_export(BUNDLES[:5], export, 2)
    files = sorted(str(p) for p in export.glob("*.ndjson"))
    h = install_kb(kb_payload(kb))  # this process as its own worker
    options = Options()
    rows_by_chunking = []
    for chunk_bytes, parts in ((1 << 30, 1), (4096, 3), (777, 5)):
        spill = tmp_path / f"spill-{chunk_bytes}"
        stats = [split_chunk(c, parts, str(spill)) for c in plan_chunks(files, chunk_bytes)]
        lines = {f: len(Path(f).read_text(encoding="utf-8").splitlines()) for f in files}
        wanted = sum(n for f, n in lines.items() if Path(f).name.split(".")[0] in PATIENT_TYPES + SHARED_TYPES)
        assert sum(s.kept for s in stats) == wanted
        assert sum(s.resources for s in stats) == sum(lines.values())
        rows = [r for p in range(parts) for r in run_partition(h, "export", str(spill), p, [], options)]
        assert len({r["key"] for r in rows}) == 5 == sum(len(partition_keys(str(spill), p)) for p in range(parts))
        rows_by_chunking.append({r["key"]: clinical(r, True) for r in rows})
    assert rows_by_chunking[0] == rows_by_chunking[1] == rows_by_chunking[2]


def test_bulk_lines_that_cannot_be_placed_are_reported(kb: engine.KnowledgeBase, client: Any,
                                                       tmp_path: Path) -> None:
    export = tmp_path / "export"
    write_export(BUNDLES[:2], export)
    with open(export / "Observation.ndjson", "a", encoding="utf-8") as f:
        f.write("{not json\n")
        f.write(json.dumps({"resourceType": "Observation", "id": "orphan", "status": "final",
                            "code": {"text": "x"}}) + "\n")
    with open(export / "Patient.ndjson", "a", encoding="utf-8") as f:  # a patient whose record is not valid FHIR
        f.write(json.dumps({"resourceType": "Patient", "id": "bad-1", "birthDate": "not a date"}) + "\n")
    outcome = run_batch(kb, [export], tmp_path / "out", client=client, progress=False)
    assert outcome.bulk["unreadable"] == 1 and outcome.bulk["unassigned"] == 1
    assert any("Observation/orphan" in p and "names no patient" in p for p in outcome.bulk["problems"])
    assert any("not JSON" in p for p in outcome.bulk["problems"])
    rows = {r["key"]: r for r in journal_rows(tmp_path / "out")}
    assert rows["Patient/bad-1"]["status"] == "not_evaluated" and "birthDate" in rows["Patient/bad-1"]["load_error"]
    assert sum(r["status"] != "not_evaluated" for r in rows.values()) == 2
    assert outcome.exit_status == "input_errors"
    assert "1 naming no patient, 1 unreadable" in (tmp_path / "out" / "summary.txt").read_text()


def test_evaluate_many_is_evaluate_per_snapshot(kb: engine.KnowledgeBase) -> None:
    snaps = [engine.load_case(p) for p in sorted(CASES.rglob("*.yaml"))[:4]]
    empty = dataclasses.replace(snaps[0], id="empty", diagnoses=(), observations=(), findings=(), courses=(),
                                orders=(), reactions=(), supports=())
    got = list(engine.evaluate_many(kb, snaps))
    assert [r.to_json() for r in got] == [engine.evaluate(kb, s).to_json() for s in snaps]
    failed: list[str] = []
    got = list(engine.evaluate_many(kb, [snaps[0], empty, snaps[1]], on_error=lambda s, e: failed.append(s.id)))
    assert failed == ["empty"] and len(got) == 2
    with pytest.raises(engine.UsageError, match="no events"):
        list(engine.evaluate_many(kb, [empty]))
    every = list(engine.evaluate_many(kb, snaps[:1], every_event=True))
    assert [r.as_of_epoch for r in every] == snaps[0].event_times()


def test_progress_lines_when_piped() -> None:
    stream = io.StringIO()
    bar = Progress(10, 0, stream=stream)
    bar.advance(4)
    bar.advance(6)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("batch: 10/10 patients (100 %)") and "patients/s" in lines[-1]


def test_cli_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "cases"
    cases.mkdir()
    for p in sorted(CASES.rglob("*.yaml"))[:3]:
        shutil.copy(p, cases / p.name)
    out = tmp_path / "out"
    assert main(["batch", str(cases), "--out", str(out), "--workers", "1", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "3 patients, 3 evaluations; 0 with input errors" in text
    assert len(pq.read_table(out / "results.parquet")) == 3
    # an earlier run in the way, and options that do not go together
    assert main(["batch", str(cases), "--out", str(out), "--workers", "1", "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["batch", str(cases), "--out", str(out), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 64
    # the output folder inside the input folder is not read as input on the next run
    inside = cases / "results"
    assert main(["batch", str(cases), "--out", str(inside), "--workers", "1", "--no-progress"]) == 0
    assert main(["batch", str(cases), "--out", str(inside), "--workers", "1", "--no-progress", "--resume"]) == 0
    assert "3 patients, 3 evaluations" in capsys.readouterr().out
    assert main(["batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2"), "--workers", "1"]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_batch_without_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    assert main(["batch", str(CASES), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "mascds[batch]" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_defect_on_one_patient_is_a_row_and_exit_70(kb: engine.KnowledgeBase, tmp_path: Path) -> None:
    from engine.population.batch import patient_rows
    from engine.population.batch_run import BatchOutcome, summarise

    def boom() -> engine.Snapshot:
        raise RuntimeError("boom")

    [row] = patient_rows(kb, "k", "s", boom, Options())
    assert row["status"] == "internal_error" and row["load_error"] == "internal error: RuntimeError: boom"
    (tmp_path / "results.ndjson").write_text(json.dumps(row) + "\n")
    summary = summarise(kb, tmp_path)
    assert summary["patients_with_internal_errors"] == 1 and summary["internal_errors"] == {"k": row["load_error"]}
    assert BatchOutcome(tmp_path, summary=summary).exit_status == "internal_errors"


def test_a_bundle_of_several_patients_is_a_row_per_patient(kb: engine.KnowledgeBase, client: Any,
                                                             tmp_path: Path) -> None:
    """Each patient of a shared bundle is evaluated with only its own resources, as the Bulk path joins them: the
    same rows as its own bundle, plus a warning for a resource that names no patient (used for no one)."""
    alone_rows, entries, pids = {}, [], []
    kinds = rule_kinds(kb)
    for p in BUNDLES[:2]:
        bundle = json.loads(p.read_text(encoding="utf-8"))
        entries += bundle["entry"]
        pid = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
        pids.append(pid)
        result = engine.evaluate(kb, engine.snapshot_from_resources([e["resource"] for e in bundle["entry"]],
                                                                    patient_id=pid).snapshot)
        alone_rows[pid] = result_row(kb, kinds, pid, pid, result)
    orphan = {"resourceType": "Observation", "id": "orphan", "status": "final", "subject": {"reference":
              "urn:uuid:not-in-this-bundle"}, "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
              "valueQuantity": {"value": 5000, "unit": "ng/mL"}, "effectiveDateTime": "2020-01-01T00:00:00Z"}
    entries.append({"fullUrl": "urn:uuid:orphan", "resource": orphan})
    folder = tmp_path / "in"
    folder.mkdir()
    shared = folder / "two-patients.json"
    shared.write_text(json.dumps({"resourceType": "Bundle", "id": "shared", "type": "collection",
                                  "entry": entries}), encoding="utf-8")
    outcome = run_batch(kb, [folder], tmp_path / "out", client=client, progress=False)
    rows = {r["key"]: r for r in journal_rows(tmp_path / "out")}
    assert set(rows) == {f"{shared}#Patient/{pid}" for pid in pids} and outcome.patients == 2
    for pid in pids:
        row = rows[f"{shared}#Patient/{pid}"]
        assert row["patient"] == pid and row["status"] != "not_evaluated", row["load_error"]
        assert clinical(row, False) | {"warnings": 0} == clinical(alone_rows[pid], False) | {"warnings": 0}
        assert [w for w in row["warnings"] if "Observation/orphan" in w and "names no patient" in w]
        assert len(row["warnings"]) == len(alone_rows[pid]["warnings"]) + 1
    # resumed after the first patient: only the second is evaluated again
    journal = tmp_path / "out" / "results.ndjson"
    first = journal.read_bytes().splitlines(keepends=True)[0]
    journal.write_bytes(first)
    again = run_batch(kb, [folder], tmp_path / "out", client=client, progress=False, resume=True)
    assert again.patients == 1 and again.resumed == 1
    assert len(by_key(tmp_path / "out")) == 2

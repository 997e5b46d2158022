"""FHIR R4 input: how much of real-shaped data mascds maps, and how fast it reads it.

    python benchmarks/fhir_bench.py [--data ../shared/data/fhir] [--rounds 3]

Mapping rate: resources that became at least one snapshot entry / resources of the types mascds reads, overall
and per type, over the 93 Synthea R4 bundles and over the HL7 R4 example resources (each read on its own, as a
CDS Hooks prefetch would hand it over). Throughput: the whole read of a file (JSON parse, validation of every
relevant resource with fhir.resources, mapping), median of the rounds, one process, one core.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import pin_one_core  # noqa: E402
from engine.fhir import RELEVANT_TYPES, FhirIngest, load_fhir, snapshot_from_resources  # noqa: E402
from engine.fhir_codes import code_tables  # noqa: E402


def mapped_by_type(ingest: FhirIngest, labels: dict[str, str], patients: set[str]) -> Counter[str]:
    """Resources that became entries, per type (entries name "Type/id", or the entry's place when it has no id).
    ``patients``: the Patient resources of the input (without one, the snapshot's patient is a placeholder)."""
    s = ingest.snapshot
    refs = {e.ref for section in (s.diagnoses, s.observations, s.findings, s.courses, s.orders, s.reactions,
                                  s.supports) for e in section}
    if s.patient.ref in patients:
        refs.add(s.patient.ref)
    return Counter(labels.get(r, r.split("/", 1)[0]) for r in refs)


def _patients(resources: list[dict[str, Any]], label: str) -> set[str]:
    return {f"Patient/{r['id']}" if r.get("id") else f"{label}[{i}]" for i, r in enumerate(resources)
            if r.get("resourceType") == "Patient"}


def _analyte_codes(resource: dict[str, Any]) -> list[str]:
    tables = code_tables()
    codes = [c.get("code", "") for part in [resource, *resource.get("component", [])]
             for c in part.get("code", {}).get("coding", []) if c.get("system") == "http://loinc.org"]
    return [c for c in codes if tables.analyte_for_loinc(c)]


def relevant_by_type(resources: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["resourceType"] for r in resources if r.get("resourceType") in RELEVANT_TYPES)


def report(title: str, mapped: Counter[str], relevant: Counter[str], seconds: float, files: int,
           resources: int) -> None:
    print(f"\n{title}")
    print(f"  {'type':<26}{'mapped':>8}{'relevant':>10}{'rate':>8}")
    for rtype in RELEVANT_TYPES:
        if relevant[rtype]:
            print(f"  {rtype:<26}{mapped[rtype]:>8}{relevant[rtype]:>10}{mapped[rtype] / relevant[rtype]:>8.1%}")
    m, r = sum(mapped.values()), sum(relevant.values())
    print(f"  {'all':<26}{m:>8}{r:>10}{m / r:>8.1%}")
    print(f"  throughput: {files / seconds:,.1f} files/s, {resources / seconds:,.0f} resources/s "
          f"({r / seconds:,.0f} relevant resources/s); {seconds * 1000:,.0f} ms for {files} files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fhir")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"mascds FHIR benchmark · Python {platform.python_version()} · {pin_one_core()} · {args.rounds} rounds")

    bundles = sorted((args.data / "synthea-r4").glob("*.json"))
    contents = [json.loads(p.read_text(encoding="utf-8")) for p in bundles]
    entries = sum(len(b.get("entry", [])) for b in contents)
    relevant: Counter[str] = Counter()
    mapped: Counter[str] = Counter()
    for path, b in zip(bundles, contents, strict=True):
        resources = [e["resource"] for e in b.get("entry", [])]
        ingest = load_fhir(path)
        labels = {f"Bundle.entry[{i}]": r["resourceType"] for i, r in enumerate(resources)}
        mapped += mapped_by_type(ingest, labels, _patients(resources, "Bundle.entry"))
        counted = relevant_by_type(resources)
        assert sum(counted.values()) == ingest.relevant, f"{path.name}: several patients?"
        relevant += counted
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for path in bundles:
            load_fhir(path)
        times.append(time.perf_counter() - start)
    report(f"Synthea R4: {len(bundles)} transaction bundles, {entries:,} resources of all types",
           mapped, relevant, statistics.median(times), len(bundles), entries)
    in_scope = [r for b in contents for r in (e["resource"] for e in b.get("entry", []))
                if r["resourceType"] == "Observation" and _analyte_codes(r)]
    print(f"  Observations coded with the LOINC code of an analyte mascds uses: {len(in_scope)}; "
          f"Observations mapped: {mapped['Observation']}")

    examples = sorted((args.data / "hl7-r4-examples").glob("*.json"))
    loaded = [json.loads(p.read_text(encoding="utf-8")) for p in examples]
    relevant, mapped = Counter(), Counter()
    for resource in loaded:
        ingest = snapshot_from_resources([resource])
        mapped += mapped_by_type(ingest, {"resources[0]": resource["resourceType"]}, _patients([resource], "resources"))
        relevant += relevant_by_type([resource])
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for p in examples:
            snapshot_from_resources([json.loads(p.read_text(encoding="utf-8"))])
        times.append(time.perf_counter() - start)
    report(f"HL7 R4 examples: {len(examples)} resources, each read on its own", mapped, relevant,
           statistics.median(times), len(examples), len(examples))


if __name__ == "__main__":
    main()

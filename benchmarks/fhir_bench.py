"""FHIR R4 input: how much of real-shaped data mascds maps, and how fast it reads it (lean path vs strict).

    python benchmarks/fhir_bench.py [--data ../shared/data/fhir] [--rounds 5]

Mapping rate: resources that became at least one snapshot entry / resources of the types mascds reads, overall
and per type, over the 93 Synthea R4 bundles and over the HL7 R4 example resources (each read on its own, as a
CDS Hooks prefetch would hand it over).

Read time, lean (the default: msgspec structs of the elements mascds reads) against strict (``strict=True``, the
fhir.resources models), interleaved in one process on one core (each round reads every input with both paths,
the order of the two alternating between rounds): per read, median and p99 over every (input, round), and the
ratio strict / lean. Inputs: the Synthea bundles (``load_fhir`` of the file: read, JSON parse, validation,
mapping), the HL7 examples (``snapshot_from_resources`` of the parsed resource, as a CDS Hooks prefetch), a small
record (8 resources, parsed) and a typical one (a shipped case written as FHIR, parsed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
from benchmarks.bench import pin_one_core  # noqa: E402
from engine.records.fhir import RELEVANT_TYPES, FhirIngest, load_fhir, snapshot_from_bundle, snapshot_from_resources  # noqa: E402
from engine.records.fhir_codes import code_tables  # noqa: E402


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


def report(title: str, mapped: Counter[str], relevant: Counter[str]) -> None:
    print(f"\n{title}")
    print(f"  {'type':<26}{'mapped':>8}{'relevant':>10}{'rate':>8}")
    for rtype in RELEVANT_TYPES:
        if relevant[rtype]:
            print(f"  {rtype:<26}{mapped[rtype]:>8}{relevant[rtype]:>10}{mapped[rtype] / relevant[rtype]:>8.1%}")
    m, r = sum(mapped.values()), sum(relevant.values())
    print(f"  {'all':<26}{m:>8}{r:>10}{m / r:>8.1%}")


def small_record() -> list[dict[str, Any]]:
    """8 resources: a patient, a diagnosis, five laboratory values and a medication given."""
    subject = {"reference": "Patient/small"}
    loinc = "http://loinc.org"
    ucum = "http://unitsofmeasure.org"

    def lab(i: int, code: str, value: float, unit: str) -> dict[str, Any]:
        return {"resourceType": "Observation", "id": f"o{i}", "status": "final", "subject": subject,
                "code": {"coding": [{"system": loinc, "code": code}]}, "effectiveDateTime": "2024-04-03T08:00:00Z",
                "valueQuantity": {"value": value, "unit": unit, "system": ucum, "code": unit}}

    return [
        {"resourceType": "Patient", "id": "small", "gender": "female", "birthDate": "2015-01-01"},
        {"resourceType": "Condition", "id": "c", "subject": subject, "onsetDateTime": "2024-03-01",
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "201796004"}]}},
        lab(1, "2276-4", 12000, "ng/mL"), lab(2, "26515-7", 90, "10*3/uL"), lab(3, "2571-8", 4.1, "mmol/L"),
        lab(4, "1920-8", 120, "U/L"), lab(5, "3255-7", 1.2, "g/L"),
        {"resourceType": "MedicationAdministration", "id": "m", "status": "completed", "subject": subject,
         "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                   "code": "612865"}]},
         "effectiveDateTime": "2024-04-03T10:00:00Z",
         "dosage": {"dose": {"value": 8, "unit": "mg/kg", "system": ucum, "code": "mg/kg"}}},
    ]


def _ms(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p99 * 1000


def lean_vs_strict(title: str, reads: list[Any], rounds: int) -> float:
    """Each read (a function of ``strict``) with both paths, interleaved; prints medians, p99 and the ratio."""
    for read in reads:  # warm: imports, caches, the models' first build
        read(False), read(True)
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for read in reads:
            for strict in ((False, True) if r % 2 == 0 else (True, False)):
                start = time.perf_counter()
                read(strict)
                times[strict].append(time.perf_counter() - start)
    (lean_med, lean_p99), (strict_med, strict_p99) = _ms(times[False]), _ms(times[True])
    ratio = strict_med / lean_med
    print(f"  {title:<44}{len(reads):>6}{lean_med:>10.3f}{lean_p99:>10.3f}{strict_med:>10.3f}{strict_p99:>10.3f}"
          f"{ratio:>8.1f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "fhir")
    parser.add_argument("--rounds", type=int, default=5)
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
    report(f"Synthea R4: {len(bundles)} transaction bundles, {entries:,} resources of all types", mapped, relevant)
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
    report(f"HL7 R4 examples: {len(examples)} resources, each read on its own", mapped, relevant)

    typical = engine.case_to_bundle(engine.load_case(ROOT / "cases" / "wu-2025-ruxolitinib.yaml"))
    small = small_record()
    print(f"\nRead time per input, lean vs strict, {args.rounds} rounds interleaved · load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {'input':<44}{'n':>6}{'lean ms':>10}{'p99':>10}{'strict ms':>10}{'p99':>10}{'ratio':>9}")
    lean_vs_strict(f"small record ({len(small)} resources)",
                   [lambda strict: snapshot_from_resources(small, "small", strict=strict)], args.rounds * 20)
    lean_vs_strict(f"typical record (a case as FHIR, {len(typical['entry'])} resources)",
                   [lambda strict: snapshot_from_bundle(typical, "typical", strict=strict)], args.rounds * 20)
    lean_vs_strict("HL7 R4 examples (1 resource each)",
                   [lambda strict, r=r: snapshot_from_resources([r], "hl7", strict=strict) for r in loaded],
                   args.rounds)
    lean_vs_strict(f"Synthea bundles (file: read+parse, ~{entries // len(bundles)} resources)",
                   [lambda strict, p=p: load_fhir(p, strict=strict) for p in bundles], args.rounds)


if __name__ == "__main__":
    main()

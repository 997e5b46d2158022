"""Fuzz: FHIR input. Bundles start from real data (every shipped case written as FHIR, the smallest Synthea
bundles, each HL7 R4 example) and are mutated: entries repeated identically or with a change, a second Patient,
Quantities mangled (code and unit that disagree, no system, spellings laboratories write, NaN, huge and tiny
decimals), contained resources of unknown types, extensions nested hundreds deep, keys dropped or replaced by
arbitrary JSON, references rewritten, entries reordered; and JSON text that Python reads but FHIR does not have.

Properties, for every input: reading it (``snapshot_from_bundle``, ``snapshot_from_resources``, ``load_fhir``)
and evaluating the snapshot raise nothing but a :class:`~engine.core.errors.MascdsError`; the durable_rules backend
and the reference backend give the same result; an input error makes the result incomplete; each input takes a
bounded time. And repeating entries identically, or reordering them, changes no answer (the bug that counted
a repeated pulse course twice). Every input that once broke mascds is an explicit ``@example``.
"""

from __future__ import annotations

import copy
import functools
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

import engine
from engine.authoring.casetest import case_files
from engine.core.errors import MascdsError
from engine.core.snapshot import Snapshot
from engine.records.fhir import load_fhir, snapshot_from_bundle, snapshot_from_resources

from ..conftest import CASES, RULES, SHARED
from .conftest import fuzz

FHIR_DATA = SHARED / "data" / "fhir"
PER_INPUT_SECONDS = 30.0  # reading and evaluating one input on both backends, on a loaded 2-core machine
FALLBACK_AT = "2024-06-01T00:00:00Z"  # evaluation time of a record without events
UCUM = "http://unitsofmeasure.org"

CASE_SEEDS = [f"case:{p.relative_to(CASES)}" for p in case_files([CASES])]
SYNTHEA_SEEDS = [f"synthea:{p.name}" for p in sorted((FHIR_DATA / "synthea-r4").glob("*.json"),
                                                      key=lambda p: p.stat().st_size)[:4]]
HL7_SEEDS = [f"hl7:{p.name}" for p in sorted((FHIR_DATA / "hl7-r4-examples").glob("*.json"))]
SEEDS = CASE_SEEDS + SYNTHEA_SEEDS + HL7_SEEDS


@functools.cache
def _seed(name: str) -> str:
    """The seed bundle as JSON text (each test mutates its own parsed copy)."""
    kind, _, rest = name.partition(":")
    if kind == "case":
        return json.dumps(engine.case_to_bundle(engine.load_case(CASES / rest)))
    path = FHIR_DATA / ("synthea-r4" if kind == "synthea" else "hl7-r4-examples") / rest
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("resourceType") == "Bundle":
        return json.dumps(data)
    return json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": data}]})


@functools.cache
def _kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


# --- mutations: ("op", ...) tuples applied in order; indices are taken modulo what there is ----------------
def _nested_extension(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/fuzz", "valueString": "x"}
    for _ in range(depth):
        ext = {"url": "http://example.org/fuzz", "extension": [ext]}
    return ext


def _quantities(node: Any, out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every JSON object that looks like a Quantity (has a value and a unit or code), depth first."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if "value" in n and ("code" in n or "unit" in n):
                out.append(n)
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)
    return out


def _resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", []) if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)]


def mutate(bundle: dict[str, Any], ops: list[tuple[Any, ...]]) -> dict[str, Any]:
    entries: list[Any] = bundle.setdefault("entry", [])
    for op in ops:
        kind, args = op[0], op[1:]
        resources = _resources(bundle)
        if kind == "dup_type":  # every entry of a type, again (the same resource sent twice)
            entries.extend(copy.deepcopy([e for e in entries if e.get("resource", {}).get("resourceType") == args[0]]))
        elif not entries and kind != "patient2":
            continue
        elif kind == "dup":
            entries.append(copy.deepcopy(entries[args[0] % len(entries)]))
        elif kind == "conflict":  # the same type and id, different content
            again = copy.deepcopy(entries[args[0] % len(entries)])
            if isinstance(again.get("resource"), dict):
                again["resource"]["id"] = again["resource"].get("id", "fuzz")
                again["resource"]["language"] = "fr"
            entries.append(again)
        elif kind == "patient2":
            entries.append({"resource": {"resourceType": "Patient", "id": args[0], "gender": "male",
                                         "birthDate": "1950-01-01"}})
        elif kind == "qty":
            found = _quantities(bundle, [])
            if found:
                q = found[args[0] % len(found)]
                code, unit, system, value = args[1:]
                for key, new in (("code", code), ("unit", unit), ("system", system), ("value", value)):
                    if new is None:
                        q.pop(key, None)
                    elif new != "keep":
                        q[key] = new
        elif kind == "contained" and resources:
            r = resources[args[0] % len(resources)]
            r.setdefault("contained", [])
            if isinstance(r["contained"], list):
                r["contained"].append(args[1])
        elif kind == "deep" and resources:
            r = resources[args[0] % len(resources)]
            r["extension"] = [_nested_extension(args[1])]
        elif kind == "drop" and resources:
            r = resources[args[0] % len(resources)]
            keys = sorted(k for k in r if k != "resourceType")
            if keys:
                del r[keys[args[1] % len(keys)]]
        elif kind == "set" and resources:
            r = resources[args[0] % len(resources)]
            keys = sorted(k for k in r if k != "resourceType") or ["id"]
            r[keys[args[1] % len(keys)]] = args[2]
        elif kind == "ref" and resources:
            r = resources[args[0] % len(resources)]
            field = "patient" if r.get("resourceType") == "AllergyIntolerance" else "subject"
            r[field] = {"reference": args[1]}
        elif kind == "reverse":
            entries.reverse()
    return bundle


JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | \
    st.text(max_size=20)
JSON_VALUE = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
UNITS = st.sampled_from(["keep", None, "", "mg/dL", "g/L", "G/L", "10*9/L", "10*3/uL", "x10E3/uL", "10^3/µL",
                         "103/uL", "MG/DL", "mm/[hr]", "mm/h", "mg/kg", "mg", "U/L", "Cel", "[degF]", "%",
                         "ng/mL", "/nL", "milligrams per decilitre", "\u200bmg/dL", "mg/L{FEU}"])
VALUES = st.sampled_from(["keep", None, 0, -1, 1e-300, 1e308, 10**400, float("nan"), float("inf"), "12",
                          True, 150.5]) | st.floats(allow_nan=True, allow_infinity=True)
CONTAINED = st.sampled_from([{"resourceType": "NoSuchType", "id": "x"}, {"id": "x"}, "text", [],
                             {"resourceType": "Medication", "id": "m", "code": {"text": "tocilizumab"}},
                             {"resourceType": "Bundle", "type": "collection"},
                             {"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]}])
OPS = st.one_of(
    st.tuples(st.just("dup"), st.integers(0, 500)),
    st.tuples(st.just("dup_type"), st.sampled_from(["MedicationRequest", "MedicationAdministration",
                                                    "Observation", "Patient", "AllergyIntolerance"])),
    st.tuples(st.just("conflict"), st.integers(0, 500)),
    st.tuples(st.just("patient2"), st.sampled_from(["patient", "other", "p"])),
    st.tuples(st.just("qty"), st.integers(0, 500), UNITS, UNITS,
              st.sampled_from(["keep", None, UCUM, "http://snomed.info/sct", ""]), VALUES),
    st.tuples(st.just("contained"), st.integers(0, 500), CONTAINED),
    st.tuples(st.just("deep"), st.integers(0, 500), st.sampled_from([1, 10, 63, 64, 65, 200, 400])),
    st.tuples(st.just("drop"), st.integers(0, 500), st.integers(0, 50)),
    st.tuples(st.just("set"), st.integers(0, 500), st.integers(0, 50), JSON_VALUE),
    st.tuples(st.just("ref"), st.integers(0, 500), st.sampled_from(
        ["Patient/other", "Group/1", "#x", "urn:uuid:nowhere", "", "Patient/", "http://x/Patient/p/_history/2"])),
    st.tuples(st.just("reverse")),
)
RECIPES = st.tuples(st.sampled_from(SEEDS), st.lists(OPS, max_size=4))

PULSES = "case:controls/wu-control-two-pulse-courses.yaml"
WU = "case:wu-2025-ruxolitinib.yaml"


def _evaluate_both(snap: Snapshot) -> engine.Result | None:
    """Both backends on the snapshot; they must agree. None when evaluation refused it (a MascdsError)."""
    at: int | str = snap.last_event() if snap.last_event() is not None else FALLBACK_AT  # type: ignore[assignment]
    out: dict[str, str] = {}
    result = None
    for backend in ("durable", "reference"):
        try:
            result = _kb().evaluate(snap, at, backend=backend)  # type: ignore[arg-type]
        except MascdsError:
            return None
        data = result.to_json()
        data.pop("backend")
        out[backend] = json.dumps(data, sort_keys=True, default=str)
    assert out["durable"] == out["reference"], "the backends disagree"
    return result


def _check(read: Any) -> None:
    started = time.perf_counter()
    try:
        ingest = read()
    except MascdsError as exc:
        assert str(exc).strip(), "an error without a message"
        event(f"refused: {type(exc).__name__}")
        return
    finally:
        assert time.perf_counter() - started < PER_INPUT_SECONDS
    snap = ingest.snapshot
    result = _evaluate_both(snap)
    event("evaluation refused" if result is None else
          f"evaluated, {'with' if snap.input_errors else 'without'} input errors")
    if result is not None and snap.input_errors:
        assert result.complete is False, "an input error left the result marked complete"
    assert time.perf_counter() - started < PER_INPUT_SECONDS


# The inputs named in the hardening issue, and those the fuzz run found, kept as regressions.
@example((PULSES, [("dup_type", "MedicationRequest"), ("dup_type", "MedicationAdministration")]))
@example((WU, [("conflict", 3)]))
@example((WU, [("patient2", "patient")]))
@example((WU, [("patient2", "other")]))
@example((WU, [("qty", 0, "mg/dL", "g/L", UCUM, "keep")]))
@example((WU, [("qty", 1, "mg/dL", "keep", None, "keep")]))
@example((WU, [("qty", 2, "G/L", "G/L", UCUM, "keep"), ("qty", 3, "x10E3/uL", "x10E3/uL", UCUM, 95)]))
@example((WU, [("contained", 2, {"resourceType": "NoSuchType", "id": "x"})]))
@example((WU, [("deep", 2, 200)]))
@example((WU, [("qty", 0, "keep", "keep", "keep", float("nan"))]))
@example((WU, [("qty", 0, "keep", "keep", "keep", 10**400)]))
@example((WU, [("qty", 0, "keep", "keep", "keep", 1e308)]))
@example(("case:yang-2023-ecmo-tocilizumab.yaml", [("qty", 4, "mm/[hr]", "mm/hr", UCUM, 30)]))
@fuzz
@given(RECIPES)
def test_mutated_bundles_read_and_evaluate_without_a_crash(recipe: tuple[str, list[tuple[Any, ...]]]) -> None:
    seed, ops = recipe
    bundle = mutate(json.loads(_seed(seed)), ops)
    _check(lambda: snapshot_from_bundle(bundle, "fuzz"))


@example((WU, [("dup_type", "Observation")]), None)
@example((WU, [("contained", 1, {"id": "x"})]), "patient")
@fuzz
@given(RECIPES, st.sampled_from([None, "patient", "other"]))
def test_mutated_resources_read_and_evaluate_without_a_crash(recipe: tuple[str, list[tuple[Any, ...]]],
                                                             patient_id: str | None) -> None:
    seed, ops = recipe
    bundle = mutate(json.loads(_seed(seed)), ops)
    resources = [e.get("resource") if isinstance(e, dict) else e for e in bundle.get("entry", [])]
    _check(lambda: snapshot_from_resources(resources, "fuzz", patient_id=patient_id))


def _answers(snap: Snapshot, at: int) -> tuple[Any, ...]:
    result = _kb().evaluate(snap, at)
    data = result.to_json()
    return (sorted(result.fired()), json.dumps(data.get("assessments"), sort_keys=True), result.complete)


@example(PULSES, [0, 1, 2, 3, 4, 5, 6, 7], False)
@fuzz
@given(st.sampled_from(CASE_SEEDS), st.lists(st.integers(0, 500), max_size=8), st.booleans())
def test_repeating_or_reordering_entries_changes_no_answer(seed: str, repeated: list[int], reverse: bool) -> None:
    original = json.loads(_seed(seed))
    snap = snapshot_from_bundle(original, "fuzz").snapshot
    at = snap.expectations[0].at if snap.expectations else snap.last_event()
    if at is None:
        return
    changed = copy.deepcopy(original)
    entries = changed["entry"]
    entries.extend(copy.deepcopy(entries[i % len(entries)]) for i in repeated)
    if reverse:
        entries.reverse()
    again = snapshot_from_bundle(changed, "fuzz").snapshot
    assert again.input_errors == ()
    assert _answers(again, at) == _answers(snap, at)


# --- JSON text -----------------------------------------------------------------------------------------------
SMALL = json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
    {"resource": {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "2014-03-01"}},
    {"resource": {"resourceType": "Observation", "id": "o", "status": "final",
                  "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
                  "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2024-04-03T08:00:00Z",
                  "valueQuantity": {"value": 95, "unit": "x10E3/uL", "system": UCUM, "code": "10*3/uL"}}}]})
SPLICES = st.sampled_from(["NaN", "-Infinity", "1e400", "[" * 3000, "{\"a\":" * 3000, "\"\\ud800\"", "\x00",
                           "\ufeff", "]", "}", ",", "\"resourceType\"", "0" * 5000, "-0", "1E-400"])


@example(0, "[" * 3000)
@example(SMALL.index("95"), "NaN")
@example(SMALL.index("95"), "1e400")
@fuzz
@given(st.integers(0, len(SMALL)), SPLICES | st.text(max_size=12))
def test_mangled_json_text_is_read_or_refused(tmp_path_factory: pytest.TempPathFactory, at: int,
                                              splice: str) -> None:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "bundle.json"
    path.write_text(SMALL[:at] + splice + SMALL[at:], encoding="utf-8", errors="surrogatepass")
    _check(lambda: load_fhir(path))


def test_the_seeds_are_there() -> None:
    assert len(CASE_SEEDS) >= 20 and len(SYNTHEA_SEEDS) == 4 and len(HL7_SEEDS) >= 100
    assert all(json.loads(_seed(s))["resourceType"] == "Bundle" for s in (PULSES, WU, SYNTHEA_SEEDS[0], HL7_SEEDS[0]))

"""Fuzz the engine core: snapshot dicts (the Python API's way in, through ingest) with values, doses, weights and
times across every magnitude, and numbers set directly on snapshots (past ingest's bounds) to reach the rule
engine with anything a float can hold.

Properties, for every input: nothing is raised but a ``MascdsError``; the durable_rules and reference backends
give the same whole result; an input error leaves the result incomplete; each input stays within a time and
memory budget. The inputs that once crashed mascds are explicit examples.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import engine
from engine.core.snapshot import Snapshot
from engine.core.vocab import vocabulary
from tests.conftest import CASES, RULES
from tests.fuzz.conftest import FUZZ_PROFILE, fuzz
from tests.magnitudes import MAGNITUDES, with_value

SECONDS_PER_INPUT = 20.0  # generous on a shared two-core machine; a runaway input takes minutes or forever
MEGABYTES_PER_INPUT = 256  # growth of the process's peak memory; the alias bomb this replaced took 2.4 GB
VOCAB = vocabulary()
ANALYTES = sorted(VOCAB.analytes)
DRUGS = sorted(VOCAB.drugs)
DOSE_UNITS = sorted(VOCAB.dose_units)
BASE_CASES = ["wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml", "assessments/mas-2016-criteria.yaml",
              "assessments/scores-complete.yaml", "treatment/glucocorticoid-ladder.yaml"]


@pytest.fixture(scope="module")
def kb() -> Iterator[engine.KnowledgeBase]:
    loaded = engine.load_knowledge_base(RULES)
    yield loaded
    loaded.close()


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


TRIED: Counter[str] = Counter()  # inputs per property, printed at exit of a long run (even an interrupted one)
if FUZZ_PROFILE == "fuzz-long":
    atexit.register(lambda: print("fuzz inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(TRIED.items()))
                                  + f"; total {sum(TRIED.values())}", file=sys.stderr))


@contextmanager
def bounded(name: str) -> Iterator[None]:
    """The input must finish within SECONDS_PER_INPUT and raise the peak memory by at most MEGABYTES_PER_INPUT."""
    TRIED[name] += 1
    peak, start = _peak_mb(), time.monotonic()
    yield
    took, grew = time.monotonic() - start, _peak_mb() - peak
    assert took < SECONDS_PER_INPUT, f"one input took {took:.1f} s"
    assert grew < MEGABYTES_PER_INPUT, f"one input raised peak memory by {grew:.0f} MB"


def both_backends(kb: engine.KnowledgeBase, snap: Snapshot, at: int | str | None = None) -> engine.Result:
    """Evaluate on both backends; they must agree on the whole result. Returns the durable one."""
    out: dict[str, Any] = {}
    results: dict[str, engine.Result] = {}
    for name in ("durable", "reference"):
        results[name] = kb.evaluate(snap, at=at, backend=name)  # type: ignore[arg-type]
        data = results[name].to_json()
        data.pop("backend")
        out[name] = json.dumps(data, sort_keys=True)
    assert out["durable"] == out["reference"], "the backends differ"
    result = results["durable"]
    if result.input_errors:
        assert not result.complete, "an input error must leave the result incomplete"
    return result


# --- numbers as authors and APIs write them ------------------------------------------------------------------

HUGE = 10**400
plausible = st.one_of(st.floats(min_value=0, max_value=2000), st.integers(min_value=0, max_value=2000))
numbers = st.one_of(
    *[plausible] * 12,  # most entries load, so evaluation is reached; the rest go to the edges
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.sampled_from([*MAGNITUDES, HUGE, -HUGE, 10**16, 2**63, 2**64 + 1, 5e-324]),
    st.builds(lambda m, e: m * 10.0**e, st.floats(-10, 10, allow_nan=False), st.integers(-14, 17)),
)
times = st.one_of(
    *[st.builds(lambda d: f"day {d}", st.integers(min_value=-5, max_value=30))] * 8,
    st.builds(lambda d: f"day {d}", st.integers(min_value=-(10**9), max_value=10**9)),
    st.builds(lambda d, h, m: f"day {d} {h:02d}:{m:02d}", st.integers(-400, 400), st.integers(0, 30),
              st.integers(0, 70)),
    st.sampled_from(["day 99999999", "day 1" + "0" * 400, "0001-01-01", "1849-12-31", "2499-12-31T23:59:59Z",
                     "2600-01-01", "2024-01-01T00:00:00+14:00", "9999-12-31", "day -300", "day 2 08:00"]),
)


def _observation(analyte: str, value: Any, unit: str | None, t: str) -> dict[str, Any]:
    a = VOCAB.analytes[analyte]
    return {"analyte": analyte, "value": value, "unit": unit or a.canonical, "time": t}


observations = st.builds(_observation, st.sampled_from(ANALYTES), numbers,
                         st.one_of(*[st.none()] * 6, st.sampled_from(["ng/mL", "mg/dL", "10*9/L", "%", "kg",
                                                                           "nonsense"])),
                         times)
medications = st.builds(lambda drug, dose, unit, start, freq: {"drug": drug, "frequency": freq, "dose": dose,
                                                               "unit": unit, "start": start},
                        st.sampled_from(DRUGS), numbers, st.sampled_from(DOSE_UNITS), times,
                        st.sampled_from(["once", "q24h", "q6h", "continuous"]))


def _case(obs: list[dict[str, Any]], meds: list[dict[str, Any]], weight: Any, birth: str | None) -> dict[str, Any]:
    patient: dict[str, Any] = {"sex": "female"}
    if birth is None:
        patient["age_years"] = 9
    else:
        patient["birth_date"] = birth
    if weight is not None:
        patient["weight"] = {"value": weight, "unit": "kg"}
    return {"case": {"id": "fuzz", "title": "fuzz"}, "patient": patient, "timeline": {"start": "2024-01-01"},
            "diagnoses": [{"code": "sjia", "onset": "day -300"}], "observations": obs, "medications": meds}


hostile_cases = st.builds(_case, st.lists(observations, max_size=4), st.lists(medications, max_size=2),
                          st.one_of(st.none(), st.floats(1, 150), numbers), st.sampled_from(
                              [None, None, None, "2015-06-01", "0001-01-01", "1850-01-01", "2499-01-01"]))
# Entries that load (in-range values, tiny ones included: 0.0001 ng/mL was the segfault), so evaluation is reached.
day = st.builds(lambda d, h: f"day {d} {h:02d}:00", st.integers(-5, 30), st.integers(0, 23))
loadable_cases = st.builds(
    _case,
    st.lists(st.builds(lambda a, v, t: _observation(a, v, None, t),
                       st.sampled_from(["ferritin", "platelets", "fibrinogen", "triglycerides", "ast", "esr"]),
                       st.one_of(st.floats(0, 2000), st.sampled_from([0.0001, 0.001, 1e-7, 5e-324, 0.0])), day),
             max_size=6),
    st.lists(st.builds(lambda drug, dose, t: {"drug": drug, "frequency": "once", "dose": dose, "unit": "mg/kg",
                                              "start": t},
                       st.sampled_from(DRUGS), st.one_of(st.floats(0, 100), st.just(1e-9)), day), max_size=2),
    st.one_of(st.none(), st.floats(0.2, 400)), st.sampled_from([None, "2015-06-01"]))
case_dicts = st.one_of(hostile_cases, loadable_cases)


def _ferritin(value: Any, t: str = "day 1") -> dict[str, Any]:
    return _case([_observation("ferritin", value, "ng/mL", t)], [], None, None)


def _dose(value: Any, unit: str = "mg/kg") -> dict[str, Any]:
    return _case([], [{"drug": "methylprednisolone", "frequency": "once", "dose": value, "unit": unit,
                       "start": "day 1"}], 30, None)


@fuzz
@given(case_dicts)
@example(_ferritin(0.0001))  # a ferritin/ESR ratio of 5e-07 segfaulted the engine (exit 139)
@example(_ferritin(0.001))
@example(_ferritin(0.0002))
@example(_ferritin(0.00001))
@example(_ferritin(1e-5))
@example(_ferritin(1e16))  # written 1e+16: the engine lost the fact
@example(_ferritin(math.nan))  # ValueError in units.py
@example(_ferritin(math.inf))  # OverflowError in units.py
@example(_ferritin(-math.inf))
@example(_ferritin(HUGE))  # 10**400: OverflowError
@example(_dose(math.nan))
@example(_dose(math.inf))
@example(_dose(HUGE))
@example(_dose(10**9, "g"))  # a dose heavier than any patient
@example(_case([], [], HUGE, None))  # a 401-digit body weight
@example(_case([], [], math.nan, None))
@example(_ferritin(500, "day 99999999"))  # year 275814: crashed at evaluation
@example(_ferritin(500, "day 1" + "0" * 400))  # a 401-digit day: OverflowError at evaluation
@example(_case([_observation("ferritin", 500, "ng/mL", "day 1")], [], None, "0001-01-01"))
@example(_case([_observation("ferritin", 0.0, None, "day 0 00:00"), _observation("esr", 5e-324, None, "day 3 01:00")],
               [], None, None))  # found by the long run: the ferritin/ESR ratio overflowed a float
def test_snapshot_dicts_load_or_fail_cleanly_and_the_backends_agree(kb: engine.KnowledgeBase,
                                                                    data: dict[str, Any]) -> None:
    with bounded("snapshot dicts"):
        try:
            snap = engine.snapshot_from_dict(data)
        except engine.LoadError as exc:
            assert exc.diagnostics, "a load error names its problems"
            assert all(d.line >= 1 and d.message for d in exc.diagnostics)
            return
        both_backends(kb, snap)


def test_generated_case_dicts_reach_evaluation() -> None:
    """Not all inputs may be refused at load, or the property above would test the loader alone."""
    loaded: list[bool] = []

    @settings(parent=fuzz, max_examples=60, database=None)
    @given(case_dicts)
    def draw(data: dict[str, Any]) -> None:
        try:
            engine.snapshot_from_dict(data)
        except engine.LoadError:
            loaded.append(False)
        else:
            loaded.append(True)

    draw()
    assert sum(loaded) >= len(loaded) // 4, f"only {sum(loaded)} of {len(loaded)} generated case dicts loaded"


@fuzz
@given(st.sampled_from(BASE_CASES), st.sampled_from([*ANALYTES, "doses", "all"]), st.sampled_from(MAGNITUDES),
       st.sampled_from([None, 1e-12, 0.2, 35.0, 400.0, 1e15]))
@example("wu-2025-ruxolitinib.yaml", "ferritin", 1e-7, None)
@example("wu-2025-ruxolitinib.yaml", "all", 1e15, 1e-12)
@example("assessments/scores-complete.yaml", "all", -2.5e-12, None)
def test_numbers_past_ingest_reach_the_engine_exactly(kb: engine.KnowledgeBase, case: str, which: str, value: float,
                                                     weight: float | None) -> None:
    """One analyte, the doses, or everything set to one magnitude (both signs, 1e-12..1e15), with the weight at
    the extremes too: no crash, no lost fact, both backends agree. Ingest would refuse most of these values; the
    engine must hold them exactly anyway."""
    snap = engine.load_case(CASES / case)
    if which == "all":
        snap = with_value(snap, value, weight)
    elif which == "doses":
        snap = dataclasses.replace(with_value(snap, value, weight), observations=snap.observations)
    else:
        snap = dataclasses.replace(snap, observations=tuple(
            dataclasses.replace(o, value=value) if o.analyte == which else o for o in snap.observations))
    with bounded("numbers past ingest"):
        for at in sorted({*snap.event_times(), *(e.at for e in snap.expectations)})[-3:]:
            both_backends(kb, snap, at)


# --- FHIR: the same ingest functions, reached through a bundle ------------------------------------------------

def _bundle(value_text: str, when: str = "2024-04-03T08:00:00Z") -> str:
    obs = {"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
           "subject": {"reference": "Patient/p"}, "effectiveDateTime": when,
           "valueQuantity": {"value": 0, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"}}
    patient = {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "2014-03-01"}
    text = json.dumps({"resourceType": "Bundle", "type": "collection",
                       "entry": [{"fullUrl": "Patient/p", "resource": patient}, {"resource": obs}]})
    return text.replace('"value": 0,', f'"value": {value_text},')


@fuzz
@given(st.one_of(st.sampled_from(["1e400", "-1e400", "1" + "0" * 400, "1" + "0" * 400 + ".5", "0.0001", "1e-7",
                                  "1e16", "NaN", "Infinity", "-0.0", "0." + "0" * 300 + "1"]),
                 st.builds(repr, st.floats(allow_nan=False, allow_infinity=False))))
@example("1" + "0" * 400)  # a 400-digit FHIR decimal: OverflowError in units.py
def test_fhir_observation_values_fail_cleanly(kb: engine.KnowledgeBase, value_text: str) -> None:
    with bounded("FHIR values"):
        try:
            snap = engine.snapshot_from_bundle(json.loads(_bundle(value_text))).snapshot  # json: NaN, 1e400 = inf
        except engine.MascdsError:
            return
        if not snap.event_times():
            assert snap.input_errors, "an observation left out must be named"
            return
        both_backends(kb, snap)

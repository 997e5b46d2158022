"""Properties of the assessments under missing data, checked on generated patients.

- Adding a measurement of an input that was not recorded can turn "indeterminate" into met or not met, but never
  changes a decided result: a decided result already holds for every value the missing input could take.
- "Indeterminate" is real: filling every missing input at the abnormal end of its possible range meets the
  assessment, and at the normal end does not.
- No assessment is decided from fewer inputs than it needs: with no inputs every one is indeterminate.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
from engine.core.vocab import vocabulary

from .conftest import RULES

FACTS = ("mas-classification-2016", "ms-score", "hscore", "hlh-2004-criteria")

# values on and around the published thresholds, in canonical units
LAB_VALUES: dict[str, list[float]] = {
    "temperature": [36.8, 38.3, 38.4, 39.4, 39.5],
    "ferritin": [300, 500, 684, 685, 2000, 6001],
    "platelets": [99, 100, 110, 181, 182, 300],
    "ast": [29, 30, 48, 49, 200],
    "triglycerides": [100, 132.9, 156, 157, 265, 400],
    "fibrinogen": [140, 150, 250, 360, 361, 450],
    "ldh": [200, 600, 2000],
    "haemoglobin": [85, 90, 92, 93, 120],
    "wbc": [3.0, 5.0, 5.1, 9.0],
    "neutrophils": [0.5, 1.0, 4.0],
    "scd25": [1000, 2399, 2400, 5000],
}
FINDINGS = ("cns-involvement", "haemorrhagic-manifestations", "active-arthritis", "known-immunosuppression",
            "hepatomegaly", "splenomegaly", "haemophagocytosis", "low-nk-activity")
# which end of an analyte's possible range points towards MAS/HLH in every score that uses it
HIGH_IS_ABNORMAL = {"temperature": True, "ferritin": True, "platelets": False, "ast": True, "triglycerides": True,
                    "fibrinogen": False, "ldh": True, "haemoglobin": False, "wbc": False, "neutrophils": False,
                    "scd25": True}
ABNORMAL_FINDING = {code: code != "active-arthritis" for code in FINDINGS}  # arthritis lowers the MS score

Inputs = tuple[dict[str, float], dict[str, bool]]


@pytest.fixture(scope="module")
def shipped() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


def statuses(kb: engine.KnowledgeBase, labs: dict[str, float], findings: dict[str, bool]) -> dict[str, str]:
    units = {a: vocabulary().analytes[a].canonical for a in LAB_VALUES}
    case: dict[str, Any] = {
        "case": {"id": "property", "title": "Generated"},
        "patient": {"sex": "male", "age_years": 9},
        "timeline": {"start": "2024-05-01"},
        "diagnoses": [{"code": "sjia", "onset": "day -200"}],
        "observations": [{"analyte": a, "value": v, "unit": units[a], "time": "day 0 07:00"} for a, v in labs.items()],
        "findings": [{"code": c, "present": p, "time": "day 0 08:00"} for c, p in findings.items()],
    }
    result = engine.evaluate(kb, engine.snapshot_from_dict(case), "day 0 12:00")
    return {a.fact: a.status for a in result.assessments if a.fact in FACTS}


def complete(labs: dict[str, float], findings: dict[str, bool], abnormal: bool) -> Inputs:
    """Every missing input at one end of its physically possible range."""
    full_labs = dict(labs)
    for analyte in LAB_VALUES:
        if analyte not in full_labs:
            lo, hi = vocabulary().analytes[analyte].plausible
            full_labs[analyte] = hi if HIGH_IS_ABNORMAL[analyte] == abnormal else lo
    full_findings = dict(findings)
    for code in FINDINGS:
        full_findings.setdefault(code, ABNORMAL_FINDING[code] == abnormal)
    return full_labs, full_findings


patients = st.tuples(
    st.fixed_dictionaries({}, optional={a: st.sampled_from(v) for a, v in LAB_VALUES.items()}),
    st.fixed_dictionaries({}, optional={c: st.booleans() for c in FINDINGS}),
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROPERTY
@given(patient=patients, data=st.data())
def test_a_new_input_never_changes_a_decided_result(shipped: engine.KnowledgeBase, patient: Inputs,
                                                    data: st.DataObject) -> None:
    labs, findings = patient
    absent = [a for a in LAB_VALUES if a not in labs] + [c for c in FINDINGS if c not in findings]
    if not absent:
        return
    name = data.draw(st.sampled_from(absent))
    more_labs, more_findings = dict(labs), dict(findings)
    if name in LAB_VALUES:
        more_labs[name] = data.draw(st.sampled_from(LAB_VALUES[name]))
    else:
        more_findings[name] = data.draw(st.booleans())
    before = statuses(shipped, labs, findings)
    after = statuses(shipped, more_labs, more_findings)
    for fact in FACTS:
        if before[fact] != "indeterminate":
            assert after[fact] == before[fact], (fact, name, labs, findings)


@PROPERTY
@given(patient=patients)
def test_indeterminate_means_the_missing_inputs_could_go_either_way(shipped: engine.KnowledgeBase,
                                                                    patient: Inputs) -> None:
    labs, findings = patient
    before = statuses(shipped, labs, findings)
    worst = statuses(shipped, *complete(labs, findings, abnormal=True))
    best = statuses(shipped, *complete(labs, findings, abnormal=False))
    for fact in FACTS:
        assert worst[fact] != "indeterminate" and best[fact] != "indeterminate", fact
        if before[fact] == "indeterminate":
            assert (worst[fact], best[fact]) == ("met", "not_met"), (fact, labs, findings)
        else:
            assert worst[fact] == best[fact] == before[fact], (fact, labs, findings)


def test_nothing_recorded_decides_nothing(shipped: engine.KnowledgeBase) -> None:
    assert statuses(shipped, {}, {}) == {fact: "indeterminate" for fact in FACTS}

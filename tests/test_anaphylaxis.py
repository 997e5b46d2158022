"""Anaphylaxis decided per reaction (engine/runtime/anaphylaxis.py): a table of recorded reactions and what the
NIAID/FAAN 2006 and WAO 2020 criteria make of them, the age-specific low systolic limits, and what an undecided
answer asks to record."""

from __future__ import annotations

from typing import Any

import pytest

import engine
from engine.core.times import parse_time
from engine.runtime.anaphylaxis import assess, low_systolic_limit

DOSE = "day 1 10:00"


def _snap(manifestations: list[str], onset: str = "day 1 10:30", bp: tuple[tuple[float, str], ...] = (),
          age: dict[str, Any] | None = None, dose: bool = True, onset_known: bool = True,
          dose_time: str = DOSE) -> engine.Snapshot:
    case: dict[str, Any] = {
        "case": {"id": "t", "title": "t"},
        "patient": age or {"age_years": 14},
        "timeline": {"start": "2024-01-01"},
        "medications": [{"drug": "anakinra", "route": "sc", "dose": 100, "unit": "mg", "frequency": "once",
                         "start": dose_time}] if dose else [],
        "reactions": [{"drug": "anakinra", "manifestations": manifestations, "time": onset,
                       "time_is_onset": onset_known}],
        "observations": [{"analyte": "systolic-bp", "value": v, "unit": "mmHg", "time": t} for v, t in bp],
    }
    return engine.snapshot_from_dict(case)


def _at(snap: engine.Snapshot, when: str = "day 3") -> int:
    return parse_time(when, snap.start)


# manifestations, systolic measurements, verdict, what an undecided answer asks for
TABLE: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("skin and respiratory (NIAID 1)", {"manifestations": ["urticaria", "wheeze"]}, "true", None),
    ("skin and gastrointestinal (NIAID 2)", {"manifestations": ["flushing", "vomiting"]}, "true", None),
    ("bronchospasm alone (WAO 2)", {"manifestations": ["bronchospasm"]}, "true", None),
    ("stridor alone (WAO 2: laryngeal)", {"manifestations": ["stridor"]}, "true", None),
    ("hypotension alone (NIAID 3, WAO 2)", {"manifestations": ["hypotension"]}, "true", None),
    ("recorded as anaphylaxis", {"manifestations": ["anaphylaxis"], "dose": False}, "true", None),
    ("skin only, no blood pressure", {"manifestations": ["urticaria"]}, "unknown",
     "systolic blood pressure during the reaction"),
    ("skin only, normal blood pressure", {"manifestations": ["urticaria"], "bp": ((104, "day 1 10:40"),)},
     "false", None),
    ("skin only, below 90 mmHg at 14", {"manifestations": ["pruritus"], "bp": ((88, "day 1 10:40"),)}, "true", None),
    ("skin only, a fall of more than 30 % above the age limit",
     {"manifestations": ["pruritus"], "bp": ((140, "day 1 09:00"), (95, "day 1 10:40"))}, "true", None),
    ("skin only, a fall of 30 % exactly is not more than 30 %",
     {"manifestations": ["pruritus"], "bp": ((140, "day 1 09:00"), (98, "day 1 10:40"))}, "false", None),
    ("skin only, blood pressure only 3 h after the onset", {"manifestations": ["urticaria"],
                                                            "bp": ((70, "day 1 13:30"),)}, "unknown",
     "systolic blood pressure during the reaction"),
    ("syncope alone, no blood pressure", {"manifestations": ["syncope"]}, "unknown",
     "systolic blood pressure during the reaction"),
    ("no manifestation of the criteria's groups", {"manifestations": ["rash", "fever"]}, "false", None),
    ("injection-site reaction and urticaria", {"manifestations": ["injection-site-reaction", "urticaria"],
                                               "bp": ((110, "day 1 10:40"),)}, "false", None),
    ("onset 5 h after the dose", {"manifestations": ["urticaria", "wheeze"], "onset": "day 1 15:00"}, "unknown",
     "acute onset of the reaction"),
    ("onset 30 h after the dose", {"manifestations": ["urticaria", "wheeze"], "onset": "day 2 16:00"}, "false",
     None),
    ("time is when it was recorded", {"manifestations": ["urticaria", "wheeze"], "onset_known": False}, "unknown",
     "onset of the reaction"),
    ("no dose of the drug recorded before it", {"manifestations": ["urticaria", "wheeze"], "dose": False},
     "unknown", "dose of anakinra before the reaction"),
    ("age known only to the year: 83 mmHg at 6 or 7", {"manifestations": ["urticaria"], "age": {"age_years": 6},
                                                      "dose_time": "day 200 10:00", "onset": "day 200 10:30",
                                                      "bp": ((83, "day 200 10:40"),)},
     "unknown", "birth date"),
]


@pytest.mark.parametrize(("label", "spec", "verdict", "asks"), TABLE, ids=[t[0] for t in TABLE])
def test_criteria_table(label: str, spec: dict[str, Any], verdict: str, asks: str | None) -> None:
    snap = _snap(**spec)
    found = assess(snap, 0, _at(snap, "day 250" if "day 200" in str(spec) else "day 3"))
    assert found.verdict == verdict, f"{label}: {found.basis}"
    if asks is None:
        assert found.missing == ()
    else:
        assert asks in {m.what for m in found.missing}, found.missing


def test_a_measurement_after_the_evaluation_time_is_not_used() -> None:
    snap = _snap(["urticaria"], bp=((70, "day 1 10:50"),))
    assert assess(snap, 0, _at(snap, "day 1 10:40")).verdict == "unknown"
    assert assess(snap, 0, _at(snap, "day 1 11:00")).verdict == "true"


@pytest.mark.parametrize(("years", "months", "limit"), [
    (0, 0, None), (0, None, None), (0, 1, 70.0), (0, 11, 70.0), (1, None, 72.0), (6, None, 82.0), (10, None, 90.0),
    (11, None, 90.0), (17, None, 90.0), (40, None, 90.0)])
def test_age_specific_low_systolic_limits(years: int, months: int | None, limit: float | None) -> None:
    assert low_systolic_limit(years, months) == limit


def test_the_reaction_fact_carries_the_decision_and_rules_name_what_to_record() -> None:
    kb = engine.load_knowledge_base("rules")
    snap = _snap(["urticaria"], age={"age_years": 9})
    result = kb.evaluate(snap, "day 1 11:00")
    undecided = {u.rule_id: u for u in result.indeterminate}
    missing = undecided["sampson2006.serious-reaction-any-drug"].missing
    assert any(m.what == "systolic blood pressure during the reaction" and "anakinra" in m.detail for m in missing)
    assert any(m.what == "reaction severity" for m in missing)

"""A seeded generator of realistic patient snapshots (30-60 facts) around the thresholds the rules use.

Used by the differential test and the benchmark. Snapshots are built directly (no YAML) so that tens of
thousands can be made quickly; values sit on, just above and just below rule thresholds on purpose.
"""

from __future__ import annotations

import random

from engine.core.snapshot import (
    Course,
    Diagnosis,
    Finding,
    Observation,
    Order,
    OrganSupport,
    Patient,
    Reaction,
    Snapshot,
)
from engine.core.units import parse_dose

DAY = 86400
START = 1_704_067_200  # 2024-01-01T00:00:00Z

ANALYTE_VALUES = {
    "temperature": [36.5, 37.9, 38.3, 38.4, 38.5, 39.4, 39.5, 40.2],
    "alt": [20, 48, 49, 120, 300, 800],
    "ast": [25, 48, 49, 150, 400, 1200],
    "spo2": [78, 84, 88, 91, 94, 98],
    "ferritin": [300, 500, 684, 685, 2000, 6001, 15000],
    "platelets": [50, 100, 110, 181, 182, 250],
    "fibrinogen": [100, 150, 250, 360, 361, 450],
    "triglycerides": [100, 156, 157, 265, 400],
    "ldh": [200, 600, 1500],
    "haemoglobin": [80, 89, 90, 92, 93, 120],
    "wbc": [2.0, 5.0, 5.1, 9.0],
    "neutrophils": [0.5, 0.99, 1.0, 4.0],
    "esr": [5, 20, 40, 90],
    "scd25": [1000, 2399, 2400, 5000],
    "body-weight": [12.0, 25.0, 30.0, 41.5],
}
VASOACTIVE = ["norepinephrine", "vasopressin", "dopamine", "epinephrine", "dobutamine", "milrinone"]
FREQ_HOURS = {"q24h": 24.0, "q12h": 12.0, "q72h": 72.0, "q2w": 336.0, "once": None, "continuous": None}
FINDINGS = ["splenomegaly", "hepatomegaly", "haemophagocytosis", "eosinophilia", "rash", "digital-clubbing",
            "cns-involvement", "haemorrhagic-manifestations", "active-arthritis", "known-immunosuppression",
            "low-nk-activity"]


def _t(rng: random.Random, lo: float = -5, hi: float = 30) -> int:
    return START + int(rng.uniform(lo, hi) * DAY) // 1800 * 1800


def _course(rng: random.Random, i: int, drug: str, route: str, regimen: str | None, freq: str,
            dose: tuple[float, str] | None, start: int, length_days: float | None) -> Course:
    end = None if length_days is None else start + int(length_days * DAY)
    if freq == "once":
        end = start
    return Course(f"gen:{i}", False, drug, route, regimen, parse_dose(*dose) if dose else None, freq,
                  FREQ_HOURS[freq], start, end)


def snapshot(rng: random.Random, n: int) -> tuple[Snapshot, int]:
    """One generated snapshot and an evaluation time."""
    birth = START - int(rng.uniform(1, 17) * 365.25 * DAY) if rng.random() < 0.4 else None
    age = None if birth is not None or rng.random() < 0.15 else float(rng.choice([2, 5, 11, 12, 15, 16, 11.5]))
    weight = rng.choice([None, 14.0, 28.0, 35.0])
    patient = Patient("gen:pt", False, rng.choice(["female", "male", None]), birth, age, weight)
    dx = []
    if rng.random() < 0.85:
        dx.append(Diagnosis("gen:dx1", False, "sjia", _t(rng, -400, -10), None))
    if rng.random() < 0.7:
        onset = _t(rng, -3, 10)
        dx.append(Diagnosis("gen:dx2", False, "mas", onset, onset + int(rng.uniform(5, 40) * DAY)
                            if rng.random() < 0.3 else None))
    obs = []
    for analyte, values in ANALYTE_VALUES.items():
        for _ in range(rng.choice([0, 0, 1, 2, 3, 4])):
            obs.append(Observation(f"gen:o{len(obs)}", False, analyte, float(rng.choice(values)), _t(rng), "gen"))
    if rng.random() < 0.3:  # a burst of readings within a day, as on a ward
        burst = _t(rng)
        for _ in range(rng.choice([2, 3, 4])):
            obs.append(Observation(f"gen:o{len(obs)}", False, "temperature",
                                   float(rng.choice(ANALYTE_VALUES["temperature"])),
                                   burst + int(rng.uniform(0, 0.5) * DAY) // 1800 * 1800, "gen"))
    if rng.random() < 0.05:
        dx.append(Diagnosis("gen:dx4", False, "trisomy-21", None, None))
    findings = [Finding(f"gen:f{i}", False, code, rng.random() < 0.6, _t(rng))
                for i, code in enumerate(rng.sample(FINDINGS, k=rng.choice([0, 1, 2, 3])))]
    courses: list[Course] = []
    pulse_start = _t(rng, -2, 8)
    scenario = rng.random()
    workup: int | None = None
    if scenario < 0.3:  # refractory-MAS shaped: pulse courses, then temperatures and enzymes after them
        dx.append(Diagnosis("gen:dx3", False, "mas", pulse_start - DAY, None))
        after = pulse_start + 12 * DAY
        for analyte, values in (("temperature", [37.2, 38.4, 39.1]), ("alt", [90, 200, 400]), ("ast", [80, 300])):
            for _ in range(rng.choice([0, 1, 2, 3])):
                obs.append(Observation(f"gen:o{len(obs)}", False, analyte, float(rng.choice(values)),
                                       after + int(rng.uniform(-1, 4) * DAY) // 1800 * 1800, "gen"))
    elif 0.5 <= scenario < 0.65:  # MAS work-up shaped: a whole panel and examination just before evaluation
        workup = _t(rng, 0, 28)
        for analyte, values in ANALYTE_VALUES.items():
            if analyte not in ("spo2", "body-weight") and rng.random() < 0.85:
                obs.append(Observation(f"gen:o{len(obs)}", False, analyte, float(rng.choice(values)),
                                       workup + int(rng.uniform(-2, 0) * DAY) // 1800 * 1800, "gen"))
        for code in FINDINGS:
            if rng.random() < 0.6:
                findings.append(Finding(f"gen:f{len(findings)}", False, code, rng.random() < 0.5,
                                        workup - int(rng.uniform(0, 1) * DAY) // 1800 * 1800))
    elif scenario < 0.5:  # ECMO shaped: ventilation, saturations, vasoactive drugs
        vent = _t(rng, 1, 10)
        dx.append(Diagnosis("gen:dx3", False, "mas", vent - DAY, None))
        obs.extend(Observation(f"gen:o{len(obs) + i}", False, "spo2", float(rng.choice([80, 84, 88, 92, 95])),
                               vent + int(rng.uniform(0.05, 1.5) * DAY) // 1800 * 1800, "gen")
                   for i in range(rng.choice([0, 1, 2, 3])))
    for k in range(rng.choice([0, 1, 2, 3, 3, 4])):
        dose = rng.choice([(30.0, "mg/kg"), (600.0, "mg"), (1.0, "g"), (15.0, "mg/kg"), None])
        courses.append(_course(rng, len(courses), "methylprednisolone", rng.choice(["iv", "iv", "iv", "oral"]),
                               rng.choice(["pulse", "pulse", None]), "q24h", dose,
                               pulse_start + k * 5 * DAY, 2.0))
    if rng.random() < 0.7:
        courses.append(_course(rng, len(courses), "ciclosporin", "oral", None, "q12h", None, _t(rng, -3, 6),
                               rng.choice([None, 10.0, 30.0])))
    if rng.random() < 0.6:
        courses.append(_course(rng, len(courses), "tocilizumab", "iv", None, rng.choice(["q2w", "once"]),
                               (rng.choice([8.0, 12.0]), "mg/kg"), _t(rng, -30, 5), rng.choice([None, 14.0, 20.0])))
    if rng.random() < 0.3:
        courses.append(_course(rng, len(courses), rng.choice(["ruxolitinib", "baricitinib"]), "oral", None,
                               "q12h", (10.0, "mg"), _t(rng, *rng.choice([(5, 25), (-120, -75)])),
                               rng.choice([None, 5.0])))
    if rng.random() < 0.3:
        courses.append(_course(rng, len(courses), "prednisolone", "oral", rng.choice([None, "taper"]), "q24h",
                               (2.0, "mg/kg"), _t(rng, -10, 20), rng.choice([None, 10.0])))
    if rng.random() < 0.15:
        courses.append(_course(rng, len(courses), "emapalumab", "iv", None, rng.choice(["once", "q72h"]),
                               (rng.choice([6.0, 3.0]), "mg/kg"), _t(rng, -40, 25), rng.choice([None, 12.0])))
    for drug in rng.sample(VASOACTIVE, k=rng.choice([0, 0, 1, 2, 3])):
        courses.append(_course(rng, len(courses), drug, "iv", None, "continuous", None, _t(rng, 0, 20),
                               rng.choice([None, 0.5, 2.0])))
    if rng.random() < 0.2:
        courses.append(_course(rng, len(courses), "anakinra", "sc", None, "q24h", (2.0, "mg/kg"), _t(rng, 0, 20),
                               rng.choice([None, 5.0])))
    # hx draws what the hypersensitivity rules need, so the draws of rng - and every snapshot the other rules were
    # exercised on - stay as they were
    hx = random.Random(f"hypersensitivity-{n}")
    orders = [Order(f"gen:or{i}", False, hx.choice(["tocilizumab", "tocilizumab", "anakinra", "ciclosporin"]),
                    rng.choice(["draft", "active"]), _t(rng))
              for i in range(rng.choice([0, 0, 1, 2]))]
    reactions = []
    for i in range(rng.choice([0, 0, 0, 1, 2])):
        ms = tuple(rng.sample(["anaphylaxis", "urticaria", "palpitations", "chest-tightness", "rash"],
                              k=rng.choice([1, 2])))
        if hx.random() < 0.5:  # manifestations of the other organ groups of the anaphylaxis criteria
            ms = tuple(dict.fromkeys((*ms, hx.choice(["wheeze", "flushing", "dyspnoea", "hypotension", "vomiting",
                                                      "syncope"]))))
        drug = rng.choice(["tocilizumab", "tocilizumab", "anakinra"])
        rx = Reaction(f"gen:rx{i}", False, "ciclosporin" if hx.random() < 0.25 else drug,
                      ms, rng.choice(["mild", "moderate", "severe", None]), _t(rng), hx.random() < 0.9)
        reactions.append(rx)
        if hx.random() < 0.4:  # a systolic blood pressure during the reaction, low or not for a child
            obs.append(Observation(f"gen:o{len(obs)}", False, "systolic-bp", float(hx.choice([60, 80, 95, 110])),
                                   rx.time + hx.choice([600, 3600, 3 * 3600]), "gen"))
    supports = []
    if 0.3 <= scenario < 0.5:
        vent_start = min((o.time for o in obs if o.analyte == "spo2"), default=_t(rng, 1, 10)) - 3600
        supports.append(OrganSupport("gen:s2", False, "mechanical-ventilation", vent_start, None))
        for drug in rng.sample(VASOACTIVE, k=rng.choice([1, 2, 3])):
            courses.append(_course(rng, len(courses), drug, "iv", None, "continuous", None,
                                   vent_start + int(rng.uniform(0, 1) * DAY), None))
    if rng.random() < 0.4:
        s = _t(rng, 0, 15)
        supports.append(OrganSupport("gen:s0", False, "mechanical-ventilation", s,
                                     s + int(rng.uniform(1, 8) * DAY) if rng.random() < 0.4 else None))
    if rng.random() < 0.15:
        s = _t(rng, 2, 20)
        supports.append(OrganSupport("gen:s1", False, "ecmo", s, s + int(2.5 * DAY) if rng.random() < 0.5 else None))
    remission: int | None = None
    if 0.65 <= scenario < 0.7:  # remission on ruxolitinib: sJIA, MAS resolved, afebrile after 12+ weeks of it
        remission = _t(rng, 5, 30)
        dx = [Diagnosis("gen:dx1", False, "sjia", START - 300 * DAY, None),
              Diagnosis("gen:dx2", False, "mas", START - 100 * DAY, START - 60 * DAY)]
        courses = [c for c in courses if c.drug not in ("tocilizumab", "ruxolitinib")]
        courses.append(_course(rng, len(courses), "ruxolitinib", "oral", None, "q12h", (10.0, "mg"),
                               remission - 100 * DAY, None))
        obs.append(Observation(f"gen:o{len(obs)}", False, "temperature", 36.8, remission - 7200, "gen"))
    unknown = frozenset({"medications"}) if rng.random() < 0.05 else frozenset()
    if unknown:
        courses = []
    snap = Snapshot(f"gen-{n}", "generated", patient, START, tuple(dx), tuple(obs), tuple(findings), tuple(courses),
                    tuple(orders), tuple(reactions), tuple(supports), unknown)
    if remission is not None:
        return snap, remission
    if workup is not None:
        return snap, workup + int(rng.uniform(0, 0.5) * DAY) // 1800 * 1800
    if scenario < 0.5:  # evaluate near the scenario, where its rules can be decided
        last = max(snap.event_times(), default=START)
        return snap, last + int(rng.uniform(-1, 1) * DAY) // 1800 * 1800
    return snap, _t(rng, 0, 30)


def long_timeline(days: int) -> dict[str, object]:
    """A case dict of an sJIA-MAS admission followed day by day: labs every morning, temperatures twice a day,
    three pulse courses, ciclosporin and then ruxolitinib twice a day (every value synthetic). About 3.2 events
    a day: 60 days give 191 event times. Used by the replay test and benchmark."""
    obs: list[dict[str, object]] = []
    for d in range(days):
        ferritin = 8000 * 1.3 ** min(d, 10) / 1.25 ** max(0, d - 10)
        platelets = max(30, 250 - 10 * min(d, 12) + 8 * max(0, d - 12))
        obs += [{"analyte": "ferritin", "value": round(ferritin), "unit": "ng/mL", "time": f"day {d} 07:00"},
                {"analyte": "platelets", "value": platelets, "unit": "10*9/L", "time": f"day {d} 07:00"},
                {"analyte": "ast", "value": 60 + 20 * min(d, 10), "unit": "U/L", "time": f"day {d} 07:00"},
                {"analyte": "temperature", "value": 39.5 if d < 18 else 37.0, "unit": "Cel",
                 "time": f"day {d} 06:00"},
                {"analyte": "temperature", "value": 39.0 if d < 18 else 36.8, "unit": "Cel",
                 "time": f"day {d} 18:00"}]
    pulses = [{"drug": "methylprednisolone", "route": "iv", "regimen": "pulse", "dose": 30, "unit": "mg/kg",
               "frequency": "q24h", "start": f"day {s} 10:00", "end": f"day {s + 2} 10:00"} for s in (2, 7, 12)]
    return {
        "case": {"id": f"long-{days}", "title": f"Synthetic {days}-day timeline"},
        "patient": {"sex": "female", "age_years": 9, "weight": {"value": 30, "unit": "kg"}},
        "timeline": {"start": "2024-01-01"},
        "diagnoses": [{"code": "sjia", "onset": "day -300"},
                      {"code": "mas", "onset": "day 1 08:00", "resolved": "day 30"}],
        "observations": obs,
        "medications": [*pulses, {"drug": "ciclosporin", "route": "oral", "frequency": "q12h", "start": "day 3 20:00"},
                        {"drug": "ruxolitinib", "route": "oral", "dose": 10, "unit": "mg", "frequency": "q12h",
                         "start": "day 16 08:00"}],
    }

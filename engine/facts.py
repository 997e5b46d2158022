"""Facts stage: a snapshot as of a time -> the flat facts both matching backends see.

Only what is known at the evaluation time is included: entries at or before it; an interval that has
not ended by then is ongoing (its planned end is not yet known). Numbers are numbers and times are epoch
seconds, so no backend can compare text with numbers. Fact ids are assigned here: the fact's position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ir import ADMIN, CLOCK, COURSE, DIAGNOSIS, FINDING, OBS, ONGOING, ORDER, PATIENT, REACTION, SUPPORT
from .snapshot import Course, Entry, Snapshot
from .units import dose_in
from .vocab import vocabulary

FactData = dict[str, Any]

SEVERITY_RANK = {s: i for i, s in enumerate(vocabulary().severities)}


@dataclass(frozen=True)
class Fact:
    id: str
    data: FactData  # what backends match on
    entry: Entry | None  # the snapshot entry it came from (None for derived and clock facts)
    extra: dict[str, Any] | None = None  # e.g. the course a dose belongs to, its position in the course


def _dose_fields(course: Course, weight: float | None) -> FactData:
    out: FactData = {}
    if course.dose is None:
        return out
    per_day: float | None
    if course.interval_hours is not None:
        per_day = 24.0 / course.interval_hours
    elif course.frequency == "once":
        per_day = 1.0
    else:
        per_day = None
    for dim, field in (("mass", "dm"), ("mass_per_kg", "dk"), ("mass_per_day", "ddm"),
                       ("mass_per_kg_per_day", "ddk"), ("rate_per_kg", "rk"), ("units_rate_per_kg", "ruk")):
        value = dose_in(dim, course.dose, weight, per_day)
        if value is not None:
            out[field] = value
    return out


def _weight(weights: list[tuple[int, float]], snap: Snapshot, t: int) -> float | None:
    """Latest body weight measured at or before ``t`` (``weights`` sorted by time), else the baseline."""
    best = None
    for time, value in weights:
        if time > t:
            break
        best = value
    return best if best is not None else snap.patient.weight_kg


def administration_times(course: Course, as_of: int) -> list[int]:
    """Discrete dose times of a course known at ``as_of`` (one time for single doses and infusions)."""
    if course.start > as_of:
        return []
    if course.interval_hours is None:
        return [course.start]
    step = round(course.interval_hours * 3600)
    last = as_of if course.end is None else min(course.end, as_of)
    n = (last - course.start) // step
    return [course.start + k * step for k in range(int(n) + 1)]


def build_facts(snap: Snapshot, as_of: int) -> list[Fact]:
    facts: list[Fact] = []
    dose_cache: dict[tuple[int, float | None], FactData] = {}

    def doses(ci: int, course: Course, weight: float | None) -> FactData:
        key = (ci, weight)
        found = dose_cache.get(key)
        if found is None:
            found = dose_cache[key] = _dose_fields(course, weight)
        return found

    def add(data: FactData, entry: Entry | None, extra: dict[str, Any] | None = None) -> None:
        fid = str(len(facts))
        facts.append(Fact(fid, data, entry, extra))

    def end_of(end: int | None) -> float:
        return float(end) if end is not None and end <= as_of else ONGOING

    age = snap.age_at(as_of)
    pt: FactData = {"k": PATIENT, "ts": float(as_of), "te": float(as_of)}
    if age is not None:
        pt["age_lo"], pt["age_hi"] = float(age[0]), float(age[1])
    if snap.patient.sex is not None:
        pt["sex"] = snap.patient.sex
    add(pt, snap.patient, {"age_exact": age, "weight": snap.weight_at(as_of)})
    for d in snap.diagnoses:
        onset = d.onset if d.onset is not None else None
        if onset is not None and onset > as_of:
            continue
        ts = float(onset) if onset is not None else -ONGOING
        add({"k": DIAGNOSIS, "code": d.code, "ts": ts, "te": end_of(d.resolved)}, d)
    for o in snap.observations:
        if o.time <= as_of:
            add({"k": OBS, "a": o.analyte, "v": o.value, "ts": float(o.time), "te": float(o.time)}, o)
    for f in snap.findings:
        if f.time <= as_of:
            add({"k": FINDING, "code": f.code, "p": 1.0 if f.present else 0.0, "ts": float(f.time),
                 "te": float(f.time)}, f)
    for ci, c in enumerate(snap.courses):
        if c.start > as_of:
            continue
        base: FactData = {"d": c.drug}
        if c.route is not None:
            base["r"] = c.route
        if c.regimen is not None:
            base["rg"] = c.regimen
        weights = snap.weights()
        course_fact = {"k": COURSE, **base, **doses(ci, c, _weight(weights, snap, c.start)), "ts": float(c.start),
                       "te": end_of(c.end)}
        add(course_fact, c, {"course": ci})
        times = administration_times(c, as_of)
        for n, t in enumerate(times):
            if c.frequency == "continuous":
                te = end_of(c.end)
            else:
                te = float(t)
            add({"k": ADMIN, **base, **doses(ci, c, _weight(weights, snap, t)), "ts": float(t), "te": te}, c,
                {"course": ci, "dose_number": n + 1, "time": t})
    for o2 in snap.orders:
        if o2.time <= as_of:
            add({"k": ORDER, "d": o2.drug, "st": o2.status, "ts": float(o2.time), "te": float(o2.time)}, o2)
    for r in snap.reactions:
        if r.time <= as_of:
            data: FactData = {"k": REACTION, "d": r.drug, "ts": float(r.time), "te": float(r.time)}
            if r.severity is not None:  # absent when not recorded: a severity test is then undecided
                data["sev"] = float(SEVERITY_RANK[r.severity])
            for m in r.manifestations:
                data[f"m_{m}"] = 1.0
            add(data, r)
    for s in snap.supports:
        if s.start <= as_of:
            add({"k": SUPPORT, "sk": s.kind, "ts": float(s.start), "te": end_of(s.end)}, s)
    return facts


def clock_fact(as_of: int) -> Fact:
    return Fact("c", {"k": CLOCK, "now": float(as_of), "ts": float(as_of), "te": float(as_of)}, None)

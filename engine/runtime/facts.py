"""Facts stage: a snapshot as of a time -> the flat facts both matching backends see.

Only what is known at the evaluation time is included: entries at or before it; an interval that has
not ended by then is ongoing (its planned end is not yet known). Numbers are numbers and times are epoch
seconds, so no backend can compare text with numbers. build_facts numbers the facts by position; a replay
session numbers them itself and asks fact_changes when each place in the record gains or changes its fact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from ..compiler.ir import ADMIN, CLOCK, COURSE, DIAGNOSIS, FINDING, OBS, ONGOING, ORDER, PATIENT, REACTION, SUPPORT
from ..core.snapshot import Course, Entry, Snapshot
from ..core.units import dose_in
from ..core.vocab import vocabulary
from .regimen import course_regimen

FactData = dict[str, Any]

SEVERITY_RANK = {s: i for i, s in enumerate(vocabulary().severities)}


# Sections in the order facts are built; a fact's key is (section, entry index, dose number): its place in
# the record, the same at every evaluation time (ids are per session), used to order ties and to diff times.
PATIENT_KEY, CLOCK_KEY, DERIVED_SECTION = (0, 0, 0), (98, 0, 0), 99
SECTIONS = {DIAGNOSIS: 1, OBS: 2, FINDING: 3, COURSE: 4, ADMIN: 4, ORDER: 5, REACTION: 6, SUPPORT: 7}


@dataclass(frozen=True)
class Fact:
    id: str
    data: FactData  # what backends match on
    entry: Entry | None  # the snapshot entry it came from (None for derived and clock facts)
    extra: dict[str, Any] | None = None  # e.g. the course a dose belongs to, its position in the course
    key: tuple[int, int, int] = (DERIVED_SECTION, 0, 0)


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


Key = tuple[int, int, int]


def exposure_end(course: Course, as_of: int) -> float:
    """Until when ``course`` exposes the patient, as known at ``as_of``: ongoing while it runs; once it has ended
    (``end`` is the last dose), one dosing interval of its recorded frequency after that dose, or the drug's own
    exposure period after it (drugs.yaml ``exposure``) when that is longer. A single dose ('once') or an infusion
    ('continuous') has no interval: without an exposure period, exposure ends with it. The one definition every
    rule condition ``exposed: true`` uses."""
    if course.end is None or course.end > as_of:
        return ONGOING
    drug = vocabulary().drugs.get(course.drug)
    days = drug.exposure_after_last_dose_days if drug is not None else None
    hours = max(course.interval_hours or 0.0, 24.0 * days if days else 0.0)
    return float(course.end + round(hours * 3600))


def _end_of(end: int | None, as_of: int) -> float:
    """An interval's end as known at ``as_of``: ongoing until it has happened."""
    return float(end) if end is not None and end <= as_of else ONGOING


Made = tuple[FactData, Entry, dict[str, Any] | None] | None


class _Record:
    """The facts of one snapshot, one place in the record (a key) at a time: each method gives the fact of one
    entry as of a time (None before it exists). build_facts calls them for one time; a replay calls them again
    only at the times an entry's fact appears or changes (fact_changes)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.weights = snap.weights()
        self.dose_cache: dict[tuple[int, float | None], FactData] = {}
        self.bases = [self._base(c, course_regimen(c, snap.weight_at(c.start))) for c in snap.courses]

    def doses(self, ci: int, course: Course, t: int) -> FactData:
        weight = _weight(self.weights, self.snap, t)
        found = self.dose_cache.get((ci, weight))
        if found is None:
            found = self.dose_cache[(ci, weight)] = _dose_fields(course, weight)
        return found

    @staticmethod
    def _base(c: Course, regimen: str | None) -> FactData:
        base: FactData = {"d": c.drug}
        if c.route is not None:
            base["r"] = c.route
        if regimen is not None:  # the label, or decided from the dose; absent when undecidable (regimen.py)
            base["rg"] = regimen
        return base

    def diagnosis(self, i: int, as_of: int) -> Made:
        d = self.snap.diagnoses[i]
        if d.onset is not None and d.onset > as_of:
            return None
        ts = float(d.onset) if d.onset is not None else -ONGOING
        return {"k": DIAGNOSIS, "code": d.code, "ts": ts, "te": _end_of(d.resolved, as_of)}, d, None

    def observation(self, i: int, as_of: int) -> Made:
        o = self.snap.observations[i]
        if o.time > as_of:
            return None
        return {"k": OBS, "a": o.analyte, "v": o.value, "ts": float(o.time), "te": float(o.time)}, o, None

    def finding(self, i: int, as_of: int) -> Made:
        f = self.snap.findings[i]
        if f.time > as_of:
            return None
        return ({"k": FINDING, "code": f.code, "p": 1.0 if f.present else 0.0, "ts": float(f.time),
                 "te": float(f.time)}, f, None)

    def course(self, ci: int, as_of: int) -> Made:
        c = self.snap.courses[ci]
        if c.start > as_of:
            return None
        data = {"k": COURSE, **self.bases[ci], **self.doses(ci, c, c.start), "ts": float(c.start),
                "te": _end_of(c.end, as_of), "xe": exposure_end(c, as_of)}
        return data, c, {"course": ci}

    def admin(self, ci: int, n: int, t: int, as_of: int) -> Made:
        """The n-th administration (from 0) of course ``ci``, given at ``t``."""
        c = self.snap.courses[ci]
        if t > as_of:
            return None
        te = _end_of(c.end, as_of) if c.frequency == "continuous" else float(t)
        data = {"k": ADMIN, **self.bases[ci], **self.doses(ci, c, t), "ts": float(t), "te": te}
        return data, c, {"course": ci, "dose_number": n + 1, "time": t}

    def order(self, i: int, as_of: int) -> Made:
        o = self.snap.orders[i]
        if o.time > as_of:
            return None
        return {"k": ORDER, "d": o.drug, "st": o.status, "ts": float(o.time), "te": float(o.time)}, o, None

    def reaction(self, i: int, as_of: int) -> Made:
        r = self.snap.reactions[i]
        if r.time > as_of:
            return None
        data: FactData = {"k": REACTION, "d": r.drug, "ts": float(r.time), "te": float(r.time)}
        if r.severity is not None:  # absent when not recorded: a severity test is then undecided
            data["sev"] = float(SEVERITY_RANK[r.severity])
        for m in r.manifestations:
            data[f"m_{m}"] = 1.0
        from .anaphylaxis import assess  # it reads doses through administration_times, defined here

        ana = assess(self.snap, i, as_of)
        if ana.verdict != "unknown":  # absent when the record cannot decide: an anaphylaxis test is then undecided
            data["ana"] = 1.0 if ana.verdict == "true" else 0.0
        return data, r, {"anaphylaxis": ana}

    def support(self, i: int, as_of: int) -> Made:
        s = self.snap.supports[i]
        if s.start > as_of:
            return None
        return {"k": SUPPORT, "sk": s.kind, "ts": float(s.start), "te": _end_of(s.end, as_of)}, s, None

    def places(self, horizon: int) -> Iterator[tuple[Key, Callable[[int], Made], tuple[int, ...]]]:
        """Every place in the record with a fact at some time up to ``horizon``, in build order: its key, its
        fact as of a time, and the times at which that fact appears or changes."""
        snap, sec = self.snap, SECTIONS
        for i, d in enumerate(snap.diagnoses):
            start = d.onset if d.onset is not None else -(2**62)
            yield (sec[DIAGNOSIS], i, 0), partial(self.diagnosis, i), _times(start, d.resolved)
        for i, o in enumerate(snap.observations):
            yield (sec[OBS], i, 0), partial(self.observation, i), (o.time,)
        for i, f in enumerate(snap.findings):
            yield (sec[FINDING], i, 0), partial(self.finding, i), (f.time,)
        for ci, c in enumerate(snap.courses):
            yield (sec[COURSE], ci, 0), partial(self.course, ci), _times(c.start, c.end)
            for n, t in enumerate(administration_times(c, horizon)):
                change = _times(t, c.end) if c.frequency == "continuous" else (t,)
                yield (sec[ADMIN], ci, n + 1), partial(self.admin, ci, n, t), change
        for i, o2 in enumerate(snap.orders):
            yield (sec[ORDER], i, 0), partial(self.order, i), (o2.time,)
        for i, r in enumerate(snap.reactions):
            from .anaphylaxis import change_times

            yield (sec[REACTION], i, 0), partial(self.reaction, i), (r.time, *change_times(snap, i))
        for i, s in enumerate(snap.supports):
            yield (sec[SUPPORT], i, 0), partial(self.support, i), _times(s.start, s.end)


def _times(start: int, end: int | None) -> tuple[int, ...]:
    return (start,) if end is None or end <= start else (start, end)


def patient_fact(snap: Snapshot, as_of: int, fid: str = "0") -> Fact:
    age = snap.age_at(as_of)
    pt: FactData = {"k": PATIENT, "ts": float(as_of), "te": float(as_of)}
    if age is not None:
        pt["age_lo"], pt["age_hi"] = float(age[0]), float(age[1])
    if snap.patient.sex is not None:
        pt["sex"] = snap.patient.sex
    return Fact(fid, pt, snap.patient, {"age_exact": age, "weight": snap.weight_at(as_of)}, PATIENT_KEY)


def build_facts(snap: Snapshot, as_of: int) -> list[Fact]:
    """Every fact of ``snap`` as of ``as_of``, in record order; ids are positions in the list."""
    rec = _Record(snap)
    facts = [patient_fact(snap, as_of)]

    def add(made: Made, key: Key) -> None:
        if made is not None:
            facts.append(Fact(str(len(facts)), made[0], made[1], made[2], key))

    sec = SECTIONS
    for i in range(len(snap.diagnoses)):
        add(rec.diagnosis(i, as_of), (sec[DIAGNOSIS], i, 0))
    for i in range(len(snap.observations)):
        add(rec.observation(i, as_of), (sec[OBS], i, 0))
    for i in range(len(snap.findings)):
        add(rec.finding(i, as_of), (sec[FINDING], i, 0))
    for ci, c in enumerate(snap.courses):
        add(rec.course(ci, as_of), (sec[COURSE], ci, 0))
        for n, t in enumerate(administration_times(c, as_of)):
            add(rec.admin(ci, n, t, as_of), (sec[ADMIN], ci, n + 1))
    for i in range(len(snap.orders)):
        add(rec.order(i, as_of), (sec[ORDER], i, 0))
    for i in range(len(snap.reactions)):
        add(rec.reaction(i, as_of), (sec[REACTION], i, 0))
    for i in range(len(snap.supports)):
        add(rec.support(i, as_of), (sec[SUPPORT], i, 0))
    return facts


@dataclass(frozen=True)
class Change:
    """A place in the record whose fact appears or changes at ``time`` (``make`` gives it as of a time)."""

    time: int
    key: Key
    make: Callable[[int], Made]


def fact_changes(snap: Snapshot, horizon: int) -> list[Change]:
    """When each fact of ``snap`` appears or changes, up to ``horizon``, in time order (the patient and clock
    facts change at every evaluation time and are not listed)."""
    changes = [Change(t, key, make) for key, make, times in _Record(snap).places(horizon) for t in times
               if t <= horizon]
    return sorted(changes, key=lambda c: (c.time, c.key))


def clock_fact(as_of: int, fid: str = "c") -> Fact:
    return Fact(fid, {"k": CLOCK, "now": float(as_of), "ts": float(as_of), "te": float(as_of)}, None, None, CLOCK_KEY)

"""The typed patient record the engine evaluates: every value in canonical units, every time in UTC epoch
seconds, every entry remembering where it was written (``ref``) and whether it is illustrative."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .units import Dose


@dataclass(frozen=True)
class Entry:
    ref: str  # "cases/x.yaml:40:7", or a FHIR resource id
    illustrative: bool


@dataclass(frozen=True)
class Observation(Entry):
    analyte: str
    value: float  # canonical unit
    time: int
    written: str  # value and unit as written


@dataclass(frozen=True)
class Finding(Entry):
    code: str
    present: bool
    time: int


@dataclass(frozen=True)
class Course(Entry):
    drug: str
    route: str | None
    regimen: str | None
    dose: Dose | None
    frequency: str
    interval_hours: float | None  # None for once/continuous
    start: int
    end: int | None  # None while ongoing
    stop_reason: str | None = None  # a stop_reasons term; None when not recorded


@dataclass(frozen=True)
class Order(Entry):
    drug: str
    status: str
    time: int
    dose: Dose | None = None


@dataclass(frozen=True)
class Reaction(Entry):
    drug: str
    manifestations: tuple[str, ...]
    severity: str | None  # None: not recorded
    time: int
    time_is_onset: bool = True  # False: ``time`` is when it was recorded; when it began is not known


@dataclass(frozen=True)
class OrganSupport(Entry):
    kind: str
    start: int
    end: int | None


@dataclass(frozen=True)
class Diagnosis(Entry):
    code: str
    onset: int | None
    resolved: int | None


@dataclass(frozen=True)
class Patient(Entry):
    sex: str | None
    birth: int | None  # epoch, when the birth date is known
    age_at_start: float | None  # years at timeline start, when only the age is known
    weight_kg: float | None  # baseline weight at timeline start


@dataclass(frozen=True)
class Expectation:
    at: int
    note: str
    fires: tuple[str, ...]
    not_fires: tuple[str, ...]
    indeterminate: tuple[str, ...]
    suppressed: tuple[str, ...]
    assessments: tuple[tuple[str, str], ...]
    ref: str
    suppressed_actions: tuple[tuple[str, str], ...] = ()  # (rule id, action target)
    # claims in clinical terms (docs/case-format.md)
    recommends: tuple[RecommendsClaim, ...] = ()
    no_suggestion_of: tuple[str, ...] = ()  # drug or class ids
    undecided: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (rule id or fact, what it must name as missing)
    decided_not_fired: tuple[str, ...] = ()
    scope: str | None = None


@dataclass(frozen=True)
class RecommendsClaim:
    """A recommendation a case expects: action kind and target (normalised), optionally urgency, DOI, rule."""

    kind: str
    target: str
    indicator: str | None = None
    doi: str | None = None
    rule: str | None = None

    def words(self) -> str:
        extra = [x for x in (self.indicator, f"doi {self.doi}" if self.doi else None, self.rule) if x]
        return f"{self.kind} {self.target}" + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class Snapshot:
    """One patient's record, ready for evaluation at any time point."""

    id: str
    title: str
    patient: Patient
    start: int | None  # timeline day 0
    diagnoses: tuple[Diagnosis, ...] = ()
    observations: tuple[Observation, ...] = ()
    findings: tuple[Finding, ...] = ()
    courses: tuple[Course, ...] = ()
    orders: tuple[Order, ...] = ()
    reactions: tuple[Reaction, ...] = ()
    supports: tuple[OrganSupport, ...] = ()
    unknown_sections: frozenset[str] = frozenset()
    expectations: tuple[Expectation, ...] = ()
    source: str = ""
    # Input that was recorded but could not be used (an unmapped resource or code): reported, not fatal.
    warnings: tuple[str, ...] = field(default=())
    # Entries that were wrong (an Observation with an unknown unit): left out and reported; the result is then
    # marked incomplete, because a rule may have needed them.
    input_errors: tuple[str, ...] = field(default=())

    def event_times(self) -> list[int]:
        """Every time something happens in the record, sorted."""
        times: set[int] = set()
        times.update(o.time for o in self.observations)
        times.update(f.time for f in self.findings)
        for c in self.courses:
            times.add(c.start)
            if c.end is not None:
                times.add(c.end)
        times.update(o.time for o in self.orders)
        times.update(r.time for r in self.reactions)
        for s in self.supports:
            times.add(s.start)
            if s.end is not None:
                times.add(s.end)
        times.update(d.onset for d in self.diagnoses if d.onset is not None)
        times.update(d.resolved for d in self.diagnoses if d.resolved is not None)
        return sorted(times)

    def last_event(self) -> int | None:
        times = self.event_times()
        return times[-1] if times else None

    def age_at(self, t: int) -> tuple[int, int] | None:
        """The possible age in whole years at ``t`` as (lowest, highest): exact by the calendar from a birth
        date; from an age at timeline start, "11 years" means anywhere in [11, 12) then, so months later the
        age may be 11 or 12 (a fractional age is taken as exact). None when no age is recorded."""
        if self.patient.birth is not None:
            born = datetime.fromtimestamp(self.patient.birth, tz=UTC)
            now = datetime.fromtimestamp(t, tz=UTC)
            years = now.year - born.year - ((now.month, now.day, now.time()) < (born.month, born.day, born.time()))
            return years, years
        if self.patient.age_at_start is not None and self.start is not None:
            age = self.patient.age_at_start
            elapsed = (t - self.start) / (365.2425 * 86400)
            width = 1.0 if float(age).is_integer() else 0.0
            low = math.floor(age + elapsed)
            high = math.floor(age + elapsed + width - 1e-9) if width else low
            return low, high
        return None

    def weights(self) -> list[tuple[int, float]]:
        """Body weights measured, sorted by time."""
        return sorted((o.time, o.value) for o in self.observations if o.analyte == "body-weight")

    def weight_at(self, t: int) -> float | None:
        """Latest body weight measured at or before ``t``, else the baseline weight."""
        best: Observation | None = None
        for o in self.observations:
            if o.analyte == "body-weight" and o.time <= t and (best is None or o.time >= best.time):
                best = o
        if best is not None:
            return best.value
        return self.patient.weight_kg

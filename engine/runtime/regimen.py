"""Glucocorticoid regimens decided from the recorded dose, not only from a label.

Buttgereit 2002 (doi:10.1136/ard.61.8.718) standardises the nomenclature: *pulse therapy* is more than 250 mg
prednisone equivalent per day (for one or a few days); very high dose more than 100 mg/day; high dose more than 30
up to 100 mg/day. The prednisone equivalent of each glucocorticoid is the reviewed potency table in
``engine/data/drugs.yaml`` (``prednisone_equivalent``, with its source).

A course's regimen, as rules match it (``regimen: pulse``):

- a course labelled with a regimen keeps its label (the prescriber's word); a label ``pulse`` on a course whose
  daily dose is decided at or below the threshold is kept but reported as a warning (check the dose or the label -
  in a small child 30 mg/kg/day of methylprednisolone is given as a pulse below 250 mg/day);
- an unlabelled glucocorticoid course is a pulse when its daily dose exceeds 250 mg prednisone equivalent. The
  threshold is absolute, so 1 g/day of IV methylprednisolone is a pulse in any child whatever the weight; a dose
  per kg is converted with the body weight at the course start (the latest measured at or before it, else the
  baseline weight);
- when that cannot be decided (no dose recorded, a dose per kg and no weight, a dose with no daily frequency) the
  course's regimen is unknown, and a condition on ``regimen: pulse`` about it is undecided, naming what to record;
- any other course has no regimen (``none``): a condition on a regimen is false for it.
"""

from __future__ import annotations

from ..compiler.ir import Missing
from ..core.snapshot import Course, Snapshot
from ..core.units import dose_in
from ..core.vocab import vocabulary

PULSE = "pulse"
NO_REGIMEN = "none"  # the fact value of a course decided to have no regimen
PULSE_ABOVE_MG_PER_DAY = 250.0  # prednisone equivalent, Buttgereit 2002


def doses_per_day(course: Course) -> float | None:
    if course.interval_hours is not None:
        return 24.0 / course.interval_hours
    return 1.0 if course.frequency == "once" else None


def prednisone_equivalent_per_day(course: Course, weight_kg: float | None) -> float | None:
    """The course's daily dose in mg prednisone equivalent; None when it is not a glucocorticoid with a potency
    in the table, or the daily dose cannot be computed (no dose, a per-kg dose and no weight, no frequency)."""
    factor = vocabulary().drugs[course.drug].prednisone_equivalent
    if factor is None or course.dose is None:
        return None
    mg_per_day = dose_in("mass_per_day", course.dose, weight_kg, doses_per_day(course))
    return None if mg_per_day is None else mg_per_day * float(factor)


def course_regimen(course: Course, weight_kg: float | None) -> str | None:
    """The regimen rules match for ``course``: its label, ``pulse`` from the dose, ``none``, or None (unknown)."""
    if course.regimen is not None:
        return course.regimen
    if vocabulary().drugs[course.drug].prednisone_equivalent is None:
        return NO_REGIMEN
    pe = prednisone_equivalent_per_day(course, weight_kg)
    if pe is None:
        return None
    return PULSE if pe > PULSE_ABOVE_MG_PER_DAY else NO_REGIMEN


def weight_at_start(snap: Snapshot, course: Course) -> float | None:
    return snap.weight_at(course.start)


def pulse_missing(course: Course, path: str) -> Missing:
    """What to record so that ``course`` can be told a pulse or not."""
    name = vocabulary().drugs[course.drug].name
    if course.dose is None:
        return Missing(f"{name} dose", "the daily dose decides whether the course is a pulse (> 250 mg prednisone "
                       "equivalent per day, Buttgereit 2002); record it, or label the course", path)
    if course.dose.dimension in ("mass_per_kg", "mass_per_kg_per_day"):
        return Missing("body weight", f"the {name} dose is per kg: the weight converts it to mg/day to decide "
                       "whether it is a pulse (> 250 mg prednisone equivalent per day)", path)
    return Missing("dosing frequency", f"the {name} daily dose cannot be computed from the record to decide "
                   "whether it is a pulse", path)


def regimen_warnings(snap: Snapshot) -> list[str]:
    """A course labelled pulse whose decided daily dose is not above the pulse threshold."""
    out: list[str] = []
    for c in snap.courses:
        if c.regimen != PULSE:
            continue
        pe = prednisone_equivalent_per_day(c, weight_at_start(snap, c))
        if pe is not None and pe <= PULSE_ABOVE_MG_PER_DAY:
            out.append(f"{c.ref}: labelled pulse, but its daily dose is {pe:g} mg prednisone equivalent, not above "
                       f"the {PULSE_ABOVE_MG_PER_DAY:g} mg/day of pulse therapy (Buttgereit 2002); the label is "
                       "kept: check the dose or the label")
    return out


__all__ = ["PULSE_ABOVE_MG_PER_DAY", "course_regimen", "prednisone_equivalent_per_day", "pulse_missing",
           "regimen_warnings"]

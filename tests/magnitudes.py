"""Numbers across magnitudes for the engine's number tests: every value a rule can compare, set to each one.

The sweep bypasses ingest's plausibility bounds on purpose: it proves what reaches the rule engine is held exactly
whatever its size, so the bounds are a clinical safeguard and not what keeps the engine alive.
"""

from __future__ import annotations

import dataclasses

from engine.core.snapshot import Snapshot
from engine.core.units import Dose

# 1e-12 .. 1e15 in both signs, with a mantissa that is not a power of ten, and zero.
MAGNITUDES = sorted({sign * mantissa * 10.0 ** k for k in range(-12, 16) for mantissa in (1.0, 2.5)
                     for sign in (1, -1)} | {0.0})


def with_value(snap: Snapshot, value: float, weight: float | None = None) -> Snapshot:
    """``snap`` with every observation value and every dose set to ``value`` (and the weight to ``weight``)."""
    # Body weight divides doses: it keeps its (plausible, positive) value unless ``weight`` is given.
    observations = tuple(o if o.analyte == "body-weight" else dataclasses.replace(o, value=value)
                         for o in snap.observations)
    courses = tuple(dataclasses.replace(c, dose=Dose(value, c.dose.dimension, f"{value!r}"))
                    if c.dose is not None else c for c in snap.courses)
    orders = tuple(dataclasses.replace(o, dose=Dose(value, o.dose.dimension, f"{value!r}"))
                   if o.dose is not None else o for o in snap.orders)
    patient = snap.patient if weight is None else dataclasses.replace(snap.patient, weight_kg=weight)
    return dataclasses.replace(snap, observations=observations, courses=courses, orders=orders, patient=patient)

"""Unit normalisation through the reviewed table (``engine/data/``), never a generic library.

Values are converted with exact fractions and rounded once, to 10 significant digits, so that writing a
case in other units (156 mg/dL as 1.76124 mmol/L) gives back the same canonical number and no boundary
flips from floating-point noise. Labs are never reported to 10 significant digits, so nothing is lost.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass
from fractions import Fraction

from .errors import choices_hint
from .vocab import vocabulary

SIGNIFICANT_DIGITS = 10


class UnitError(ValueError):
    """An unknown unit, or a unit that does not fit the analyte; ``hint`` says what would."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class ImpossibleValue(UnitError):
    """A number that cannot be a measurement or a dose: NaN, infinity, or too large for a float (10**400)."""


def shown(value: float | int) -> str:
    """A number as written, for messages; never fails (``f"{10**400:g}"`` raises OverflowError)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[0]}.{digits[1:4]}e+{len(digits) - 1} ({len(digits)} digits)"
    try:
        return f"{value:g}"
    except (OverflowError, ValueError, TypeError):
        return repr(value)


def exact_number(value: float | int) -> bool:
    """Whether ``value`` is a finite float, or an integer a float holds exactly (at most 2**53)."""
    if isinstance(value, int):
        return abs(value) <= 2**53
    return math.isfinite(value)


def finite(value: float | int, what: str) -> float:
    """``value`` as a finite float, or :class:`ImpossibleValue` naming ``what`` it was meant to be."""
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):
        number = math.inf
    if not math.isfinite(number):
        raise ImpossibleValue(f"{what} of {shown(value)} is not a finite number",
                              "write the measured number (NaN, infinity and numbers beyond 1e308 are not values)")
    return number


def _round(value: Fraction | float) -> float:
    return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")


def analyte_units(analyte: str) -> list[str]:
    return sorted(vocabulary().analytes[analyte].units)


def to_canonical(analyte: str, value: float, unit: str) -> float:
    """Convert ``value`` in ``unit`` (as written) into the analyte's canonical unit; a value that is not a finite
    number raises :class:`ImpossibleValue` (a :class:`UnitError`, so every caller already reports it)."""
    vocab = vocabulary()
    a = vocab.analytes[analyte]
    value = finite(value, f"a {a.name}")
    code = vocab.unit_code(unit)
    if code is None:
        raise UnitError(f"unknown unit '{unit}' for {a.name}",
                        choices_hint(unit, [vocab.display_unit(u) for u in a.units] + list(a.units)))
    conv = a.units.get(code)
    if conv is None:
        raise UnitError(f"unit '{unit}' does not apply to {a.name}",
                        "use one of: " + ", ".join(vocab.display_unit(u) for u in sorted(a.units)))
    canonical = _round((Fraction(value) + conv.offset) * conv.factor)
    if canonical != 0 and abs(canonical) < smallest_value():
        floor = f"{smallest_value():.3g} {vocab.display_unit(a.canonical)}"
        raise ImpossibleValue(f"{a.name} of {shown(value)} {unit} is too small to compute with",
                              f"write 0, or a value of at least {floor}")
    return canonical


@functools.cache
def smallest_value() -> float:
    """The smallest nonzero magnitude a value may have: any plausible value divided by it is still a float.

    Rules divide one value by another (the ferritin/ESR ratio); an ESR of 5e-324 made that ratio 1e329, beyond
    any float, and crashed the evaluation. This is a bound of arithmetic, not of clinical plausibility: it is
    about 1e-302, hundreds of orders of magnitude below any measurement."""
    largest = max(float(a.plausible[1]) for a in vocabulary().analytes.values())
    return largest / sys.float_info.max


def from_canonical(analyte: str, value: float, unit: str) -> float:
    """The inverse of :func:`to_canonical` (used by tests and converters)."""
    vocab = vocabulary()
    a = vocab.analytes[analyte]
    code = vocab.unit_code(unit)
    if code is None or code not in a.units:
        raise UnitError(f"unit '{unit}' does not apply to {a.name}", "")
    conv = a.units[code]
    return _round(Fraction(value) / conv.factor - conv.offset)


@dataclass(frozen=True)
class Dose:
    """A dose normalised into the base unit of its dimension (see units.yaml)."""

    value: float
    dimension: str  # mass | mass_per_kg | mass_per_day | mass_per_kg_per_day | rate_per_kg | ...
    written: str  # as the author wrote it, for display

    @property
    def unit(self) -> str:
        return vocabulary().dose_display[self.dimension]


# The largest dose of each dimension (in its base unit, see units.yaml) that is physically possible. These are NOT
# clinical limits: they catch data-entry errors (a dose in the wrong field, digits repeated) the way the analyte
# table's plausible ranges do. No administration, and no day of them, can put more drug into a patient than the
# patient weighs: at most the heaviest plausible body (the body-weight plausible maximum, 400 kg = 4e8 mg) in
# total, and at most 1 kg of drug per kg of body weight (1e6 mg/kg); a rate is held to the same 1 kg/kg over one
# day (1e9 ug/kg / 1,440 min). International units have no mass equivalent in the reviewed table, so a U/kg/h rate
# is only required to be a finite number.
def dose_limit(dimension: str) -> float | None:
    """The physically possible maximum of a dose of ``dimension``, in its base unit (None: finite is enough)."""
    body_mg = vocabulary().analytes["body-weight"].plausible[1] * 1_000_000
    return {"mass": body_mg, "mass_per_day": body_mg, "mass_per_kg": 1_000_000.0,
            "mass_per_kg_per_day": 1_000_000.0, "rate_per_kg": 1_000_000_000 / 1440}.get(dimension)


def parse_dose(value: float, unit: str) -> Dose:
    """A dose as written; an unknown unit raises :class:`UnitError`, a dose that is not a finite number or is
    beyond :func:`dose_limit` raises :class:`ImpossibleValue`."""
    vocab = vocabulary()
    du = vocab.dose_unit(unit)
    if du is None:
        raise UnitError(f"unknown dose unit '{unit}'",
                        choices_hint(unit, list(vocab.dose_units) + list(vocab.dose_aliases)))
    number = finite(value, "a dose")
    base = _round(Fraction(number) * du.factor)
    limit = dose_limit(du.dimension)
    if limit is not None and abs(base) > limit:
        shown_unit = vocab.dose_display[du.dimension]
        raise ImpossibleValue(f"a dose of {shown(value)} {unit} ({base:g} {shown_unit}) is physically impossible",
                              f"no dose exceeds {limit:g} {shown_unit} (more drug than the patient weighs); "
                              "check the value and unit")
    return Dose(base, du.dimension, f"{shown(value)} {unit}")


def dose_in(dimension: str, dose: Dose, weight_kg: float | None, doses_per_day: float | None) -> float | None:
    """Express ``dose`` in ``dimension``; None when that needs a weight or frequency we do not have.

    Plain floats, rounded once to 10 significant digits like every other conversion: a dose of exactly 30 mg/kg
    stays exactly 30."""
    value = dose.value
    per_kg = dose.dimension in ("mass_per_kg", "mass_per_kg_per_day")
    daily = dose.dimension in ("mass_per_day", "mass_per_kg_per_day")
    want_per_kg = dimension in ("mass_per_kg", "mass_per_kg_per_day")
    want_daily = dimension in ("mass_per_day", "mass_per_kg_per_day")
    if dose.dimension in ("rate_per_kg", "units_rate_per_kg") or dimension in ("rate_per_kg", "units_rate_per_kg"):
        return dose.value if dose.dimension == dimension else None
    if per_kg != want_per_kg:
        if weight_kg is None:
            return None
        value = value / weight_kg if want_per_kg else value * weight_kg
    if daily != want_daily:
        if doses_per_day is None:
            return None
        value = value * doses_per_day if want_daily else value / doses_per_day
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")

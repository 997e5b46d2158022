"""Unit normalisation through the reviewed table (``engine/data/``), never a generic library.

Values are converted with exact fractions and rounded once, to 10 significant digits, so that writing a
case in other units (156 mg/dL as 1.76124 mmol/L) gives back the same canonical number and no boundary
flips from floating-point noise. Labs are never reported to 10 significant digits, so nothing is lost.
"""

from __future__ import annotations

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


def _round(value: Fraction | float) -> float:
    return float(f"{float(value):.{SIGNIFICANT_DIGITS}g}")


def analyte_units(analyte: str) -> list[str]:
    return sorted(vocabulary().analytes[analyte].units)


def to_canonical(analyte: str, value: float, unit: str) -> float:
    """Convert ``value`` in ``unit`` (as written) into the analyte's canonical unit."""
    vocab = vocabulary()
    a = vocab.analytes[analyte]
    code = vocab.unit_code(unit)
    if code is None:
        raise UnitError(f"unknown unit '{unit}' for {a.name}",
                        choices_hint(unit, [vocab.display_unit(u) for u in a.units] + list(a.units)))
    conv = a.units.get(code)
    if conv is None:
        raise UnitError(f"unit '{unit}' does not apply to {a.name}",
                        "use one of: " + ", ".join(vocab.display_unit(u) for u in sorted(a.units)))
    return _round((Fraction(value) + conv.offset) * conv.factor)


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


def parse_dose(value: float, unit: str) -> Dose:
    vocab = vocabulary()
    du = vocab.dose_unit(unit)
    if du is None:
        raise UnitError(f"unknown dose unit '{unit}'",
                        choices_hint(unit, list(vocab.dose_units) + list(vocab.dose_aliases)))
    return Dose(_round(Fraction(value) * du.factor), du.dimension, f"{value:g} {unit}")


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

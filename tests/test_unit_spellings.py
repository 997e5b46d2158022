"""Unit spellings laboratories actually write (engine/data/units.yaml, each with its source), cross-checked with
pint: each spelling below is restated in pint's own terms, independently of the table, and the value mascds
reads must be the value pint computes. And case is folded only where it cannot turn one unit into another:
``G/L`` is giga per litre, never grams; ``MG/DL`` is not guessed; a superscript lost in copying (``103/uL``) is
refused, not read as 103 per microlitre."""

from __future__ import annotations

import pint
import pytest

from engine.core.units import UnitError, to_canonical
from engine.core.vocab import fold_unit, vocabulary

UREG = pint.UnitRegistry()
COUNTS = [a for a, spec in vocabulary().analytes.items() if spec.canonical == "10*9/L"]

# spelling as written -> the same quantity in pint's terms (a count per volume)
COUNT_SPELLINGS = {
    "x10E3/uL": "1e3 / microliter", "x10E3/µL": "1e3 / microliter", "10E3/uL": "1e3 / microliter",
    "x10e3/uL": "1e3 / microliter", "x10e3 cells/uL": "1e3 / microliter",
    "10^3/µL": "1e3 / microliter", "10^3/μL": "1e3 / microliter",  # micro sign and Greek mu
    "x10^3/µL": "1e3 / microliter", "×10³/µL": "1e3 / microliter", "x 10³/µL": "1e3 / microliter",
    "10³/uL": "1e3 / microliter", "K/uL": "1e3 / microliter", "K/µL": "1e3 / microliter",
    "Thous/uL": "1e3 / microliter", "thou/mcL": "1e3 / microliter",
    "10^3/mm3": "1e3 / millimeter ** 3", "TH/mm3": "1e3 / millimeter ** 3", "10³/mm³": "1e3 / millimeter ** 3",
    "G/L": "1e9 / liter", "G/l": "1e9 / liter", "Giga/L": "1e9 / liter", "giga/l": "1e9 / liter",
    "10E9/L": "1e9 / liter", "x10E9/L": "1e9 / liter", "x 10(9)/L": "1e9 / liter", "×10⁹/L": "1e9 / liter",
    "x10^9 / L": "1e9 / liter", "bill/L": "1e9 / liter", "/nL": "1 / nanoliter", "/nl": "1 / nanoliter",
    "/µl": "1 / microliter", "cells/uL": "1 / microliter", "/mm³": "1 / millimeter ** 3",
    "cells/mm3": "1 / millimeter ** 3",
}
# Refused: a lost superscript (103 for 10³), case guessed into another unit, prefixes alone.
REFUSED = ["103/uL", "109/L", "MG/DL", "Mg/dL", "mG/dL", "g/l x", "Gg/L", "KG/uL"]


def _pint_in_canonical(spec: str, value: float) -> float:
    scale, _, rest = spec.partition(" ")
    q = UREG.Quantity(value * float(scale), "1 " + rest)
    return float(q.to("1 / liter").magnitude / 1e9)  # canonical: 10^9 per litre


@pytest.mark.parametrize("analyte", COUNTS)
@pytest.mark.parametrize("spelling", sorted(COUNT_SPELLINGS))
def test_count_spellings_read_as_pint_computes(analyte: str, spelling: str) -> None:
    for value in (0.5, 150.0, 432.1):
        assert to_canonical(analyte, value, spelling) == pytest.approx(
            _pint_in_canonical(COUNT_SPELLINGS[spelling], value), rel=1e-12), (spelling, value)


def test_every_count_analyte_is_covered() -> None:
    assert {"platelets", "wbc", "neutrophils", "eosinophils"} <= set(COUNTS)


@pytest.mark.parametrize("spelling", REFUSED)
def test_ambiguous_or_mangled_spellings_are_refused_with_the_units_that_apply(spelling: str) -> None:
    with pytest.raises(UnitError) as info:
        to_canonical("platelets", 150, spelling)
    assert str(info.value) == f"unknown unit '{spelling}' for platelet count"


def test_g_per_litre_in_capitals_is_never_read_as_grams() -> None:
    assert vocabulary().unit_code("G/L") == "10*9/L" and vocabulary().unit_code("g/L") == "g/L"
    assert to_canonical("fibrinogen", 2.5, "g/L") == 250
    with pytest.raises(UnitError, match="unit 'G/L' does not apply to fibrinogen"):
        to_canonical("fibrinogen", 2.5, "G/L")


@pytest.mark.parametrize(("written", "code"), [
    ("mg/dl", "mg/dL"), ("MG/DL", None), ("ng/ml", "ng/mL"), ("[iu]/l", "[IU]/L"), ("IU/L", "[IU]/L"),
    ("mmol/l", "mmol/L"), ("mEq/L", "meq/L"), ("mg/L FEU", "mg/L{FEU}"), ("mg/l{feu}", "mg/L{FEU}"),
    ("mm/hr", "mm/h"), ("mm/[hr]", "mm/h"), ("°C", "Cel"), ("K/uL", "10*3/uL"), ("k/uL", "10*3/uL"),
    ("Kg", "kg"), ("kg", "kg"),
])
def test_case_is_folded_only_for_the_litre_and_inside_brackets(written: str, code: str | None) -> None:
    assert vocabulary().unit_code(written) == code


def test_no_two_spellings_of_the_table_fold_together_into_different_units() -> None:
    """fold_unit is safe for the table: the vocabulary refuses to load otherwise; check it here on the keys."""
    from importlib import resources

    import yaml

    table = yaml.safe_load(resources.files("engine.data").joinpath("units.yaml").read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for spelling, code in [*((c, c) for c in table["display"]), *table["aliases"].items()]:
        assert seen.setdefault(fold_unit(str(spelling)), str(code)) == str(code), spelling


def test_every_ucum_code_the_table_writes_is_valid_ucum() -> None:
    """mm/[hr] is not UCUM (UCUM's hour is h): no analyte's unit and no display key may be it."""
    v = vocabulary()
    codes = set(v.unit_display) | {u for a in v.analytes.values() for u in a.units}
    assert "mm/[hr]" not in codes and "mm/h" in codes

"""Every unit conversion in the reviewed tables, checked against an independent unit library (pint), and the
proof that writing a case in other units changes no result.

pint knows nothing of UCUM codes or of clinical conventions, so the mapping below states each code in pint's
terms; where a conversion needs a convention rather than physics it says which (the triglyceride molar mass
behind the 0.01129 factor, sodium as a monovalent ion, international units of an immunoassay).
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pint
import pytest
import yaml

import engine
from engine.core.times import EARLIEST, LATEST, TimeFormatError, check_epoch, parse_time
from engine.core.units import ImpossibleValue, from_canonical, parse_dose, shown, smallest_value, to_canonical
from engine.core.vocab import vocabulary

from .conftest import CASES, RULES

UREG = pint.UnitRegistry()
# mg/dL = mmol/L × M / 10 with M in g/mol: "mmol/L = mg/dL × 0.01129" (clinical reference) means M = 10 / 0.01129
TRIGLYCERIDE_MOLAR_MASS = UREG.Quantity(10 / 0.01129, "g/mol")

PINT_UNITS = {
    "ng/mL": "ng/mL", "ug/L": "ug/L", "10*9/L": "1e9 /L", "10*3/uL": "1e3 /uL", "10*3/mm3": "1e3 /mm**3",
    "/uL": "1/uL", "/mm3": "1/mm**3", "U/L": "enzyme_unit/L", "[IU]/L": "enzyme_unit/L", "ukat/L": "microkatal/L",
    "mg/dL": "mg/dL", "mmol/L": "mmol/L", "g/L": "g/L", "mg/L": "mg/L", "mm/h": "mm/hour", "mm/[hr]": "mm/hour",
    "g/dL": "g/dL", "meq/L": "mmol/L",  # sodium: one equivalent per mole
    "mg/L{FEU}": "mg/L", "ug/mL{FEU}": "ug/mL", "ng/mL{FEU}": "ng/mL", "ng/mL{DDU}": "ng/mL", "ug/L{DDU}": "ug/L",
    "mg/L{DDU}": "mg/L", "ug/mL{DDU}": "ug/mL",
    "U/mL": "1/mL", "[IU]/mL": "1/mL",  # assay units of sCD25: the same unit under two names
    "Cel": "degC", "[degF]": "degF", "/min": "1/min", "%": "percent", "kg": "kg", "g": "g", "[lb_av]": "lb",
    "cm": "cm", "m": "m", "[in_i]": "inch", "mm[Hg]": "mmHg",
}
DOSE_PINT = {"mg": "mg", "g": "g", "ug": "ug", "mg/kg": "mg/kg", "ug/kg": "ug/kg", "g/kg": "g/kg", "mg/d": "mg/day",
             "g/d": "g/day", "mg/kg/d": "mg/kg/day", "ug/kg/min": "ug/kg/min", "ug/kg/h": "ug/kg/hour",
             "mg/kg/h": "mg/kg/hour", "U/kg/h": "enzyme_unit/kg/hour", "U/kg/min": "enzyme_unit/kg/min"}
DOSE_BASE = {"mass": "mg", "mass_per_kg": "mg/kg", "mass_per_day": "mg/day", "mass_per_kg_per_day": "mg/kg/day",
             "rate_per_kg": "ug/kg/min", "units_rate_per_kg": "enzyme_unit/kg/hour"}


def quantity(value: float, unit: str) -> Any:
    """A pint quantity; a leading number in the mapping is a count scale (10*9/L: 1e9 per litre)."""
    spec = PINT_UNITS[unit]
    scale, _, rest = spec.partition(" ")
    if rest and scale[0].isdigit():
        return UREG.Quantity(value * float(scale), "1" + rest)
    return UREG.Quantity(value, spec)


def pint_convert(analyte: str, value: float, unit: str, target: str) -> float:
    q, goal = quantity(value, unit), quantity(1.0, target)
    molar = "[substance]/[length]**3"
    if analyte == "triglycerides" and q.check(molar) != goal.check(molar):
        q = q * TRIGLYCERIDE_MOLAR_MASS if q.check(molar) else q / TRIGLYCERIDE_MOLAR_MASS
    return float(q.to(goal.units).magnitude / goal.magnitude)


CONVERSIONS = [(a, u) for a, spec in vocabulary().analytes.items() for u in spec.units]


def test_every_unit_in_the_table_is_mapped_for_the_cross_check() -> None:
    assert {u for _, u in CONVERSIONS} <= set(PINT_UNITS)
    assert set(vocabulary().dose_units) == set(DOSE_PINT)


@pytest.mark.parametrize(("analyte", "unit"), CONVERSIONS, ids=[f"{a}:{u}" for a, u in CONVERSIONS])
def test_unit_conversion_agrees_with_pint(analyte: str, unit: str) -> None:
    canonical = vocabulary().analytes[analyte].canonical
    lo, hi = vocabulary().analytes[analyte].plausible
    for x in (1.0, 37.0, 2.5, (lo + hi) / 3):
        value = from_canonical(analyte, x, unit) if unit != canonical else x
        assert to_canonical(analyte, value, unit) == pytest.approx(pint_convert(analyte, value, unit, canonical),
                                                                   rel=1e-9, abs=1e-9), (analyte, unit, value)


@pytest.mark.parametrize("code", sorted(DOSE_PINT))
def test_dose_unit_factor_agrees_with_pint(code: str) -> None:
    unit = vocabulary().dose_units[code]
    expected = UREG.Quantity(1, DOSE_PINT[code]).to(DOSE_BASE[unit.dimension]).magnitude
    assert float(unit.factor) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("analyte", "value", "unit", "canonical_value"), [
    ("temperature", 101.12, "[degF]", 38.4), ("temperature", 32, "[degF]", 0), ("fibrinogen", 3.6, "g/L", 360),
    ("haemoglobin", 9.2, "g/dL", 92), ("platelets", 181000, "/uL", 181), ("ast", 0.8, "ukat/L", 48),
    ("triglycerides", 1.76, "mmol/L", 155.8901683), ("ferritin", 684, "ug/L", 684),
])
def test_published_thresholds_convert_exactly(analyte: str, value: float, unit: str, canonical_value: float) -> None:
    """The thresholds the rules use, written in the other unit, land exactly where the publication puts them."""
    assert to_canonical(analyte, value, unit) == canonical_value


def _alternatives(analyte: str, current: str, pick: int) -> str | None:
    others = [u for u in vocabulary().analytes[analyte].units if u != current]
    return others[pick % len(others)] if others else None


def _rewrite(doc: dict[str, Any], pick: int) -> dict[str, Any]:
    """The same record with every measurement (and the weight) written in another unit of its analyte."""
    out = copy.deepcopy(doc)
    for o in out.get("observations", []):
        analyte = o["analyte"]
        unit = vocabulary().unit_code(str(o["unit"]))
        assert unit is not None
        target = _alternatives(analyte, unit, pick)
        if target is not None:
            o["value"] = float(f"{pint_convert(analyte, float(o['value']), unit, target):.12g}")
            o["unit"] = target
    weight = out.get("patient", {}).get("weight")
    if weight:
        unit = vocabulary().unit_code(str(weight["unit"]))
        assert unit is not None
        target = _alternatives("body-weight", unit, pick)
        if target is not None:
            weight["value"] = float(f"{pint_convert('body-weight', float(weight['value']), unit, target):.12g}")
            weight["unit"] = target
    return out


def _signature(result: engine.Result) -> dict[str, Any]:
    return {
        "recommendations": [(r.rule_id, r.status, tuple((a.kind, a.target, a.suppressed_by is None)
                                                         for a in r.actions)) for r in result.recommendations],
        "assessments": [(a.fact, a.status, a.reliable, None if a.value is None else round(a.value, 6))
                        for a in result.assessments],
        "undecided": sorted(u.rule_id for u in result.indeterminate),
    }


CASE_FILES = sorted(CASES.rglob("*.yaml"))


@pytest.mark.parametrize("pick", [0, 1])
@pytest.mark.parametrize("path", CASE_FILES, ids=[str(p.relative_to(CASES)) for p in CASE_FILES])
def test_the_same_case_in_other_units_gives_the_same_results(path: Path, pick: int, tmp_path: Path) -> None:
    kb = engine.load_knowledge_base(RULES)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    rewritten = _rewrite(doc, pick)
    changed = sum(a != b for a, b in zip(doc.get("observations", []), rewritten.get("observations", []), strict=True))
    other = tmp_path / path.name
    other.write_text(yaml.safe_dump(rewritten, allow_unicode=True, sort_keys=False), encoding="utf-8")
    original, converted = engine.load_case(path), engine.load_case(other)
    if any(len(vocabulary().analytes[o["analyte"]].units) > 1 for o in doc.get("observations", [])):
        assert changed > 0, "the rewrite must change something"
    times = [e.at for e in original.expectations] or [None]
    for at in times:
        assert _signature(kb.evaluate(converted, at)) == _signature(kb.evaluate(original, at)), (path, at)


def test_fractions_in_the_table_are_exact() -> None:
    """Factors are written as fractions (100000/1129, 5/9), never as rounded decimals."""
    for spec in vocabulary().analytes.values():
        for conv in spec.units.values():
            assert isinstance(conv.factor, Fraction) and isinstance(conv.offset, Fraction)


# --- values that cannot be numbers, doses beyond the physical, times outside any record ----------------------

@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400, -(10**400)])
def test_a_value_that_is_not_a_finite_number_is_an_impossible_value(value: float) -> None:
    with pytest.raises(ImpossibleValue, match="not a finite number"):
        to_canonical("ferritin", value, "ng/mL")
    with pytest.raises(ImpossibleValue, match="not a finite number"):
        parse_dose(value, "mg/kg")


@pytest.mark.parametrize(("value", "unit", "ok"), [
    (1000, "g/kg", True), (1001, "g/kg", False),            # 1 kg of drug per kg of body weight
    (400_000, "g", True), (400_001, "g", False),            # the heaviest plausible body, 400 kg
    (400_000, "g/d", True), (400_001, "g/d", False),
    (694_444, "ug/kg/min", True), (694_445, "ug/kg/min", False),  # 1 kg/kg over one day
    (10.0**300, "U/kg/h", True),                            # units have no mass: finite is the only bound
])
def test_doses_are_bounded_by_what_a_patient_can_physically_receive(value: float, unit: str, ok: bool) -> None:
    if ok:
        assert parse_dose(value, unit).value > 0
    else:
        with pytest.raises(ImpossibleValue, match="physically impossible"):
            parse_dose(value, unit)


def test_huge_numbers_are_shown_without_overflow() -> None:
    assert shown(10**400) == "1.000e+400 (401 digits)"
    assert shown(30) == "30" and shown(math.nan) == "nan"


@pytest.mark.parametrize("text", ["day 99999999", "day -99999999", "day 1" + "0" * 400, "0001-01-01",
                                  "1849-12-31T23:59:59Z", "2500-01-01"])
def test_times_outside_any_record_are_refused(text: str) -> None:
    with pytest.raises(TimeFormatError):
        parse_time(text, start=parse_time("2024-01-01"))


def test_the_bounds_themselves() -> None:
    assert parse_time("1850-01-01") == EARLIEST and parse_time("2499-12-31T23:59:59Z") == LATEST - 1
    with pytest.raises(TimeFormatError):
        check_epoch(10**20)


def test_an_absurd_evaluation_time_through_the_api_is_a_usage_error(kb: engine.KnowledgeBase) -> None:
    snap = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    for at in (10**20, -(10**20), "day 99999999"):
        with pytest.raises(engine.MascdsError, match="plausible time"):
            kb.evaluate(snap, at=at)


def test_a_value_too_small_to_divide_by_is_refused_and_the_floor_is_far_below_any_measurement() -> None:
    """An ESR of 5e-324 made the ferritin/ESR ratio overflow a float (found by the long fuzz run)."""
    with pytest.raises(ImpossibleValue, match="too small"):
        to_canonical("esr", 5e-324, "mm/h")
    assert to_canonical("esr", 0, "mm/h") == 0.0 and to_canonical("esr", 1e-12, "mm/h") == 1e-12
    largest = max(a.plausible[1] for a in vocabulary().analytes.values())
    assert math.isfinite(largest / smallest_value()) and smallest_value() < 1e-300

"""The closed registries (analytes, units, drugs, terms), loaded once from the reviewed tables in
``engine/data/``. Everything a rule or case names is resolved here; an unknown name is an error with a
did-you-mean, never a silent pass-through.

Every term a clinician sees has an English ``name`` and may have a Simplified Chinese one (``zh-CN`` in the
tables); :meth:`Vocabulary.name` gives a term's name in a language, English where there is no translation.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


# The tables of terms a clinician sees; each term has an English name and may have a zh-CN one.
TABLES = ("analytes", "drugs", "drug_classes", "diagnoses", "manifestations", "severities", "organ_support", "routes",
          "frequencies", "regimens", "procedures", "findings", "stop_reasons")


_SPACE_AROUND = re.compile(r"\s*([/^×*])\s*|(?<=[x×])\s+(?=\d)")


def fold_unit(text: str) -> str:
    """A unit spelling in the form the alias table is matched in.

    Case is folded only where it cannot turn one unit into another: ``l``/``L`` (both are the litre in UCUM) and
    inside ``[...]`` and ``{...}`` (UCUM's bracketed units and annotations: ``[IU]`` and ``[iU]`` are one unit).
    Everywhere else case is meaning - ``G`` (giga) is not ``g`` (gram), ``M`` (mega) not ``m`` (milli), ``K``
    (kelvin) not ``k`` (kilo) - so those spellings match only as the table writes them. Also: the Greek letter mu
    is the micro sign, and spaces around ``/``, ``^``, ``*``, ``×`` and after a leading ``x`` are dropped
    (``x 10^9 / L`` is ``x10^9/L``)."""
    t = " ".join(text.strip().replace("\u03bc", "\u00b5").split())
    t = _SPACE_AROUND.sub(lambda m: m.group(1) or "", t)
    out: list[str] = []
    depth = 0
    for ch in t:
        depth += ch in "[{"
        depth -= ch in "]}"
        out.append(ch.upper() if depth > 0 or ch == "l" else ch)
    return "".join(out)


def pick(name: str, zh_cn: str | None, lang: str) -> str:
    """``zh_cn`` when ``lang`` is zh-CN and there is one, else the English ``name``."""
    return zh_cn if lang == "zh-CN" and zh_cn else name


@dataclass(frozen=True)
class UnitConversion:
    factor: Fraction
    offset: Fraction = Fraction(0)


@dataclass(frozen=True)
class Analyte:
    id: str
    name: str
    kind: str  # lab | vital | measure
    canonical: str
    units: dict[str, UnitConversion]
    loinc: tuple[str, ...]
    plausible: tuple[float, float]
    zh_cn: str | None = None

    def name_in(self, lang: str) -> str:
        return pick(self.name, self.zh_cn, lang)


@dataclass(frozen=True)
class Label:
    """A drug's product information as cited by hypersensitivity recommendations (drugs.yaml ``label``)."""

    product: str
    holder: str
    document: str
    date: str
    reported: str
    url: str  # where it is published: a citation without DOI or PMID is identified by it

    @property
    def reference(self) -> str:
        return f"{self.product}, {self.holder}. {self.document}. {self.date}."


@dataclass(frozen=True)
class Drug:
    id: str
    name: str
    classes: tuple[str, ...]
    synonyms: tuple[str, ...]
    atc: tuple[str, ...]
    rxnorm: tuple[str, ...]
    zh_cn: str | None = None
    prednisone_equivalent: Fraction | None = None  # glucocorticoids: mg prednisone per mg of the drug
    label: Label | None = None
    # drugs.yaml ``exposure``: how long after its last dose the drug still counts as "exposed", when that is
    # longer than the dosing interval (None: the dosing interval alone)
    exposure_after_last_dose_days: int | None = None
    exposure_basis: str | None = None  # where that period comes from

    def name_in(self, lang: str) -> str:
        return pick(self.name, self.zh_cn, lang)


@dataclass(frozen=True)
class DoseUnit:
    code: str
    dimension: str
    factor: Fraction


@dataclass(frozen=True)
class Term:
    id: str
    name: str
    synonyms: tuple[str, ...] = ()
    interval_hours: float | None = None
    zh_cn: str | None = None
    group: str | None = None  # manifestations: organ system of the anaphylaxis criteria (terms.yaml)
    alone: bool = False  # manifestations: meets WAO 2020 criterion 2 by itself

    def name_in(self, lang: str) -> str:
        return pick(self.name, self.zh_cn, lang)


def _read(name: str) -> Any:
    text = resources.files("engine").joinpath("data", name).read_text(encoding="utf-8")
    return yaml.load(text, Loader=_Loader)


def _conv(spec: Any) -> UnitConversion:
    if isinstance(spec, dict):
        return UnitConversion(Fraction(str(spec["factor"])), Fraction(str(spec.get("offset", "0"))))
    return UnitConversion(Fraction(str(spec)))


def _terms(section: dict[str, Any]) -> dict[str, Term]:
    out: dict[str, Term] = {}
    for key, raw in section.items():
        spec = raw or {}
        out[key] = Term(key, spec.get("name", key), tuple(spec.get("synonyms", ()) or ()),
                        spec.get("interval_hours"), spec.get("zh-CN"), spec.get("group"), bool(spec.get("alone")))
    return out


def _exposure_days(drug: str, spec: Any) -> int | None:
    """drugs.yaml ``exposure``: a whole number of days, and always the basis it rests on."""
    if not spec:
        return None
    days, basis = spec.get("after_last_dose_days"), spec.get("basis")
    if not isinstance(days, int) or isinstance(days, bool) or days <= 0 or not (isinstance(basis, str) and basis):
        raise ValueError(f"drugs.yaml: {drug}.exposure needs after_last_dose_days (a positive whole number of "
                         "days) and basis (where the period comes from)")
    return days


class Vocabulary:
    """Read-only view of all registries."""

    def __init__(self) -> None:
        raw_analytes = _read("analytes.yaml")
        self.analytes: dict[str, Analyte] = {
            key: Analyte(
                id=key,
                name=spec["name"],
                kind=spec["kind"],
                canonical=spec["canonical"],
                units={u: _conv(c) for u, c in spec["units"].items()},
                loinc=tuple(str(c) for c in spec.get("loinc", ())),
                plausible=(float(spec["plausible"][0]), float(spec["plausible"][1])),
                zh_cn=spec.get("zh-CN"),
            )
            for key, spec in raw_analytes.items()
        }
        units = _read("units.yaml")
        self.unit_display: dict[str, str] = {str(k): str(v) for k, v in units["display"].items()}
        self.unit_aliases: dict[str, str] = {}
        for spelling, code in [*((c, c) for c in self.unit_display), *units["aliases"].items()]:
            key = fold_unit(str(spelling))
            if self.unit_aliases.setdefault(key, str(code)) != str(code):
                raise ValueError(f"units.yaml: '{spelling}' and another spelling fold to '{key}' but name "
                                 f"{self.unit_aliases[key]} and {code}")
        self.dose_units: dict[str, DoseUnit] = {
            code: DoseUnit(code, spec["dimension"], Fraction(str(spec["factor"])))
            for code, spec in units["dose_units"].items()
        }
        self.dose_aliases: dict[str, str] = {str(k).lower(): str(v) for k, v in units["dose_aliases"].items()}
        self.dose_display: dict[str, str] = dict(units["dose_display"])
        drugs = _read("drugs.yaml")
        self.drugs: dict[str, Drug] = {
            key: Drug(key, spec["name"], tuple(spec.get("classes", ())), tuple(spec.get("synonyms", ())),
                      tuple(spec.get("atc", ())), tuple(str(c) for c in spec.get("rxnorm", ())), spec.get("zh-CN"),
                      prednisone_equivalent=Fraction(str(spec["prednisone_equivalent"]))
                      if "prednisone_equivalent" in spec else None,
                      label=Label(**spec["label"]) if spec.get("label") else None,
                      exposure_after_last_dose_days=_exposure_days(key, spec.get("exposure")),
                      exposure_basis=(spec.get("exposure") or {}).get("basis"))
            for key, spec in drugs["drugs"].items()
        }
        self.drug_classes: dict[str, str] = {key: spec["name"] for key, spec in drugs["classes"].items()}
        self.drug_classes_zh_cn: dict[str, str] = {
            key: spec["zh-CN"] for key, spec in drugs["classes"].items() if spec.get("zh-CN")}
        terms = _read("terms.yaml")
        self.diagnoses = _terms(terms["diagnoses"])
        self.manifestations = _terms(terms["manifestations"])
        self.severities: tuple[str, ...] = tuple(terms["severities"])  # least to most severe
        self.severities_zh_cn: dict[str, str] = {
            key: spec["zh-CN"] for key, spec in terms["severities"].items() if spec and spec.get("zh-CN")}
        self.organ_support = _terms(terms["organ_support"])
        self.routes = _terms(terms["routes"])
        self.frequencies = _terms(terms["frequencies"])
        self.regimens = _terms(terms["regimens"])
        self.procedures = _terms(terms["procedures"])
        self.findings = _terms(terms["findings"])
        self.stop_reasons = _terms(terms["stop_reasons"])
        self._stop_reason_names = self._name_index(
            {t.id: (t.name, *t.synonyms) for t in self.stop_reasons.values()})
        self._drug_names = self._name_index(
            {d.id: (d.name, *d.synonyms) for d in self.drugs.values()})
        self._route_names = self._name_index({t.id: (t.name, *t.synonyms) for t in self.routes.values()})
        self._freq_names = self._name_index({t.id: (t.name, *t.synonyms) for t in self.frequencies.values()})
        self._dx_names = self._name_index({t.id: (t.name, *t.synonyms) for t in self.diagnoses.values()})
        self._manifestation_names = self._name_index(
            {t.id: (t.name, *t.synonyms) for t in self.manifestations.values()})
        self._loinc = {code: a.id for a in self.analytes.values() for code in a.loinc}

    @staticmethod
    def _name_index(names: dict[str, tuple[str, ...]]) -> dict[str, str]:
        index: dict[str, str] = {}
        for key, alts in names.items():
            index[key.lower()] = key
            for alt in alts:
                index[alt.lower()] = key
        return index

    # --- lookups -------------------------------------------------------------------------------------
    def drug_id(self, name: str) -> str | None:
        return self._drug_names.get(name.strip().lower())

    def drug_choices(self) -> list[str]:
        return sorted(self.drugs)

    def drugs_in_class(self, cls: str) -> tuple[str, ...]:
        return tuple(sorted(d.id for d in self.drugs.values() if cls in d.classes))

    def route_id(self, name: str) -> str | None:
        return self._route_names.get(name.strip().lower())

    def frequency_id(self, name: str) -> str | None:
        return self._freq_names.get(name.strip().lower())

    def diagnosis_id(self, name: str) -> str | None:
        return self._dx_names.get(name.strip().lower())

    def manifestation_id(self, name: str) -> str | None:
        return self._manifestation_names.get(name.strip().lower())

    def stop_reason_id(self, name: str) -> str | None:
        return self._stop_reason_names.get(name.strip().lower())

    def analyte_for_loinc(self, code: str) -> str | None:
        return self._loinc.get(code.strip())

    def unit_code(self, text: str) -> str | None:
        """UCUM code for what an author wrote, or None when unknown (see :func:`fold_unit`)."""
        t = text.strip()
        if t in self.unit_display:
            return t
        return self.unit_aliases.get(fold_unit(t))

    def dose_unit(self, text: str) -> DoseUnit | None:
        t = text.strip()
        if t in self.dose_units:
            return self.dose_units[t]
        alias = self.dose_aliases.get(t.lower())
        if alias:
            return self.dose_units[alias]
        for code, unit in self.dose_units.items():
            if code.lower() == t.lower():
                return unit
        return None

    def display_unit(self, code: str) -> str:
        return self.unit_display.get(code, code)

    def is_target(self, name: str) -> bool:
        return name in self.drugs or name in self.drug_classes or name in self.procedures

    def target_name(self, name: str, lang: str = "en") -> str:
        if name in self.drugs:
            return self.drugs[name].name_in(lang)
        if name in self.drug_classes:
            return self.name("drug_classes", name, lang)
        if name in self.procedures:
            return self.procedures[name].name_in(lang)
        return name

    # --- names in a language -------------------------------------------------------------------------
    def _table(self, table: str) -> dict[str, Analyte] | dict[str, Drug] | dict[str, Term]:
        if table not in TABLES:
            raise KeyError(table)
        found: dict[str, Analyte] | dict[str, Drug] | dict[str, Term] = getattr(self, table)
        return found

    def name(self, table: str, key: str, lang: str = "en") -> str:
        """The name of term ``key`` of ``table`` (one of :data:`TABLES`) in ``lang``; English when there is no
        translation. A severity's English name is its key."""
        if table == "drug_classes":
            return pick(self.drug_classes[key], self.drug_classes_zh_cn.get(key), lang)
        if table == "severities":
            if key not in self.severities:
                raise KeyError(key)
            return pick(key, self.severities_zh_cn.get(key), lang)
        return self._table(table)[key].name_in(lang)

    def translations(self) -> Iterator[tuple[str, str, str, str | None]]:
        """Every term a clinician may see, as ``(table, key, English name, zh-CN name or None)``."""
        for table in TABLES:
            if table == "drug_classes":
                for key, name in self.drug_classes.items():
                    yield table, key, name, self.drug_classes_zh_cn.get(key)
            elif table == "severities":
                for key in self.severities:
                    yield table, key, key, self.severities_zh_cn.get(key)
            else:
                for key, term in self._table(table).items():
                    yield table, key, term.name, term.zh_cn

    def target_drugs(self, name: str) -> frozenset[str]:
        """The drugs a target covers (a class covers its members); empty for procedures."""
        if name in self.drugs:
            return frozenset({name})
        if name in self.drug_classes:
            return frozenset(self.drugs_in_class(name))
        return frozenset()

    def target_choices(self) -> list[str]:
        return sorted({*self.drugs, *self.drug_classes, *self.procedures})

    def drug_for_code(self, system: str, code: str) -> str | None:
        """The drug with this code in the drug table; ``system`` is ``rxnorm`` (ingredient RXCUI) or ``atc``."""
        c = code.strip()
        for d in self.drugs.values():
            if c in (d.rxnorm if system == "rxnorm" else d.atc if system == "atc" else ()):
                return d.id
        return None


@functools.cache
def vocabulary() -> Vocabulary:
    return Vocabulary()

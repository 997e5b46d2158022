"""FHIR R4 resources (already validated) -> the entries of a :class:`Snapshot`.

The resources are ``fhir.resources`` models (the strict path) or the lean structs of
:mod:`engine.records.fhir_lean`, which have the same field names and value types (a date, an aware datetime, or the
text of a partial date); the mapper reads both alike, so both paths give the same snapshot.

One :class:`Mapper` per snapshot. Each resource of a type mascds reads becomes entries, or a warning naming the
resource and why it was not used, or an input error (a wrong value that was left out, which makes the result
incomplete). docs/fhir.md describes every decision.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any, TypeAlias, TypeVar

from ..core.snapshot import Course, Diagnosis, Finding, Observation, Order, OrganSupport, Patient, Reaction
from ..core.units import Dose, UnitError, parse_dose, to_canonical
from ..core.vocab import vocabulary
from . import fhir_lean
from .fhir_codes import MASCDS_SYSTEMS, code_tables, extension_url
from .ingest import MAX_FACTS_PER_COURSE

# A validated resource or element: a fhir.resources model or a fhir_lean struct (read by field name alike).
AdverseEvent: TypeAlias = Any
AllergyIntolerance: TypeAlias = Any
CodeableConcept: TypeAlias = Any
Condition: TypeAlias = Any
Dosage: TypeAlias = Any
MedicationAdministration: TypeAlias = Any
MedicationRequest: TypeAlias = Any
MedicationStatement: TypeAlias = Any
FObservation: TypeAlias = Any
FPatient: TypeAlias = Any
Procedure: TypeAlias = Any
Quantity: TypeAlias = Any
Reference: TypeAlias = Any
Resource: TypeAlias = Any
Timing: TypeAlias = Any


def _is(resource: Any, *types: str) -> bool:
    return resource is not None and resource.get_resource_type() in types


# Zero-width and other invisible characters seen in generated display strings; removed before any text match.
_INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_PERIOD_HOURS = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0, "wk": 168.0}
NO_MEDICATION = "no medication code or text"
_DURATION_HOURS = {"s": 1 / 3600, "min": 1 / 60, "h": 1.0, "d": 24.0, "wk": 168.0, "a": None, "mo": None}


def clean(text: str | None) -> str:
    """Display text without invisible characters or surrounding space."""
    return _INVISIBLE.sub("", text or "").strip()


def epoch(value: object) -> tuple[int | None, str | None]:
    """Epoch seconds of a FHIR date, dateTime or instant, and a note when it was partial (a year or a month,
    taken as its first day). A date is midnight UTC."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        dt = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(dt.timestamp()), None
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp()), None
    text = str(value).strip()
    m = re.fullmatch(r"(\d{4})(?:-(\d{2}))?", text)
    if m:
        first = datetime(int(m.group(1)), int(m.group(2) or 1), 1, tzinfo=UTC)
        return int(first.timestamp()), f"'{text}' is a partial date, taken as {first.date().isoformat()}"
    return None, f"'{text}' is not a date"


def codings(cc: CodeableConcept | None) -> list[tuple[str, str, str]]:
    """(system, code, display) of each coding; display cleaned."""
    if cc is None:
        return []
    return [((c.system or "").strip(), (c.code or "").strip(), clean(c.display)) for c in (cc.coding or ()) if c.code]


def texts(cc: CodeableConcept | None) -> list[str]:
    """The concept's text and its codings' displays, cleaned, without duplicates."""
    if cc is None:
        return []
    out = [clean(cc.text), *(clean(c.display) for c in (cc.coding or ()))]
    return list(dict.fromkeys(t for t in out if t))


def describe(cc: CodeableConcept | None) -> str:
    """A concept for a message: 'SNOMED CT 128613002 'Seizure disorder''."""
    names = {"snomed": "SNOMED CT", "icd10": "ICD-10", "loinc": "LOINC", "rxnorm": "RxNorm", "atc": "ATC"}
    tables = code_tables()
    parts = []
    for system, code, display in codings(cc):
        name = names.get(tables.system_name(system) or "", system or "code")
        parts.append(f"{name} {code}" + (f" '{display}'" if display else ""))
    if parts:
        return ", ".join(parts)
    text = clean(cc.text) if cc is not None else ""
    return f"'{text}'" if text else "no code or text"


def has_extension(resource: Any, name: str) -> Any:
    """The value of a mascds extension on a resource or element, or None."""
    for ext in getattr(resource, "extension", None) or ():
        if ext.url == extension_url(name):
            for attr in ("valueBoolean", "valueDateTime", "valueAge", "valueQuantity", "valueCode",
                         "valueCodeableConcept"):
                value = getattr(ext, attr, None)
                if value is not None:
                    return value
    return None


def extension_values(resource: Any, name: str) -> list[Any]:
    """Every value of a repeatable mascds extension (valueCode)."""
    return [ext.valueCode for ext in getattr(resource, "extension", None) or ()
            if ext.url == extension_url(name) and ext.valueCode]


_T = TypeVar("_T")


class UnitConflict(ValueError):
    """A Quantity whose UCUM ``code`` and human ``unit`` name different units."""


def read_quantity_unit(qty: Quantity, is_ucum: bool, known: Callable[[str], bool],
                       read: Callable[[str], _T]) -> tuple[_T, str | None]:
    """Read a Quantity's unit by the rule of docs/fhir.md, returning (what ``read`` gave, a note for a warning).

    The ``code`` is read when ``system`` is UCUM, or absent (FHIR qty-3 requires it; the note says so); a ``unit``
    that mascds knows must then mean the same (else :class:`UnitConflict`), a unit text it does not know is
    display only. With another system, or no code, the ``unit`` text is read. ``read`` raises
    :class:`~engine.core.units.UnitError` for a unit it cannot use; ``known`` says whether a spelling is in the
    table."""
    code = (qty.code or "").strip()
    unit = (qty.unit or "").strip()
    if code and (is_ucum or not qty.system):
        note = None if qty.system else f"unit code '{code}' has no system (FHIR qty-3); read as a UCUM code"
        value = read(code)
        if unit and unit != code and known(unit):
            try:
                other = read(unit)
            except UnitError:
                raise UnitConflict(f"code '{code}' and unit '{unit}' name different units") from None
            if other != value:
                raise UnitConflict(f"code '{code}' and unit '{unit}' name different units")
        return value, note
    return read(unit), None


@dataclass(frozen=True)
class DrugMatch:
    drug: str | None
    how: str  # code | name | text | none
    local_form: bool  # named by text with a dose form of local application
    described: str  # what the record said, for messages
    ambiguous: tuple[str, ...] = ()


@functools.lru_cache(maxsize=4096)
def _drug_words(text: str) -> frozenset[str]:
    # A medication's text recurs across a record (each dose of a course): look its drug names up once.
    v = vocabulary()
    found: set[str] = set()
    low = text.lower()
    for d in v.drugs.values():
        for name in (d.name, *d.synonyms):
            n = name.lower()
            if len(n) >= 3 and re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", low):
                found.add(d.id)
    return frozenset(found)


def _whole_word_drugs(text: str) -> set[str]:
    return set(_drug_words(text))


def match_drug(concepts: Sequence[CodeableConcept | None]) -> DrugMatch:
    """The drug a medication concept names: by RxNorm ingredient or ATC code, then by the exact name or a synonym
    (text or display), then by a drug name appearing as a whole word in the text (a clinical drug such as
    'Tocilizumab 20 MG/ML Injectable Solution'), only when exactly one drug of the table appears."""
    v = vocabulary()
    tables = code_tables()
    present = [c for c in concepts if c is not None]
    described = "; ".join(d for d in (describe(c) for c in present) if d != "no code or text") or NO_MEDICATION
    for cc in present:
        for system, code, _ in codings(cc):
            name = tables.system_name(system)
            if name in ("rxnorm", "atc"):
                found = v.drug_for_code(name, code)
                if found:
                    return DrugMatch(found, "code", False, described)
    all_texts = [t for cc in present for t in texts(cc)]
    for t in all_texts:
        found = v.drug_id(t)
        if found:
            return DrugMatch(found, "name", False, described)
    drugs: set[str] = set()
    for t in all_texts:
        drugs |= _whole_word_drugs(t)
    if len(drugs) == 1:
        local = any(re.search(rf"\b{re.escape(w)}\b", t.lower()) for t in all_texts for w in tables.local_dose_forms)
        return DrugMatch(drugs.pop(), "text", local, described)
    return DrugMatch(None, "none", False, described, tuple(sorted(drugs)))


class Mapper:
    """Collects a snapshot's entries, warnings and input errors from validated resources."""

    def __init__(self, resolve: Callable[[Any, Any], Any]) -> None:
        self.resolve = resolve  # (resource holding the reference, reference) -> the resource it names
        self.v = vocabulary()
        self.t = code_tables()
        self.patient: Patient | None = None
        self.start: int | None = None
        self.not_recorded: set[str] = set()
        self.diagnoses: list[Diagnosis] = []
        self.observations: list[Observation] = []
        self.findings: list[Finding] = []
        self.courses: list[Course] = []
        self.orders: list[Order] = []
        self.reactions: list[Reaction] = []
        self.supports: list[OrganSupport] = []
        self.input_errors: list[str] = []
        self._warnings: dict[tuple[str, str], list[str]] = {}

    # --- reporting -------------------------------------------------------------------------------------
    def warn(self, ref: str, why: str) -> None:
        """A recorded input that is not used. The same reason for several resources of a type is one line."""
        rtype = ref.split("/", 1)[0] if "/" in ref else "Bundle"
        self._warnings.setdefault((rtype, why), []).append(ref)

    def error(self, ref: str, message: str, hint: str = "") -> None:
        self.input_errors.append(f"{ref}: {message}" + (f" (hint: {hint})" if hint else ""))

    def warnings(self) -> list[str]:
        out = []
        for (_, why), refs in self._warnings.items():
            more = f" (and {len(refs) - 1} more)" if len(refs) > 1 else ""
            out.append(f"{refs[0]}{more}: {why}")
        return out

    def time(self, ref: str, value: object, what: str) -> int | None:
        t, note = epoch(value)
        if note is not None:
            if t is None:
                self.error(ref, f"{what} {note}", "write an ISO 8601 date or date-time")
                return None
            self.warn(ref, f"{what} {note}")
        birth = self.patient.birth if self.patient is not None else None
        if t is not None and birth is not None and t < birth:
            self.error(ref, f"{what} is before the patient's birth; left out", "check the date and Patient.birthDate")
            return None
        return t

    @staticmethod
    def illustrative(resource: Any) -> bool:
        return bool(has_extension(resource, "illustrative"))

    # --- Patient ---------------------------------------------------------------------------------------
    def patient_resource(self, p: FPatient, ref: str) -> bool:
        sex = p.gender if p.gender in ("female", "male") else None
        if p.gender and sex is None:
            self.warn(ref, f"gender '{p.gender}' is not female or male; sex is taken as unknown")
        birth = None
        if p.birthDate is not None:
            born_at = None
            for ext in getattr(p.birthDate__ext, "extension", None) or ():
                if ext.url == "http://hl7.org/fhir/StructureDefinition/patient-birthTime" and ext.valueDateTime:
                    born_at = ext.valueDateTime
            birth, note = epoch(born_at if born_at is not None else p.birthDate)
            if note:
                self.warn(ref, f"birthDate {note}")
        start = has_extension(p, "timeline-start")
        self.start = epoch(start)[0] if start is not None else None
        age = has_extension(p, "age-at-timeline-start")
        age_years = float(age.value) if age is not None and age.value is not None and birth is None else None
        weight = has_extension(p, "baseline-weight")
        weight_kg = None
        if weight is not None and weight.value is not None:
            value = float(weight.value)
            try:
                weight_kg, _ = read_quantity_unit(weight, self.t.system_name(weight.system) == "ucum",
                                                  lambda u: self.v.unit_code(u) is not None,
                                                  lambda u: to_canonical("body-weight", value, u))
            except (UnitError, UnitConflict) as exc:
                self.error(ref, f"baseline weight: {exc}", getattr(exc, "hint", "correct the unit"))
        self.not_recorded.update(str(s) for s in extension_values(p, "not-recorded"))
        self.patient = Patient(ref, self.illustrative(p), sex, birth, age_years, weight_kg)
        return True

    # --- Observation -----------------------------------------------------------------------------------
    def observation(self, o: FObservation, ref: str) -> bool:
        if o.status in ("entered-in-error", "cancelled"):
            self.warn(ref, f"status {o.status}; not used")
            return False
        finding = [code for system, code, _ in codings(o.code) if system == MASCDS_SYSTEMS["finding"]]
        if finding:
            return self._finding(o, ref, finding[0])
        analyte = self._analyte(o.code)
        parts: list[tuple[str, Quantity | None, Any]] = []
        if analyte is not None:
            parts.append((analyte, o.valueQuantity, o))
        for comp in o.component or ():
            a = self._analyte(comp.code)
            if a is not None:
                parts.append((a, comp.valueQuantity, comp))
        if not parts:
            loinc = [c for s, c, _ in codings(o.code) if self.t.system_name(s) == "loinc"]
            if loinc:
                self.warn(ref, f"{describe(o.code)} is not an analyte mascds uses")
            else:
                self.warn(ref, f"{describe(o.code)} has no LOINC code; mascds reads observations by LOINC code")
            return False
        when = o.effectiveDateTime or (o.effectivePeriod.start if o.effectivePeriod else None) or \
            o.effectiveInstant or o.issued
        mapped = False
        for analyte_id, qty, holder in parts:
            mapped |= self._quantity(ref, analyte_id, qty, holder, when, self.illustrative(o))
        return mapped

    def _analyte(self, cc: CodeableConcept | None) -> str | None:
        for system, code, _ in codings(cc):
            if system == MASCDS_SYSTEMS["analyte"] and code in self.v.analytes:
                return code
            if self.t.system_name(system) == "loinc":
                found = self.t.analyte_for_loinc(code)
                if found:
                    return found
        return None

    def _quantity(self, ref: str, analyte: str, qty: Quantity | None, holder: Any, when: object, ill: bool) -> bool:
        a = self.v.analytes[analyte]
        if qty is None:
            absent = getattr(holder, "dataAbsentReason", None)
            if absent is not None:
                self.warn(ref, f"{a.name}: no value ({describe(absent)})")
            else:
                kinds = [k for k in ("valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
                                     "valueRange", "valueRatio") if getattr(holder, k, None) is not None]
                self.warn(ref, f"{a.name}: the value is not a quantity ({', '.join(kinds) or 'no value'})")
            return False
        if qty.value is None:
            self.error(ref, f"{a.name}: valueQuantity has no value; left out", "give valueQuantity.value")
            return False
        value = float(qty.value)
        unit_text = (qty.unit or qty.code or "").strip()
        if not math.isfinite(value):
            self.error(ref, f"{a.name} value {value:g} is not a number; left out", "record the measured value")
            return False
        if qty.comparator:
            self.error(ref, f"{a.name} '{qty.comparator}{value:g} {unit_text}' is not an exact value; left out",
                       "mascds compares exact values; record the measured value")
            return False
        ucum = self.t.system_name(qty.system) == "ucum"
        if not ((qty.code or "").strip() and (ucum or not qty.system)) and not (qty.unit or "").strip():
            self.error(ref, f"{a.name} {value:g} has no unit; left out",
                       "give valueQuantity.code (UCUM), e.g. " + ", ".join(sorted(a.units)[:3]))
            return False
        try:
            canonical, note = read_quantity_unit(qty, ucum, lambda u: self.v.unit_code(u) is not None,
                                                 lambda u: to_canonical(analyte, value, u))
        except UnitConflict as exc:
            self.error(ref, f"{a.name} {value:g}: valueQuantity {exc}; left out",
                       "make Quantity.unit the display of the UCUM Quantity.code, or correct the code")
            return False
        except UnitError as exc:
            self.error(ref, f"{exc}; left out", exc.hint)
            return False
        if note is not None:
            self.warn(ref, f"{a.name}: {note}")
        lo, hi = a.plausible
        shown = self.v.display_unit(a.canonical)
        if not lo <= canonical <= hi:
            self.error(ref, f"impossible {a.name} {value:g} {unit_text} ({canonical:g} {shown}); left out",
                       f"plausible range is {lo:g}–{hi:g} {shown}; check the value and unit")
            return False
        t = self.time(ref, when, f"{a.name}: effective time")
        if t is None:
            if when is None:
                self.error(ref, f"{a.name} has no effective time; left out", "give effectiveDateTime")
            return False
        self.observations.append(Observation(ref, ill, analyte, canonical, t, f"{value:g} {unit_text}"))
        return True

    def _finding(self, o: FObservation, ref: str, code: str) -> bool:
        if code not in self.v.findings:
            self.warn(ref, f"finding '{code}' is not a finding mascds knows")
            return False
        if o.valueBoolean is None:
            self.warn(ref, f"finding '{code}' has no valueBoolean (present or absent)")
            return False
        t = self.time(ref, o.effectiveDateTime or o.issued, "effective time")
        if t is None:
            self.error(ref, f"finding '{code}' has no effective time; left out", "give effectiveDateTime")
            return False
        self.findings.append(Finding(ref, self.illustrative(o), code, bool(o.valueBoolean), t))
        return True

    # --- Condition -------------------------------------------------------------------------------------
    def condition(self, c: Condition, ref: str) -> bool:
        verification = [code for _, code, _ in codings(c.verificationStatus)]
        skip = [v for v in verification if v in ("refuted", "entered-in-error", "unconfirmed", "differential")]
        if skip:
            self.warn(ref, f"verificationStatus {skip[0]}; not used as a diagnosis")
            return False
        ids = self._diagnosis_ids(c.code, ref)
        if not ids:
            return False
        clinical = next((code for _, code, _ in codings(c.clinicalStatus)), None)
        onset_value = c.onsetDateTime or (c.onsetPeriod.start if c.onsetPeriod else None) or c.recordedDate
        onset = self.time(ref, onset_value, "onset") if onset_value is not None else None
        abatement = c.abatementDateTime or (
            (c.abatementPeriod.end or c.abatementPeriod.start) if c.abatementPeriod else None)
        resolved = self.time(ref, abatement, "abatement") if abatement is not None else None
        if abatement is None and clinical in ("inactive", "remission", "resolved"):
            names = ", ".join(self.v.diagnoses[i].name for i in ids)
            self.warn(ref, f"{names} is {clinical} with no abatement date, so when it was active is unknown; "
                      "not used (record abatementDateTime)")
            return False
        if onset is not None and resolved is not None and resolved < onset:
            self.error(ref, "abatement is before onset; left out", "check onsetDateTime and abatementDateTime")
            return False
        ill = self.illustrative(c)
        for i in ids:
            self.diagnoses.append(Diagnosis(ref, ill, i, onset, resolved))
        return True

    def _diagnosis_ids(self, cc: CodeableConcept | None, ref: str) -> tuple[str, ...]:
        ids: list[str] = []
        for system, code, _ in codings(cc):
            if system == MASCDS_SYSTEMS["diagnosis"]:
                if code in self.v.diagnoses:
                    ids.append(code)
                continue
            name = self.t.system_name(system)
            if name in ("snomed", "icd10"):
                ids.extend(self.t.diagnoses_for(name, code))
        if ids:
            return tuple(dict.fromkeys(ids))
        for text in texts(cc):
            if text.lower() in self.t.ambiguous_text:
                self.warn(ref, f"'{text}' is ambiguous as free text (it names more than one condition); code it "
                          "with SNOMED CT or ICD-10")
                return ()
            found = self.v.diagnosis_id(text)
            if found:
                return (found,)
        self.warn(ref, f"{describe(cc)} is not a diagnosis mascds uses")
        return ()

    # --- medications -----------------------------------------------------------------------------------
    def _medication(self, resource: Resource, concept: CodeableConcept | None,
                    reference: Reference | None) -> DrugMatch:
        concepts: list[CodeableConcept | None] = [concept]
        target: Any = self.resolve(resource, reference) if reference is not None else None
        if _is(target, "Medication"):
            concepts = [target.code]
        elif reference is not None and target is None:
            concepts = [fhir_lean.CodeableConcept(text=reference.display)] if reference.display else []
        found = match_drug(concepts)
        if found.drug is None and _is(target, "Medication"):
            # A compounded medication without a product code: its single known ingredient names the drug.
            per_ingredient = {match_drug([i.itemCodeableConcept]).drug for i in target.ingredient or ()
                              if i.itemCodeableConcept is not None}
            per_ingredient.discard(None)
            if len(per_ingredient) == 1:
                return DrugMatch(per_ingredient.pop(), "code", False, found.described)
        return found

    def _drug_or_warn(self, match: DrugMatch, ref: str) -> str | None:
        if match.drug is None:
            if match.described == NO_MEDICATION:
                self.warn(ref, "the medication has no code or text mascds can read; not used")
            elif match.ambiguous:
                self.warn(ref, f"{match.described} names several drugs ({', '.join(match.ambiguous)}); not used")
            else:
                self.warn(ref, f"{match.described} is not a drug mascds knows")
            return None
        if match.local_form:
            self.warn(ref, f"{match.described}: {self.v.drugs[match.drug].name} in a form for local application; "
                      "not a systemic course")
            return None
        return match.drug

    def _route(self, cc: CodeableConcept | None, ref: str) -> tuple[str | None, bool]:
        """(route id, local): a route of local application makes the course one mascds does not read."""
        if cc is None:
            return None, False
        for system, code, _ in codings(cc):
            if system == MASCDS_SYSTEMS["route"] and code in self.v.routes:
                return code, False
            name = self.t.system_name(system)
            if name == "snomed":
                found = self.t.route_for(name, code)
                if found:
                    return found, False
                if self.t.is_local_route(name, code):
                    return None, True
        for text in texts(cc):
            found = self.v.route_id(text)
            if found:
                return found, False
        self.warn(ref, f"route {describe(cc)} is not a route mascds knows; the course is kept without a route")
        return None, False

    def _dose(self, qty: Quantity | None, ref: str, what: str = "dose") -> Dose | None:
        if qty is None or qty.value is None:
            return None
        value = float(qty.value)
        shown = (qty.unit or qty.code or "").strip()
        if not math.isfinite(value):
            self.error(ref, f"{what} {value:g} is not a number; the course is kept without a dose", "check the dose")
            return None
        try:
            dose, note = read_quantity_unit(qty, self.t.system_name(qty.system) == "ucum",
                                            lambda u: self.v.dose_unit(u) is not None,
                                            lambda u: replace(parse_dose(value, u), written=""))
        except UnitConflict as exc:
            self.error(ref, f"{what} {value:g}: {exc}; the course is kept without a dose",
                       "make Quantity.unit the display of the UCUM Quantity.code, or correct the code")
            return None
        except UnitError as exc:
            self.warn(ref, f"{what} '{value:g} {shown}' not used: {exc}")
            return None
        if note is not None:
            self.warn(ref, f"{what}: {note}")
        if value < 0:
            self.error(ref, f"negative {what} {value:g} {shown}; the course is kept without a dose", "check the dose")
            return None
        return replace(dose, written=f"{value:g} {shown}")

    def _rate(self, dosage: Any, ref: str) -> Dose | None:
        rate = getattr(dosage, "rateQuantity", None)
        if rate is not None:
            return self._dose(rate, ref, "rate")
        ratio = getattr(dosage, "rateRatio", None)
        if ratio is not None and ratio.numerator is not None and ratio.denominator is not None:
            num, den = ratio.numerator, ratio.denominator
            if den.value is not None and float(den.value) == 1 and num.value is not None:
                unit = f"{num.code or num.unit}/{den.code or den.unit}"
                return self._dose(fhir_lean.Quantity(value=num.value, unit=unit), ref, "rate")
            self.warn(ref, "rateRatio with a denominator other than 1 is not used; the course is kept without a rate")
        return None

    def _frequency(self, timing: Timing | None, ref: str) -> tuple[str | None, int | None]:
        """(frequency id, number of doses) from a Timing; (None, count) when it gives no usable frequency."""
        if timing is None:
            return None, None
        rep = timing.repeat
        count = rep.count if rep is not None else None
        for _, code, _ in codings(timing.code):
            found = self.t.timing_codes.get(code.upper())
            if found:
                return found, count
        if rep is not None and rep.frequency and rep.period and rep.periodUnit in _PERIOD_HOURS:
            hours = float(rep.period) * _PERIOD_HOURS[rep.periodUnit] / rep.frequency
            for f in self.v.frequencies.values():
                if f.interval_hours is not None and abs(f.interval_hours - hours) < 1e-9:
                    return f.id, count
            self.warn(ref, f"dosing every {hours:g} h is not a frequency mascds knows; taken as a single dose at the "
                      "start")
            return None, count
        if count == 1:
            return "once", 1
        return None, count

    def _course(self, ref: str, ill: bool, drug: str, dosage: Any, start: int, end: int | None, frequency: str,
                dose: Dose | None, regimen: str | None, route_concept: CodeableConcept | None = None) -> bool:
        concept = getattr(dosage, "route", None) if dosage is not None else route_concept
        route, local = self._route(concept, ref) if concept is not None else (None, False)
        if local:
            self.warn(ref, f"{self.v.drugs[drug].name} by a route of local application; not a systemic course")
            return False
        if end is not None and end < start:
            self.error(ref, "the course ends before it starts; left out", "check the start and end times")
            return False
        interval = self.v.frequencies[frequency].interval_hours
        if interval is not None and end is not None and (end - start) / (interval * 3600) > MAX_FACTS_PER_COURSE:
            self.error(ref, f"this course has more than {MAX_FACTS_PER_COURSE} doses; left out",
                       "split it into courses")
            return False
        if regimen is not None and regimen not in self.v.regimens:
            self.warn(ref, f"regimen '{regimen}' is not a regimen mascds knows; not used")
            regimen = None
        self.courses.append(Course(ref, ill, drug, route, regimen, dose, frequency, interval, start, end))
        return True

    def medication_administration(self, m: MedicationAdministration, ref: str) -> bool:
        if m.status in ("not-done", "entered-in-error"):
            self.warn(ref, f"status {m.status}; not used")
            return False
        drug = self._drug_or_warn(self._medication(m, m.medicationCodeableConcept, m.medicationReference), ref)
        if drug is None:
            return False
        dosage = m.dosage
        if m.effectivePeriod is not None:
            start = self.time(ref, m.effectivePeriod.start, "effectivePeriod.start")
            if start is None:
                if m.effectivePeriod.start is None:
                    self.error(ref, "effectivePeriod has no start; left out", "give effectivePeriod.start")
                return False
            end = self.time(ref, m.effectivePeriod.end, "effectivePeriod.end") if m.effectivePeriod.end else None
            if end is None and m.status in ("completed", "stopped"):
                self.warn(ref, f"status {m.status} with no end time; the infusion is taken as ending when it started")
                end = start
            dose = self._rate(dosage, ref) if dosage is not None else None
            if dose is None and dosage is not None:
                dose = self._dose(dosage.dose, ref)
            frequency = "continuous"
        else:
            start = self.time(ref, m.effectiveDateTime, "effectiveDateTime")
            if start is None:
                if m.effectiveDateTime is None:
                    self.error(ref, "no effective time; left out", "give effectiveDateTime or effectivePeriod")
                return False
            end, frequency = start, "once"
            dose = self._dose(dosage.dose, ref) if dosage is not None else None
        n = len(self.courses)
        ok = self._course(ref, self.illustrative(m), drug, dosage, start, end, frequency, dose,
                          has_extension(m, "regimen"), has_extension(m, "route"))
        reason = has_extension(m, "stop-reason")  # statusReason here is why a dose was not given
        if reason is not None:
            concept = fhir_lean.CodeableConcept(
                coding=[fhir_lean.Coding(system=MASCDS_SYSTEMS["stop-reason"], code=str(reason))])
            self._stop_reason(n, [concept], ref)
        return ok

    def _dosage_course(self, ref: str, ill: bool, drug: str, dosages: Sequence[Dosage] | None, start_value: object,
                       end_value: object, status: str | None, regimen: str | None) -> bool:
        dosage = dosages[0] if dosages else None
        if dosages and len(dosages) > 1:
            self.warn(ref, f"{len(dosages)} dosage instructions; only the first is used")
        if dosage is not None and (dosage.asNeededBoolean or dosage.asNeededCodeableConcept is not None):
            # An as-needed prescription says a dose may be taken, not that one was: it is not a running course.
            self.warn(ref, f"{self.v.drugs[drug].name} as needed (PRN); not a course of regular doses, not used")
            return False
        timing = dosage.timing if dosage is not None else None
        rep = timing.repeat if timing is not None else None
        bounds = rep.boundsPeriod if rep is not None else None
        start_raw = (bounds.start if bounds is not None and bounds.start else None) or start_value
        start = self.time(ref, start_raw, "start")
        if start is None:
            if start_raw is None:
                self.error(ref, "no start time; left out", "give a start (boundsPeriod.start, authoredOn or "
                           "effectiveDateTime)")
            return False
        frequency, count = self._frequency(timing, ref)
        dose = None
        rates = [dr for dr in (dosage.doseAndRate or ()) if dr.rateQuantity is not None or dr.rateRatio is not None
                 or dr.rateRange is not None] if dosage is not None else []
        if frequency is None and rates:
            frequency = "continuous"  # a rate and no repeat pattern: an infusion
        for dr in (dosage.doseAndRate or ()) if dosage is not None else ():
            dose = self._dose(dr.doseQuantity, ref) if dr.doseQuantity is not None else None
            if dose is None:
                dose = self._rate(dr, ref)
            if dose is not None:
                break
        end: int | None = None
        end_raw = (bounds.end if bounds is not None and bounds.end else None) or end_value
        if end_raw is not None:
            end = self.time(ref, end_raw, "end")
        elif rep is not None and rep.boundsDuration is not None and rep.boundsDuration.value is not None:
            hours = _DURATION_HOURS.get(rep.boundsDuration.code or rep.boundsDuration.unit or "")
            if hours is not None:
                end = start + round(float(rep.boundsDuration.value) * hours * 3600)
        elif count is not None and frequency is not None and count >= 1:
            interval = self.v.frequencies[frequency].interval_hours
            if interval is not None:
                end = start + round((count - 1) * interval * 3600)
        elif frequency == "continuous" and rep is not None and rep.duration and rep.durationUnit in _PERIOD_HOURS:
            end = start + round(float(rep.duration) * _PERIOD_HOURS[rep.durationUnit] * 3600)
        if frequency is None:
            self.warn(ref, "no dosing frequency mascds can read; the course is taken as a single dose at its start"
                      + ("" if status in ("completed", "stopped") else ", still running"))
            frequency = "once"
        if end is None and status in ("completed", "stopped"):
            if frequency != "once":
                self.warn(ref, f"status {status} with no end time; the course is taken as ending when it started")
            end = start
        return self._course(ref, ill, drug, dosage, start, end, frequency, dose, regimen)

    def medication_request(self, m: MedicationRequest, ref: str) -> bool:
        status, intent = m.status, m.intent
        if status in ("cancelled", "entered-in-error", "unknown"):
            self.warn(ref, f"status {status}; not used")
            return False
        if m.doNotPerform:
            self.warn(ref, "a request not to give the medication (doNotPerform); not used")
            return False
        if intent == "option":
            self.warn(ref, "intent option (one of several choices); not used")
            return False
        drug = self._drug_or_warn(self._medication(m, m.medicationCodeableConcept, m.medicationReference), ref)
        if drug is None:
            return False
        ill = self.illustrative(m)
        order_status = None
        if status == "draft" or (intent in ("proposal", "plan") and status in ("active", "on-hold")):
            order_status = "draft"
        elif status == "active" and has_extension(m, "order-only"):
            order_status = "active"
        elif intent in ("proposal", "plan"):
            self.warn(ref, f"a {intent} with status {status}; not used")
            return False
        if order_status is not None:
            dosage = m.dosageInstruction[0] if m.dosageInstruction else None
            bounds = dosage.timing.repeat.boundsPeriod if dosage is not None and dosage.timing is not None and \
                dosage.timing.repeat is not None else None
            when = m.authoredOn or (bounds.start if bounds is not None else None)
            t = self.time(ref, when, "authoredOn")
            if t is None:
                if when is None:
                    self.error(ref, "an order with no authoredOn; left out", "give authoredOn")
                return False
            dose = None
            for dr in (dosage.doseAndRate or ()) if dosage is not None else ():
                dose = self._dose(dr.doseQuantity, ref) if dr.doseQuantity is not None else self._rate(dr, ref)
                if dose is not None:
                    break
            self.orders.append(Order(ref, ill, drug, order_status, t, dose))
            return True
        n = len(self.courses)
        ok = self._dosage_course(ref, ill, drug, m.dosageInstruction, m.authoredOn, None, status,
                                 has_extension(m, "regimen"))
        self._stop_reason(n, [m.statusReason] if m.statusReason is not None else [], ref)
        return ok

    def _stop_reason(self, n: int, concepts: Sequence[CodeableConcept], ref: str) -> None:
        """Why the course just added (index ``n``, if it was added) stopped, from statusReason: a code of the
        reviewed table or of mascds's stop-reason system, or a text naming a stop reason; other text is read as
        unknown, with a warning naming it. A reason on a course that has not ended is not used."""
        if len(self.courses) <= n or not concepts:
            return
        found: str | None = None
        for cc in concepts:
            for system, code, _ in codings(cc):
                if system == MASCDS_SYSTEMS["stop-reason"] and code in self.v.stop_reasons:
                    found = code
                elif self.t.system_name(system) is not None:
                    found = self.t.stop_reason_for(self.t.system_name(system) or "", code)
                if found:
                    break
            if found is None:
                found = next((r for r in (self.v.stop_reason_id(t) for t in texts(cc)) if r), None)
            if found:
                break
        if found is None:
            self.warn(ref, f"stop reason {', '.join(describe(cc) for cc in concepts)} is not one mascds knows; "
                      "read as unknown")
            found = "unknown"
        course = self.courses[n]
        if course.end is None:
            self.warn(ref, "a stop reason on a course that has not ended; not used")
            return
        self.courses[n] = replace(course, stop_reason=found)

    def medication_statement(self, m: MedicationStatement, ref: str) -> bool:
        if m.status in ("not-taken", "entered-in-error", "intended"):
            self.warn(ref, f"status {m.status}; not used")
            return False
        drug = self._drug_or_warn(self._medication(m, m.medicationCodeableConcept, m.medicationReference), ref)
        if drug is None:
            return False
        start_value: object = m.effectiveDateTime
        end_value: object = None
        if m.effectivePeriod is not None:
            start_value, end_value = m.effectivePeriod.start, m.effectivePeriod.end
        elif m.effectiveDateTime is not None and m.status in ("completed", "stopped"):
            end_value = m.effectiveDateTime
        n = len(self.courses)
        ok = self._dosage_course(ref, self.illustrative(m), drug, m.dosage, start_value, end_value, m.status,
                                 has_extension(m, "regimen"))
        self._stop_reason(n, m.statusReason or [], ref)
        return ok

    # --- reactions -------------------------------------------------------------------------------------
    def _manifestations(self, concepts: Iterable[CodeableConcept], ref: str) -> list[str]:
        out: list[str] = []
        for cc in concepts:
            found = None
            for system, code, _ in codings(cc):
                if system == MASCDS_SYSTEMS["manifestation"] and code in self.v.manifestations:
                    found = code
                elif self.t.system_name(system) == "snomed":
                    found = self.t.manifestation_for("snomed", code)
                if found:
                    break
            if found is None:
                found = next((m for m in (self.v.manifestation_id(t) for t in texts(cc)) if m), None)
            if found is None:
                self.warn(ref, f"manifestation {describe(cc)} is not one mascds knows; not used")
            else:
                out.append(found)
        return list(dict.fromkeys(out))

    def _severity(self, severity: str | None, ref: str) -> str | None:
        """The severity, or None when not recorded: rules on severity are then undecided and ask for it."""
        if severity in self.v.severities:
            return severity
        if severity is not None:
            self.warn(ref, f"reaction severity '{severity}' is not one mascds knows; treated as not recorded")
        return None

    def allergy(self, a: AllergyIntolerance, ref: str) -> bool:
        verification = [code for _, code, _ in codings(a.verificationStatus)]
        skip = [v for v in verification if v in ("refuted", "entered-in-error")]
        if skip:
            self.warn(ref, f"verificationStatus {skip[0]}; not used")
            return False
        if any(self.t.system_name(s) == "snomed" and self.t.is_no_known_allergy("snomed", c)
               for s, c, _ in codings(a.code)):
            self.warn(ref, f"{describe(a.code)}: records that no allergy is known; nothing to map")
            return False
        categories = {str(c) for c in (a.category or ()) if c}
        if categories and "medication" not in categories:
            self.warn(ref, f"a {'/'.join(sorted(categories))} allergy ({describe(a.code)}), not a drug allergy; "
                      "not used")
            return False
        base = match_drug([a.code])
        if not a.reaction:
            if base.drug is not None:
                self.warn(ref, f"an allergy to {self.v.drugs[base.drug].name} with no reaction recorded "
                          "(manifestation, severity); not used by rules")
            else:
                self.warn(ref, f"{base.described} is not a drug mascds knows; not used")
            return False
        ill = self.illustrative(a)
        mapped = False
        for r in a.reaction:
            match = match_drug([r.substance]) if r.substance is not None else base
            if match.drug is None:
                match = base
            # An allergy to a drug holds whatever the form that caused it, so local forms are not excluded here.
            drug = match.drug
            if drug is None:
                self.warn(ref, f"{match.described} is not a drug mascds knows; not used")
                continue
            when = r.onset or a.onsetDateTime or (a.onsetPeriod.start if a.onsetPeriod else None) or \
                a.recordedDate or a.lastOccurrence
            t = self.time(ref, when, "reaction onset")
            if t is None:
                if when is None:
                    self.error(ref, "a reaction with no time (reaction.onset, onsetDateTime or recordedDate); left "
                               "out", "record when the reaction happened")
                continue
            manifestations = self._manifestations(r.manifestation or (), ref)
            severity = self._severity(r.severity, ref)
            # recordedDate and lastOccurrence say when it was recorded or last seen, not when it began
            began = r.onset or a.onsetDateTime or (a.onsetPeriod.start if a.onsetPeriod else None)
            self.reactions.append(Reaction(ref, ill or self.illustrative(r), drug, tuple(manifestations), severity, t,
                                           began is not None))
            mapped = True
        return mapped

    def adverse_event(self, e: AdverseEvent, ref: str) -> bool:
        if e.actuality == "potential":
            self.warn(ref, "a potential adverse event (it did not happen); not used")
            return False
        drugs: list[str] = []
        for s in e.suspectEntity or ():
            target = self.resolve(e, s.instance)
            if _is(target, "Medication"):
                found = match_drug([target.code]).drug
            elif _is(target, "MedicationAdministration", "MedicationStatement", "MedicationRequest"):
                found = self._medication(target, target.medicationCodeableConcept, target.medicationReference).drug
            else:
                shown = s.instance.display if s.instance is not None else None
                found = match_drug([fhir_lean.CodeableConcept(text=shown)]).drug if shown else None
            if found:
                drugs.append(found)
        if not drugs:
            self.warn(ref, "names no suspect drug mascds knows; not used")
            return False
        manifestations = self._manifestations([e.event] if e.event is not None else [], ref)
        if not manifestations:
            if e.event is None:
                self.warn(ref, "no event (manifestation) recorded; not used")
            return False
        severity_codes = [code for _, code, _ in codings(e.severity)]
        severity = self._severity(severity_codes[0] if severity_codes else None, ref)
        when = e.date or e.detected or e.recordedDate
        t = self.time(ref, when, "date")
        if t is None:
            if when is None:
                self.error(ref, "an adverse event with no date; left out", "give AdverseEvent.date")
            return False
        for d in dict.fromkeys(drugs):
            self.reactions.append(Reaction(ref, self.illustrative(e), d, tuple(manifestations), severity, t))
        return True

    # --- Procedure -------------------------------------------------------------------------------------
    def procedure(self, p: Procedure, ref: str) -> bool:
        if p.status in ("not-done", "entered-in-error", "preparation"):
            self.warn(ref, f"status {p.status}; not used")
            return False
        devices = {code for cc in (p.usedCode or ()) for _, code, _ in codings(cc)}
        kind = None
        for system, code, _ in codings(p.code):
            if system == MASCDS_SYSTEMS["organ-support"] and code in self.v.organ_support:
                kind = code
            elif self.t.system_name(system) == "snomed":
                kind = self.t.support_for("snomed", code, devices)
            if kind:
                break
        if kind is None:
            self.warn(ref, f"{describe(p.code)} is not an organ support mascds uses")
            return False
        period = p.performedPeriod
        start_raw = (period.start if period is not None else None) or p.performedDateTime
        start = self.time(ref, start_raw, "performed start")
        if start is None:
            if start_raw is None:
                self.error(ref, "organ support with no performed time; left out", "give performedPeriod.start")
            return False
        end = self.time(ref, period.end, "performed end") if period is not None and period.end else None
        if end is None and p.status in ("completed", "stopped"):
            self.warn(ref, f"status {p.status} with no end time; taken as ending when it started")
            end = start
        if end is not None and end < start:
            self.error(ref, "organ support ends before it starts; left out", "check performedPeriod")
            return False
        self.supports.append(OrganSupport(ref, self.illustrative(p), kind, start, end))
        return True

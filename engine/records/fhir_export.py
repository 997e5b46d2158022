"""A snapshot (a shipped case) -> a FHIR R4 collection Bundle that reads back into the same snapshot.

Standard codes are written wherever the reviewed tables have one (LOINC and UCUM for observations, RxNorm and
ATC for drugs, SNOMED CT or ICD-10 for diagnoses, manifestations, routes and organ support); what FHIR has no
element or code for is written with mascds extensions and code systems (``https://mascds.invalid/fhir/...``):
the timeline start, an age known only in years, the baseline weight, sections not recorded, illustrative values,
course regimens, findings, and diagnoses or manifestations without a standard code. docs/fhir.md lists them.

    bundle = case_to_bundle(engine.load_case("cases/wu-2025-ruxolitinib.yaml"))
"""

from __future__ import annotations

import re
import uuid
from fractions import Fraction
from typing import Any

from ..core.snapshot import Course, Diagnosis, Finding, Observation, Order, OrganSupport, Reaction, Snapshot
from ..core.times import iso
from ..core.units import Dose, UnitError, parse_dose, to_canonical
from ..core.vocab import vocabulary
from .fhir_codes import MASCDS_SYSTEMS, CodeEntry, code_tables, extension_url

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_NAMESPACE = uuid.UUID("9d6c1c6e-4b1e-5b8a-9a59-6d2f3c3a7e10")  # fixed: the same case gives the same fullUrls
# The UCUM code of each dose dimension's base unit (units.yaml dose_display), for doses written as converted.
_DOSE_BASE = {"mass": "mg", "mass_per_kg": "mg/kg", "mass_per_day": "mg/d", "mass_per_kg_per_day": "mg/kg/d",
              "rate_per_kg": "ug/kg/min", "units_rate_per_kg": "U/kg/h"}
_RATES = frozenset({"rate_per_kg", "units_rate_per_kg"})
_UCUM = "http://unitsofmeasure.org"


def _number(text_or_value: str | float) -> int | float:
    value = float(text_or_value)
    return int(value) if value.is_integer() and abs(value) < 1e15 else value


def _ext(name: str, **value: Any) -> dict[str, Any]:
    return {"url": extension_url(name), **value}


class _Writer:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.v = vocabulary()
        self.t = code_tables()
        self.entries: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.patient_url = self._url("Patient", "patient")

    def _url(self, rtype: str, rid: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{self.snap.id}/{rtype}/{rid}')}"

    def add(self, resource: dict[str, Any], illustrative: bool = False) -> None:
        rtype = resource["resourceType"]
        if "id" not in resource:
            self.counts[rtype] = self.counts.get(rtype, 0) + 1
            resource = {"resourceType": rtype, "id": f"{rtype.lower()}-{self.counts[rtype]}",
                        **{k: v for k, v in resource.items() if k != "resourceType"}}
        if illustrative:
            resource.setdefault("extension", []).append(_ext("illustrative", valueBoolean=True))
        self.entries.append({"fullUrl": self._url(rtype, resource["id"]), "resource": resource})

    @property
    def subject(self) -> dict[str, str]:
        return {"reference": self.patient_url}

    # --- concepts --------------------------------------------------------------------------------------
    def concept(self, table: str, term: str, mascds: str, name: str) -> dict[str, Any]:
        """A CodeableConcept: the table's standard code when one maps to exactly this term, else mascds's own."""
        entry: CodeEntry | None = self.t.preferred(table, term)
        if entry is not None:
            system, code = self.t.export_code(entry)
            return {"coding": [{"system": system, "code": code, "display": entry.display}], "text": name}
        return {"coding": [{"system": MASCDS_SYSTEMS[mascds], "code": term, "display": name}], "text": name}

    def drug(self, drug: str) -> dict[str, Any]:
        d = self.v.drugs[drug]
        coding = [{"system": self.t.uri("rxnorm"), "code": c} for c in d.rxnorm[:1]]
        coding += [{"system": self.t.uri("atc"), "code": c} for c in d.atc[:1]]
        return ({"coding": coding} if coding else {}) | {"text": d.name}

    def dose(self, dose: Dose) -> dict[str, Any]:
        """The dose as written when that reads back to the same value, else in its base unit."""
        value_text, _, unit_text = dose.written.partition(" ")
        unit = self.v.dose_unit(unit_text)
        try:
            if unit is not None and parse_dose(float(value_text), unit.code).value == dose.value:
                return {"value": _number(value_text), "unit": unit_text, "system": _UCUM, "code": unit.code}
        except (UnitError, ValueError):
            pass
        base = _DOSE_BASE[dose.dimension]
        return {"value": _number(dose.value), "unit": base, "system": _UCUM, "code": base}

    # --- resources -------------------------------------------------------------------------------------
    def patient(self) -> None:
        p = self.snap.patient
        res: dict[str, Any] = {"resourceType": "Patient", "id": "patient"}
        ext: list[dict[str, Any]] = []
        if self.snap.start is not None:
            ext.append(_ext("timeline-start", valueDateTime=iso(self.snap.start)))
        if p.age_at_start is not None:
            ext.append(_ext("age-at-timeline-start", valueAge={"value": _number(p.age_at_start), "unit": "a",
                                                               "system": _UCUM, "code": "a"}))
        if p.weight_kg is not None:
            ext.append(_ext("baseline-weight", valueQuantity={"value": _number(p.weight_kg), "unit": "kg",
                                                              "system": _UCUM, "code": "kg"}))
        ext.extend(_ext("not-recorded", valueCode=s) for s in sorted(self.snap.unknown_sections))
        if ext:
            res["extension"] = ext
        if p.sex is not None:
            res["gender"] = p.sex
        if p.birth is not None:
            stamp = iso(p.birth)
            res["birthDate"] = stamp[:10]
            if not stamp.endswith("T00:00:00Z"):
                res["_birthDate"] = {"extension": [{
                    "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": stamp}]}
        self.add(res, p.illustrative)

    def diagnosis(self, d: Diagnosis) -> None:
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                           "code": "resolved" if d.resolved is not None else "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": self.concept("diagnoses", d.code, "diagnosis", self.v.diagnoses[d.code].name),
            "subject": self.subject,
        }
        if d.onset is not None:
            res["onsetDateTime"] = iso(d.onset)
        if d.resolved is not None:
            res["abatementDateTime"] = iso(d.resolved)
        self.add(res, d.illustrative)

    def observation_quantity(self, o: Observation) -> dict[str, Any]:
        """The value as written when that reads back to the same canonical number, else in the canonical unit."""
        a = self.v.analytes[o.analyte]
        value_text, _, unit_text = o.written.partition(" ")
        ucum = self.v.unit_code(unit_text)
        try:
            same = ucum is not None and to_canonical(o.analyte, float(value_text), ucum) == o.value
        except (UnitError, ValueError):
            same = False
        if same:
            return {"value": _number(value_text), "unit": unit_text, "system": _UCUM, "code": ucum}
        return {"value": _number(o.value), "unit": self.v.display_unit(a.canonical), "system": _UCUM,
                "code": a.canonical}

    def observation(self, o: Observation) -> None:
        a = self.v.analytes[o.analyte]
        qty = self.observation_quantity(o)
        category = "laboratory" if a.kind == "lab" else "vital-signs"
        self.add({
            "resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": category}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": a.loinc[0], "display": a.name} if a.loinc
                                else {"system": MASCDS_SYSTEMS["analyte"], "code": o.analyte, "display": a.name}],
                     "text": a.name},
            "subject": self.subject, "effectiveDateTime": iso(o.time), "valueQuantity": qty,
        }, o.illustrative)

    def finding(self, f: Finding) -> None:
        name = self.v.findings[f.code].name
        self.add({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": MASCDS_SYSTEMS["finding"], "code": f.code, "display": name}],
                     "text": name},
            "subject": self.subject, "effectiveDateTime": iso(f.time), "valueBoolean": f.present,
        }, f.illustrative)

    def _course_common(self, c: Course, res: dict[str, Any]) -> dict[str, Any]:
        if c.regimen is not None:
            res.setdefault("extension", []).append(_ext("regimen", valueCode=c.regimen))
        if c.stop_reason is not None:
            if res["resourceType"] == "MedicationAdministration":  # its statusReason says why a dose was not given
                res.setdefault("extension", []).append(_ext("stop-reason", valueCode=c.stop_reason))
            else:
                concept = {"coding": [{"system": MASCDS_SYSTEMS["stop-reason"], "code": c.stop_reason,
                                       "display": self.v.stop_reasons[c.stop_reason].name}],
                           "text": self.v.stop_reasons[c.stop_reason].name}
                res["statusReason"] = concept
                if c.stop_reason != "completed":
                    res["status"] = "stopped"
        return res

    def course(self, c: Course) -> None:
        route = self.concept("routes", c.route, "route", self.v.routes[c.route].name) if c.route else None
        if c.frequency == "continuous" or (c.frequency == "once" and c.end == c.start):
            # One administration: a single dose at a time, or an infusion over a period.
            dosage: dict[str, Any] = {}
            if route is not None:
                dosage["route"] = route
            if c.dose is not None:
                key = "rateQuantity" if c.frequency == "continuous" and c.dose.dimension in _RATES else "dose"
                dosage[key] = self.dose(c.dose)
            res: dict[str, Any] = {
                "resourceType": "MedicationAdministration",
                "status": "completed" if c.end is not None else "in-progress",
                "medicationCodeableConcept": self.drug(c.drug), "subject": self.subject,
            }
            if c.frequency == "once":
                res["effectiveDateTime"] = iso(c.start)
            else:
                res["effectivePeriod"] = {"start": iso(c.start)} | ({"end": iso(c.end)} if c.end is not None else {})
            if "dose" in dosage or "rateQuantity" in dosage:
                res["dosage"] = dosage
            elif route is not None:
                # FHIR mad-1: a dosage needs a dose or a rate; a route alone goes in a mascds extension.
                res["extension"] = [_ext("route", valueCodeableConcept=route)]
            self.add(self._course_common(c, res), c.illustrative)
            return
        # A course of repeated doses: a MedicationRequest whose timing gives the interval and the bounds.
        bounds = {"start": iso(c.start)} | ({"end": iso(c.end)} if c.end is not None else {})
        repeat: dict[str, Any] = {"boundsPeriod": bounds}
        if c.interval_hours is None:
            repeat["count"] = 1
        else:
            hours = Fraction(c.interval_hours).limit_denominator(1000)
            if hours % 168 == 0:
                repeat.update(frequency=1, period=_number(float(hours / 168)), periodUnit="wk")
            elif hours % 24 == 0:
                repeat.update(frequency=1, period=_number(float(hours / 24)), periodUnit="d")
            else:
                repeat.update(frequency=1, period=_number(float(hours)), periodUnit="h")
        instruction: dict[str, Any] = {"timing": {"repeat": repeat}}
        if route is not None:
            instruction["route"] = route
        if c.dose is not None:
            instruction["doseAndRate"] = [{"doseQuantity": self.dose(c.dose)}]
        self.add(self._course_common(c, {
            "resourceType": "MedicationRequest", "status": "completed" if c.end is not None else "active",
            "intent": "order", "medicationCodeableConcept": self.drug(c.drug), "subject": self.subject,
            "authoredOn": iso(c.start), "dosageInstruction": [instruction],
        }), c.illustrative)

    def order(self, o: Order) -> None:
        res: dict[str, Any] = {
            "resourceType": "MedicationRequest", "status": o.status, "intent": "order",
            "medicationCodeableConcept": self.drug(o.drug), "subject": self.subject, "authoredOn": iso(o.time),
        }
        if o.status == "active":
            # A signed order not yet given; an active request without this mark is read as a running course.
            res["extension"] = [_ext("order-only", valueBoolean=True)]
        if o.dose is not None:
            res["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": self.dose(o.dose)}]}]
        self.add(res, o.illustrative)

    def reaction(self, r: Reaction) -> None:
        manifestations = [self.concept("manifestations", m, "manifestation", self.v.manifestations[m].name)
                          for m in r.manifestations] or [{"text": "not recorded"}]
        # a time that is not the onset travels as the recording date, so it is not read back as one
        when = {"onset": iso(r.time)} if r.time_is_onset else {}
        self.add({
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification",
                "code": "confirmed"}]},
            "category": ["medication"], "code": self.drug(r.drug), "patient": self.subject,
            "reaction": [{"manifestation": manifestations} | when
                         | ({"severity": r.severity} if r.severity is not None else {})],
        } | ({} if r.time_is_onset else {"recordedDate": iso(r.time)}), r.illustrative)

    def support(self, s: OrganSupport) -> None:
        name = self.v.organ_support[s.kind].name
        res: dict[str, Any] = {
            "resourceType": "Procedure", "status": "completed" if s.end is not None else "in-progress",
            "code": self.concept("organ_support", s.kind, "organ-support", name), "subject": self.subject,
            "performedPeriod": {"start": iso(s.start)} | ({"end": iso(s.end)} if s.end is not None else {}),
        }
        entry = self.t.preferred("organ_support", s.kind)
        if entry is not None and entry.device is not None:
            res["usedCode"] = [{"coding": [{"system": self.t.uri("snomed"), "code": entry.device}]}]
        self.add(res, s.illustrative)


def case_to_bundle(snapshot: Snapshot) -> dict[str, Any]:
    """Write a snapshot as a FHIR R4 collection Bundle (JSON-ready dict): Patient, Condition, Observation
    (LOINC + UCUM), MedicationAdministration (single doses, infusions) or MedicationRequest (courses of repeated
    doses; status draft for draft orders), AllergyIntolerance (reactions) and Procedure (organ support).
    Reading it back with :func:`engine.records.fhir.snapshot_from_bundle` gives the same entries."""
    w = _Writer(snapshot)
    w.patient()
    for d in snapshot.diagnoses:
        w.diagnosis(d)
    for o in snapshot.observations:
        w.observation(o)
    for f in snapshot.findings:
        w.finding(f)
    for c in snapshot.courses:
        w.course(c)
    for od in snapshot.orders:
        w.order(od)
    for r in snapshot.reactions:
        w.reaction(r)
    for s in snapshot.supports:
        w.support(s)
    bundle: dict[str, Any] = {"resourceType": "Bundle"}
    if _FHIR_ID.match(snapshot.id):
        bundle["id"] = snapshot.id
    bundle["type"] = "collection"
    bundle["entry"] = w.entries
    return bundle


__all__ = ["case_to_bundle"]


def _case_id(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "fhir-record"


def snapshot_to_case(snapshot: Snapshot) -> tuple[dict[str, Any], list[str]]:
    """A snapshot as a case-file dict (times ISO 8601 UTC), for ``mascds convert --to case``, and what could not
    be written (named by resource). Values are written as recorded when that reads back to the same number, else
    in the canonical unit."""
    v = vocabulary()
    s = snapshot

    def mark(entry: Any, out: dict[str, Any]) -> dict[str, Any]:
        if entry.illustrative:
            out["illustrative"] = True
        return out

    def dose(d: Dose | None) -> dict[str, Any]:
        if d is None:
            return {}
        q = _Writer(s).dose(d)
        return {"dose": q["value"], "unit": q["unit"] if v.dose_unit(q["unit"]) is not None else q["code"]}

    patient: dict[str, Any] = {}
    if s.patient.sex is not None:
        patient["sex"] = s.patient.sex
    if s.patient.birth is not None:
        patient["birth_date"] = iso(s.patient.birth)
    elif s.patient.age_at_start is not None:
        patient["age_years"] = _number(s.patient.age_at_start)
    if s.patient.weight_kg is not None:
        patient["weight"] = {"value": _number(s.patient.weight_kg), "unit": "kg"}
    mark(s.patient, patient)
    case: dict[str, Any] = {
        "case": {"id": _case_id(s.id), "title": s.title, "description": f"Converted from {s.source}."},
        "patient": patient,
    }
    if s.start is not None:
        case["timeline"] = {"start": iso(s.start)}
    if s.unknown_sections:
        case["not_recorded"] = sorted(s.unknown_sections)
    case["diagnoses"] = [mark(d, {"code": d.code} | ({"onset": iso(d.onset)} if d.onset is not None else {})
                              | ({"resolved": iso(d.resolved)} if d.resolved is not None else {}))
                         for d in s.diagnoses]
    observations = []
    for o in s.observations:
        qty = _Writer(s).observation_quantity(o)
        observations.append(mark(o, {"analyte": o.analyte, "value": qty["value"], "unit": qty["code"],
                                     "time": iso(o.time)}))
    case["observations"] = observations
    case["findings"] = [mark(f, {"code": f.code, "present": f.present, "time": iso(f.time)}) for f in s.findings]
    case["medications"] = [mark(c, {"drug": c.drug} | ({"route": c.route} if c.route else {})
                                | ({"regimen": c.regimen} if c.regimen else {}) | dose(c.dose)
                                | {"frequency": c.frequency, "start": iso(c.start)}
                                | ({"end": iso(c.end)} if c.end is not None else {})
                                | ({"stop_reason": c.stop_reason} if c.stop_reason else {})) for c in s.courses]
    case["orders"] = [mark(o, {"drug": o.drug, "status": o.status, "time": iso(o.time)} | dose(o.dose))
                      for o in s.orders]
    case["reactions"] = [mark(r, {"drug": r.drug, "manifestations": list(r.manifestations)}
                              | ({"severity": r.severity} if r.severity is not None else {})
                              | {"time": iso(r.time)} | ({} if r.time_is_onset else {"time_is_onset": False}))
                         for r in s.reactions if r.manifestations]
    left_out = [f"{r.ref}: a reaction with no manifestation mascds knows; a case file needs one, so it is left "
                "out" for r in s.reactions if not r.manifestations]
    case["organ_support"] = [mark(o, {"kind": o.kind, "start": iso(o.start)}
                                  | ({"end": iso(o.end)} if o.end is not None else {})) for o in s.supports]
    return {k: val for k, val in case.items() if val != []}, left_out


__all__ += ["snapshot_to_case"]

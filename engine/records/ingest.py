"""Ingest stage: a case file -> a :class:`~engine.core.snapshot.Snapshot`, or every reason it cannot be one.

Units are normalised through the reviewed table; an unknown analyte, unit, drug or term is an error that
names the entry; impossible values (negative counts, a ferritin of 10⁹, a time before birth, a course
that ends before it starts) are rejected. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..core.errors import Diagnostic, LoadError, choices_hint
from ..core.snapshot import (
    Course,
    Diagnosis,
    Expectation,
    Finding,
    Observation,
    Order,
    OrganSupport,
    Patient,
    Reaction,
    RecommendsClaim,
    Snapshot,
)
from ..core.times import TIME_HINT, TimeFormatError, parse_time
from ..core.units import Dose, ImpossibleValue, UnitError, parse_dose, shown, to_canonical
from ..core.vocab import vocabulary
from ..language.load import display_path
from ..language.source import Document, PathKey, Positions, format_path, parse_yaml, read_yaml
from ..language.validation import diagnostics_from
from ..runtime.regimen import regimen_warnings
from .casemodel import SECTION_NAMES, Case

MAX_FACTS_PER_COURSE = 2000


class _Ingest:
    def __init__(self, doc: Document, case: Case) -> None:
        self.doc = doc
        self.case = case
        self.diags: list[Diagnostic] = []
        self.vocab = vocabulary()
        self.start: int | None = None
        self.birth: int | None = None

    # --- helpers ---------------------------------------------------------------------------------------
    def err(self, path: PathKey, code: str, message: str, hint: str = "") -> None:
        line, col = self.doc.positions.of_value(path)
        self.diags.append(Diagnostic(self.doc.positions.file, line, col, code, message, hint, format_path(path)))

    def ref(self, path: PathKey) -> str:
        line, col = self.doc.positions.of_value(path)
        return f"{self.doc.positions.file}:{line}:{col}"

    def time(self, text: Any, path: PathKey) -> int | None:
        try:
            t = parse_time(text, self.start)
        except TimeFormatError as exc:
            self.err(path, "E108", str(exc), TIME_HINT)
            return None
        if self.birth is not None and t < self.birth:
            self.err(path, "E400", f"'{text}' is before the patient's birth", "check the date and birth_date")
            return None
        return t

    def term(self, value: str, table: dict[str, Any], what: str, path: PathKey,
             resolver: Any = None) -> str | None:
        found = resolver(value) if resolver else (value if value in table else None)
        if found is None:
            names = [*table, *(syn for entry in table.values() for syn in getattr(entry, "synonyms", ()))]
            self.err(path, "E111" if what != "drug" else "E106", f"unknown {what} '{value}'",
                     choices_hint(value, names))
        return found

    def marked(self, entry: Any, path: PathKey) -> bool:
        """Whether the entry is (wholly or partly) illustrative; in a reconstruction, it must say."""
        if self.case.case.reconstruction_of is not None and not entry.is_marked():
            self.err(path, "E402", "this case reconstructs a publication: say whether this entry is reported "
                     "or illustrative", "add reported: '<what the source says>' or illustrative: true")
        return entry.illustrative_fields() not in (set(), False)

    def dose(self, value: float | None, unit: str | None, path: PathKey) -> Dose | None:
        if value is None or unit is None:
            return None
        try:
            return parse_dose(value, unit)
        except ImpossibleValue as exc:
            self.err((*path, "dose"), "E114", str(exc), exc.hint)
            return None
        except UnitError as exc:
            self.err((*path, "unit"), "E105", str(exc), exc.hint)
            return None

    # --- sections --------------------------------------------------------------------------------------
    def run(self) -> Snapshot | None:
        c = self.case
        if c.timeline is not None:
            self.start = self.time(c.timeline.start, ("timeline", "start"))
        p = c.patient
        if p.birth_date is not None:
            self.birth = self.time(p.birth_date, ("patient", "birth_date"))
        weight = None
        if p.weight is not None:
            try:
                weight = to_canonical("body-weight", p.weight.value, p.weight.unit)
            except ImpossibleValue as exc:
                self.err(("patient", "weight", "value"), "E114", str(exc), exc.hint)
            except UnitError as exc:
                self.err(("patient", "weight", "unit"), "E105", str(exc), exc.hint)
            else:
                lo, hi = self.vocab.analytes["body-weight"].plausible
                if not lo <= weight <= hi:
                    self.err(("patient", "weight", "value"), "E114", f"impossible body weight {weight:g} kg",
                             f"expected {lo:g}–{hi:g} kg")
        if p.age_years is not None and self.start is None:
            self.err(("patient", "age_years"), "E101", "age_years needs timeline.start (the age is at that date)",
                     "add timeline: {start: <date>} or give birth_date")
        patient = Patient(self.ref(("patient",)), self.marked(p, ("patient",)), p.sex, self.birth,
                          float(p.age_years) if p.age_years is not None else None, weight)
        diagnoses = [d for d in (self.diagnosis(i) for i in range(len(c.diagnoses))) if d]
        observations = [o for o in (self.observation(i) for i in range(len(c.observations))) if o]
        findings = [f for f in (self.finding(i) for i in range(len(c.findings))) if f]
        courses = [m for m in (self.medication(i) for i in range(len(c.medications))) if m]
        orders = [o for o in (self.order(i) for i in range(len(c.orders))) if o]
        reactions = [r for r in (self.reaction(i) for i in range(len(c.reactions))) if r]
        supports = [s for s in (self.support(i) for i in range(len(c.organ_support))) if s]
        expectations = [e for e in (self.expectation(i) for i in range(len(c.expect))) if e]
        for name in c.not_recorded:
            if getattr(c, name):
                self.err(("not_recorded",), "E113", f"'{name}' is listed as not recorded but has entries",
                         "remove it from not_recorded or remove the entries")
        if self.diags:
            return None
        snap = Snapshot(
            id=c.case.id, title=c.case.title, patient=patient, start=self.start,
            diagnoses=tuple(diagnoses), observations=tuple(observations), findings=tuple(findings),
            courses=tuple(courses), orders=tuple(orders), reactions=tuple(reactions), supports=tuple(supports),
            unknown_sections=frozenset(c.not_recorded), expectations=tuple(expectations),
            source=self.doc.positions.file,
        )
        if not snap.event_times() and not expectations:
            self.err(("case",), "E404", "the case has no events", "add observations, medications or other entries")
            return None
        labels = regimen_warnings(snap)
        return dataclasses.replace(snap, warnings=(*snap.warnings, *labels)) if labels else snap

    def diagnosis(self, i: int) -> Diagnosis | None:
        d = self.case.diagnoses[i]
        path: PathKey = ("diagnoses", i)
        code = self.term(d.code, self.vocab.diagnoses, "diagnosis", (*path, "code"), self.vocab.diagnosis_id)
        onset = self.time(d.onset, (*path, "onset")) if d.onset is not None else None
        resolved = self.time(d.resolved, (*path, "resolved")) if d.resolved is not None else None
        if onset is not None and resolved is not None and resolved < onset:
            self.err((*path, "resolved"), "E403", "resolved before its onset", "check the two times")
        ill = self.marked(d, path)
        if code is None:
            return None
        return Diagnosis(self.ref(path), ill, code, onset, resolved)

    def observation(self, i: int) -> Observation | None:
        o = self.case.observations[i]
        path: PathKey = ("observations", i)
        analyte: str | None
        if o.loinc is not None:
            analyte = self.vocab.analyte_for_loinc(o.loinc)
            if analyte is None:
                self.err((*path, "loinc"), "E104", f"LOINC code '{o.loinc}' is not in the analyte table",
                         "use analyte: with a known analyte id, or add the code to the reviewed table")
        else:
            assert o.analyte is not None
            analyte = o.analyte if o.analyte in self.vocab.analytes else None
            if analyte is None:
                self.err((*path, "analyte"), "E104", f"unknown analyte '{o.analyte}'",
                         choices_hint(o.analyte, self.vocab.analytes))
        t = self.time(o.time, (*path, "time"))
        ill = self.marked(o, path)
        if analyte is None or t is None:
            return None
        try:
            value = to_canonical(analyte, o.value, o.unit)
        except ImpossibleValue as exc:
            self.err((*path, "value"), "E114", str(exc), exc.hint)
            return None
        except UnitError as exc:
            self.err((*path, "unit"), "E105", str(exc), exc.hint)
            return None
        a = self.vocab.analytes[analyte]
        lo, hi = a.plausible
        if not lo <= value <= hi:
            unit = self.vocab.display_unit(a.canonical)
            self.err((*path, "value"), "E114", f"impossible {a.name} {shown(o.value)} {o.unit} "
                     f"({value:g} {unit})", f"plausible range is {lo:g}–{hi:g} {unit}; check the value and unit")
            return None
        return Observation(self.ref(path), ill, analyte, value, t, f"{o.value:g} {o.unit}")

    def finding(self, i: int) -> Finding | None:
        f = self.case.findings[i]
        path: PathKey = ("findings", i)
        code = self.term(f.code, self.vocab.findings, "finding", (*path, "code"))
        t = self.time(f.time, (*path, "time"))
        ill = self.marked(f, path)
        if code is None or t is None:
            return None
        return Finding(self.ref(path), ill, code, f.present, t)

    def medication(self, i: int) -> Course | None:
        m = self.case.medications[i]
        path: PathKey = ("medications", i)
        drug = self.term(m.drug, self.vocab.drugs, "drug", (*path, "drug"), self.vocab.drug_id)
        route = self.term(m.route, self.vocab.routes, "route", (*path, "route"), self.vocab.route_id) \
            if m.route is not None else None
        freq = self.term(m.frequency, self.vocab.frequencies, "frequency", (*path, "frequency"),
                         self.vocab.frequency_id)
        regimen = self.term(m.regimen, self.vocab.regimens, "regimen", (*path, "regimen")) \
            if m.regimen is not None else None
        dose = self.dose(m.dose, m.unit, path)
        start = self.time(m.start, (*path, "start"))
        end = self.time(m.end, (*path, "end")) if m.end is not None else None
        ill = self.marked(m, path)
        if start is not None and end is not None and end < start:
            self.err((*path, "end"), "E403", "the course ends before it starts", "check start and end")
            return None
        if drug is None or freq is None or start is None or (m.end is not None and end is None):
            return None
        if freq == "once" and end is None:
            end = start  # a single dose is over when it is given
        interval = self.vocab.frequencies[freq].interval_hours
        if interval is not None and end is not None and (end - start) / (interval * 3600) > MAX_FACTS_PER_COURSE:
            self.err(path, "E114", f"this course has more than {MAX_FACTS_PER_COURSE} doses",
                     "split it into courses, or record it as continuous")
            return None
        stop_reason = self.term(m.stop_reason, self.vocab.stop_reasons, "stop reason", (*path, "stop_reason"),
                                self.vocab.stop_reason_id) if m.stop_reason is not None else None
        if m.regimen is not None and regimen is None:
            return None
        if m.route is not None and route is None:
            return None
        if m.stop_reason is not None and stop_reason is None:
            return None
        if stop_reason is not None and m.end is None and freq != "once":
            self.err((*path, "stop_reason"), "E111", "a stop reason on a course that has not ended",
                     "give the course its end (the time of the last dose), or leave stop_reason out")
            return None
        return Course(self.ref(path), ill, drug, route, regimen, dose, freq, interval, start, end, stop_reason)

    def order(self, i: int) -> Order | None:
        o = self.case.orders[i]
        path: PathKey = ("orders", i)
        drug = self.term(o.drug, self.vocab.drugs, "drug", (*path, "drug"), self.vocab.drug_id)
        t = self.time(o.time, (*path, "time"))
        dose = self.dose(o.dose, o.unit, path)
        ill = self.marked(o, path)
        if drug is None or t is None:
            return None
        return Order(self.ref(path), ill, drug, o.status, t, dose)

    def reaction(self, i: int) -> Reaction | None:
        r = self.case.reactions[i]
        path: PathKey = ("reactions", i)
        drug = self.term(r.drug, self.vocab.drugs, "drug", (*path, "drug"), self.vocab.drug_id)
        ok = True
        manifestations: list[str] = []
        for j, m in enumerate(r.manifestations):
            found = self.term(m, self.vocab.manifestations, "manifestation", (*path, "manifestations", j),
                              self.vocab.manifestation_id)
            if found is None:
                ok = False
            else:
                manifestations.append(found)
        sev = r.severity if r.severity in self.vocab.severities else None
        if r.severity is not None and sev is None:
            self.err((*path, "severity"), "E111", f"unknown severity '{r.severity}'",
                     choices_hint(r.severity, self.vocab.severities))
            ok = False
        t = self.time(r.time, (*path, "time"))
        ill = self.marked(r, path)
        if drug is None or t is None or not ok:
            return None
        return Reaction(self.ref(path), ill, drug, tuple(dict.fromkeys(manifestations)), sev, t, r.time_is_onset)

    def support(self, i: int) -> OrganSupport | None:
        s = self.case.organ_support[i]
        path: PathKey = ("organ_support", i)
        kind = self.term(s.kind, self.vocab.organ_support, "organ support", (*path, "kind"))
        start = self.time(s.start, (*path, "start"))
        end = self.time(s.end, (*path, "end")) if s.end is not None else None
        ill = self.marked(s, path)
        if start is not None and end is not None and end < start:
            self.err((*path, "end"), "E403", "organ support ends before it starts", "check start and end")
            return None
        if kind is None or start is None or (s.end is not None and end is None):
            return None
        return OrganSupport(self.ref(path), ill, kind, start, end)

    def expectation(self, i: int) -> Expectation | None:
        e = self.case.expect[i]
        path: PathKey = ("expect", i)
        t = self.time(e.at, (*path, "at"))
        if t is None:
            return None
        vocab = vocabulary()
        claims = []
        for k, c in enumerate(e.recommends):
            target = self.target((*path, "recommends", k, "target"), c.target)
            if target is not None:
                claims.append(RecommendsClaim(c.kind, target, c.indicator, c.doi, c.rule))
        targets = [self.target((*path, "no_suggestion_of", k), name) for k, name in enumerate(e.no_suggestion_of)]
        no_drugs = tuple(x for x in targets if x is not None and vocab.target_drugs(x))
        for k, x in enumerate(targets):
            if x is not None and not vocab.target_drugs(x):
                self.err((*path, "no_suggestion_of", k), "E106", f"'{x}' is not a drug or drug class",
                         "name a drug or a drug class")
        return Expectation(t, e.note, tuple(e.fires), tuple(e.not_fires), tuple(e.indeterminate),
                           tuple(e.suppressed), tuple(sorted(e.assessments.items())), self.ref(path),
                           tuple((rid, target) for rid, targets in e.suppressed_actions.items() for target in targets),
                           tuple(claims), no_drugs, tuple((k, tuple(v)) for k, v in e.undecided.items()),
                           tuple(e.decided_not_fired), e.scope)

    def target(self, path: PathKey, name: str) -> str | None:
        """A drug (by any synonym), drug class or procedure of the vocabulary, as an id."""
        vocab = vocabulary()
        found = vocab.drug_id(name) or (name if vocab.is_target(name) else None)
        if found is None:
            self.err(path, "E106", f"unknown drug, drug class or procedure '{name}'",
                     choices_hint(name, vocab.target_choices()))
        return found


def ingest_document(doc: Document) -> tuple[Snapshot | None, list[Diagnostic]]:
    if not isinstance(doc.data, dict):
        line, col = doc.positions.of_value(())
        return None, [Diagnostic(doc.positions.file, line, col, "E003", "a case file must be a YAML mapping",
                                 "start with 'case:' and 'patient:'")]
    try:
        case = Case.model_validate(doc.data)
    except ValidationError as exc:
        return None, diagnostics_from(exc, doc, Case) + _other_entries(doc, exc)
    ing = _Ingest(doc, case)
    snap = ing.run()
    return snap, ing.diags


_LISTS = (*SECTION_NAMES, "expect")


def _other_entries(doc: Document, exc: ValidationError) -> list[Diagnostic]:
    """The problems of the entries that are well-formed, when only some list entries are not: a wrong type in
    one entry must not hide an unknown unit or an impossible value in the others until it is fixed. Nothing is
    added when a problem lies outside list entries (case, patient, timeline), where what follows would be a
    knock-on of it (a broken timeline.start makes every 'day N' unreadable)."""
    bad: dict[str, set[int]] = {}
    for e in exc.errors():
        loc = e["loc"]
        if len(loc) < 2 or loc[0] not in _LISTS or not isinstance(loc[1], int):
            return []
        bad.setdefault(str(loc[0]), set()).add(loc[1])
    data = dict(doc.data)
    new_index: dict[str, dict[int, int]] = {}
    for section, wrong in bad.items():
        entries = data.get(section)
        if not isinstance(entries, list):
            return []
        kept = [i for i in range(len(entries)) if i not in wrong]
        new_index[section] = {old: new for new, old in enumerate(kept)}
        data[section] = [entries[i] for i in kept]
    try:
        case = Case.model_validate(data)
    except ValidationError:
        return []

    def moved(path: PathKey) -> PathKey | None:
        if len(path) >= 2 and path[0] in new_index and isinstance(path[1], int):
            new = new_index[str(path[0])].get(path[1])
            return None if new is None else (path[0], new, *path[2:])
        return path

    pos = Positions(doc.positions.file)
    for source, target in ((doc.positions.values, pos.values), (doc.positions.keys, pos.keys)):
        for path, place in source.items():
            to = moved(path)
            if to is not None:
                target[to] = place
    ing = _Ingest(Document(data, pos, doc.text), case)
    ing.run()
    old_index = {section: {new: old for old, new in m.items()} for section, m in new_index.items()}

    def original(path: str) -> str:
        section, _, rest = path.partition("[")
        if section in old_index and rest:
            number, _, tail = rest.partition("]")
            if number.isdigit():
                return f"{section}[{old_index[section][int(number)]}]{tail}"
        return path

    return [dataclasses.replace(d, path=original(d.path)) for d in ing.diags if d.code != "E404"]


def load_case(path: str | Path) -> Snapshot:
    """Read a case file into a snapshot; raises :class:`LoadError` listing every problem."""
    p = Path(path)
    shown = display_path(p)
    doc, diags = read_yaml(p, shown)
    if doc is None or diags:
        raise LoadError(f"case {shown} could not be read", diags)
    snap, diags = ingest_document(doc)
    if snap is None:
        raise LoadError(f"case {shown} is not valid", diags)
    return snap


def snapshot_from_dict(data: dict[str, Any], name: str = "<dict>") -> Snapshot:
    """Build a snapshot from a dict shaped like a case file (the Python API's way in)."""
    import yaml

    doc, diags = parse_yaml(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), name)
    if doc is None or diags:
        raise LoadError(f"case {name} could not be read", diags)
    snap, diags = ingest_document(doc)
    if snap is None:
        raise LoadError(f"case {name} is not valid", diags)
    return snap


__all__ = ["SECTION_NAMES", "ingest_document", "load_case", "snapshot_from_dict"]

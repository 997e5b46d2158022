"""How facts read to people: JSON for matched values, short text for terminals and rationale templates."""

from __future__ import annotations

from typing import Any

from .facts import Fact
from .ir import ADMIN, COURSE, DERIVED, DIAGNOSIS, FINDING, OBS, ORDER, PATIENT, REACTION, SUPPORT
from .snapshot import Course, Diagnosis, Finding, Observation, Order, OrganSupport, Reaction
from .times import iso, relative_label
from .vocab import vocabulary

KIND_NAMES = {OBS: "observation", FINDING: "finding", COURSE: "course", ADMIN: "administration", ORDER: "order",
              REACTION: "reaction", SUPPORT: "organ_support", DIAGNOSIS: "diagnosis", DERIVED: "derived",
              PATIENT: "patient"}


def _num(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else f"{value:.0f}"


def _course_dose(c: Course) -> str | None:
    if c.dose is None:
        return None
    return c.dose.written


def fact_json(fact: Fact) -> dict[str, Any]:
    """Stable JSON for one matched fact (values in canonical units, times ISO 8601 UTC)."""
    v = vocabulary()
    d = fact.data
    kind = str(d["k"])
    out: dict[str, Any] = {"kind": KIND_NAMES.get(kind, kind)}
    e = fact.entry
    if isinstance(e, Observation):
        a = v.analytes[e.analyte]
        out.update(analyte=e.analyte, value=e.value, unit=a.canonical, time=iso(e.time), as_written=e.written)
    elif isinstance(e, Finding):
        out.update(finding=e.code, present=e.present, time=iso(e.time))
    elif isinstance(e, Course):
        out.update(drug=e.drug, route=e.route, regimen=e.regimen, dose=_course_dose(e), frequency=e.frequency)
        if kind == COURSE:
            out.update(start=iso(e.start), end=iso(d["te"]) if d["te"] < 1e11 else None)
        else:
            extra = fact.extra or {}
            out.update(time=iso(d["ts"]), dose_number=extra.get("dose_number"))
    elif isinstance(e, Order):
        out.update(drug=e.drug, status=e.status, time=iso(e.time))
    elif isinstance(e, Reaction):
        out.update(drug=e.drug, manifestations=list(e.manifestations), severity=e.severity, time=iso(e.time))
    elif isinstance(e, OrganSupport):
        out.update(support=e.kind, start=iso(e.start), end=iso(d["te"]) if d["te"] < 1e11 else None)
    elif isinstance(e, Diagnosis):
        out.update(diagnosis=e.code, onset=iso(e.onset) if e.onset is not None else None,
                   resolved=iso(d["te"]) if d["te"] < 1e11 else None)
    elif kind == PATIENT:
        extra = fact.extra or {}
        lo, hi = d.get("age_lo"), d.get("age_hi")
        out.update(age_years=lo if lo == hi else None, age_range=[lo, hi] if lo is not None else None,
                   sex=d.get("sex"), weight_kg=extra.get("weight"))
    elif kind == DERIVED:
        extra = fact.extra or {}
        out.update(fact=d["n"], status=d["st"], rule_id=extra.get("rule"))
        if "v" in d:
            out["value"] = d["v"]
    if e is not None:
        out["source"] = e.ref
        out["illustrative"] = e.illustrative
    return out


def fact_json_with_text(fact: Fact, start: int | None) -> dict[str, Any]:
    """:func:`fact_json` plus ``text``: the fact in one readable line (times relative to the timeline)."""
    out = fact_json(fact)
    out["text"] = fact_text(fact, start)
    return out


def when(fact: Fact, start: int | None) -> str:
    """The fact's time for people: 'day 3 08:00' in a timeline, else ISO."""
    d = fact.data
    if d["k"] in (COURSE, SUPPORT):
        end = d["te"]
        text = relative_label(d["ts"], start)
        return text + (f" → {relative_label(end, start)}" if end < 1e11 else " → ongoing")
    if d["k"] == DIAGNOSIS:
        return relative_label(d["ts"], start) if d["ts"] > -1e11 else "date not recorded"
    return relative_label(d["ts"], start)


def fact_text(fact: Fact, start: int | None) -> str:
    """One line: 'ferritin 5600 ng/mL (day 12 08:00)'."""
    v = vocabulary()
    e = fact.entry
    d = fact.data
    kind = d["k"]
    mark = " [illustrative]" if e is not None and e.illustrative else ""
    if isinstance(e, Observation):
        a = v.analytes[e.analyte]
        unit = v.display_unit(a.canonical)
        text = f"{a.name} {_num(e.value)} {unit}"
        if not e.written.endswith(" " + a.canonical):
            text += f" (recorded as {e.written})"
        return f"{text} at {when(fact, start)}{mark}"
    if isinstance(e, Finding):
        return f"{v.findings[e.code].name} {'present' if e.present else 'absent'} at {when(fact, start)}{mark}"
    if isinstance(e, Course):
        name = v.drugs[e.drug].name
        route = f" {v.routes[e.route].name}" if e.route else ""
        dose = f" {e.dose.written}" if e.dose else ""
        freq = v.frequencies[e.frequency].name
        label = f" ({v.regimens[e.regimen].name})" if e.regimen else ""
        if kind == COURSE:
            return f"{name}{route}{dose} {freq}{label}: {when(fact, start)}{mark}"
        n = (fact.extra or {}).get("dose_number")
        return f"{name}{route}{dose}, dose no. {n} at {when(fact, start)}{mark}"
    if isinstance(e, Order):
        return f"{e.status} order for {v.drugs[e.drug].name} at {when(fact, start)}{mark}"
    if isinstance(e, Reaction):
        ms = ", ".join(v.manifestations[m].name for m in e.manifestations)
        lead = f"{e.severity} reaction" if e.severity else "reaction (severity not recorded)"
        return f"{lead} to {v.drugs[e.drug].name} ({ms}) at {when(fact, start)}{mark}"
    if isinstance(e, OrganSupport):
        return f"{v.organ_support[e.kind].name}: {when(fact, start)}{mark}"
    if isinstance(e, Diagnosis):
        return f"{v.diagnoses[e.code].name} (since {when(fact, start)}){mark}"
    if kind == PATIENT:
        parts = []
        if "age_lo" in d:
            lo, hi = d["age_lo"], d["age_hi"]
            parts.append(f"age {lo:g} years" if lo == hi else f"age {lo:g} or {hi:g} years")
        if "sex" in d:
            parts.append(str(d["sex"]))
        return ", ".join(parts) or "patient"
    if kind == DERIVED:
        text = f"{d['n']}: {str(d['st']).replace('_', ' ')}"
        if "v" in d:
            text += f" ({_num(float(d['v']))})"
        return text
    return str(d)


def template_field(fact: Fact, field: str, start: int | None, count: int | None, previous: Fact | None,
                   nth: int | None) -> str:
    """The text a rationale template shows for ``{alias.field}``."""
    v = vocabulary()
    e = fact.entry
    d = fact.data
    if field == "count":
        return str(count if count is not None else 1)
    if field == "nth":
        return str(nth if nth is not None else "")
    if field in ("time", "onset") or (field == "start" and d["k"] not in (COURSE, SUPPORT)):
        return relative_label(d["ts"], start)
    if field == "start":
        return relative_label(d["ts"], start)
    if field == "end":
        return relative_label(d["te"], start) if d["te"] < 1e11 else "ongoing"
    if isinstance(e, Observation):
        a = v.analytes[e.analyte]
        if field == "value":
            return _num(e.value)
        if field == "unit":
            return v.display_unit(a.canonical)
        if field == "analyte":
            return a.name
        if field == "previous_value":
            return _num(float(previous.data["v"])) if previous is not None else "—"
        if field == "previous_time":
            return relative_label(previous.data["ts"], start) if previous is not None else "—"
    if isinstance(e, Course | Order | Reaction) and field == "drug":
        return v.drugs[e.drug].name
    if isinstance(e, Course):
        if field == "route":
            return v.routes[e.route].name if e.route else "route not recorded"
        if field == "dose":
            return e.dose.written if e.dose else "dose not recorded"
        if field == "regimen":
            return v.regimens[e.regimen].name if e.regimen else ""
    if isinstance(e, Order) and field == "status":
        return e.status
    if isinstance(e, Reaction):
        if field == "manifestations":
            return ", ".join(v.manifestations[m].name for m in e.manifestations)
        if field == "severity":
            return e.severity or "not recorded"
    if isinstance(e, OrganSupport) and field == "kind":
        return v.organ_support[e.kind].name
    if isinstance(e, Diagnosis) and field == "diagnosis":
        return v.diagnoses[e.code].name
    if isinstance(e, Finding) and field == "finding":
        return v.findings[e.code].name
    if d["k"] == DERIVED:
        if field == "fact":
            return str(d["n"])
        if field == "status":
            return str(d["st"]).replace("_", " ")
        if field == "value":
            return _num(float(d["v"])) if "v" in d else "—"
    if d["k"] == PATIENT:
        if field == "age":
            if "age_lo" not in d:
                return "age not recorded"
            return f"{d['age_lo']:g}" if d["age_lo"] == d["age_hi"] else f"{d['age_lo']:g}–{d['age_hi']:g}"
        if field == "sex":
            return str(d.get("sex", "sex not recorded"))
        if field == "weight":
            w = (fact.extra or {}).get("weight")
            return f"{w:g} kg" if w is not None else "weight not recorded"
    return "—"

"""How facts read to people: JSON for matched values, short text for terminals and rationale templates.

Texts come in the evaluation's language: English by default, Simplified Chinese (``zh-CN``) with the names of the
vocabulary tables and Chinese time labels. JSON values (ids, ISO times, canonical units) are the same in every
language.
"""

from __future__ import annotations

import re
from typing import Any

from ..compiler.ir import ADMIN, COURSE, DERIVED, DIAGNOSIS, FINDING, OBS, ORDER, PATIENT, REACTION, SUPPORT
from ..core.snapshot import Course, Diagnosis, Finding, Observation, Order, OrganSupport, Reaction
from ..core.times import iso, relative_label_in
from ..core.vocab import vocabulary
from .facts import Fact

KIND_NAMES = {OBS: "observation", FINDING: "finding", COURSE: "course", ADMIN: "administration", ORDER: "order",
              REACTION: "reaction", SUPPORT: "organ_support", DIAGNOSIS: "diagnosis", DERIVED: "derived",
              PATIENT: "patient"}


# Words of the fact texts, by language. English is the default and the fallback.
WORDS: dict[str, dict[str, str]] = {
    "en": {
        "illustrative": " [illustrative]",
        "observation": "{name} {value} {unit}{recorded} at {when}{mark}",
        "recorded_as": " (recorded as {written})",
        "finding": "{name} {state} at {when}{mark}",
        "present": "present",
        "absent": "absent",
        "course": "{name}{route}{dose} {freq}{label}: {when}{mark}",
        "administration": "{name}{route}{dose}, dose no. {n} at {when}{mark}",
        "regimen": " ({regimen})",
        "order": "{status} order for {drug} at {when}{mark}",
        "reaction": "{severity} reaction to {drug} ({manifestations}) at {when}{mark}",
        "reaction_unrated": "reaction (severity not recorded) to {drug} ({manifestations}) at {when}{mark}",
        "list": ", ",
        "organ_support": "{name}: {when}{mark}",
        "diagnosis": "{name} (since {when}){mark}",
        "diagnosis_undated": "{name} (since date not recorded){mark}",
        "age": "age {age} years",
        "age_range": "age {lo} or {hi} years",
        "patient_join": ", ",
        "patient": "patient",
        "derived": "{fact}: {status}",
        "derived_value": " ({value})",
        "ongoing": "ongoing",
        "date_not_recorded": "date not recorded",
        "route_not_recorded": "route not recorded",
        "dose_not_recorded": "dose not recorded",
        "severity_not_recorded": "not recorded",
        "age_not_recorded": "age not recorded",
        "sex_not_recorded": "sex not recorded",
        "weight_not_recorded": "weight not recorded",
    },
    "zh-CN": {
        "illustrative": " [示例数据]",
        "observation": "{name} {value} {unit}（{recorded}{when}）{mark}",
        "recorded_as": "记录值 {written}；",
        "finding": "{name}：{state}（{when}）{mark}",
        "present": "有",
        "absent": "无",
        "course": "{name}{dose}{route} {freq}{label}：{when}{mark}",
        "administration": "{name}{dose}{route}，第 {n} 剂（{when}）{mark}",
        "regimen": "（{regimen}）",
        "order": "医嘱：{drug}（{status}；{when}）{mark}",
        "reaction": "对{drug}的{severity}反应（{manifestations}；{when}）{mark}",
        "reaction_unrated": "对{drug}的反应（严重程度未记录；{manifestations}；{when}）{mark}",
        "list": "、",
        "organ_support": "{name}：{when}{mark}",
        "diagnosis": "{name}（自{when}起）{mark}",
        "diagnosis_undated": "{name}（起病日期未记录）{mark}",
        "age": "{age} 岁",
        "age_range": "{lo} 或 {hi} 岁",
        "patient_join": "，",
        "patient": "患者",
        "derived": "{fact}：{status}",
        "derived_value": "（{value}）",
        "ongoing": "持续中",
        "date_not_recorded": "日期未记录",
        "route_not_recorded": "给药途径未记录",
        "dose_not_recorded": "剂量未记录",
        "severity_not_recorded": "未记录",
        "age_not_recorded": "年龄未记录",
        "sex_not_recorded": "性别未记录",
        "weight_not_recorded": "体重未记录",
    },
}
# Values of the record that are words, in zh-CN (English shows them as recorded).
VALUE_WORDS_ZH_CN = {
    "status": {"met": "符合", "not_met": "不符合", "indeterminate": "未能判定", "met_unreliable": "符合（不可靠）",
               "not_met_unreliable": "不符合（不可靠）", "not_applicable": "不适用"},
    "order_status": {"draft": "草拟", "active": "已生效"},
    "sex": {"female": "女", "male": "男"},
}
_LATIN_THEN_HAN = re.compile(r"([A-Za-z0-9])([\u4e00-\u9fff])")
_HAN_THEN_LATIN = re.compile(r"([\u4e00-\u9fff])([A-Za-z0-9])")


def _words(lang: str) -> dict[str, str]:
    return WORDS.get(lang, WORDS["en"])


def _value_word(kind: str, value: str, lang: str) -> str:
    """A recorded word (a derived fact's status, an order's status, the sex) as people read it in ``lang``."""
    if lang == "zh-CN" and value in VALUE_WORDS_ZH_CN[kind]:
        return VALUE_WORDS_ZH_CN[kind][value]
    return value.replace("_", " ") if kind == "status" else value


def _spaced(text: str, lang: str) -> str:
    """Chinese text with a space between Han characters and Latin letters or digits (a name kept as its INN)."""
    if lang != "zh-CN":
        return text
    return _HAN_THEN_LATIN.sub(r"\1 \2", _LATIN_THEN_HAN.sub(r"\1 \2", text))


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
        ana = (fact.extra or {}).get("anaphylaxis")
        if ana is not None:
            out["anaphylaxis"] = {"verdict": ana.verdict, "basis": ana.basis}
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


def fact_json_with_text(fact: Fact, start: int | None, lang: str = "en") -> dict[str, Any]:
    """:func:`fact_json` plus ``text``: the fact in one readable line in ``lang`` (times relative to the timeline)."""
    out = fact_json(fact)
    out["text"] = fact_text(fact, start, lang)
    return out


def when(fact: Fact, start: int | None, lang: str = "en") -> str:
    """The fact's time for people: 'day 3 08:00' ('第 3 天 08:00' in zh-CN) in a timeline, else ISO."""
    w = _words(lang)
    d = fact.data
    if d["k"] in (COURSE, SUPPORT):
        end = d["te"]
        text = relative_label_in(d["ts"], start, lang)
        return text + (f" → {relative_label_in(end, start, lang)}" if end < 1e11 else f" → {w['ongoing']}")
    if d["k"] == DIAGNOSIS:
        return relative_label_in(d["ts"], start, lang) if d["ts"] > -1e11 else w["date_not_recorded"]
    return relative_label_in(d["ts"], start, lang)


def fact_text(fact: Fact, start: int | None, lang: str = "en") -> str:
    """One line: 'ferritin 5600 ng/mL at day 12 08:00' ('铁蛋白 5600 ng/mL（第 12 天 08:00）' in zh-CN)."""
    return _spaced(_fact_text(fact, start, lang), lang)


def _fact_text(fact: Fact, start: int | None, lang: str) -> str:
    v = vocabulary()
    w = _words(lang)
    e = fact.entry
    d = fact.data
    kind = d["k"]
    mark = w["illustrative"] if e is not None and e.illustrative else ""
    at = when(fact, start, lang)
    if isinstance(e, Observation):
        a = v.analytes[e.analyte]
        recorded = "" if e.written.endswith(" " + a.canonical) else w["recorded_as"].format(written=e.written)
        return w["observation"].format(name=a.name_in(lang), value=_num(e.value), unit=v.display_unit(a.canonical),
                                       recorded=recorded, when=at, mark=mark)
    if isinstance(e, Finding):
        return w["finding"].format(name=v.findings[e.code].name_in(lang), state=w["present" if e.present else "absent"],
                                   when=at, mark=mark)
    if isinstance(e, Course):
        name = v.drugs[e.drug].name_in(lang)
        route = f" {v.routes[e.route].name_in(lang)}" if e.route else ""
        dose = f" {e.dose.written}" if e.dose else ""
        if kind == COURSE:
            label = w["regimen"].format(regimen=v.regimens[e.regimen].name_in(lang)) if e.regimen else ""
            return w["course"].format(name=name, route=route, dose=dose, freq=v.frequencies[e.frequency].name_in(lang),
                                      label=label, when=at, mark=mark)
        n = (fact.extra or {}).get("dose_number")
        return w["administration"].format(name=name, route=route, dose=dose, n=n, when=at, mark=mark)
    if isinstance(e, Order):
        return w["order"].format(status=_value_word("order_status", e.status, lang),
                                 drug=v.drugs[e.drug].name_in(lang), when=at, mark=mark)
    if isinstance(e, Reaction):
        ms = w["list"].join(v.manifestations[m].name_in(lang) for m in e.manifestations)
        template = w["reaction"] if e.severity else w["reaction_unrated"]
        severity = v.name("severities", e.severity, lang) if e.severity else ""
        return template.format(severity=severity, drug=v.drugs[e.drug].name_in(lang), manifestations=ms, when=at,
                               mark=mark)
    if isinstance(e, OrganSupport):
        return w["organ_support"].format(name=v.organ_support[e.kind].name_in(lang), when=at, mark=mark)
    if isinstance(e, Diagnosis):
        template = w["diagnosis"] if d["ts"] > -1e11 else w["diagnosis_undated"]
        return template.format(name=v.diagnoses[e.code].name_in(lang), when=at, mark=mark)
    if kind == PATIENT:
        parts = []
        if "age_lo" in d:
            lo, hi = d["age_lo"], d["age_hi"]
            parts.append(w["age"].format(age=f"{lo:g}") if lo == hi else
                         w["age_range"].format(lo=f"{lo:g}", hi=f"{hi:g}"))
        if "sex" in d:
            parts.append(_value_word("sex", str(d["sex"]), lang))
        return w["patient_join"].join(parts) or w["patient"]
    if kind == DERIVED:
        text = w["derived"].format(fact=d["n"], status=_value_word("status", str(d["st"]), lang))
        if "v" in d:
            text += w["derived_value"].format(value=_num(float(d["v"])))
        return text
    return str(d)


def template_field(fact: Fact, field: str, start: int | None, count: int | None, previous: Fact | None,
                   nth: int | None, lang: str = "en") -> str:
    """The text a rationale template shows for ``{alias.field}``, in ``lang``."""
    v = vocabulary()
    w = _words(lang)
    e = fact.entry
    d = fact.data
    if field == "count":
        return str(count if count is not None else 1)
    if field == "nth":
        return str(nth if nth is not None else "")
    if field in ("time", "onset") or (field == "start" and d["k"] not in (COURSE, SUPPORT)):
        return relative_label_in(d["ts"], start, lang)
    if field == "start":
        return relative_label_in(d["ts"], start, lang)
    if field == "end":
        return relative_label_in(d["te"], start, lang) if d["te"] < 1e11 else w["ongoing"]
    if isinstance(e, Observation):
        a = v.analytes[e.analyte]
        if field == "value":
            return _num(e.value)
        if field == "unit":
            return v.display_unit(a.canonical)
        if field == "analyte":
            return a.name_in(lang)
        if field == "previous_value":
            return _num(float(previous.data["v"])) if previous is not None else "—"
        if field == "previous_time":
            return relative_label_in(previous.data["ts"], start, lang) if previous is not None else "—"
    if isinstance(e, Course | Order | Reaction) and field == "drug":
        return v.drugs[e.drug].name_in(lang)
    if isinstance(e, Course):
        if field == "route":
            return v.routes[e.route].name_in(lang) if e.route else w["route_not_recorded"]
        if field == "dose":
            return e.dose.written if e.dose else w["dose_not_recorded"]
        if field == "regimen":
            return v.regimens[e.regimen].name_in(lang) if e.regimen else ""
    if isinstance(e, Order) and field == "status":
        return _value_word("order_status", e.status, lang)
    if isinstance(e, Reaction):
        if field == "manifestations":
            return w["list"].join(v.manifestations[m].name_in(lang) for m in e.manifestations)
        if field == "severity":
            return v.name("severities", e.severity, lang) if e.severity else w["severity_not_recorded"]
        if field == "anaphylaxis":  # the criteria's answer and its reasons (engine/runtime/anaphylaxis.py; English)
            ana = (fact.extra or {}).get("anaphylaxis")
            if ana is None:
                return "—"
            verdict = {"true": "anaphylaxis by the clinical criteria", "false": "not anaphylaxis by the clinical "
                       "criteria", "unknown": "anaphylaxis criteria undecided"}[ana.verdict]
            return f"{verdict}: {ana.basis}"
    if isinstance(e, OrganSupport) and field == "kind":
        return v.organ_support[e.kind].name_in(lang)
    if isinstance(e, Diagnosis) and field == "diagnosis":
        return v.diagnoses[e.code].name_in(lang)
    if isinstance(e, Finding) and field == "finding":
        return v.findings[e.code].name_in(lang)
    if d["k"] == DERIVED:
        if field == "fact":
            return str(d["n"])
        if field == "status":
            return _value_word("status", str(d["st"]), lang)
        if field == "value":
            return _num(float(d["v"])) if "v" in d else "—"
    if d["k"] == PATIENT:
        if field == "age":
            if "age_lo" not in d:
                return w["age_not_recorded"]
            return f"{d['age_lo']:g}" if d["age_lo"] == d["age_hi"] else f"{d['age_lo']:g}–{d['age_hi']:g}"
        if field == "sex":
            return _value_word("sex", str(d["sex"]), lang) if "sex" in d else w["sex_not_recorded"]
        if field == "weight":
            wt = (fact.extra or {}).get("weight")
            return f"{wt:g} kg" if wt is not None else w["weight_not_recorded"]
    return "—"

"""Evaluations in Simplified Chinese (zh-CN) quote the patient's record in Chinese - vocabulary names, day labels,
the screen's own words - while an English evaluation reads exactly as before, with no Chinese in it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

import engine
from engine.core.times import relative_label, relative_label_in
from engine.core.vocab import TABLES, vocabulary
from engine.language.fields import text_in
from engine.outputs.render import missing_detail, missing_what, render_text

from .conftest import CASES, RULES, rationale_values

CJK = re.compile(r"[\u4e00-\u9fff]")
EN_DAY = re.compile(r"\bday (-?\d+) (\d\d:\d\d)")
ZH_DAY = re.compile(r"^第 -?\d+ 天 \d\d:\d\d$")
WU, WU_AT = CASES / "wu-2025-ruxolitinib.yaml", "day 16 08:00"
YANG, YANG_AT = CASES / "yang-2023-ecmo-tocilizumab.yaml", "day 20 10:40"
# Drugs without an established Chinese generic name keep their INN in zh-CN (never a guessed name).
KEPT_AS_INN = {("drugs", "emapalumab"), ("drugs", "sarilumab")}
# Placeholder fields whose value is a vocabulary name (by the table it comes from), a time, or a number.
NAME_FIELDS = {"drug": ("drugs",), "analyte": ("analytes",), "manifestations": ("manifestations",),
               "severity": ("severities",), "kind": ("organ_support",), "diagnosis": ("diagnoses",),
               "finding": ("findings",), "route": ("routes",), "regimen": ("regimens",)}
TIME_FIELDS = {"time", "start", "end", "onset", "previous_time"}


@cache
def _kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


@cache
def _case(path: Path) -> engine.Snapshot:
    return engine.load_case(path)


@cache
def _result(path: Path, at: str | None, lang: str) -> engine.Result:
    return engine.evaluate(_kb(), _case(path), at, lang=lang)


def _cases() -> list[Path]:
    return sorted(CASES.rglob("*.yaml"))


def _texts(result: engine.Result) -> tuple[str, str]:
    return result.to_json_text(), render_text(result, color=False)


def _fact_texts(matched: Any) -> Iterator[str]:
    for m in matched:
        for fact in m.facts:
            yield str(fact["text"])
        yield from _fact_texts(m.because)


def _all_fact_texts(result: engine.Result) -> list[str]:
    out: list[str] = []
    for item in (*result.recommendations, *result.assessments):
        out.extend(_fact_texts(item.matched))
    return out


@cache
def _zh_by_english(table: str) -> dict[str, str]:
    return {en: zh or en for t, _, en, zh in vocabulary().translations() if t == table}


def _expected_zh(field: str, english: str) -> str:
    """What a placeholder shows in zh-CN, given what it shows in English."""
    if field in TIME_FIELDS:
        if english == "ongoing":  # the end of a course still running
            return "持续中"
        return EN_DAY.sub(lambda m: f"第 {m.group(1)} 天 {m.group(2)}", english)
    for table in NAME_FIELDS.get(field, ()):
        names = _zh_by_english(table)
        if field == "manifestations":
            return "、".join(names[n] for n in english.split(", "))
        return names[english]
    return english  # numbers, units, counts


def _placeholder_pairs(path: Path, at: str | None) -> list[tuple[str, str, str]]:
    """(placeholder, English value, zh-CN value) for every placeholder of every rationale that fired."""
    en, zh = _result(path, at, "en"), _result(path, at, "zh-CN")
    en_by_id = {r.rule_id: r for r in en.recommendations}
    out = []
    for rec in zh.recommendations:
        model = _kb().compiled.models[rec.rule_id]
        assert model.recommend is not None
        zh_values = rationale_values(text_in(model.recommend.rationale, "zh-CN"), rec.rationale)
        en_values = rationale_values(text_in(model.recommend.rationale, "en"), en_by_id[rec.rule_id].rationale)
        assert zh_values.keys() == en_values.keys()
        out.extend((name, en_values[name], zh_values[name]) for name in zh_values)
    return out


# --- the vocabulary -----------------------------------------------------------------------------------------

def test_every_vocabulary_term_has_a_zh_cn_name() -> None:
    terms = list(vocabulary().translations())
    assert {t for t, *_ in terms} == set(TABLES)
    assert len(terms) > 100
    for table, key, en, zh in terms:
        assert zh, f"{table}.{key} ({en}) has no zh-CN name"
        if (table, key) in KEPT_AS_INN:
            assert zh == en, f"{table}.{key} keeps its INN in zh-CN"
        else:
            assert CJK.search(zh), f"{table}.{key}: zh-CN name {zh!r} has no Chinese characters"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_every_term_the_shipped_rules_and_cases_use_has_a_zh_cn_name() -> None:
    v = vocabulary()
    keys = {(table, key) for table, key, *_ in v.translations()}
    used: set[tuple[str, str]] = set()
    for path in sorted(RULES.rglob("*.yaml")):  # every value of a rule file that names a vocabulary term
        for text in _strings(yaml.safe_load(path.read_text(encoding="utf-8"))):
            used.update((table, key) for table, key in keys if key == text)
    for path in _cases():
        snap = _case(path)
        used.update(("analytes", o.analyte) for o in snap.observations)
        used.update(("findings", f.code) for f in snap.findings)
        used.update(("diagnoses", d.code) for d in snap.diagnoses)
        used.update(("organ_support", s.kind) for s in snap.supports)
        used.update(("drugs", x.drug) for x in (*snap.courses, *snap.orders, *snap.reactions))
        used.update(("routes", c.route) for c in snap.courses if c.route)
        used.update(("frequencies", c.frequency) for c in snap.courses)
        used.update(("regimens", c.regimen) for c in snap.courses if c.regimen)
        used.update(("manifestations", m) for r in snap.reactions for m in r.manifestations)
        used.update(("severities", r.severity) for r in snap.reactions if r.severity)
    for table in ("analytes", "drugs", "manifestations", "severities", "findings", "diagnoses", "procedures"):
        assert any(t == table for t, _ in used), f"no {table} term found in the shipped rules and cases"
    for table, key in sorted(used):
        zh = v.name(table, key, "zh-CN")
        assert (table, key) in KEPT_AS_INN or (CJK.search(zh) and zh != v.name(table, key, "en")), (table, key)


def test_vocabulary_names_by_language() -> None:
    v = vocabulary()
    assert v.name("drugs", "tocilizumab") == "tocilizumab"
    assert v.name("drugs", "tocilizumab", "zh-CN") == "托珠单抗"
    assert v.name("drugs", "emapalumab", "zh-CN") == "emapalumab"
    assert v.name("analytes", "ast", "zh-CN") == "天冬氨酸氨基转移酶（AST）"
    assert v.name("severities", "severe") == "severe"
    assert v.name("severities", "severe", "zh-CN") == "重度"
    assert v.name("drug_classes", "jak-inhibitor", "zh-CN") == "JAK 抑制剂"
    assert v.target_name("jak-inhibitor") == "JAK inhibitors"
    assert v.target_name("ruxolitinib", "zh-CN") == "芦可替尼"
    assert v.target_name("picu", "zh-CN") == "儿科重症监护"
    assert v.analytes["ferritin"].name == "ferritin"  # the English names are untouched
    assert v.severities == ("mild", "moderate", "severe")  # still ordered from least to most severe
    with pytest.raises(KeyError):
        v.name("severities", "fatal", "zh-CN")


def test_time_labels_by_language() -> None:
    start = 1_700_000_000 - 1_700_000_000 % 86400
    at = start + 8 * 86400 + 8 * 3600
    assert relative_label(at, start) == "day 8 08:00"
    assert relative_label_in(at, start, "en") == "day 8 08:00"
    assert relative_label_in(at, start, "zh-CN") == "第 8 天 08:00"
    assert relative_label_in(start - 27 * 86400 + 36000, start, "zh-CN") == "第 -27 天 10:00"
    assert relative_label_in(at, None, "zh-CN") == relative_label(at, None) == "2023-11-22T08:00:00Z"


def test_missing_inputs_in_zh_cn() -> None:
    assert missing_what("ferritin", "zh-CN") == "铁蛋白"
    assert missing_what("splenomegaly", "zh-CN") == "脾大"
    assert missing_what("birth date", "zh-CN") == "出生日期"
    assert missing_detail("a measurement in the last 72 h", "zh-CN") == "一次检测结果（近 72 小时内）"
    assert missing_detail("recorded as present or absent in the last 30 days", "zh-CN") == "记录有或无（近 30 天内）"
    assert missing_detail("recorded as present or absent", "zh-CN") == "记录有或无"
    assert (missing_detail("a measurement in the last 24 h, after the end of the 3rd x course (within 3 days)",
                           "zh-CN") == "一次检测结果（近 24 小时内，the 3rd x course 结束后 3 天内）")
    assert missing_detail("something new", "zh-CN") == "something new"  # unknown forms stay as written
    assert missing_what("ferritin", "en") == "ferritin"
    assert missing_detail("a measurement in the last 72 h", "en") == "a measurement in the last 72 h"


# --- English stays as it was --------------------------------------------------------------------------------

WU_ENGLISH = (
    # rationale placeholders, fact texts and the screen's words of the Wu case at day 16 08:00
    "Tocilizumab course day -27 10:00 to ongoing; aspartate aminotransferase (AST) went from 620 to 780 U/L",
    "(course since day -27 10:00)",
    "methylprednisolone intravenous 500 mg once daily (pulse therapy): day 13 10:00 → day 15",
    "ferritin 14200 ng/mL at day 16 06:00 [illustrative]",
    "fibrinogen 130 mg/dL (recorded as 1.3 g/L) at day 16 06:00 [illustrative]",
    "ciclosporin oral, dose no. 26 at day 15 08:00 [illustrative]",
    "systemic juvenile idiopathic arthritis (since day -1461 00:00)",
    "tocilizumab intravenous 8 mg/kg every 2 weeks: day -27 10:00 → ongoing [illustrative]",
    "as of 2024-03-17T08:00:00Z (day 16 08:00)",
    "Assessments", "(undecided: what to measure or record)", "✔ met", "? undecided",
    "value 3 to 8 until the missing inputs are known",
    "- splenomegaly: recorded as present or absent in the last 72 h",
    "(not recorded: erythrocyte sedimentation rate (ESR); the result holds",
    "7 recommendations", " WARNING ", "What to do", "CONSIDER", "MONITOR", "ESCALATE", "STOP", "Dose as reported:",
    "Why", "Based on the patient's record", "(+5 earlier)", "Source", "Reported:", "Evidence: cohort study",
    "Evidence: single case report", "Recommendations that could not be decided - measure or record:",
    "- acute digital clubbing: recorded as present or absent in the last 30 days",
)


def test_english_wu_evaluation_reads_as_before() -> None:
    result = _result(WU, WU_AT, "en")
    data, text = _texts(result)
    flat = re.sub(r"[\s│]+", " ", text)  # the text output wraps lines inside panels
    for phrase in WU_ENGLISH:
        assert re.sub(r"\s+", " ", phrase) in flat, phrase
    assert ('"rationale": "Tocilizumab course day -27 10:00 to ongoing; aspartate aminotransferase (AST) went '
            'from 620') in data
    assert '"target_name": "ruxolitinib"' in data
    assert '"text": "ferritin 14200 ng/mL at day 16 06:00 [illustrative]"' in data


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_english_evaluation_has_no_chinese(path: Path) -> None:
    snap = _case(path)
    for at in (None, *(e.at for e in snap.expectations)):
        data, text = _texts(engine.evaluate(_kb(), snap, at, lang="en"))
        assert not CJK.search(data), CJK.search(data)
        assert not CJK.search(text), CJK.search(text)


@pytest.mark.parametrize(("path", "at"), [(WU, WU_AT), (YANG, YANG_AT), (YANG, "day 5 02:00")],
                         ids=["wu", "yang", "yang-ecmo"])
def test_english_wu_and_yang_have_no_chinese(path: Path, at: str) -> None:
    for out in _texts(_result(path, at, "en")):
        assert not CJK.search(out)


# --- the same decisions in both languages -------------------------------------------------------------------

@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_same_rules_fire_with_the_same_statuses_in_both_languages(path: Path) -> None:
    snap = _case(path)
    for at in (None, *(e.at for e in snap.expectations)):
        en = engine.evaluate(_kb(), snap, at, lang="en")
        zh = engine.evaluate(_kb(), snap, at, lang="zh-CN")
        assert zh.lang == "zh-CN"
        assert ([(r.rule_id, r.status, [(a.kind, a.target, a.suppressed_by) for a in r.actions])
                 for r in zh.recommendations] ==
                [(r.rule_id, r.status, [(a.kind, a.target, a.suppressed_by) for a in r.actions])
                 for r in en.recommendations])
        assert ([(a.rule_id, a.status, a.reliable, a.value, a.value_range) for a in zh.assessments] ==
                [(a.rule_id, a.status, a.reliable, a.value, a.value_range) for a in en.assessments])
        assert ([(u.rule_id, u.produces, [(m.what, m.condition) for m in u.missing]) for u in zh.indeterminate] ==
                [(u.rule_id, u.produces, [(m.what, m.condition) for m in u.missing]) for u in en.indeterminate])
        assert zh.errors == en.errors


# --- zh-CN --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "at"), [(WU, WU_AT), (YANG, YANG_AT), (YANG, "day 5 02:00"),
                                          (CASES / "safety" / "tocilizumab-given-after-anaphylaxis.yaml", None),
                                          (CASES / "controls" / "tocilizumab-order-after-anaphylaxis.yaml", None),
                                          (CASES / "safety" / "dress-on-tocilizumab.yaml", None)],
                         ids=["wu", "yang", "yang-ecmo", "rechallenge", "order-after-anaphylaxis", "dress"])
def test_zh_cn_rationales_quote_chinese_names_and_day_labels(path: Path, at: str | None) -> None:
    pairs = _placeholder_pairs(path, at)
    for name, en, zh in pairs:
        field = name.split(".")[1]
        assert zh == _expected_zh(field, en), (name, en, zh)
        if field in TIME_FIELDS and EN_DAY.search(en):
            assert ZH_DAY.match(zh), (name, zh)
        if field in NAME_FIELDS and en:
            assert CJK.search(zh), (name, zh)
    for rec in _result(path, at, "zh-CN").recommendations:
        assert not EN_DAY.search(rec.rationale), rec.rationale
        for action in rec.actions:
            assert action.target_name == vocabulary().target_name(action.target, "zh-CN")


def test_zh_cn_wu_rationales() -> None:
    pairs = {name: zh for name, _, zh in _placeholder_pairs(WU, WU_AT)}
    assert pairs["change.analyte"] == "天冬氨酸氨基转移酶（AST）"
    assert pairs["tcz.start"] == "第 -27 天 10:00"
    rationale = {r.rule_id: r.rationale for r in _result(WU, WU_AT, "zh-CN").recommendations}
    assert "天冬氨酸氨基转移酶（AST） 从 620 变为 780 U/L（第 15 天 14:00 至 第 16 天 06:00）" in \
        rationale["shimizu2020.tocilizumab-masking"]


def test_zh_cn_reaction_placeholders() -> None:
    rechallenge = {name: zh for name, _, zh in
                   _placeholder_pairs(CASES / "controls" / "tocilizumab-order-after-anaphylaxis.yaml", None)}
    assert rechallenge["serious.manifestations"] == "严重过敏反应、低血压、支气管痉挛"
    assert rechallenge["serious.severity"] == "重度"
    assert ZH_DAY.match(rechallenge["serious.time"])
    dress = {name: zh for name, _, zh in _placeholder_pairs(CASES / "safety" / "dress-on-tocilizumab.yaml", None)}
    assert dress["drug.drug"] == "托珠单抗"
    assert dress["drug.time"] == "第 0 天 10:00"
    ecmo = {name: zh for name, _, zh in _placeholder_pairs(YANG, "day 5 02:00")}
    assert ecmo["ventilation.start"] == "第 4 天 14:30"


def test_zh_cn_fact_texts() -> None:
    wu = _all_fact_texts(_result(WU, WU_AT, "zh-CN"))
    for text in ("铁蛋白 14200 ng/mL（第 16 天 06:00） [示例数据]",
                 "纤维蛋白原 130 mg/dL（记录值 1.3 g/L；第 16 天 06:00） [示例数据]",
                 "甲泼尼龙 500 mg 静脉给药 每日一次（冲击治疗）：第 3 天 10:00 → 第 5 天 10:00 [示例数据]",
                 "环孢素 口服，第 26 剂（第 15 天 08:00） [示例数据]",
                 "托珠单抗 8 mg/kg 静脉给药 每 2 周一次：第 -27 天 10:00 → 持续中 [示例数据]",
                 "全身型幼年特发性关节炎（自第 -1461 天 00:00 起）",
                 "体温 39.7 °C（第 16 天 06:00） [示例数据]"):
        assert text in wu, text
    yang = _all_fact_texts(_result(YANG, YANG_AT, "zh-CN"))
    assert "对托珠单抗的重度反应（严重过敏反应、心悸、胸闷；第 20 天 10:25） [示例数据]" in yang
    for text in (*wu, *yang):
        assert CJK.search(text), text
        assert not EN_DAY.search(text) and "illustrative" not in text and " at " not in text, text


def _flat(text: str) -> str:
    return re.sub(r"[\s│]+", " ", text)


def test_zh_cn_text_rendering_of_wu() -> None:
    text = render_text(_result(WU, WU_AT, "zh-CN"), color=False)
    flat = _flat(text)
    for phrase in ("评估时间 2024-03-17T08:00:00Z（第 16 天 08:00）", "评估", "（未能判定：需检测或记录的项目）",
                   "✔ 符合", "? 未能判定", "数值 3 至 8，待缺失项明确后确定", "- 脾大：记录有或无（近 72 小时内）",
                   "（未记录：血沉（ESR）；无论其取值如何，结论均成立）", "7 条建议", " 警告 ",
                   "规则 wu2025.consider-ruxolitinib", "处理建议", "【考虑】", "【监测】", "【停用】", "【升级处理】",
                   "文献报道的剂量：", "理由", "病历依据", "（另有 5 条更早的记录）", "文献来源", "文献报道：",
                   "证据级别：队列研究", "证据级别：单个病例报告", "未能判定的建议（需检测或记录以下项目）：",
                   "- 急性杵状指：记录有或无（近 30 天内）"):
        assert _flat(phrase) in flat, phrase
    for english in ("as of", "knowledge base", "Assessments", "✔ met", "undecided", "7 recommendations", "WARNING",
                    "What to do", "CONSIDER", "Dose as reported", "Why", "Based on the patient's record", "earlier)",
                    "Source", "Reported:", "Evidence:", "could not be decided", "recorded as present or absent",
                    "a measurement", "[illustrative]", "until the missing inputs"):
        assert english not in text, english


def test_zh_cn_text_rendering_of_yang() -> None:
    text = render_text(_result(YANG, YANG_AT, "zh-CN"), color=False)
    flat = _flat(text)
    for phrase in ("（第 20 天 10:40）", " 危急 ", "【停用】", "【避免】", "【记录过敏】",
                   "- 体温：一次检测结果（近 24 小时内）", "证据级别：单个病例报告",
                   "对托珠单抗的重度反应（严重过敏反应、心悸、胸闷；第 20 天 10:25）"):
        assert _flat(phrase) in flat, phrase
    assert "CRITICAL" not in text and "STOP" not in text and "RECORD ALLERGY" not in text


def test_unchecked_caveat_prefix_by_language() -> None:
    """A caveat whose condition cannot be checked (here: the medication list is not recorded) is prefixed."""
    raw = yaml.safe_load((CASES / "assessments" / "tocilizumab-masking.yaml").read_text(encoding="utf-8"))
    raw.pop("medications")
    raw.pop("expect")
    raw["not_recorded"] = ["medications"]
    snap = engine.snapshot_from_dict(raw)
    caveats = {}
    for lang in ("en", "zh-CN"):
        result = engine.evaluate(_kb(), snap, "day 12 09:00", lang=lang)
        assessment = next(a for a in result.assessments if a.fact == "mas-classification-2016")
        assert assessment.status == "not_met" and not assessment.reliable
        caveats[lang] = assessment.caveats
    assert caveats["en"][0].startswith("Could not be checked, so treat with caution: On tocilizumab")
    assert caveats["zh-CN"][0].startswith("无法核实，请谨慎对待：使用托珠单抗期间")
    text = render_text(engine.evaluate(_kb(), snap, "day 12 09:00", lang="zh-CN"), color=False)
    assert "注意：无法核实，请谨慎对待：" in _flat(text) and "✘ 不符合（不可靠）" in text


def test_vocabulary_entries_hold_only_known_fields() -> None:
    """A flow mapping with an unquoted comma in a name silently splits it into extra keys; refuse that."""
    import yaml

    from .conftest import ROOT

    allowed = {"name", "zh-CN", "synonyms", "classes", "atc", "rxnorm", "interval_hours", "canonical", "kind",
               "loinc", "plausible", "units", "prednisone_equivalent", "label", "group", "alone", "exposure"}
    for table in ("drugs", "analytes", "terms"):
        data = yaml.safe_load((ROOT / "engine" / "data" / f"{table}.yaml").read_text(encoding="utf-8"))

        def walk(node: object, where: str) -> None:
            if isinstance(node, dict):
                if "name" in node:
                    assert set(node) <= allowed, (where, sorted(set(node) - allowed))
                    assert isinstance(node["name"], str) and isinstance(node.get("zh-CN", ""), str), where
                for key, value in node.items():
                    walk(value, f"{where}.{key}")

        walk(data, table)

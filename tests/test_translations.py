"""Every clinician-facing text of every shipped rule has a Simplified Chinese (zh-CN) translation that keeps the
English text's placeholders and numbers, and an evaluation in zh-CN shows it with the patient's values filled in."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from functools import cache

import pytest

import engine
from engine.language.fields import LocalText, text_in
from engine.language.rulemodel import Rule
from engine.language.templates import parse

from .conftest import CASES, RULES, rationale_values

CJK = re.compile(r"[\u4e00-\u9fff]")
NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")


@cache
def _kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


def translatable(rule: Rule) -> Iterator[tuple[str, str | LocalText]]:
    """The clinician-facing text fields of a rule that are present, by path."""
    yield "title", rule.title
    if rule.recommend is not None:
        yield "recommend.rationale", rule.recommend.rationale
        for i, action in enumerate(rule.recommend.actions):
            yield f"recommend.actions[{i}].text", action.text
            if action.reported_dose is not None:
                yield f"recommend.actions[{i}].reported_dose", action.reported_dose
    if rule.derive is not None:
        if rule.derive.summary is not None:
            yield "derive.summary", rule.derive.summary
        for i, caveat in enumerate(rule.derive.caveats):
            yield f"derive.caveats[{i}].text", caveat.text
        if rule.derive.score is not None:
            for i, band in enumerate(rule.derive.score.interpretation):
                yield f"derive.score.interpretation[{i}].text", band.text


def _fields() -> list[object]:
    models = _kb().compiled.models
    return [pytest.param(rule_id, path, id=f"{rule_id}:{path}")
            for rule_id in sorted(models) for path, _ in translatable(models[rule_id])]


def placeholders(text: str) -> set[str]:
    return {f"{p.alias}.{p.field}" for p in parse(text) if p.alias is not None}


def numbers(text: str) -> Counter[str]:
    """The numbers written in the text, outside placeholders (SpO2 and IL-6 count: they must survive too)."""
    return Counter(NUMBER.findall("".join(p.literal for p in parse(text))))


def test_every_shipped_rule_is_covered() -> None:
    models = _kb().compiled.models
    assert len(models) == len(list(RULES.rglob("*.yaml"))) - 1  # all but knowledge-base.yaml


@pytest.mark.parametrize(("rule_id", "path"), _fields())
def test_text_has_a_faithful_zh_cn_translation(rule_id: str, path: str) -> None:
    text = dict(translatable(_kb().compiled.models[rule_id]))[path]
    assert isinstance(text, LocalText), f"{rule_id} {path}: write it as {{en: ..., zh-CN: ...}}"
    en, zh = text.en.strip(), (text.zh_CN or "").strip()
    assert zh, f"{rule_id} {path}: no zh-CN text"
    assert CJK.search(zh), f"{rule_id} {path}: the zh-CN text has no Chinese characters"
    assert placeholders(zh) == placeholders(en), f"{rule_id} {path}: placeholders differ"
    assert numbers(zh) == numbers(en), (
        f"{rule_id} {path}: numbers differ: en {sorted(numbers(en).elements())}, "
        f"zh-CN {sorted(numbers(zh).elements())}")
    if path == "title":
        assert len(zh) <= 120


def test_wu_case_evaluated_in_zh_cn_shows_the_translations_with_the_patientsrationale_values() -> None:
    kb = _kb()
    case = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    en = engine.evaluate(kb, case, "day 16 08:00", lang="en")
    zh = engine.evaluate(kb, case, "day 16 08:00", lang="zh-CN")
    assert zh.lang == "zh-CN"
    assert [r.rule_id for r in zh.recommendations] == [r.rule_id for r in en.recommendations]
    assert "wu2025.consider-ruxolitinib" in {r.rule_id for r in zh.recommendations}
    assert [(a.rule_id, a.status) for a in zh.assessments] == [(a.rule_id, a.status) for a in en.assessments]
    en_by_id = {r.rule_id: r for r in en.recommendations}
    filled = 0
    for rec in zh.recommendations:
        model = kb.compiled.models[rec.rule_id]
        assert model.recommend is not None
        assert rec.title == text_in(model.title, "zh-CN") and CJK.search(rec.title)
        assert CJK.search(rec.rationale) and "{" not in rec.rationale, rec.rationale
        for action in rec.actions:
            assert CJK.search(action.text), action.text
            assert action.reported_dose is None or CJK.search(action.reported_dose)
        zh_template = text_in(model.recommend.rationale, "zh-CN")
        en_template = text_in(model.recommend.rationale, "en")
        values = rationale_values(zh_template, rec.rationale)
        en_values = rationale_values(en_template, en_by_id[rec.rule_id].rationale)
        # the same patient values: names and day labels are in Chinese, the numbers are the same
        assert values.keys() == en_values.keys()
        assert [NUMBER.findall(x) for x in values.values()] == [NUMBER.findall(x) for x in en_values.values()]
        filled += len(values)
    assert filled > 0, "some rationale at this time quotes the patient's values"
    for assessment in zh.assessments:
        assert CJK.search(assessment.title), assessment.title
        assert assessment.summary is None or CJK.search(assessment.summary)

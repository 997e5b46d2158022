"""The knowledge base's scope (who it is about), which undecided answers reach the clinician, and assessments
that are not applicable outside the population they were defined for."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import engine
from engine.authoring.casetest import run_cases
from engine.core.errors import LoadError
from engine.language.scope import decide_scope
from engine.outputs.render import render_text
from engine.records.fhir import load_fhir
from engine.service.cards import CardContext, KnowledgeBaseView, build_cards
from engine.service.models import CDSHooksResponse

from .conftest import CASES, ROOT, RULES, SHARED

SYNTHEA = sorted((SHARED / "data" / "fhir" / "synthea-r4").glob("*.json"))


@pytest.fixture(scope="module")
def view(kb: engine.KnowledgeBase) -> KnowledgeBaseView:
    return KnowledgeBaseView.of(kb)


def _ctx() -> CardContext:
    return CardContext("patient-view", "p", lambda rule_id: f"https://mascds.invalid/rules/{rule_id}")


def _kinds(cards: list[Any]) -> list[str]:
    return [(c.extension or {}).get("org.mascds", {}).get("kind", "") for c in cards]


def test_every_synthea_patient_is_out_of_scope_and_gets_no_card(view: KnowledgeBaseView) -> None:
    """The issue's report: a 60-year-old Synthea patient got "Undecided: Febrile ... needs body temperature". None
    of the 91 patients has sJIA, MAS or HLH or a watched drug: each gets an empty cards array, although the full
    result still holds what the rules could not decide."""
    if not SYNTHEA:
        pytest.skip("the shared Synthea bundles are not available")
    per_patient: Counter[int] = Counter()
    statuses: Counter[str] = Counter()
    undecided = 0
    for path in SYNTHEA:
        snap = load_fhir(path).snapshot
        if snap.last_event() is None:
            continue  # the organisation and practitioner bundles hold no patient
        result = view.kb.evaluate(snap)
        cards = build_cards(result, view, _ctx())
        CDSHooksResponse.model_validate(CDSHooksResponse(cards=cards).model_dump(exclude_none=True))
        per_patient[len(cards)] += 1
        statuses[result.scope.status] += 1
        undecided += len(result.indeterminate)
        assert result.scope.reasons and "no systemic juvenile idiopathic arthritis" in result.scope.reasons[0]
        assert "Out of scope" in render_text(result, color=False)
    assert statuses == Counter({"out_of_scope": 91})
    assert per_patient == Counter({0: 91}), f"cards per patient: {dict(per_patient)}"
    assert undecided >= 91, "every patient leaves something undecided: the silence is the scope's, not luck"


def test_an_undecided_assessment_no_recommendation_waits_on_is_not_a_card(view: KnowledgeBaseView) -> None:
    """sJIA with a ferritin and nothing else: the febrile and score assessments are undecided. Only the
    recommendation rules left undecided are cards, and each names what it is missing, traced through the
    assessments it uses."""
    snap = engine.snapshot_from_dict({
        "case": {"id": "quiet-sjia", "title": "sJIA, one ferritin"}, "patient": {"sex": "female", "age_years": 8},
        "timeline": {"start": "2024-01-01"}, "diagnoses": [{"code": "sjia", "onset": "day -100"}],
        "observations": [{"analyte": "ferritin", "value": 900, "unit": "ng/mL", "time": "day 0 08:00"}]})
    result = view.kb.evaluate(snap, "day 0 10:00")
    assert result.scope.status == "in_scope"
    undecided = {u.rule_id: u for u in result.indeterminate}
    assert undecided["fardet2014.febrile"].produces == "assessment"
    shown = {u.rule_id for u in result.shown_undecided()}
    assert shown and all(undecided[r].produces == "recommendation" for r in shown)
    assert "fardet2014.febrile" not in shown and "minoia2019.ms-score" not in shown
    cards = build_cards(result, view, _ctx())
    on_cards = {(c.extension or {})["org.mascds"].get("rule_id") for c in cards
                if (c.extension or {})["org.mascds"]["kind"] == "undecided"}
    assert on_cards == shown
    # the initial-treatment rule waits on active MAS, which waits on the 2016 criteria, which wait on a temperature
    initial = next(c for c in cards if (c.extension or {})["org.mascds"].get("rule_id")
                   == "acr2021.initial-glucocorticoids")
    assert "temperature" in (initial.detail or "")
    assert json.loads(result.to_json_text())["shown_undecided"] == sorted(shown, key=lambda r: r)


def test_scope_undetermined_shows_one_notice_naming_the_missing_section(view: KnowledgeBaseView) -> None:
    snap = engine.load_case(CASES / "scope" / "diagnoses-not-recorded.yaml")
    result = view.kb.evaluate(snap, snap.expectations[0].at)
    assert (result.scope.status, result.scope.missing) == ("undetermined", ("diagnoses",))
    cards = build_cards(result, view, _ctx())
    assert _kinds(cards) == ["scope-undetermined"]
    assert "diagnoses" in cards[0].summary and result.indeterminate, "the undecided rules stay in the result"
    assert "Scope undetermined" in render_text(result, color=False)


def test_a_watched_drug_alone_puts_the_patient_in_scope_only_once_given(kb: engine.KnowledgeBase) -> None:
    snap = engine.load_case(CASES / "scope" / "tocilizumab-without-sjia.yaml")
    scope = kb.compiled.manifest.scope
    assert decide_scope(scope, snap, snap.start - 86400).status == "out_of_scope"
    inside = decide_scope(scope, snap, snap.start + 86400)
    assert inside.status == "in_scope" and "tocilizumab" in inside.reasons[0]


def test_a_fired_recommendation_puts_the_patient_in_scope_whatever_the_record(kb: engine.KnowledgeBase) -> None:
    """Belt and braces behind E210: the scope never hides advice that was given."""
    snap = engine.load_case(CASES / "scope" / "adult-without-sjia.yaml")
    at = snap.expectations[0].at
    assert decide_scope(kb.compiled.manifest.scope, snap, at).status == "out_of_scope"
    verdict = decide_scope(kb.compiled.manifest.scope, snap, at, ["some.rule"])
    assert verdict.status == "in_scope" and "some.rule" in verdict.reasons[0]


def _kb_with(tmp_path: Path, name: str, text: str) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    (target / name).write_text(text, encoding="utf-8")
    return target


RULE_HEAD = ("version: 1.0.0\ntitle: Test rule\nstatus: active\ndescription: A rule written by a test.\n"
             "evidence_level: case-report\nsources:\n  - doi: 10.1002/pdi3.32\n"
             "    reference: \"Yang X, et al. Pediatr Discov 2023;1(3).\"\n    reported: \"Used only by a test.\"\n")


def test_a_recommendation_that_could_fire_outside_the_scope_is_a_load_error(tmp_path: Path) -> None:
    text = ("id: test.high-ferritin\n" + RULE_HEAD +
            "when:\n  observation: {analyte: ferritin, gt: 10000, unit: ng/mL, within: 72h}\n"
            "recommend:\n  indicator: info\n  rationale: Very high ferritin.\n"
            "  actions:\n    - {kind: monitor, target: mas-laboratory-panel, text: Repeat the panel.}\n")
    with pytest.raises(LoadError) as exc:
        engine.load_knowledge_base(_kb_with(tmp_path, "test.high-ferritin.yaml", text))
    codes = [(d.code, d.file.rsplit("/", 1)[-1]) for d in exc.value.diagnostics]
    assert codes == [("E210", "test.high-ferritin.yaml")]
    # the same rule behind an sJIA diagnosis loads
    scoped = text.replace("when:\n  observation:", "when:\n  all:\n    - diagnosis: {code: sjia}\n    - observation:")
    engine.load_knowledge_base(_kb_with(tmp_path / "ok", "test.high-ferritin.yaml", scoped))


def test_not_over_a_population_defined_assessment_is_a_load_error(tmp_path: Path) -> None:
    text = ("id: test.no-ms-score\n" + RULE_HEAD +
            "when:\n  all:\n    - diagnosis: {code: mas}\n    - not:\n        derived: {fact: ms-score}\n"
            "derive: {fact: no-ms-score}\n")
    with pytest.raises(LoadError) as exc:
        engine.load_knowledge_base(_kb_with(tmp_path, "test.no-ms-score.yaml", text))
    assert [d.code for d in exc.value.diagnostics] == ["E211"]
    assert "is: not_met" in exc.value.diagnostics[0].hint


def test_not_applicable_is_shown_everywhere_with_its_reason(kb: engine.KnowledgeBase, view: KnowledgeBaseView) -> None:
    snap = engine.load_case(CASES / "applicability" / "mas-without-sjia.yaml")
    at = snap.expectations[0].at
    result = kb.evaluate(snap, at)
    by_fact = {a.fact: a for a in result.assessments}
    ms = by_fact["ms-score"]
    assert ms.status == "not_applicable" and ms.not_applicable_reason and "sJIA" in ms.not_applicable_reason
    assert by_fact["hlh-2004-criteria"].status == "met" and by_fact["hscore"].status == "met"
    data = json.loads(result.to_json_text())
    ms_json = next(a for a in data["assessments"] if a["fact"] == "ms-score")
    assert (ms_json["status"], ms_json["not_applicable_reason"]) == ("not_applicable", ms.not_applicable_reason)
    text = render_text(result, width=200, color=False)
    assert "not applicable" in text and ms.not_applicable_reason in text
    cards = build_cards(result, view, _ctx())
    (card,) = [c for c in cards if (c.extension or {})["org.mascds"]["kind"] == "not-applicable"]
    # the summary is cut to the CDS Hooks length; the card's rules and detail name every one
    assert "minoia2019.ms-score" in (card.extension or {})["org.mascds"]["rule_ids"]
    assert card.summary.startswith("Not applicable") and "MS score" in (card.detail or "")
    assert "neither confirm nor rule out MAS" in (card.detail or "")
    explanation = engine.explain(kb, snap, "minoia2019.ms-score", at)
    assert explanation.outcome == "derived: not applicable"
    assert explanation.not_applicable_reason == ms.not_applicable_reason
    assert explanation.population is not None and explanation.population.verdict == "false"
    assert "not applicable: The MS score" in explanation.render_text(width=200, color=False)
    states = engine.replay(kb, snap).states(result)
    assert states["minoia2019.ms-score"] == "not_applicable"
    assert "**not applicable**" in (ROOT / "docs" / "knowledge-base.md").read_text(encoding="utf-8")


CLAIMS_CASE = """
case: {id: claims, title: Claims that must fail}
patient: {sex: female, age_years: 45}
timeline: {start: 2024-03-01}
observations:
  - {analyte: ast, value: 95, unit: U/L, time: day 10 08:00}
medications:
  - {drug: tocilizumab, route: iv, dose: 8, unit: mg/kg, frequency: q4w, start: day 0 10:00, end: day 0 11:00}
expect:
  - at: day 10 09:00
    scope: out_of_scope
    recommends: [{kind: stop, target: Actemra, indicator: critical}]
    undecided: {saper2022.dress-il6-inhibitor: [ferritin], yang2023.tocilizumab-anaphylaxis: []}
    decided_not_fired: [saper2022.dress-il6-inhibitor]
    assessments: {ms-score: not_met}
"""


def test_failed_clinical_claims_say_what_was_found_instead(kb: engine.KnowledgeBase, tmp_path: Path) -> None:
    path = tmp_path / "claims.yaml"
    path.write_text(CLAIMS_CASE, encoding="utf-8")
    report = run_cases(kb, [path], backend="reference")
    assert not report.problems
    found = {(c.claim, c.subject): (c.expected, c.actual) for c in report.checks}
    assert not any(c.passed for c in report.checks), found
    assert found[("scope", "scope")][1].startswith("in_scope (tocilizumab")
    assert found[("recommends", "stop tocilizumab (critical)")][1] == "not found; standing: none"
    assert found[("undecided", "saper2022.dress-il6-inhibitor")][1] == \
        "undecided, but not naming ferritin (names: eosinophilia, non-evanescent rash)"
    assert found[("undecided", "yang2023.tocilizumab-anaphylaxis")][1] == "not fired"
    assert found[("decided_not_fired", "saper2022.dress-il6-inhibitor")][1].startswith("undecided, naming eosinophilia")
    assert found[("assessment", "ms-score")] == ("not_met", "not_applicable")


def test_no_suggestion_of_a_drug_counts_its_class(kb: engine.KnowledgeBase, tmp_path: Path) -> None:
    """Day 2 of the Wu case suggests glucocorticoids (a class): prednisolone, one of its members, is suggested."""
    wu = (CASES / "wu-2025-ruxolitinib.yaml").read_text(encoding="utf-8")
    head = wu[: wu.index("\nexpect:\n")]
    path = tmp_path / "wu.yaml"
    path.write_text(head + "\nexpect:\n  - at: day 2 16:00\n    no_suggestion_of: [prednisolone, anakinra]\n",
                    encoding="utf-8")
    report = run_cases(kb, [path], backend="reference")
    found = {c.subject: c for c in report.checks}
    assert found["anakinra"].passed
    assert not found["prednisolone"].passed
    assert found["prednisolone"].actual.startswith("suggested: consider glucocorticoid (warning, "
                                                   "acr2021.initial-glucocorticoids")


def test_replay_charts_show_not_applicable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    page = tmp_path / "na.html"
    case = CASES / "applicability" / "mas-without-sjia.yaml"
    assert main(["replay", str(case), "--rules", str(RULES), "--plot", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert "minoia2019.ms-score" in text and "not applicable" in text
    assert "not applicable" in capsys.readouterr().out  # the replay table too

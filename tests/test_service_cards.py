"""Evaluation results as CDS Hooks cards (in-process: the same functions the service calls)."""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cmarkgfm
import pytest
from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
from hypothesis import example, given
from hypothesis import strategies as st
from markdown_it import MarkdownIt

import engine
from engine.runtime.result import Result
from engine.service.app import Problem, draft_resources, evaluate_call
from engine.service.cards import CardContext, KnowledgeBaseView, build_cards, fit, md, undecided_summary
from engine.service.models import SUMMARY_LIMIT, CDSHooksResponse, OrderSignContext, PatientViewContext
from engine.service.prefetch import SERVICES, Gathered
from tests.fuzz.conftest import fuzz
from tests.test_service_harness import ROOT, draft_order, empty_record, iso, mas_record, sjia, spec_example

ORDER_SIGN = next(s for s in SERVICES if s.hook == "order-sign")
PATIENT_VIEW = next(s for s in SERVICES if s.hook == "patient-view")
DOCS = "https://cds.test.invalid/rules/"


@pytest.fixture(scope="module")
def view() -> KnowledgeBaseView:
    return KnowledgeBaseView.of(engine.load_knowledge_base(ROOT / "rules"))


def _docs(rule_id: str) -> str:
    return DOCS + rule_id


def _order_sign(view: KnowledgeBaseView, pid: str, resources: list[dict[str, Any]],
                drafts: list[dict[str, Any]], not_fetched: frozenset[str] = frozenset()) -> dict[str, Any]:
    ctx = OrderSignContext.model_validate({"userId": "Practitioner/1", "patientId": pid, "draftOrders": {
        "resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}})
    now = time.time()
    ev = evaluate_call(view, ORDER_SIGN, ctx, Gathered(resources, not_fetched_sections=not_fetched),
                       draft_resources(ctx, now), now, _docs)
    CDSHooksResponse.model_validate(ev.response)
    return ev.response


def _fixture_resources() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The tocilizumab-after-anaphylaxis bundle: (the record, the draft order), with references as Patient/id."""
    bundle = json.loads((ROOT / "tests/fixtures/fhir/tocilizumab-draft-after-anaphylaxis.json").read_text())
    resources = [e["resource"] for e in bundle["entry"]]
    for r in resources:
        for field in ("subject", "patient"):
            if field in r:
                r[field] = {"reference": "Patient/child-1"}
    drafts = [r for r in resources if r.get("status") == "draft"]
    return [r for r in resources if r not in drafts], drafts


def test_tocilizumab_draft_after_anaphylaxis_gets_a_critical_card_deleting_the_draft(view: KnowledgeBaseView) -> None:
    record, drafts = _fixture_resources()
    body = _order_sign(view, "child-1", record, drafts)
    first = body["cards"][0]
    assert first["indicator"] == "critical"
    assert first["extension"]["org.mascds"]["rule_id"] == "yang2023.tocilizumab-rechallenge"
    deletes = [a for c in body["cards"] for s in c.get("suggestions", ()) for a in s["actions"]]
    assert deletes == [{"type": "delete", "description": "Delete the draft order MedicationRequest/tcz-draft "
                        "(tocilizumab)", "resourceId": "MedicationRequest/tcz-draft"}]
    assert first["selectionBehavior"] == "any" and first["suggestions"][0]["isRecommended"] is True
    rule = view.kb.compiled.models["yang2023.tocilizumab-rechallenge"]
    assert first["source"]["label"] == " ".join(rule.sources[0].reference.split())
    assert first["source"]["url"] == f"https://doi.org/{rule.sources[0].doi}"
    # The detail explains: the rationale with the patient's values, the matched record entries, the evidence.
    detail = first["detail"]
    assert "anaphylaxis" in detail and "AllergyIntolerance/tcz\\-anaphylaxis" not in detail
    assert "(AllergyIntolerance/tcz-anaphylaxis)" in detail and "(MedicationRequest/tcz-draft)" in detail
    assert "**Evidence level:** case report" in detail
    assert first["links"] == [{"label": f"Rule yang2023.tocilizumab-rechallenge {rule.version}: documentation",
                               "url": DOCS + "yang2023.tocilizumab-rechallenge", "type": "absolute"}]
    assert {r["code"] for r in first["overrideReasons"]} >= {"risk-benefit-ratio", "expert-contradicts"}
    # The allergy is already recorded: no suggestion to record it again, and the card says so.
    assert not any(a["type"] == "create" for _, a in _actions(body))
    anaphylaxis = next(c for c in body["cards"]
                       if c["extension"]["org.mascds"]["rule_id"] == "yang2023.tocilizumab-anaphylaxis")
    assert "already recorded (AllergyIntolerance/tcz-anaphylaxis)" in anaphylaxis["detail"]


def _actions(body: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(c, a) for c in body["cards"] for s in c.get("suggestions", ()) for a in s["actions"]]


def test_reaction_known_only_as_an_adverse_event_suggests_recording_the_allergy(view: KnowledgeBaseView) -> None:
    pid, when = "p-ae", time.time() - 30 * 86400
    record = empty_record(pid)
    event = {
        "resourceType": "AdverseEvent", "id": "ae-1", "actuality": "actual", "subject": {"reference": f"Patient/{pid}"},
        "event": {"coding": [{"system": "http://snomed.info/sct", "code": "39579001", "display": "Anaphylaxis"}]},
        "severity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/adverse-event-severity",
                                 "code": "severe"}]},
        "date": iso(when), "suspectEntity": [{"instance": {"display": "tocilizumab"}}],
    }
    body = _order_sign(view, pid, [*record["patient"], sjia(pid), event], [draft_order(pid)])
    creates = [a for _, a in _actions(body) if a["type"] == "create"]
    assert len(creates) == 1
    resource = creates[0]["resource"]
    AllergyIntolerance.model_validate(resource)  # valid FHIR R4
    assert resource["patient"] == {"reference": f"Patient/{pid}"}
    assert {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612865", "display": "tocilizumab"} \
        in resource["code"]["coding"]
    manifestation = resource["reaction"][0]["manifestation"][0]["coding"][0]
    assert (manifestation["system"], manifestation["code"]) == ("http://snomed.info/sct", "39579001")
    assert resource["reaction"][0]["severity"] == "severe" and resource["criticality"] == "high"
    assert resource["reaction"][0]["onset"] == iso(when)
    # The draft is still deleted, once, by the most specific card.
    assert [a["resourceId"] for _, a in _actions(body) if a["type"] == "delete"] == ["MedicationRequest/tcz-draft"]


def test_order_sign_spec_example_is_refused_as_invalid_r4_and_its_corrected_form_gets_no_card(
        view: KnowledgeBaseView) -> None:
    context = spec_example("order-sign-context-r4.json")["context"]
    drafts = [e["resource"] for e in context["draftOrders"]["entry"]]
    pid = context["patientId"]
    patient = empty_record(pid)["patient"]
    # The published "R4" example puts doseQuantity directly in dosageInstruction (the STU3 shape): not valid R4.
    with pytest.raises(Problem) as err:
        _order_sign(view, pid, patient, drafts)
    assert err.value.status == 400
    assert any("MedicationRequest/smart-MedicationRequest-103" in line and "doseQuantity" in line
               for line in err.value.lines)
    dosage = drafts[1]["dosageInstruction"][0]
    dosage["doseAndRate"] = [{"doseQuantity": dosage.pop("doseQuantity")}]
    # Amoxicillin/clavulanate and a diet order: no rule concerns them, so no card.
    assert _order_sign(view, pid, patient, drafts)["cards"] == []


def test_order_sign_undecided_rules_name_data_the_client_did_not_send(view: KnowledgeBaseView) -> None:
    pid = "p-partial"
    record = [*empty_record(pid)["patient"], sjia(pid)]
    body = _order_sign(view, pid, record, [draft_order(pid)], not_fetched=frozenset({"observations", "findings"}))
    undecided = [c for c in body["cards"] if c["extension"]["org.mascds"]["kind"] == "undecided"]
    assert undecided, "a tocilizumab order in sJIA with no laboratory data sent leaves a rule undecided"
    critical = {r for r, info in view.rules.items() if info.indicator == "critical"}
    for c in undecided:
        # a rule that would be critical about the order is a warning while undecided; the others are info
        rule = c["extension"]["org.mascds"]["rule_id"]
        assert c["indicator"] == ("warning" if rule in critical else "info"), rule
        assert c["summary"].startswith("Undecided: ")
    assert any("not sent by the EHR" in c["detail"] for c in undecided)


def _cases() -> list[Path]:
    return sorted((ROOT / "cases").rglob("*.yaml"))


@pytest.mark.parametrize("path", _cases(), ids=lambda p: p.stem)
def test_every_shipped_case_gives_valid_cards_that_match_the_result(view: KnowledgeBaseView, path: Path) -> None:
    snapshot = engine.load_case(path)
    times: list[int | None] = [*sorted({e.at for e in snapshot.expectations})] or [None]  # None: the last event
    ctx = CardContext("patient-view", "case", _docs)
    for at in times:
        result: Result = view.kb.evaluate(snapshot, at)
        cards = build_cards(result, view, ctx)
        body = CDSHooksResponse(cards=cards).model_dump(exclude_none=True)
        CDSHooksResponse.model_validate(body)
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for c in body["cards"]:
            assert len(c["summary"]) < SUMMARY_LIMIT
            by_rule.setdefault(c.get("extension", {}).get("org.mascds", {}).get("rule_id", ""), []).append(c)
        for rec in result.recommendations:
            if rec.status != "active":
                assert rec.rule_id not in by_rule, "a suppressed recommendation is not a card"
                continue
            (card,) = by_rule[rec.rule_id]
            assert card["indicator"] == rec.indicator
            assert card["source"].get("url") == rec.citations[0].url
            assert md(rec.rationale) in card["detail"]
        shown = result.shown_undecided()
        for u in result.indeterminate:
            undecided = [c for c in by_rule.get(u.rule_id, ()) if c["extension"]["org.mascds"]["kind"] == "undecided"]
            if u not in shown:  # an assessment no recommendation waits on, or a patient out of scope
                assert not undecided, f"{u.rule_id}: an undecided answer that changes nothing is not a card"
                continue
            (card,) = undecided
            assert card["indicator"] == "info"
            for m in u.missing:
                assert md(m.what) in card["detail"]
        ranks = [{"critical": 0, "warning": 1, "info": 2}[c["indicator"]] for c in body["cards"]]
        assert ranks == sorted(ranks), "most urgent first"


def test_text_from_the_record_cannot_inject_markdown() -> None:
    evil = "ng/mL](javascript:alert(1)) <img src=x> **bold** `code`"
    out = md(evil)
    assert re.search(r"(?<!\\)[\[\]<>*`]", out) is None, "every markup character is escaped"
    assert out.replace("\\", "") == " ".join(evil.split())
    assert md("line\nbreak") == "line break"


def test_summaries_fit_and_undecided_summaries_name_what_is_missing(view: KnowledgeBaseView) -> None:
    for info in view.rules.values():
        s = undecided_summary(info.title, ["ferritin", "platelet count", "fibrinogen", "body temperature"])
        assert len(s) < SUMMARY_LIMIT and s.startswith("Undecided: ") and "needs ferritin" in s
    long_title = "x" * 118
    s = undecided_summary(long_title, ["aspartate aminotransferase (AST)", "triglycerides"])
    assert len(s) < SUMMARY_LIMIT and "needs aspartate aminotransferase (AST) and 1 more" in s
    assert fit("word " * 60).endswith("…") and len(fit("word " * 60)) < SUMMARY_LIMIT
    assert re.fullmatch(r"Undecided: t - needs a, b", undecided_summary("t", ["a", "b"]))



# --- no link from data: checked with real renderers of GitHub-flavoured Markdown ------------------------------------
# cmark-gfm (GitHub's own, with its autolink extension: www., http(s)://, ftp://, email, mailto:, xmpp:) and
# markdown-it with linkify (linkify-it: also bare domains such as example.org and international ones).
_LINKIFY = MarkdownIt("gfm-like", {"linkify": True})


class _Rendered(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs += [v or "" for k, v in attrs if k in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def rendered(markdown: str) -> list[_Rendered]:
    """The HTML of both renderers, parsed: links and images, tags, and the text shown."""
    out = []
    for page in (cmarkgfm.github_flavored_markdown_to_html(markdown), _LINKIFY.render(markdown)):
        parsed = _Rendered()
        parsed.feed(page)
        parsed.close()
        out.append(parsed)
    return out


def test_record_text_that_looks_like_a_link_is_no_link_in_a_card(view: KnowledgeBaseView) -> None:
    """Ids and a unit as written in the record (www.example.org/x, an email address, a URL) reach the card's
    detail as text: the only links are the service's own (the sources' DOI or PubMed pages)."""
    pid = "www.example.org"
    record = mas_record(pid)
    for i, o in enumerate(record["observations"]):
        o["id"] = ["www.example.org", "x.example.org", "a.b.org", "mail.example.com", "1.2.3.4", "example.org"][i]
    record["observations"][1]["valueQuantity"]["unit"] = "www.example.org/x"
    ctx = PatientViewContext(userId="Practitioner/1", patientId=pid)
    ev = evaluate_call(view, PATIENT_VIEW, ctx, Gathered([r for rs in record.values() for r in rs]), [],
                       time.time(), _docs)
    own = {c.url for info in view.rules.values() for c in info.citations if c.url}
    details = [c["detail"] for c in ev.response["cards"] if "example" in c.get("detail", "")]
    assert details, "the record's text reaches the cards"
    for detail in details:
        for page in rendered(detail):
            assert set(page.hrefs) <= own, set(page.hrefs) - own
    shown = "".join(rendered(details[0])[0].text)
    assert "Observation/www.example.org" in shown and "recorded as 2400 www.example.org/x" in shown


_LINKISH = st.sampled_from([
    "www.example.org/x", "WWW.EXAMPLE.ORG", "http://evil.test/a?b=c", "https://x.test", "ftp://x.test",
    "mailto:a@b.test", "xmpp:a@b.test/r", "a.b+c@d-e.test", "x@y.z", "example.org", "пример.рф", "a.io",
    "<https://x.test>", "[t](https://x.test)", "![i](https://x.test/i.png)", "[t]: https://x.test", "[t][t]",
    "&#119;ww.x.test", "www&#46;x&#46;test", "&lt;b&gt;", "`code`", "**b**", "_i_", "~~s~~", "1. ", "2) ", "- ",
    "+ ", "# ", "> ", "=", "|a|b|", "\\", "\\.", ".", ":", "@", "/", "(", ")", " ", "\n", "\t", "\u2060",
])


@fuzz
@given(st.lists(st.one_of(_LINKISH, st.text(st.characters(exclude_categories=("Cs",)), max_size=12)),
                max_size=12).map("".join))
@example("www.example.org/x")
@example("see www.example.org/x or mail a@b.org")
@example("1. www.example.org")
def test_data_never_becomes_markup_or_a_link(text: str) -> None:
    """Whatever the text, md() renders as that text (on one line), with no link, image or markup."""
    for page in rendered(md(text)):
        assert page.hrefs == [], (text, md(text))
        assert set(page.tags) <= {"p"}, (text, md(text), page.tags)
        shown = "".join(page.text).replace("\u2060", "").strip()
        assert shown == " ".join(text.replace("\u2060", "").replace("\0", "\ufffd").split()), (text, md(text))

"""Evaluation results as CDS Hooks cards.

One card per active recommendation, per undecided recommendation rule (an info card naming what to measure or
record, traced through the assessments it waits on, or which data the client did not send), and, for
patient-view, per assessment that is met or whose "not met" is unreliable, plus one card listing the assessments
that are not applicable to the patient. Outside the knowledge base's scope there are no cards; when the scope
cannot be decided, one card names what the record must hold. Each card cites its rule's first source
(``source.label`` the reference, ``source.url`` its DOI link), explains itself in ``detail`` (the rationale, the
patient's matched values, the evidence level, every source) and links to the rule's documentation. An action
becomes a FHIR suggestion only where it is concrete: "avoid" or "stop" a drug with a draft order in
``draftOrders`` deletes that draft; "record_allergy" creates an AllergyIntolerance unless one is already recorded
for the drug. Other actions stay text.

Every string taken from the record or the knowledge base is escaped before it enters Markdown, so that data
cannot inject links or markup into a card.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from ..authoring.catalogue import EVIDENCE
from ..compiler.ir import leaves
from ..core.vocab import vocabulary
from ..language.conditions import DrugFields
from ..language.fields import text_in
from ..records.casemodel import SECTION_NAMES
from ..records.fhir_codes import MASCDS_SYSTEMS, code_tables
from ..runtime.kb import KnowledgeBase
from ..runtime.result import Action as ResultAction
from ..runtime.result import Assessment, Citation, Matched, Recommendation, Result, Undecided
from ..runtime.timing import TIME_WARNING_PREFIX
from .models import SUMMARY_LIMIT, Action, Card, Coding, Link, Source, Suggestion

RULE_TOPIC_SYSTEM = "https://mascds.invalid/fhir/CodeSystem/rule"
EXTENSION_KEY = "org.mascds"
# Override reasons: the HL7 terminology code system for not following CDS advice (HL7 Terminology, THO).
OVERRIDE_SYSTEM = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes"
_RESTRICTIVE_REASONS = (
    ("risk-benefit-ratio", "Recipient assessment of risk/benefit ratio"),
    ("expert-contradicts", "Advice from expert contradicts the recommended action"),
    ("patient-ineligible", "Patient does not meet eligibility for recommended action"),
    ("action-completed", "Recommended action was already completed"),
)
_OTHER_REASONS = (
    ("patient-contraindication", "Patient has contraindication to recommended action"),
    ("indication-order-exists", "Patient has indication/order for intended action"),
    ("action-not-priority", "Recommended action is not relevant or a priority in current state of health"),
    ("expert-contradicts", "Advice from expert contradicts the recommended action"),
    ("need-more-info", "Could not address recommended action due to need for more information/pending "
                       "results/pending consult"),
)
_INFO_REASONS = (
    ("action-not-priority", "Recommended action is not relevant or a priority in current state of health"),
    ("wrong-time-workflow", "PC CDS delivered at wrong time in workflow or patient lifecycle"),
)
_KIND_WORDS = {"start": "Start", "stop": "Stop", "avoid": "Avoid", "consider": "Consider", "reduce": "Reduce",
               "monitor": "Monitor", "escalate_care": "Escalate care", "record_allergy": "Record allergy"}
_INDICATOR_RANK = {"critical": 0, "warning": 1, "info": 2}
# Markup characters, and what GFM's extended autolinks and linkify-style renderers read as a link: ':' (a
# scheme, mailto:, xmpp:), '.' before a word character (www.x, x.org), '@' (an email address) and '&' (an entity
# spelling any of these). Escaped, each renders as itself; an '@' is also followed by a word joiner (U+2060, not
# shown), because cmark-gfm finds email addresses in the text after escapes are resolved.
_MD_SPECIAL = re.compile(r"[\\`*_\[\]<>|#~!&:]|\.(?=\w)|^[-+=]")
_LIST_MARKER = re.compile(r"^(\d{1,9})([.)])")  # text that would start an ordered list at the start of a line
_WORD_JOINER = "\u2060"
MAX_FACT_LINES = 40


def _card(**fields: Any) -> Card:
    """A card from the fields that have a value (the specification omits, never nulls, an optional field)."""
    return Card(**{k: v for k, v in fields.items() if v is not None})


# --- text helpers ----------------------------------------------------------------------------------------
def md(text: object) -> str:
    """Plain text made inert in GitHub-flavoured Markdown (one line, markup characters escaped)."""
    return _md(str(text))


@functools.lru_cache(maxsize=16384)  # most text is the knowledge base's, the same on every call
def _md(text: str) -> str:
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), " ".join(text.split()))
    return _LIST_MARKER.sub(r"\1\\\2", escaped).replace("@", f"\\@{_WORD_JOINER}")


def fit(text: str, limit: int = SUMMARY_LIMIT - 1) -> str:
    """``text`` on one line and at most ``limit`` characters, cut at a word with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:-") + "…"


def _names(items: Iterable[str]) -> str:
    seen = list(dict.fromkeys(items))
    return ", ".join(seen)


# --- what the service knows about each rule (computed once per knowledge base) -----------------------------
@dataclass(frozen=True)
class RuleInfo:
    rule_id: str
    version: str
    title: str
    evidence_level: str
    citations: tuple[Citation, ...]
    condition_drugs: frozenset[str]  # drugs its conditions name (classes expanded)
    action_drugs: frozenset[str]  # drugs its actions name (classes expanded)
    indicator: str | None = None  # the urgency of its recommendation when it fires (None: an assessment)


def _drug_fields(node: Any) -> Iterator[str]:
    if isinstance(node, DrugFields):
        if node.drug:
            yield node.drug
        if node.class_:
            yield node.class_
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _drug_fields(getattr(node, name))
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _drug_fields(item)


@dataclass(frozen=True)
class KnowledgeBaseView:
    """A loaded knowledge base with the per-rule facts cards need, built once when it is loaded."""

    kb: KnowledgeBase
    rules: dict[str, RuleInfo]
    sections: dict[str, str]  # what an undecided rule asks for ("ferritin") -> the snapshot section holding it
    fact_titles: dict[str, str]  # derived fact -> the title of the rule deriving it

    @property
    def label(self) -> str:
        return f"{self.kb.name} {self.kb.version}"

    def to_json(self) -> dict[str, str]:
        return {"name": self.kb.name, "version": self.kb.version, "content_hash": self.kb.content_hash}

    @classmethod
    def of(cls, kb: KnowledgeBase) -> KnowledgeBaseView:
        v = vocabulary()
        rules = {}
        for cr in kb.compiled.rules:
            rule = kb.compiled.models[cr.id]
            named = frozenset(d for t in _drug_fields(rule.when) for d in v.target_drugs(t))
            acted = frozenset(d for a in (rule.recommend.actions if rule.recommend else ())
                              if isinstance(a.target, str) for d in v.target_drugs(a.target))
            cites = tuple(Citation(s.reference, s.reported, s.doi, s.pmid) for s in rule.sources)
            rules[cr.id] = RuleInfo(cr.id, rule.version, text_in(rule.title), rule.evidence_level, cites, named,
                                    acted, rule.recommend.indicator if rule.recommend else None)
        # The vocabulary's names first (a body weight is an observation even when a dose rule asks for it), then
        # whatever the compiled conditions say they are missing, then the sections' own names.
        sections: dict[str, str] = {}
        for table, section in ((v.analytes, "observations"), (v.findings, "findings"), (v.diagnoses, "diagnoses"),
                               (v.organ_support, "organ_support")):
            for term in table.values():
                sections.setdefault(term.name, section)
        for cr in kb.compiled.rules:
            for lf in leaves(cr.root):
                for m in (*lf.missing, *lf.undecided):
                    sections.setdefault(m.what, lf.section)
        for name in SECTION_NAMES:
            sections.setdefault(name.replace("_", " "), name)
        titles = {cr.derives: rules[cr.id].title for cr in kb.compiled.rules if cr.derives}
        return cls(kb, rules, sections, titles)


# --- what one call knows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardContext:
    hook: str  # patient-view | order-sign
    patient_id: str
    docs_url: Callable[[str], str]
    draft_orders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # drug -> draft MedicationRequest refs
    allergies: dict[str, tuple[str, ...]] = field(default_factory=dict)  # drug -> recorded AllergyIntolerance refs
    not_fetched: frozenset[str] = frozenset()  # snapshot sections the client did not send
    not_fetched_keys: tuple[str, ...] = ()


class _Issued:
    """Suggestions already placed on an earlier card: each draft is deleted, each allergy created, once."""

    def __init__(self) -> None:
        self.deleted: dict[str, str] = {}  # ref -> title of the card that carries it
        self.recorded: dict[str, str] = {}  # drug -> title


def _source(citations: tuple[Citation, ...], fallback: str) -> Source:
    if not citations:
        return Source(label=fallback)
    c = citations[0]
    return Source(label=" ".join(c.reference.split()), url=c.url) if c.url else Source(label=c.reference)


def _override(reasons: tuple[tuple[str, str], ...]) -> list[Coding]:
    return [Coding(system=OVERRIDE_SYSTEM, code=code, display=display) for code, display in reasons]


def _links(view: KnowledgeBaseView, ctx: CardContext, rule_id: str) -> list[Link]:
    info = view.rules.get(rule_id)
    version = f" {info.version}" if info else ""
    return [Link(label=f"Rule {rule_id}{version}: documentation", url=ctx.docs_url(rule_id), type="absolute")]


def _sources_md(citations: Iterable[Citation]) -> list[str]:
    out = []
    for i, c in enumerate(citations, 1):
        ref = md(c.reference)
        linked = f"[{ref}]({c.url})" if c.url else ref
        out.append(f"{i}. {linked} Reported: {md(c.reported)}")
    return out


def _matched_md(matched: Iterable[Matched], names: dict[str, str], depth: int = 0) -> list[str]:
    """The conditions that held, with the record entries behind each; a derived fact (an assessment) with the
    conditions that derived it, indented."""
    lines: list[str] = []
    pad = "  " * depth
    for m in matched:
        if m.derived is not None:
            fact = str(m.derived.get("fact", ""))
            status = str(m.derived.get("status", "")).replace("_", " ")
            lines.append(f"{pad}- {md(names.get(fact, fact))}: {md(status)}")
            lines.extend(_matched_md(m.because, names, depth + 1))
            continue
        text = m.condition
        if m.negated and not text.startswith(("no ", "not ")):
            text = f"not: {text}"
        if not m.facts:
            lines.append(f"{pad}- {md(text)}")
        for f in m.facts:
            where = f" ({md(f['source'])})" if f.get("source") else ""
            lines.append(f"{pad}- {md(text)}: {md(f.get('text', ''))}{where}")
    return lines


def _facts(matched: Iterable[Matched]) -> Iterator[dict[str, Any]]:
    for m in matched:
        yield from m.facts
        yield from _facts(m.because)


def _footer(view: KnowledgeBaseView, rule_id: str, version: str, evidence: str) -> list[str]:
    return [f"**Evidence level:** {md(EVIDENCE.get(evidence, evidence))}", "",
            f"Rule `{rule_id}` {md(version)} · knowledge base {md(view.label)} (`{view.kb.content_hash[:19]}`)"]


def _extension(rule_id: str, version: str, kind: str) -> dict[str, Any]:
    return {EXTENSION_KEY: {"rule_id": rule_id, "rule_version": version, "kind": kind}}


def _topic(rule_id: str, title: str) -> Coding:
    return Coding(system=RULE_TOPIC_SYSTEM, code=rule_id, display=fit(title, 120))


# --- FHIR resources for suggestions --------------------------------------------------------------------------
def _drug_concept(drug: str) -> dict[str, Any]:
    d, t = vocabulary().drugs[drug], code_tables()
    coding = [{"system": t.uri("rxnorm"), "code": c, "display": d.name} for c in d.rxnorm[:1]]
    coding += [{"system": t.uri("atc"), "code": c, "display": d.name} for c in d.atc[:1]]
    return ({"coding": coding} if coding else {}) | {"text": d.name}


def _manifestation(term: str) -> dict[str, Any]:
    t, name = code_tables(), vocabulary().manifestations[term].name
    entry = t.preferred("manifestations", term)
    if entry is not None:
        system, code = t.export_code(entry)
        return {"coding": [{"system": system, "code": code, "display": entry.display}], "text": name}
    return {"coding": [{"system": MASCDS_SYSTEMS["manifestation"], "code": term, "display": name}], "text": name}


def allergy_resource(drug: str, patient_id: str, reaction: dict[str, Any] | None) -> dict[str, Any]:
    """A FHIR R4 AllergyIntolerance recording a reaction to ``drug``, from the matched reaction fact."""
    res: dict[str, Any] = {
        "resourceType": "AllergyIntolerance",
        "clinicalStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "category": ["medication"],
        "code": _drug_concept(drug),
        "patient": {"reference": f"Patient/{patient_id}"},
    }
    if reaction is not None:
        manifestations = [m for m in reaction.get("manifestations", ()) if m in vocabulary().manifestations]
        severity = reaction.get("severity")
        if severity == "severe" or "anaphylaxis" in manifestations:
            res["criticality"] = "high"
        if manifestations:
            element: dict[str, Any] = {"manifestation": [_manifestation(m) for m in manifestations]}
            if severity in ("mild", "moderate", "severe"):
                element["severity"] = severity
            if reaction.get("time"):
                element["onset"] = reaction["time"]
            res["reaction"] = [element]
        if reaction.get("time"):
            res["onsetDateTime"] = reaction["time"]
    return res


def _suggestions(rec: Recommendation, ctx: CardContext, issued: _Issued, notes: list[str]) -> list[Suggestion]:
    v = vocabulary()
    active = [a for a in rec.actions if a.suppressed_by is None]
    out: list[Suggestion] = []
    stopped = sorted({d for a in active if a.kind in ("avoid", "stop") for d in v.target_drugs(a.target)})
    refs = [(r, d) for d in stopped for r in ctx.draft_orders.get(d, ())]
    for r, _ in refs:
        if r in issued.deleted:
            notes.append(f"Deleting the draft order {md(r)} is suggested on the card “{md(issued.deleted[r])}”.")
    new = [(r, d) for r, d in refs if r not in issued.deleted]
    if new:
        names = _names(v.drugs[d].name for _, d in new)
        out.append(Suggestion(
            label=fit(f"Delete the draft {names} order" + ("s" if len(new) > 1 else ""), 120),
            uuid=str(uuid.uuid4()), isRecommended=True,
            actions=[Action(type="delete", resourceId=r, description=f"Delete the draft order {r} ({v.drugs[d].name})")
                     for r, d in new]))
        issued.deleted.update((r, rec.title) for r, _ in new)
    for d in sorted({d for a in active if a.kind == "record_allergy" for d in v.target_drugs(a.target)}):
        name = v.drugs[d].name
        if ctx.allergies.get(d):
            notes.append(f"An allergy to {md(name)} is already recorded ({md(', '.join(ctx.allergies[d]))}).")
            continue
        if d in issued.recorded:
            notes.append(f"Recording the allergy is suggested on the card “{md(issued.recorded[d])}”.")
            continue
        reactions = [f for f in _facts(rec.matched) if f.get("kind") == "reaction" and f.get("drug") == d]
        latest = max(reactions, key=lambda f: str(f.get("time", "")), default=None)
        out.append(Suggestion(
            label=fit(f"Record {name} hypersensitivity in the allergy list", 120),
            uuid=str(uuid.uuid4()), isRecommended=True,
            actions=[Action(type="create", description=f"Create an AllergyIntolerance for {name}",
                            resource=allergy_resource(d, ctx.patient_id, latest))]))
        issued.recorded[d] = rec.title
    return out


# --- the cards -----------------------------------------------------------------------------------------------
def recommendation_card(rec: Recommendation, view: KnowledgeBaseView, ctx: CardContext, issued: _Issued,
                        overridden: list[Recommendation]) -> Card:
    notes: list[str] = []
    suggestions = _suggestions(rec, ctx, issued, notes)
    lines = [md(rec.rationale), "", "**What to do**"]
    for a in rec.actions:
        if a.suppressed_by is None:
            dose = f" Dose as reported: {md(a.reported_dose).rstrip('.')}." if a.reported_dose else ""
            lines.append(f"- **{_KIND_WORDS.get(a.kind, a.kind)}** {md(a.target_name)}: {md(a.text)}{dose}")
        elif a.suppressed_by.reason == "failed-line":  # the clinician sees why a drug is not offered
            lines.append(f"- Not suggested: {md(a.target_name)} - {md(a.suppressed_by.detail or '')}.")
    lines.extend(f"- {n}" for n in notes)
    for o in overridden:
        lines.append(f"- This outweighs “{md(o.title)}” (`{o.rule_id}`), which is not shown.")
    facts = _matched_md(rec.matched, view.fact_titles)
    if facts:
        lines += ["", "**Based on this patient's record**", *facts[:MAX_FACT_LINES]]
        if len(facts) > MAX_FACT_LINES:
            lines.append(f"- … and {len(facts) - MAX_FACT_LINES} more")
    lines += ["", "**Sources**", *_sources_md(rec.citations), "",
              *_footer(view, rec.rule_id, rec.rule_version, rec.evidence_level)]
    restrictive = any(a.kind in ("avoid", "stop", "reduce") for a in rec.actions)
    source = _source(rec.citations, view.label).model_copy(update={"topic": _topic(rec.rule_id, rec.title)})
    return _card(
        uuid=str(uuid.uuid4()), summary=fit(rec.title), detail="\n".join(lines), indicator=rec.indicator,
        source=source, suggestions=suggestions or None, selectionBehavior="any" if suggestions else None,
        overrideReasons=_override(_RESTRICTIVE_REASONS if restrictive else _OTHER_REASONS),
        links=_links(view, ctx, rec.rule_id), extension=_extension(rec.rule_id, rec.rule_version, "recommendation"))


def _missing_lines(u: Undecided, view: KnowledgeBaseView, ctx: CardContext) -> tuple[list[str], list[str]]:
    """(names, detail lines) of what would decide a rule. What lies in a section the client did not send is
    "not sent", not "measure": it may well be recorded."""
    names, lines = [], []
    for m in u.missing:
        if view.sections.get(m.what) in ctx.not_fetched:
            names.append(f"{m.what} (not sent)")
            keys = ", ".join(f"`{k}`" for k in ctx.not_fetched_keys)
            lines.append(f"- {md(m.what)}: not sent by the EHR and not fetchable (prefetch {keys})")
        else:
            names.append(m.what)
            lines.append(f"- {md(m.what)}: {md(m.detail)}")
    return names, list(dict.fromkeys(lines))


def undecided_summary(title: str, names: list[str]) -> str:
    """"Undecided: <title> - needs X, Y and 2 more": as many names as fit; the title is shortened only when not
    even one name would fit beside it."""
    limit, head = SUMMARY_LIMIT - 1, "Undecided: "
    if not names:
        return fit(head + title)

    def tail(n: int) -> str:
        more = f" and {len(names) - n} more" if n < len(names) else ""
        return f" - needs {', '.join(names[:n])}{more}"

    for n in range(len(names), 0, -1):
        if len(head) + len(title) + len(tail(n)) <= limit:
            return head + title + tail(n)
    room = limit - len(head) - len(tail(1))
    return head + fit(title, room) + tail(1) if room >= 20 else fit(head + title + tail(1))


def undecided_card(u: Undecided, view: KnowledgeBaseView, ctx: CardContext, assessment: Assessment | None,
                   indicator: str = "info") -> Card:
    """``indicator`` "warning": the undecided rule would give a critical card about an order being signed."""
    names, missing = _missing_lines(u, view, ctx)
    info = view.rules.get(u.rule_id)
    citations = info.citations if info else ()
    summary = undecided_summary(u.title, list(dict.fromkeys(names)))
    lines = [f"This {'recommendation' if u.produces == 'recommendation' else 'assessment'} could not be decided "
             "from the record. To decide it:", *missing]
    if indicator == "warning":
        lines = ["Decided, this rule would give a critical warning about the order being signed; check before "
                 "signing.", "", *lines]
    if assessment is not None and assessment.value_range is not None:
        lo, hi = assessment.value_range
        span = f"at least {lo:g}" if hi is None else f"between {lo:g} and {hi:g}"
        lines += ["", f"With what is recorded, the value could be {span}."]
    lines += ["", "**Sources**", *_sources_md(citations), "",
              *_footer(view, u.rule_id, u.rule_version, info.evidence_level if info else "")]
    source = _source(citations, view.label).model_copy(update={"topic": _topic(u.rule_id, u.title)})
    return _card(uuid=str(uuid.uuid4()), summary=summary, detail="\n".join(lines), indicator=indicator,
                 source=source, overrideReasons=_override(_INFO_REASONS), links=_links(view, ctx, u.rule_id),
                 extension=_extension(u.rule_id, u.rule_version, "undecided"))


def assessment_card(a: Assessment, view: KnowledgeBaseView, ctx: CardContext) -> Card:
    value = f" ({a.value:g})" if a.value is not None else ""
    if a.status == "met":
        summary = fit(f"{a.title}: met{value}")
    else:
        summary = fit(f"{a.title}: not met{value}, but unreliable here")
    lines = [md(a.summary or a.title)]
    if a.interpretation:
        lines += ["", f"**Interpretation:** {md(a.interpretation)}"]
    if a.terms:
        lines += ["", "**Score**"]
        for t in a.terms:
            pts = t.get("points")
            lines.append(f"- {md(t.get('label', ''))}: {md('undecided' if pts is None else f'{pts:g}')}")
    if a.caveats:
        lines += ["", "**Caveats**", *(f"- {md(c)}" for c in a.caveats)]
    if a.unrecorded:
        lines += ["", "**Not recorded (could not change the result)**",
                  *dict.fromkeys(f"- {md(m.what)}: {md(m.detail)}" for m in a.unrecorded)]
    facts = _matched_md(a.matched, view.fact_titles)
    if facts:
        lines += ["", "**Based on this patient's record**", *facts[:MAX_FACT_LINES]]
    lines += ["", "**Sources**", *_sources_md(a.citations), "",
              *_footer(view, a.rule_id, a.rule_version, a.evidence_level)]
    source = _source(a.citations, view.label).model_copy(update={"topic": _topic(a.rule_id, a.title)})
    return _card(uuid=str(uuid.uuid4()), summary=summary, detail="\n".join(lines), indicator="info", source=source,
                overrideReasons=_override(_INFO_REASONS), links=_links(view, ctx, a.rule_id),
                extension=_extension(a.rule_id, a.rule_version, "assessment"))


def _notice_card(summary: str, lines: list[str], indicator: str, view: KnowledgeBaseView, kind: str) -> Card:
    return _card(uuid=str(uuid.uuid4()), summary=fit(summary), detail="\n".join(lines), indicator=indicator,
                source=Source(label=f"mascds knowledge base {view.label}"),
                extension={EXTENSION_KEY: {"kind": kind}})


def not_applicable_card(items: list[Assessment], view: KnowledgeBaseView) -> Card:
    """One card for the assessments outside their population, so that their silence never reads as "not met"
    (the 2016 criteria beside a ferritin of 20,000 in a patient without sJIA)."""
    names = _names(a.fact for a in items)
    lines = ["These assessments are defined for another population and say nothing about this patient - they "
             "neither confirm nor rule out MAS:"]
    lines += [f"- **{md(a.title)}** (`{a.rule_id}`): {md(a.not_applicable_reason or '')}" for a in items]
    lines += ["", "**Sources**", *_sources_md(c for a in items for c in a.citations[:1])]
    summary = fit(f"Not applicable to this patient, neither met nor not met: {names}")
    return _card(uuid=str(uuid.uuid4()), summary=summary,
                 detail="\n".join(lines), indicator="info", source=Source(label=f"mascds knowledge base {view.label}"),
                 overrideReasons=_override(_INFO_REASONS),
                 extension={EXTENSION_KEY: {"kind": "not-applicable", "rule_ids": [a.rule_id for a in items]}})


def scope_card(result: Result, view: KnowledgeBaseView, ctx: CardContext) -> Card:
    """The one card of an undetermined scope: what the record must hold to tell whether the knowledge base
    applies (sections the client did not send are named as such)."""
    lines = ["The record cannot say whether this knowledge base applies to this patient, so its undecided rules "
             "and assessments are not shown. To decide it:"]
    for section in result.scope.missing:
        label = section.replace("_", " ")
        if section in ctx.not_fetched:
            keys = ", ".join(f"`{k}`" for k in ctx.not_fetched_keys)
            lines.append(f"- {md(label)}: not sent by the EHR and not fetchable (prefetch {keys})")
        else:
            lines.append(f"- {md(label)}: not recorded")
    lines += ["", *(f"- {md(r)}" for r in result.scope.reasons)]
    missing = " and ".join(s.replace("_", " ") for s in result.scope.missing)
    return _notice_card(f"Scope undetermined: {missing} needed to tell whether this applies", lines, "info", view,
                        "scope-undetermined")


def _matched_draft(matched: Iterable[Matched], drafts: set[str]) -> bool:
    return any(f.get("kind") == "order" and f.get("drug") in drafts for f in _facts(matched))


def _relevant(view: KnowledgeBaseView, rule_id: str, drafts: set[str], matched: Iterable[Matched] | None,
              actions: Iterable[ResultAction] = ()) -> bool:
    """Whether a rule concerns the drugs being ordered: its conditions name one (for an undecided rule, only
    this counts), or, for advice given, its actions name one (as written, or taken from the patient's record:
    the drug a reaction was to) or it matched one of the draft orders."""
    info = view.rules.get(rule_id)
    if info is not None and info.condition_drugs & drafts:
        return True
    if matched is None:
        return False
    v = vocabulary()
    if any(v.target_drugs(a.target) & drafts for a in actions):
        return True
    return bool(info is not None and info.action_drugs & drafts) or _matched_draft(matched, drafts)


def build_cards(result: Result, view: KnowledgeBaseView, ctx: CardContext) -> list[Card]:
    """The cards of one evaluation, most urgent first. Out of the knowledge base's scope there are none (the
    CDS Hooks answer for "nothing relevant"), save the notice that rules could not be evaluated."""
    issued = _Issued()
    scope = result.scope
    order_sign = ctx.hook == "order-sign"
    drafts = set(ctx.draft_orders)
    recs = [r for r in result.recommendations if r.status == "active"]
    if order_sign:
        recs = [r for r in recs if _relevant(view, r.rule_id, drafts, r.matched, r.actions)]
    suppressed = [r for r in result.recommendations if r.status == "suppressed"]
    # Most urgent first; at equal urgency the higher priority, then advice about the orders being signed (so the
    # card that matched a draft order carries the suggestion to delete it).
    recs.sort(key=lambda r: (_INDICATOR_RANK[r.indicator], -r.priority, not _matched_draft(r.matched, drafts)))
    cards: list[tuple[int, int, Card]] = []
    for i, r in enumerate(recs):
        beaten = [s for s in suppressed if any(a.suppressed_by is not None and a.suppressed_by.rule_id == r.rule_id
                                               for a in s.actions)]
        cards.append((_INDICATOR_RANK[r.indicator], i, recommendation_card(r, view, ctx, issued, beaten)))
    n = len(cards)
    if not order_sign and scope.shown:
        for a in result.assessments:
            if a.status == "met" or (a.status == "not_met" and not a.reliable):
                n += 1
                cards.append((_INDICATOR_RANK["info"], n, assessment_card(a, view, ctx)))
        outside = [a for a in result.assessments if a.status == "not_applicable"]
        if outside:
            n += 1
            cards.append((_INDICATOR_RANK["info"], n, not_applicable_card(outside, view)))
    if scope.status == "undetermined" and not order_sign:
        n += 1
        cards.append((_INDICATOR_RANK["info"], n, scope_card(result, view, ctx)))
    by_rule = {a.rule_id: a for a in result.assessments}
    # Only undecided recommendations: an undecided assessment is shown through the recommendations waiting on
    # it (their missing inputs are traced through it); the rest stays in the result and in explanations.
    for u in result.shown_undecided():
        if order_sign and not _relevant(view, u.rule_id, drafts, None):
            continue
        n += 1
        # An order of a drug that a critical rule might be about (a recorded reaction to it, not yet decided
        # serious): never a quiet info card while it is being signed.
        info = view.rules.get(u.rule_id)
        indicator = "warning" if order_sign and info is not None and info.indicator == "critical" else "info"
        cards.append((_INDICATOR_RANK[indicator], n, undecided_card(u, view, ctx, by_rule.get(u.rule_id),
                                                                    indicator)))
    if result.errors:
        lines = ["These rules could not be evaluated, so their advice is missing from this answer:",
                 *(f"- `{e.rule_id}`: {md(e.message)}" for e in result.errors)]
        cards.append((_INDICATOR_RANK["warning"], -1, _notice_card(
            f"{len(result.errors)} rule(s) could not be evaluated; advice may be missing", lines, "warning", view,
            "rule-errors")))
    if result.input_errors and scope.status != "out_of_scope":
        shown = result.input_errors[:MAX_FACT_LINES]
        lines = ["These entries of the record were wrong and were left out; rules needing them may be undecided:",
                 *(f"- {md(e)}" for e in shown)]
        if len(result.input_errors) > len(shown):
            lines.append(f"- … and {len(result.input_errors) - len(shown)} more")
        n += 1
        cards.append((_INDICATOR_RANK["info"], n, _notice_card(
            f"{len(result.input_errors)} record entries could not be used", lines, "info", view, "input-errors")))
    timing = [w for w in result.warnings if w.startswith(TIME_WARNING_PREFIX)]
    if timing:  # an empty answer at a time the record cannot speak to must not look like a reassuring one
        cards.append((_INDICATOR_RANK["warning"], -1, _notice_card(
            "The evaluation time is outside what the record covers", [f"- {md(w)}" for w in timing], "warning",
            view, "evaluation-time")))
    cards.sort(key=lambda c: (c[0], c[1]))
    return [c for _, _, c in cards]


__all__ = ["CardContext", "KnowledgeBaseView", "RuleInfo", "allergy_resource", "build_cards", "fit", "md"]

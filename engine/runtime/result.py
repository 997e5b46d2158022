"""Typed evaluation results and their stable JSON form (documented in docs/json-output.md and
``schemas/result.schema.json``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import orjson

from ..compiler.ir import Missing, Node, Verdict
from ..language.scope import EVERYONE, ScopeVerdict
from .facts import Fact

if TYPE_CHECKING:
    from .history import Line

RESULT_FORMAT = "mascds.result/1"
# orjson and json spell numbers alike except between 1e-9 and 1e-4 (json: 5e-07 and 1.5e-05; orjson: 5e-7 and
# 0.000015). A text that may hold such a number (an exponent below zero, or four zeros after a point) is
# written by json instead; the pattern also catches harmless look-alikes, which only cost the slower path.
_SMALL_NUMBER = re.compile(rb"[0-9][eE]-|0\.0000")


@dataclass(frozen=True)
class Citation:
    reference: str
    reported: str
    doi: str | None = None
    pmid: str | None = None
    link: str | None = None  # a source without DOI or PMID: a product label's published address

    @property
    def url(self) -> str | None:
        if self.doi:
            return f"https://doi.org/{self.doi}"
        if self.pmid:
            return f"https://pubmed.ncbi.nlm.nih.gov/{self.pmid}/"
        return self.link

    def to_json(self) -> dict[str, Any]:
        return {"doi": self.doi, "pmid": self.pmid, "url": self.url, "reference": self.reference,
                "reported": self.reported}


@dataclass(frozen=True)
class Suppression:
    """What suppressed an action. ``reason`` conflict: an opposite action of another rule (``rule_id``,
    ``action``, ``target``). ``reason`` failed-line: the treatment history - the suggested drug, or a drug of the
    suggested class (``target``), failed or caused a reaction; ``action`` is that line's status and ``detail`` the
    line as a clinician reads it; ``rule_id`` is ``treatment-history``."""

    rule_id: str
    action: str
    target: str
    reason: str = "conflict"  # conflict | failed-line
    detail: str | None = field(default=None, compare=False)  # words in the result language, not the decision

    def to_json(self) -> dict[str, str | None]:
        return {"rule_id": self.rule_id, "action": self.action, "target": self.target, "reason": self.reason,
                "detail": self.detail}


@dataclass(frozen=True)
class Action:
    kind: str
    target: str
    target_name: str
    text: str
    reported_dose: str | None = None
    suppressed_by: Suppression | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "target_name": self.target_name, "text": self.text,
                "reported_dose": self.reported_dose,
                "suppressed_by": self.suppressed_by.to_json() if self.suppressed_by else None}


@dataclass(frozen=True)
class Matched:
    """One condition that held, with the facts that satisfied it (the patient's actual values)."""

    condition: str
    path: str
    facts: tuple[dict[str, Any], ...] = ()
    negated: bool = False
    derived: dict[str, Any] | None = None
    because: tuple[Matched, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"condition": self.condition, "path": self.path, "negated": self.negated,
                               "facts": list(self.facts)}
        if self.derived is not None:
            out["derived"] = self.derived
            out["because"] = [m.to_json() for m in self.because]
        return out


@dataclass(frozen=True)
class Recommendation:
    rule_id: str
    rule_version: str
    title: str
    indicator: str
    status: str  # active | suppressed
    priority: int
    actions: tuple[Action, ...]
    rationale: str
    matched: tuple[Matched, ...]
    citations: tuple[Citation, ...]
    evidence_level: str

    def to_json(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id, "rule_version": self.rule_version, "title": self.title,
            "indicator": self.indicator, "status": self.status, "priority": self.priority,
            "actions": [a.to_json() for a in self.actions], "rationale": self.rationale,
            "matched": [m.to_json() for m in self.matched],
            "citations": [c.to_json() for c in self.citations], "evidence_level": self.evidence_level,
        }


@dataclass(frozen=True)
class Assessment:
    fact: str
    status: str  # met | not_met | indeterminate | not_applicable
    rule_id: str
    rule_version: str
    title: str
    summary: str | None
    value: float | None
    missing: tuple[Missing, ...]
    matched: tuple[Matched, ...]
    citations: tuple[Citation, ...]
    evidence_level: str
    value_range: tuple[float, float | None] | None = None
    interpretation: str | None = None
    reliable: bool = True
    caveats: tuple[str, ...] = ()
    terms: tuple[dict[str, Any], ...] = ()
    unrecorded: tuple[Missing, ...] = ()  # inputs of a decided score that were not recorded and did not matter
    not_applicable_reason: str | None = None  # status not_applicable: why the assessment does not apply

    def to_json(self) -> dict[str, Any]:
        return {
            "fact": self.fact, "status": self.status, "not_applicable_reason": self.not_applicable_reason,
            "reliable": self.reliable, "caveats": list(self.caveats),
            "value": self.value, "value_range": list(self.value_range) if self.value_range else None,
            "interpretation": self.interpretation, "terms": list(self.terms), "rule_id": self.rule_id,
            "rule_version": self.rule_version, "title": self.title, "summary": self.summary,
            "missing": [m.to_json() for m in self.missing],
            "unrecorded": [m.to_json() for m in self.unrecorded], "matched": [m.to_json() for m in self.matched],
            "citations": [c.to_json() for c in self.citations], "evidence_level": self.evidence_level,
        }


@dataclass(frozen=True)
class Undecided:
    rule_id: str
    rule_version: str
    title: str
    produces: str  # recommendation | assessment
    missing: tuple[Missing, ...]

    def to_json(self) -> dict[str, Any]:
        return {"rule_id": self.rule_id, "rule_version": self.rule_version, "title": self.title,
                "produces": self.produces, "missing": [m.to_json() for m in self.missing]}


@dataclass(frozen=True)
class RuleError:
    rule_id: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"rule_id": self.rule_id, "message": self.message}


@dataclass(frozen=True)
class NodeResult:
    """The decision on one node of a rule's condition tree (kept for explanations)."""

    node: Node
    verdict: Verdict
    facts: tuple[Fact, ...] = ()  # the facts that decided it
    seen: tuple[Fact, ...] = ()  # every fact in the condition's window
    missing: tuple[Missing, ...] = ()
    children: tuple[NodeResult, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class KnowledgeBaseInfo:
    name: str
    version: str
    title: str
    content_hash: str
    rules_evaluated: int
    include_drafts: bool

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "title": self.title,
                "content_hash": self.content_hash, "rules_evaluated": self.rules_evaluated,
                "include_drafts": self.include_drafts}


@dataclass(frozen=True)
class Result:
    as_of: str
    as_of_epoch: int
    case_id: str
    case_title: str
    case_source: str
    timeline_start: int | None
    knowledge_base: KnowledgeBaseInfo
    backend: str
    lang: str
    recommendations: tuple[Recommendation, ...]
    assessments: tuple[Assessment, ...]
    indeterminate: tuple[Undecided, ...]
    errors: tuple[RuleError, ...]
    warnings: tuple[str, ...] = ()
    complete: bool = True
    input_errors: tuple[str, ...] = ()
    treatment_history: tuple[Line, ...] = ()
    traces: dict[str, NodeResult] = field(default_factory=dict, compare=False, repr=False)
    derived_facts: dict[str, Fact] = field(default_factory=dict, compare=False, repr=False)
    scores: dict[str, ScoreResult] = field(default_factory=dict, compare=False, repr=False)  # by rule id
    scope: ScopeVerdict = EVERYONE
    populations: dict[str, NodeResult] = field(default_factory=dict, compare=False, repr=False)  # applies_to

    def shown_undecided(self) -> tuple[Undecided, ...]:
        """The undecided answers worth a clinician's attention: recommendation rules left undecided (their
        missing inputs traced through the assessments they use), and only for a patient in scope. An undecided
        assessment no recommendation waits on stays in ``indeterminate`` and in explanations."""
        if not self.scope.shown:
            return ()
        return tuple(u for u in self.indeterminate if u.produces == "recommendation")

    def fired(self) -> set[str]:
        """Rule ids whose recommendation was given and not suppressed."""
        return {r.rule_id for r in self.recommendations if r.status == "active"}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "as_of": self.as_of,
            "case": {"id": self.case_id, "title": self.case_title, "source": self.case_source},
            "knowledge_base": self.knowledge_base.to_json(),
            "backend": self.backend,
            "lang": self.lang,
            "complete": self.complete,
            "scope": self.scope.to_json(),
            "recommendations": [r.to_json() for r in self.recommendations],
            "assessments": [a.to_json() for a in self.assessments],
            "indeterminate": [u.to_json() for u in self.indeterminate],
            "shown_undecided": [u.rule_id for u in self.shown_undecided()],
            "errors": [e.to_json() for e in self.errors],
            "input_errors": list(self.input_errors),
            "warnings": list(self.warnings),
            "treatment_history": [line.to_json() for line in self.treatment_history],
        }

    def to_json_text(self) -> str:
        """Deterministic JSON: the same input always gives byte-identical text.

        orjson writes the text json.dumps(indent=2, ensure_ascii=False) writes, ten times faster, except for numbers
        below 1e-4, integers beyond 64 bits and keys that are not strings: those texts go through json
        (tests/test_evaluate_compiled.py checks the identity on every case and on generated snapshots). Numbers in
        a result are finite: ingest refuses others (units.py, fhir_map.py) and scores are exact fractions."""
        data = self.to_json()
        try:
            # what json cannot write (dataclasses, datetimes) must fail as it does there, not be written
            text = orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_PASSTHROUGH_DATACLASS
                                | orjson.OPT_PASSTHROUGH_DATETIME)
        except orjson.JSONEncodeError:
            text = b""
        if text and not _SMALL_NUMBER.search(text):
            return text.decode()
        return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=False, allow_nan=False)

    def _to_json_text_json(self) -> str:
        """The same text through the standard library alone (the yardstick of the fast path's tests)."""
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2, sort_keys=False, allow_nan=False)


Interval = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class TermResult:
    label: str
    input_range: Interval | None  # the input (value or count); None for a condition term
    contribution: Interval
    missing: tuple[Missing, ...]
    evidence: tuple[NodeResult, ...]  # the condition results the term was decided from

    def to_json(self) -> dict[str, Any]:
        lo, hi = self.contribution
        out: dict[str, Any] = {"label": self.label, "points": _num(lo) if lo == hi else None,
                               "points_range": [_num(lo), _num(hi)]}
        if self.input_range is not None:
            a, b = self.input_range
            out["input"] = _num(a) if a == b else None
        return out


@dataclass(frozen=True)
class ScoreResult:
    low: Fraction | None  # None: not computable (a ratio with a zero denominator, or nothing applicable)
    high: Fraction | None
    terms: tuple[TermResult, ...]
    missing: tuple[Missing, ...]

    @property
    def exact(self) -> Fraction | None:
        return self.low if self.low is not None and self.low == self.high else None


def _num(x: Fraction) -> float:
    return float(f"{float(x):.6g}")

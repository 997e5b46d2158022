"""mascds: cited clinical decision-support rules for macrophage activation syndrome in sJIA.

The public API::

    import engine

    kb = engine.load_knowledge_base("rules")              # load -> check -> compile (LoadError on problems)
    case = engine.load_case("cases/wu-2025-ruxolitinib.yaml")
    result = engine.evaluate(kb, case, at="day 16 08:00")  # default: the case's last event
    for rec in result.recommendations:
        print(rec.indicator, rec.title, rec.citations[0].doi)
    print(result.to_json_text())                         # stable JSON (docs/json-output.md)

    why = engine.explain(kb, case, "wu2025.consider-ruxolitinib", at="day 11 16:00")
    print(why.render_text())

    timeline = engine.replay(kb, case)                   # every event, one incremental session
    for rule_id, spans in timeline.spans().items():
        print(rule_id, [(s.state, s.start, s.end) for s in spans])

Many patients: :func:`evaluate_many` yields the results of many snapshots (``mascds batch`` runs it on Dask
workers; docs/population.md).
Snapshots can also be built from dicts shaped like case files with :func:`snapshot_from_dict`, and from FHIR
R4 (:func:`load_fhir`, :func:`snapshot_from_bundle`, :func:`snapshot_from_resources`; docs/fhir.md);
:func:`case_to_bundle` writes a snapshot as a FHIR R4 Bundle.
Every deliberate failure is a :class:`MascdsError`; load problems carry located :class:`Diagnostic` s.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .core.errors import Diagnostic, EvaluationError, LoadError, MascdsError, UsageError
from .core.snapshot import Snapshot
from .outputs.explain import ExplainNode, Explanation
from .outputs.timeline import Replay, Span
from .records.ingest import load_case, snapshot_from_dict
from .runtime.kb import BackendName, KnowledgeBase, load_knowledge_base, validate_knowledge_base
from .runtime.result import Action, Assessment, Citation, Matched, Recommendation, Result, Undecided

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from .records.fhir import FhirIngest, is_fhir_bundle, load_fhir, snapshot_from_bundle, snapshot_from_resources
    from .records.fhir_export import case_to_bundle

__version__ = "0.1.0"

# FHIR support loads fhir.resources (about 0.15 s): imported on first use, not with every `mascds` command.
_LAZY = {"FhirIngest": "records.fhir", "is_fhir_bundle": "records.fhir", "load_fhir": "records.fhir",
         "snapshot_from_bundle": "records.fhir", "snapshot_from_resources": "records.fhir",
         "case_to_bundle": "records.fhir_export"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "Action",
    "Assessment",
    "BackendName",
    "Citation",
    "Diagnostic",
    "EvaluationError",
    "ExplainNode",
    "Explanation",
    "FhirIngest",
    "KnowledgeBase",
    "LoadError",
    "MascdsError",
    "Matched",
    "Recommendation",
    "Replay",
    "Result",
    "Snapshot",
    "Span",
    "Undecided",
    "UsageError",
    "__version__",
    "case_to_bundle",
    "evaluate",
    "evaluate_many",
    "explain",
    "is_fhir_bundle",
    "load_case",
    "load_fhir",
    "load_knowledge_base",
    "replay",
    "snapshot_from_bundle",
    "snapshot_from_dict",
    "snapshot_from_resources",
    "validate_knowledge_base",
]


def evaluate(kb: KnowledgeBase, snapshot: Snapshot, at: int | str | datetime | None = None,
             backend: BackendName = "durable", lang: str = "en") -> Result:
    """Evaluate ``snapshot`` against ``kb`` as of ``at`` (epoch seconds, ISO text, 'day N HH:MM' or a datetime;
    default: the snapshot's last event). ``backend`` is ``durable`` (the Rete) or ``reference``."""
    return kb.evaluate(snapshot, at, backend=backend, lang=lang)


def explain(kb: KnowledgeBase, snapshot: Snapshot, rule_id: str, at: int | str | datetime | None = None,
            backend: BackendName = "durable", lang: str = "en") -> Explanation:
    """Why ``rule_id`` fired or did not at ``at``: every condition, its verdict, values seen and what is missing."""
    from .language.fields import text_in
    from .outputs.explain import check_rule_id, explain_result

    check_rule_id(rule_id, kb.rule_ids)
    result = kb.evaluate(snapshot, at, backend=backend, lang=lang)
    rule = kb.compiled.models[rule_id]
    return explain_result(result, rule_id, text_in(rule.title, lang), rule.version, kb.compiled.files[rule_id].file)


def replay(kb: KnowledgeBase, snapshot: Snapshot, times: Sequence[int] | None = None,
           backend: BackendName = "durable", lang: str = "en", incremental: bool = True) -> Replay:
    """Evaluate ``snapshot`` at each of ``times`` (default: every event of its timeline) in one incremental
    session - the same results as evaluating each time on its own - and say when each finding held."""
    from .outputs.timeline import replay as run

    return run(kb, snapshot, times, backend=backend, lang=lang, incremental=incremental)


def evaluate_many(kb: KnowledgeBase, snapshots: Iterable[Snapshot], at: int | str | datetime | None = None, *,
                  every_event: bool = False, backend: BackendName = "durable", lang: str = "en",
                  on_error: Callable[[Snapshot, MascdsError], None] | None = None) -> Iterator[Result]:
    """Evaluate each snapshot as of ``at`` (default: its own last event), or with ``every_event`` at every event
    of its timeline, yielding the results in order - the building block of ``mascds batch``. A snapshot that
    cannot be evaluated raises, or with ``on_error`` is reported to it and skipped."""
    from .population.batch import evaluate_many as run

    return run(kb, snapshots, at, every_event=every_event, backend=backend, lang=lang, on_error=on_error)

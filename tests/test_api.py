"""The public Python API: small, typed, documented, and the same answers as the CLI."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import engine

from .conftest import CASES, ROOT, RULES

PUBLIC = {
    "Action", "Assessment", "BackendName", "Citation", "Diagnostic", "EvaluationError", "ExplainNode", "Explanation",
    "FhirIngest", "KnowledgeBase", "LoadError", "MascdsError", "Matched", "Recommendation", "Replay", "Result",
    "Snapshot", "Span", "Undecided", "UsageError", "__version__", "case_to_bundle", "evaluate", "evaluate_many",
    "explain",
    "is_fhir_bundle", "load_case", "load_fhir", "load_knowledge_base", "replay", "snapshot_from_bundle",
    "snapshot_from_dict", "snapshot_from_resources", "validate_knowledge_base",
}


def test_exported_members_are_exactly_the_public_api() -> None:
    assert set(engine.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(engine, name), name
        obj = getattr(engine, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            assert obj.__doc__, f"{name} needs a docstring"
    assert (ROOT / "engine" / "py.typed").is_file()


def test_only_one_module_imports_durable_rules() -> None:
    importers = []
    for path in (ROOT / "engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == "durable_rules_engine" or n.split(".")[0] == "durable" for n in names):
                importers.append(path.name)
    assert importers == ["durable_backend.py"]


def test_evaluate_from_dicts() -> None:
    kb = engine.load_knowledge_base(RULES)
    snap = engine.snapshot_from_dict({
        "case": {"id": "api", "title": "Built from a dict"},
        "patient": {"sex": "male", "age_years": 4},
        "timeline": {"start": "2024-02-01"},
        "reactions": [{"drug": "Actemra", "manifestations": ["anaphylaxis"], "severity": "severe",
                       "time": "day 1 10:20"}],
        "orders": [{"drug": "TCZ", "status": "draft", "time": "day 9 08:00"}],
    })
    result = engine.evaluate(kb, snap)
    # a prior reaction to tocilizumab is also a risk factor for sJIA lung disease (ACR 2021)
    assert result.fired() == {"yang2023.tocilizumab-anaphylaxis", "yang2023.tocilizumab-rechallenge",
                              "acr2021.tocilizumab-lung-risk"}
    critical = result.recommendations[0]
    assert critical.indicator == "critical" and critical.priority == 10
    assert "anaphylaxis" in critical.rationale and critical.citations[0].url == "https://doi.org/10.1002/pdi3.32"


def test_bad_dicts_raise_load_errors_with_places() -> None:
    with pytest.raises(engine.LoadError) as err:
        engine.snapshot_from_dict({"case": {"id": "x", "title": "x"}, "patient": {"sex": "male"},
                                   "observations": [{"analyte": "ferritin", "value": 1, "unit": "furlongs",
                                                     "time": "2024-01-01"}]})
    assert [d.code for d in err.value.diagnostics] == ["E105"]


def test_unknown_backend_and_language_are_usage_errors() -> None:
    kb = engine.load_knowledge_base(RULES)
    snap = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    with pytest.raises(engine.UsageError):
        kb.evaluate(snap, backend="rete")  # type: ignore[arg-type]
    with pytest.raises(engine.UsageError):
        kb.evaluate(snap, lang="fr")


def test_explain_from_python() -> None:
    kb = engine.load_knowledge_base(RULES)
    snap = engine.load_case(CASES / "wu-2025-ruxolitinib.yaml")
    why = engine.explain(kb, snap, "wu2025.stop-tocilizumab", at="day 17 12:00")
    assert why.outcome == "not fired"
    tcz = why.root.children[1]
    assert tcz.verdict == "false" and "tocilizumab" in tcz.label
    assert why.root.children[0].verdict == "true" and why.root.children[0].derived_rule == "wu2025.refractory-sjia-mas"


def test_load_errors_are_collected_and_sorted(tmp_path: Path) -> None:
    with pytest.raises(engine.LoadError) as err:
        engine.load_knowledge_base(ROOT / "tests" / "rule_errors" / "E200-duplicate-id")
    assert [d.code for d in err.value.diagnostics] == ["E208"]  # no manifest in that folder


def test_every_diagnostic_code_is_documented() -> None:
    from engine.core.errors import CODES

    doc = (ROOT / "docs" / "error-codes.md").read_text()
    for code, title in CODES.items():
        assert f"| {code} | {title} |" in doc, code


def test_committed_schemas_match_the_models() -> None:
    from engine.authoring.schemas import KINDS, generate_text

    for kind in KINDS:
        assert (ROOT / "schemas" / f"{kind}.schema.json").read_text() == generate_text(kind), (
            f"schemas/{kind}.schema.json is stale: run mascds schema {kind} --output schemas/{kind}.schema.json")

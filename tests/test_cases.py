"""Every expectation in every case file, on both backends: the shipped knowledge base against cases/, and
each fixture knowledge base against its own cases."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.authoring.casetest import case_files, check_expectation

from .conftest import CASES, RULES, fixture_kbs

SUITES = [(RULES, CASES)] + [(d / "rules", d / "cases") for d in fixture_kbs()]
_KBS: dict[Path, engine.KnowledgeBase] = {}


def _kb(rules: Path) -> engine.KnowledgeBase:
    if rules not in _KBS:
        _KBS[rules] = engine.load_knowledge_base(rules)
    return _KBS[rules]


def _params() -> list[object]:
    out = []
    for rules, cases in SUITES:
        for path in case_files([cases]):
            snap = engine.load_case(path)
            for i in range(len(snap.expectations)):
                for backend in ("durable", "reference"):
                    out.append(pytest.param(rules, path, i, backend,
                                            id=f"{path.relative_to(cases.parent.parent)}#{i}[{backend}]"))
    return out


@pytest.mark.parametrize(("rules", "path", "index", "backend"), _params())
def test_expectation(rules: Path, path: Path, index: int, backend: engine.BackendName) -> None:
    kb = _kb(rules)
    snap = engine.load_case(path)
    exp = snap.expectations[index]
    result = kb.evaluate(snap, exp.at, backend=backend)
    checks = check_expectation(snap, exp, result)
    assert checks, "an expectation must claim something"
    failed = [f"{c.claim} {c.subject}: expected {c.expected}, got {c.actual}" for c in checks if not c.passed]
    assert not failed, f"{exp.ref} ({exp.note}): " + "; ".join(failed)
    if "priority-only" not in str(rules):
        assert result.errors == (), result.errors


def test_every_shipped_rule_has_a_case_where_it_fires_and_one_where_it_must_not(kb: engine.KnowledgeBase) -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    producers = {r.derives: r.id for r in kb.compiled.rules if r.derives}
    actions = [(rid, a.kind, a.target) for rid, m in kb.compiled.models.items() if m.recommend is not None
               for a in m.recommend.actions]
    for path in case_files([CASES]):
        snap = engine.load_case(path)
        for exp in snap.expectations:
            fired.update(exp.fires)
            quiet.update(exp.not_fires)
            # claims in clinical terms: an action claimed covers the rules that can give it (or the one named)
            for claim in exp.recommends:
                fired.update([claim.rule] if claim.rule else
                             (rid for rid, kind, target in actions if (kind, target) == (claim.kind, claim.target)))
            quiet.update(producers.get(s, s) for s in exp.decided_not_fired)
            for fact, status in exp.assessments:
                rule = producers[fact]
                if status in ("met", "met_unreliable"):
                    fired.add(rule)
                elif status in ("not_met", "not_met_unreliable", "not_applicable"):
                    quiet.add(rule)
    missing_fire = sorted(set(kb.rule_ids) - fired)
    missing_quiet = sorted(set(kb.rule_ids) - quiet)
    assert not missing_fire, f"rules with no case where they fire: {missing_fire}"
    assert not missing_quiet, f"rules with no case where they must not fire: {missing_quiet}"


def test_reconstructions_mark_every_entry(kb: engine.KnowledgeBase) -> None:
    for name in ("wu-2025-ruxolitinib.yaml", "yang-2023-ecmo-tocilizumab.yaml"):
        snap = engine.load_case(CASES / name)
        assert len(snap.expectations) >= 5, "before, at and after the decision points"
        illustrative = [o for o in snap.observations if o.illustrative]
        assert illustrative == list(snap.observations), "the abstracts give no laboratory values"

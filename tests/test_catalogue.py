"""docs/knowledge-base.md is generated from the rules and must not drift from them."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine.authoring.catalogue import render_catalogue
from engine.cli import main

from .conftest import ROOT, RULES

DOC = ROOT / "docs" / "knowledge-base.md"


def test_the_published_table_is_what_the_rules_generate() -> None:
    kb = engine.load_knowledge_base(RULES)
    assert DOC.read_text(encoding="utf-8") == render_catalogue(kb.compiled), (
        "docs/knowledge-base.md is out of date: run mascds catalogue --output docs/knowledge-base.md")


def test_every_rule_has_a_row_with_its_sources_and_evidence() -> None:
    kb = engine.load_knowledge_base(RULES)
    text = render_catalogue(kb.compiled)
    rows = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| `")}
    assert set(rows) == set(kb.rule_ids)
    for rule_id, row in rows.items():
        model = kb.compiled.models[rule_id]
        for source in model.sources:
            assert (source.doi and f"https://doi.org/{source.doi}" in row) or (source.pmid and source.pmid in row)
        assert row.count(" | ") == 5, row  # no cell broke the table


def test_check_fails_on_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "kb.md"
    stale.write_text(DOC.read_text(encoding="utf-8").replace("guideline |", "rumour |", 1), encoding="utf-8")
    assert main(["catalogue", "--rules", str(RULES), "--check", str(stale)]) == 2
    assert "out of date" in capsys.readouterr().err
    assert main(["catalogue", "--rules", str(RULES), "--check", str(DOC)]) == 0

"""The error corpus: each broken file in tests/rule_errors and tests/case_errors states the diagnostics it
must produce (``# expect: CODE at LINE:COL``). The full set must match: nothing missing, nothing extra."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import engine
from engine.core.errors import CODES, LoadError

from .conftest import write_kb

HERE = Path(__file__).resolve().parent
RULE_ERRORS = HERE / "rule_errors"
CASE_ERRORS = HERE / "case_errors"
EXPECT = re.compile(r"^#\s*expect:\s*(E\d{3})\s+at\s+(\d+):(\d+)(\s+warning)?\s*$", re.MULTILINE)
MANIFEST = "name: t\nversion: 1.0.0\ntitle: T\nconflict_resolution: restrictive-wins\n"


def _expected(paths: list[Path], warnings: bool = False) -> set[tuple[str, str, int, int]]:
    """Expected (file, code, line, col); only warnings, or only errors."""
    out = set()
    for p in paths:
        for code, line, col, warning in EXPECT.findall(p.read_text(encoding="utf-8")):
            if bool(warning) == warnings:
                out.add((p.name, code, int(line), int(col)))
    return out


def _rule_case_ids() -> list[Path]:
    return sorted(RULE_ERRORS.iterdir())


@pytest.mark.parametrize("case", _rule_case_ids(), ids=lambda p: p.name)
def test_rule_error_corpus(case: Path, tmp_path: Path) -> None:
    kb_dir = tmp_path / "kb"
    if case.is_dir():
        shutil.copytree(case, kb_dir)
    else:
        kb_dir.mkdir()
        shutil.copy(case, kb_dir / case.name)
    if not (kb_dir / "knowledge-base.yaml").exists() and not case.name.startswith("E208-no-manifest"):
        (kb_dir / "knowledge-base.yaml").write_text(MANIFEST)
    files = [p for p in kb_dir.rglob("*") if p.is_file()]
    expected = _expected(files)
    expected_warnings = _expected(files, warnings=True)
    if case.name.startswith("E208-no-manifest"):
        expected = {("knowledge-base.yaml", "E208", 1, 1)}
    if case.name.startswith("E005"):
        expected = {("kb", "E005", 1, 1)}
    assert expected or expected_warnings, f"{case.name} states no expectation"
    diags = engine.validate_knowledge_base(kb_dir)
    got = {(Path(d.file).name, d.code, d.line, d.col) for d in diags if d.severity == "error"}
    got_warnings = {(Path(d.file).name, d.code, d.line, d.col) for d in diags if d.severity == "warning"}
    assert (got, got_warnings) == (expected, expected_warnings), "\n".join(d.format() for d in diags)
    for d in diags:
        assert d.message and d.hint, f"every diagnostic needs a message and a fix hint: {d.format()}"
    if not expected:  # warnings alone do not stop a knowledge base from loading
        engine.load_knowledge_base(kb_dir)
        return
    with pytest.raises(LoadError) as err:
        engine.load_knowledge_base(kb_dir)
    assert {(Path(d.file).name, d.code, d.line, d.col) for d in err.value.diagnostics} == expected


@pytest.mark.parametrize("case", sorted(CASE_ERRORS.glob("*.yaml")), ids=lambda p: p.name)
def test_case_error_corpus(case: Path) -> None:
    expected = _expected([case])
    assert expected
    with pytest.raises(LoadError) as err:
        engine.load_case(case)
    got = {(Path(d.file).name, d.code, d.line, d.col) for d in err.value.diagnostics}
    assert got == expected, str(err.value)
    for d in err.value.diagnostics:
        assert d.message and d.hint, d.format()


def test_every_problem_in_a_file_is_reported_not_just_the_first(tmp_path: Path) -> None:
    text = (RULE_ERRORS / "E104-unknown-analyte.yaml").read_text().replace("evidence_level: case-report",
                                                                             "evidence_level: anecdote")
    text = text.replace("reported:", "reportd:")
    write_kb(tmp_path, {"r.yaml": text})
    diags = engine.validate_knowledge_base(tmp_path)
    assert sorted(d.code for d in diags) == ["E100", "E103", "E104"], [d.format() for d in diags]
    # the misspelt key is reported once, with the key it should be, not also as "reported is missing"
    assert "'reported'" in next(d.hint for d in diags if d.code == "E100")


def test_problems_in_several_files_are_all_collected(tmp_path: Path) -> None:
    write_kb(tmp_path, {
        "a.yaml": (RULE_ERRORS / "E104-unknown-analyte.yaml").read_text(),
        "b.yaml": (RULE_ERRORS / "E106-unknown-drug.yaml").read_text().replace("id: test.rule", "id: test.other"),
    })
    assert sorted((Path(d.file).name, d.code) for d in engine.validate_knowledge_base(tmp_path)) == [
        ("a.yaml", "E104"), ("b.yaml", "E106")]


def test_unreadable_file_is_e004(tmp_path: Path) -> None:
    write_kb(tmp_path, {})
    (tmp_path / "bad.yaml").write_bytes(b"id: \xff\xfe broken\n")
    diags = engine.validate_knowledge_base(tmp_path)
    assert [(Path(d.file).name, d.code, d.line, d.col) for d in diags] == [("bad.yaml", "E004", 1, 1)]


def test_engine_limit_failure_is_e300(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.runtime.durable_backend as db

    def refuse(name: str, text: str) -> int:
        raise db._dre.error("Could not create ruleset, error code: 108")

    monkeypatch.setattr(db._dre, "create_ruleset", refuse)
    write_kb(tmp_path, {"r.yaml": (RULE_ERRORS / "E104-unknown-analyte.yaml").read_text().replace(
        "feritin", "ferritin")})
    with pytest.raises(LoadError) as err:
        engine.load_knowledge_base(tmp_path)
    assert [d.code for d in err.value.diagnostics] == ["E300"]
    assert "108" in err.value.diagnostics[0].message


def test_every_diagnostic_code_is_exercised() -> None:
    files = [p for p in RULE_ERRORS.rglob("*") if p.is_file()] + list(CASE_ERRORS.glob("*.yaml"))
    seen = {code for code, _, _, _ in EXPECT.findall("\n".join(p.read_text(encoding="utf-8") for p in files))}
    seen |= {"E004", "E005", "E208", "E300"}  # exercised by the tests above
    seen |= {"E006"}  # test_an_oversized_file_is_refused_before_it_is_read (no 8 MB file in the corpus)
    seen |= {"E301", "E401"}  # exercised in test_cli.py (case tests)
    seen |= {"E405"}  # exercised in test_cli_failures.py
    seen |= {"E500", "E501"}  # exercised in test_fhir.py
    seen |= {c for c in CODES if c.startswith("L")}  # lint findings: test_lint.py checks each is exercised
    assert set(CODES) - seen == set(), f"codes without a test: {sorted(set(CODES) - seen)}"


def test_an_oversized_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("case: {id: big, title: big}\nnotes: '" + "x" * (9 * 1024 * 1024) + "'\n")
    with pytest.raises(LoadError) as err:
        engine.load_case(big)
    assert [(d.code, d.line, d.col) for d in err.value.diagnostics] == [("E006", 1, 1)]
    kb_dir = tmp_path / "kb"
    kb_dir.mkdir()
    (kb_dir / "knowledge-base.yaml").write_text(MANIFEST)
    (kb_dir / "big.yaml").write_text(big.read_text())
    assert "E006" in {d.code for d in engine.validate_knowledge_base(kb_dir)}

"""Fuzz rule files and case files: shipped files mutated as text (YAML syntax, tags, aliases, extreme numbers,
durations and times), and YAML documents generated from scratch.

Properties, for every input: reading, validating, compiling and evaluating raise nothing but a ``MascdsError``
(problems are located diagnostics with a message and a fix hint); a rule file that loads is evaluated on a shipped
case by both backends, which must agree; each input stays within a time and memory budget. The inputs that once
crashed mascds are explicit examples.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

import engine
from engine.language.source import MAX_DEPTH, parse_yaml
from engine.records.ingest import ingest_document
from tests.conftest import CASES, RULES
from tests.fuzz.conftest import fuzz
from tests.fuzz.test_fuzz_engine import bounded

RULE_FILES = sorted(p.relative_to(RULES) for p in RULES.rglob("*.yaml") if p.name != "knowledge-base.yaml")
CASE_FILES = sorted(p.relative_to(CASES) for p in CASES.rglob("*.yaml"))
PROBE_CASE = CASES / "wu-2025-ruxolitinib.yaml"

# Text that YAML, the rule language and the case format give meaning to.
FRAGMENTS = ["!!float abc", "!!bool maybe", "!!int x", "!!str", "!!binary", "&a", "*a", "<<: *a", "? ", "- ", ": ",
             "{", "}", "[", "]", "'", '"', "\t", "\n", "#", "|", ">", "~", ".nan", ".inf", "-.inf", "1e400",
             "1" + "0" * 400, "0.0001", "1e-7", "1e16", "-0", "0x1F", "0o17", "1_000", "12:30", "day 99999999",
             "day 1" + "0" * 400, "0001-01-01", "2600-01-01", "1e400h", "0h", "99999999999999999999w", "null",
             "yes", "on", "\u00a0", "\u202e", "\ufeff", "%YAML 1.1\n---\n"]
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["a0: &a0 [" + ", ".join(["x"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """``text`` with a few edits: a fragment inserted, a span deleted or repeated, a number replaced by an
    extreme one, a line duplicated."""
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "delete", "repeat", "number", "line"]))
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(FRAGMENTS)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif kind == "repeat":
            span = text[at:at + draw(st.integers(1, 60))]
            text = text[:at] + span * draw(st.integers(2, 5)) + text[at:]
        elif kind == "number":
            found = list(NUMBER.finditer(text))
            if found:
                m = draw(st.sampled_from(found))
                extreme = draw(st.sampled_from(["0.0001", "1e-7", "1e16", "-1e16", "1" + "0" * 400, ".nan", ".inf",
                                                "99999999", "-99999999", "0", "-0.0"]))
                text = text[:m.start()] + extreme + text[m.end():]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            text = "\n".join(lines)
    return text


def _check(diags: list[engine.Diagnostic]) -> None:
    for d in diags:
        assert d.code and d.message, d
        assert d.line >= 1 and d.col >= 1, d
        assert d.hint or d.severity != "error", f"an error needs a fix hint: {d.format()}"


# --- case files ------------------------------------------------------------------------------------------------

def load_case_text(text: str, kb: engine.KnowledgeBase | None = None) -> None:
    doc, diags = parse_yaml(text, "fuzz.yaml")
    _check(diags)
    if doc is None or diags:
        return
    snap, diags = ingest_document(doc)
    _check(diags)
    if snap is None or kb is None:
        return
    for at in sorted({*snap.event_times(), *(e.at for e in snap.expectations)})[-2:]:
        results = []
        for name in ("durable", "reference"):
            data = kb.evaluate(snap, at=at, backend=name).to_json()  # type: ignore[arg-type]
            data.pop("backend")
            results.append(json.dumps(data, sort_keys=True))
        assert results[0] == results[1], "the backends differ"


@pytest.fixture(scope="module")
def kb() -> Iterator[engine.KnowledgeBase]:
    loaded = engine.load_knowledge_base(RULES)
    yield loaded
    loaded.close()


HEADER = "case: {id: x, title: x}\npatient: {sex: male, age_years: 7}\ntimeline: {start: 2024-01-01}\n"


@fuzz
@given(st.sampled_from(CASE_FILES).flatmap(lambda p: mutated((CASES / p).read_text(encoding="utf-8"))))
@example(HEADER + "observations:\n  - {analyte: ferritin, value: !!float abc, unit: ng/mL, time: day 1}\n")
@example(HEADER + "findings:\n  - {code: fever, present: !!bool maybe, time: day 1}\n")
@example(HEADER + "notes: " + _nested(MAX_DEPTH + 1) + "\n")
@example(HEADER + "notes: " + _nested(990) + "\n")  # just under libyaml's limit: RecursionError
@example(HEADER + "notes:\n" + "".join("  " + line + "\n" for line in _laughs().splitlines()))  # 2.4 GB
@example(HEADER + "notes: &loop [*loop]\n")
@example(HEADER + "observations:\n  - {analyte: ferritin, value: 0.0001, unit: ng/mL, time: day 1}\n")
@example(HEADER + "observations:\n  - {analyte: ferritin, value: .nan, unit: ng/mL, time: day 1}\n")
@example(HEADER + "observations:\n  - {analyte: ferritin, value: 1" + "0" * 400 + ", unit: ng/mL, time: day 1}\n")
@example(HEADER + "observations:\n  - {analyte: ferritin, value: 500, unit: ng/mL, time: day 99999999}\n")
@example(HEADER.replace("age_years: 7", "birth_date: 0001-01-01")
         + "observations:\n  - {analyte: ferritin, value: 500, unit: ng/mL, time: day 1}\n")
@example(HEADER + "medications:\n  - {drug: methylprednisolone, frequency: once, dose: .inf, unit: mg/kg, "
         "start: day 1}\n")
def test_mutated_case_files_load_or_fail_cleanly(kb: engine.KnowledgeBase, text: str) -> None:
    with bounded("case files"):
        load_case_text(text, kb)


# --- rule files ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kb_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("kb") / "rules"
    shutil.copytree(RULES, target)
    return target


def load_rule_text(kb_dir: Path, rel: Path, text: str) -> None:
    """Replace one rule file of a copy of the shipped knowledge base with ``text``; validate, load and, when it
    loads, evaluate a shipped case on both backends."""
    target = kb_dir / rel
    original = (RULES / rel).read_text(encoding="utf-8")
    target.write_text(text, encoding="utf-8")
    try:
        _check(engine.validate_knowledge_base(kb_dir))
        try:
            kb = engine.load_knowledge_base(kb_dir)
        except engine.LoadError as exc:
            assert exc.diagnostics
            _check(list(exc.diagnostics))
            return
        try:
            snap = engine.load_case(PROBE_CASE)
            results = []
            for name in ("durable", "reference"):
                data = kb.evaluate(snap, backend=name).to_json()  # type: ignore[arg-type]
                data.pop("backend")
                results.append(json.dumps(data, sort_keys=True))
            assert results[0] == results[1], "the backends differ"
        finally:
            kb.close()
    finally:
        target.write_text(original, encoding="utf-8")


def _ferritin_rule() -> tuple[Path, str]:
    rel = next(p for p in RULE_FILES if "gt: 684" in (RULES / p).read_text(encoding="utf-8"))
    return rel, (RULES / rel).read_text(encoding="utf-8")


FERRITIN_RULE, FERRITIN_TEXT = _ferritin_rule()


@fuzz
@given(st.sampled_from(RULE_FILES).flatmap(
    lambda p: st.tuples(st.just(p), mutated((RULES / p).read_text(encoding="utf-8")))))
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("gt: 684", "gt: 1e-7")))  # a threshold written 1e-07
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("gt: 684", "gt: 1.0e16")))  # and one written 1e+16
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("gt: 684", "gt: .nan")))
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("gt: 684", "gt: 1" + "0" * 400)))
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("gt: 684", "gt: !!float abc")))
@example((FERRITIN_RULE, FERRITIN_TEXT.replace("  en: ", "  !!float abcen: ", 1)))  # long run: E100 had no hint
@example((FERRITIN_RULE, FERRITIN_TEXT + "notes: " + _nested(990) + "\n"))
@example((FERRITIN_RULE, FERRITIN_TEXT + "notes:\n" + "".join("  " + ln + "\n" for ln in _laughs().splitlines())))
def test_mutated_rule_files_load_or_fail_cleanly(kb_copy: Path, case: tuple[Path, str]) -> None:
    rel, text = case
    with bounded("rule files"):
        load_rule_text(kb_copy, rel, text)


# --- YAML documents from scratch ---------------------------------------------------------------------------------

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(["day 3", "72h", "ferritin", "ng/mL", "sjia", "2024-01-01"]))
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.sampled_from(["case", "patient", "timeline", "observations", "medications", "analyte",
                                     "value", "unit", "time", "id", "when", "all", "any", "observation", "gt",
                                     "within", "expect", "at", "fires", "sources", "recommend"]) | st.text(max_size=8),
                    children, max_size=5)), max_leaves=30)


@fuzz
@given(documents)
@example({"case": {"id": "x", "title": "x"}, "patient": {"sex": "male", "age_years": float("nan")}})
@example({"case": {"id": "x", "title": "x"}, "patient": {"sex": "male", "age_years": 10**400}})
def test_generated_documents_are_read_as_cases_or_refused(kb: engine.KnowledgeBase, data: Any) -> None:
    with bounded("generated documents"):
        load_case_text(yaml.safe_dump(data, allow_unicode=True), kb)

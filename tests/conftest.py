"""Shared fixtures: the shipped knowledge base and the fixture knowledge bases under tests/fixtures."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import engine
from engine.language.templates import parse

if TYPE_CHECKING:
    from tests.test_service_harness import FakeEhr, Keys, Tokens

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
CASES = ROOT / "cases"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _shared() -> Path:
    """The project's reference material, read in place: $MASCDS_SHARED, else the nearest ``shared/`` beside this
    checkout or one of its parents, else beside the repository it was cloned from (a clone made elsewhere, e.g.
    in a temporary directory, still finds the material next to its origin)."""
    env = os.environ.get("MASCDS_SHARED")
    if env:
        return Path(env)
    places = [ROOT]
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    origin = origin.removeprefix("file://")
    if origin and "://" not in origin and Path(origin).is_dir():
        places.append(Path(origin).resolve())
    for place in places:
        for parent in place.parents:
            if (parent / "shared" / "README.md").is_file():
                return parent / "shared"
    return ROOT.parent / "shared"


SHARED = _shared()


def fixture_kbs() -> list[Path]:
    return sorted(p for p in FIXTURES.iterdir() if (p / "rules" / "knowledge-base.yaml").is_file())


@pytest.fixture(scope="session")
def kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(RULES)


@pytest.fixture(scope="session")
def language_kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(FIXTURES / "kb-language" / "rules")


def write_kb(directory: Path, rules: dict[str, str], policy: str = "restrictive-wins") -> Path:
    """A throw-away knowledge base: ``rules`` maps file names to YAML text."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "knowledge-base.yaml").write_text(
        f"name: tmp\nversion: 1.0.0\ntitle: Temporary\nconflict_resolution: {policy}\n", encoding="utf-8")
    for name, text in rules.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def rule_text(rule_id: str, when: str, outcome: str = "derive: {fact: x}") -> str:
    """A minimal valid rule file around a condition (YAML) and an outcome (YAML)."""
    return (f"id: {rule_id}\nversion: 1.0.0\ntitle: {rule_id}\nstatus: active\n"
            "description: A rule written by a test.\nevidence_level: case-report\n"
            "sources:\n  - doi: 10.1002/pdi3.32\n    reference: \"Yang X, et al. Pediatr Discov 2023;1(3).\"\n"
            "    reported: \"Used only by a test.\"\n"
            f"when:\n  {when}\n{outcome}\n")


def rationale_values(template: str, rendered: str) -> dict[str, str]:
    """The values a rendered rationale filled into its template's placeholders, by placeholder."""
    parts = parse(template)
    pattern = "".join(re.escape(p.literal) + ("(.+?)" if p.alias is not None else "") for p in parts)
    match = re.fullmatch(pattern, rendered, flags=re.DOTALL)
    assert match is not None, f"{rendered!r} does not follow its template {template!r}"
    names = [f"{p.alias}.{p.field}" for p in parts if p.alias is not None]
    return dict(zip(names, match.groups(), strict=True))


# --- the CDS service's counterparts (the harness is imported only by the tests that ask for them) ---------------------
@pytest.fixture(scope="module")
def keys() -> Keys:
    """The EHR's signing keys, one set per test module."""
    from tests.test_service_harness import Keys

    return Keys()


@pytest.fixture(scope="module")
def ehr(keys: Keys) -> Iterator[FakeEhr]:
    """A fake EHR (FHIR server and JWK Set) on 127.0.0.1, one per test module."""
    from tests.test_service_harness import FakeEhr

    server = FakeEhr(keys)
    yield server
    server.close()


@pytest.fixture(scope="module")
def tokens(keys: Keys) -> Tokens:
    from tests.test_service_harness import Tokens

    return Tokens(keys)

"""The JSON Schemas editors use: every field is described and has examples that fit it, every shipped rule and
case file points its editor at the right schema, and every shipped file validates against that schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from engine.authoring.schemas import KINDS, generate

from .conftest import CASES, ROOT, RULES

MODELINE = "# yaml-language-server: $schema="
SCHEMAS = {kind: generate(kind) for kind in KINDS}
# Keys whose values are data, not schemas: the walk over a schema does not descend into them.
_DATA_KEYS = ("examples", "default", "enum", "const")


class _TextTimestamps(yaml.SafeLoader):
    """``yaml.safe_load``, except that timestamps stay text as written: the engine (``engine.language.source``)
    and YAML 1.2 editors read ``start: 2024-03-01`` as a string, not a date."""


def _as_written(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_TextTimestamps.add_constructor("tag:yaml.org,2002:timestamp", _as_written)


def _load(path: Path) -> Any:
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_TextTimestamps)


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of the schema's top level and of each definition under ``$defs``, with its path."""
    places = [("", schema), *((f"$defs/{name}", d) for name, d in schema.get("$defs", {}).items())]
    for where, node in places:
        for name, prop in node.get("properties", {}).items():
            yield f"{where}.{name}", prop


def _with_examples(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every sub-schema that carries ``examples`` (properties, list items, alternatives of a union), with its path."""
    if isinstance(node, dict):
        if "examples" in node:
            yield path, node
        for key, value in node.items():
            if key not in _DATA_KEYS:
                yield from _with_examples(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _with_examples(item, f"{path}/{i}")


def _validator(schema: dict[str, Any], sub: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for one sub-schema, its ``$ref``s resolved against the whole schema's ``$defs``."""
    return jsonschema.Draft202012Validator({"$defs": schema.get("$defs", {}), **sub})


def _errors(validator: jsonschema.Draft202012Validator, instance: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message[:300]}"
            for e in validator.iter_errors(instance)]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_schema_is_a_valid_draft_2020_12_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMAS[kind])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_property_has_a_description_and_examples(kind: str) -> None:
    props = list(_properties(SCHEMAS[kind]))
    assert props
    undescribed = [path for path, prop in props
                   if not isinstance(prop.get("description"), str) or not prop["description"].strip()]
    without_examples = [path for path, prop in props
                        if not isinstance(prop.get("examples"), list) or not prop["examples"]]
    assert not undescribed, f"{kind}: properties without a description: {undescribed}"
    assert not without_examples, f"{kind}: properties without examples: {without_examples}"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_example_of_a_property_validates_against_that_property(kind: str) -> None:
    schema = SCHEMAS[kind]
    bad = []
    for path, prop in _properties(schema):
        validator = _validator(schema, prop)
        for example in prop.get("examples", []):
            bad += [f"{path} example {example!r:.80}: {err}" for err in _errors(validator, example)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_example_anywhere_validates_against_the_schema_that_carries_it(kind: str) -> None:
    schema = SCHEMAS[kind]
    bad = []
    for path, node in _with_examples(schema):
        validator = _validator(schema, node)
        for example in node["examples"]:
            bad += [f"{path} example {example!r:.80}: {err}" for err in _errors(validator, example)]
    assert not bad, "\n".join(bad)


# --- shipped files ------------------------------------------------------------------------------------------

def _shipped() -> list[tuple[str, Path]]:
    rules = [("rule", p) for p in sorted(RULES.rglob("*.yaml")) if p.name != "knowledge-base.yaml"]
    cases = [("case", p) for p in sorted(CASES.rglob("*.yaml"))]
    return [*rules, *cases, ("knowledge-base", RULES / "knowledge-base.yaml")]


SHIPPED = _shipped()
IDS = [str(path.relative_to(ROOT)) for _, path in SHIPPED]


def test_rules_and_cases_are_shipped() -> None:
    kinds = [kind for kind, _ in SHIPPED]
    assert kinds.count("rule") >= 10 and kinds.count("case") >= 10


@pytest.mark.parametrize(("kind", "path"), SHIPPED, ids=IDS)
def test_shipped_file_starts_with_a_modeline_naming_its_schema(kind: str, path: Path) -> None:
    first = next(iter(path.read_text(encoding="utf-8").splitlines()), "")
    assert first.startswith(MODELINE), f"{path.relative_to(ROOT)}: first line must be '{MODELINE}<path>'"
    target = first.removeprefix(MODELINE).strip()
    assert target and not Path(target).is_absolute() and "://" not in target, \
        f"{path.relative_to(ROOT)}: the schema path must be relative, got '{target}'"
    assert (path.parent / target).resolve() == (ROOT / "schemas" / f"{kind}.schema.json").resolve(), \
        f"{path.relative_to(ROOT)}: '{target}' does not lead to schemas/{kind}.schema.json"


@pytest.mark.parametrize(("kind", "path"), SHIPPED, ids=IDS)
def test_shipped_file_validates_against_its_schema(kind: str, path: Path) -> None:
    schema = json.loads((ROOT / "schemas" / f"{kind}.schema.json").read_text(encoding="utf-8"))
    errors = _errors(jsonschema.Draft202012Validator(schema), _load(path))
    assert not errors, f"{path.relative_to(ROOT)} does not fit schemas/{kind}.schema.json:\n" + "\n".join(errors)

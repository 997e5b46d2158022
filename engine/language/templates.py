"""Rationale templates: text that quotes matched values as ``{alias.field}``.

Templates are parsed and checked when rules load (unknown alias or field is an error), and filled in at
evaluation time from the facts the rule actually matched. ``{{`` and ``}}`` write literal braces.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

# Fields a template may quote, by condition kind.
FIELDS: dict[str, tuple[str, ...]] = {
    "observation": ("value", "unit", "time", "analyte", "previous_value", "previous_time", "count"),
    "finding": ("finding", "time", "count"),
    "medication": ("drug", "route", "time", "start", "end", "dose", "regimen", "count", "nth"),
    "order": ("drug", "time", "status", "count"),
    "reaction": ("drug", "time", "manifestations", "severity", "anaphylaxis", "count"),
    "organ_support": ("kind", "start", "end", "count"),
    "diagnosis": ("diagnosis", "onset", "count"),
    "derived": ("fact", "status", "value"),
    "patient": ("age", "sex", "weight"),
}


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Part:
    literal: str
    alias: str | None = None
    field: str | None = None


def parse(template: str) -> list[Part]:
    parts: list[Part] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{exc}; write {{{{ and }}}} for literal braces") from exc
    for literal, name, spec, conversion in parsed:
        if name is None:
            parts.append(Part(literal))
            continue
        if spec or conversion:
            raise TemplateError(f"'{{{name}}}' may not use ':' or '!' formatting")
        pieces = name.split(".")
        if len(pieces) != 2 or not all(pieces):
            raise TemplateError(f"'{{{name}}}' must be written as {{alias.field}}")
        parts.append(Part(literal, pieces[0], pieces[1]))
    return parts


def render(parts: list[Part], resolve: Callable[[str, str], str]) -> str:
    out: list[str] = []
    for part in parts:
        out.append(part.literal)
        if part.alias is not None and part.field is not None:
            out.append(resolve(part.alias, part.field))
    return "".join(out)

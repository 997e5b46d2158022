"""Read YAML into plain Python data while remembering where every value came from.

PyYAML's composer gives nodes with marks; this module builds dicts, lists and scalars from them and a
:class:`Positions` map from document paths to ``(line, col)``. It also rejects what PyYAML would
silently accept: duplicate keys (the later one would win) and non-string keys. Timestamps stay strings,
so the time parser (which knows about "day 3 08:00") sees exactly what the author wrote.

Every document is bounded before it is built (:data:`MAX_BYTES`, :data:`MAX_DEPTH`, :data:`MAX_NODES`, with
aliases counted at their expanded size), so no file can exhaust the stack or the memory: a 500-byte file of
nested aliases otherwise expands to gigabytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import Diagnostic

try:  # the C composer is several times faster; fall back where libyaml is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on the platform build
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

PathKey = tuple[str | int, ...]

# Bounds far above any real file, far below what would hurt. The largest shipped rule file is 5 KB with 183
# nodes nested 11 deep; a case file at the engine's 20,000-fact ceiling is about 1.5 MB with 200,000 nodes.
MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64  # libyaml stops at 1,000; building and validating a deep document recurses in Python
MAX_NODES = 500_000  # every node once per place it appears: an alias counts as the nodes it stands for


@dataclass
class Positions:
    """Where each path of a document starts: the key (for mappings) and the value."""

    file: str
    values: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    keys: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: PathKey) -> tuple[int, int]:
        """Position of the value at ``path``, or of its nearest existing ancestor."""
        p = tuple(path)
        while p:
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))

    def of_key(self, path: PathKey) -> tuple[int, int]:
        """Position of the key that introduces ``path`` (falls back to the value)."""
        p = tuple(path)
        if p in self.keys:
            return self.keys[p]
        return self.of_value(p)


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


@dataclass
class Document:
    data: Any
    positions: Positions
    text: str


_constructor = yaml.constructor.SafeConstructor()
_TYPED = {"tag:yaml.org,2002:int": "a whole number", "tag:yaml.org,2002:float": "a number",
          "tag:yaml.org,2002:bool": "true or false", "tag:yaml.org,2002:null": "null"}


def _scalar(node: yaml.ScalarNode, path: PathKey, pos: Positions, diags: list[Diagnostic]) -> Any:
    tag = node.tag
    if tag == "tag:yaml.org,2002:timestamp":
        return node.value  # keep as written; times are parsed by engine.core.times
    if tag in _TYPED:
        try:
            return _constructor.construct_object(node, deep=True)
        except (ValueError, KeyError, TypeError, yaml.YAMLError):  # an explicit tag on text that is not of it
            line, col = pos.values[path]
            short = tag.rsplit(":", 1)[-1]
            diags.append(Diagnostic(pos.file, line, col, "E102", f"'{node.value[:40]}' is not {_TYPED[tag]} "
                                    f"(it is tagged !!{short})", f"remove the !!{short} tag, or write "
                                    f"{_TYPED[tag]}", format_path(path)))
            return node.value
    return node.value


class _TooBig(Exception):
    def __init__(self, code: str, message: str, hint: str, mark: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint
        self.line: int = mark.line + 1 if mark is not None else 1
        self.col: int = mark.column + 1 if mark is not None else 1


def _check_bounds(text: str) -> None:
    """Walk the parser's events (no recursion, nothing built) and raise :class:`_TooBig` at the first bound
    passed. Aliases count as the nodes of what they stand for; an alias inside its own anchor (a recursive
    structure, which would never finish building) is refused too."""
    depth = nodes = 0
    sizes: dict[str, int] = {}
    open_anchors: list[tuple[str | None, int]] = []
    parser = _Loader(text)
    try:
        while parser.check_event():
            ev = parser.get_event()
            if ev is None:
                break
            if isinstance(ev, yaml.AliasEvent):
                if ev.anchor in (a for a, _ in open_anchors):
                    raise _TooBig("E008", f"alias *{ev.anchor} is inside its own anchor (a recursive structure)",
                                  "write the value out instead of referring to the structure it is in",
                                  ev.start_mark)
                nodes += sizes.get(ev.anchor or "", 1)
            elif isinstance(ev, yaml.NodeEvent):
                nodes += 1
                if isinstance(ev, yaml.CollectionStartEvent):
                    depth += 1
                    open_anchors.append((ev.anchor, nodes))
                    if depth > MAX_DEPTH:
                        raise _TooBig("E007", f"nested more than {MAX_DEPTH} levels deep",
                                      "flatten the structure; no rule or case needs this depth", ev.start_mark)
                elif ev.anchor is not None:
                    sizes[ev.anchor] = 1
            elif isinstance(ev, yaml.CollectionEndEvent):
                depth -= 1
                anchor, first = open_anchors.pop()
                if anchor is not None:
                    sizes[anchor] = nodes - first + 1
            if nodes > MAX_NODES:
                raise _TooBig("E008", f"the document expands to more than {MAX_NODES:,} values"
                              + (" (aliases repeat what they refer to)" if sizes else ""),
                              "split it into several files, or write repeated parts without aliases",
                              ev.start_mark)
    finally:
        parser.dispose()


def _build(node: yaml.Node, path: PathKey, pos: Positions, diags: list[Diagnostic]) -> Any:
    pos.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            kl, kc = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if not isinstance(key_node, yaml.ScalarNode):
                diags.append(Diagnostic(pos.file, kl, kc, "E102", "a mapping key must be a plain word",
                                        "write the key as text, e.g. `analyte:`", format_path(path)))
                continue
            key = str(key_node.value)
            if key == "<<":
                diags.append(Diagnostic(pos.file, kl, kc, "E102", "YAML merge keys (<<) are not supported",
                                        "write the keys out in full so each rule reads on its own",
                                        format_path(path)))
                continue
            child = (*path, key)
            if key in out:
                first = pos.keys[child]
                diags.append(Diagnostic(pos.file, kl, kc, "E002",
                                        f"duplicate key '{key}' (first at line {first[0]})",
                                        "remove one of them; YAML would silently keep only the last",
                                        format_path(child)))
                continue
            pos.keys[child] = (kl, kc)
            out[key] = _build(value_node, child, pos, diags)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), pos, diags) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(node, path, pos, diags)


def parse_yaml(text: str, file: str) -> tuple[Document | None, list[Diagnostic]]:
    """Parse one YAML document. Returns the document (None when unreadable) and all diagnostics."""
    diags: list[Diagnostic] = []
    pos = Positions(file)
    if len(text) > MAX_BYTES:
        return None, [Diagnostic(file, 1, 1, "E006", f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB",
                                 "split it into several files; no rule or case file comes near this size")]
    try:
        _check_bounds(text)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except _TooBig as exc:
        return None, [Diagnostic(file, exc.line, exc.col, exc.code, exc.message, exc.hint)]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "could not parse"
        context = f" {exc.context}" if exc.context else ""
        if exc.context_mark is not None and exc.problem_mark is not None and \
                exc.context_mark.line != exc.problem_mark.line:
            context += f" that starts at line {exc.context_mark.line + 1}"
        diags.append(Diagnostic(file, line, col, "E001", f"YAML syntax error: {problem}{context}",
                                "check indentation and that lists use '- ' and mappings 'key: value'"))
        return None, diags
    except yaml.YAMLError as exc:
        diags.append(Diagnostic(file, 1, 1, "E001", f"YAML syntax error: {exc}",
                                "check the file is valid YAML"))
        return None, diags
    if node is None:
        diags.append(Diagnostic(file, 1, 1, "E003", "the file is empty", "write a YAML mapping"))
        return None, diags
    data = _build(node, (), pos, diags)
    return Document(data, pos, text), diags


def read_yaml(path: Path, display: str | None = None) -> tuple[Document | None, list[Diagnostic]]:
    name = display or str(path)
    try:
        if path.stat().st_size > MAX_BYTES:  # refused before it is read into memory
            return None, [Diagnostic(name, 1, 1, "E006", f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB",
                                     "split it into several files; no rule or case file comes near this size")]
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(name, 1, 1, "E004", f"cannot read file: {exc}", "check the path and encoding")]
    return parse_yaml(text, name)

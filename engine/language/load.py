"""Load stage: a rules directory -> validated rule models, with every problem located.

A knowledge base is a directory holding ``knowledge-base.yaml`` (name, version, conflict policy) and rule
files (``*.yaml``, one rule each, in any sub-directory). All files are read and validated; problems from
every file are collected before anything is reported.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ..core.errors import Diagnostic
from .conditions import CONDITION_KEYS
from .metadata import KnowledgeBaseManifest
from .rulemodel import Rule
from .source import Document, read_yaml
from .validation import diagnostics_from

MANIFEST = "knowledge-base.yaml"


def display_path(path: Path) -> str:
    """A path as users should see it: relative to the working directory when inside it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


@dataclass(frozen=True)
class RuleFile:
    rule: Rule
    doc: Document

    @property
    def file(self) -> str:
        return self.doc.positions.file


@dataclass(frozen=True)
class LoadedRules:
    directory: Path
    manifest: KnowledgeBaseManifest
    manifest_file: str
    rules: tuple[RuleFile, ...]
    content_hash: str


def rule_paths(directory: Path) -> list[Path]:
    paths = [p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    return sorted((p for p in paths if p.name != MANIFEST), key=lambda p: p.relative_to(directory).as_posix())


def content_hash(directory: Path, files: list[Path]) -> str:
    """sha256 over the manifest and rule files (relative path and bytes), in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(directory).as_posix()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def validate_document(doc: Document, model: type[Rule] | type[KnowledgeBaseManifest]) -> \
        tuple[Rule | KnowledgeBaseManifest | None, list[Diagnostic]]:
    if not isinstance(doc.data, dict):
        line, col = doc.positions.of_value(())
        return None, [Diagnostic(doc.positions.file, line, col, "E003", "the file must be a YAML mapping",
                                 "start with 'id:' and the other rule keys")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, diagnostics_from(exc, doc, model, CONDITION_KEYS)


def read_rules(directory: Path) -> tuple[LoadedRules | None, list[Diagnostic]]:
    """Read and validate every file; returns what loaded and every diagnostic found."""
    diags: list[Diagnostic] = []
    shown = display_path(directory)
    if not directory.is_dir():
        return None, [Diagnostic(shown, 1, 1, "E004", "not a directory",
                                 "pass the folder that holds knowledge-base.yaml and the rule files")]
    manifest: KnowledgeBaseManifest | None = None
    manifest_path = directory / MANIFEST
    manifest_file = display_path(manifest_path)
    if not manifest_path.is_file():
        diags.append(Diagnostic(manifest_file, 1, 1, "E208", "the knowledge base has no knowledge-base.yaml",
                                "add one with name, version, title and conflict_resolution"))
    else:
        doc, read_diags = read_yaml(manifest_path, manifest_file)
        diags.extend(read_diags)
        if doc is not None and not read_diags:
            model, more = validate_document(doc, KnowledgeBaseManifest)
            diags.extend(more)
            manifest = model if isinstance(model, KnowledgeBaseManifest) else None
    paths = rule_paths(directory)
    if not paths:
        diags.append(Diagnostic(shown, 1, 1, "E005", "no rule files (*.yaml) found",
                                "add rule files next to knowledge-base.yaml"))
    rules: list[RuleFile] = []
    for path in paths:
        doc, read_diags = read_yaml(path, display_path(path))
        diags.extend(read_diags)
        if doc is None or read_diags:
            continue
        model, more = validate_document(doc, Rule)
        diags.extend(more)
        if isinstance(model, Rule):
            rules.append(RuleFile(model, doc))
    if manifest is None:
        return None, diags
    files = [*paths, manifest_path]
    return LoadedRules(directory, manifest, manifest_file, tuple(rules), content_hash(directory, files)), diags

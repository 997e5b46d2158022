"""Options and helpers shared by the commands."""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from ..population.bulk import is_fhir_file as is_fhir_file  # noqa: PLC0414 - re-exported for the commands

if TYPE_CHECKING:
    from ..core.snapshot import Snapshot
    from ..runtime.kb import KnowledgeBase


def add_rules(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", metavar="DIR", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
    p.add_argument("--drafts", action="store_true", help="also evaluate rules with status: draft")


def add_format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")


def add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("durable", "reference"), default="durable",
                   help="matching backend: durable_rules (default) or the plain-Python reference")


def add_lang(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", choices=("en", "zh-CN"), default="en", help="language of rule text (default en)")


def add_color(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-color", action="store_true", help="plain text without colour")


def color(args: argparse.Namespace) -> bool | None:
    if getattr(args, "no_color", False) or os.environ.get("NO_COLOR"):
        return False
    return None


def width() -> int:
    try:
        return max(80, min(os.get_terminal_size().columns, 140))
    except OSError:
        return 100


def dump_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def load_kb(args: argparse.Namespace) -> KnowledgeBase:
    from ..runtime.kb import load_knowledge_base

    return load_knowledge_base(args.rules, include_drafts=args.drafts)


def add_patient(p: argparse.ArgumentParser) -> None:
    p.add_argument("--patient", metavar="ID", help="the patient to read from a FHIR bundle that holds several")


def add_strict_fhir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strict-fhir", action="store_true",
                   help="validate every element of each FHIR resource read (fhir.resources models), not only the "
                   "elements mascds reads; slower")


def load_snapshot(path: str, patient: str | None = None, strict_fhir: bool = False) -> Snapshot:
    """A patient record from a case file (YAML) or a FHIR R4 Bundle (JSON), told apart by the content;
    ``strict_fhir`` validates a bundle with the full fhir.resources models."""
    from ..core.errors import UsageError
    from ..records.ingest import load_case

    if is_fhir_file(path):
        from ..records.fhir import load_fhir

        return load_fhir(path, patient_id=patient, strict=strict_fhir).snapshot
    if patient is not None:
        raise UsageError("--patient applies to FHIR bundles; a case file holds one patient")
    return load_case(path)

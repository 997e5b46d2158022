"""mascds evaluate: a case as of a time, with recommendations, reasons and sources."""

from __future__ import annotations

import argparse
import sys

from ..core.exits import EXIT_EVALUATION, EXIT_OK
from ._shared import (
    add_backend,
    add_color,
    add_format,
    add_lang,
    add_patient,
    add_rules,
    add_strict_fhir,
    color,
    load_kb,
    load_snapshot,
    width,
)

NAME = "evaluate"
HELP = "evaluate a patient case against the rules"
DESCRIPTION = (
    "Evaluate one case as of a time (default: its last event) and print the recommendations with their "
    "reasons and sources."
)
EXAMPLES = [
    'mascds evaluate cases/wu-2025-ruxolitinib.yaml',
    "mascds evaluate cases/yang-2023-ecmo-tocilizumab.yaml --at 'day 5 02:00' --format json",
    "mascds evaluate record.json --patient 4e8ed886  # a FHIR R4 Bundle (JSON), told apart by its content",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", help="case file (YAML) or FHIR R4 Bundle (JSON)")
    p.add_argument("--at", metavar="TIME", help="evaluation time: ISO date-time, or 'day N HH:MM' in the case's "
                   "timeline (default: the last event)")
    add_patient(p)
    add_strict_fhir(p)
    add_lang(p)
    add_rules(p)
    add_format(p)
    add_backend(p)
    add_color(p)


def run(args: argparse.Namespace) -> int:
    from ..outputs.render import render_text

    kb = load_kb(args)
    snap = load_snapshot(args.case, args.patient, args.strict_fhir)
    result = kb.evaluate(snap, args.at, backend=args.backend, lang=args.lang)
    if args.format == "json":
        print(result.to_json_text())
    else:
        sys.stdout.write(render_text(result, width=width(), color=color(args)))
    return EXIT_EVALUATION if result.errors else EXIT_OK

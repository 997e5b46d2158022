"""mascds explain: why a rule fired or did not."""

from __future__ import annotations

import argparse
import json
import sys

from ..core.exits import EXIT_OK
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

NAME = "explain"
HELP = "show why a rule fired or did not"
DESCRIPTION = "Show a rule's conditions one by one with their verdicts, the values seen and what is missing."
EXAMPLES = [
    "mascds explain cases/wu-2025-ruxolitinib.yaml wu2025.consider-ruxolitinib --at 'day 16 08:00'",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", help="case file (YAML) or FHIR R4 Bundle (JSON)")
    p.add_argument("rule_id", help="rule id")
    p.add_argument("--at", metavar="TIME", help="evaluation time (default: the last event)")
    add_patient(p)
    add_strict_fhir(p)
    add_lang(p)
    add_rules(p)
    add_format(p)
    add_backend(p)
    add_color(p)


def run(args: argparse.Namespace) -> int:
    from .. import explain
    from ..outputs.explain import check_rule_id

    kb = load_kb(args)
    check_rule_id(args.rule_id, kb.rule_ids)  # a mistyped rule id is reported before the case is read
    snap = load_snapshot(args.case, args.patient, args.strict_fhir)
    exp = explain(kb, snap, args.rule_id, args.at, backend=args.backend, lang=args.lang)
    if args.format == "json":
        print(json.dumps(exp.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(exp.render_text(width=width(), color=color(args)))
    return EXIT_OK

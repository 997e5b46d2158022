"""mascds lint: findings across a knowledge base and its cases, beyond single-file validation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.exits import EXIT_INPUT, EXIT_OK
from ._shared import add_format

NAME = "lint"
HELP = "find problems across the knowledge base and its cases"
DESCRIPTION = (
    "Validate every rule, then look across the knowledge base: duplicate ids, derived facts used but never "
    "derived or derived and never used, cycles, conditions that can never be true, opposite actions on one target "
    "without a priority, rules without a case where they fire or must not, missing translations, thresholds in "
    "another unit than the analyte's. Each finding: file:line:col, code, severity, fix hint. Exit 1 when there is "
    "an error (or, with --strict, a warning)."
)
EXAMPLES = [
    "mascds lint rules --cases cases",
    "mascds lint rules --format json",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rules_dir", nargs="?", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
    p.add_argument("--cases", action="append", metavar="PATH",
                   help="case files or folders that exercise the rules (repeatable; default: ./cases if present)")
    p.add_argument("--strict", action="store_true", help="fail on warnings too")
    add_format(p)


def run(args: argparse.Namespace) -> int:
    from ..authoring.lint import lint_knowledge_base
    from ..runtime.kb import default_rules_dir

    directory = Path(args.rules_dir) if args.rules_dir else default_rules_dir()
    cases = [Path(c) for c in args.cases] if args.cases else [p for p in (Path("cases"),) if p.is_dir()]
    report = lint_knowledge_base(directory, cases)
    if args.format == "json":
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        for d in report.findings:
            print(d.format())
        counts = [f"{report.count(s)} {s}{'s' if report.count(s) != 1 else ''}" for s in ("error", "warning", "info")]
        print(f"{report.rules_dir}: {', '.join(counts)}", file=sys.stderr)
    failed = report.count("error") > 0 or (args.strict and report.count("warning") > 0)
    return EXIT_INPUT if failed else EXIT_OK

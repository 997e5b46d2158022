"""mascds test: run the expectations in case files."""

from __future__ import annotations

import argparse
import json
import sys

from ._shared import (
    EXIT_INPUT,
    EXIT_OK,
    EXIT_TEST_FAILED,
    add_backend,
    add_color,
    add_format,
    add_rules,
    load_kb,
)

NAME = "test"
HELP = "run the expectations in case files"
DESCRIPTION = "Evaluate every expect: block in the case files and report each claim."
EXAMPLES = [
    'mascds test',
    'mascds test cases/wu-2025-ruxolitinib.yaml --verbose',
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="case files or directories (default: cases)")
    p.add_argument("--verbose", "-v", action="store_true", help="list passing checks too")
    add_rules(p)
    add_format(p)
    add_backend(p)
    add_color(p)


def run(args: argparse.Namespace) -> int:
    from ..casetest import run_cases

    kb = load_kb(args)
    report = run_cases(kb, args.paths or ["cases"], backend=args.backend)
    if args.format == "json":
        print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        for c in report.checks:
            if c.passed and not args.verbose:
                continue
            mark = "PASS" if c.passed else "FAIL"
            line = f"{mark} {c.case} @ {c.when}: {c.claim} {c.subject}"
            if not c.passed:
                line += f" — expected {c.expected}, got {c.actual} ({c.ref})"
                if c.note:
                    line += f"\n     {c.note}"
            print(line)
        for d in report.problems:
            print(d.format(), file=sys.stderr)
        n_failed = len(report.failed)
        print(f"{report.cases} cases, {len(report.checks)} checks: {len(report.checks) - n_failed} passed, "
              f"{n_failed} failed" + (f", {len(report.problems)} problems" if report.problems else ""))
    if report.failed:
        return EXIT_TEST_FAILED
    return EXIT_INPUT if report.problems else EXIT_OK

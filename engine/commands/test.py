"""mascds test: run the expectations in case files."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ..core.exits import EXIT_INPUT, EXIT_OK, EXIT_TEST_FAILED
from ._shared import add_backend, add_color, add_format, add_rules, load_kb

if TYPE_CHECKING:
    from ..authoring.coverage import CoverageReport

NAME = "test"
HELP = "run the expectations in case files"
DESCRIPTION = (
    "Evaluate every expect: block in the case files and report each claim. With --coverage, also evaluate every "
    "case at each of its event times and report, per rule and per condition, how often it fired / held, did not, "
    "or was undecided; a condition is covered when the cases saw it both true and false."
)
EXAMPLES = [
    'mascds test',
    'mascds test cases/wu-2025-ruxolitinib.yaml --verbose',
    'mascds test --coverage --min 80',
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", help="case files or directories (default: cases)")
    p.add_argument("--verbose", "-v", action="store_true", help="list passing checks too")
    p.add_argument("--coverage", action="store_true", help="report rule and condition coverage")
    p.add_argument("--min", type=float, metavar="PERCENT",
                   help="fail (exit 2) when condition coverage is below PERCENT (implies --coverage)")
    add_rules(p)
    add_format(p)
    add_backend(p)
    add_color(p)


def _coverage_text(cov: CoverageReport) -> list[str]:
    lines = [f"coverage over {cov.cases} cases, {cov.evaluations} evaluations (every event and expectation time)",
             f"{'rule':<52} {'fired':>6} {'not':>6} {'undec.':>6}  conditions covered"]
    for r in cov.rules.values():
        n = len(r.conditions)
        done = sum(c.covered for c in r.conditions.values())
        flag = "" if r.covered else "   <- never " + ("fired" if r.fired == 0 else "quiet")
        lines.append(f"{r.rule_id:<52} {r.fired:>6} {r.not_fired:>6} {r.undecided:>6}  {done}/{n}{flag}")
        for c in r.conditions.values():
            if not c.covered:
                never = "true" if c.true == 0 else "false"
                where = f"line {c.line}, " if c.line else ""
                lines.append(f"    never {never}: {c.label} ({where}{c.path})")
    conds = sum(len(r.conditions) for r in cov.rules.values())
    covered = sum(c.covered for r in cov.rules.values() for c in r.conditions.values())
    lines.append(f"rules covered: {sum(r.covered for r in cov.rules.values())}/{len(cov.rules)} "
                 f"({cov.rule_percent:.1f}%); conditions covered: {covered}/{conds} ({cov.condition_percent:.1f}%)")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..authoring.casetest import run_cases
    from ..authoring.coverage import measure_coverage

    kb = load_kb(args)
    report = run_cases(kb, args.paths or ["cases"], backend=args.backend)
    wanted = args.coverage or args.min is not None  # --min implies --coverage
    cov = measure_coverage(kb, args.paths or ["cases"], backend=args.backend) if wanted else None
    below = cov is not None and args.min is not None and cov.condition_percent < args.min
    if args.format == "json":
        data = report.to_json()
        if cov is not None:
            data["coverage"] = cov.to_json() | {"min": args.min, "below_min": below}
        print(json.dumps(data, ensure_ascii=False, indent=2))
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
        if cov is not None:
            print("\n".join(["", *_coverage_text(cov)]))
            if below:
                print(f"condition coverage {cov.condition_percent:.1f}% is below the minimum {args.min:g}%")
    if report.failed or below:
        return EXIT_TEST_FAILED
    return EXIT_INPUT if report.problems else EXIT_OK

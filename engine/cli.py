"""The ``mascds`` command: a thin layer over the library that turns errors into messages and exit codes.

Exit codes: 0 done; 1 input could not be used (rules, case, time, rule id, validation problems);
2 a case test failed; 3 evaluation failed or a rule could not be evaluated; 64 bad command line;
70 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_INPUT, EXIT_TEST_FAILED, EXIT_EVALUATION, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3, 64, 70

EPILOG = """exit codes: 0 done, 1 input problem, 2 test failed, 3 evaluation error, 64 usage error

examples:
  mascds evaluate cases/wu-2025-ruxolitinib.yaml
  mascds evaluate cases/wu-2025-ruxolitinib.yaml --at "day 16 08:00" --format json
  mascds validate rules
  mascds test cases
  mascds explain cases/wu-2025-ruxolitinib.yaml wu2025.consider-ruxolitinib --at "day 11 16:00"
  mascds schema rule --output schemas/rule.schema.json
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser, rules: bool = True, fmt: bool = True, backend: bool = True) -> None:
    if rules:
        p.add_argument("--rules", metavar="DIR", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
        p.add_argument("--drafts", action="store_true", help="also evaluate rules with status: draft")
    if fmt:
        p.add_argument("--format", choices=("text", "json"), default="text", help="output format (default text)")
    if backend:
        p.add_argument("--backend", choices=("durable", "reference"), default="durable",
                       help="matching backend: durable_rules (default) or the plain-Python reference")
    p.add_argument("--no-color", action="store_true", help="plain text without colour")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mascds", description="Cited clinical decision support for macrophage activation "
                     "syndrome in systemic JIA.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mascds {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    ev = sub.add_parser("evaluate", help="evaluate a patient case against the rules",
                        description="Evaluate one case as of a time (default: its last event) and print the "
                        "recommendations with their reasons and sources.",
                        epilog="examples:\n  mascds evaluate cases/wu-2025-ruxolitinib.yaml\n"
                        "  mascds evaluate cases/yang-2023-ecmo-tocilizumab.yaml --at 'day 5 02:00' --format json",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("case", help="case file (YAML)")
    ev.add_argument("--at", metavar="TIME", help="evaluation time: ISO date-time, or 'day N HH:MM' in the "
                    "case's timeline (default: the last event)")
    ev.add_argument("--lang", choices=("en", "zh-CN"), default="en", help="language of rule text")
    _common(ev)

    va = sub.add_parser("validate", help="check a knowledge base and list every problem",
                        description="Check every rule file and the knowledge base as a whole. Prints each "
                        "problem as file:line:col: CODE message (hint).",
                        epilog="example:\n  mascds validate rules",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    va.add_argument("rules_dir", nargs="?", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
    _common(va, rules=False, backend=False)

    te = sub.add_parser("test", help="run the expectations in case files",
                        description="Evaluate every expect: block in the case files and report each claim.",
                        epilog="examples:\n  mascds test\n  mascds test cases/wu-2025-ruxolitinib.yaml --verbose",
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    te.add_argument("paths", nargs="*", help="case files or directories (default: cases)")
    te.add_argument("--verbose", "-v", action="store_true", help="list passing checks too")
    _common(te)

    ex = sub.add_parser("explain", help="show why a rule fired or did not",
                        description="Show a rule's conditions one by one with their verdicts, the values seen "
                        "and what is missing.",
                        epilog="example:\n  mascds explain cases/wu-2025-ruxolitinib.yaml wu2025.consider-ruxolitinib "
                        "--at 'day 16 08:00'", formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("case", help="case file (YAML)")
    ex.add_argument("rule_id", help="rule id")
    ex.add_argument("--at", metavar="TIME", help="evaluation time (default: the last event)")
    ex.add_argument("--lang", choices=("en", "zh-CN"), default="en", help="language of rule text")
    _common(ex)

    sc = sub.add_parser("schema", help="write the JSON Schema of rule, case or knowledge-base files",
                        description="Write a JSON Schema generated from the models, for editors "
                        "(VS Code's YAML extension reads it through the modeline in each file).",
                        epilog="examples:\n  mascds schema rule --output schemas/rule.schema.json\n"
                        "  mascds schema case > case.schema.json", formatter_class=argparse.RawDescriptionHelpFormatter)
    sc.add_argument("kind", choices=("rule", "case", "knowledge-base"), help="which file format")
    sc.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
    return parser


def _color(args: argparse.Namespace) -> bool | None:
    if args.no_color or os.environ.get("NO_COLOR"):
        return False
    return None


def _width() -> int:
    try:
        return max(80, min(os.get_terminal_size().columns, 140))
    except OSError:
        return 100


def _print_diagnostics(diags: Sequence[Any], fmt: str = "text") -> None:
    if fmt == "json":
        print(json.dumps({"problems": [d.to_json() for d in diags]}, ensure_ascii=False, indent=2))
        return
    for d in diags:
        print(d.format(), file=sys.stderr)


def _load_kb(args: argparse.Namespace) -> Any:
    from .kb import load_knowledge_base

    return load_knowledge_base(args.rules, include_drafts=args.drafts)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .ingest import load_case
    from .render import render_text

    kb = _load_kb(args)
    snap = load_case(args.case)
    result = kb.evaluate(snap, args.at, backend=args.backend, lang=args.lang)
    if args.format == "json":
        print(result.to_json_text())
    else:
        sys.stdout.write(render_text(result, width=_width(), color=_color(args)))
    return EXIT_EVALUATION if result.errors else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    from .kb import default_rules_dir, validate_knowledge_base
    from .load import display_path

    directory = Path(args.rules_dir) if args.rules_dir else default_rules_dir()
    diags = validate_knowledge_base(directory)
    errors = [d for d in diags if d.severity == "error"]
    if args.format == "json":
        print(json.dumps({"rules_dir": display_path(directory), "ok": not errors,
                          "problems": [d.to_json() for d in diags]}, ensure_ascii=False, indent=2))
    else:
        for d in diags:
            print(d.format())
        n = len(errors)
        summary = f"{display_path(directory)}: " + ("ok" if not n else f"{n} problem{'s' if n != 1 else ''}")
        print(summary, file=sys.stderr)
    return EXIT_INPUT if errors else EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    from .casetest import run_cases

    kb = _load_kb(args)
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


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import check_rule_id, explain_result
    from .ingest import load_case
    from .rulemodel import text_in

    kb = _load_kb(args)
    check_rule_id(args.rule_id, kb.rule_ids)
    snap = load_case(args.case)
    result = kb.evaluate(snap, args.at, backend=args.backend, lang=args.lang)
    rule = kb.compiled.models[args.rule_id]
    exp = explain_result(result, args.rule_id, text_in(rule.title, args.lang), rule.version,
                         kb.compiled.files[args.rule_id].file)
    if args.format == "json":
        print(json.dumps(exp.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(exp.render_text(width=_width(), color=_color(args)))
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from .schemas import generate_text

    text = generate_text(args.kind)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_INPUT
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


COMMANDS = {"evaluate": cmd_evaluate, "validate": cmd_validate, "test": cmd_test, "explain": cmd_explain,
            "schema": cmd_schema}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .errors import EvaluationError, LoadError, MascdsError

    try:
        return COMMANDS[args.command](args)
    except LoadError as exc:
        fmt = getattr(args, "format", "text")
        if fmt == "json":
            print(json.dumps({"error": exc.what, "problems": [d.to_json() for d in exc.diagnostics]},
                             ensure_ascii=False, indent=2))
        else:
            print(f"error: {exc.what}", file=sys.stderr)
            _print_diagnostics(exc.diagnostics)
        return EXIT_INPUT
    except EvaluationError as exc:
        print(f"error: evaluation failed: {exc}", file=sys.stderr)
        return EXIT_EVALUATION
    except MascdsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # never a bare traceback for users; MASCDS_DEBUG=1 shows it
        print(f"internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("MASCDS_DEBUG"):
            traceback.print_exc()
        else:
            print("(set MASCDS_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()

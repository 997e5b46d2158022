"""mascds catalogue: the knowledge base as a Markdown table (docs/knowledge-base.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.exits import EXIT_INPUT, EXIT_OK, EXIT_TEST_FAILED
from ._shared import add_rules, load_kb

NAME = "catalogue"
HELP = "write the table of every rule (docs/knowledge-base.md)"
DESCRIPTION = (
    "Describe every active rule - what it derives or recommends, when, its sources and evidence level - as a "
    "Markdown table generated from the rules. --check compares with an existing file instead of writing it."
)
EXAMPLES = [
    "mascds catalogue --output docs/knowledge-base.md",
    "mascds catalogue --check docs/knowledge-base.md",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_rules(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")
    out.add_argument("--check", metavar="FILE", help="exit 2 if FILE differs from what the rules generate")


def run(args: argparse.Namespace) -> int:
    from ..authoring.catalogue import render_catalogue

    text = render_catalogue(load_kb(args).compiled)
    target = args.output or args.check
    if target is None:
        sys.stdout.write(text)
        return EXIT_OK
    path = Path(target)
    if args.check:
        try:
            current = path.read_text(encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot read {path}: {exc}", file=sys.stderr)
            return EXIT_INPUT
        if current != text:
            print(f"{path} is out of date: run mascds catalogue --output {path}", file=sys.stderr)
            return EXIT_TEST_FAILED
        print(f"{path} is up to date", file=sys.stderr)
        return EXIT_OK
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write {path}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK

"""mascds schema: JSON Schemas of the file formats, for editors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.exits import EXIT_INPUT, EXIT_OK

NAME = "schema"
HELP = "write the JSON Schema of rule, case or knowledge-base files"
DESCRIPTION = (
    "Write a JSON Schema generated from the models, for editors (VS Code's YAML extension reads it "
    "through the modeline in each file)."
)
EXAMPLES = [
    'mascds schema rule --output schemas/rule.schema.json',
    'mascds schema case > case.schema.json',
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=("rule", "case", "knowledge-base"), help="which file format")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of standard output")


def run(args: argparse.Namespace) -> int:
    from ..authoring.schemas import generate_text

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

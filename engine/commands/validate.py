"""mascds validate: every problem in a knowledge base, located."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.exits import EXIT_INPUT, EXIT_OK
from ._shared import add_color, add_format

NAME = "validate"
HELP = "check a knowledge base and list every problem"
DESCRIPTION = (
    "Check every rule file and the knowledge base as a whole. Prints each problem as file:line:col: CODE "
    "message (hint)."
)
EXAMPLES = [
    'mascds validate rules',
    'mascds validate rules --format json',
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rules_dir", nargs="?", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
    add_format(p)
    add_color(p)


def run(args: argparse.Namespace) -> int:
    from ..language.load import display_path
    from ..runtime.kb import default_rules_dir, validate_knowledge_base

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

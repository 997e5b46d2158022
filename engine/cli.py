"""The ``mascds`` command: a thin layer over the library that turns errors into messages and exit codes.

Exit codes: 0 done; 1 input could not be used (rules, case, time, rule id, validation problems);
2 a case test failed; 3 evaluation failed or a rule could not be evaluated; 64 bad command line;
70 internal error. Each command lives in ``engine.commands``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from .core.exits import EXIT_USAGE, guarded

# The commands, in the order `mascds --help` lists them.
COMMANDS = ("evaluate", "validate", "lint", "test", "explain", "replay", "schema", "catalogue", "convert", "serve",
            "batch")

EPILOG = """exit codes: 0 done, 1 input problem, 2 test failed, 3 evaluation error, 64 usage error

examples:
  mascds evaluate cases/wu-2025-ruxolitinib.yaml
  mascds evaluate cases/wu-2025-ruxolitinib.yaml --at "day 16 08:00" --format json
  mascds validate rules
  mascds test cases
  mascds explain cases/wu-2025-ruxolitinib.yaml wu2025.consider-ruxolitinib --at "day 11 16:00"
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def command(name: str) -> ModuleType:
    return importlib.import_module(f"engine.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="mascds", description="Cited clinical decision support for macrophage activation "
                     "syndrome in systemic JIA.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"mascds {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        mod = command(name)
        examples = "\n".join(f"  {e}" for e in mod.EXAMPLES)
        p = sub.add_parser(name, help=mod.HELP, description=mod.DESCRIPTION,
                           epilog=f"example{'s' if len(mod.EXAMPLES) > 1 else ''}:\n{examples}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return guarded(lambda: command(args.command).run(args), getattr(args, "format", "text"))


def run() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    run()

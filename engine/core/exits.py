"""Exit codes, and errors turned into a message and an exit code: shared by the command line and the
service's worker processes.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any


def guarded(run: Callable[[], int], fmt: str = "text") -> int:
    """Run a command, turning every error into a message on stderr (or JSON with ``fmt`` json) and an exit code."""
    from .errors import EvaluationError, LoadError, MascdsError

    try:
        return run()
    except LoadError as exc:
        if fmt == "json":
            print(json.dumps({"error": exc.what, "problems": [d.to_json() for d in exc.diagnostics]},
                             ensure_ascii=False, indent=2))
        else:
            print(f"error: {exc.what}", file=sys.stderr)
            print_diagnostics(exc.diagnostics)
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


EXIT_OK, EXIT_INPUT, EXIT_TEST_FAILED, EXIT_EVALUATION, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3, 64, 70


def print_diagnostics(diags: Sequence[Any]) -> None:
    for d in diags:
        print(d.format(), file=sys.stderr)

"""mascds replay: a case evaluated at every event of its timeline, with an optional chart."""

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
    load_kb,
    width,
)

NAME = "replay"
HELP = "evaluate a case at every event of its timeline; show when findings appear and disappear"
DESCRIPTION = (
    "Evaluate the case at every event of its timeline (in one incremental session; --from-scratch evaluates each "
    "time on its own, with the same results) and list, for each recommendation and assessment, when it appeared "
    "and disappeared. --plot draws laboratory trends, treatment courses and the findings over time (PNG, SVG, or "
    "a self-contained HTML page)."
)
EXAMPLES = [
    "mascds replay cases/wu-2025-ruxolitinib.yaml",
    "mascds replay cases/wu-2025-ruxolitinib.yaml --plot wu-2025.html",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", help="case file (YAML) or FHIR R4 Bundle (JSON)")
    p.add_argument("--plot", metavar="FILE", help="draw the timeline to FILE (.png, .svg or .html)")
    p.add_argument("--from-scratch", action="store_true", help="evaluate each time on its own (for comparison)")
    add_patient(p)
    add_strict_fhir(p)
    add_rules(p)
    add_format(p)
    add_backend(p)
    add_lang(p)
    add_color(p)


def run(args: argparse.Namespace) -> int:
    from ..outputs.timeline import render_replay, replay
    from ._shared import color, load_snapshot

    snap = load_snapshot(args.case, args.patient, args.strict_fhir)
    kb = load_kb(args)
    if not snap.event_times():
        from ..core.errors import UsageError

        raise UsageError("the case has no events to replay")
    rp = replay(kb, snap, backend=args.backend, lang=args.lang, incremental=not args.from_scratch)
    if args.plot:
        from ..outputs.plot import plot_replay

        print(f"wrote {plot_replay(rp, args.plot)}", file=sys.stderr)
    if args.format == "json":
        print(json.dumps(rp.to_json(), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(render_replay(rp, width=width(), color=color(args)))
    return EXIT_OK

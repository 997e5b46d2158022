"""mascds batch: many patients - folders of case files, FHIR bundles, Bulk Data exports - on Dask."""

from __future__ import annotations

import argparse
import sys

from ..core.exits import EXIT_EVALUATION, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE
from ._shared import add_backend, add_lang, add_rules, load_kb

NAME = "batch"
HELP = "evaluate many patients (case folders, FHIR bundles, Bulk Data NDJSON) on Dask"
DESCRIPTION = (
    "Evaluate every patient of the inputs - folders of case files (YAML) and FHIR R4 bundles (JSON), and FHIR "
    "Bulk Data exports (a folder of NDJSON files, read as a stream) - as of a time or at every event, on Dask "
    "worker processes on this machine or on a Dask cluster. Writes a per-patient table (results.parquet, "
    "results.ndjson) and a summary (summary.txt, summary.json, summary.png) to --out. A patient whose data are "
    "bad is a row with its errors. Exit codes: 0 done, 1 some patient had input errors, 3 some rule could not be "
    "evaluated, 64 usage, 70 internal error (for the whole run, or a patient), 130 interrupted (rerun with "
    "--resume)."
)
EXAMPLES = [
    "mascds batch cases --out results/",
    "mascds batch export/ --out results/ --at 2024-06-01T00:00:00Z --workers 2",
    "mascds batch export/ --out results/ --resume          # after Ctrl-C: skips the patients already written",
    "mascds batch /shared/export --out /shared/results --scheduler tcp://scheduler.example.org:8786",
]
EXIT_INTERRUPTED = 130


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a folder of case files and/or FHIR bundles, a file, or a Bulk Data export folder (*.ndjson)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", metavar="TIME", help="evaluation time for every patient: ISO date-time, or 'day N "
                      "HH:MM' on each patient's timeline (default: each patient's last event)")
    when.add_argument("--every-event", action="store_true",
                      help="evaluate each patient at every event of its timeline (one row per event)")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes (default: one per core)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run on a Dask cluster, e.g. tcp://host:8786 (inputs and "
                   "--out must be at the same paths on every worker)")
    p.add_argument("--partitions", type=int, metavar="N", help="tasks to spread the patients over (default: four "
                   "per worker)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    add_rules(p)
    add_backend(p)
    add_lang(p)


def run(args: argparse.Namespace) -> int:
    from ..population.batch_run import render_summary, require_extras, run_batch
    from ..population.bulk import Options

    if args.workers is not None and args.scheduler:
        print("mascds batch: error: --workers applies to local workers; a cluster at --scheduler has its own",
              file=sys.stderr)
        return EXIT_USAGE
    for name in ("workers", "partitions"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            print(f"mascds batch: error: --{name} must be 1 or more", file=sys.stderr)
            return EXIT_USAGE
    require_extras()
    kb = load_kb(args)
    outcome = run_batch(kb, args.inputs, args.out,
                        Options(at=args.at, every_event=args.every_event, backend=args.backend, lang=args.lang),
                        workers=args.workers, scheduler=args.scheduler, resume=args.resume,
                        partitions=args.partitions, progress=not args.no_progress)
    if outcome.interrupted:
        print(f"interrupted: {outcome.resumed + outcome.patients} patients written to {args.out}; continue with "
              "the same command and --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    sys.stdout.write(render_summary(outcome.summary))
    print(f"results: {args.out}/results.parquet, results.ndjson; summary.txt, summary.json, summary.png "
          f"({outcome.patients} patients now, {outcome.resumed} from before, {outcome.seconds:.1f} s)")
    return {"internal_errors": EXIT_INTERNAL, "rule_errors": EXIT_EVALUATION,
            "input_errors": EXIT_INPUT}.get(outcome.exit_status, EXIT_OK)

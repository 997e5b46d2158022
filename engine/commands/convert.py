"""mascds convert: a case file to a FHIR R4 Bundle, or a FHIR R4 Bundle to a case file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.exits import EXIT_OK
from ._shared import add_patient, is_fhir_file

NAME = "convert"
HELP = "convert a case file to a FHIR R4 Bundle, or a FHIR R4 Bundle to a case file"
DESCRIPTION = (
    "Write a case file (YAML) as a FHIR R4 collection Bundle (JSON), or read a FHIR R4 Bundle into a case file "
    "(YAML). Reading either back gives the same evaluation. What a FHIR bundle holds but mascds does not use is "
    "listed on standard error and at the top of the case file."
)
EXAMPLES = [
    "mascds convert cases/wu-2025-ruxolitinib.yaml --to fhir -o wu-2025.json",
    "mascds convert wu-2025.json --to case -o wu-2025.yaml",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="case file (YAML) or FHIR R4 Bundle (JSON)")
    p.add_argument("--to", required=True, choices=("fhir", "case"), help="output format")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    add_patient(p)


def _write(text: str, output: str | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        from ..core.errors import UsageError

        raise UsageError(f"cannot write {output}: {exc.strerror}") from None


def run(args: argparse.Namespace) -> int:
    from ..core.errors import UsageError

    is_fhir = is_fhir_file(args.input)
    if args.to == "fhir":
        from ..records.fhir_export import case_to_bundle
        from ..records.ingest import load_case

        if is_fhir:
            raise UsageError(f"{args.input} is already FHIR; convert it --to case")
        if args.patient is not None:
            raise UsageError("--patient applies to FHIR bundles; a case file holds one patient")
        bundle = case_to_bundle(load_case(args.input))
        _write(json.dumps(bundle, ensure_ascii=False, indent=2) + "\n", args.output)
        return EXIT_OK
    import yaml

    from ..records.fhir import load_fhir
    from ..records.fhir_export import snapshot_to_case
    from ..records.ingest import snapshot_from_dict

    if not is_fhir:
        raise UsageError(f"{args.input} is not a FHIR Bundle (JSON); convert a case file --to fhir")
    snap = load_fhir(args.input, patient_id=args.patient, strict=True).snapshot
    case, left_out = snapshot_to_case(snap)
    snapshot_from_dict(case, name=args.output or "<converted>")  # the case file written must load
    notes = [*(f"input error: {e}" for e in snap.input_errors), *(f"not used: {w}" for w in snap.warnings),
             *(f"left out: {n}" for n in left_out)]
    for note in notes:
        print(note, file=sys.stderr)
    header = "".join(f"# {n}\n" for n in notes)
    _write(header + yaml.safe_dump(case, sort_keys=False, allow_unicode=True, width=120), args.output)
    return EXIT_OK

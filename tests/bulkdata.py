"""Write FHIR Bulk Data exports (``$export`` output: one NDJSON file per resource type) from FHIR bundles, as a
server would: ``urn:uuid:`` references between a bundle's entries become ``Type/id`` references."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def _rewrite(value: Any, refs: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, refs) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in refs:
            out["reference"] = refs[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, refs) for v in value]
    return value


def write_export(bundles: Iterable[Path], folder: Path, files_per_type: int = 1, suffix: str = "") -> dict[str, int]:
    """Every resource of ``bundles`` appended to ``folder/<Type>.ndjson`` (or ``<Type>.<n>.ndjson`` with
    ``files_per_type`` > 1, round robin); returns the number of resources written per type. ``suffix`` is added
    to every resource id (and reference), so that the same bundles can be written again as other patients."""
    folder.mkdir(parents=True, exist_ok=True)
    handles: dict[str, Any] = {}
    counts: dict[str, int] = {}
    try:
        for path in bundles:
            bundle = json.loads(path.read_text(encoding="utf-8"))
            entries = [e for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
            refs = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}{suffix}"
                    for e in entries if e.get("fullUrl") and e["resource"].get("id")}
            if suffix:
                refs |= {v.removesuffix(suffix): v for v in refs.values()}
            for e in entries:
                resource = _rewrite(e["resource"], refs)
                if suffix and resource.get("id"):
                    resource["id"] += suffix
                rtype = resource["resourceType"]
                n = counts.get(rtype, 0)
                counts[rtype] = n + 1
                name = f"{rtype}.ndjson" if files_per_type == 1 else f"{rtype}.{n % files_per_type + 1}.ndjson"
                f = handles.get(name)
                if f is None:
                    f = handles[name] = open(folder / name, "a", encoding="utf-8")  # noqa: SIM115
                f.write(json.dumps(resource, ensure_ascii=False) + "\n")
    finally:
        for f in handles.values():
            f.close()
    return counts

"""The reviewed FHIR code tables (``engine/data/fhir-codes.yaml``): standard codes (SNOMED CT, ICD-10, LOINC,
HL7 timing codes) to mascds vocabulary ids, and back for export. Loaded once; a code not in a table maps to
nothing (the caller reports it), never to a guess."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from ..core.vocab import vocabulary

# mascds's own code systems: used when converting a case to FHIR for what has no standard code (findings, a
# diagnosis without one) and read back exactly. ``.invalid`` is a reserved domain: these URIs resolve nowhere.
MASCDS_BASE = "https://mascds.invalid/fhir"
MASCDS_SYSTEMS = {
    "diagnosis": f"{MASCDS_BASE}/CodeSystem/diagnosis",
    "manifestation": f"{MASCDS_BASE}/CodeSystem/manifestation",
    "route": f"{MASCDS_BASE}/CodeSystem/route",
    "organ-support": f"{MASCDS_BASE}/CodeSystem/organ-support",
    "finding": f"{MASCDS_BASE}/CodeSystem/finding",
    "stop-reason": f"{MASCDS_BASE}/CodeSystem/stop-reason",
    "analyte": f"{MASCDS_BASE}/CodeSystem/analyte",  # an analyte without a LOINC code in analytes.yaml (sCD25)
}


def extension_url(name: str) -> str:
    """URL of a mascds extension (timeline-start, illustrative, ...)."""
    return f"{MASCDS_BASE}/StructureDefinition/{name}"


@dataclass(frozen=True)
class CodeEntry:
    system: str  # short name: snomed, icd10, loinc
    code: str
    to: tuple[str, ...]
    display: str
    device: str | None = None


def _norm_icd(code: str) -> str:
    return code.strip().upper()


def _icd_matches(pattern: str, code: str) -> int:
    """How specifically an ICD-10 table entry matches ``code``: 3 exact, 2 code-and-subcodes, 1 category range,
    0 no match."""
    c = _norm_icd(code)
    if "-" in pattern:
        lo, hi = pattern.split("-", 1)
        return 1 if lo <= c[:3] <= hi else 0
    if pattern.endswith("*"):
        return 2 if c.startswith(pattern[:-1]) else 0
    return 3 if c == pattern else 0


class CodeTables:
    """Read-only view of fhir-codes.yaml."""

    def __init__(self) -> None:
        text = resources.files("engine").joinpath("data", "fhir-codes.yaml").read_text(encoding="utf-8")
        raw: dict[str, Any] = yaml.safe_load(text)
        self.system_uris: dict[str, tuple[str, ...]] = {k: tuple(v) for k, v in raw["systems"].items()}
        self._system_of: dict[str, str] = {uri: name for name, uris in self.system_uris.items() for uri in uris}

        def entries(key: str) -> list[CodeEntry]:
            out = []
            for e in raw.get(key, ()):
                to = e.get("to", ())
                out.append(CodeEntry(e.get("system", "loinc"), str(e["code"]), tuple([to] if isinstance(to, str)
                                                                                      else to),
                                     str(e.get("display", "")), e.get("device")))
            return out

        self.diagnoses = entries("diagnoses")
        self.manifestations = entries("manifestations")
        self.routes = entries("routes")
        self.local_routes = entries("local_routes")
        self.organ_support = entries("organ_support")
        self.stop_reasons = entries("stop_reasons")
        self.loinc = {e.code: e.to[0] for e in entries("loinc")}
        self.no_known_allergy = entries("no_known_allergy")
        self.timing_codes: dict[str, str] = {str(k).upper(): str(v) for k, v in raw["timing_codes"].items()}
        self.local_dose_forms: tuple[str, ...] = tuple(str(w).lower() for w in raw["local_dose_forms"])
        self.ambiguous_text: frozenset[str] = frozenset(str(w).lower() for w in raw["ambiguous_text"])
        self._check()

    def _check(self) -> None:
        """Every id a table maps to exists in the vocabulary: a typo here must fail at once, not map to nothing."""
        v = vocabulary()
        known = {
            "diagnoses": set(v.diagnoses), "manifestations": set(v.manifestations), "routes": set(v.routes),
            "organ_support": set(v.organ_support),
        }
        for name, table in (("diagnoses", self.diagnoses), ("manifestations", self.manifestations),
                            ("routes", self.routes), ("organ_support", self.organ_support)):
            for e in table:
                bad = [t for t in e.to if t not in known[name]]
                if bad or e.system not in self.system_uris:
                    raise ValueError(f"fhir-codes.yaml {name}: {e.system} {e.code} maps to unknown {bad or e.system}")
        for code, analyte in self.loinc.items():
            if analyte not in v.analytes:
                raise ValueError(f"fhir-codes.yaml loinc: {code} maps to unknown analyte {analyte}")
        for code, freq in self.timing_codes.items():
            if freq not in v.frequencies:
                raise ValueError(f"fhir-codes.yaml timing_codes: {code} maps to unknown frequency {freq}")

    # --- lookups ---------------------------------------------------------------------------------------
    def system_name(self, uri: str | None) -> str | None:
        """Short name (snomed, icd10, loinc, ...) of a code system URI, or None when not one mascds reads."""
        return self._system_of.get((uri or "").strip())

    def uri(self, name: str) -> str:
        return self.system_uris[name][0]

    @staticmethod
    def _lookup(table: list[CodeEntry], system: str, code: str) -> CodeEntry | None:
        best: tuple[int, CodeEntry] | None = None
        for e in table:
            if e.system != system:
                continue
            score = _icd_matches(e.code, code) if system == "icd10" else (3 if e.code == code.strip() else 0)
            if score and (best is None or score > best[0]):
                best = (score, e)
        return best[1] if best else None

    def diagnoses_for(self, system: str, code: str) -> tuple[str, ...]:
        e = self._lookup(self.diagnoses, system, code)
        return e.to if e else ()

    def manifestation_for(self, system: str, code: str) -> str | None:
        e = self._lookup(self.manifestations, system, code)
        return e.to[0] if e else None

    def stop_reason_for(self, system: str, code: str) -> str | None:
        e = self._lookup(self.stop_reasons, system, code)
        return e.to[0] if e else None

    def route_for(self, system: str, code: str) -> str | None:
        e = self._lookup(self.routes, system, code)
        return e.to[0] if e else None

    def is_local_route(self, system: str, code: str) -> bool:
        return self._lookup(self.local_routes, system, code) is not None

    def support_for(self, system: str, code: str, devices: set[str]) -> str | None:
        for e in self.organ_support:
            if e.system == system and e.code == code.strip() and (e.device is None or e.device in devices):
                return e.to[0]
        return None

    def is_no_known_allergy(self, system: str, code: str) -> bool:
        return self._lookup(self.no_known_allergy, system, code) is not None

    def analyte_for_loinc(self, code: str) -> str | None:
        """The analyte of a LOINC code: the analyte table first, then the extra codes of this table."""
        return vocabulary().analyte_for_loinc(code) or self.loinc.get(code.strip())

    # --- export: the standard code written for an id ---------------------------------------------------
    def preferred(self, table: str, term: str) -> CodeEntry | None:
        """The first entry mapping to exactly ``term`` (so reading it back gives the same id, nothing more)."""
        entries: list[CodeEntry] = getattr(self, table)
        for e in entries:
            if e.to == (term,) and "-" not in e.code:
                return e
        return None

    def export_code(self, entry: CodeEntry) -> tuple[str, str]:
        """(system URI, code) to write for a table entry; "M08.2*" is written as its category M08.2."""
        system = self.uri(entry.system)
        return system, entry.code.rstrip("*")


@functools.cache
def code_tables() -> CodeTables:
    """The code tables, loaded and checked once."""
    return CodeTables()

"""FHIR R4 input: a Bundle (or a list of resources) -> a :class:`~engine.core.snapshot.Snapshot`.

Each resource of a type mascds reads is validated once, by default with the lean structs of
:mod:`engine.records.fhir_lean` (only the elements mascds reads, checked as strictly as the models check them), or with
``strict=True`` (``--strict-fhir``) with the full ``fhir.resources`` R4B models (which read R4 data), and mapped
through the reviewed tables (``engine/data/fhir-codes.yaml`` and the vocabulary); resources of other types are
counted and ignored. Nothing relevant is dropped silently: what cannot be used is a warning
naming the resource, a wrong value is an input error (left out, the result marked incomplete), and a bundle that
is not valid FHIR is a :class:`~engine.core.errors.LoadError` naming the entry. The mapping is described in
docs/fhir.md.

    from engine.records.fhir import load_fhir
    ingest = load_fhir("patient-bundle.json")      # FhirIngest(snapshot, mapped, relevant)
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..core.errors import Diagnostic, LoadError, UsageError, choices_hint
from ..core.snapshot import Patient as SnapshotPatient
from ..core.snapshot import Snapshot
from ..runtime.regimen import regimen_warnings
from . import fhir_lean
from .casemodel import SECTION_NAMES
from .fhir_map import Mapper

# The resource types mascds reads, in the order they are mapped (the patient first: its birth date bounds times).
RELEVANT_TYPES = ("Patient", "Observation", "Condition", "MedicationAdministration", "MedicationRequest",
                  "MedicationStatement", "AllergyIntolerance", "Procedure", "AdverseEvent")


def _strict_models() -> dict[str, Any]:
    """The fhir.resources model of each type read, imported only when the strict path is used (it takes a while)."""
    from fhir.resources.R4B.adverseevent import AdverseEvent
    from fhir.resources.R4B.allergyintolerance import AllergyIntolerance
    from fhir.resources.R4B.condition import Condition
    from fhir.resources.R4B.medication import Medication
    from fhir.resources.R4B.medicationadministration import MedicationAdministration
    from fhir.resources.R4B.medicationrequest import MedicationRequest
    from fhir.resources.R4B.medicationstatement import MedicationStatement
    from fhir.resources.R4B.observation import Observation
    from fhir.resources.R4B.patient import Patient
    from fhir.resources.R4B.procedure import Procedure

    return {"Patient": Patient, "Observation": Observation, "Condition": Condition,
            "MedicationAdministration": MedicationAdministration, "MedicationRequest": MedicationRequest,
            "MedicationStatement": MedicationStatement, "AllergyIntolerance": AllergyIntolerance,
            "Procedure": Procedure, "AdverseEvent": AdverseEvent,
            # Not mapped itself, but named by medication resources (medicationReference).
            "Medication": Medication}


READABLE_BUNDLE_TYPES = ("collection", "searchset", "transaction", "batch", "document")
_REF_TAIL = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
MAX_DIAGNOSTICS_PER_RESOURCE = 5
# JSON nesting allowed in one resource. The deepest resource of the HL7 examples and the Synthea bundles nests 9
# levels; fhir.resources recurses once per level (an extension inside an extension ...) and would exhaust Python's
# stack at a few hundred, so deeper input is refused before it reaches the models.
MAX_RESOURCE_DEPTH = 64


@dataclass(frozen=True)
class FhirIngest:
    """A snapshot read from FHIR, with how much of the input it used.

    ``relevant`` counts the resources of the types mascds reads (Patient, Observation, Condition,
    MedicationAdministration, MedicationRequest, MedicationStatement, AllergyIntolerance, Procedure, AdverseEvent)
    that belong to the patient; ``mapped`` those that became at least one snapshot entry. Every relevant resource
    not mapped is named in ``snapshot.warnings`` or ``snapshot.input_errors``."""

    snapshot: Snapshot
    mapped: int
    relevant: int


@dataclass
class _Item:
    label: str  # "Bundle.entry[3]" or "resources[3]"
    full_url: str | None
    raw: dict[str, Any]
    rtype: str
    rid: str | None
    model: Any = None  # a fhir.resources model (strict) or a fhir_lean struct

    @property
    def ref(self) -> str:
        return f"{self.rtype}/{self.rid}" if self.rid else self.label

    @property
    def path(self) -> str:
        return f"{self.label} ({self.rtype}/{self.rid})" if self.rid else f"{self.label} ({self.rtype})"


def is_fhir_bundle(data: Any) -> bool:
    """Whether ``data`` (parsed JSON) is a FHIR Bundle."""
    return isinstance(data, dict) and data.get("resourceType") == "Bundle"


def _diag(source: str, path: str, message: str, hint: str, code: str = "E500", line: int = 1,
          col: int = 1) -> Diagnostic:
    return Diagnostic(source, line, col, code, message, hint, path)


def _bundle_items(bundle: Any, source: str) -> list[_Item]:
    if not isinstance(bundle, dict):
        raise LoadError(f"FHIR input {source} is not a Bundle", [_diag(
            source, "", f"expected a JSON object (a FHIR Bundle), got {type(bundle).__name__}",
            "export the patient's record as a FHIR R4 Bundle")])
    if bundle.get("resourceType") != "Bundle":
        raise LoadError(f"FHIR input {source} is not a Bundle", [_diag(
            source, "resourceType", f"resourceType is {bundle.get('resourceType')!r}, not 'Bundle'",
            "wrap the resources in a Bundle of type collection, or use engine.records.fhir.snapshot_from_resources")])
    kind = bundle.get("type")
    if kind not in READABLE_BUNDLE_TYPES:
        raise LoadError(f"FHIR input {source} is not a Bundle mascds reads", [_diag(
            source, "Bundle.type", f"Bundle.type is {kind!r}", "use a Bundle of type "
            + ", ".join(READABLE_BUNDLE_TYPES))])
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise LoadError(f"FHIR input {source} is not valid", [_diag(
            source, "Bundle.entry", "Bundle.entry is not a list", "entry must be a JSON array of entries")])
    items: list[_Item] = []
    diags: list[Diagnostic] = []
    for i, e in enumerate(entries):
        label = f"Bundle.entry[{i}]"
        if not isinstance(e, dict):
            diags.append(_diag(source, label, "an entry that is not a JSON object", "each entry is {\"resource\": …}"))
            continue
        resource = e.get("resource")
        if resource is None:
            request = e.get("request")
            if isinstance(request, dict) and request.get("method") == "DELETE":
                continue  # a transaction that deletes: there is nothing to read
            diags.append(_diag(source, label, "an entry without a resource", "give entry.resource"))
            continue
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            diags.append(_diag(source, label, "entry.resource has no resourceType", "give resource.resourceType"))
            continue
        full_url = e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None
        items.append(_Item(label, full_url, resource, resource["resourceType"], _id(resource)))
    if diags:
        raise LoadError(f"FHIR bundle {source} is not valid", diags)
    return items


def _id(resource: dict[str, Any]) -> str | None:
    rid = resource.get("id")
    return rid if isinstance(rid, str) and rid else None


def _known_type(rtype: Any, strict: bool) -> bool:
    if not isinstance(rtype, str) or not rtype.isidentifier():
        return False
    if not strict:
        return rtype in fhir_lean.RESOURCE_TYPES
    from fhir.resources.R4B import get_fhir_model_class

    try:
        get_fhir_model_class(rtype)
    except (KeyError, ValueError):
        return False
    return True


def _too_deep(node: Any, left: int, contained: list[Any]) -> bool:
    """Whether a container nests ``left`` or more levels below ``node``; collects the contained lists met."""
    if left == 0:
        return True
    for v in node.values() if isinstance(node, dict) else node:
        if isinstance(v, dict):
            c = v.get("contained")
            if isinstance(c, list):
                contained.extend(c)
            if _too_deep(v, left - 1, contained):
                return True
        elif isinstance(v, list) and _too_deep(v, left - 1, contained):
            return True
    return False


def _shape_problem(raw: dict[str, Any], strict: bool) -> tuple[str, str] | None:
    """What makes a resource unreadable before its model is built (too deep, a contained resource of no FHIR R4
    type): fhir.resources fails on those with a RecursionError or KeyError instead of a validation error."""
    try:  # the common case, in C: too few containers to be too deep, and no contained resources
        text = orjson.dumps(raw)
    except (orjson.JSONEncodeError, TypeError):
        text = None  # not JSON-encodable as it is (a huge integer, nesting orjson refuses ...): walk it
    if text is not None and text.count(b"[") + text.count(b"{") <= MAX_RESOURCE_DEPTH and b'"contained"' not in text:
        return None
    contained: list[Any] = []
    top = raw.get("contained")
    if isinstance(top, list):
        contained.extend(top)
    # The resource is level 1; a container at level MAX_RESOURCE_DEPTH + 2 is refused. Recursion is bounded by
    # the limit, and it stops at the first container too deep.
    if _too_deep(raw, MAX_RESOURCE_DEPTH + 1, contained):
        return (f"nested more than {MAX_RESOURCE_DEPTH} levels deep (extensions inside extensions?)",
                "flatten the resource; no FHIR R4 resource needs this depth")
    for c in contained:
        rtype = c.get("resourceType") if isinstance(c, dict) else None
        if not _known_type(rtype, strict):
            return (f"a contained resource of type {str(rtype)[:40]!r}, which is not a FHIR R4 resource type",
                    "give each contained resource a FHIR R4 resourceType (Medication, ...)")
    return None


_INVALID_HINT = "fix the resource so it is valid FHIR R4 (see the resource's page of the specification)"


def _validate(items: list[_Item], source: str, strict: bool) -> None:
    """Parse every resource of a type mascds reads, once; every failure is a diagnostic naming the entry."""
    from pydantic import ValidationError

    diags: list[Diagnostic] = []
    models: dict[str, Any] = _strict_models() if strict else dict(fhir_lean.MODELS)
    for item in items:
        model = models.get(item.rtype)
        if model is None:
            continue
        shape = _shape_problem(item.raw, strict)
        if shape is not None:
            diags.append(_diag(source, item.path, f"{item.path}: {shape[0]}", shape[1], "E501"))
            continue
        if not strict:
            try:
                item.model = fhir_lean.parse(item.rtype, item.raw)
            except fhir_lean.ValidationError as exc:
                what = f"{item.rtype}.{exc.where}: {exc.what}" if exc.where else exc.what
                diags.append(_diag(source, item.path, f"{item.path}: {what}", _INVALID_HINT, "E501"))
            continue
        try:
            item.model = model.model_validate(item.raw)
        except ValidationError as exc:
            for err in exc.errors()[:MAX_DIAGNOSTICS_PER_RESOURCE]:
                where = ".".join(str(p) for p in err["loc"])
                what = f"{item.rtype}.{where}: {err['msg']}" if where else err["msg"]
                diags.append(_diag(source, item.path, f"{item.path}: {what}", _INVALID_HINT, "E501"))
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            # fhir.resources raises these (not a ValidationError) for some malformed input.
            diags.append(_diag(source, item.path, f"{item.path}: not readable as FHIR R4 "
                               f"({type(exc).__name__}: {str(exc)[:120]})",
                               "fix the resource so it is valid FHIR R4", "E501"))
    if diags:
        raise LoadError(f"FHIR bundle {source} has resources that are not valid FHIR R4", diags)


@dataclass(frozen=True)
class _Duplicates:
    warnings: tuple[tuple[str, str], ...]  # (resource, why): identical copies, one kept
    errors: tuple[tuple[str, str, str], ...]  # (resource, message, hint): copies that differ, all left out
    conflicting_types: frozenset[str]


def _same_resource_key(item: _Item) -> tuple[str, str] | None:
    if item.rid:
        return (item.rtype, item.rid)
    return (item.rtype, item.full_url) if item.full_url else None


def _content(raw: dict[str, Any]) -> dict[str, Any]:
    # meta (versionId, lastUpdated, source, tags) changes between two reads of the same resource and mascds
    # reads none of it; everything else must be equal for two copies to be one resource.
    return {k: v for k, v in raw.items() if k != "meta"}


def _dedupe(items: list[_Item]) -> tuple[list[_Item], _Duplicates]:
    """Each resource once. Copies of one resource (same type and id, or same fullUrl when there is no id) that
    are identical are read once with a warning; copies that differ are all left out with an input error naming
    them, since mascds cannot tell which is current (counting both would double a course of treatment)."""
    groups: dict[tuple[str, str], list[_Item]] = {}
    for item in items:
        key = _same_resource_key(item)
        if key is not None:
            groups.setdefault(key, []).append(item)
    warnings: list[tuple[str, str]] = []
    errors: list[tuple[str, str, str]] = []
    dropped: set[int] = set()
    conflicting: set[str] = set()
    for group in groups.values():
        if len(group) < 2:
            continue
        first, rest = group[0], group[1:]
        where = ", ".join(i.label for i in group[:4]) + (f" and {len(group) - 4} more" if len(group) > 4 else "")
        if all(_content(i.raw) == _content(first.raw) for i in rest):
            warnings.append((first.ref, f"{where} hold the same resource; read once"))
            dropped.update(id(i) for i in rest)
        else:
            errors.append((first.ref, f"{where} hold different resources with the same type and id; all left out",
                           "send one version of each resource"))
            dropped.update(id(i) for i in group)
            conflicting.add(first.rtype)
    return [i for i in items if id(i) not in dropped], _Duplicates(tuple(warnings), tuple(errors),
                                                                      frozenset(conflicting))


def _ref_key(reference: str) -> str:
    r = reference.strip()
    if r.startswith(("urn:", "#")):
        return r
    m = _REF_TAIL.search(r)
    return f"{m.group(1)}/{m.group(2)}" if m else r


class _Record:
    """The items of one input, indexed for references, with the patient each belongs to."""

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self._subjects: dict[int, tuple[str | None, str | None]] = {}  # by id(item): asked three times each
        self.index: dict[str, _Item] = {}
        for item in items:
            if item.rid:
                self.index.setdefault(f"{item.rtype}/{item.rid}", item)
            if item.full_url:
                self.index.setdefault(item.full_url, item)
                self.index.setdefault(_ref_key(item.full_url), item)

    def resolve(self, holder: Any, reference: Any) -> Any:
        """The resource a reference names: contained in ``holder`` ("#id") or another entry of the input."""
        if reference is None or not reference.reference:
            return None
        r = reference.reference.strip()
        if r.startswith("#"):
            for c in getattr(holder, "contained", None) or ():
                if getattr(c, "id", None) == r[1:]:
                    return c
            return None
        item = self.index.get(r) or self.index.get(_ref_key(r))
        return item.model if item is not None else None

    def subject_key(self, item: _Item) -> tuple[str | None, str | None]:
        """(patient key, problem): the patient a resource is about; (None, None) when it names none."""
        known = self._subjects.get(id(item))
        if known is None:
            known = self._subjects[id(item)] = self._subject_key(item)
        return known

    def _subject_key(self, item: _Item) -> tuple[str | None, str | None]:
        model = item.model
        ref = getattr(model, "patient" if item.rtype == "AllergyIntolerance" else "subject", None)
        if ref is None or not ref.reference:
            return None, None
        r = ref.reference.strip()
        if r.startswith("#"):
            return f"{item.ref}{r}", None
        target = self.index.get(r) or self.index.get(_ref_key(r))
        if target is not None:
            if target.rtype != "Patient":
                return None, f"its subject is {target.ref}, not a patient"
            return target.ref, None
        key = _ref_key(r)
        if key.startswith("Patient/"):
            return key, None
        if key.startswith("urn:"):
            return None, None  # names an entry this input does not hold: the patient is not known from it
        return None, f"its subject is {r}, not a patient"


def _choose_patient(record: _Record, source: str, patient_id: str | None) -> str | None:
    candidates: dict[str, None] = {}
    for item in record.items:
        if item.rtype == "Patient":
            candidates[item.ref] = None
    for item in record.items:
        if item.rtype in RELEVANT_TYPES and item.rtype != "Patient":
            key, _ = record.subject_key(item)
            if key is not None:
                candidates[key] = None
    if patient_id is not None:
        wanted = {patient_id, f"Patient/{patient_id}", _ref_key(patient_id)}
        for item in record.items:
            if item.rtype == "Patient" and item.full_url == patient_id:
                wanted.add(item.ref)
        found = [k for k in candidates if k in wanted]
        if not found:
            raise UsageError(f"no patient '{patient_id}' in {source}; "
                             + choices_hint(patient_id, [k.removeprefix("Patient/") for k in candidates]))
        return found[0]
    if len(candidates) > 1:
        shown = ", ".join(k.removeprefix("Patient/") for k in list(candidates)[:10])
        more = f", … ({len(candidates) - 10} more)" if len(candidates) > 10 else ""
        raise UsageError(f"{source} holds {len(candidates)} patients ({shown}{more}); choose one with patient_id "
                         "(mascds: --patient ID)")
    return next(iter(candidates), None)


def _read(items: list[_Item], source: str, patient_id: str | None, not_fetched: Iterable[str],
          record_id: str | None, strict: bool) -> FhirIngest:
    unknown = list(not_fetched)
    bad = [s for s in unknown if s not in SECTION_NAMES]
    if bad:
        raise UsageError(f"not_fetched: unknown section '{bad[0]}'; " + choices_hint(bad[0], SECTION_NAMES))
    items, duplicates = _dedupe(items)
    _validate(items, source, strict)
    record = _Record(items)
    chosen = _choose_patient(record, source, patient_id)
    several = len({k for k in (record.subject_key(i)[0] for i in items) if k} |
                  {i.ref for i in items if i.rtype == "Patient"}) > 1
    mapper = Mapper(record.resolve)
    for ref, why in duplicates.warnings:
        mapper.warn(ref, why)
    for ref, message, hint in duplicates.errors:
        mapper.error(ref, message, hint)
    dispatch: dict[str, Any] = {
        "Observation": mapper.observation, "Condition": mapper.condition,
        "MedicationAdministration": mapper.medication_administration, "MedicationRequest": mapper.medication_request,
        "MedicationStatement": mapper.medication_statement, "AllergyIntolerance": mapper.allergy,
        "Procedure": mapper.procedure, "AdverseEvent": mapper.adverse_event,
    }
    relevant = mapped = 0
    patient_item = next((i for i in items if i.rtype == "Patient" and i.ref == chosen), None)
    if patient_item is not None:
        relevant += 1
        assert patient_item.model is not None and patient_item.model.get_resource_type() == "Patient"
        mapped += mapper.patient_resource(patient_item.model, patient_item.ref)
    for item in items:
        if item.rtype not in dispatch:
            continue
        key, problem = record.subject_key(item)
        if key is not None and key != chosen:
            continue  # another patient's record
        relevant += 1
        if problem is not None:
            mapper.warn(item.ref, f"{problem}; not used")
            continue
        if key is None and several:
            mapper.warn(item.ref, "names no patient, and the input holds several; not used")
            continue
        mapped += bool(dispatch[item.rtype](item.model, item.ref))
    patient = mapper.patient
    if patient is None:
        patient = SnapshotPatient(chosen or "Patient", False, None, None, None, None)
        if "Patient" not in duplicates.conflicting_types:
            mapper.warn("Patient", "no Patient resource for this record; age and sex are unknown")
    pid = chosen.removeprefix("Patient/") if chosen else None
    snapshot = Snapshot(
        id=record_id or pid or "fhir",
        title=f"FHIR record of Patient/{pid}" if pid else "FHIR record",
        patient=patient, start=mapper.start,
        diagnoses=tuple(mapper.diagnoses), observations=tuple(mapper.observations), findings=tuple(mapper.findings),
        courses=tuple(mapper.courses), orders=tuple(mapper.orders), reactions=tuple(mapper.reactions),
        supports=tuple(mapper.supports), unknown_sections=frozenset(unknown) | frozenset(mapper.not_recorded),
        source=source, warnings=tuple(mapper.warnings()), input_errors=tuple(mapper.input_errors),
    )
    labels = regimen_warnings(snapshot)  # a pulse label that the dose contradicts
    if labels:
        snapshot = dataclasses.replace(snapshot, warnings=(*snapshot.warnings, *labels))
    return FhirIngest(snapshot, mapped, relevant)


def snapshot_from_bundle(bundle: dict[str, Any], source: str = "<bundle>", *,
                         patient_id: str | None = None, strict: bool = False) -> FhirIngest:
    """Read a FHIR R4 Bundle (collection, searchset, transaction, batch or document) into a snapshot.

    A bundle with several patients needs ``patient_id`` (else :class:`UsageError`); one that is not valid FHIR
    raises :class:`LoadError` naming each entry that failed. ``strict`` validates each resource read with the full
    ``fhir.resources`` models (every element, also those mascds ignores) instead of the lean structs."""
    items = _bundle_items(bundle, source)
    return _read(items, source, patient_id, (), _id(bundle), strict)


def snapshot_from_resources(resources: Iterable[dict[str, Any]], source: str = "<fhir>",
                            patient_id: str | None = None, not_fetched: Iterable[str] = (), *,
                            strict: bool = False) -> FhirIngest:
    """Read FHIR R4 resources (parsed JSON, e.g. a CDS Hooks prefetch) into a snapshot.

    ``not_fetched`` names snapshot sections that were not fetched at all ("medications", "reactions", ...): rules
    needing them are then undecided instead of reading an empty list as "none"."""
    items: list[_Item] = []
    diags: list[Diagnostic] = []
    for i, r in enumerate(resources):
        label = f"resources[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
            diags.append(_diag(source, label, "not a FHIR resource (no resourceType)", "pass parsed FHIR JSON objects"))
            continue
        if r["resourceType"] == "Bundle":
            diags.append(_diag(source, label, "a Bundle among the resources", "use snapshot_from_bundle for Bundles"))
            continue
        items.append(_Item(label, None, r, r["resourceType"], _id(r)))
    if diags:
        raise LoadError(f"FHIR resources from {source} are not valid", diags)
    return _read(items, source, patient_id, not_fetched, None, strict)


def parse_json(text: str | bytes) -> Any:
    """JSON text -> Python values with orjson, which refuses what JSON (and so FHIR) does not have: NaN,
    Infinity, a number out of the double range, an integer beyond 64 bits, nesting deeper than 1024."""
    return orjson.loads(text)


_CONSTANT = re.compile(r"-?(?:NaN|Infinity)")


def _json_problem(exc: orjson.JSONDecodeError) -> str:
    """orjson's reason, in words for the constants Python's json would have read (NaN, Infinity)."""
    if exc.msg == "depth limit exceeded":
        return "nested too deep to read"
    start = exc.pos - 1 if exc.msg == "no digit after sign" else exc.pos
    constant = _CONSTANT.match(exc.doc, max(start, 0))
    if constant:
        return f"{constant.group()} is not a JSON number"
    return exc.msg


def load_fhir(path: str | Path, *, patient_id: str | None = None, strict: bool = False) -> FhirIngest:
    """Read a JSON file holding a FHIR R4 Bundle (collection, searchset or transaction) into a snapshot.
    ``strict``: as for :func:`snapshot_from_bundle`."""
    from ..language.load import display_path

    p = Path(path)
    shown = display_path(p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoadError(f"FHIR bundle {shown} could not be read", [Diagnostic(
            shown, 1, 1, "E004", f"cannot read the file: {exc.strerror if isinstance(exc, OSError) else exc}",
            "check the path")]) from None
    try:
        data = parse_json(text)
    except orjson.JSONDecodeError as exc:
        raise LoadError(f"FHIR bundle {shown} is not JSON", [_diag(
            shown, "", f"not valid JSON: {_json_problem(exc)}", "a FHIR bundle is a JSON file; check the file's syntax",
            line=exc.lineno, col=exc.colno)]) from None
    return snapshot_from_bundle(data, shown, patient_id=patient_id, strict=strict)


__all__ = ["RELEVANT_TYPES", "FhirIngest", "is_fhir_bundle", "load_fhir", "snapshot_from_bundle",
           "snapshot_from_resources"]

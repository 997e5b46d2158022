"""The lean FHIR read path (engine.records.fhir_lean, the default) against the strict one (fhir.resources,
--strict-fhir).

On every HL7 R4 example, every Synthea bundle, the FHIR fixtures, a corpus of bad and hostile inputs and mutated
bundles (hypothesis), both paths must give the same outcome: the same snapshot (entries, warnings, input errors)
and counts, or the same error with the same diagnostic codes, places (the entry and resource) and hints. They may
differ only in two named classes, each checked for what it is:

- ``UNREAD_ELEMENT``: the strict path refuses a resource for an element mascds does not read (a bad value in one
  the lean structs do not declare, a contained resource of a type mascds does not read); the lean path reads it.
  (An element name FHIR does not define is refused by both, wherever it is in what mascds reads.) The strict
  diagnostic's FHIR path must lead to such an element.
- ``STRICT_COERCES_JSON_TYPE``: the lean path refuses a JSON value of the wrong type that the models convert
  (the string "true" for a boolean, "12" for a decimal, 1.0 for an integer, a number for a dateTime, which the
  models read as seconds since 1970); the strict path reads it. The lean diagnostic must name the JSON type.
"""

from __future__ import annotations

import copy
import json
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import event, example, given

from engine.core.errors import LoadError, MascdsError
from engine.records import fhir_lean
from engine.records.fhir import load_fhir, snapshot_from_bundle, snapshot_from_resources

from .conftest import FIXTURES, SHARED
from .fuzz.conftest import fuzz
from .fuzz.test_fuzz_fhir import RECIPES, WU, _seed, mutate
from .test_fhir import LOINC, RXNORM, SCT, UCUM, bundle, cc, obs, qty

FHIR_DATA = SHARED / "data" / "fhir"
HL7 = sorted((FHIR_DATA / "hl7-r4-examples").glob("*.json"))
SYNTHEA = sorted((FHIR_DATA / "synthea-r4").glob("*.json"))
FIXTURE_BUNDLES = sorted((FIXTURES / "fhir").glob("*.json"))

UNREAD_ELEMENT = "the strict path refuses an element mascds does not read"
STRICT_COERCES_JSON_TYPE = "the lean path refuses a JSON type the models convert"


def outcome(read: Callable[[bool], Any], strict: bool) -> tuple[Any, ...]:
    """('ok', ingest) or ('error', kind, [(code, place, hint, message)], text) of one read."""
    try:
        return ("ok", read(strict))
    except LoadError as exc:
        return ("error", "LoadError", [(d.code, d.path, d.hint, d.message) for d in exc.diagnostics], exc.what)
    except MascdsError as exc:
        return ("error", type(exc).__name__, [], str(exc))


def _field_type(struct: Any, name: str) -> Any:
    hints = typing.get_type_hints(struct, include_extras=True)
    return hints.get(name)


def _structs(tp: Any) -> list[Any]:
    """The struct types a field annotation can hold (through Optional, list and Annotated)."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return [tp]
    return [s for arg in typing.get_args(tp) for s in _structs(arg)]


def reads_element(rtype: str, loc: tuple[Any, ...], raw: dict[str, Any]) -> bool:
    """Whether the location of a model's validation error (("code", "coding", 0, "code")) leads to an element
    the lean structs read (declare): then the lean path checks it too."""
    parts = [str(p) for p in loc]
    if not parts:
        return True  # a resource-level check (a choice element given twice ...): the lean path has them too
    struct: Any = fhir_lean.MODELS[rtype]
    node: Any = raw
    for i, part in enumerate(parts):
        if part.isdigit() and isinstance(node, list):
            node = node[int(part)] if isinstance(node, list) and int(part) < len(node) else None
            continue
        name = f"{part[1:]}__ext" if part.startswith("_") else part
        if name == "resource_type":
            return True
        if name not in struct.__struct_fields__:
            return False
        node = node.get(part) if isinstance(node, dict) else None
        if name == "contained":
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                k = int(parts[i + 1])
                item = node[k] if isinstance(node, list) and k < len(node) else None
                if not (isinstance(item, dict) and item.get("resourceType") == "Medication"):
                    return i + 2 < len(parts) and parts[i + 2] in ("id", "resourceType")
                return reads_element("Medication", tuple(parts[i + 2:]), item)
            return True
        inner = _structs(_field_type(struct, name))
        if not inner:
            return True  # a primitive the structs read
        struct = inner[0]
    return True




def _model_errors(raw: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The locations of the errors the fhir.resources model reports on a resource (the first five, as
    engine.records.fhir reports them); [] when it takes the resource."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        get_fhir_model_class(raw["resourceType"]).model_validate(raw)
    except ValidationError as exc:
        return [tuple(e["loc"]) for e in exc.errors()[:5]]
    return []
_LEAN_TYPE = re.compile(r"Expected `[^`]+`, got `(str|int|float|bool)`")


def _entry_raw(data: Any, place: str) -> dict[str, Any] | None:
    m = re.match(r"(Bundle\.entry|resources)\[(\d+)\]", place)
    if m is None:
        return None
    items = data.get("entry", []) if isinstance(data, dict) else data
    item = items[int(m.group(2))]
    resource = item.get("resource") if m.group(1) == "Bundle.entry" else item
    return resource if isinstance(resource, dict) else None


def differ_legitimately(lean: tuple[Any, ...], strict: tuple[Any, ...], data: Any) -> set[str]:
    """The classes of difference between two outcomes; an AssertionError when a difference is in neither."""
    if lean[0] == "ok" and strict[0] == "ok":
        assert lean[1] == strict[1], "the paths read different snapshots"
        return set()
    if lean[0] == strict[0] == "error" and "LoadError" not in (lean[1], strict[1]):
        assert lean[1:] == strict[1:], "the paths refused the input differently"
        return set()
    # A LoadError's diagnostics, each justified below; what the other path says after validating (a snapshot, or
    # that the bundle holds several patients) follows from reading what one path refused.
    lean_diags = lean[2] if lean[0] == "error" else []
    strict_diags = strict[2] if strict[0] == "error" else []
    assert all(d[0] == "E501" for d in lean_diags + strict_diags if (d[0], d[1]) not in
               {(s[0], s[1]) for s in lean_diags} & {(s[0], s[1]) for s in strict_diags}), \
        (lean, strict)  # only resource validation may differ; bundle-level errors are the same code
    lean_places = {(d[0], d[1], d[2]) for d in lean_diags}
    strict_places = {(d[0], d[1], d[2]) for d in strict_diags}
    classes: set[str] = set()
    for code, place, _hint, message in strict_diags:
        if (code, place, _hint) in lean_places:
            continue
        raw = _entry_raw(data, place)
        assert raw is not None, f"strict only: {message}"
        locs = _model_errors(raw)
        assert locs, f"strict only, and the model takes the resource: {message}"
        for loc in locs:
            assert not reads_element(raw["resourceType"], loc, raw), \
                f"strict only, on an element mascds reads ({loc}): {message}"
        classes.add(UNREAD_ELEMENT)
    for code, place, _hint, message in lean_diags:
        if (code, place, _hint) in strict_places:
            continue
        assert _LEAN_TYPE.search(message), f"lean only, and not a JSON type the models convert: {message}"
        classes.add(STRICT_COERCES_JSON_TYPE)
    assert classes or (lean[1], lean_places) == (strict[1], strict_places), "the paths refused the input differently"
    return classes


def compare(read: Callable[[bool], Any], data: Any) -> set[str]:
    return differ_legitimately(outcome(read, False), outcome(read, True), data)


# --- the shared FHIR data and the fixtures ------------------------------------------------------------------
@pytest.mark.parametrize("path", HL7 + SYNTHEA + FIXTURE_BUNDLES, ids=lambda p: p.name)
def test_both_paths_read_the_shared_data_and_fixtures_alike(path: Path) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("resourceType") == "Bundle":
        assert compare(lambda strict: load_fhir(path, strict=strict), data) == set()
    else:
        assert compare(lambda strict: snapshot_from_resources([data], "hl7", strict=strict), [data]) == set()


def test_the_shared_data_is_there() -> None:
    assert len(HL7) > 100 and len(SYNTHEA) == 93 and FIXTURE_BUNDLES


# --- bad and hostile inputs: each refused (or read) alike, with the same codes, places and hints --------------
def _deep(depth: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"url": "http://example.org/e", "valueString": "x"}
    for _ in range(depth):
        ext = {"url": "http://example.org/e", "extension": [ext]}
    return ext


FERRITIN = "2276-4"
GOOD = obs("q", FERRITIN, 2000, "ng/mL")
MED = {"resourceType": "MedicationAdministration", "id": "m", "status": "completed",
       "medicationCodeableConcept": cc(RXNORM, "612865"), "effectiveDateTime": "2024-04-03T08:00:00Z",
       "dosage": {"dose": qty(8, "mg/kg")}}
SAME = [  # (name, resources): both paths must agree exactly
    # element names FHIR does not define: refused by both paths, at the resource and inside what mascds reads
    ("an element FHIR does not have", [GOOD | {"colour": "red"}]),
    ("an STU3 dose directly in dosageInstruction", [{
        "resourceType": "MedicationRequest", "id": "r", "status": "active", "intent": "order",
        "medicationCodeableConcept": cc(RXNORM, "612865"), "authoredOn": "2024-04-03",
        "dosageInstruction": [{"doseQuantity": {"value": 8, "unit": "mg/kg"}}]}]),
    ("a misspelt element inside a quantity", [GOOD | {"valueQuantity": {"value": 12, "code": "ng/mL",
                                                                         "system": UCUM, "unitt": "ng/mL"}}]),
    ("a misspelt element inside a coding", [GOOD | {"code": {"coding": [{"system": "http://loinc.org",
                                                                          "code": "2276-4", "displya": "x"}]}}]),
    ("status not a string", [GOOD | {"status": 1}]),
    ("status empty", [GOOD | {"status": ""}]),
    ("status missing", [{k: v for k, v in GOOD.items() if k != "status"}]),
    ("code with two spaces", [GOOD | {"code": {"coding": [{"system": LOINC, "code": "2276  4"}]}}]),
    ("display empty", [GOOD | {"code": {"coding": [{"system": LOINC, "code": FERRITIN, "display": ""}]}}]),
    ("coding not a list", [GOOD | {"code": {"coding": {"system": LOINC, "code": FERRITIN}}}]),
    ("date out of calendar", [GOOD | {"effectiveDateTime": "2024-02-30"}]),
    ("month 13", [GOOD | {"effectiveDateTime": "2024-13-01"}]),
    ("time without zone", [GOOD | {"effectiveDateTime": "2024-04-03T08:00:00"}]),
    ("time without seconds", [GOOD | {"effectiveDateTime": "2024-04-03T08:00Z"}]),
    ("partial dates", [GOOD | {"effectiveDateTime": "2024-04"}, obs("r", FERRITIN, 1, "ng/mL", "2024")]),
    ("instant that is a date", [GOOD | {"issued": "2024-04-03"}]),
    ("two effective values", [GOOD | {"effectivePeriod": {"start": "2024-04-03T08:00:00Z"}}]),
    ("value not a number", [GOOD | {"valueQuantity": {"value": "x", "code": "ng/mL", "system": UCUM}}]),
    ("value a boolean", [GOOD | {"valueQuantity": {"value": True, "code": "ng/mL", "system": UCUM}}]),
    ("value NaN", [GOOD | {"valueQuantity": {"value": float("nan"), "code": "ng/mL", "system": UCUM}}]),
    ("value infinite", [GOOD | {"valueQuantity": {"value": float("inf"), "code": "ng/mL", "system": UCUM}}]),
    ("value beyond a double", [GOOD | {"valueQuantity": {"value": 10**400, "code": "ng/mL", "system": UCUM}}]),
    ("unit a number", [GOOD | {"valueQuantity": {"value": 1, "unit": 5}}]),
    ("comparator", [GOOD | {"valueQuantity": {"value": 1, "comparator": ">", "code": "ng/mL", "system": UCUM}}]),
    ("reference a number", [GOOD | {"subject": {"reference": 1}}]),
    ("reference empty", [GOOD | {"subject": {"reference": ""}}]),
    ("reference to a group", [GOOD | {"subject": {"reference": "Group/1"}}]),
    ("reference to nowhere", [GOOD | {"subject": {"reference": "urn:uuid:nowhere"}}]),
    ("id with a space", [GOOD | {"id": "a b"}]),
    ("extension without url", [GOOD | {"extension": [{"valueBoolean": True}]}]),
    ("nested 200 deep", [GOOD | {"extension": [_deep(200)]}]),
    ("nested 60 deep", [GOOD | {"extension": [_deep(60)]}]),
    ("contained of no type", [GOOD | {"contained": [{"id": "x"}]}]),
    ("contained of an unknown type", [GOOD | {"contained": [{"resourceType": "NoSuchType"}]}]),
    ("contained medication", [{k: v for k, v in MED.items() if k != "medicationCodeableConcept"}
                              | {"contained": [{"resourceType": "Medication", "id": "t",
                                                "code": {"text": "tocilizumab"}}],
                                 "medicationReference": {"reference": "#t"}}]),
    ("contained medication with a bad code", [{k: v for k, v in MED.items() if k != "medicationCodeableConcept"}
                                              | {"contained": [{"resourceType": "Medication", "id": "t",
                                                                "code": {"text": ""}}],
                                                 "medicationReference": {"reference": "#t"}}]),
    ("medication missing", [{k: v for k, v in MED.items() if k != "medicationCodeableConcept"}]),
    ("medication twice", [MED | {"medicationReference": {"reference": "Medication/x"}}]),
    ("administration without time", [{k: v for k, v in MED.items() if k != "effectiveDateTime"}]),
    ("dose negative", [MED | {"dosage": {"dose": qty(-1, "mg/kg")}}]),
    ("count zero", [{"resourceType": "MedicationRequest", "id": "r", "status": "active", "intent": "order",
                     "medicationCodeableConcept": cc(RXNORM, "612865"), "authoredOn": "2024-04-03",
                     "dosageInstruction": [{"timing": {"repeat": {"count": 0}}}]}]),
    ("condition without subject", [{"resourceType": "Condition", "id": "c", "code": cc(SCT, "201796004"),
                                    "subject": None}]),
    ("allergy reaction without manifestation", [{"resourceType": "AllergyIntolerance", "id": "a",
                                                 "code": cc(RXNORM, "612865"), "reaction": [{"severity": "severe"}]}]),
    ("procedure status a list", [{"resourceType": "Procedure", "id": "x", "status": ["completed"]}]),
    ("adverse event without actuality", [{"resourceType": "AdverseEvent", "id": "e"}]),
    ("adverse event with a null suspect", [{"resourceType": "AdverseEvent", "id": "e", "actuality": "actual",
                                            "suspectEntity": [{"instance": None}], "date": "2024-04-03"}]),
    ("gender a number", [], {"resourceType": "Patient", "id": "p", "gender": 2}),
    ("birth date with a time", [], {"resourceType": "Patient", "id": "p", "birthDate": "2014-03-01T00:00:00Z"}),
    ("birth time extension", [], {"resourceType": "Patient", "id": "p", "birthDate": "2014-03-01", "_birthDate": {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                       "valueDateTime": "2014-03-01T06:30:00+01:00"}]}}),
    ("birth time malformed", [], {"resourceType": "Patient", "id": "p", "birthDate": "2014-03-01", "_birthDate": {
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                       "valueDateTime": "2014-03-01T06:30"}]}}),
]


@pytest.mark.parametrize("case", SAME, ids=[c[0] for c in SAME])
def test_bad_and_hostile_inputs_are_read_or_refused_alike(case: tuple[Any, ...]) -> None:
    data = bundle(*case[1], patient=case[2] if len(case) > 2 else None)
    lean = outcome(lambda strict: snapshot_from_bundle(copy.deepcopy(data), "t", strict=strict), False)
    strict = outcome(lambda strict: snapshot_from_bundle(copy.deepcopy(data), "t", strict=strict), True)
    assert lean[0] == strict[0] and lean[1] == strict[1]
    if lean[0] == "ok":
        assert lean[1] == strict[1]
    else:
        assert [d[:3] for d in lean[2]] == sorted({d[:3] for d in strict[2]}, key=[d[:3] for d in strict[2]].index)


DIFFER = [  # (name, resources, the class): the paths differ, and only in the class named
    ("a bad value in an element mascds does not read", [GOOD | {"language": 5}], UNREAD_ELEMENT),
    ("a number for a note", [GOOD | {"note": [{"text": 5}]}], UNREAD_ELEMENT),
    ("a contained patient with a bad gender", [GOOD | {"contained": [{"resourceType": "Patient", "id": "x",
                                                                      "gender": 3}]}], UNREAD_ELEMENT),
    ("a boolean written as a string", [GOOD | {"valueQuantity": None, "valueBoolean": "true"}],
     STRICT_COERCES_JSON_TYPE),
    ("a decimal written as a string", [GOOD | {"valueQuantity": {"value": "12", "code": "ng/mL", "system": UCUM}}],
     STRICT_COERCES_JSON_TYPE),
    ("a dateTime written as a number", [GOOD | {"effectiveDateTime": 1712131200}], STRICT_COERCES_JSON_TYPE),
    ("an integer written as a decimal", [{"resourceType": "MedicationRequest", "id": "r", "status": "active",
                                          "intent": "order", "medicationCodeableConcept": cc(RXNORM, "612865"),
                                          "authoredOn": "2024-04-03",
                                          "dosageInstruction": [{"timing": {"repeat": {"count": 2.0}}}]}],
     STRICT_COERCES_JSON_TYPE),
]


@pytest.mark.parametrize("case", DIFFER, ids=[c[0] for c in DIFFER])
def test_the_paths_differ_only_in_the_named_classes(case: tuple[str, list[dict[str, Any]], str]) -> None:
    _name, resources, expected = case
    data = bundle(*resources)
    assert compare(lambda strict: snapshot_from_bundle(copy.deepcopy(data), "t", strict=strict), data) == {expected}


def test_a_number_for_a_date_is_refused_by_the_lean_path_and_misread_by_the_strict_one() -> None:
    """Why the lean path does not follow the models here: they read 20240403 as seconds since 1970."""
    data = bundle(GOOD | {"effectiveDateTime": 20240403}, patient={"resourceType": "Patient", "id": "p"})
    with pytest.raises(LoadError) as info:
        snapshot_from_bundle(copy.deepcopy(data), "t")
    assert info.value.diagnostics[0].code == "E501" and "effectiveDateTime" in info.value.diagnostics[0].message
    misread = snapshot_from_bundle(copy.deepcopy(data), "t", strict=True).snapshot
    assert [o.time for o in misread.observations] == [20240403]


# --- the same, on mutated bundles ---------------------------------------------------------------------------
@example((WU, [("set", 1, 3, "2024")]))
@example((WU, [("qty", 0, "keep", "keep", "keep", "12")]))
@example((WU, [("contained", 2, {"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]})]))
@fuzz
@given(RECIPES)
def test_mutated_bundles_are_read_alike_by_both_paths(recipe: tuple[str, list[tuple[Any, ...]]]) -> None:
    seed, ops = recipe
    data = mutate(json.loads(_seed(seed)), ops)
    classes = compare(lambda strict: snapshot_from_bundle(copy.deepcopy(data), "fuzz", strict=strict), data)
    event(", ".join(sorted(classes)) or "the same")


# --- choosing the strict path: --strict-fhir on the commands that read FHIR, strict_fhir in the service -------
def test_strict_fhir_on_the_command_line_refuses_what_only_the_models_check(tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    from .conftest import RULES

    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle(GOOD | {"language": 5})), encoding="utf-8")  # a value mascds does not read
    for command in (["evaluate", str(path)], ["explain", str(path), "wu2025.consider-ruxolitinib"],
                    ["replay", str(path)]):
        assert main([*command, "--rules", str(RULES)]) == 0, command
        capsys.readouterr()
        assert main([*command, "--rules", str(RULES), "--strict-fhir"]) == 1, command
        err = capsys.readouterr().err
        assert "E501" in err and "Bundle.entry[1] (Observation/q)" in err and "language" in err, err


def test_the_service_reads_with_the_lean_path_unless_configured_strict() -> None:
    from engine.service.config import Settings

    assert Settings().strict_fhir is False
    assert Settings(strict_fhir=True).strict_fhir is True
    # the one place the setting reaches the reader, in the service process and the evaluation child alike
    from engine.service.app import fhir_reader_options

    assert fhir_reader_options(Settings()) == {"strict": False}
    assert fhir_reader_options(Settings(strict_fhir=True)) == {"strict": True}


def test_the_table_of_element_names_is_the_installed_models() -> None:
    """engine.records.fhir_elements is generated from fhir.resources: regenerate it (python -m
    engine.records.fhir_elements) when the models change, so that both paths keep refusing the same names."""
    from engine.records.fhir_elements import ELEMENTS, generate

    assert {k: frozenset(v) for k, v in generate().items()} == ELEMENTS


def test_every_struct_is_checked_against_a_fhir_structure() -> None:
    structs = {c for c in vars(fhir_lean).values()
               if isinstance(c, type) and issubclass(c, msgspec.Struct) and not c.__name__.startswith("_")}
    assert structs - {fhir_lean.Other, msgspec.Struct} == set(fhir_lean._FHIR_NAME)

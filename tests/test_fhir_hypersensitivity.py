"""FHIR in and out for reactions recorded by their manifestations: SNOMED CT manifestations and the reaction's
onset (AllergyIntolerance.reaction.onset) feed the anaphylaxis criteria, a blood pressure panel gives the systolic
value (LOINC 8480-6 component), and a time that is only a recording date is not taken as the onset."""

from __future__ import annotations

from typing import Any

import engine
from engine.runtime.anaphylaxis import assess

SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"


def _resources(reaction_time: dict[str, Any], systolic: float | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "p", "gender": "male", "birthDate": "2018-03-01"},
        {"resourceType": "MedicationAdministration", "id": "dose", "status": "completed",
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "72435", "display": "anakinra"}]},
         "subject": {"reference": "Patient/p"}, "effectiveDateTime": "2024-05-04T08:00:00Z"},
        {"resourceType": "AllergyIntolerance", "id": "rx", "patient": {"reference": "Patient/p"},
         "category": ["medication"], "code": {"coding": [{"system": RXNORM, "code": "72435"}]},
         **reaction_time.get("resource", {}),
         "reaction": [{"manifestation": [{"coding": [{"system": SCT, "code": "64305001", "display": "Urticaria"}]},
                                         {"coding": [{"system": SCT, "code": "70407001", "display": "Stridor"}]}],
                       **reaction_time.get("reaction", {})}]},
    ]
    if systolic is not None:
        out.append({
            "resourceType": "Observation", "id": "bp", "status": "final", "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": LOINC, "code": "85354-9", "display": "Blood pressure panel"}]},
            "effectiveDateTime": "2024-05-04T08:40:00Z",
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "8480-6", "display": "Systolic blood pressure"}]},
                 "valueQuantity": {"value": systolic, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                   "code": "mm[Hg]"}},
                {"code": {"coding": [{"system": LOINC, "code": "8462-4", "display": "Diastolic blood pressure"}]},
                 "valueQuantity": {"value": 40, "unit": "mmHg", "system": "http://unitsofmeasure.org",
                                   "code": "mm[Hg]"}}]})
    return out


def test_manifestations_and_onset_from_fhir_decide_anaphylaxis() -> None:
    ingest = engine.snapshot_from_resources(_resources({"reaction": {"onset": "2024-05-04T08:25:00Z"}}, 74))
    snap = ingest.snapshot
    (r,) = snap.reactions
    assert r.manifestations == ("urticaria", "stridor") and r.time_is_onset
    assert [o.value for o in snap.observations if o.analyte == "systolic-bp"] == [74.0]
    found = assess(snap, 0, r.time + 3600)
    assert found.verdict == "true", found.basis


def test_a_recording_date_is_not_an_onset_and_round_trips_as_one() -> None:
    ingest = engine.snapshot_from_resources(_resources({"resource": {"recordedDate": "2024-05-04T12:00:00Z"}},
                                                       None))
    snap = ingest.snapshot
    (r,) = snap.reactions
    assert not r.time_is_onset
    found = assess(snap, 0, r.time + 3600)
    assert found.verdict == "unknown" and "onset of the reaction" in {m.what for m in found.missing}
    bundle = engine.case_to_bundle(snap)
    allergy = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "AllergyIntolerance")
    assert allergy["recordedDate"] == "2024-05-04T12:00:00Z" and "onset" not in allergy["reaction"][0]
    back = engine.snapshot_from_bundle(bundle).snapshot
    assert [x.time_is_onset for x in back.reactions] == [False]

"""The JSON element names FHIR allows in each structure the lean reader decodes (generated, do not edit).

The lean structs of :mod:`engine.records.fhir_lean` declare only the elements mascds reads; without this table a
misplaced or misspelt element inside them (an STU3 ``Dosage.doseQuantity`` instead of R4's
``Dosage.doseAndRate.doseQuantity``) would be dropped in silence, and with it the dose. The names are taken from
the fhir.resources R4B models, the strict path's own definitions, so both paths refuse the same names in what
mascds reads. Regenerate with ``python -m engine.records.fhir_elements`` after upgrading fhir.resources;
tests/test_fhir_lean.py checks the table against the installed models.
"""

from __future__ import annotations

# structure -> (fhir.resources module, class) it is read as
SOURCES: dict[str, tuple[str, str]] = {
    "AdverseEvent": ("adverseevent", "AdverseEvent"),
    "AdverseEventSuspectEntity": ("adverseevent", "AdverseEventSuspectEntity"),
    "AllergyIntolerance": ("allergyintolerance", "AllergyIntolerance"),
    "AllergyIntoleranceReaction": ("allergyintolerance", "AllergyIntoleranceReaction"),
    "CodeableConcept": ("codeableconcept", "CodeableConcept"),
    "Coding": ("coding", "Coding"),
    "Condition": ("condition", "Condition"),
    "Dosage": ("dosage", "Dosage"),
    "DosageDoseAndRate": ("dosage", "DosageDoseAndRate"),
    "Element": ("fhirprimitiveextension", "FHIRPrimitiveExtension"),  # the "_birthDate" holder of a primitive
    "Extension": ("extension", "Extension"),
    "Medication": ("medication", "Medication"),
    "MedicationAdministration": ("medicationadministration", "MedicationAdministration"),
    "MedicationAdministrationDosage": ("medicationadministration", "MedicationAdministrationDosage"),
    "MedicationIngredient": ("medication", "MedicationIngredient"),
    "MedicationRequest": ("medicationrequest", "MedicationRequest"),
    "MedicationStatement": ("medicationstatement", "MedicationStatement"),
    "Observation": ("observation", "Observation"),
    "ObservationComponent": ("observation", "ObservationComponent"),
    "Patient": ("patient", "Patient"),
    "Period": ("period", "Period"),
    "Procedure": ("procedure", "Procedure"),
    "Quantity": ("quantity", "Quantity"),
    "Range": ("range", "Range"),
    "Ratio": ("ratio", "Ratio"),
    "Reference": ("reference", "Reference"),
    "Timing": ("timing", "Timing"),
    "TimingRepeat": ("timing", "TimingRepeat"),
}

RESOURCES = frozenset({"AdverseEvent", "AllergyIntolerance", "Condition", "Medication", "MedicationAdministration",
                       "MedicationRequest", "MedicationStatement", "Observation", "Patient", "Procedure"})

ELEMENTS: dict[str, frozenset[str]] = {
# BEGIN GENERATED
    'AdverseEvent': frozenset({
        '_actuality', '_date', '_detected', '_implicitRules', '_language', '_recordedDate', 'actuality', 'category',
        'contained', 'contributor', 'date', 'detected', 'encounter', 'event', 'extension', 'fhir_comments', 'id',
        'identifier', 'implicitRules', 'language', 'location', 'meta', 'modifierExtension', 'outcome',
        'recordedDate', 'recorder', 'referenceDocument', 'resourceType', 'resultingCondition', 'seriousness',
        'severity', 'study', 'subject', 'subjectMedicalHistory', 'suspectEntity', 'text',
    }),
    'AdverseEventSuspectEntity': frozenset({
        'causality', 'extension', 'fhir_comments', 'id', 'instance', 'modifierExtension',
    }),
    'AllergyIntolerance': frozenset({
        '_category', '_criticality', '_implicitRules', '_language', '_lastOccurrence', '_onsetDateTime',
        '_onsetString', '_recordedDate', '_type', 'asserter', 'category', 'clinicalStatus', 'code', 'contained',
        'criticality', 'encounter', 'extension', 'fhir_comments', 'id', 'identifier', 'implicitRules', 'language',
        'lastOccurrence', 'meta', 'modifierExtension', 'note', 'onsetAge', 'onsetDateTime', 'onsetPeriod',
        'onsetRange', 'onsetString', 'patient', 'reaction', 'recordedDate', 'recorder', 'resourceType', 'text',
        'type', 'verificationStatus',
    }),
    'AllergyIntoleranceReaction': frozenset({
        '_description', '_onset', '_severity', 'description', 'exposureRoute', 'extension', 'fhir_comments', 'id',
        'manifestation', 'modifierExtension', 'note', 'onset', 'severity', 'substance',
    }),
    'CodeableConcept': frozenset({
        '_text', 'coding', 'extension', 'fhir_comments', 'id', 'text',
    }),
    'Coding': frozenset({
        '_code', '_display', '_system', '_userSelected', '_version', 'code', 'display', 'extension',
        'fhir_comments', 'id', 'system', 'userSelected', 'version',
    }),
    'Condition': frozenset({
        '_abatementDateTime', '_abatementString', '_implicitRules', '_language', '_onsetDateTime', '_onsetString',
        '_recordedDate', 'abatementAge', 'abatementDateTime', 'abatementPeriod', 'abatementRange',
        'abatementString', 'asserter', 'bodySite', 'category', 'clinicalStatus', 'code', 'contained', 'encounter',
        'evidence', 'extension', 'fhir_comments', 'id', 'identifier', 'implicitRules', 'language', 'meta',
        'modifierExtension', 'note', 'onsetAge', 'onsetDateTime', 'onsetPeriod', 'onsetRange', 'onsetString',
        'recordedDate', 'recorder', 'resourceType', 'severity', 'stage', 'subject', 'text', 'verificationStatus',
    }),
    'Dosage': frozenset({
        '_asNeededBoolean', '_patientInstruction', '_sequence', '_text', 'additionalInstruction', 'asNeededBoolean',
        'asNeededCodeableConcept', 'doseAndRate', 'extension', 'fhir_comments', 'id', 'maxDosePerAdministration',
        'maxDosePerLifetime', 'maxDosePerPeriod', 'method', 'modifierExtension', 'patientInstruction', 'route',
        'sequence', 'site', 'text', 'timing',
    }),
    'DosageDoseAndRate': frozenset({
        'doseQuantity', 'doseRange', 'extension', 'fhir_comments', 'id', 'rateQuantity', 'rateRange', 'rateRatio',
        'type',
    }),
    'Element': frozenset({
        'extension', 'fhir_comments', 'id',
    }),
    'Extension': frozenset({
        'extension', 'fhir_comments', 'id', 'url', 'valueAddress', 'valueAge', 'valueAnnotation', 'valueAttachment',
        'valueBase64Binary', 'valueBoolean', 'valueCanonical', 'valueCode', 'valueCodeableConcept',
        'valueCodeableReference', 'valueCoding', 'valueContactDetail', 'valueContactPoint', 'valueContributor',
        'valueCount', 'valueDataRequirement', 'valueDate', 'valueDateTime', 'valueDecimal', 'valueDistance',
        'valueDosage', 'valueDuration', 'valueExpression', 'valueHumanName', 'valueId', 'valueIdentifier',
        'valueInstant', 'valueInteger', 'valueMarkdown', 'valueMoney', 'valueOid', 'valueParameterDefinition',
        'valuePeriod', 'valuePositiveInt', 'valueQuantity', 'valueRange', 'valueRatio', 'valueRatioRange',
        'valueReference', 'valueRelatedArtifact', 'valueSampledData', 'valueSignature', 'valueString', 'valueTime',
        'valueTiming', 'valueTriggerDefinition', 'valueUnsignedInt', 'valueUri', 'valueUrl', 'valueUsageContext',
        'valueUuid',
    }),
    'Medication': frozenset({
        '_implicitRules', '_language', '_status', 'amount', 'batch', 'code', 'contained', 'extension',
        'fhir_comments', 'form', 'id', 'identifier', 'implicitRules', 'ingredient', 'language', 'manufacturer',
        'meta', 'modifierExtension', 'resourceType', 'status', 'text',
    }),
    'MedicationAdministration': frozenset({
        '_effectiveDateTime', '_implicitRules', '_instantiates', '_language', '_status', 'category', 'contained',
        'context', 'device', 'dosage', 'effectiveDateTime', 'effectivePeriod', 'eventHistory', 'extension',
        'fhir_comments', 'id', 'identifier', 'implicitRules', 'instantiates', 'language',
        'medicationCodeableConcept', 'medicationReference', 'meta', 'modifierExtension', 'note', 'partOf',
        'performer', 'reasonCode', 'reasonReference', 'request', 'resourceType', 'status', 'statusReason',
        'subject', 'supportingInformation', 'text',
    }),
    'MedicationAdministrationDosage': frozenset({
        '_text', 'dose', 'extension', 'fhir_comments', 'id', 'method', 'modifierExtension', 'rateQuantity',
        'rateRatio', 'route', 'site', 'text',
    }),
    'MedicationIngredient': frozenset({
        '_isActive', 'extension', 'fhir_comments', 'id', 'isActive', 'itemCodeableConcept', 'itemReference',
        'modifierExtension', 'strength',
    }),
    'MedicationRequest': frozenset({
        '_authoredOn', '_doNotPerform', '_implicitRules', '_instantiatesCanonical', '_instantiatesUri', '_intent',
        '_language', '_priority', '_reportedBoolean', '_status', 'authoredOn', 'basedOn', 'category', 'contained',
        'courseOfTherapyType', 'detectedIssue', 'dispenseRequest', 'doNotPerform', 'dosageInstruction', 'encounter',
        'eventHistory', 'extension', 'fhir_comments', 'groupIdentifier', 'id', 'identifier', 'implicitRules',
        'instantiatesCanonical', 'instantiatesUri', 'insurance', 'intent', 'language', 'medicationCodeableConcept',
        'medicationReference', 'meta', 'modifierExtension', 'note', 'performer', 'performerType',
        'priorPrescription', 'priority', 'reasonCode', 'reasonReference', 'recorder', 'reportedBoolean',
        'reportedReference', 'requester', 'resourceType', 'status', 'statusReason', 'subject', 'substitution',
        'supportingInformation', 'text',
    }),
    'MedicationStatement': frozenset({
        '_dateAsserted', '_effectiveDateTime', '_implicitRules', '_language', '_status', 'basedOn', 'category',
        'contained', 'context', 'dateAsserted', 'derivedFrom', 'dosage', 'effectiveDateTime', 'effectivePeriod',
        'extension', 'fhir_comments', 'id', 'identifier', 'implicitRules', 'informationSource', 'language',
        'medicationCodeableConcept', 'medicationReference', 'meta', 'modifierExtension', 'note', 'partOf',
        'reasonCode', 'reasonReference', 'resourceType', 'status', 'statusReason', 'subject', 'text',
    }),
    'Observation': frozenset({
        '_effectiveDateTime', '_effectiveInstant', '_implicitRules', '_issued', '_language', '_status',
        '_valueBoolean', '_valueDateTime', '_valueInteger', '_valueString', '_valueTime', 'basedOn', 'bodySite',
        'category', 'code', 'component', 'contained', 'dataAbsentReason', 'derivedFrom', 'device',
        'effectiveDateTime', 'effectiveInstant', 'effectivePeriod', 'effectiveTiming', 'encounter', 'extension',
        'fhir_comments', 'focus', 'hasMember', 'id', 'identifier', 'implicitRules', 'interpretation', 'issued',
        'language', 'meta', 'method', 'modifierExtension', 'note', 'partOf', 'performer', 'referenceRange',
        'resourceType', 'specimen', 'status', 'subject', 'text', 'valueBoolean', 'valueCodeableConcept',
        'valueDateTime', 'valueInteger', 'valuePeriod', 'valueQuantity', 'valueRange', 'valueRatio',
        'valueSampledData', 'valueString', 'valueTime',
    }),
    'ObservationComponent': frozenset({
        '_valueBoolean', '_valueDateTime', '_valueInteger', '_valueString', '_valueTime', 'code',
        'dataAbsentReason', 'extension', 'fhir_comments', 'id', 'interpretation', 'modifierExtension',
        'referenceRange', 'valueBoolean', 'valueCodeableConcept', 'valueDateTime', 'valueInteger', 'valuePeriod',
        'valueQuantity', 'valueRange', 'valueRatio', 'valueSampledData', 'valueString', 'valueTime',
    }),
    'Patient': frozenset({
        '_active', '_birthDate', '_deceasedBoolean', '_deceasedDateTime', '_gender', '_implicitRules', '_language',
        '_multipleBirthBoolean', '_multipleBirthInteger', 'active', 'address', 'birthDate', 'communication',
        'contact', 'contained', 'deceasedBoolean', 'deceasedDateTime', 'extension', 'fhir_comments', 'gender',
        'generalPractitioner', 'id', 'identifier', 'implicitRules', 'language', 'link', 'managingOrganization',
        'maritalStatus', 'meta', 'modifierExtension', 'multipleBirthBoolean', 'multipleBirthInteger', 'name',
        'photo', 'resourceType', 'telecom', 'text',
    }),
    'Period': frozenset({
        '_end', '_start', 'end', 'extension', 'fhir_comments', 'id', 'start',
    }),
    'Procedure': frozenset({
        '_implicitRules', '_instantiatesCanonical', '_instantiatesUri', '_language', '_performedDateTime',
        '_performedString', '_status', 'asserter', 'basedOn', 'bodySite', 'category', 'code', 'complication',
        'complicationDetail', 'contained', 'encounter', 'extension', 'fhir_comments', 'focalDevice', 'followUp',
        'id', 'identifier', 'implicitRules', 'instantiatesCanonical', 'instantiatesUri', 'language', 'location',
        'meta', 'modifierExtension', 'note', 'outcome', 'partOf', 'performedAge', 'performedDateTime',
        'performedPeriod', 'performedRange', 'performedString', 'performer', 'reasonCode', 'reasonReference',
        'recorder', 'report', 'resourceType', 'status', 'statusReason', 'subject', 'text', 'usedCode',
        'usedReference',
    }),
    'Quantity': frozenset({
        '_code', '_comparator', '_system', '_unit', '_value', 'code', 'comparator', 'extension', 'fhir_comments',
        'id', 'system', 'unit', 'value',
    }),
    'Range': frozenset({
        'extension', 'fhir_comments', 'high', 'id', 'low',
    }),
    'Ratio': frozenset({
        'denominator', 'extension', 'fhir_comments', 'id', 'numerator',
    }),
    'Reference': frozenset({
        '_display', '_reference', '_type', 'display', 'extension', 'fhir_comments', 'id', 'identifier', 'reference',
        'type',
    }),
    'Timing': frozenset({
        '_event', 'code', 'event', 'extension', 'fhir_comments', 'id', 'modifierExtension', 'repeat',
    }),
    'TimingRepeat': frozenset({
        '_count', '_countMax', '_dayOfWeek', '_duration', '_durationMax', '_durationUnit', '_frequency',
        '_frequencyMax', '_offset', '_period', '_periodMax', '_periodUnit', '_timeOfDay', '_when', 'boundsDuration',
        'boundsPeriod', 'boundsRange', 'count', 'countMax', 'dayOfWeek', 'duration', 'durationMax', 'durationUnit',
        'extension', 'fhir_comments', 'frequency', 'frequencyMax', 'id', 'offset', 'period', 'periodMax',
        'periodUnit', 'timeOfDay', 'when',
    }),
# END GENERATED
}


def generate() -> dict[str, list[str]]:
    """The table from the installed fhir.resources models: every field's JSON name (its alias), and
    ``resourceType`` for a resource."""
    import importlib

    out: dict[str, list[str]] = {}
    for name, (module, cls_name) in sorted(SOURCES.items()):
        cls = getattr(importlib.import_module(f"fhir.resources.R4B.{module}"), cls_name)
        names = {f.alias or n for n, f in cls.model_fields.items()}
        if name in RESOURCES:
            names.add("resourceType")
        out[name] = sorted(names)
    return out


def _write() -> None:
    from pathlib import Path

    path = Path(__file__)
    text = path.read_text(encoding="utf-8")
    head, rest = text.split("# BEGIN GENERATED\n", 1)
    _, tail = rest.split("# END GENERATED\n", 1)
    lines = []
    for name, names in generate().items():
        lines.append(f"    {name!r}: frozenset({{")
        row = "       "
        for n in names:
            item = f" {n!r},"
            if len(row) + len(item) > 116:
                lines.append(row)
                row = "       "
            row += item
        lines.append(row)
        lines.append("    }),")
    path.write_text(head + "# BEGIN GENERATED\n" + "\n".join(lines) + "\n# END GENERATED\n" + tail, encoding="utf-8")


if __name__ == "__main__":
    _write()

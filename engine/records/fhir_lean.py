"""The lean FHIR read path: typed structs of only the FHIR R4 elements mascds reads.

``engine.records.fhir`` validates each resource of a type mascds reads either with these ``msgspec`` structs (the
default) or with the full ``fhir.resources`` models (``strict=True``, ``--strict-fhir``). The structs carry the same
field names as the models, so :class:`engine.records.fhir_map.Mapper` reads either. For every element mascds reads they
check what the models check: the JSON type of each primitive (stricter than the models, which also take a string for
a boolean or a number, or a number for a dateTime), the FHIR regular expressions of code, id, date, dateTime and
instant, calendar validity, finite decimals, required elements, and at most one value of a choice element
(``effective[x]`` ...) and at least one where R4 requires one (``medication[x]``). Elements mascds does not read
are not looked at: only the strict path rejects a bad value in one (docs/fhir.md). An element name FHIR does not
define is refused in every structure the structs decode (:mod:`engine.records.fhir_elements`), since it is most often a
value placed where mascds does not look for it (an STU3 ``Dosage.doseQuantity``), which would otherwise be lost
without a word.
"""

from __future__ import annotations

import math
import re
import typing
from datetime import date, datetime
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta, Struct

from .fhir_elements import ELEMENTS

# FHIR R4 primitive regular expressions (https://hl7.org/fhir/R4/datatypes.html), anchored as the models anchor them.
_DATETIME = (r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1])"
             r"(T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)))?)?)?")
_DATE = r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)(-(0[1-9]|1[0-2])(-(0[1-9]|[1-2][0-9]|3[0-1]))?)?"
_INSTANT = (r"([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[1-2][0-9]|3[0-1])"
            r"T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))")

String = Annotated[str, Meta(min_length=1)]  # FHIR string: [ \r\n\t\S]+ (at least one character)
Uri = str  # the models do not check uri
Code = Annotated[str, Meta(pattern=r"^[^\s]+(\s[^\s]+)*\Z")]
Id = Annotated[str, Meta(pattern=r"^[A-Za-z0-9\-.]+\Z")]
DateTimeText = Annotated[str, Meta(pattern=rf"^{_DATETIME}\Z")]
DateText = Annotated[str, Meta(pattern=rf"^{_DATE}\Z")]
InstantText = Annotated[str, Meta(pattern=rf"^{_INSTANT}\Z")]
Decimal = int | float
_PATTERNS = {"code": r"^[^\s]+(\s[^\s]+)*\Z", "id": r"^[A-Za-z0-9\-.]+\Z", "dateTime": rf"^{_DATETIME}\Z",
             "date": rf"^{_DATE}\Z", "instant": rf"^{_INSTANT}\Z"}
PositiveInt = Annotated[int, Meta(ge=1)]
UnsignedInt = Annotated[int, Meta(ge=0)]


def when(text: str | None) -> Any:
    """A FHIR date, dateTime or instant as the models give it: a year or a year-month stays text, a date is a
    :class:`date`, a date-time an aware :class:`datetime`. An impossible day (2020-02-30) is a ValueError."""
    if text is None or len(text) <= 7:
        return text
    if len(text) == 10:
        return date.fromisoformat(text)
    if text[17:19] == "60":  # a leap second: the models read it as the next minute would not; refuse plainly
        raise ValueError("a leap second (:60) is not read")
    return datetime.fromisoformat(text)


class _S(Struct, kw_only=True, omit_defaults=True):
    """Base: the date fields named in ``_dates`` are converted after decoding; ``_choices`` are groups of which at
    most one may be given, ``_required`` groups of which exactly one must be."""

    _dates: ClassVar[tuple[str, ...]] = ()
    _choices: ClassVar[tuple[tuple[str, ...], ...]] = ()
    _required: ClassVar[tuple[tuple[str, ...], ...]] = ()
    _decimals: ClassVar[tuple[str, ...]] = ()


def _check(self: Any) -> None:
    """The ``__post_init__`` of the structs that name dates, choices, required groups or decimals (only those: a
    Coding or a Reference, the most frequent, is not called back at all)."""
    for name in self._decimals:
        value = getattr(self, name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("a decimal must be a finite number")
        if isinstance(value, int) and not -1e308 < value < 1e308:
            # beyond a double, as the models' Decimal becomes when the mapper reads it: infinite
            setattr(self, name, math.inf if value > 0 else -math.inf)
    for name in self._dates:
        value = getattr(self, name)
        if value is not None:
            setattr(self, name, when(value))
    for group in self._choices:
        given = [n for n in group if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"only one of {', '.join(given)} may be given")
    for group in self._required:
        if all(getattr(self, n) is None for n in group):
            raise ValueError(f"one of {', '.join(group)} is required")


class Coding(_S, kw_only=True):
    system: Uri | None = None
    code: Code | None = None
    display: String | None = None


class CodeableConcept(_S, kw_only=True):
    coding: list[Coding] | None = None
    text: String | None = None


class Quantity(_S, kw_only=True):
    value: Decimal | None = None
    comparator: Code | None = None
    unit: String | None = None
    system: Uri | None = None
    code: Code | None = None
    _decimals = ("value",)
    def __post_init__(self) -> None:
        _check(self)


class Period(_S, kw_only=True):
    start: DateTimeText | None = None
    end: DateTimeText | None = None
    _dates = ("start", "end")
    def __post_init__(self) -> None:
        _check(self)


class Ratio(_S, kw_only=True):
    numerator: Quantity | None = None
    denominator: Quantity | None = None


class Range(_S, kw_only=True):
    low: Quantity | None = None
    high: Quantity | None = None


class Reference(_S, kw_only=True):
    reference: String | None = None
    display: String | None = None


class Extension(_S, kw_only=True):
    url: Uri
    extension: list[Extension] | None = None
    valueBoolean: bool | None = None
    valueDateTime: DateTimeText | None = None
    valueAge: Quantity | None = None
    valueQuantity: Quantity | None = None
    valueCode: Code | None = None
    valueCodeableConcept: CodeableConcept | None = None
    _dates = ("valueDateTime",)
    _choices = (("valueBoolean", "valueDateTime", "valueAge", "valueQuantity", "valueCode", "valueCodeableConcept"),)
    def __post_init__(self) -> None:
        _check(self)


class Element(_S, kw_only=True):
    extension: list[Extension] | None = None


class _Resource(_S, kw_only=True):
    id: Id | None = None
    extension: list[Extension] | None = None
    contained: list[Any] | None = None  # set by parse(): Medication or Other structs

    @classmethod
    def get_resource_type(cls) -> str:
        return cls.__name__


class Patient(_Resource, kw_only=True):
    gender: Code | None = None
    birthDate: DateText | None = None
    birthDate__ext: Element | None = msgspec.field(default=None, name="_birthDate")
    _dates = ("birthDate",)
    def __post_init__(self) -> None:
        _check(self)


class ObservationComponent(_S, kw_only=True):
    code: CodeableConcept | None  # required, but the models take null for an element
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: str | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueRange: Range | None = None
    valueRatio: Ratio | None = None
    dataAbsentReason: CodeableConcept | None = None
    _choices = (("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "valueRange",
                 "valueRatio"),)
    def __post_init__(self) -> None:
        _check(self)


class Observation(_Resource, kw_only=True):
    status: Code
    code: CodeableConcept | None
    subject: Reference | None = None
    effectiveDateTime: DateTimeText | None = None
    effectivePeriod: Period | None = None
    effectiveInstant: InstantText | None = None
    issued: InstantText | None = None
    valueQuantity: Quantity | None = None
    valueCodeableConcept: CodeableConcept | None = None
    valueString: str | None = None
    valueBoolean: bool | None = None
    valueInteger: int | None = None
    valueRange: Range | None = None
    valueRatio: Ratio | None = None
    dataAbsentReason: CodeableConcept | None = None
    component: list[ObservationComponent] | None = None
    _dates = ("effectiveDateTime", "effectiveInstant", "issued")
    _choices = (("effectiveDateTime", "effectivePeriod", "effectiveInstant"),
                ("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger", "valueRange",
                 "valueRatio"))
    def __post_init__(self) -> None:
        _check(self)


class Condition(_Resource, kw_only=True):
    clinicalStatus: CodeableConcept | None = None
    verificationStatus: CodeableConcept | None = None
    code: CodeableConcept | None = None
    subject: Reference | None
    onsetDateTime: DateTimeText | None = None
    onsetPeriod: Period | None = None
    abatementDateTime: DateTimeText | None = None
    abatementPeriod: Period | None = None
    recordedDate: DateTimeText | None = None
    _dates = ("onsetDateTime", "abatementDateTime", "recordedDate")
    _choices = (("onsetDateTime", "onsetPeriod"), ("abatementDateTime", "abatementPeriod"))
    def __post_init__(self) -> None:
        _check(self)


class MedicationIngredient(_S, kw_only=True):
    itemCodeableConcept: CodeableConcept | None = None
    itemReference: Reference | None = None
    _choices = (("itemCodeableConcept", "itemReference"),)
    _required = (("itemCodeableConcept", "itemReference"),)
    def __post_init__(self) -> None:
        _check(self)


class Medication(_Resource, kw_only=True):
    code: CodeableConcept | None = None
    ingredient: list[MedicationIngredient] | None = None


class Other(_S, kw_only=True):
    """A contained resource of a type mascds does not read: only its id (for "#id" references)."""

    resourceType: str
    id: Id | None = None

    def get_resource_type(self) -> str:
        return self.resourceType


class MedicationAdministrationDosage(_S, kw_only=True):
    route: CodeableConcept | None = None
    dose: Quantity | None = None
    rateQuantity: Quantity | None = None
    rateRatio: Ratio | None = None
    _choices = (("rateRatio", "rateQuantity"),)
    def __post_init__(self) -> None:
        _check(self)


class _MedicationResource(_Resource, kw_only=True):
    medicationCodeableConcept: CodeableConcept | None = None
    medicationReference: Reference | None = None
    subject: Reference | None


class MedicationAdministration(_MedicationResource, kw_only=True):
    status: Code
    effectiveDateTime: DateTimeText | None = None
    effectivePeriod: Period | None = None
    dosage: MedicationAdministrationDosage | None = None
    _dates = ("effectiveDateTime",)
    _choices = (("medicationCodeableConcept", "medicationReference"), ("effectiveDateTime", "effectivePeriod"))
    _required = (("medicationCodeableConcept", "medicationReference"), ("effectiveDateTime", "effectivePeriod"))
    def __post_init__(self) -> None:
        _check(self)


class TimingRepeat(_S, kw_only=True):
    boundsDuration: Quantity | None = None
    boundsRange: Range | None = None
    boundsPeriod: Period | None = None
    count: PositiveInt | None = None
    duration: Decimal | None = None
    durationUnit: Code | None = None
    frequency: PositiveInt | None = None
    period: Decimal | None = None
    periodUnit: Code | None = None
    _decimals = ("duration", "period")
    _choices = (("boundsDuration", "boundsRange", "boundsPeriod"),)
    def __post_init__(self) -> None:
        _check(self)


class Timing(_S, kw_only=True):
    repeat: TimingRepeat | None = None
    code: CodeableConcept | None = None


class DoseAndRate(_S, kw_only=True):
    doseRange: Range | None = None
    doseQuantity: Quantity | None = None
    rateRatio: Ratio | None = None
    rateRange: Range | None = None
    rateQuantity: Quantity | None = None
    _choices = (("doseRange", "doseQuantity"), ("rateRatio", "rateRange", "rateQuantity"))
    def __post_init__(self) -> None:
        _check(self)


class Dosage(_S, kw_only=True):
    timing: Timing | None = None
    asNeededBoolean: bool | None = None
    asNeededCodeableConcept: CodeableConcept | None = None
    route: CodeableConcept | None = None
    doseAndRate: list[DoseAndRate] | None = None
    _choices = (("asNeededBoolean", "asNeededCodeableConcept"),)
    def __post_init__(self) -> None:
        _check(self)


class MedicationRequest(_MedicationResource, kw_only=True):
    status: Code
    statusReason: CodeableConcept | None = None
    intent: Code
    doNotPerform: bool | None = None
    authoredOn: DateTimeText | None = None
    dosageInstruction: list[Dosage] | None = None
    _dates = ("authoredOn",)
    _choices = (("medicationCodeableConcept", "medicationReference"),)
    _required = (("medicationCodeableConcept", "medicationReference"),)
    def __post_init__(self) -> None:
        _check(self)


class MedicationStatement(_MedicationResource, kw_only=True):
    status: Code
    statusReason: list[CodeableConcept] | None = None
    effectiveDateTime: DateTimeText | None = None
    effectivePeriod: Period | None = None
    dosage: list[Dosage] | None = None
    _dates = ("effectiveDateTime",)
    _choices = (("medicationCodeableConcept", "medicationReference"), ("effectiveDateTime", "effectivePeriod"))
    _required = (("medicationCodeableConcept", "medicationReference"),)
    def __post_init__(self) -> None:
        _check(self)


class AllergyReaction(_S, kw_only=True):
    substance: CodeableConcept | None = None
    manifestation: list[CodeableConcept] | None
    onset: DateTimeText | None = None
    severity: Code | None = None
    extension: list[Extension] | None = None
    _dates = ("onset",)
    def __post_init__(self) -> None:
        _check(self)


class AllergyIntolerance(_Resource, kw_only=True):
    verificationStatus: CodeableConcept | None = None
    category: list[Code] | None = None
    code: CodeableConcept | None = None
    patient: Reference | None
    onsetDateTime: DateTimeText | None = None
    onsetPeriod: Period | None = None
    recordedDate: DateTimeText | None = None
    lastOccurrence: DateTimeText | None = None
    reaction: list[AllergyReaction] | None = None
    _dates = ("onsetDateTime", "recordedDate", "lastOccurrence")
    def __post_init__(self) -> None:
        _check(self)


class SuspectEntity(_S, kw_only=True):
    instance: Reference | None


class AdverseEvent(_Resource, kw_only=True):
    actuality: Code
    event: CodeableConcept | None = None
    subject: Reference | None
    date: DateTimeText | None = None
    detected: DateTimeText | None = None
    recordedDate: DateTimeText | None = None
    severity: CodeableConcept | None = None
    suspectEntity: list[SuspectEntity] | None = None
    _dates = ("date", "detected", "recordedDate")
    def __post_init__(self) -> None:
        _check(self)


class Procedure(_Resource, kw_only=True):
    status: Code
    code: CodeableConcept | None = None
    subject: Reference | None
    performedDateTime: DateTimeText | None = None
    performedPeriod: Period | None = None
    usedCode: list[CodeableConcept] | None = None
    _dates = ("performedDateTime",)
    def __post_init__(self) -> None:
        _check(self)


# Each struct -> the FHIR structure whose element names it is checked against (engine.records.fhir_elements).
_FHIR_NAME: dict[type[Any], str] = {
    Coding: "Coding", CodeableConcept: "CodeableConcept", Quantity: "Quantity", Period: "Period", Ratio: "Ratio",
    Range: "Range", Reference: "Reference", Extension: "Extension", Element: "Element", Patient: "Patient",
    ObservationComponent: "ObservationComponent", Observation: "Observation", Condition: "Condition",
    MedicationIngredient: "MedicationIngredient", Medication: "Medication",
    MedicationAdministrationDosage: "MedicationAdministrationDosage",
    MedicationAdministration: "MedicationAdministration", TimingRepeat: "TimingRepeat", Timing: "Timing",
    DoseAndRate: "DosageDoseAndRate", Dosage: "Dosage", MedicationRequest: "MedicationRequest",
    MedicationStatement: "MedicationStatement", AllergyReaction: "AllergyIntoleranceReaction",
    AllergyIntolerance: "AllergyIntolerance", SuspectEntity: "AdverseEventSuspectEntity",
    AdverseEvent: "AdverseEvent", Procedure: "Procedure",
}


def _structs_in(tp: Any) -> list[type[Any]]:
    """The struct classes a field's type can hold (through ``X | None``, ``list[X]``, ``Annotated``)."""
    if isinstance(tp, type) and issubclass(tp, Struct):
        return [tp]
    return [s for arg in typing.get_args(tp) for s in _structs_in(arg)]


def _plan() -> dict[type[Any], tuple[frozenset[str], tuple[tuple[str, type[Any]], ...]]]:
    """Per struct: the element names allowed in it, and the (JSON name, struct) of the fields to check inside."""
    out: dict[type[Any], tuple[frozenset[str], tuple[tuple[str, type[Any]], ...]]] = {}
    for cls, fhir_name in _FHIR_NAME.items():
        children = []
        for field in msgspec.structs.fields(cls):
            inner = [s for s in _structs_in(field.type) if s in _FHIR_NAME]
            if inner:
                children.append((field.encode_name, inner[0]))
        out[cls] = (ELEMENTS[fhir_name], tuple(children))
    return out


_PLAN = _plan()


def _unknown_element(raw: dict[str, Any], cls: type[Any], path: str) -> tuple[str, str] | None:
    """The first element name FHIR does not define in ``raw`` (read as ``cls``) or in the structures inside it
    that mascds reads, as (path, why); None when every name is defined. Runs after decoding, so the shapes are
    already those of the struct."""
    allowed, children = _PLAN[cls]
    if not allowed.issuperset(raw):
        name = min(k for k in raw if k not in allowed)
        return f"{path}{name}", "Extra inputs are not permitted"
    for name, child in children:
        value = raw.get(name)
        if isinstance(value, dict):
            found = _unknown_element(value, child, f"{path}{name}.")
            if found:
                return found
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    found = _unknown_element(item, child, f"{path}{name}.{i}.")
                    if found:
                        return found
    return None


MODELS: dict[str, type[_Resource]] = {
    m.__name__: m for m in (Patient, Observation, Condition, MedicationAdministration, MedicationRequest,
                            MedicationStatement, AllergyIntolerance, Procedure, AdverseEvent, Medication)}
# The resource types of FHIR R4B (as fhir.resources knows them): a contained resource must be one of them.
RESOURCE_TYPES = frozenset({
    "Account", "ActivityDefinition", "AdministrableProductDefinition", "AdverseEvent", "AllergyIntolerance",
    "Appointment", "AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
    "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry", "ChargeItem",
    "ChargeItemDefinition", "Citation", "Claim", "ClaimResponse", "ClinicalImpression", "ClinicalUseDefinition",
    "CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition", "Composition", "ConceptMap",
    "Condition", "Consent", "Contract", "Coverage", "CoverageEligibilityRequest", "CoverageEligibilityResponse",
    "DetectedIssue", "Device", "DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
    "DiagnosticReport", "DocumentManifest", "DocumentReference", "DomainResource", "Encounter", "Endpoint",
    "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence", "EvidenceReport",
    "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal",
    "GraphDefinition", "Group", "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
    "ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide", "Ingredient",
    "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "ManufacturedItemDefinition",
    "Measure", "MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
    "MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProductDefinition",
    "MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem", "NutritionOrder",
    "NutritionProduct", "Observation", "ObservationDefinition", "OperationDefinition", "OperationOutcome",
    "Organization", "OrganizationAffiliation", "PackagedProductDefinition", "Parameters", "Patient",
    "PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner", "PractitionerRole",
    "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RegulatedAuthorization",
    "RelatedPerson", "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy",
    "ResearchSubject", "Resource", "RiskAssessment", "Schedule", "SearchParameter", "ServiceRequest", "Slot",
    "Specimen", "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription",
    "SubscriptionStatus", "SubscriptionTopic", "Substance", "SubstanceDefinition", "SupplyDelivery",
    "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet",
    "VerificationResult", "VisionPrescription",
})
_MISSING = re.compile(r"Object missing required field `(\w+)`")
_AT = re.compile(r" - at `\$(.*)`$")


class ValidationError(ValueError):
    """A resource the structs refuse: ``where`` is its FHIR path ("code.coding.0.code"), ``what`` why."""

    def __init__(self, pair: tuple[str, str]) -> None:
        super().__init__(f"{pair[0]}: {pair[1]}" if pair[0] else pair[1])
        self.where, self.what = pair


def _where(message: str, prefix: str = "") -> tuple[str, str]:
    m = _AT.search(message)
    path = prefix + (m.group(1) if m else "")
    what = message[:m.start()] if m else message
    missing = _MISSING.fullmatch(what)
    if missing:  # name the element itself, as the models do
        path, what = f"{path}.{missing.group(1)}", "a required element is missing"
    for name, pattern in _PATTERNS.items():
        what = what.replace(f"`str` matching regex {pattern!r}", f"a FHIR {name}")
    # "$.code.coding[0].code" -> "code.coding.0.code", the spelling of the models' error locations
    return re.sub(r"\[(\d+)\]", r".\1", path).lstrip("."), what


def parse(rtype: str, raw: dict[str, Any]) -> Any:
    """The struct of one resource (``rtype`` one of :data:`MODELS`); :class:`ValidationError` when it is refused.
    A contained Medication is read as one (medicationReference "#id"); other contained resources by their id."""
    contained = raw.get("contained")
    data = raw if contained is None else {k: v for k, v in raw.items() if k != "contained"}
    try:
        resource = msgspec.convert(data, MODELS[rtype])
    except msgspec.ValidationError as exc:
        raise ValidationError(_where(str(exc))) from None
    unknown = _unknown_element(raw, MODELS[rtype], "")
    if unknown:
        raise ValidationError(unknown)
    if contained is not None:
        if not isinstance(contained, list):
            raise ValidationError(("contained", "Expected `array`, got `" + type(contained).__name__ + "`"))
        items: list[Any] = []
        for i, c in enumerate(contained):
            kind = Medication if isinstance(c, dict) and c.get("resourceType") == "Medication" else Other
            try:
                items.append(msgspec.convert(c, kind))
            except msgspec.ValidationError as exc:
                raise ValidationError(_where(str(exc), f".contained[{i}]")) from None
            if kind is Medication:
                unknown = _unknown_element(c, Medication, f"contained.{i}.")
                if unknown:
                    raise ValidationError(unknown)
        resource.contained = items
    return resource

"""Pydantic models of the CDS Hooks 2.0 messages, with the specification's invariants.

What the service sends (discovery, cards, errors) is modelled strictly: an unknown field, a ``null`` or an empty
value is an error, as the specification's "Use of JSON" section requires (OPTIONAL fields are omitted, never null
or empty; only ``cards`` may be an empty array). What clients send (requests, feedback) is read leniently:
unknown fields are ignored so that a client on a later release keeps working, but every field the service uses
is checked.

The invariants carry the names of the HL7 logical models (CDSHooksRequest, CDSHooksResponse, CDSHooksFeedback):

========== =====================================================================================================
cds-r-1    ``fhirAuthorization`` requires ``fhirServer``
cds-resp-1 ``selectionBehavior: at-most-one`` allows at most one recommended suggestion
cds-resp-2 a ``delete`` action names a ``resourceId`` and carries no ``resource``
cds-resp-3 ``appContext`` only on ``smart`` links
cds-resp-4 every override reason has a ``display``
cds-resp-5 every action of a suggestion has a ``description``
cds-resp-6 ``suggestions`` require ``selectionBehavior``
cds-fb-1   ``outcome`` is ``accepted`` or ``overridden``
cds-fb-2   an ``accepted`` outcome lists its ``acceptedSuggestions``
cds-fb-3   an ``overrideReason`` has a ``reason``, a ``userComment`` or both
========== =====================================================================================================

Beyond them, as the text of the specification says: ``summary`` has fewer than 140 characters, a ``create`` or
``update`` action carries the resource, and URLs are absolute.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

SUMMARY_LIMIT = 140  # "<140-character summary"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_RELATIVE_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_ABSOLUTE_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$")


def _uuid(value: str) -> str:
    try:
        uuid.UUID(value.removeprefix("urn:uuid:"))
    except ValueError:
        raise ValueError(f"'{value}' is not a UUID") from None
    return value


def _url(value: str) -> str:
    if not _ABSOLUTE_URL.match(value):
        raise ValueError(f"'{value}' is not an absolute http(s) URL")
    return value


def _fhir_id(value: str) -> str:
    if not FHIR_ID.match(value):
        raise ValueError(f"'{value}' is not a FHIR id (letters, digits, '-' and '.', at most 64)")
    return value


Uuid = Annotated[str, AfterValidator(_uuid)]
Url = Annotated[str, AfterValidator(_url)]
FhirId = Annotated[str, AfterValidator(_fhir_id)]
Text = Annotated[str, Field(min_length=1)]


class Strict(BaseModel):
    """A message the service sends: no unknown fields, and no field present with a null or empty value."""

    model_config = ConfigDict(extra="forbid")
    empty_allowed: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _no_null_or_empty(self) -> Strict:
        # Run for every card, suggestion and coding of every answer: the values are read from the instance's
        # dict and a non-empty value costs one truth test (a quarter of the time getattr and isinstance took).
        values = self.__dict__
        for name in self.__pydantic_fields_set__:
            value = values[name]
            if (value is None or (not value and isinstance(value, str | list | dict))) \
                    and name not in self.empty_allowed:
                raise ValueError(f"'{name}' is present but null or empty; an optional field without a value is "
                                 "omitted")
        return self


class Lenient(BaseModel):
    """A message a client sends: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")


# --- shared data types -------------------------------------------------------------------------------------
class Coding(Strict):
    code: Text
    system: Text
    display: str | None = None


# --- discovery -----------------------------------------------------------------------------------------------
class CDSService(Strict):
    hook: Text
    title: str | None = None
    description: Text
    id: Text
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None
    extension: dict[str, Any] | None = None


class CDSServicesResponse(Strict):
    empty_allowed = frozenset({"services"})
    services: list[CDSService]
    extension: dict[str, Any] | None = None


# --- service response ----------------------------------------------------------------------------------------
class Source(Strict):
    label: Text
    url: Url | None = None
    icon: Url | None = None
    topic: Coding | None = None


class Action(Strict):
    type: Literal["create", "update", "delete"]
    description: str | None = None  # required in suggestions (cds-resp-5); the specification's systemAction
    # example has none
    resource: dict[str, Any] | None = None
    resourceId: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> Action:
        if self.type == "delete":
            if self.resourceId is None or self.resource is not None:
                raise ValueError("cds-resp-2: a delete action names a resourceId and carries no resource")
            if not _RELATIVE_REF.match(self.resourceId):
                raise ValueError(f"resourceId '{self.resourceId}' is not a relative reference (Type/id)")
        else:
            if self.resource is None:
                raise ValueError(f"a {self.type} action carries the resource")
            if not isinstance(self.resource.get("resourceType"), str):
                raise ValueError("the resource of an action has no resourceType")
        return self


class Suggestion(Strict):
    label: Text
    uuid: Uuid | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None

    @model_validator(mode="after")
    def _described(self) -> Suggestion:
        if any(not a.description for a in self.actions or ()):
            raise ValueError("cds-resp-5: every action of a suggestion has a description")
        return self


class Link(Strict):
    label: Text
    url: Url
    type: Literal["absolute", "smart"]
    appContext: str | None = None
    autolaunchable: bool | None = None

    @model_validator(mode="after")
    def _app_context(self) -> Link:
        if self.type != "smart" and self.appContext is not None:
            raise ValueError("cds-resp-3: appContext is only for smart links")
        return self


class Card(Strict):
    uuid: Uuid | None = None
    summary: Text
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _invariants(self) -> Card:
        if len(self.summary) >= SUMMARY_LIMIT:
            raise ValueError(f"summary has {len(self.summary)} characters; it must have fewer than {SUMMARY_LIMIT}")
        if "\n" in self.summary:
            raise ValueError("summary is one sentence on one line")
        if self.suggestions and self.selectionBehavior is None:
            raise ValueError("cds-resp-6: suggestions require selectionBehavior")
        if self.selectionBehavior == "at-most-one" and \
                sum(1 for s in self.suggestions or () if s.isRecommended) > 1:
            raise ValueError("cds-resp-1: at-most-one allows at most one recommended suggestion")
        if any(not r.display for r in self.overrideReasons or ()):
            raise ValueError("cds-resp-4: every override reason has a display")
        return self


class CDSHooksResponse(Strict):
    empty_allowed = frozenset({"cards"})
    cards: list[Card]
    systemActions: list[Action] | None = None
    extension: dict[str, Any] | None = None


# --- errors --------------------------------------------------------------------------------------------------
class Issue(Strict):
    severity: Literal["fatal", "error", "warning", "information"]
    code: Text
    diagnostics: Text
    expression: list[str] | None = None


class OperationOutcome(Strict):
    """The FHIR R4 OperationOutcome shape in which every error answer is given."""

    resourceType: Literal["OperationOutcome"]
    issue: list[Issue] = Field(min_length=1)


# --- requests ------------------------------------------------------------------------------------------------
class FhirAuthorization(Lenient):
    access_token: Text
    token_type: Literal["Bearer"]
    expires_in: int
    scope: Text
    subject: Text
    patient: FhirId | None = None


class CDSHooksRequest(Lenient):
    hook: Text
    hookInstance: Uuid
    fhirServer: Url | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None
    extension: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _server(self) -> CDSHooksRequest:
        if self.fhirAuthorization is not None and self.fhirServer is None:
            raise ValueError("cds-r-1: fhirAuthorization requires fhirServer")
        return self


class PatientViewContext(Lenient):
    userId: Text
    patientId: FhirId
    encounterId: FhirId | None = None


class OrderSignContext(PatientViewContext):
    draftOrders: dict[str, Any]

    @model_validator(mode="after")
    def _bundle(self) -> OrderSignContext:
        if self.draftOrders.get("resourceType") != "Bundle":
            raise ValueError("draftOrders is a FHIR Bundle")
        entries = self.draftOrders.get("entry", [])
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and isinstance(e["resource"].get("resourceType"), str) for e in entries):
            raise ValueError("draftOrders.entry is a list of entries, each with a resource")
        return self


# --- feedback ------------------------------------------------------------------------------------------------
class AcceptedSuggestion(Lenient):
    id: Text


class FeedbackCoding(Lenient):
    code: Text
    system: Text
    display: str | None = None


class OverrideReason(Lenient):
    reason: FeedbackCoding | None = None
    userComment: str | None = None

    @model_validator(mode="after")
    def _something(self) -> OverrideReason:
        if self.reason is None and not self.userComment:
            raise ValueError("cds-fb-3: an overrideReason has a reason, a userComment or both")
        return self


class Feedback(Lenient):
    card: Text
    outcome: Literal["accepted", "overridden"]  # cds-fb-1
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: datetime

    @model_validator(mode="after")
    def _invariants(self) -> Feedback:
        if self.outcome == "accepted" and not self.acceptedSuggestions:
            raise ValueError("cds-fb-2: an accepted outcome lists its acceptedSuggestions")
        if self.outcomeTimestamp.tzinfo is None:
            raise ValueError("outcomeTimestamp needs a time zone (UTC, e.g. 2021-12-11T10:05:31Z)")
        return self


class FeedbackRequest(Lenient):
    feedback: list[Feedback] = Field(min_length=1)


def error_lines(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, ``where: what``, without echoing the offending values."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{where}" if prefix and where else prefix or where
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


__all__ = [
    "SUMMARY_LIMIT",
    "AcceptedSuggestion",
    "Action",
    "CDSHooksRequest",
    "CDSHooksResponse",
    "CDSService",
    "CDSServicesResponse",
    "Card",
    "Coding",
    "Feedback",
    "FeedbackRequest",
    "FhirAuthorization",
    "Issue",
    "Link",
    "OperationOutcome",
    "OrderSignContext",
    "OverrideReason",
    "PatientViewContext",
    "Source",
    "Suggestion",
    "error_lines",
]

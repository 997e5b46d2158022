"""The services' prefetch templates, and gathering the FHIR data of one call: from the request's ``prefetch``,
else from the client's ``fhirServer`` with the ``fhirAuthorization`` bearer token.

A prefetch key that is absent means "not fetched"; ``null`` means "no data" (CDS Hooks 2.0, Prefetch Template).
The two are kept apart all the way into the engine: data that was not fetched makes the rules needing it
undecided (``not_fetched`` sections), while "no data" is an empty, known record. A key the client could not
satisfy (absent, an OperationOutcome, or a search result with more pages) is fetched from the FHIR server when
the request allows it; a required key that still cannot be had answers 412.

The templates are built from the reviewed code tables (the LOINC codes of the analytes, the finding and
organ-support codes), so they ask for exactly what the FHIR mapping reads.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, quote, unquote, urljoin, urlsplit

import httpx
import orjson

from ..core.vocab import vocabulary
from ..records.fhir_codes import MASCDS_SYSTEMS, code_tables
from .config import FhirConfig

PATIENT_TOKEN = "{{context.patientId}}"
_TOKEN = re.compile(r"\{\{\s*([A-Za-z.]+)\s*\}\}")
_PATIENT_REF = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_USER_TOKENS = {"userPractitionerId": "Practitioner", "userPractitionerRoleId": "PractitionerRole",
                "userPatientId": "Patient", "userRelatedPersonId": "RelatedPerson"}


@dataclass(frozen=True)
class PrefetchQuery:
    key: str
    template: str
    sections: tuple[str, ...]  # snapshot sections this key feeds (engine/records/casemodel.py SECTION_NAMES)
    what: str


def _observation_codes() -> str:
    t, v = code_tables(), vocabulary()
    loinc = sorted({c for a in v.analytes.values() for c in a.loinc} | set(t.loinc))
    codes = [f"{t.uri('loinc')}|{c}" for c in loinc]
    codes += [f"{MASCDS_SYSTEMS['finding']}|{f}" for f in sorted(v.findings)]
    return ",".join(codes)


def _procedure_codes() -> str:
    t, v = code_tables(), vocabulary()
    codes = sorted({f"{t.uri(e.system)}|{e.code}" for e in t.organ_support})
    codes += [f"{MASCDS_SYSTEMS['organ-support']}|{s}" for s in sorted(v.organ_support)]
    return ",".join(codes)


def build_queries() -> tuple[PrefetchQuery, ...]:
    p = PATIENT_TOKEN
    return (
        PrefetchQuery("patient", f"Patient/{p}", (), "the patient (age, sex)"),
        PrefetchQuery("conditions", f"Condition?patient={p}", ("diagnoses",), "diagnoses"),
        PrefetchQuery("observations", f"Observation?patient={p}&code={_observation_codes()}",
                      ("observations", "findings"), "laboratory values, vital signs and findings"),
        # _include: a request naming its drug by medicationReference is readable only with the Medication.
        PrefetchQuery("medication-requests",
                      f"MedicationRequest?patient={p}&_include=MedicationRequest:medication",
                      ("medications", "orders"), "medication orders and prescriptions"),
        PrefetchQuery("medication-administrations",
                      f"MedicationAdministration?patient={p}&_include=MedicationAdministration:medication",
                      ("medications",), "doses given"),
        PrefetchQuery("medication-statements",
                      f"MedicationStatement?patient={p}&_include=MedicationStatement:medication",
                      ("medications",), "medication statements"),
        PrefetchQuery("allergies", f"AllergyIntolerance?patient={p}", ("reactions",), "allergies and reactions"),
        PrefetchQuery("adverse-events", f"AdverseEvent?subject=Patient/{p}", ("reactions",), "adverse events"),
        PrefetchQuery("procedures", f"Procedure?patient={p}&code={_procedure_codes()}", ("organ_support",),
                      "organ support (ventilation, ECMO, dialysis)"),
    )


@dataclass(frozen=True)
class ServiceDef:
    id: str
    hook: str
    title: str
    description: str
    required: tuple[str, ...]  # prefetch keys without which the service answers 412

    def usage(self, queries: Iterable[PrefetchQuery]) -> str:
        keys = [q.key for q in queries]
        optional = [k for k in keys if k not in self.required]
        return (f"Requires a signed JWT (CDS Hooks 2.0 security). Prefetch keys {', '.join(self.required)} are "
                f"required (or fhirServer with fhirAuthorization to fetch them); {', '.join(optional)} are "
                "optional: rules needing data that was not fetched are reported as undecided.")


SERVICES: tuple[ServiceDef, ...] = (
    ServiceDef(
        "mascds-patient-view", "patient-view", "MAS in sJIA: recommendations",
        "Cited recommendations for recognising and treating macrophage activation syndrome in systemic juvenile "
        "idiopathic arthritis, and tocilizumab safety, from the patient's record; undecided rules name what to "
        "measure or record.",
        ("patient", "conditions", "observations", "medication-requests", "allergies")),
    ServiceDef(
        "mascds-order-sign", "order-sign", "MAS in sJIA: medication order safety",
        "Checks draft medication orders against the cited safety rules (for example a tocilizumab order after "
        "anaphylaxis to tocilizumab) and suggests deleting an order that must not be signed.",
        ("patient", "allergies", "medication-requests", "medication-administrations")),
)


class BadRequest(Exception):
    """The request's data cannot be used (400)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class PreconditionFailed(Exception):
    """Required data is neither prefetched nor fetchable (412)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


class FetchFailed(Exception):
    pass


@dataclass
class Gathered:
    """The FHIR data of one call."""

    resources: list[dict[str, Any]]
    not_fetched_keys: list[str] = field(default_factory=list)
    fetched_keys: list[str] = field(default_factory=list)  # fetched from the FHIR server by the service
    not_fetched_sections: frozenset[str] = frozenset()


_ABSENT = object()


def render(template: str, context: Mapping[str, Any]) -> str | None:
    """A template with its prefetch tokens replaced (values URL-encoded); None when a token has no value."""
    missing = False

    def value(m: re.Match[str]) -> str:
        nonlocal missing
        token = m.group(1)
        if token.startswith("context."):
            v = context.get(token[len("context."):])
        elif token in _USER_TOKENS:
            user = str(context.get("userId", ""))
            kind, _, uid = user.partition("/")
            v = uid if kind == _USER_TOKENS[token] else None
        else:
            v = None
        if not isinstance(v, str | int | float) or isinstance(v, bool) or v == "":
            missing = True
            return ""
        return quote(str(v), safe="")

    out = _TOKEN.sub(value, template)
    return None if missing else out


def patient_of(resource: Mapping[str, Any]) -> str | None:
    """The patient id a resource names (its subject or patient reference), when it names one."""
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return rid if isinstance(rid, str) else None
    for name in ("subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            m = _PATIENT_REF.search(ref["reference"].strip())
            if m:
                return m.group(1)
    return None


def _bundle_resources(bundle: Mapping[str, Any], where: str) -> tuple[list[dict[str, Any]], bool]:
    """(resources, complete): the entries of a search result, without OperationOutcome entries; complete is
    False when the result has further pages."""
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise BadRequest([f"{where}: Bundle.entry is not a list"])
    out: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise BadRequest([f"{where}: Bundle.entry[{i}] is not an object"])
        r = e.get("resource")
        search = e.get("search")
        if isinstance(search, dict) and search.get("mode") == "outcome":
            continue
        if r is None:
            continue
        if not isinstance(r, dict) or not isinstance(r.get("resourceType"), str):
            raise BadRequest([f"{where}: Bundle.entry[{i}].resource has no resourceType"])
        if r["resourceType"] == "OperationOutcome":
            continue
        out.append(r)
    links = bundle.get("link", [])
    more = isinstance(links, list) and any(isinstance(x, dict) and x.get("relation") == "next" for x in links)
    return out, not more


def read_value(key: str, value: Any) -> list[dict[str, Any]] | object:
    """A prefetch value as resources, or ``_ABSENT`` when the client could not satisfy the key."""
    where = f"prefetch.{key}"
    if value is None:
        return []  # "no data"
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise BadRequest([f"{where}: a prefetch value is a FHIR resource, a Bundle or null"])
    rtype = value["resourceType"]
    if rtype == "OperationOutcome":
        return _ABSENT  # the client reports that it could not prefetch this
    if rtype == "Bundle":
        resources, complete = _bundle_resources(value, where)
        return resources if complete else _ABSENT  # a partial result is not "the record"
    return [value]


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(parts: SplitResult) -> tuple[str, str, int | None] | None:
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port that is not a number, or out of range
        return None
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


def on_server(base: str, link: str) -> bool:
    """Whether a next-page ``link`` is on the FHIR server ``base``: the same scheme, host and port, no user
    information, and a path that is the base path or below it (HAPI FHIR's ``base?_getpages=...`` included)
    without ``.``/``..`` segments that would climb out of it."""
    b, u = urlsplit(base.rstrip("/")), urlsplit(link)
    if u.username is not None or u.password is not None or "\\" in link:
        return False
    origin = _origin(u)
    if origin is None or not origin[1] or origin != _origin(b):
        return False
    path, root = unquote(u.path), unquote(b.path).rstrip("/")
    if any(seg in (".", "..") for seg in path.split("/")):
        return False
    return path.rstrip("/") == root or path.startswith(root + "/")


class FhirFetcher:
    """Reads what prefetch did not bring from the client's FHIR server (httpx, with timeouts and limits)."""

    def __init__(self, cfg: FhirConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.client = client

    def usable(self, server: str | None, has_token: bool) -> str | None:
        """Why the request's FHIR server cannot be used, or None when it can."""
        if server is None or not has_token:
            return "the request has no fhirServer with fhirAuthorization"
        base = server.rstrip("/")
        scheme = urlsplit(base).scheme
        if scheme != "https" and not (scheme == "http" and self.cfg.allow_http):
            return "fhirServer is not https"
        if base not in self.cfg.servers:
            return "fhirServer is not one this service is configured to call"
        return None

    async def get(self, base: str, token: str, relative: str) -> list[dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        url = f"{base.rstrip('/')}/{relative}"
        out: list[dict[str, Any]] = []
        for _ in range(self.cfg.max_pages):
            try:
                response = await self.client.get(url, headers=headers, timeout=self.cfg.timeout_seconds)
            except httpx.TimeoutException:
                raise FetchFailed("the FHIR server did not answer in time") from None
            except httpx.HTTPError as exc:
                raise FetchFailed(f"the FHIR server could not be reached ({type(exc).__name__})") from None
            if response.status_code in (404, 410) and "?" not in relative:
                return []  # a read of a resource that does not exist: no data
            if response.status_code != 200:
                raise FetchFailed(f"the FHIR server answered HTTP {response.status_code}")
            try:
                body = orjson.loads(response.content)
            except orjson.JSONDecodeError:
                raise FetchFailed("the FHIR server's answer is not JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
                raise FetchFailed("the FHIR server's answer is not a FHIR resource")
            if body["resourceType"] != "Bundle":
                if body["resourceType"] == "OperationOutcome":
                    raise FetchFailed("the FHIR server answered with an OperationOutcome")
                return [body]
            try:
                page, _ = _bundle_resources(body, relative.split("?", maxsplit=1)[0])
            except BadRequest:
                raise FetchFailed("the FHIR server's search result is malformed") from None
            out.extend(page)
            if len(out) > self.cfg.max_resources:
                raise FetchFailed(f"more than {self.cfg.max_resources} resources")
            nxt = next((x.get("url") for x in body.get("link", []) or ()
                        if isinstance(x, dict) and x.get("relation") == "next"), None)
            if not isinstance(nxt, str):
                return out
            nxt = urljoin(url, nxt)  # a relative link is relative to the page that carries it
            if not on_server(base, nxt):
                raise FetchFailed("a next-page link points outside the FHIR server")  # never follow elsewhere
            url = nxt
        raise FetchFailed(f"more than {self.cfg.max_pages} pages")


async def gather(service: ServiceDef, queries: tuple[PrefetchQuery, ...], required: tuple[str, ...],
                 context: Mapping[str, Any], prefetch: Mapping[str, Any] | None, fhir_server: str | None,
                 token: str | None, fetcher: FhirFetcher) -> Gathered:
    """Every resource of the service's prefetch keys, as the request gave them or as fetched."""
    per_key: dict[str, list[dict[str, Any]]] = {}
    wanted: list[PrefetchQuery] = []
    for q in queries:
        value = read_value(q.key, prefetch[q.key]) if prefetch is not None and q.key in prefetch else _ABSENT
        if isinstance(value, list):
            per_key[q.key] = value
        else:
            wanted.append(q)
    failures: dict[str, str] = {}
    fetched: list[str] = []
    why_not = fetcher.usable(fhir_server, token is not None) if wanted else None
    if wanted and why_not is not None:
        failures = {q.key: why_not for q in wanted}
    elif wanted and fhir_server is not None and token is not None:
        jobs = {}
        for q in wanted:
            relative = render(q.template, context)
            if relative is None:
                failures[q.key] = "the context lacks a value its template needs"
            else:
                jobs[q.key] = fetcher.get(fhir_server, token, relative)
        try:
            results = await asyncio.wait_for(asyncio.gather(*jobs.values(), return_exceptions=True),
                                             fetcher.cfg.deadline_seconds)
        except TimeoutError:
            results = [FetchFailed("the FHIR server did not answer in time")] * len(jobs)
        for key, res in zip(jobs, results, strict=True):
            if isinstance(res, FetchFailed):
                failures[key] = str(res)
            elif isinstance(res, BaseException):
                raise res
            else:
                per_key[key] = res
                fetched.append(key)
    missing_required = [k for k in required if k in failures]
    if missing_required:
        raise PreconditionFailed([f"prefetch '{k}' was not provided and could not be fetched: {failures[k]}"
                                  for k in missing_required])
    not_fetched = [q.key for q in queries if q.key in failures]
    sections = frozenset(s for q in queries if q.key in failures for s in q.sections)
    resources: list[dict[str, Any]] = []
    for q in queries:
        resources.extend(per_key.get(q.key, ()))
    return Gathered(resources, not_fetched, fetched, sections)


__all__ = [
    "SERVICES",
    "BadRequest",
    "FetchFailed",
    "FhirFetcher",
    "Gathered",
    "PreconditionFailed",
    "PrefetchQuery",
    "ServiceDef",
    "build_queries",
    "gather",
    "on_server",
    "patient_of",
    "read_value",
    "render",
]

"""The HL7 CDS Hooks 2.0 service: a FastAPI application over the knowledge base.

Endpoints (``{id}`` is ``mascds-patient-view`` or ``mascds-order-sign``):

=========================================== ========================================================= =========
``GET  /cds-services``                      discovery                                                 JWT
``POST /cds-services/{id}``                 evaluate the patient's record; cards                      JWT
``POST /cds-services/{id}/feedback``        store feedback on cards (SQLite)                          JWT
``GET  /cds-services/{id}/feedback``        read the feedback stored from the caller's issuer        JWT
``GET  /rules/{rule_id}``                   the rule's documentation (cards link here)                public
``GET  /healthz``                           the knowledge base serving and the last reload            public
=========================================== ========================================================= =========

Every answer carries the knowledge base that produced it (``Mascds-KB-Name``, ``-Version``, ``-Hash`` headers,
and in JSON bodies an ``extension``); every error is a 4xx (or, for a fault of the service, 500)
OperationOutcome. Logs name the endpoint, status, duration and ``hookInstance``; never patient data, tokens or
exception messages (which may quote data).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import html
import logging
import os
import signal
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect

from ..core.errors import EvaluationError, LoadError, UsageError
from ..core.snapshot import Snapshot
from ..runtime.kb import default_rules_dir
from .auth import AuthError, Caller, ReplayCache, ReplayStoreError, SharedReplayStore, Verifier
from .cards import EXTENSION_KEY, CardContext, KnowledgeBaseView, build_cards
from .config import Settings
from .feedback import FeedbackStore, IssuedCard, StoreUnavailable
from .isolate import EvaluationFailed, IsolatedEvaluator, Job, Rejected, docs_url_for
from .models import (
    CDSHooksRequest,
    CDSHooksResponse,
    CDSService,
    CDSServicesResponse,
    FeedbackRequest,
    OrderSignContext,
    PatientViewContext,
    error_lines,
)
from .prefetch import (
    SERVICES,
    BadRequest,
    FhirFetcher,
    Gathered,
    PreconditionFailed,
    PrefetchQuery,
    ServiceDef,
    build_queries,
    gather,
    patient_of,
)
from .reload import KnowledgeBaseHolder, Reloader
from .timing import HEADER as TIMING_HEADER
from .timing import Timings

log = logging.getLogger("mascds.service")
# The HTTP client's loggers write every URL fetched (httpx at INFO, httpcore at DEBUG with response headers),
# and FHIR URLs carry the patient's id: they log warnings only, at any level the service runs at.
QUIET_LOGGERS = ("httpx", "httpcore")
STORE_RETRY_AFTER_SECONDS = 30
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]],
                    Callable[[MutableMapping[str, Any]], Awaitable[None]]], Awaitable[None]]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
DEV_CALLER = Caller("dev-no-auth", None, "")
ISSUE_CODES = {400: "invalid", 401: "security", 403: "forbidden", 404: "not-found", 405: "not-supported",
               412: "incomplete", 413: "too-long", 415: "not-supported", 500: "exception",
               503: "transient"}


class Problem(Exception):
    """An error answer: an OperationOutcome with one issue per line."""

    def __init__(self, status: int, lines: list[str], headers: dict[str, str] | None = None,
                 code: str | None = None) -> None:
        super().__init__("; ".join(lines))
        self.status = status
        self.lines = lines or ["error"]
        self.headers = headers or {}
        self.code = code or ISSUE_CODES.get(status, "processing")


def outcome_body(status: int, lines: list[str], code: str | None = None) -> bytes:
    issues = [{"severity": "error", "code": code or ISSUE_CODES.get(status, "processing"), "diagnostics": line}
              for line in lines]
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": issues})


def kb_headers(view: KnowledgeBaseView) -> dict[str, str]:
    return {"Mascds-KB-Name": view.kb.name, "Mascds-KB-Version": view.kb.version,
            "Mascds-KB-Hash": view.kb.content_hash}


def json_response(data: Any, view: KnowledgeBaseView, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json", headers=kb_headers(view))


def _place(exc: BaseException) -> str:
    """Where an exception arose: the innermost frame in mascds's own code, and the innermost of all."""
    frames = traceback.extract_tb(exc.__traceback__) if exc.__traceback__ else []
    ours = [f for f in frames if f"{os.sep}engine{os.sep}" in f.filename]
    shown = [f for f in (ours[-1:] + frames[-1:]) if f]
    return " < ".join(dict.fromkeys(f"{Path(f.filename).name}:{f.lineno}" for f in shown)) or "?"


class _TooLarge(Exception):
    pass


class Guard:
    """Outermost middleware: body size limit, the knowledge-base headers on every answer, an OperationOutcome
    for any fault, and one access-log line per request without patient data."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        limit = self.state.settings.max_body_bytes
        sent = {"status": 0}
        info: dict[str, Any] = {}
        scope["mascds"] = info
        scope["mascds.timings"] = Timings()  # (apart from info, which is logged)
        view = self.state.holder.current
        extra = kb_headers(view)
        if self.state.verifier is None:
            extra["Mascds-Auth"] = "disabled"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k.lower().encode(), v.encode()) for k, v in extra.items() if k.lower().encode() not in have]
            await send(message)

        async def fail(status: int, lines: list[str]) -> None:
            if sent["status"]:
                return
            body = outcome_body(status, lines)
            await send_with_headers({"type": "http.response.start", "status": status, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        try:
            declared = dict(scope.get("headers", [])).get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                await fail(413, [f"the request body is larger than {limit} bytes"])
                return
            seen = 0

            async def counted() -> Message:
                nonlocal seen
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        raise _TooLarge
                return message

            await self.app(scope, counted, send_with_headers)
        except _TooLarge:
            await fail(413, [f"the request body is larger than {limit} bytes"])
        except ClientDisconnect:  # the client went away before its request was read: nobody to answer
            info["client"] = "disconnected"
            log.info("client disconnected before the request was read on %s %s", scope.get("method"),
                     scope.get("path"))
        except Exception as exc:  # a fault of the service: logged by type and place only (messages may hold data)
            log.error("internal error %s at %s on %s %s", type(exc).__name__, _place(exc), scope.get("method"),
                      scope.get("path"))
            if os.environ.get("MASCDS_DEBUG"):  # the CLI's convention: full traceback on request (may hold data)
                log.error("traceback", exc_info=exc)
            await fail(500, ["internal error of the CDS service; it has been logged"])
        finally:
            ms = (time.perf_counter() - started) * 1000
            details = " ".join(f"{k}={v}" for k, v in info.items())
            log.info("%s %s %d %.1f ms %s", scope.get("method"), scope.get("path"), sent["status"], ms, details)


@dataclass
class ServiceState:
    settings: Settings
    holder: KnowledgeBaseHolder
    store: FeedbackStore
    queries: tuple[PrefetchQuery, ...]
    services: dict[str, ServiceDef]
    required: dict[str, tuple[str, ...]]
    verifier: Verifier | None = None
    fetcher: FhirFetcher | None = None
    http: httpx.AsyncClient | None = None
    reloader: Reloader | None = None
    dev_no_auth: bool = False
    cpu: concurrent.futures.ThreadPoolExecutor = field(default_factory=lambda: concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="mascds-evaluate"))
    evaluator: IsolatedEvaluator | None = None  # the evaluation child process (settings.isolate_evaluation)

    def docs_url(self, rule_id: str) -> str:
        return docs_url_for(self.settings, rule_id)

    def evaluate(self, view: KnowledgeBaseView, svc: ServiceDef, ctx: PatientViewContext, gathered: Gathered,
                 drafts: list[dict[str, Any]], now: float, timings: Timings) -> tuple[bytes, list[IssuedCard]]:
        """One call's evaluation, in the child process when there is one (on the evaluation thread): the answer
        (JSON bytes) and the cards to record."""
        if self.evaluator is None:
            ev = evaluate_call(view, svc, ctx, gathered, drafts, now, self.docs_url, timings,
                               fhir_reader_options(self.settings))
            answer = orjson.dumps(ev.response)
            timings.lap("serialise")
            return answer, ev.cards
        try:
            return self.evaluator.evaluate(Job(view.kb.content_hash, svc, ctx, gathered, drafts, now), timings)
        except Rejected as exc:
            raise Problem(exc.status, exc.lines, code=exc.code) from None
        except EvaluationFailed as exc:
            if exc.retry:
                raise Problem(503, [f"{exc}; try again"], {"Retry-After": "1"}) from None
            raise Problem(500, [f"{exc}; the fault has been logged and the service goes on"]) from None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def draft_resources(ctx: OrderSignContext, now: float) -> list[dict[str, Any]]:
    """The resources of ``draftOrders``, as of this call: a draft MedicationRequest without a subject is the
    context patient's, and one without a time (or dated after now) is taken as written now, the moment it is
    being signed."""
    out = []
    for entry in ctx.draftOrders.get("entry", []):
        r = dict(entry["resource"])
        if r["resourceType"] == "MedicationRequest":
            if "subject" not in r:
                r["subject"] = {"reference": f"Patient/{ctx.patientId}"}
            written = _parse_time(r.get("authoredOn"))
            if (written is None and "authoredOn" not in r) or (written is not None and written > now):
                r["authoredOn"] = _iso(now)
        out.append(r)
    return out


def _merge(drafts: list[dict[str, Any]], fetched: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Draft orders first, then the record without the stored copies of the drafts (the client's in-memory
    version wins). Other repeated resources are left to engine.records.fhir, which reads identical copies once and
    refuses copies that differ, for bundles and calls alike."""
    drafted = {(r["resourceType"], r["id"]) for r in drafts if isinstance(r.get("id"), str)}
    return [*drafts, *(r for r in fetched
                       if not isinstance(r.get("id"), str) or (r["resourceType"], r["id"]) not in drafted)]


def _check_patient(resources: list[dict[str, Any]], patient_id: str) -> bool:
    """Every resource is about the context's patient (or names none); True when one names it."""
    named = False
    for r in resources:
        who = patient_of(r)
        if who is None:
            continue
        if who != patient_id:
            rid = r.get("id")
            ref = f"{r['resourceType']}/{rid}" if isinstance(rid, str) else r["resourceType"]
            raise Problem(400, [f"{ref} is about another patient than context.patientId; a call carries one "
                                "patient's record"])
        named = True
    return named


@dataclass(frozen=True)
class Evaluation:
    cards: list[IssuedCard]
    response: dict[str, Any]


def evaluate_call(view: KnowledgeBaseView, service: ServiceDef, ctx: PatientViewContext, gathered: Gathered,
                  drafts: list[dict[str, Any]], now: float, docs_url: Callable[[str], str],
                  timings: Timings | None = None, reader: Mapping[str, Any] | None = None) -> Evaluation:
    """Snapshot -> result -> cards for one call (CPU only; no I/O). ``timings`` receives the duration of each
    stage (``fhir``, ``evaluate``, ``cards``, ``serialise``: the response model and its dump); ``reader`` holds the
    FHIR reader's options (:func:`fhir_reader_options`)."""
    from ..records.fhir import snapshot_from_resources

    clock = timings if timings is not None else Timings()
    resources = _merge(drafts, gathered.resources)
    names_patient = _check_patient(resources, ctx.patientId)
    try:
        ingest = snapshot_from_resources(resources, source=f"cds-hooks {service.id}",
                                         patient_id=ctx.patientId if names_patient else None,
                                         not_fetched=sorted(gathered.not_fetched_sections), **(reader or {}))
    except LoadError as exc:
        raise Problem(400, [f"{d.message}" + (f" (hint: {d.hint})" if d.hint else "")
                            for d in exc.diagnostics] or [exc.what]) from None
    except UsageError as exc:
        raise Problem(400, [str(exc)]) from None
    snapshot: Snapshot = ingest.snapshot
    clock.lap("fhir")
    try:
        result = view.kb.evaluate(snapshot, int(now))
    except EvaluationError:
        log.error("evaluation failed in the rule engine (%s)", service.id)
        raise Problem(500, ["the rule engine could not evaluate this record; the fault has been logged"]) from None
    clock.lap("evaluate")
    draft_refs = {f"MedicationRequest/{d['id']}" for d in drafts
                  if d.get("resourceType") == "MedicationRequest" and isinstance(d.get("id"), str)}
    draft_orders: dict[str, list[str]] = {}
    for o in snapshot.orders:
        if o.ref in draft_refs:
            draft_orders.setdefault(o.drug, []).append(o.ref)
    allergies: dict[str, list[str]] = {}
    for rx in snapshot.reactions:
        if rx.ref.startswith("AllergyIntolerance/"):
            allergies.setdefault(rx.drug, []).append(rx.ref)
    card_ctx = CardContext(
        hook=service.hook, patient_id=ctx.patientId, docs_url=docs_url,
        draft_orders={k: tuple(dict.fromkeys(v)) for k, v in draft_orders.items()},
        allergies={k: tuple(dict.fromkeys(v)) for k, v in allergies.items()},
        not_fetched=gathered.not_fetched_sections, not_fetched_keys=tuple(gathered.not_fetched_keys))
    cards = build_cards(result, view, card_ctx)
    issued = []
    for c in cards:
        ext = (c.extension or {}).get(EXTENSION_KEY, {})
        issued.append(IssuedCard.of(c, ext.get("kind", ""), ext.get("rule_id"), ext.get("rule_version")))
    clock.lap("cards")
    response = CDSHooksResponse(cards=cards, extension={EXTENSION_KEY: {
        "knowledge_base": view.to_json(), "evaluated_at": _iso(now), "complete": result.complete,
        "scope": result.scope.to_json(),
        **({"not_fetched": gathered.not_fetched_keys} if gathered.not_fetched_keys else {}),
        **({"fetched": gathered.fetched_keys} if gathered.fetched_keys else {}),
    }})
    dumped = response.model_dump(exclude_none=True)
    clock.lap("serialise")
    return Evaluation(issued, dumped)


def fhir_reader_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of :func:`engine.records.fhir.snapshot_from_resources` that come from the settings: the one
    place where a setting of the FHIR reader reaches the service process and the evaluation child alike:
    ``strict_fhir`` validates every element with the full fhir.resources models instead of the lean structs."""
    return {"strict": settings.strict_fhir}


def warm_up(view: KnowledgeBaseView, docs_url: Callable[[str], str],
            reader: Mapping[str, Any] | None = None) -> None:
    """One evaluation of a made-up record at start, so that the first real call does not pay for lazy imports
    (FHIR models) and first-use caches."""
    now = time.time()
    when = _iso(now - 3600)
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": "warm-up", "gender": "female", "birthDate": "2015-01-01"},
        {"resourceType": "Condition", "id": "warm-up-1", "subject": {"reference": "Patient/warm-up"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "201796004"}]}, "onsetDateTime": when},
        {"resourceType": "Observation", "id": "warm-up-2", "status": "final",
         "subject": {"reference": "Patient/warm-up"},
         "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]}, "effectiveDateTime": when,
         "valueQuantity": {"value": 2000, "unit": "ng/mL", "system": "http://unitsofmeasure.org", "code": "ng/mL"}},
    ]
    service = next(s for s in SERVICES if s.hook == "patient-view")
    ctx = PatientViewContext(userId="Practitioner/warm-up", patientId="warm-up")
    evaluate_call(view, service, ctx, Gathered(resources), [], now, docs_url, reader=reader)


def freeze_heap() -> None:
    """Move everything alive now (the knowledge base, the FHIR models, the libraries) out of the garbage
    collector's reach: a full collection over it stalled calls by about 60 ms; only request garbage is scanned
    from here on."""
    gc.collect()
    gc.freeze()


def rule_page(view: KnowledgeBaseView, rule_id: str) -> str:
    """A self-contained HTML page documenting one rule of the knowledge base being served."""
    from ..authoring.catalogue import EVIDENCE, condition_text
    from ..language.actions import target_label
    from ..language.fields import text_in

    kb = view.kb
    rule = kb.compiled.models[rule_id]
    compiled = next(r for r in kb.compiled.rules if r.id == rule_id)
    e = html.escape
    parts = [f"<h1>{e(text_in(rule.title))}</h1>",
             f"<p><code>{e(rule.id)}</code> version {e(rule.version)} · {e(rule.status)} · evidence: "
             f"{e(EVIDENCE.get(rule.evidence_level, rule.evidence_level))}</p>",
             f"<p>{e(text_in(rule.description))}</p>",
             f"<h2>When</h2><p>{e(condition_text(compiled.root))}</p>"]
    if rule.recommend is not None:
        items = "".join(f"<li><b>{e(a.kind.replace('_', ' '))}</b> {e(target_label(a.target))}: "
                        f"{e(text_in(a.text))}</li>"
                        for a in rule.recommend.actions)
        parts.append(f"<h2>Recommends ({e(rule.recommend.indicator)})</h2><p>{e(text_in(rule.recommend.rationale))}"
                     f"</p><ul>{items}</ul>")
    if rule.derive is not None:
        summary = text_in(rule.derive.summary) if rule.derive.summary is not None else ""
        parts.append(f"<h2>Derives</h2><p><code>{e(rule.derive.fact)}</code> {e(summary)}</p>")
    sources = []
    for s in rule.sources:
        link = f"https://doi.org/{s.doi}" if s.doi else f"https://pubmed.ncbi.nlm.nih.gov/{s.pmid}/"
        sources.append(f"<li><a href=\"{e(link)}\">{e(s.reference)}</a><br>Reported: {e(s.reported)}</li>")
    parts.append(f"<h2>Sources</h2><ol>{''.join(sources)}</ol>")
    parts.append(f"<p>Knowledge base {e(view.label)} <code>{e(kb.content_hash)}</code></p>")
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>"
            f"{e(rule.id)}</title></head><body>{''.join(parts)}</body></html>")


def create_app(settings: Settings, *, dev_no_auth: bool = False,
               holder: KnowledgeBaseHolder | None = None) -> FastAPI:
    """The service, ready for uvicorn. Loads the knowledge base now (:class:`~engine.core.errors.LoadError` if it
    cannot); ``dev_no_auth`` turns authentication off (development only; logged loudly)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    directory = settings.knowledge_base or default_rules_dir()
    holder = holder or KnowledgeBaseHolder(Path(directory))
    overrides = settings.services
    queries = build_queries()
    keys = {q.key for q in queries}
    required: dict[str, tuple[str, ...]] = {}
    for svc in SERVICES:
        chosen = overrides[svc.id].required_prefetch if svc.id in overrides else None
        required[svc.id] = tuple(chosen) if chosen is not None else svc.required
        unknown = [k for k in required[svc.id] if k not in keys]
        if unknown:
            raise UsageError(f"services.{svc.id}.required_prefetch: unknown prefetch key '{unknown[0]}'; "
                             f"the keys are {', '.join(sorted(keys))}")
    bad = [s for s in overrides if s not in {svc.id for svc in SERVICES}]
    if bad:
        raise UsageError(f"services: unknown service '{bad[0]}'")
    replays: ReplayCache | SharedReplayStore = ReplayCache()
    if settings.auth.replay_db is not None and not dev_no_auth:
        try:
            replays = SharedReplayStore(settings.auth.replay_db)
        except ReplayStoreError as exc:
            raise UsageError(f"auth.replay_db: {exc}") from None
    state = ServiceState(settings, holder, FeedbackStore(settings.feedback_db), queries,
                         {s.id: s for s in SERVICES}, required, dev_no_auth=dev_no_auth)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.http = httpx.AsyncClient(follow_redirects=False, limits=httpx.Limits(max_connections=100))
        state.fetcher = FhirFetcher(settings.fhir, state.http)
        if not dev_no_auth:
            state.verifier = Verifier(settings.auth, state.http, replays)
        else:
            log.warning("*" * 78)
            log.warning("AUTHENTICATION IS OFF (--dev-no-auth): any caller on this machine can send patient data "
                        "and read advice. Development only; never use with real patient data.")
            log.warning("*" * 78)
        state.reloader = Reloader(holder, settings.reload.watch, settings.reload.poll_seconds)
        state.reloader.start()
        loop = asyncio.get_running_loop()
        view = holder.current
        if settings.isolate_evaluation:
            state.evaluator = IsolatedEvaluator(settings, Path(directory))
            await asyncio.to_thread(state.evaluator.start)
        else:
            warm_up(view, state.docs_url, fhir_reader_options(settings))

        def hangup() -> None:
            assert state.reloader is not None
            state.reloader.request()
            if state.evaluator is not None:
                state.evaluator.signal(signal.SIGHUP)

        hup = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, hangup)
            hup = True
        freeze_heap()
        log.info("serving %s (%s) from %s; base URL %s; auth %s", view.label, view.kb.content_hash, directory,
                 settings.base_url, "OFF" if dev_no_auth else f"{len(settings.auth.issuers)} issuer(s)")
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            state.reloader.stop()
            state.cpu.shutdown(wait=True)
            if state.evaluator is not None:
                state.evaluator.close()
            await state.http.aclose()
            state.store.close()
            if isinstance(replays, SharedReplayStore):
                replays.close()

    app = FastAPI(title="mascds CDS Hooks service", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.mascds = state

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return Response(outcome_body(exc.status, exc.lines, exc.code), status_code=exc.status,
                        media_type="application/json", headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        what = {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(exc.status_code,
                                                                                        str(exc.detail))
        return Response(outcome_body(exc.status_code, [what]), status_code=exc.status_code,
                        media_type="application/json", headers=dict(exc.headers or {}))

    async def authenticate(request: Request, *audiences: str) -> Caller:
        if state.verifier is None:
            return DEV_CALLER
        try:
            return await state.verifier.verify(request.headers.get("authorization"), audiences)
        except AuthError as exc:
            log.info("authentication refused on %s: %s", request.url.path, exc)
            raise Problem(401, [str(exc)], {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        except ReplayStoreError as exc:  # neither accepted nor refused: the caller may retry with the same token
            log.error("token replay store unavailable on %s: %s", request.url.path, exc)
            raise Problem(503, ["the token could not be checked for replay (the shared replay store is "
                                "unavailable); try again"], {"Retry-After": "1"}) from None

    async def read_json(request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        if ctype and "json" not in ctype.lower():
            raise Problem(415, [f"the body must be JSON (Content-Type application/json), not {ctype[:60]}"])
        body = await request.body()
        if not body:
            raise Problem(400, ["the request has no body"])
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise Problem(400, [f"the body is not valid JSON: {exc}"], code="structure") from None

    def store_unavailable(exc: StoreUnavailable, what: str) -> Problem:
        # 503, not 200: nothing is acknowledged that was not stored; the client may send it again later.
        log.error("feedback database unavailable: %s", exc)
        return Problem(503, [f"{what}: the service's feedback database is unavailable (the fault has been "
                             "logged); send it again later"], {"Retry-After": str(STORE_RETRY_AFTER_SECONDS)})

    def service_of(service_id: str) -> ServiceDef:
        svc = state.services.get(service_id)
        if svc is None:
            raise Problem(404, [f"no CDS service '{service_id[:80]}'; see GET /cds-services"])
        return svc

    @app.get("/cds-services")
    async def discovery(request: Request) -> Response:
        await authenticate(request, settings.audience("/cds-services"))
        view = holder.current
        services = [CDSService(hook=s.hook, id=s.id, title=s.title, description=s.description,
                               prefetch={q.key: q.template for q in queries}, usageRequirements=s.usage(queries))
                    for s in SERVICES]
        body = CDSServicesResponse(services=services, extension={EXTENSION_KEY: {"knowledge_base": view.to_json()}})
        return json_response(body.model_dump(exclude_none=True), view)

    @app.post("/cds-services/{service_id}")
    async def call(service_id: str, request: Request) -> Response:
        timings: Timings = request.scope["mascds.timings"]
        timings.lap("http")
        svc = service_of(service_id)
        await authenticate(request, settings.audience(f"/cds-services/{svc.id}"))
        timings.lap("auth")
        data = await read_json(request)
        try:
            req = CDSHooksRequest.model_validate(data)
        except ValidationError as exc:
            raise Problem(400, error_lines(exc)) from None
        request.scope["mascds"]["hookInstance"] = req.hookInstance
        if req.hook != svc.hook:
            raise Problem(400, [f"hook '{req.hook[:60]}' is not this service's hook ({svc.hook})"])
        context_model = OrderSignContext if svc.hook == "order-sign" else PatientViewContext
        try:
            ctx = context_model.model_validate(req.context)
        except ValidationError as exc:
            raise Problem(400, error_lines(exc, "context")) from None
        auth = req.fhirAuthorization
        if auth is not None and auth.patient is not None and auth.patient != ctx.patientId:
            raise Problem(400, ["fhirAuthorization.patient is not context.patientId"])
        view = holder.current  # this call uses this knowledge base to the end, whatever reloads meanwhile
        if state.fetcher is None:
            raise Problem(503, ["the service is starting"])
        timings.lap("parse")
        try:
            gathered = await gather(svc, queries, state.required[svc.id], req.context, req.prefetch,
                                    req.fhirServer, auth.access_token if auth else None, state.fetcher)
        except BadRequest as exc:
            raise Problem(400, exc.lines) from None
        except PreconditionFailed as exc:
            raise Problem(412, exc.lines) from None
        log.debug("%s %s: %d resources; fetched %s; not fetched %s", svc.id, req.hookInstance,
                  len(gathered.resources), ",".join(gathered.fetched_keys) or "-",
                  ",".join(gathered.not_fetched_keys) or "-")  # key names only: no patient data
        now = time.time()
        drafts = draft_resources(ctx, now) if isinstance(ctx, OrderSignContext) else []
        loop = asyncio.get_running_loop()
        timings.lap("prefetch")

        # The CPU-bound part runs on one worker thread, in arrival order: the event loop stays free to read
        # request bodies and write answers meanwhile, which keeps the latency of queued calls even (evaluations
        # are serialised anyway: the rule engine holds the GIL and a lock).
        def work() -> tuple[bytes, list[IssuedCard]]:
            timings.lap("queue")
            answer, cards = state.evaluate(view, svc, ctx, gathered, drafts, now, timings)
            try:
                state.store.record_cards(svc.id, req.hookInstance, view.to_json(), cards)
            except StoreUnavailable as exc:  # the advice still goes out; only its feedback loses the rule
                log.error("issued cards not recorded: the feedback database is unavailable (%s)", exc)
            timings.lap("store")
            return answer, cards

        answer, cards = await loop.run_in_executor(state.cpu, work)
        timings.lap("queue")
        request.scope["mascds"]["cards"] = len(cards)
        headers = kb_headers(view)
        if settings.server_timing:
            headers[TIMING_HEADER] = timings.header((time.perf_counter() - timings.started) * 1e3)
        return Response(answer, status_code=200, media_type="application/json", headers=headers)

    @app.post("/cds-services/{service_id}/feedback")
    async def feedback(service_id: str, request: Request) -> Response:
        svc = service_of(service_id)
        caller = await authenticate(request, settings.audience(f"/cds-services/{svc.id}/feedback"),
                                    settings.audience(f"/cds-services/{svc.id}"))
        data = await read_json(request)
        try:
            fb = FeedbackRequest.model_validate(data)
        except ValidationError as exc:
            raise Problem(400, error_lines(exc)) from None
        try:
            stored = await run_in_threadpool(state.store.add_feedback, svc.id, fb.feedback,
                                             caller.issuer, caller.tenant)
        except StoreUnavailable as exc:
            raise store_unavailable(exc, "the feedback was not stored") from None
        request.scope["mascds"]["feedback"] = stored
        return json_response({"stored": stored}, holder.current)

    @app.get("/cds-services/{service_id}/feedback")
    async def read_feedback(service_id: str, request: Request) -> Response:
        svc = service_of(service_id)
        caller = await authenticate(request, settings.audience(f"/cds-services/{svc.id}/feedback"))
        q = request.query_params
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise Problem(400, ["limit is a number"]) from None
        own = state.verifier is not None
        try:
            rows = await run_in_threadpool(
                lambda: state.store.query(service_id=svc.id, rule_id=q.get("rule"), outcome=q.get("outcome"),
                                          since=q.get("since"), issuer=caller.issuer if own else None,
                                          tenant=caller.tenant if own else None, limit=limit))
        except StoreUnavailable as exc:
            raise store_unavailable(exc, "the feedback could not be read") from None
        return json_response({"feedback": rows}, holder.current)

    @app.get("/rules/{rule_id}")
    async def rule_doc(rule_id: str) -> Response:
        view = holder.current
        if rule_id not in view.rules:
            raise Problem(404, [f"no rule '{rule_id[:100]}' in {view.label}"])
        return Response(rule_page(view, rule_id), media_type="text/html; charset=utf-8", headers=kb_headers(view))

    @app.get("/healthz")
    async def health() -> Response:
        view = holder.current
        evaluation = {"isolated": state.evaluator is not None,
                      "restarts": state.evaluator.restarts if state.evaluator is not None else 0}
        return json_response({"status": "ok", "knowledge_base": view.to_json(), "reload": holder.status.to_json(),
                              "auth": "disabled" if dev_no_auth else "jwt", "evaluation": evaluation}, view)

    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, state=state)
    return app


__all__ = ["Problem", "ServiceState", "create_app", "draft_resources", "evaluate_call", "fhir_reader_options",
           "rule_page"]

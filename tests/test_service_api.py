"""The CDS Hooks service end to end: a real uvicorn server (``mascds serve``) on 127.0.0.1, driven with httpx,
with a fake EHR (JWK Set and FHIR server) on another local port. Every answer is validated against the CDS Hooks
models, the specification's invariants included (``checked``)."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import engine
from engine.core.vocab import vocabulary
from engine.records.fhir import snapshot_from_resources
from engine.records.fhir_codes import code_tables
from engine.runtime.result import Result
from engine.service.prefetch import on_server
from tests.test_service_harness import (
    FHIR_TOKEN,
    ORDER_SIGN,
    PATIENT_VIEW,
    ROOT,
    FakeEhr,
    ServiceProcess,
    Tokens,
    all_text,
    as_prefetch,
    card_rules,
    checked,
    draft_order,
    empty_record,
    hook_request,
    mas_record,
    observation,
    service_config,
    spec_example,
    tocilizumab_reaction_record,
)


@pytest.fixture(scope="module")
def service(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("service")
    proc = ServiceProcess(workdir, service_config(ehr, workdir))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=20) as c:
        yield c


@pytest.fixture(scope="module")
def kb() -> engine.KnowledgeBase:
    return engine.load_knowledge_base(ROOT / "rules")


def post(client: httpx.Client, tokens: Tokens, service_id: str, body: Any, **kw: Any) -> httpx.Response:
    path = f"/cds-services/{service_id}"
    return client.post(path, json=body, headers=tokens.header(path), **kw)


def expected(kb: engine.KnowledgeBase, record: dict[str, list[dict[str, Any]]],
             not_fetched: tuple[str, ...] = ()) -> Result:
    """What the engine itself says about a record now: the reference for the service's cards."""
    resources = [r for rs in record.values() for r in rs]
    snap = snapshot_from_resources(resources, not_fetched=not_fetched).snapshot
    return kb.evaluate(snap, int(time.time()))


def active(result: Result) -> set[str]:
    return {r.rule_id for r in result.recommendations if r.status == "active"}


# --- discovery -----------------------------------------------------------------------------------------------
def test_discovery_lists_the_services_and_their_prefetch(client: httpx.Client, tokens: Tokens) -> None:
    r = client.get("/cds-services", headers=tokens.header("/cds-services"))
    body = checked(r)
    services = {s["id"]: s for s in body["services"]}
    assert {(s["id"], s["hook"]) for s in body["services"]} == {(PATIENT_VIEW, "patient-view"),
                                                                 (ORDER_SIGN, "order-sign")}
    prefetch = services[PATIENT_VIEW]["prefetch"]
    assert prefetch["patient"] == "Patient/{{context.patientId}}"
    # The observation query asks for every LOINC code the FHIR mapping reads, and nothing else by LOINC.
    loinc = set(re.findall(r"http://loinc\.org\|([0-9-]+)", prefetch["observations"]))
    known = {c for a in vocabulary().analytes.values() for c in a.loinc} | set(code_tables().loinc)
    assert loinc == known
    assert body["extension"]["org.mascds"]["knowledge_base"]["content_hash"] == r.headers["mascds-kb-hash"]
    assert "required" in services[ORDER_SIGN]["usageRequirements"]


# --- patient-view ------------------------------------------------------------------------------------------------
def test_patient_view_cards_are_the_engines_recommendations(client: httpx.Client, tokens: Tokens,
                                                            kb: engine.KnowledgeBase) -> None:
    record = mas_record("pv-1")
    body = checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", "pv-1", as_prefetch(record))))
    reference = expected(kb, record)
    assert active(reference), "the test record is meant to make recommendations fire"
    assert set(card_rules(body, "recommendation")) == active(reference)
    assert set(card_rules(body, "undecided")) == {u.rule_id for u in reference.shown_undecided()}
    assert set(card_rules(body, "assessment")) == {a.rule_id for a in reference.assessments
                                                    if a.status == "met" or not a.reliable}
    # The patient's own values are in the explanations.
    assert "Observation/ferritin-pv-1" in all_text(body)
    assert body["extension"]["org.mascds"]["complete"] is True


def test_patient_view_fetches_what_prefetch_lacks_from_the_fhir_server(
        client: httpx.Client, tokens: Tokens, ehr: FakeEhr, kb: engine.KnowledgeBase) -> None:
    record = mas_record("pv-fetch")
    ehr.records["pv-fetch"] = record
    partial = as_prefetch(record, omit=("observations", "conditions"))
    req = hook_request("patient-view", "pv-fetch", partial, fhirServer=ehr.fhir, fhirAuthorization={
        "access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
        "subject": "mascds"})
    before = len(ehr.requests)
    body = checked(post(client, tokens, PATIENT_VIEW, req))
    fetched = ehr.requests[before:]
    assert sorted(p.split("?")[0] for p, _ in fetched) == ["/fhir/Condition", "/fhir/Observation"]
    assert all(auth == f"Bearer {FHIR_TOKEN}" for _, auth in fetched)
    assert any("patient=pv-fetch" in p for p, _ in fetched)
    assert body["extension"]["org.mascds"]["fetched"] == ["conditions", "observations"]
    assert set(card_rules(body, "recommendation")) == active(expected(kb, record))


def test_null_is_no_data_but_an_absent_key_is_not_fetched(client: httpx.Client, tokens: Tokens,
                                                          kb: engine.KnowledgeBase) -> None:
    record = empty_record("os-null")
    record["conditions"] = mas_record("os-null")["conditions"]
    drafts = [draft_order("os-null")]
    # adverse-events: null -> no adverse event is recorded; the reaction rules are decided (they do not fire).
    known = checked(post(client, tokens, ORDER_SIGN, hook_request(
        "order-sign", "os-null", as_prefetch(record), drafts=drafts)))
    # adverse-events absent (and no FHIR server) -> reactions were not fetched; the reaction rules are undecided.
    unknown = checked(post(client, tokens, ORDER_SIGN, hook_request(
        "order-sign", "os-null", as_prefetch(record, omit=("adverse-events",)), drafts=drafts)))
    assert unknown["extension"]["org.mascds"]["not_fetched"] == ["adverse-events"]
    assert unknown["extension"]["org.mascds"]["complete"] is False
    with_order = {**record, "medication-requests": [draft_order("os-null") | {"authoredOn": _now_iso()}]}
    undecided_when_unknown = {u.rule_id for u in expected(kb, with_order, ("reactions",)).indeterminate}
    undecided_when_none = {u.rule_id for u in expected(kb, with_order).indeterminate}
    gained = undecided_when_unknown - undecided_when_none
    assert "yang2023.tocilizumab-rechallenge" in gained
    assert set(card_rules(unknown, "undecided")) - set(card_rules(known, "undecided")) >= \
        {"yang2023.tocilizumab-rechallenge"}
    card = next(c for c in unknown["cards"] if c["extension"]["org.mascds"].get("rule_id")
                == "yang2023.tocilizumab-rechallenge")
    assert "not sent by the EHR" in card["detail"] and "`adverse-events`" in card["detail"]


def _now_iso() -> str:
    from tests.test_service_harness import iso

    return iso(time.time())


def test_required_data_that_cannot_be_had_is_412(client: httpx.Client, tokens: Tokens, ehr: FakeEhr) -> None:
    record = tocilizumab_reaction_record("os-412")
    r = post(client, tokens, ORDER_SIGN, hook_request("order-sign", "os-412", as_prefetch(record, omit=("allergies",)),
                                                      drafts=[draft_order("os-412")]))
    body = checked(r, 412)
    assert "prefetch 'allergies' was not provided" in body["issue"][0]["diagnostics"]
    # The specification's own patient-view example names a FHIR server this service is not allowed to call.
    r = post(client, tokens, PATIENT_VIEW, spec_example("patient-view-request.json"))
    text = all_text(checked(r, 412))
    assert "not one this service is configured to call" in text
    # The FHIR server fails, or is too slow: 412, in bounded time.
    auth = {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
            "subject": "mascds"}
    for pid, why in (("fhir-500", "HTTP 500"), ("fhir-slow", "did not answer in time")):
        ehr.records[pid] = mas_record(pid)
        (ehr.failing_patients if pid == "fhir-500" else ehr.slow_patients).add(pid)
        started = time.monotonic()
        r = post(client, tokens, PATIENT_VIEW, hook_request("patient-view", pid, fhirServer=ehr.fhir,
                                                            fhirAuthorization=auth))
        assert why in all_text(checked(r, 412))
        assert time.monotonic() - started < 3.0


def test_spec_patient_view_example_against_the_local_fhir_server(client: httpx.Client, tokens: Tokens,
                                                                 ehr: FakeEhr) -> None:
    req = spec_example("patient-view-request.json")
    pid = req["context"]["patientId"]
    record = empty_record(pid)
    record["patient"] = [req["prefetch"]["patientToGreet"]]
    ehr.records[pid] = record
    req["fhirServer"] = ehr.fhir
    req["fhirAuthorization"]["access_token"] = FHIR_TOKEN
    body = checked(post(client, tokens, PATIENT_VIEW, req))
    # Its prefetch key is not one of this service's: ignored, everything fetched; the record holds no sJIA, MAS or
    # HLH and none of the watched drugs, so it is out of the knowledge base's scope: no cards, and the reason why.
    assert len(body["extension"]["org.mascds"]["fetched"]) == 9
    assert body["cards"] == []
    scope = body["extension"]["org.mascds"]["scope"]
    assert scope["status"] == "out_of_scope" and any("no systemic juvenile" in r for r in scope["reasons"])


def test_paged_search_results_are_followed_and_partial_prefetch_is_not_trusted(
        client: httpx.Client, tokens: Tokens, ehr: FakeEhr, kb: engine.KnowledgeBase) -> None:
    record = mas_record("pv-paged")
    record["observations"] += [observation("pv-paged", "wbc", 3.1, 5), observation("pv-paged", "haemoglobin", 90, 5)]
    ehr.records["pv-paged"] = record
    ehr.page_size = 3
    try:
        auth = {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
                "subject": "mascds"}
        body = checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", "pv-paged",
                                                                       fhirServer=ehr.fhir, fhirAuthorization=auth)))
        assert ehr.hits("/fhir/Observation?") >= 3  # 8 observations in pages of 3
        assert set(card_rules(body, "recommendation")) == active(expected(kb, record))
    finally:
        ehr.page_size = None
    # A prefetched search result with a next page is not the whole record: without a FHIR server, 412.
    prefetch = as_prefetch(record)
    prefetch["observations"]["link"] = [{"relation": "next", "url": "https://ehr.invalid/fhir/Observation?page=2"}]
    checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", "pv-paged", prefetch)), 412)


FHIR_AUTH = {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
             "subject": "mascds"}


def test_hapi_style_next_links_on_the_base_are_followed(client: httpx.Client, tokens: Tokens, ehr: FakeEhr,
                                                         kb: engine.KnowledgeBase) -> None:
    """HAPI FHIR writes next pages as ``base?_getpages=ID&_getpagesoffset=N``: on the server, so followed."""
    record = mas_record("pv-hapi")
    ehr.records["pv-hapi"] = record
    ehr.page_size, ehr.page_style = 2, "hapi"
    try:
        body = checked(post(client, tokens, PATIENT_VIEW, hook_request(
            "patient-view", "pv-hapi", fhirServer=ehr.fhir, fhirAuthorization=FHIR_AUTH)))
        assert ehr.hits("/fhir?_getpages=") >= 2  # 6 observations in pages of 2
        assert set(card_rules(body, "recommendation")) == active(expected(kb, record))
    finally:
        ehr.page_size, ehr.page_style = None, "offset"


ELSEWHERE: dict[str, Callable[[FakeEhr, str, int], str]] = {
    "another host": lambda e, q, n: f"{e.url.replace('127.0.0.1', 'localhost')}{q}&_offset={n}",
    "another port": lambda e, q, n: f"http://127.0.0.1:{e.server.server_address[1] + 1}{q}&_offset={n}",
    "another scheme": lambda e, q, n: f"{e.url.replace('http:', 'https:')}{q}&_offset={n}",
    "a path beside the base": lambda e, q, n: f"{e.url}/fhir-other{q.removeprefix('/fhir')}&_offset={n}",
    "a path above the base": lambda e, q, n: f"{e.url}/jwks/ehr.json?_offset={n}",
    "dot segments": lambda e, q, n: f"{e.url}/fhir/../jwks/ehr.json?_offset={n}",
    "encoded dot segments": lambda e, q, n: f"{e.url}/fhir/%2e%2e/jwks/ehr.json?_offset={n}",
    "user information": lambda e, q, n: f"http://evil.invalid@127.0.0.1:{e.server.server_address[1]}{q}&_offset={n}",
}


@pytest.mark.parametrize("case", sorted(ELSEWHERE))
def test_next_links_off_the_fhir_server_are_not_followed(client: httpx.Client, tokens: Tokens, ehr: FakeEhr,
                                                         case: str) -> None:
    pid = f"pv-elsewhere-{sorted(ELSEWHERE).index(case)}"
    ehr.records[pid] = mas_record(pid)
    ehr.page_size = 2
    ehr.next_link = lambda q, n: ELSEWHERE[case](ehr, q, n)
    before = len(ehr.requests)
    try:
        body = checked(post(client, tokens, PATIENT_VIEW, hook_request(
            "patient-view", pid, fhirServer=ehr.fhir, fhirAuthorization=FHIR_AUTH)), 412)
    finally:
        ehr.page_size, ehr.next_link = None, None
    assert "a next-page link points outside the FHIR server" in all_text(body)
    assert not any("_offset=" in p for p, _ in ehr.requests[before:])  # no page followed


@pytest.mark.parametrize(("link", "allowed"), [
    ("https://ehr.example.org/fhir/Observation?page=2", True),
    ("https://ehr.example.org/fhir?_getpages=abc&_getpagesoffset=20", True),
    ("https://EHR.example.org:443/fhir/?_getpages=abc", True),
    ("https://ehr.example.org/fhir", True),
    ("http://ehr.example.org/fhir/Observation?page=2", False),
    ("https://ehr.example.org:8443/fhir/Observation?page=2", False),
    ("https://ehr.example.org.evil.test/fhir/Observation", False),
    ("https://ehr.example.org/fhirx/Observation", False),
    ("https://ehr.example.org/Observation?page=2", False),
    ("https://ehr.example.org/fhir/./Observation", False),
    ("https://ehr.example.org/fhir/%2E%2E/admin", False),
    ("https://a@ehr.example.org/fhir/Observation", False),
    ("https://ehr.example.org:99999/fhir/Observation", False),
    ("https://ehr.example.org\\@evil.test/fhir/Observation", False),
    ("//ehr.example.org/fhir/Observation", False),
])
def test_on_server(link: str, allowed: bool) -> None:
    assert on_server("https://ehr.example.org/fhir", link) is allowed


# --- order-sign and feedback --------------------------------------------------------------------------------------
def test_order_sign_tocilizumab_after_anaphylaxis_and_feedback_round_trip(
        client: httpx.Client, tokens: Tokens, service: ServiceProcess) -> None:
    pid = "os-tcz"
    req = hook_request("order-sign", pid, as_prefetch(tocilizumab_reaction_record(pid)), drafts=[draft_order(pid)])
    body = checked(post(client, tokens, ORDER_SIGN, req))
    first = body["cards"][0]
    assert first["indicator"] == "critical"
    assert first["extension"]["org.mascds"]["rule_id"] == "yang2023.tocilizumab-rechallenge"
    (suggestion,) = first["suggestions"]
    assert suggestion["actions"] == [{"type": "delete", "resourceId": "MedicationRequest/tcz-draft",
                                      "description": "Delete the draft order MedicationRequest/tcz-draft "
                                                     "(tocilizumab)"}]
    assert first["selectionBehavior"] == "any"
    assert first["source"]["url"].startswith("https://doi.org/10.")
    assert first["links"][0]["url"].endswith("/rules/yang2023.tocilizumab-rechallenge")

    path = f"/cds-services/{ORDER_SIGN}/feedback"
    override = body["cards"][1]
    feedback = {"feedback": [
        {"card": first["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion["uuid"]}],
         "outcomeTimestamp": "2026-01-05T10:05:31Z"},
        {"card": override["uuid"], "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:06:00Z",
         "overrideReason": {"reason": override["overrideReasons"][0], "userComment": "desensitisation planned"}}]}
    # Feedback may carry a token made for the feedback endpoint or for the service itself.
    service_path = f"/cds-services/{ORDER_SIGN}"
    stored = checked(client.post(path, json=feedback, headers=tokens.header(service_path)))
    assert stored == {"stored": 2}
    rows = checked(client.get(path, params={"rule": "yang2023.tocilizumab-rechallenge"},
                              headers=tokens.header(path)))["feedback"]
    assert [(r["outcome"], r["accepted_suggestions"][0]["label"]) for r in rows] == [
        ("accepted", "Delete the draft tocilizumab order")]
    assert rows[0]["knowledge_base"] == body["extension"]["org.mascds"]["knowledge_base"]
    # The command line reads the same durable store.
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(service.config_path),
                          "--show-feedback", "--outcome", "overridden"], capture_output=True, text=True, cwd=ROOT,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert [f["user_comment"] for f in shown["feedback"]] == ["desensitisation planned"]
    assert shown["feedback"][0]["override_reason"]["code"] == override["overrideReasons"][0]["code"]


def test_data_about_another_patient_is_refused(client: httpx.Client, tokens: Tokens) -> None:
    record = mas_record("pv-own")
    record["observations"].append(observation("someone-else", "ferritin", 900, 2))
    body = checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", "pv-own", as_prefetch(record))),
                   400)
    assert "Observation/ferritin-someone-else is about another patient" in body["issue"][0]["diagnostics"]


# --- bad requests: always a 4xx OperationOutcome -----------------------------------------------------------------
def _bad_requests() -> dict[str, tuple[str, dict[str, Any], int, str]]:
    ok = hook_request("patient-view", "bad-1", as_prefetch(mas_record("bad-1")))
    invalid_fhir = copy.deepcopy(ok)
    invalid_fhir["prefetch"]["observations"]["entry"][0]["resource"]["effectiveDateTime"] = "yesterday"
    return {
        "not JSON": (PATIENT_VIEW, {"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
                     "not valid JSON"),
        "a JSON array": (PATIENT_VIEW, {"json": [1, 2]}, 400, "valid dictionary"),
        "no hook": (PATIENT_VIEW, {"json": {k: v for k, v in ok.items() if k != "hook"}}, 400, "hook: Field required"),
        "another hook": (PATIENT_VIEW, {"json": ok | {"hook": "order-sign"}}, 400, "not this service's hook"),
        "hookInstance not a UUID": (PATIENT_VIEW, {"json": ok | {"hookInstance": "x"}}, 400, "not a UUID"),
        "no patientId": (PATIENT_VIEW, {"json": ok | {"context": {"userId": "Practitioner/1"}}}, 400,
                         "context.patientId"),
        "prefetch value is a string": (PATIENT_VIEW, {"json": ok | {"prefetch": {"patient": "Patient/1"}}}, 400,
                                       "prefetch.patient"),
        "fhirAuthorization without fhirServer": (PATIENT_VIEW, {"json": ok | {"fhirAuthorization": {
            "access_token": "t", "token_type": "Bearer", "expires_in": 1, "scope": "s", "subject": "x"}}}, 400,
            "cds-r-1"),
        "invalid FHIR resource": (PATIENT_VIEW, {"json": invalid_fhir}, 400, "Observation/temperature-bad-1"),
        "no draftOrders": (ORDER_SIGN, {"json": ok | {"hook": "order-sign"}}, 400, "context.draftOrders"),
        "unknown service": ("no-such-service", {"json": ok}, 404, "no CDS service"),
        "text body": (PATIENT_VIEW, {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "JSON"),
        "empty body": (PATIENT_VIEW, {"content": b"", "headers": {"content-type": "application/json"}}, 400,
                       "no body"),
    }


@pytest.mark.parametrize("case", sorted(_bad_requests()))
def test_bad_requests_get_a_4xx_operation_outcome(client: httpx.Client, tokens: Tokens, case: str) -> None:
    service_id, kwargs, status, message = _bad_requests()[case]
    path = f"/cds-services/{service_id}"
    headers = {**tokens.header(path), **kwargs.pop("headers", {})}
    body = checked(client.post(path, headers=headers, **kwargs), status)
    assert message in all_text(body)


def test_size_limit_and_wrong_methods(client: httpx.Client, tokens: Tokens) -> None:
    path = f"/cds-services/{PATIENT_VIEW}"
    big = b'{"hook": "' + b"x" * (11 * 1024 * 1024) + b'"}'
    checked(client.post(path, content=big, headers={**tokens.header(path), "content-type": "application/json"}), 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted while reading
        for _ in range(12):
            yield b" " * (1024 * 1024)

    checked(client.post(path, content=chunks(), headers={**tokens.header(path), "content-type": "application/json"}),
            413)
    checked(client.get(path, headers=tokens.header(path)), 405)
    checked(client.get("/nothing-here"), 404)


# --- documentation, health, logs ------------------------------------------------------------------------------
def test_rule_documentation_page(client: httpx.Client, kb: engine.KnowledgeBase) -> None:
    r = client.get("/rules/yang2023.tocilizumab-rechallenge")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    rule = kb.compiled.models["yang2023.tocilizumab-rechallenge"]
    assert f"https://doi.org/{rule.sources[0].doi}" in r.text and rule.version in r.text
    assert r.headers["mascds-kb-hash"] == kb.content_hash
    checked(client.get("/rules/no.such-rule"), 404)


def test_logs_hold_no_patient_data(client: httpx.Client, tokens: Tokens, service: ServiceProcess) -> None:
    # Values of 7 and 8 digits: a shorter one turns up in the random hex of hookInstance UUIDs now and then.
    secret_pid, secret_value = "PID-SECRET-4711", 9876543.0
    record = mas_record(secret_pid, ferritin=secret_value)
    checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", secret_pid, as_prefetch(record))))
    record["observations"].append(observation("OTHER-SECRET-1", "ferritin", 42424242, 1))
    checked(post(client, tokens, PATIENT_VIEW, hook_request("patient-view", secret_pid, as_prefetch(record))), 400)
    log = service.log()
    assert f"POST /cds-services/{PATIENT_VIEW} 200" in log
    for secret in (secret_pid, "9876543", "OTHER-SECRET", "42424242", "Bearer ey"):
        assert secret not in log
    assert "internal error" not in log


# --- concurrency --------------------------------------------------------------------------------------------------
def test_hundreds_of_simultaneous_calls_each_get_their_own_patients_answer(service: ServiceProcess,
                                                                           tokens: Tokens) -> None:
    n = 300
    path = f"/cds-services/{PATIENT_VIEW}"
    bodies = {f"cc-{i}": hook_request("patient-view", f"cc-{i}", as_prefetch(mas_record(f"cc-{i}", 1000 + i)))
              for i in range(n)}

    async def run() -> dict[str, httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as c:
            async def one(pid: str) -> tuple[str, httpx.Response]:
                return pid, await c.post(path, json=bodies[pid], headers=tokens.header(path))
            return dict(await asyncio.gather(*(one(pid) for pid in bodies)))

    started = time.monotonic()
    answers = asyncio.run(run())
    elapsed = time.monotonic() - started
    for i in range(n):
        pid = f"cc-{i}"
        body = checked(answers[pid])
        text = all_text(body)
        assert set(re.findall(r"Observation/ferritin-(cc-\d+)", text)) == {pid}, pid
        assert f"{1000 + i:g} ng/mL" in text or f"ferritin {1000 + i:g}" in text, pid
    assert elapsed < 60
    print(f"{n} simultaneous calls answered in {elapsed:.1f} s")


def test_every_answer_names_the_knowledge_base(client: httpx.Client, kb: engine.KnowledgeBase) -> None:
    health = checked(client.get("/healthz"))
    assert health["knowledge_base"] == {"name": kb.name, "version": kb.version, "content_hash": kb.content_hash}
    unauthenticated = checked(client.get("/cds-services"), 401)
    assert unauthenticated["issue"][0]["code"] == "security"


def test_the_service_module_loads_nothing_heavy_into_the_cli() -> None:
    # `mascds evaluate` does not import the web stack.
    out = subprocess.run([sys.executable, "-c", "import engine.cli, sys; engine.cli.build_parser(); "
                          "print('fastapi' in sys.modules, 'uvicorn' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert out.stdout.split() == ["False", "False"], out.stderr


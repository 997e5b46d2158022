"""What the service writes to its log: no patient identifier at any level, whatever the call did (prefetch,
FHIR fetches with paging, refusals, feedback), from its own loggers or the libraries' (httpx, httpcore,
uvicorn); and a client that goes away mid-request is not an internal error."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest

from tests.test_service_harness import (
    FHIR_TOKEN,
    ORDER_SIGN,
    PATIENT_VIEW,
    FakeEhr,
    ServiceProcess,
    Tokens,
    as_prefetch,
    checked,
    draft_order,
    hook_request,
    mas_record,
    service_config,
    tocilizumab_reaction_record,
    wait_until,
)

# Distinctive ids: any of them in the log is a leak (the prefetch, FHIR fetch and paging calls use one each).
PREFETCHED, FETCHED, PAGED, HAPI, REFUSED = (f"zq{n}-secret-pt" for n in "vwxyz")
FHIR_AUTH = {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
             "subject": "mascds"}


@pytest.fixture(scope="module")
def service(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("logs")
    proc = ServiceProcess(workdir, service_config(ehr, workdir, log_level="debug"))
    yield proc
    proc.stop()


def post(url: str, tokens: Tokens, service_id: str, body: object) -> httpx.Response:
    path = f"/cds-services/{service_id}"
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.post(path, json=body, headers=tokens.header(path))


def test_no_patient_identifier_in_any_log_line_at_debug_level(service: ServiceProcess, ehr: FakeEhr,
                                                              tokens: Tokens) -> None:
    checked(post(service.url, tokens, PATIENT_VIEW, hook_request("patient-view", PREFETCHED,
                                                                 as_prefetch(mas_record(PREFETCHED)))))
    for pid, style in ((FETCHED, None), (PAGED, "offset"), (HAPI, "hapi")):
        ehr.records[pid] = mas_record(pid)
        ehr.page_size, ehr.page_style = (2, style) if style else (None, "offset")
        try:
            checked(post(service.url, tokens, PATIENT_VIEW, hook_request(
                "patient-view", pid, fhirServer=ehr.fhir, fhirAuthorization=FHIR_AUTH)))
        finally:
            ehr.page_size, ehr.page_style = None, "offset"
    assert ehr.hits(f"patient={PAGED}&") and ehr.hits("_getpages=")
    # Refusals: a failing FHIR server (412), a record about another patient (400), an order-sign call with
    # feedback on its cards.
    ehr.failing_patients.add(REFUSED)
    checked(post(service.url, tokens, PATIENT_VIEW, hook_request(
        "patient-view", REFUSED, fhirServer=ehr.fhir, fhirAuthorization=FHIR_AUTH)), 412)
    checked(post(service.url, tokens, PATIENT_VIEW, hook_request(
        "patient-view", REFUSED, as_prefetch(mas_record(PREFETCHED)))), 400)
    body = checked(post(service.url, tokens, ORDER_SIGN, hook_request(
        "order-sign", REFUSED, as_prefetch(tocilizumab_reaction_record(REFUSED)), drafts=[draft_order(REFUSED)])))
    feedback = {"feedback": [{"card": body["cards"][0]["uuid"], "outcome": "overridden", "outcomeTimestamp":
                              "2026-01-01T00:00:00Z", "overrideReason": {"userComment": "seen"}}]}
    checked(post(service.url, tokens, f"{ORDER_SIGN}/feedback", feedback))
    wait_until(lambda: "POST /cds-services/mascds-order-sign/feedback 200" in service.log(), what="the access line")
    log = service.log()
    assert "DEBUG mascds.service: mascds-patient-view" in log, "the log is at debug level"
    for pid in (PREFETCHED, FETCHED, PAGED, HAPI, REFUSED):
        assert pid not in log and quote(pid) not in log, f"{pid} in the log:\n{log}"
    assert "/fhir/" not in log and "_getpages" not in log, "no FHIR query (each carries the patient) is logged"


def test_a_client_that_goes_away_is_not_an_internal_error(service: ServiceProcess, tokens: Tokens) -> None:
    host, port = service.url.removeprefix("http://").split(":")
    path = f"/cds-services/{PATIENT_VIEW}"
    for _ in range(3):  # the body announced, half sent, then the connection closed
        with socket.create_connection((host, int(port))) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      f"Authorization: Bearer {tokens.make(path)}\r\nContent-Length: 5000\r\n\r\n{{\"hook\"".encode())
            time.sleep(0.2)
    wait_until(lambda: service.log().count("client disconnected") >= 3, what="the disconnects to be logged")
    log = service.log()
    assert "internal error" not in log and "ClientDisconnect" not in log, log
    checked(httpx.get(f"{service.url}/healthz", timeout=10))

"""Fuzz of the CDS Hooks service from outside: a real server (``mascds serve``) and a fake EHR, sent mutated
CDS Hooks requests (context, prefetch contents, FHIR records fetched with paging), feedback posts, raw bodies and
headers, and tokens with mutated JWT headers and claims.

Properties: no 5xx; every refusal is a documented 4xx with an OperationOutcome (401 with ``WWW-Authenticate``);
a token is accepted exactly when it is valid; a card's Markdown has no link but the service's own; each request
is answered in bounded time; no patient id reaches the log. The inputs that once broke the service are explicit
``@example`` regressions.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import time
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import cmarkgfm
import httpx
import jwt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engine.service.models import OperationOutcome
from tests.fuzz.conftest import fuzz
from tests.test_service_harness import (
    BASE_URL,
    FHIR_TOKEN,
    ISSUER,
    ORDER_SIGN,
    PATIENT_VIEW,
    FakeEhr,
    Keys,
    ServiceProcess,
    Tokens,
    as_prefetch,
    draft_order,
    hook_request,
    mas_record,
    service_config,
    tocilizumab_reaction_record,
)

PID = "fz-secret-pid"  # never in the log
DISCOVERY = "/cds-services"
MAX_SECONDS = 15.0  # per request (the FHIR deadline of the service under test is 2 s)
DOCUMENTED = {400, 401, 404, 405, 412, 413, 415}
FHIR_AUTH = {"access_token": FHIR_TOKEN, "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read",
             "subject": "mascds"}


@pytest.fixture(scope="module")
def service(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("fuzz-service")
    config = service_config(ehr, workdir, log_level="debug", max_body_bytes=256 * 1024)
    config["auth"]["leeway_seconds"] = 30
    proc = ServiceProcess(workdir, config)
    yield proc
    proc.stop()
    log = proc.log()
    assert PID not in log and "Bearer ey" not in log, "no patient id and no token in the log"
    assert "internal error" not in log and "Traceback" not in log, log[-5000:]


@pytest.fixture(scope="module")
def client(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=MAX_SECONDS + 5) as c:
        yield c


def send(client: httpx.Client, method: str, path: str, **kw: Any) -> httpx.Response:
    started = time.monotonic()
    response = client.request(method, path, **kw)
    assert time.monotonic() - started < MAX_SECONDS, f"{method} {path} took too long"
    return response


def refusal(response: httpx.Response, allowed: set[int]) -> dict[str, Any] | None:
    """None for a 200; else check a documented refusal with an OperationOutcome and return it."""
    assert response.status_code < 500, (response.status_code, response.text[:1000])
    for header in ("mascds-kb-name", "mascds-kb-version", "mascds-kb-hash"):
        assert response.headers.get(header), f"missing {header}"
    if response.status_code == 200:
        return None
    assert response.status_code in allowed, (response.status_code, response.text[:1000])
    body: dict[str, Any] = response.json()
    OperationOutcome.model_validate(body)
    if response.status_code == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert body["issue"][0]["code"] == "security"
    return body


# --- mutations of JSON documents ---------------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)
# Values that have broken FHIR mappings and engines: extremes, wrong types, link-like and markup-like text.
SPECIAL = st.sampled_from([
    0, -1, 1e-300, 5e-324, 1e300, 2**63, -2**63, 10**40, 0.1, "", " ", "0", "1e-300", "NaN", "Infinity", "null",
    True, False, None, [], {}, "www.example.org/x", "https://evil.test/x", "a@b.test", "[x](https://evil.test)",
    "<script>", "Patient/other", "Patient/" + PID, "1900-01-01", "9999-12-31T23:59:59Z", "2026-13-45", "\u0000",
    "\ud7ff" * 3, "x" * 5000,
])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: Any, max_changes: int = 4) -> Any:
    """``base`` with 1 to ``max_changes`` changes: a value deleted, replaced (by a special or random JSON value),
    given another type, or a list entry duplicated."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_changes))):
        paths = list(_paths(doc))
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = _at(doc, path[:-1]), path[-1]
        op = draw(st.sampled_from(["delete", "special", "json", "string", "duplicate"]))
        if op == "delete":
            del parent[key]
        elif op == "special":
            parent[key] = draw(SPECIAL)
        elif op == "json":
            parent[key] = draw(JSON)
        elif op == "string":
            parent[key] = json.dumps(parent[key])
        elif isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
    return doc


def _with_link_text(record: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Record text that GFM would make a link: an Observation id and a unit as written."""
    out = copy.deepcopy(record)
    out["observations"][0]["id"] = "www.example.org"
    out["observations"][1]["valueQuantity"]["unit"] = "www.example.org/x"
    return out


BASE_RECORD = mas_record(PID)
PATIENT_VIEW_BASE = hook_request("patient-view", PID, as_prefetch(BASE_RECORD))
ORDER_SIGN_BASE = hook_request("order-sign", PID, as_prefetch(tocilizumab_reaction_record(PID)),
                               drafts=[draft_order(PID)])


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [v or "" for k, v in attrs if k in ("href", "src")]


def check_cards(body: dict[str, Any]) -> None:
    """The only links in a card's detail (rendered by cmark-gfm, autolinks on) are the sources' pages."""
    for card in body["cards"]:
        parser = _Links()
        parser.feed(cmarkgfm.github_flavored_markdown_to_html(card.get("detail", "")))
        for href in parser.hrefs:
            assert href.startswith(("https://doi.org/", "https://pubmed.ncbi.nlm.nih.gov/")), (href, card["detail"])


def _hook(client: httpx.Client, tokens: Tokens, service_id: str, body: Any) -> httpx.Response:
    path = f"/cds-services/{service_id}"
    return send(client, "POST", path, content=json.dumps(body, allow_nan=True).encode(),
                headers={**tokens.header(path), "Content-Type": "application/json"})


# --- CDS Hooks requests ------------------------------------------------------------------------------------------
@fuzz
@given(st.sampled_from([PATIENT_VIEW, ORDER_SIGN]).flatmap(
    lambda s: st.tuples(st.just(s), mutated(PATIENT_VIEW_BASE if s == PATIENT_VIEW else ORDER_SIGN_BASE))))
@example((PATIENT_VIEW, hook_request("patient-view", PID, as_prefetch(_with_link_text(BASE_RECORD)))))
@example((PATIENT_VIEW, {**PATIENT_VIEW_BASE, "prefetch": None}))
@example((ORDER_SIGN, {**ORDER_SIGN_BASE, "context": {**ORDER_SIGN_BASE["context"], "draftOrders": []}}))
@example((ORDER_SIGN, {**ORDER_SIGN_BASE, "prefetch": {  # an id that is not a string beside a draft order
    **ORDER_SIGN_BASE["prefetch"], "patient": {**ORDER_SIGN_BASE["prefetch"]["patient"], "id": []}}}))
def test_mutated_hook_requests(client: httpx.Client, tokens: Tokens, call: tuple[str, Any]) -> None:
    service_id, body = call
    response = _hook(client, tokens, service_id, body)
    if refusal(response, {400, 412, 413}) is None:
        check_cards(response.json())


@fuzz
@given(mutated(BASE_RECORD, max_changes=3), st.sampled_from([None, "offset", "hapi"]), st.integers(1, 4))
@example(_with_link_text(BASE_RECORD), "hapi", 2)  # HAPI FHIR's base?_getpages= links, on the server: followed
@example(BASE_RECORD, "offset", 1)
def test_mutated_records_fetched_from_the_fhir_server(client: httpx.Client, tokens: Tokens, ehr: FakeEhr,
                                                      record: Any, paging: str | None, page_size: int) -> None:
    pid = f"{PID}-ehr"
    ehr.records[pid] = {k: [r for r in v if isinstance(r, dict)] if isinstance(v, list) else []
                        for k, v in record.items()} if isinstance(record, dict) else {}
    ehr.records[pid].setdefault("patient", [])
    for resources in ehr.records[pid].values():  # the FHIR server answers for the patient it was asked about
        for r in resources:
            for name in ("subject", "patient"):
                if isinstance(r.get(name), dict) and r[name].get("reference") == f"Patient/{PID}":
                    r[name] = {"reference": f"Patient/{pid}"}
            if r.get("resourceType") == "Patient":
                r["id"] = pid
    ehr.page_size, ehr.page_style = (page_size, paging) if paging else (None, "offset")
    try:
        response = _hook(client, tokens, PATIENT_VIEW, hook_request("patient-view", pid, fhirServer=ehr.fhir,
                                                                    fhirAuthorization=FHIR_AUTH))
    finally:
        ehr.page_size, ehr.page_style = None, "offset"
    outcome = refusal(response, {400, 412})
    if outcome is None:
        check_cards(response.json())
    else:
        assert "outside the FHIR server" not in json.dumps(outcome), "links on the server are followed"


@fuzz
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode),
       st.sampled_from(["application/json", "application/fhir+json", "text/plain", "", "application/json; x=\u00e9",
                        "multipart/form-data; boundary=x"]))
@example(b"", "application/json")
@example(b"[]", "application/json")
@example(b'{"hook": "patient-view"', "application/json")
@example(b"NaN", "application/json")
@example(b"x" * (300 * 1024), "application/json")
def test_raw_bodies_and_content_types(client: httpx.Client, tokens: Tokens, body: bytes, ctype: str) -> None:
    path = f"/cds-services/{PATIENT_VIEW}"
    headers: dict[str, str | bytes] = {**tokens.header(path), **({"Content-Type": ctype.encode()} if ctype else {})}
    refusal(send(client, "POST", path, content=body, headers=headers), {400, 413, 415})


FEEDBACK_BASE = {"feedback": [{"card": str(uuid.UUID(int=7)), "outcome": "overridden",
                               "outcomeTimestamp": "2026-01-01T00:00:00Z",
                               "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/"
                                                                       "non-adherence-reason-codes",
                                                             "code": "risk-benefit-ratio"},
                                                  "userComment": "seen"}},
                              {"card": str(uuid.UUID(int=8)), "outcome": "accepted",
                               "acceptedSuggestions": [{"id": str(uuid.UUID(int=9))}],
                               "outcomeTimestamp": "2026-01-01T00:00:00+01:00"}]}


@fuzz
@given(mutated(FEEDBACK_BASE))
@example(FEEDBACK_BASE)
@example({"feedback": []})
def test_mutated_feedback(client: httpx.Client, tokens: Tokens, body: Any) -> None:
    path = f"/cds-services/{ORDER_SIGN}/feedback"
    response = send(client, "POST", path, content=json.dumps(body).encode(),
                    headers={**tokens.header(path), "Content-Type": "application/json"})
    if refusal(response, {400}) is None:
        stored = response.json()["stored"]
        assert isinstance(body, dict) and stored == len(body["feedback"])


# --- tokens --------------------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


TIME = st.sampled_from([0, 60, 300, -60, -600, 1000, "float", "string", "bool", "null", "list", "huge", "nan",
                        "inf", "absent"])


def _time(form: Any, now: int, default: int) -> Any:
    """A NumericDate claim in one of its forms ("absent" leaves it out)."""
    return {"float": now + default + 0.5, "string": str(now + default), "bool": True, "null": None,
            "list": [now + default], "huge": 1e300, "nan": math.nan, "inf": math.inf}.get(form, form) \
        if isinstance(form, str) else now + form


@st.composite
def token_cases(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "alg": draw(st.sampled_from(["ES384", "RS384", "ES256", "none", "HS256", "RS256", "PS384", "EdDSA", "es384",
                                     ""])),
        "kid": draw(st.sampled_from(["right", "ec-1", "rsa-1", "ec-plain", "ec-404", "", 7, None])),
        "typ": draw(st.sampled_from(["JWT", "jwt", "at+jwt", None, 1])),
        "jku": draw(st.sampled_from([None, "https://evil.test/jwks", 5])),
        "extra_header": draw(st.sampled_from([None, {"crit": ["exp"]}, {"x5u": "https://evil.test"}, {"b64": False}])),
        "iss": draw(st.sampled_from([ISSUER, ISSUER + "/", "https://evil.test", 1, None])),
        "aud": draw(st.sampled_from(["right", "list", "list-without", "other", "empty-list", 3, None, "nested"])),
        "exp": draw(st.sampled_from([300, 60, -60, 1000, "float", "string", "bool", "null", "list", "huge", "nan",
                                     "inf", "absent"])),
        "iat": draw(st.sampled_from([0, -60, 60, -600, "float", "string", "bool", "null", "absent"])),
        "nbf": draw(st.sampled_from(["absent", -60, 60, "string", "bool", "float"])),
        "jti": draw(st.sampled_from(["unique", "", 5, None])),
        "tenant": draw(st.sampled_from([None, "hospital-7", 9])),
        "corrupt": draw(st.sampled_from([None, "signature", "payload", "truncate", "extra-dot"])),
        "key": draw(st.sampled_from(["right", "rogue"])),
    }


def build_token(keys: Keys, case: dict[str, Any], path: str) -> tuple[str, bool]:
    """The token for ``case`` and whether the service must accept it."""
    now = int(time.time())
    audience = f"{BASE_URL}{path}"
    aud = {"right": audience, "list": ["https://other.test", audience], "list-without": ["https://other.test"],
           "other": f"{BASE_URL}/elsewhere", "empty-list": [], "nested": [[audience]]}.get(case["aud"], case["aud"]) \
        if isinstance(case["aud"], str) else case["aud"]
    claims: dict[str, Any] = {"iss": case["iss"], "aud": aud, "jti": str(uuid.uuid4()) if case["jti"] == "unique"
                              else case["jti"], "tenant": case["tenant"]}
    for name, default in (("exp", 300), ("iat", 0), ("nbf", 0)):
        if case[name] != "absent":
            claims[name] = _time(case[name], now, default)
    claims = {k: v for k, v in claims.items() if v is not None or k in ("exp", "iat", "nbf")}
    alg = case["alg"]
    kid = {"right": "ec-1" if alg.startswith("ES") else "rsa-1"}.get(case["kid"], case["kid"]) \
        if isinstance(case["kid"], str) else case["kid"]
    header: dict[str, Any] = {"alg": alg, "kid": kid, "typ": case["typ"], **(case["extra_header"] or {})}
    if case["jku"] is not None:
        header["jku"] = case["jku"]
    header = {k: v for k, v in header.items() if v is not None}
    signing = {"ES384": keys.ec, "ES256": keys.ec, "RS384": keys.rsa, "RS256": keys.rsa, "PS384": keys.rsa}
    if alg in signing:
        key = keys.rogue if case["key"] == "rogue" and alg.startswith("ES") else signing[alg]
        if alg == "ES256":
            key = keys.rogue if case["key"] == "rogue" else keys.ec  # a P-384 key: not valid for ES256
        try:
            token = jwt.encode(claims, key, algorithm=alg, headers=header)
        except Exception:  # PyJWT refuses to sign some combinations: send them unsigned, as a forger would
            token = ""
    else:
        token = ""
    if not token:
        sig = b"" if alg == "none" else b"\x01" * 64
        token = (f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims, allow_nan=True).encode())}"
                 f".{_b64(sig)}")
    if case["corrupt"] == "signature":
        head, payload, sig = token.split(".")
        token = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    elif case["corrupt"] == "payload":
        head, _, sig = token.split(".")
        token = f"{head}.{_b64(json.dumps({**claims, 'iss': ISSUER}, allow_nan=True).encode())}x.{sig}"
    elif case["corrupt"] == "truncate":
        token = token[: len(token) // 2]
    elif case["corrupt"] == "extra-dot":
        token += ".x"
    right_key = (alg == "ES384" and kid in ("ec-1", "ec-plain") and case["key"] == "right") or \
        (alg == "RS384" and kid == "rsa-1")  # (a rogue key is drawn for EC algorithms only)
    valid = (
        right_key and case["typ"] in ("JWT", "jwt") and case["jku"] is None
        and case["extra_header"] in (None, {"x5u": "https://evil.test"}) and case["iss"] == ISSUER
        and case["aud"] in ("right", "list") and case["exp"] in (300, 60, "float") and case["iat"] in (0, -60, "float")
        and case["nbf"] in ("absent", -60, "float") and case["jti"] == "unique" and case["corrupt"] is None)
    return token, valid


@fuzz
@given(token_cases())
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": None, "iss": ISSUER,
          "aud": "right", "exp": "string", "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})  # exp as a numeric string: not a NumericDate
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": None, "iss": ISSUER,
          "aud": "right", "exp": "bool", "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})  # exp true: a bool is an int in Python, not a NumericDate
@example({"alg": "RS384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": None, "iss": ISSUER,
          "aud": "list", "exp": 300, "iat": "bool", "nbf": "string", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": None, "iss": ISSUER,
          "aud": "right", "exp": "inf", "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": None, "iss": ISSUER,
          "aud": "right", "exp": 300, "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})  # a valid token: accepted
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": {"crit": ["exp"]},
          "iss": ISSUER, "aud": "right", "exp": 300, "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})  # a critical header extension the service does not know: refused
@example({"alg": "ES384", "kid": "right", "typ": "JWT", "jku": None, "extra_header": {"b64": False},
          "iss": ISSUER, "aud": "right", "exp": 300, "iat": 0, "nbf": "absent", "jti": "unique", "tenant": None,
          "corrupt": None, "key": "right"})
def test_mutated_tokens(client: httpx.Client, keys: Keys, case: dict[str, Any]) -> None:
    token, valid = build_token(keys, case, DISCOVERY)
    response = send(client, "GET", DISCOVERY, headers={"Authorization": f"Bearer {token}"})
    refusal(response, {401})
    assert (response.status_code == 200) == valid, (case, response.text[:500])


@fuzz
@given(st.sampled_from(["Bearer", "bearer", "Basic", "Token", "", "Bearer  ", "Bearer\t"]),
       st.text(max_size=80) | st.sampled_from(["a.b.c", "..", "e30.e30.", "e30.e30.e30", "x" * 20000]))
@example("Bearer", "eyJhbGciOiJub25lIn0.e30.")
def test_mutated_authorization_headers(client: httpx.Client, scheme: str, value: str) -> None:
    header = f"{scheme} {value}".encode("utf-8", "replace").strip()
    try:
        response = send(client, "GET", DISCOVERY, headers={"Authorization": header})
    except httpx.LocalProtocolError:
        return  # not a header HTTP/1.1 can carry (control characters): the client cannot send it
    if response.status_code == 400 and response.text == "Invalid HTTP request received.":
        # Not valid HTTP/1.1 (a control character in a header value): refused by the HTTP server before the
        # service sees it, as docs/cds-hooks.md says - the only answer that is not an OperationOutcome.
        assert any((c < 0x20 and c != 0x09) or c == 0x7F for c in header), header
        return
    refusal(response, {401})
    assert response.status_code != 200

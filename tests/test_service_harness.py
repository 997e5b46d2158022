"""Shared harness of the CDS Hooks service tests (no tests of its own are collected from here).

* :class:`Keys` - signing keys made with ``cryptography`` and their public JWK Set;
* :class:`FakeEhr` - a local HTTP server (127.0.0.1, a free port) that plays the EHR: it publishes JWK Sets and
  answers FHIR reads and searches from in-memory patient records, recording every request;
* :class:`ServiceProcess` - ``python -m engine.cli serve`` started as a real uvicorn server on a free port;
* :class:`Tokens` - signed JWTs for the service's endpoints, with every claim overridable;
* record builders that write patient data relative to the current time, and :func:`checked`, which validates
  every answer against the CDS Hooks models (the specification's invariants included).

Nothing here reaches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.core.vocab import vocabulary
from engine.service.models import CDSHooksResponse, CDSServicesResponse, OperationOutcome

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "tests" / "fixtures" / "cds-hooks"
BASE_URL = "https://cds.test.invalid/mascds"
ISSUER = "https://ehr.test.invalid"
FHIR_TOKEN = "fhir-access-token-for-tests"
PATIENT_VIEW = "mascds-patient-view"
ORDER_SIGN = "mascds-order-sign"
PREFETCH_TYPES = {"patient": "Patient", "conditions": "Condition", "observations": "Observation",
                  "medication-requests": "MedicationRequest", "medication-administrations": "MedicationAdministration",
                  "medication-statements": "MedicationStatement", "allergies": "AllergyIntolerance",
                  "adverse-events": "AdverseEvent", "procedures": "Procedure"}


def spec_example(name: str) -> Any:
    return json.loads((SPEC / name).read_text(encoding="utf-8"))


# --- keys and tokens ---------------------------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Keys:
    """An ES384 key and an RS384 key published in the EHR's JWK Set, and an unpublished 'rogue' key."""

    def __init__(self) -> None:
        self.ec = ec.generate_private_key(ec.SECP384R1())
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rogue = ec.generate_private_key(ec.SECP384R1())
        plain = {k: v for k, v in self._jwk(self.ec, "ec-plain", "ES384").items() if k not in ("alg", "use")}
        self.published: dict[str, dict[str, Any]] = {
            "ec-1": self._jwk(self.ec, "ec-1", "ES384"), "rsa-1": self._jwk(self.rsa, "rsa-1", "RS384"),
            "ec-plain": plain}

    @staticmethod
    def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
        algorithm = jwt.get_algorithm_by_name(alg)
        jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
        return jwk | {"kid": kid, "alg": alg, "use": "sig"}

    def jwks(self) -> dict[str, Any]:
        return {"keys": list(self.published.values())}

    def public_pem(self) -> bytes:
        return self.ec.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


class Tokens:
    def __init__(self, keys: Keys, issuer: str = ISSUER, base_url: str = BASE_URL) -> None:
        self.keys, self.issuer, self.base_url = keys, issuer, base_url

    def claims(self, path: str, **over: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": f"{self.base_url}{path}", "exp": now + 300, "iat": now,
                  "jti": str(uuid.uuid4())}
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def make(self, path: str, *, alg: str = "ES384", kid: str | None = None, key: Any = None,
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key if key is not None else (self.keys.ec if alg.startswith("ES") else self.keys.rsa)
        kid = kid if kid is not None else ("ec-1" if alg.startswith("ES") else "rsa-1")
        return jwt.encode(self.claims(path, **claims), key, algorithm=alg,
                          headers={"kid": kid, "typ": "JWT", **(headers or {})})

    def unsigned(self, path: str) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": "ec-1"}).encode())
        return f"{header}.{_b64(json.dumps(self.claims(path)).encode())}."

    def hmac_with_public_key(self, path: str) -> str:
        """HS256 keyed with the issuer's public key: the classic algorithm-confusion forgery."""
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "ec-1"}).encode())
        body = _b64(json.dumps(self.claims(path)).encode())
        sig = hmac.new(self.keys.public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
        return f"{header}.{body}.{_b64(sig)}"

    def header(self, path: str, **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.make(path, **kw)}"}


# --- patient records ------------------------------------------------------------------------------------------
def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def observation(pid: str, analyte: str, value: float, hours_ago: float, rid: str | None = None) -> dict[str, Any]:
    a = vocabulary().analytes[analyte]
    return {
        "resourceType": "Observation", "id": rid or f"{analyte}-{pid}", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": a.loinc[0], "display": a.name}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": iso(time.time() - hours_ago * 3600),
        "valueQuantity": {"value": value, "unit": a.canonical, "system": "http://unitsofmeasure.org",
                          "code": a.canonical},
    }


def empty_record(pid: str) -> dict[str, list[dict[str, Any]]]:
    record: dict[str, list[dict[str, Any]]] = {key: [] for key in PREFETCH_TYPES}
    record["patient"] = [{"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "2016-03-01"}]
    return record


def sjia(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": f"sjia-{pid}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "201796004",
                             "display": "Systemic onset juvenile chronic arthritis"}]},
        "subject": {"reference": f"Patient/{pid}"}, "onsetDateTime": iso(time.time() - 200 * 86400),
    }


def mas_record(pid: str, ferritin: float = 2400) -> dict[str, list[dict[str, Any]]]:
    """sJIA with active MAS by the 2016 classification (fever, high ferritin, low platelets and fibrinogen, high AST
    and triglycerides), measured in the last hours, no glucocorticoids."""
    record = empty_record(pid)
    record["conditions"] = [sjia(pid)]
    record["observations"] = [
        observation(pid, "temperature", 39.6, 3), observation(pid, "ferritin", ferritin, 5),
        observation(pid, "platelets", 96, 5), observation(pid, "ast", 140, 5),
        observation(pid, "triglycerides", 310, 5), observation(pid, "fibrinogen", 140, 5),
    ]
    return record


def tocilizumab_reaction_record(pid: str) -> dict[str, list[dict[str, Any]]]:
    """sJIA; tocilizumab given 60 days ago with anaphylaxis 20 minutes later, recorded as an AllergyIntolerance."""
    record = empty_record(pid)
    record["conditions"] = [sjia(pid)]
    given = time.time() - 60 * 86400
    record["medication-administrations"] = [{
        "resourceType": "MedicationAdministration", "id": f"tcz-given-{pid}", "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": "612865", "display": "tocilizumab"}]},
        "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": iso(given),
    }]
    record["allergies"] = [allergy(pid, given + 1200)]
    return record


def allergy(pid: str, when: float) -> dict[str, Any]:
    return {
        "resourceType": "AllergyIntolerance", "id": f"tcz-allergy-{pid}",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]},
        "category": ["medication"], "criticality": "high",
        "code": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "612865",
                             "display": "tocilizumab"}]},
        "patient": {"reference": f"Patient/{pid}"}, "recordedDate": iso(when),
        "reaction": [{"manifestation": [{"coding": [{"system": "http://snomed.info/sct", "code": "39579001",
                                                     "display": "Anaphylaxis"}]}],
                      "severity": "severe", "onset": iso(when)}],
    }


def draft_order(pid: str, rid: str = "tcz-draft", rxnorm: str = "612865", name: str = "tocilizumab") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm",
                                                  "code": rxnorm, "display": name}]},
        "subject": {"reference": f"Patient/{pid}"},
    }


def searchset(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
            "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources]}


def as_prefetch(record: dict[str, list[dict[str, Any]]], omit: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record as the client would prefetch it: a resource for the read, searchsets, null for "no data"."""
    out: dict[str, Any] = {}
    for key, resources in record.items():
        if key in omit:
            continue
        if key == "patient":
            out[key] = resources[0] if resources else None
        else:
            out[key] = searchset(resources) if resources else None
    return out


def hook_request(hook: str, pid: str, prefetch: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/dr-1", "patientId": pid}
    if hook == "order-sign":
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": r} for r in extra.pop("drafts", [])]}
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context}
    if prefetch is not None:
        body["prefetch"] = prefetch
    body.update(extra)
    return body


# --- the fake EHR -------------------------------------------------------------------------------------------------
class FakeEhr:
    """JWK Sets and a FHIR server over HTTP on 127.0.0.1."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.records: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.page_size: int | None = None
        # How a next-page link is written: "offset" (the search URL with _offset=N) or "hapi" (HAPI FHIR's
        # base?_getpages=ID&_getpagesoffset=N); a function (search path?query, next offset) -> URL overrides both.
        self.page_style = "offset"
        self.next_link: Callable[[str, int], str] | None = None
        self.pages: dict[str, str] = {}  # HAPI _getpages id -> the search path?query it continues
        self.requests: list[tuple[str, str | None]] = []  # (path with query, Authorization)
        self.slow_patients: set[str] = set()
        self.failing_patients: set[str] = set()
        ehr = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                ehr.requests.append((self.path, self.headers.get("Authorization")))
                status, body = ehr.answer(self.path, self.headers.get("Authorization"))
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/fhir+json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the service gave up waiting (the slow-server test)

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default backlog of 5 delays parallel connects by a SYN retry (1 s)
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def fhir(self) -> str:
        return f"{self.url}/fhir"

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks/ehr.json"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def hits(self, fragment: str) -> int:
        return sum(1 for p, _ in self.requests if fragment in p)

    def answer(self, raw: str, authorization: str | None) -> tuple[int, Any]:
        parts = urlsplit(raw)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/jwks/ehr.json":
            return 200, self.keys.jwks()
        if path.startswith("/jwks/"):
            return 404, {}
        if path == "/fhir" and "_getpages" in query:  # a HAPI FHIR page of an earlier search
            search = self.pages.get(query["_getpages"][0])
            if search is None:
                return 404, {}
            raw = f"{search}&_offset={query.get('_getpagesoffset', ['0'])[0]}"
            parts = urlsplit(raw)
            path, query = parts.path, parse_qs(parts.query)
        if not path.startswith("/fhir/"):
            return 404, {}
        if authorization != f"Bearer {FHIR_TOKEN}":
            return 401, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}
        segments = path.removeprefix("/fhir/").split("/")
        rtype = segments[0]
        key = next((k for k, t in PREFETCH_TYPES.items() if t == rtype), None)
        if key is None:
            return 404, {}
        if len(segments) == 2:  # a read: Patient/{id}
            pid = segments[1]
        else:
            ref = (query.get("patient") or query.get("subject") or [""])[0]
            pid = ref.removeprefix("Patient/")
        if pid in self.slow_patients:
            time.sleep(3)
        if pid in self.failing_patients:
            return 500, {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
        record = self.records.get(pid)
        if len(segments) == 2:
            return (200, record["patient"][0]) if record and record["patient"] else (404, {})
        resources = record.get(key, []) if record else []
        offset = int((query.get("_offset") or ["0"])[0])
        if self.page_size is None:
            return 200, searchset(resources)
        page = searchset(resources[offset:offset + self.page_size])
        if offset + self.page_size < len(resources):
            search, nxt = f"{path}?{parts.query.split('&_offset=')[0]}", offset + self.page_size
            if self.next_link is not None:
                url = self.next_link(search, nxt)
            elif self.page_style == "hapi":
                page_id = hashlib.sha256(search.encode()).hexdigest()[:16]
                self.pages[page_id] = search
                url = f"{self.fhir}?_getpages={page_id}&_getpagesoffset={nxt}&_count={self.page_size}"
            else:
                url = f"{self.url}{search}&_offset={nxt}"
            page["link"] = [{"relation": "next", "url": url}]
        return 200, page


# --- the service as a real process ----------------------------------------------------------------------------------
class ServiceProcess:
    """``mascds serve`` in a subprocess, listening on 127.0.0.1 on a free port."""

    def __init__(self, workdir: Path, config: dict[str, Any], args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "service.yaml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = workdir / "service.log"
        self._log = self.log_path.open("wb")
        environ = {k: v for k, v in os.environ.items() if not k.startswith("MASCDS_SERVICE_")}
        environ.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "serve", "--config", str(self.config_path), "--port", "0", *args],
            cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=environ)
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        url = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited ({self.proc.returncode}):\n{self.log()}")
            if url is None:
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log())
                url = m.group(1) if m else None
            if url is not None:
                try:
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the service did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int = signal.SIGHUP) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()


def service_config(ehr: FakeEhr, workdir: Path, **over: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "base_url": BASE_URL,
        "knowledge_base": str(ROOT / "rules"),
        "feedback_db": str(workdir / "feedback.sqlite3"),
        "auth": {"issuers": [{"iss": ISSUER, "jwks_url": ehr.jwks_url}], "allow_http": True},
        "fhir": {"servers": [ehr.fhir], "allow_http": True, "timeout_seconds": 1.0, "deadline_seconds": 2.0},
        "reload": {"watch": False},
    }
    config.update(over)
    return config


def wait_until(predicate: Callable[[], bool], timeout: float = 20, what: str = "the server") -> None:
    """Poll ``predicate`` until it holds; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- checking answers ------------------------------------------------------------------------------------------------
def checked(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The JSON body, after checking the status, the knowledge-base headers and the body's model: a service answer
    (CDSHooksResponse), a discovery answer (CDSServicesResponse) or an error (OperationOutcome)."""
    assert response.status_code == status, (response.status_code, response.text[:2000])
    for header in ("mascds-kb-name", "mascds-kb-version", "mascds-kb-hash"):
        assert response.headers.get(header), f"missing {header}"
    body: dict[str, Any] = response.json()
    if status >= 400:
        OperationOutcome.model_validate(body)
    elif "services" in body:
        CDSServicesResponse.model_validate(body)
    elif "cards" in body:
        CDSHooksResponse.model_validate(body)
    return body


def card_rules(body: dict[str, Any], kind: str | None = None) -> list[str]:
    """The rule id of each card (from its extension), optionally only cards of one kind."""
    out = []
    for c in body["cards"]:
        ext = c.get("extension", {}).get("org.mascds", {})
        if kind is None or ext.get("kind") == kind:
            out.append(ext.get("rule_id"))
    return out


def all_text(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False)


def iter_actions(body: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for c in body["cards"]:
        for s in c.get("suggestions", ()):
            for a in s.get("actions", ()):
                yield c, a

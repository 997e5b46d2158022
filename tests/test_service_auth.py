"""Authentication of CDS clients (CDS Hooks 2.0, Trusting CDS Clients): signed JWTs checked by a real server.

Each refused token gets a 401 OperationOutcome (issue code ``security``) with ``WWW-Authenticate: Bearer`` and a
reason that does not repeat the token."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from engine.service.auth import AuthError, ReplayCache, ReplayStoreError, SharedReplayStore, Verifier
from engine.service.config import AuthConfig, IssuerConfig
from tests.test_service_harness import (
    BASE_URL,
    ISSUER,
    PATIENT_VIEW,
    SPEC,
    FakeEhr,
    Keys,
    ServiceProcess,
    Tokens,
    checked,
    service_config,
    spec_example,
)

SECOND_ISSUER = "https://second-ehr.test.invalid"
DISCOVERY = "/cds-services"
SERVICE = f"/cds-services/{PATIENT_VIEW}"


@pytest.fixture(scope="module")
def client(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    workdir = tmp_path_factory.mktemp("auth")
    config = service_config(ehr, workdir)
    config["auth"] = {
        "issuers": [{"iss": ISSUER, "jwks_url": ehr.jwks_url},
                    {"iss": SECOND_ISSUER, "jku": [ehr.jwks_url]}],  # this one names its JWK Set with jku
        "allow_http": True, "jwks_min_refresh_seconds": 0.2, "max_token_lifetime_seconds": 600,
        "leeway_seconds": 30,
    }
    proc = ServiceProcess(workdir, config)
    with httpx.Client(base_url=proc.url, timeout=10) as c:
        yield c
    proc.stop()
    assert "Bearer ey" not in proc.log(), "tokens are never logged"


def refused(response: httpx.Response, reason: str) -> None:
    body = checked(response, 401)
    assert body["issue"][0]["code"] == "security"
    assert reason in body["issue"][0]["diagnostics"], body
    assert response.headers["www-authenticate"].startswith("Bearer")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_valid_tokens_are_accepted(client: httpx.Client, tokens: Tokens, ehr: FakeEhr) -> None:
    checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY)))  # ES384
    checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, alg="RS384")))
    checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, aud=[f"{BASE_URL}{DISCOVERY}", "https://x"])))
    checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, tenant="hospital-7")))
    # An issuer whose tokens name their JWK Set with an allowlisted jku.
    second = Tokens(tokens.keys, issuer=SECOND_ISSUER)
    checked(client.get(DISCOVERY, headers=second.header(DISCOVERY, headers={"jku": ehr.jwks_url})))


def test_a_token_without_a_header_or_with_a_garbled_one(client: httpx.Client) -> None:
    refused(client.get(DISCOVERY), "no Authorization header")
    refused(client.get(DISCOVERY, headers={"Authorization": "Basic dXNlcjpwdw=="}), "not a Bearer token")
    refused(client.get(DISCOVERY, headers={"Authorization": "Bearer"}), "not a Bearer token")
    refused(client.get(DISCOVERY, headers={"Authorization": "Bearer not-a-jwt"}), "not a well-formed JWT")
    refused(client.get(DISCOVERY, headers={"Authorization": "Bearer a!.b?.c"}), "not a well-formed JWT")
    refused(client.get(DISCOVERY, headers={"Authorization": "Bearer " + "a.b.c" * 5000}), "not a well-formed JWT")


NEGATIVE: dict[str, tuple[dict[str, Any], str]] = {
    "expired": ({"exp": -600, "iat": -900}, "has expired"),
    "wrong audience": ({"aud": f"{BASE_URL}/cds-services/another-service"}, "aud is not this endpoint"),
    "another host's audience": ({"aud": f"https://elsewhere.invalid{DISCOVERY}"}, "aud is not this endpoint"),
    "unknown issuer": ({"iss": "https://evil.invalid"}, "issuer is not trusted"),
    "no jti": ({"jti": None}, "no jti claim"),
    "no iat": ({"iat": None}, "no iat claim"),
    "no exp": ({"exp": None}, "no exp claim"),
    "issued in the future": ({"iat": 600, "exp": 900}, "not valid yet"),
    "lives too long": ({"exp": 7200}, "lives longer than 600 s"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_claims_are_checked(client: httpx.Client, tokens: Tokens, case: str) -> None:
    over, reason = NEGATIVE[case]
    now = int(time.time())
    claims = {k: (now + v if k in ("exp", "iat") and v is not None else v) for k, v in over.items()}
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, **claims)), reason)


NOT_NUMERIC_DATES: dict[str, dict[str, Any]] = {
    "exp as a numeric string": {"exp": "+300"},
    "iat as a numeric string": {"iat": "+0"},
    "nbf as a numeric string": {"nbf": "+0"},
    "exp true": {"exp": True},
    "iat true": {"iat": True},
    "nbf false": {"nbf": False},
    "exp infinite": {"exp": float("inf")},
    "iat not a number": {"iat": float("nan")},
    "exp a list": {"exp": ["+300"]},
    "exp null": {"exp": "null"},
}


@pytest.mark.parametrize("case", sorted(NOT_NUMERIC_DATES))
def test_times_are_numeric_dates(client: httpx.Client, tokens: Tokens, case: str) -> None:
    """RFC 7519: exp, iat and nbf are JSON numbers. "+300" stands for a time 300 s from now written as a string."""
    now = int(time.time())
    claims = {k: (str(now + int(v)) if isinstance(v, str) and v[0] == "+" else None if v == "null" else
                  [str(now + int(v[0]))] if isinstance(v, list) else v)
              for k, v in NOT_NUMERIC_DATES[case].items()}
    name = next(iter(claims))
    if claims[name] is None:  # JSON null: the claim is there, and is not a number
        token = jwt.encode({**tokens.claims(DISCOVERY), name: None}, tokens.keys.ec, algorithm="ES384",
                           headers={"kid": "ec-1", "typ": "JWT"})
        response = client.get(DISCOVERY, headers=bearer(token))
    else:
        response = client.get(DISCOVERY, headers=tokens.header(DISCOVERY, **claims))
    refused(response, f"{name} is not a NumericDate")


def test_fractional_numeric_dates_are_accepted(client: httpx.Client, tokens: Tokens) -> None:
    now = time.time()
    checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, exp=now + 300.5, iat=now - 0.25, nbf=now - 1.5)))


def test_the_signature_and_the_key_are_checked(client: httpx.Client, tokens: Tokens, keys: Keys,
                                               ehr: FakeEhr) -> None:
    # Signed by a key the issuer never published, under the kid of one it did.
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, key=keys.rogue, kid="ec-1")),
            "signature does not verify")
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, kid="ec-404")), "kid is not in the issuer's")
    refused(client.get(DISCOVERY, headers={"Authorization": f"Bearer {tokens.unsigned(DISCOVERY)}"}),
            "alg none")
    refused(client.get(DISCOVERY, headers={"Authorization": f"Bearer {tokens.hmac_with_public_key(DISCOVERY)}"}),
            "HMAC")
    # An RSA signature presented under an EC key's kid: the key does not suit the algorithm, whether the JWK says
    # its algorithm or only its key type.
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, alg="RS384", kid="ec-1")),
            "key is for ES384, not RS384")
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, alg="RS384", kid="ec-plain")),
            "key type EC does not suit RS384")
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, headers={"typ": "at+jwt"})), "typ is not JWT")
    # ES256 under the kid of a key published for ES384.
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, alg="ES256", key=_p256(), kid="ec-1")),
            "key is for ES384, not ES256")
    # A jku that is not allowlisted is refused without being fetched.
    before = ehr.hits("/jwks/rogue.json")
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, headers={"jku": f"{ehr.url}/jwks/rogue.json"})),
            "jku is not an allowed")
    assert ehr.hits("/jwks/rogue.json") == before


def _p256() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def test_a_replayed_token_is_refused(client: httpx.Client, tokens: Tokens) -> None:
    token = tokens.make(DISCOVERY)
    checked(client.get(DISCOVERY, headers=bearer(token)))
    refused(client.get(DISCOVERY, headers=bearer(token)), "already used (jti replay)")
    # The same jti in a new token from the same issuer is a replay too.
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    refused(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, jti=jti)), "jti replay")


def test_a_token_is_bound_to_the_endpoint_it_was_made_for(client: httpx.Client, tokens: Tokens) -> None:
    refused(client.post(SERVICE, json={}, headers=tokens.header(DISCOVERY)), "aud is not this endpoint")
    refused(client.get(DISCOVERY, headers=tokens.header(SERVICE)), "aud is not this endpoint")
    # Authentication comes first: an unauthenticated call learns nothing about its body.
    refused(client.post(SERVICE, content=b"{not json"), "no Authorization header")


def test_a_rotated_key_is_fetched(client: httpx.Client, tokens: Tokens, keys: Keys) -> None:
    new = _p384()
    keys.published["ec-2"] = Keys._jwk(new, "ec-2", "ES384")
    try:
        time.sleep(0.3)  # past the configured minimum refresh interval
        checked(client.get(DISCOVERY, headers=tokens.header(DISCOVERY, key=new, kid="ec-2")))
    finally:
        del keys.published["ec-2"]


def _p384() -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP384R1())


def test_the_specifications_example_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JWT published in the specification verifies against its published JWK Set and is then refused only
    because it expired in 2015; with one signature byte changed, the signature fails."""
    header, payload = spec_example("jwt-header.json"), spec_example("jwt-payload.json")
    token = (SPEC / "jwt-example.txt").read_text().strip()
    cfg = AuthConfig(issuers=[IssuerConfig(iss=payload["iss"], jku=[header["jku"]])],
                     max_token_lifetime_seconds=86_400)
    verifier = Verifier(cfg, httpx.AsyncClient())
    jwks = spec_example("jwks-public.json")

    async def fetch(url: str) -> dict[str, dict[str, Any]]:
        assert url == header["jku"]
        return {k["kid"]: k for k in jwks["keys"]}

    monkeypatch.setattr(verifier.jwks, "_fetch", fetch)
    with pytest.raises(AuthError, match="has expired"):
        asyncio.run(verifier.verify(f"Bearer {token}", (payload["aud"],)))
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    with pytest.raises(AuthError, match="signature does not verify"):
        asyncio.run(verifier.verify(f"Bearer {tampered}", (payload["aud"],)))


def test_replay_cache_forgets_expired_tokens_and_fails_closed_when_full() -> None:
    cache = ReplayCache(max_entries=2)
    now = time.time()
    assert cache.add("i", "a", now + 10, now) and not cache.add("i", "a", now + 10, now)
    assert cache.add("other-issuer", "a", now + 10, now)
    assert not cache.add("i", "b", now + 10, now), "full: refuse rather than forget a live jti"
    assert cache.add("i", "b", now + 10, now + 20), "expired entries are purged"


def test_a_shared_replay_store_refuses_a_token_seen_by_another_instance(tmp_path: Path) -> None:
    path = tmp_path / "replay.sqlite3"
    first, second = SharedReplayStore(path), SharedReplayStore(path)  # two instances on one host
    now = time.time()
    assert first.add("i", "a", now + 10, now)
    assert not second.add("i", "a", now + 10, now), "seen by the other instance: a replay"
    assert not first.add("i", "a", now + 10, now)
    assert second.add("other-issuer", "a", now + 10, now)
    assert len(first) == 2
    first.close()
    second.close()
    reopened = SharedReplayStore(path, max_entries=2)  # survives a restart
    assert not reopened.add("i", "a", now + 10, now)
    assert not reopened.add("i", "b", now + 10, now), "full: refuse rather than forget a live jti"
    assert reopened.add("i", "b", now + 10, now + 20), "expired entries are purged"
    assert len(reopened) == 1
    reopened.close()
    with pytest.raises(ReplayStoreError, match="failed"):  # an unusable store neither accepts nor refuses
        reopened.add("i", "c", now + 10, now)


def test_instances_sharing_a_replay_store_refuse_a_token_used_at_the_other(
        ehr: FakeEhr, tokens: Tokens, tmp_path: Path) -> None:
    replay_db = tmp_path / "shared" / "replay.sqlite3"
    procs = []
    try:
        for name in ("a", "b"):
            config = service_config(ehr, tmp_path / name)
            config["auth"] = {**config["auth"], "replay_db": str(replay_db)}
            procs.append(ServiceProcess(tmp_path / name, config))
        a, b = (httpx.Client(base_url=p.url, timeout=10) for p in procs)
        with a, b:
            token = tokens.make(DISCOVERY)
            checked(a.get(DISCOVERY, headers=bearer(token)))
            refused(b.get(DISCOVERY, headers=bearer(token)), "already used (jti replay)")
            refused(a.get(DISCOVERY, headers=bearer(token)), "already used (jti replay)")
            other = tokens.make(DISCOVERY)
            checked(b.get(DISCOVERY, headers=bearer(other)))
            refused(a.get(DISCOVERY, headers=bearer(other)), "already used (jti replay)")
            # A store held locked (an instance stuck mid-write) neither accepts nor refuses: 503, try again;
            # the token is not spent and is accepted once the store is free.
            third = tokens.make(DISCOVERY)
            holder = sqlite3.connect(replay_db, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            try:
                body = checked(a.get(DISCOVERY, headers=bearer(third)), 503)
                assert "replay store is unavailable" in body["issue"][0]["diagnostics"]
            finally:
                holder.execute("ROLLBACK")
                holder.close()
            checked(b.get(DISCOVERY, headers=bearer(third)))
    finally:
        for p in procs:
            p.stop()


def test_configuration_refuses_none_and_hmac() -> None:
    for alg in ("none", "HS256"):
        with pytest.raises(ValueError, match="not allowed"):
            AuthConfig(algorithms=[alg])

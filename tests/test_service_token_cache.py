"""The verified-token and key caches of :class:`engine.service.auth.Verifier`: a token presented again skips
only the signature check; the clock, the key it verified with, the audience and the jti rule are checked at
every use."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import jwt
import pytest

from engine.service import auth
from engine.service.auth import AuthError, ReplayCache, ReplayStoreError, Verifier
from engine.service.config import AuthConfig, IssuerConfig
from tests.test_service_harness import ISSUER, Keys, Tokens

JWKS_URL = "https://ehr.test.invalid/jwks.json"
PATH = "/cds-services/mascds-patient-view"
AUD = f"https://cds.test.invalid{PATH}"


class Replays(ReplayCache):
    """Accepts every jti, or fails like an unavailable shared store while ``down``."""

    down = False

    def add(self, iss: str, jti: str, until: float, now: float) -> bool:
        if self.down:
            raise ReplayStoreError("the replay store failed")
        return True


def verifier(keys: Keys, monkeypatch: pytest.MonkeyPatch, replays: ReplayCache | None = None) -> Verifier:
    cfg = AuthConfig(issuers=[IssuerConfig(iss=ISSUER, jwks_url=JWKS_URL)], leeway_seconds=0,
                     jwks_cache_seconds=0, jwks_min_refresh_seconds=0)  # every use looks the JWK Set up again
    v = Verifier(cfg, httpx.AsyncClient(), replays if replays is not None else Replays())

    async def fetch(url: str) -> dict[str, dict[str, Any]]:
        assert url == JWKS_URL
        return {k: dict(jwk) for k, jwk in keys.published.items()}

    monkeypatch.setattr(v.jwks, "_fetch", fetch)
    return v


def use(v: Verifier, token: str, aud: str = AUD) -> auth.Caller:
    return asyncio.run(v.verify(f"Bearer {token}", (aud,)))


def tokens_for(keys: Keys) -> Tokens:
    return Tokens(keys, base_url=AUD.removesuffix(PATH))


def test_a_token_presented_again_skips_only_the_signature_check(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    replays = Replays()
    v = verifier(keys, monkeypatch, replays)
    token = tokens_for(keys).make(PATH)
    replays.down = True  # the shared replay store fails: 503, and the client retries with the same token
    with pytest.raises(ReplayStoreError):
        use(v, token)
    replays.down = False
    assert use(v, token).issuer == ISSUER
    assert v.signatures_checked == 1
    # With the real jti rule, the cached token is still a replay.
    strict = verifier(keys, monkeypatch, ReplayCache())
    use(strict, token)
    with pytest.raises(AuthError, match="already used"):
        use(strict, token)
    assert strict.signatures_checked == 1


def test_a_cached_token_fails_once_expired(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    now = auth.time.time()
    token = tokens_for(keys).make(PATH, iat=int(now), exp=int(now) + 20)
    use(v, token)
    monkeypatch.setattr(auth.time, "time", lambda: now + 21)
    with pytest.raises(AuthError, match="has expired"):
        use(v, token)
    assert v.signatures_checked == 1  # refused from the cache, by the clock


def test_a_cached_token_is_refused_before_its_nbf_and_iat(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    now = auth.time.time()
    token = tokens_for(keys).make(PATH, iat=int(now) - 5, nbf=int(now) - 5)
    use(v, token)
    monkeypatch.setattr(auth.time, "time", lambda: now - 60)  # the clock set back
    with pytest.raises(AuthError, match="not valid yet"):
        use(v, token)


def test_another_signature_on_the_same_claims_is_not_taken_from_the_cache(keys: Keys,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    claims = tokens_for(keys).claims(PATH)
    genuine = jwt.encode(claims, keys.ec, algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})
    forged = jwt.encode(claims, keys.rogue, algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})
    head, body, sig = genuine.split(".")
    tampered = f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    use(v, genuine)
    for token in (forged, tampered):
        with pytest.raises(AuthError, match="signature does not verify"):
            use(v, token)
    assert v.signatures_checked == 3


def test_a_cached_token_is_bound_to_its_audience(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    token = tokens_for(keys).make(PATH)
    use(v, token)
    with pytest.raises(AuthError, match="aud is not this endpoint"):
        use(v, token, "https://cds.test.invalid/cds-services")


def test_a_key_rotation_is_honoured_by_the_cache(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    token = tokens_for(keys).make(PATH)
    use(v, token)
    published = dict(keys.published)
    try:
        # The issuer publishes another key under the same kid: the cached token is verified again, and fails.
        keys.published["ec-1"] = Keys._jwk(keys.rogue, "ec-1", "ES384")
        with pytest.raises(AuthError, match="signature does not verify"):
            use(v, token)
        assert v.signatures_checked == 2
        # The key withdrawn: refused although the token verified before.
        del keys.published["ec-1"]
        with pytest.raises(AuthError, match="kid is not in the issuer's JWK Set"):
            use(v, token)
    finally:
        keys.published.clear()
        keys.published.update(published)
    # The key back: the token verifies again (and the key object is made from the JWK once more).
    use(v, token)


def test_the_key_object_is_made_once_per_jwk(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    v = verifier(keys, monkeypatch)
    made: list[str] = []
    real = auth._check_jwk

    def counting(jwk_data: dict[str, Any], alg: str) -> Any:
        made.append(alg)
        return real(jwk_data, alg)

    monkeypatch.setattr(auth, "_check_jwk", counting)
    t = tokens_for(keys)
    for _ in range(3):
        use(v, t.make(PATH))
    assert made == ["ES384"]
    assert v.signatures_checked == 3  # distinct tokens: each signature is checked

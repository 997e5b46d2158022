"""Authenticating the CDS client: the signed JWT bearer token CDS Hooks 2.0 requires on every call.

A token is accepted only when all of these hold (each failure is a 401 naming the reason, never the token):

* ``Authorization: Bearer <JWT>`` with header ``alg`` among the configured asymmetric algorithms (``none`` and
  HMAC are refused before anything else is looked at), ``typ: JWT`` and a ``kid``;
* ``iss`` is an allowlisted issuer; its key comes from the issuer's JWK Set: the ``jku`` header's URL when that
  URL is allowlisted for the issuer (a ``jku`` that is not is refused without being fetched), else the issuer's
  configured ``jwks_url`` or ``jwks_file``; the JWK must suit the algorithm (key type, curve, ``use``, ``alg``);
* ``exp``, ``iat`` and ``nbf`` are NumericDates (JSON numbers, not strings or booleans);
* the signature verifies; ``aud`` is the URL of the endpoint called; ``exp`` has not passed and ``iat`` is not
  in the future (both with the configured leeway); ``exp - iat`` is within the configured lifetime; ``jti`` is
  present and has not been seen before from that issuer while the token is valid (in this process, or in every
  instance sharing the configured ``replay_db``).

JWK Sets are cached; an unknown ``kid`` refetches the set (a key rotation), at most once per
``jwks_min_refresh_seconds`` (10 s) per URL, so random ``kid`` values cannot make the service hammer a client's
server. Key objects are made once per JWK (by its exact content). A token whose signature verified is remembered
(by a hash of its exact text and the audiences asked for, a bounded number of them), so presenting it again (a
retry after a 503 of the shared replay store, or a replay, which is refused) skips the signature check, and only
that: ``exp``, ``nbf`` and ``iat`` are checked against the clock at each use, the key is looked up again and must be
the same JWK that verified it (else the token is verified afresh against the new one), and the ``jti`` rule applies
as on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
from jwt.exceptions import (
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
    PyJWKError,
)

from ..core.errors import UsageError
from .config import AuthConfig, IssuerConfig

MAX_TOKEN_BYTES = 16 * 1024
MAX_VERIFIED_TOKENS = 4096  # remembered verified tokens (a few hundred bytes each)
MAX_KEYS = 256  # key objects made from JWKs
NUMERIC_DATE_CLAIMS = ("exp", "iat", "nbf")
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class AuthError(Exception):
    """The caller is not authenticated (401); the message says why without repeating the token."""


@dataclass(frozen=True)
class Caller:
    issuer: str
    tenant: str | None
    jti: str


class ReplayCache:
    """``(iss, jti)`` pairs seen while their token is valid; a second use is a replay."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._adds = 0

    def add(self, iss: str, jti: str, until: float, now: float) -> bool:
        """Record a token; False when it was seen before (a replay) or the cache is full (fail closed)."""
        with self._lock:
            self._adds += 1
            if self._adds % 1024 == 0 or len(self._seen) >= self.max_entries:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            key = (iss, jti)
            if key in self._seen or len(self._seen) >= self.max_entries:
                return False
            self._seen[key] = until
            return True

    def __len__(self) -> int:
        return len(self._seen)


class ReplayStoreError(Exception):
    """The shared replay store could not be read or written: the token can be neither accepted nor refused."""


_REPLAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS used_token (
    iss TEXT NOT NULL,
    jti TEXT NOT NULL,
    valid_until REAL NOT NULL,
    PRIMARY KEY (iss, jti)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS used_token_until ON used_token (valid_until);
"""


class SharedReplayStore:
    """``(iss, jti)`` pairs in a SQLite file that every instance of the service on this host opens: a token
    used at one instance is a replay at all of them. One transaction per token (``INSERT OR IGNORE`` on the
    primary key), so two instances racing with the same token cannot both accept it."""

    def __init__(self, path: Path, max_entries: int = 1_000_000, timeout_seconds: float = 2.0) -> None:
        self.path = path
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._adds = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=timeout_seconds, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # No fsync per token: a record survives a crash of any instance, not a power cut of the host
            # (which the in-memory record would not survive either); an fsync per call cost ~1 ms and the p99.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_REPLAY_SCHEMA)
            self._count = self._db.execute("SELECT count(*) FROM used_token").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            raise ReplayStoreError(f"cannot open the replay store {path}: {exc}") from None

    def add(self, iss: str, jti: str, until: float, now: float) -> bool:
        """Record a token; False when any instance saw it before (a replay) or the store is full (fail closed).
        :class:`ReplayStoreError` when the store cannot be used."""
        with self._lock:
            try:
                self._adds += 1
                if self._adds % 1024 == 0 or self._count >= self.max_entries:
                    self._db.execute("DELETE FROM used_token WHERE valid_until < ?", (now,))
                    self._count = self._db.execute("SELECT count(*) FROM used_token").fetchone()[0]
                if self._count >= self.max_entries:
                    return False
                added = self._db.execute("INSERT OR IGNORE INTO used_token VALUES (?, ?, ?)",
                                         (iss, jti, until)).rowcount == 1
            except sqlite3.Error as exc:
                raise ReplayStoreError(f"the replay store {self.path} failed ({type(exc).__name__})") from None
            self._count += added
            return added

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM used_token").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _index(jwks: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError(f"{where} is not a JWK Set (an object with a 'keys' list)")
    return {k["kid"]: k for k in jwks["keys"] if isinstance(k, dict) and isinstance(k.get("kid"), str)}


class JwksCache:
    """JWK Sets by URL (fetched with httpx, cached) or from files read at start."""

    def __init__(self, cfg: AuthConfig, client: httpx.AsyncClient) -> None:
        self.cfg = cfg
        self.client = client
        self._sets: dict[str, tuple[float, dict[str, dict[str, Any]]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._files: dict[str, dict[str, dict[str, Any]]] = {}
        for issuer in cfg.issuers:
            if issuer.jwks_file is not None:
                self._files[issuer.iss] = self._read_file(issuer.jwks_file)

    @staticmethod
    def _read_file(path: Path) -> dict[str, dict[str, Any]]:
        try:
            return _index(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the JWK Set {path}: {exc}") from None

    def from_file(self, iss: str, kid: str) -> dict[str, Any] | None:
        return self._files.get(iss, {}).get(kid)

    async def from_url(self, url: str, kid: str) -> dict[str, Any] | None:
        now = time.monotonic()
        cached = self._sets.get(url)
        if cached is not None:
            fetched, keys = cached
            if kid in keys and now - fetched < self.cfg.jwks_cache_seconds:
                return keys[kid]
            if now - fetched < self.cfg.jwks_min_refresh_seconds:
                return keys.get(kid)
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._sets.get(url)
            if cached is not None and time.monotonic() - cached[0] < self.cfg.jwks_min_refresh_seconds:
                return cached[1].get(kid)
            try:
                keys = await self._fetch(url)
            except AuthError:
                if cached is None:
                    raise
                # The issuer's server is down: keep using the keys it last published, and do not retry at once.
                self._sets[url] = (time.monotonic(), cached[1])
                return cached[1].get(kid)
            self._sets[url] = (time.monotonic(), keys)
            return keys.get(kid)

    async def _fetch(self, url: str) -> dict[str, dict[str, Any]]:
        if not url.startswith("https://") and not (self.cfg.allow_http and url.startswith("http://")):
            raise AuthError("the JWK Set URL is not https")
        try:
            response = await self.client.get(url, timeout=self.cfg.jwks_timeout_seconds,
                                              headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise AuthError(f"the issuer's JWK Set could not be fetched ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise AuthError(f"the issuer's JWK Set could not be fetched (HTTP {response.status_code})")
        try:
            return _index(response.json(), "the issuer's JWK Set")
        except ValueError as exc:
            raise AuthError(str(exc)) from None


def _check_jwk(jwk_data: dict[str, Any], alg: str) -> Any:
    """The verification key of a JWK, after checking that it suits the token's algorithm."""
    kty = jwk_data.get("kty")
    if kty == "oct":
        raise AuthError("the issuer's key is symmetric; CDS Hooks requires an asymmetric key")
    if jwk_data.get("use") not in (None, "sig"):
        raise AuthError("the issuer's key is not a signing key (use)")
    if jwk_data.get("alg") not in (None, alg):
        raise AuthError(f"the issuer's key is for {jwk_data.get('alg')}, not {alg}")
    expected_kty = "EC" if alg.startswith("ES") else "OKP" if alg == "EdDSA" else "RSA"
    if kty != expected_kty:
        raise AuthError(f"the issuer's key type {kty} does not suit {alg}")
    if alg in _CURVES and jwk_data.get("crv") != _CURVES[alg]:
        raise AuthError(f"the issuer's key curve does not suit {alg}")
    try:
        return jwt.PyJWK(jwk_data, algorithm=alg).key
    except (PyJWKError, ValueError, TypeError) as exc:
        raise AuthError(f"the issuer's key is not usable ({type(exc).__name__})") from None


def _check_numeric_dates(claims: dict[str, Any]) -> None:
    """RFC 7519 NumericDate: a JSON number of seconds. PyJWT would take ``"1700000000"`` (a string) and
    ``true`` (a bool is an int in Python) as times; neither is a NumericDate, so the token is refused."""
    for name in NUMERIC_DATE_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise AuthError(f"the token's {name} is not a NumericDate (a JSON number of seconds since 1970)")


def _jwk_id(jwk_data: dict[str, Any]) -> bytes:
    """The exact content of a JWK (key order aside): what a key object is tied to."""
    return orjson.dumps(jwk_data, option=orjson.OPT_SORT_KEYS)


def _jwk_digest(ident: bytes) -> bytes:
    """What a verified token keeps of the JWK that verified it."""
    return hashlib.sha256(ident).digest()


@dataclass(frozen=True)
class _Verified:
    """What is kept of a token whose signature verified: where its key came from, which key it was, and the
    claims checked at each use."""

    issuer: IssuerConfig
    jku: Any
    kid: str
    jwk: bytes  # _jwk_digest
    claims: dict[str, Any]  # exp, iat, nbf, jti, tenant (those present)


KEPT_CLAIMS = ("exp", "iat", "nbf", "jti", "tenant")


class Verifier:
    """Checks the JWT bearer token of one call against the configured issuers."""

    def __init__(self, cfg: AuthConfig, client: httpx.AsyncClient,
                 replays: ReplayCache | SharedReplayStore | None = None) -> None:
        self.cfg = cfg
        self.issuers: dict[str, IssuerConfig] = {i.iss: i for i in cfg.issuers}
        self.jwks = JwksCache(cfg, client)
        self.replays = replays if replays is not None else ReplayCache()
        self._keys: dict[tuple[str, bytes], Any] = {}
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        self.signatures_checked = 0  # (for tests and measurement)

    def _key(self, jwk_data: dict[str, Any], alg: str) -> tuple[Any, bytes]:
        """The key object of a JWK for ``alg`` (made once; the checks of :func:`_check_jwk` depend on nothing
        else) and the JWK's identity."""
        ident = _jwk_id(jwk_data)
        key = self._keys.get((alg, ident))
        if key is None:
            key = _check_jwk(jwk_data, alg)
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            self._keys[(alg, ident)] = key
        return key, ident

    async def verify(self, authorization: str | None, audiences: tuple[str, ...]) -> Caller:
        token = self._token(authorization)
        digest = hashlib.sha256(orjson.dumps([token, *audiences])).digest()  # (JSON: no two pairs alike)
        known = self._verified.get(digest)
        if known is not None:
            claims = await self._reuse(known)
            if claims is not None:
                return self._accept(known.issuer, claims)
            self._verified.pop(digest, None)
        issuer, jku, kid, ident, claims = await self._verify_signed(token, audiences)
        self._verified[digest] = _Verified(issuer, jku, kid, ident, {k: claims[k] for k in KEPT_CLAIMS
                                                                     if k in claims})
        if len(self._verified) > MAX_VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return self._accept(issuer, claims)

    async def _reuse(self, known: _Verified) -> dict[str, Any] | None:
        """The claims of a token verified before, after the checks that depend on the time and the key; None when
        its key has changed (the token is then verified again)."""
        claims, leeway, now = known.claims, self.cfg.leeway_seconds, time.time()
        if float(claims["exp"]) <= now - leeway:  # (PyJWT's rule: expired once exp <= now - leeway)
            raise AuthError("the token has expired")
        if any(float(claims[c]) > now + leeway for c in ("iat", "nbf") if c in claims):
            raise AuthError("the token is not valid yet (iat or nbf in the future)")
        jwk_data = await self._jwk(known.issuer, known.jku, known.kid)  # a key withdrawn since: refused here
        return claims if _jwk_digest(_jwk_id(jwk_data)) == known.jwk else None

    async def _verify_signed(self, token: str, audiences: tuple[str, ...]
                             ) -> tuple[IssuerConfig, Any, str, bytes, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (InvalidTokenError, ValueError):
            raise AuthError("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise AuthError("unsigned tokens (alg none) are not accepted")
        if alg.upper().startswith("HS"):
            raise AuthError("symmetric (HMAC) signatures are not accepted")
        if alg not in self.cfg.algorithms:
            raise AuthError(f"algorithm {alg} is not accepted")
        if str(header.get("typ", "")).upper() != "JWT":
            raise AuthError("the JWT header's typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("the JWT header has no kid")
        if not isinstance(unverified, dict):
            raise AuthError("the bearer token's claims are not a JSON object")
        _check_numeric_dates(unverified)
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("the token's issuer is not trusted")
        jwk_data = await self._jwk(issuer, header.get("jku"), kid)
        key, ident = self._key(jwk_data, alg)
        self.signatures_checked += 1
        claims = self._decode(token, key, alg, issuer.iss, audiences)
        return issuer, header.get("jku"), kid, _jwk_digest(ident), claims

    def _accept(self, issuer: IssuerConfig, claims: dict[str, Any]) -> Caller:
        """The checks after the signature and the standard claims: lifetime, jti, tenant, replay."""
        now = time.time()
        exp, iat, jti = claims["exp"], claims["iat"], claims["jti"]
        if float(exp) - float(iat) > self.cfg.max_token_lifetime_seconds:
            raise AuthError(f"the token lives longer than {self.cfg.max_token_lifetime_seconds} s (exp - iat)")
        if not isinstance(jti, str) or not jti:
            raise AuthError("the token has no jti")
        tenant = claims.get("tenant")
        if issuer.tenant is not None and tenant != issuer.tenant:
            raise AuthError("the token's tenant is not the one configured for its issuer")
        if not self.replays.add(issuer.iss, jti, float(exp) + self.cfg.leeway_seconds, now):
            raise AuthError("the token was already used (jti replay)")
        return Caller(issuer.iss, tenant if isinstance(tenant, str) else None, jti)

    @staticmethod
    def _token(authorization: str | None) -> str:
        if not authorization:
            raise AuthError("no Authorization header; CDS Hooks calls carry a signed JWT bearer token")
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header is not a Bearer token")
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise AuthError("the bearer token is not a well-formed JWT")
        return token

    async def _jwk(self, issuer: IssuerConfig, jku: Any, kid: str) -> dict[str, Any]:
        if jku is not None:
            if not isinstance(jku, str) or jku not in issuer.jku:
                raise AuthError("the token's jku is not an allowed JWK Set URL for its issuer")
            found = await self.jwks.from_url(jku, kid)
        elif issuer.jwks_file is not None:
            found = self.jwks.from_file(issuer.iss, kid)
        elif issuer.jwks_url is not None:
            found = await self.jwks.from_url(issuer.jwks_url, kid)
        else:
            raise AuthError("the issuer's tokens must name their JWK Set (jku)")
        if found is None:
            raise AuthError("the token's kid is not in the issuer's JWK Set")
        return found

    def _decode(self, token: str, key: Any, alg: str, iss: str, audiences: tuple[str, ...]) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[alg], audience=list(audiences), issuer=iss, leeway=self.cfg.leeway_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]})
        except ExpiredSignatureError:
            raise AuthError("the token has expired") from None
        except InvalidAudienceError:
            raise AuthError(f"the token's aud is not this endpoint ({audiences[0]})") from None
        except ImmatureSignatureError:
            raise AuthError("the token is not valid yet (iat or nbf in the future)") from None
        except MissingRequiredClaimError as exc:
            raise AuthError(f"the token has no {exc.claim} claim") from None
        except InvalidSignatureError:
            raise AuthError("the token's signature does not verify") from None
        except InvalidTokenError as exc:
            raise AuthError(f"the token is not valid ({type(exc).__name__})") from None
        return claims


__all__ = ["AuthError", "Caller", "JwksCache", "ReplayCache", "ReplayStoreError", "SharedReplayStore", "Verifier"]

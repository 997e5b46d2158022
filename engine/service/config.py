"""Configuration of ``mascds serve``: a YAML file, then ``MASCDS_SERVICE_*`` environment variables, then the
command line, each overriding the one before.

Environment variables name a setting by its path, sections joined by a double underscore, and hold JSON or
plain text: ``MASCDS_SERVICE_BASE_URL=https://cds.example.org``, ``MASCDS_SERVICE_FHIR__SERVERS='["https://ehr.
example.org/fhir"]'``, ``MASCDS_SERVICE_AUTH__ISSUERS='[{"iss": "https://ehr.example.org", "jwks_url": "..."}]'``.
A misspelt setting is an error, never silently ignored. Running without authentication is not a setting: it
takes the ``--dev-no-auth`` command-line flag.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.errors import UsageError
from .models import error_lines

ENV_PREFIX = "MASCDS_SERVICE_"
CONFIG_ENV = "MASCDS_SERVICE_CONFIG"

# The asymmetric JWS algorithms the service can verify. ES384 and RS384 are the ones the specification
# recommends; the others are offered for clients that use them. `none` and every HMAC algorithm are refused:
# the specification forbids both.
SUPPORTED_ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
DEFAULT_ALGORITHMS = ("ES384", "RS384", "ES256", "ES512", "RS256", "RS512", "PS256", "PS384", "PS512")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what} '{value}' is not an absolute http(s) URL")
    return value


class IssuerConfig(_Section):
    """A CDS client allowed to call the service, and where its signing keys are."""

    iss: str = Field(min_length=1, description="The issuer, exactly as in the JWT's iss claim.")
    jwks_url: str | None = Field(default=None, description="The issuer's JWK Set URL (used when a token has no "
                                 "jku header).")
    jwks_file: Path | None = Field(default=None, description="A JWK Set file agreed out of band (instead of a "
                                   "URL).")
    jku: list[str] = Field(default_factory=list, description="jku header values accepted from this issuer, "
                           "exactly as written.")
    tenant: str | None = Field(default=None, description="If set, tokens must carry this tenant claim.")

    @field_validator("jwks_url")
    @classmethod
    def _jwks_url(cls, v: str | None) -> str | None:
        return None if v is None else _check_url(v, "jwks_url")

    @field_validator("jku")
    @classmethod
    def _jku(cls, v: list[str]) -> list[str]:
        return [_check_url(u, "jku") for u in v]

    @model_validator(mode="after")
    def _keys(self) -> IssuerConfig:
        if self.jwks_url is None and self.jwks_file is None and not self.jku:
            raise ValueError(f"issuer '{self.iss}' needs jwks_url, jwks_file or an allowed jku")
        return self


class AuthConfig(_Section):
    issuers: list[IssuerConfig] = Field(default_factory=list)
    algorithms: list[str] = Field(default_factory=lambda: list(DEFAULT_ALGORITHMS))
    leeway_seconds: int = Field(default=30, ge=0, le=300, description="Clock skew allowed on exp and iat.")
    max_token_lifetime_seconds: int = Field(default=600, ge=10, le=86_400,
                                            description="The longest exp - iat accepted.")
    jwks_cache_seconds: int = Field(default=300, ge=0, description="How long a fetched JWK Set is reused.")
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0, le=3600, description="An unknown kid refetches "
                                            "the JWK Set at most this often.")
    jwks_timeout_seconds: float = Field(default=3.0, gt=0, le=30)
    allow_http: bool = Field(default=False, description="Accept http:// JWK Set URLs (local testing only).")
    replay_db: Path | None = Field(default=None, description="A SQLite file recording used token ids, shared by "
                                   "every instance of the service on this host so that a token accepted by one is "
                                   "a replay at the others; unset, each process keeps its own record in memory.")

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, v: list[str]) -> list[str]:
        for alg in v:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm '{alg}' is not allowed: CDS Hooks forbids 'none' and symmetric (HMAC) "
                                 "signatures")
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"unknown algorithm '{alg}'; choose from {', '.join(SUPPORTED_ALGORITHMS)}")
        if not v:
            raise ValueError("at least one algorithm is needed")
        return v

    @model_validator(mode="after")
    def _unique(self) -> AuthConfig:
        seen = [i.iss for i in self.issuers]
        dup = {s for s in seen if seen.count(s) > 1}
        if dup:
            raise ValueError(f"issuer listed twice: {sorted(dup)[0]}")
        return self


class FhirConfig(_Section):
    servers: list[str] = Field(default_factory=list, description="fhirServer base URLs the service may call.")
    allow_http: bool = Field(default=False, description="Allow http:// FHIR servers (local testing only).")
    timeout_seconds: float = Field(default=5.0, gt=0, le=60, description="Per HTTP request.")
    deadline_seconds: float = Field(default=10.0, gt=0, le=120, description="For all fetches of one call.")
    max_pages: int = Field(default=20, ge=1, le=1000, description="Search result pages followed per query.")
    max_resources: int = Field(default=10_000, ge=1, le=100_000, description="Resources read per call.")

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[str]) -> list[str]:
        return [_check_url(u, "FHIR server").rstrip("/") for u in v]


class ReloadConfig(_Section):
    watch: bool = Field(default=True, description="Reload the knowledge base when its files change.")
    poll_seconds: float = Field(default=2.0, gt=0, le=3600)


class ServiceConfig(_Section):
    """Per service: the prefetch keys without which it answers 412."""

    required_prefetch: list[str] | None = None


class Settings(_Section):
    base_url: str | None = Field(default=None, description="The public base URL clients call (the JWT audience "
                                 "is built from it); required to serve.")
    knowledge_base: Path | None = Field(default=None, description="Rules directory (default: $MASCDS_RULES or "
                                        "./rules).")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="Service processes sharing the port (one core "
                         "each); above 1, used token ids are shared through auth.replay_db (default: a file "
                         "beside feedback_db).")
    feedback_db: Path = Path("mascds-feedback.sqlite3")
    isolate_evaluation: bool = Field(default=True, description="Evaluate each call in a child process, so that "
                                     "a crash of the rule engine costs that call a 500, not the service.")
    evaluation_timeout_seconds: float = Field(default=30.0, gt=0, le=600, description="An evaluation taking "
                                              "longer is stopped (its call answers 500); isolated evaluation only.")
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    strict_fhir: bool = Field(default=False, description="Validate every element of each FHIR resource read with "
                              "the full fhir.resources models, not only the elements mascds reads (slower).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    server_timing: bool = Field(default=False, description="Answer each call with a Server-Timing header: the "
                                "milliseconds of each stage (names and durations only, no patient data); for "
                                "measuring the service, off in production.")
    rule_docs_url: str | None = Field(default=None, description="Template of the rule documentation link, with "
                                      "{rule_id}; default: the service's own /rules/{rule_id} page.")
    cors_origins: list[str] = Field(default_factory=list)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    fhir: FhirConfig = Field(default_factory=FhirConfig)
    reload: ReloadConfig = Field(default_factory=ReloadConfig)
    services: dict[str, ServiceConfig] = Field(default_factory=dict)

    @field_validator("base_url")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(_check_url(v, "base_url"))
        if parts.query or parts.fragment:
            raise ValueError("base_url has no query or fragment")
        return v.rstrip("/")

    @field_validator("rule_docs_url")
    @classmethod
    def _docs(cls, v: str | None) -> str | None:
        if v is not None and "{rule_id}" not in v:
            raise ValueError("rule_docs_url must contain {rule_id}")
        return v

    def audience(self, path: str) -> str:
        """The JWT audience for a request path: the public URL of the endpoint called."""
        return f"{self.base_url}{path}"


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                  overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from a YAML file (``path``, else ``$MASCDS_SERVICE_CONFIG``), the environment and ``overrides``.

    Raises :class:`~engine.core.errors.UsageError` naming the source and the setting of every problem."""
    env = os.environ if env is None else env
    path = path if path is not None else env.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    source = "settings"
    if path:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"cannot read the service configuration {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise UsageError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UsageError(f"{path}: the configuration is a mapping of settings")
        data = loaded or {}
        base = Path(path).resolve().parent
        data = _resolve_paths(data, base)
    from_env = _env_overrides(env)
    if from_env:
        source += " + environment"
    data = _merge(_merge(data, from_env), {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(error_lines(exc))
        raise UsageError(f"service configuration ({source}): {problems}") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a configuration file are relative to the file."""
    out = dict(data)
    for key in ("knowledge_base", "feedback_db"):
        if isinstance(out.get(key), str) and not Path(out[key]).is_absolute():
            out[key] = str(base / out[key])
    auth = out.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("issuers"), list):
        issuers = []
        for issuer in auth["issuers"]:
            f = issuer.get("jwks_file") if isinstance(issuer, dict) else None
            issuers.append({**issuer, "jwks_file": str(base / f)} if isinstance(f, str) and not Path(f).is_absolute()
                           else issuer)
        out["auth"] = {**auth, "issuers": issuers}
    auth = out.get("auth")
    if isinstance(auth, dict) and isinstance(auth.get("replay_db"), str) and not Path(auth["replay_db"]).is_absolute():
        out["auth"] = {**auth, "replay_db": str(base / auth["replay_db"])}
    return out


__all__ = ["DEFAULT_ALGORITHMS", "SUPPORTED_ALGORITHMS", "AuthConfig", "FhirConfig", "IssuerConfig",
           "ReloadConfig", "ServiceConfig", "Settings", "load_settings"]

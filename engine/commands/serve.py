"""mascds serve: the HL7 CDS Hooks 2.0 service (patient-view and order-sign), with feedback."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import sys

from ..core.exits import EXIT_OK

NAME = "serve"
HELP = "run the HL7 CDS Hooks 2.0 service"
DESCRIPTION = (
    "Serve the knowledge base as HL7 CDS Hooks 2.0 services (patient-view and order-sign) with discovery and "
    "feedback. Settings come from a YAML file (--config or $MASCDS_SERVICE_CONFIG), MASCDS_SERVICE_* environment "
    "variables and these options, each overriding the one before. Callers authenticate with signed JWTs from "
    "the configured issuers; SIGHUP or a change of the rule files reloads the knowledge base. docs/cds-hooks.md "
    "describes it all."
)
EXAMPLES = [
    "mascds serve --config service.yaml",
    "mascds serve --config service.yaml --base-url https://cds.example.org --host 0.0.0.0 --port 8443",
    "mascds serve --dev-no-auth --base-url http://127.0.0.1:8080  # development only: no authentication",
    "mascds serve --config service.yaml --check  # load settings and knowledge base, then exit",
    "mascds serve --config service.yaml --show-feedback --rule yang2023.tocilizumab-rechallenge",
]
LOOPBACK_NAMES = ("localhost",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="service configuration (YAML)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (default 8080; 0 picks a free one)")
    p.add_argument("--workers", type=int, metavar="N", help="service processes sharing the port, one core each "
                   "(default 1)")
    p.add_argument("--base-url", metavar="URL", help="public base URL clients call (the JWT audience)")
    p.add_argument("--rules", metavar="DIR", help="knowledge base directory (default: $MASCDS_RULES or ./rules)")
    p.add_argument("--feedback-db", metavar="FILE", help="SQLite file for issued cards and feedback")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="logging level")
    p.add_argument("--dev-no-auth", action="store_true",
                   help="DEVELOPMENT ONLY: accept calls without a JWT (loopback addresses only)")
    p.add_argument("--check", action="store_true", help="load the settings and the knowledge base, then exit")
    p.add_argument("--show-feedback", action="store_true", help="print the stored feedback as JSON and exit")
    p.add_argument("--rule", metavar="ID", help="with --show-feedback: only this rule's cards")
    p.add_argument("--outcome", choices=("accepted", "overridden"), help="with --show-feedback: only this outcome")


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from ..core.errors import UsageError
    from ..service.config import load_settings

    settings = load_settings(args.config, overrides={
        "host": args.host, "port": args.port, "workers": args.workers, "base_url": args.base_url,
        "knowledge_base": args.rules, "feedback_db": args.feedback_db, "log_level": args.log_level})
    if args.show_feedback:
        from ..service.feedback import FeedbackStore, StoreUnavailable

        store = FeedbackStore(settings.feedback_db)
        try:
            data = {"feedback": store.query(rule_id=args.rule, outcome=args.outcome, limit=10_000),
                    "per_rule": store.summary()}
        except StoreUnavailable as exc:
            raise UsageError(f"feedback_db: {exc}") from None
        finally:
            store.close()
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return EXIT_OK
    if settings.base_url is None:
        raise UsageError("the service needs its public base URL (base_url in the configuration, "
                         "MASCDS_SERVICE_BASE_URL or --base-url): the JWT audience is built from it")
    if args.dev_no_auth and not _is_loopback(settings.host):
        raise UsageError(f"--dev-no-auth listens on loopback addresses only, not {settings.host}")
    if not args.dev_no_auth and not settings.auth.issuers:
        raise UsageError("no trusted issuers configured (auth.issuers): every call must carry a JWT from one; "
                         "for local development only, use --dev-no-auth")
    from ..service.app import create_app
    from ..service.workers import LOG_FORMAT, announce, bind_socket, run_server, supervise, worker_settings

    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    # with several workers, --check tries the settings they would run with (the shared replay store included)
    serving = worker_settings(settings, args.dev_no_auth) if settings.workers > 1 else settings
    if settings.workers > 1 and not args.check:
        return supervise(serving, dev_no_auth=args.dev_no_auth)
    app = create_app(serving, dev_no_auth=args.dev_no_auth)
    if args.check:
        print(f"ok: configuration and knowledge base load ({settings.knowledge_base or 'default rules'})",
              file=sys.stderr)
        return EXIT_OK
    sock = bind_socket(settings.host, settings.port)
    announce(*sock.getsockname()[:2])
    run_server(app, settings, sock)
    return EXIT_OK

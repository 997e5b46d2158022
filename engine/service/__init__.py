"""The HL7 CDS Hooks 2.0 service (``mascds serve``): discovery, patient-view and order-sign services, feedback.

    from engine.service import create_app, load_settings

    settings = load_settings("service.yaml")        # YAML, then MASCDS_SERVICE_* environment variables
    app = create_app(settings)                      # a FastAPI application; run it with uvicorn

docs/cds-hooks.md describes the services, their prefetch, the cards, the security model, reload and feedback.
"""

from __future__ import annotations

from .app import create_app
from .config import Settings, load_settings

__all__ = ["Settings", "create_app", "load_settings"]

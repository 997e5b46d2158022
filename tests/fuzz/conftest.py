"""Fuzz suite settings: a bounded budget in the ordinary test run (and so in CI), a longer one for ``./dev fuzz``.

Each fuzz module draws its inputs with hypothesis and keeps the inputs that once broke mascds as explicit
``@example`` regressions. ``MASCDS_FUZZ=long`` (set by ``./dev fuzz``) raises the number of generated inputs per
property; the default profile keeps the whole fuzz suite to a few minutes on two cores.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz-ci", max_examples=60, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile(
    "fuzz-long", max_examples=3000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])

FUZZ_PROFILE = "fuzz-long" if os.environ.get("MASCDS_FUZZ") == "long" else "fuzz-ci"
fuzz = settings.get_profile(FUZZ_PROFILE)
"""Decorate each fuzz property with ``@fuzz`` (a hypothesis ``settings`` object) so the budget is set in one place."""

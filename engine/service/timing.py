"""The time budget of one call: how long each stage took, for the opt-in ``Server-Timing`` header.

Stages, in the order a call passes them (docs/cds-hooks.md describes each):
``http`` (middleware and routing), ``auth`` (the JWT), ``parse`` (body, JSON, request and context models),
``prefetch`` (prefetch read, FHIR server fetched), ``queue`` (waiting for the evaluation thread, and for the
event loop afterwards), ``handoff`` (isolated evaluation: pickling, the pipe and the child's wake-up, both ways),
``fhir`` (FHIR resources to a snapshot), ``evaluate`` (the rules), ``cards``, ``serialise`` (response model and
JSON), ``store`` (issued cards recorded) and ``total``. Only stage names and milliseconds leave the service: never
patient data.
"""

from __future__ import annotations

import time

HEADER = "Server-Timing"


class Timings:
    """Milliseconds per stage; :meth:`lap` closes the stage running since the previous lap."""

    __slots__ = ("_mark", "stages", "started")

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.started = self._mark = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.add(stage, (now - self._mark) * 1e3)
        self._mark = now

    def add(self, stage: str, ms: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + ms

    def merge(self, stages: dict[str, float]) -> None:
        for stage, ms in stages.items():
            self.add(stage, ms)

    def header(self, total_ms: float) -> str:
        """The ``Server-Timing`` value (RFC: ``name;dur=milliseconds``, comma-separated)."""
        parts = [f"{k};dur={v:.3f}" for k, v in self.stages.items()]
        parts.append(f"total;dur={total_ms:.3f}")
        return ", ".join(parts)


def parse_header(value: str) -> dict[str, float]:
    """The stages of a ``Server-Timing`` value (for the benchmark and the tests)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, dur = param.strip().partition("=")
            if key == "dur":
                out[name] = float(dur)
    return out


__all__ = ["HEADER", "Timings", "parse_header"]

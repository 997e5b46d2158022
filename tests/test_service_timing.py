"""The opt-in stage budget of a call (``server_timing``): a ``Server-Timing`` header naming each stage with its
milliseconds, for evaluation in the child process and in the service process, and nothing else in it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from engine.service.config import Settings
from engine.service.timing import Timings, parse_header
from tests.test_service_harness import (
    PATIENT_VIEW,
    FakeEhr,
    ServiceProcess,
    Tokens,
    as_prefetch,
    checked,
    hook_request,
    mas_record,
    service_config,
)

PATH = f"/cds-services/{PATIENT_VIEW}"
CHILD_STAGES = {"fhir", "evaluate", "cards", "serialise"}
SERVICE_STAGES = {"http", "auth", "parse", "prefetch", "queue", "store", "total"}


@pytest.fixture(scope="module", params=[True, False], ids=["isolated", "in-process"])
def service(request: pytest.FixtureRequest, ehr: FakeEhr,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("timing")
    proc = ServiceProcess(workdir, service_config(ehr, workdir, server_timing=True,
                                                  isolate_evaluation=request.param))
    yield proc
    proc.stop()


def test_each_stage_is_timed_and_the_header_holds_nothing_else(service: ServiceProcess, tokens: Tokens) -> None:
    pid = "timing-PID-7731"
    body = hook_request("patient-view", pid, as_prefetch(mas_record(pid, ferritin=7654321)))
    with httpx.Client(base_url=service.url, timeout=30) as c:
        r = c.post(PATH, json=body, headers=tokens.header(PATH))
        checked(r)
        # An error answer carries no budget (only answered calls are measured).
        assert "server-timing" not in c.post(PATH, json={}, headers=tokens.header(PATH)).headers
    value = r.headers["server-timing"]
    stages = parse_header(value)
    isolated = "handoff" in stages
    assert set(stages) == SERVICE_STAGES | CHILD_STAGES | ({"handoff"} if isolated else set())
    assert all(v >= 0 for k, v in stages.items() if k != "handoff"), stages
    assert stages["evaluate"] > 0 and stages["fhir"] > 0
    # The stages are parts of the call: together they do not exceed the whole.
    assert sum(v for k, v in stages.items() if k != "total") <= stages["total"] + 0.01
    for secret in (pid, "7654321", "Bearer"):
        assert secret not in value
    assert re.fullmatch(r"[a-z]+;dur=-?\d+\.\d{3}(, [a-z]+;dur=-?\d+\.\d{3})*", value), value


def test_the_budget_is_off_by_default() -> None:
    assert Settings().server_timing is False


def test_timings_lap_and_render() -> None:
    t = Timings()
    t.lap("a")
    t.add("b", 2.5)
    t.add("b", 0.5)
    assert parse_header(t.header(10.0)) == pytest.approx({"a": t.stages["a"], "b": 3.0, "total": 10.0}, abs=1e-3)

"""A fault in one evaluation never takes the service down: the evaluation runs in a child process of the service
process, which is really killed here (SIGSEGV, as a crash of the C rule engine would, and SIGKILL) before and
during calls. The call being evaluated answers 500 with an OperationOutcome; the service process stays up and
answers the calls queued behind it and every call after."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_service_harness import (
    PATIENT_VIEW,
    FakeEhr,
    ServiceProcess,
    Tokens,
    as_prefetch,
    card_rules,
    checked,
    hook_request,
    mas_record,
    service_config,
    wait_until,
)

TIMEOUT = 3.0  # evaluation_timeout_seconds of the service under test


@pytest.fixture(scope="module")
def service(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("crash")
    proc = ServiceProcess(workdir, service_config(ehr, workdir, evaluation_timeout_seconds=TIMEOUT))
    yield proc
    proc.stop()


def evaluation_pid(proc: ServiceProcess) -> int:
    """The evaluation child of the service process (a multiprocessing spawn child, not its resource tracker)."""
    tasks = Path(f"/proc/{proc.proc.pid}/task")  # started from a thread: a child of that thread
    children = {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()}
    for child in sorted(children):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            return child
    raise AssertionError("no evaluation process")


def dead(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def call(url: str, tokens: Tokens, pid: str) -> httpx.Response:
    path = f"/cds-services/{PATIENT_VIEW}"
    with httpx.Client(base_url=url, timeout=60) as c:
        return c.post(path, json=hook_request("patient-view", pid, as_prefetch(mas_record(pid))),
                      headers=tokens.header(path))


def answered(url: str, tokens: Tokens, pid: str) -> None:
    body = checked(call(url, tokens, pid))
    assert card_rules(body, "recommendation") and f"ferritin-{pid}" in str(body), body


def restarts(url: str) -> int:
    return int(checked(httpx.get(f"{url}/healthz", timeout=10))["evaluation"]["restarts"])


def in_background(url: str, tokens: Tokens,
                  pids: list[str]) -> tuple[list[threading.Thread], dict[str, httpx.Response]]:
    out: dict[str, httpx.Response] = {}

    def one(pid: str) -> None:
        with contextlib.suppress(httpx.TransportError):  # no answer at all: the key stays missing
            out[pid] = call(url, tokens, pid)

    threads = [threading.Thread(target=one, args=(p,)) for p in pids]
    for t in threads:
        t.start()
        time.sleep(0.1)  # in this order
    return threads, out


def test_the_service_answers_after_its_evaluation_process_is_killed_between_calls(
        service: ServiceProcess, tokens: Tokens) -> None:
    answered(service.url, tokens, "crash-warm")
    before, count = evaluation_pid(service), restarts(service.url)
    os.kill(before, signal.SIGKILL)
    wait_until(lambda: dead(before), what="the evaluation process to die")
    answered(service.url, tokens, "crash-after-kill")
    assert evaluation_pid(service) != before and restarts(service.url) == count + 1
    assert service.proc.poll() is None


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGKILL], ids=["SIGSEGV", "SIGKILL"])
def test_a_crash_during_a_call_costs_that_call_only(service: ServiceProcess, tokens: Tokens, sig: int) -> None:
    for round_ in range(2):  # the same fault again: still up (no give-up after repeated crashes)
        victim = evaluation_pid(service)
        count = restarts(service.url)
        os.kill(victim, signal.SIGSTOP)  # hold it, so the signal lands while calls are being evaluated
        names = [f"crash-{sig}-{round_}-{i}" for i in range(4)]
        threads, out = in_background(service.url, tokens, names)
        time.sleep(0.5)
        os.kill(victim, sig)
        os.kill(victim, signal.SIGCONT)
        for t in threads:
            t.join(60)
        first = checked(out[names[0]], 500)  # the call it was evaluating
        assert "stopped the rule engine" in first["issue"][0]["diagnostics"]
        for name in names[1:]:  # queued behind it: answered by the new evaluation process
            body = checked(out[name])
            assert f"ferritin-{name}" in str(body)
        assert restarts(service.url) == count + 1 and evaluation_pid(service) != victim
    name = signal.Signals(sig).name
    line = f"the evaluation process died (signal {int(sig)} ({name})) during a call; starting a new one"
    assert line in service.log()
    assert service.proc.poll() is None and "internal error" not in service.log()


def test_an_evaluation_that_hangs_is_stopped_and_the_service_goes_on(service: ServiceProcess, tokens: Tokens) -> None:
    victim = evaluation_pid(service)
    os.kill(victim, signal.SIGSTOP)  # a hang, as far as the service can tell
    started = time.monotonic()
    body = checked(call(service.url, tokens, "crash-hang"), 500)
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 30
    assert f"did not finish within {TIMEOUT:g} s" in body["issue"][0]["diagnostics"]
    answered(service.url, tokens, "crash-after-hang")
    assert evaluation_pid(service) != victim


def test_sigterm_to_the_whole_group_stops_cleanly(ehr: FakeEhr, tokens: Tokens, tmp_path: Path) -> None:
    """A service manager stops every process of the service at once: the evaluation process waits for the service
    process to finish the calls in flight and close it, so nothing is reported as a crash."""
    proc = ServiceProcess(tmp_path, service_config(ehr, tmp_path))
    try:
        answered(proc.url, tokens, "crash-term")
        child = evaluation_pid(proc)
        threads, out = in_background(proc.url, tokens, ["crash-term-1"])
        os.kill(proc.proc.pid, signal.SIGTERM)
        os.kill(child, signal.SIGTERM)
        for t in threads:
            t.join(60)
        assert proc.proc.wait(timeout=60) == 0
        wait_until(lambda: dead(child), what="the evaluation process to end")
        if "crash-term-1" in out:  # sent before the stop: answered; after: refused (no connection) - either way
            checked(out["crash-term-1"])
        log = proc.log()
        assert "evaluation process died" not in log and "Traceback" not in log, log[-3000:]
    finally:
        proc.stop()


@pytest.mark.parametrize("value", [1e-300, 5e-324, 1e300])
def test_a_record_that_breaks_the_rule_engine_costs_that_call_only(service: ServiceProcess, tokens: Tokens,
                                                                   value: float) -> None:
    """A tiny or huge laboratory value once crashed the C engine (SIGSEGV) or made it lose facts: whatever it does
    to the engine, the call is answered (200, or 500 with an OperationOutcome) and so is every call after."""
    pid = f"crash-value-{sorted([1e-300, 5e-324, 1e300]).index(value)}"
    record = mas_record(pid)
    record["observations"][3]["valueQuantity"]["value"] = value  # AST
    path = f"/cds-services/{PATIENT_VIEW}"
    with httpx.Client(base_url=service.url, timeout=60) as c:
        response = c.post(path, json=hook_request("patient-view", pid, as_prefetch(record)),
                          headers=tokens.header(path))
    assert response.status_code in (200, 500), response.text
    checked(response, response.status_code)
    answered(service.url, tokens, f"{pid}-after")
    assert service.proc.poll() is None

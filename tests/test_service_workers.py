"""Several worker processes behind one port (``workers: 2``): a real supervisor and its workers on 127.0.0.1.

Every call below opens its own connection, so the kernel spreads them over the workers; the worker that answered
is read from the log (each worker names itself there)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from engine.core.errors import UsageError
from engine.service.config import Settings
from engine.service.workers import worker_settings
from tests.test_service_harness import (
    ORDER_SIGN,
    PATIENT_VIEW,
    ROOT,
    FakeEhr,
    ServiceProcess,
    Tokens,
    as_prefetch,
    checked,
    draft_order,
    hook_request,
    mas_record,
    service_config,
    tocilizumab_reaction_record,
    wait_until,
)

WORKER_LINE = re.compile(r"mascds\.service\[worker (\d)\]: POST /cds-services/mascds-patient-view 200")


@pytest.fixture(scope="module")
def served(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess, Path]]:
    workdir = tmp_path_factory.mktemp("workers")
    rules = workdir / "rules"
    shutil.copytree(ROOT / "rules", rules)
    config = service_config(ehr, workdir, knowledge_base=str(rules), workers=2, log_level="info")
    proc = ServiceProcess(workdir, config)
    yield proc, rules
    proc.stop()


def fresh(url: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a connection of its own."""
    with httpx.Client(base_url=url, timeout=30) as c:
        return c.request(method, path, **kw)


def call(url: str, tokens: Tokens, pid: str, ferritin: float = 2400) -> dict[str, Any]:
    path = f"/cds-services/{PATIENT_VIEW}"
    body = hook_request("patient-view", pid, as_prefetch(mas_record(pid, ferritin)))
    return checked(fresh(url, "POST", path, json=body, headers=tokens.header(path)))


def worker_pids(proc: ServiceProcess) -> list[int]:
    pid = proc.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    out = []
    for child in map(int, children):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"multiprocessing" in cmdline and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            out.append(child)
    return out


def test_calls_are_spread_over_the_workers_and_each_gets_its_own_answer(
        served: tuple[ServiceProcess, Path], tokens: Tokens) -> None:
    proc, _ = served
    assert "listening on http://127.0.0.1:" in proc.log() and "(2 workers)" in proc.log()
    assert len(worker_pids(proc)) == 2
    for i in range(40):
        pid = f"wk-{i}"
        text = str(call(proc.url, tokens, pid, 1000 + i))
        assert set(re.findall(r"Observation/ferritin-(wk-\d+)", text)) == {pid}
    wait_until(lambda: len(WORKER_LINE.findall(proc.log())) >= 40)
    assert set(WORKER_LINE.findall(proc.log())) == {"0", "1"}, "both workers answered"


def test_a_token_is_used_once_across_all_workers(served: tuple[ServiceProcess, Path], tokens: Tokens) -> None:
    proc, _ = served
    token = tokens.make("/cds-services")
    statuses = [fresh(proc.url, "GET", "/cds-services", headers={"Authorization": f"Bearer {token}"}).status_code
                for _ in range(12)]
    assert statuses.count(200) == 1 and statuses.count(401) == 11, statuses
    assert (Path(proc.workdir) / "feedback.sqlite3.used-tokens").is_file(), "the shared record, beside feedback_db"


def test_feedback_given_at_one_worker_is_read_at_every_worker(served: tuple[ServiceProcess, Path],
                                                              tokens: Tokens) -> None:
    proc, _ = served
    pid = "wk-os"
    service_path = f"/cds-services/{ORDER_SIGN}"
    req = hook_request("order-sign", pid, as_prefetch(tocilizumab_reaction_record(pid)), drafts=[draft_order(pid)])
    card = checked(fresh(proc.url, "POST", service_path, json=req, headers=tokens.header(service_path)))["cards"][0]
    path = f"{service_path}/feedback"
    feedback = {"feedback": [{"card": card["uuid"], "outcome": "overridden",
                              "outcomeTimestamp": "2026-01-05T10:06:00Z",
                              "overrideReason": {"reason": card["overrideReasons"][0]}}]}
    assert checked(fresh(proc.url, "POST", path, json=feedback, headers=tokens.header(path))) == {"stored": 1}
    for _ in range(8):
        rows = checked(fresh(proc.url, "GET", path, params={"rule": card["extension"]["org.mascds"]["rule_id"]},
                             headers=tokens.header(path)))["feedback"]
        assert [(r["card"], r["card_known"]) for r in rows] == [(card["uuid"], True)]


def test_sighup_reloads_every_worker(served: tuple[ServiceProcess, Path]) -> None:
    proc, rules = served
    manifest = rules / "knowledge-base.yaml"
    manifest.write_text(re.sub(r"(?m)^version: .*$", "version: 8.8.8", manifest.read_text(encoding="utf-8")),
                        encoding="utf-8")
    proc.signal(signal.SIGHUP)
    wait_until(lambda: len(re.findall(r"\[worker \d\]: knowledge base reloaded \(SIGHUP\)", proc.log())) == 2)
    for _ in range(12):
        assert checked(fresh(proc.url, "GET", "/healthz"))["knowledge_base"]["version"] == "8.8.8"


def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(served: tuple[ServiceProcess, Path],
                                                              tokens: Tokens) -> None:
    proc, _ = served
    before = worker_pids(proc)
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: "exited with code -9; starting it again" in proc.log(), 60, "the restart")
    wait_until(lambda: len(worker_pids(proc)) == 2 and before[0] not in worker_pids(proc), 60, "the new worker")
    for i in range(20):  # the replacement takes its share as soon as it listens; nothing is refused meanwhile
        call(proc.url, tokens, f"wk-after-{i}")
    now = worker_pids(proc)
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=40) == 0
    for pid in now:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert "Traceback" not in proc.log()


def test_a_second_service_cannot_share_the_port_and_ctrl_c_stops_cleanly(ehr: FakeEhr, tmp_path: Path) -> None:
    proc = ServiceProcess(tmp_path, service_config(ehr, tmp_path, workers=2, log_level="info"))
    try:
        workers = worker_pids(proc)
        assert len(workers) == 2
        # a second service on the same port is refused, not let in to take a share of the calls
        port = proc.url.rsplit(":", 1)[1]
        second = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(proc.config_path),
                                 "--port", port], capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
        assert second.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in second.stderr, second.stderr
        for pid in [proc.proc.pid, *workers]:  # what a terminal's Ctrl-C does: SIGINT to the whole group
            os.kill(pid, signal.SIGINT)
        assert proc.proc.wait(timeout=40) == 0
        log = proc.log()
        assert log.count("Finished server process") == 2 and "Traceback" not in log, log[-3000:]
    finally:
        proc.stop()


def test_a_worker_that_cannot_start_stops_the_service_with_its_located_error(ehr: FakeEhr, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    broken = next(rules.rglob("mas.active.yaml"))
    broken.write_text(broken.read_text(encoding="utf-8") + "bogus_key: 1\n", encoding="utf-8")
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump(service_config(ehr, tmp_path, knowledge_base=str(rules), workers=2)))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(config), "--port", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 1, out.stderr
    assert "mas.active.yaml:" in out.stderr and "E100" in out.stderr
    assert "worker 0 could not start" in out.stderr and "listening" not in out.stderr
    assert "Traceback" not in out.stderr


def test_settings_that_workers_cannot_share_are_refused() -> None:
    base = Settings(base_url="https://cds.example.org", workers=2)
    with pytest.raises(UsageError, match="feedback_db must be a file"):
        worker_settings(base.model_copy(update={"feedback_db": Path(":memory:")}), dev_no_auth=False)
    chosen = base.model_copy(update={"auth": base.auth.model_copy(update={"replay_db": Path("/x/r.db")})})
    assert worker_settings(chosen, dev_no_auth=False).auth.replay_db == Path("/x/r.db"), "a chosen file is kept"
    assert worker_settings(base, dev_no_auth=False).auth.replay_db == Path("mascds-feedback.sqlite3.used-tokens")
    assert worker_settings(base, dev_no_auth=True).auth.replay_db is None, "no tokens, no record"

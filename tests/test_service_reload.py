"""Hot reload of the knowledge base in a running server: on SIGHUP and on a file change, without dropping a
request; a broken knowledge base leaves the old one serving and logs where it is broken."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_service_harness import (
    PATIENT_VIEW,
    ROOT,
    FakeEhr,
    Keys,
    ServiceProcess,
    Tokens,
    as_prefetch,
    checked,
    hook_request,
    mas_record,
    service_config,
    wait_until,
)


def _start(ehr: FakeEhr, workdir: Path, watch: bool) -> tuple[ServiceProcess, Path]:
    rules = workdir / "rules"
    shutil.copytree(ROOT / "rules", rules)
    config = service_config(ehr, workdir, knowledge_base=str(rules),
                            reload={"watch": watch, "poll_seconds": 0.2})
    return ServiceProcess(workdir, config), rules


def _set_version(rules: Path, version: str) -> None:
    manifest = rules / "knowledge-base.yaml"
    text = re.sub(r"(?m)^version: .*$", f"version: {version}", manifest.read_text(encoding="utf-8"))
    manifest.write_text(text, encoding="utf-8")


def _health(client: httpx.Client) -> dict[str, Any]:
    return checked(client.get("/healthz"))


def _wait(predicate: Callable[[], bool], timeout: float = 20) -> None:
    wait_until(predicate, timeout, "the reload")


def test_sighup_reloads_and_a_broken_knowledge_base_keeps_the_old_one(
        ehr: FakeEhr, keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, rules = _start(ehr, tmp_path_factory.mktemp("hup"), watch=False)
    tokens = Tokens(keys)
    path = f"/cds-services/{PATIENT_VIEW}"
    body = hook_request("patient-view", "rl-1", as_prefetch(mas_record("rl-1")))
    try:
        with httpx.Client(base_url=proc.url, timeout=20) as client:
            first = _health(client)["knowledge_base"]
            _set_version(rules, "7.7.7")
            time.sleep(0.6)
            assert _health(client)["knowledge_base"] == first, "without watching, only SIGHUP reloads"

            # Requests keep flowing while the new knowledge base is loaded and swapped in.
            answers: list[httpx.Response] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(base_url=proc.url, timeout=20) as c:
                    while not stop.is_set():
                        answers.append(c.post(path, json=body, headers=tokens.header(path)))

            workers = [threading.Thread(target=load) for _ in range(4)]
            for w in workers:
                w.start()
            time.sleep(0.3)
            proc.signal(signal.SIGHUP)
            _wait(lambda: _health(client)["knowledge_base"]["version"] == "7.7.7")
            time.sleep(0.3)
            stop.set()
            for w in workers:
                w.join()
            second = _health(client)["knowledge_base"]
            assert second["content_hash"] != first["content_hash"]
            hashes = set()
            for r in answers:
                data = checked(r)
                ext = data["extension"]["org.mascds"]["knowledge_base"]
                assert r.headers["mascds-kb-hash"] == ext["content_hash"]
                hashes.add(ext["content_hash"])
            assert hashes == {first["content_hash"], second["content_hash"]}, "both, and nothing else, answered"
            assert _health(client)["reload"]["generation"] == 1

            # A broken rule file: the reload fails, the last good knowledge base keeps serving.
            broken = next(rules.rglob("yang2023.tocilizumab-rechallenge.yaml"))
            broken.write_text(broken.read_text(encoding="utf-8") + "bogus_key: 1\n", encoding="utf-8")
            proc.signal(signal.SIGHUP)
            _wait(lambda: _health(client)["reload"]["last_ok"] is False)
            health = _health(client)
            assert health["knowledge_base"] == second
            assert any("yang2023.tocilizumab-rechallenge.yaml:" in p and "bogus_key" in p
                       for p in health["reload"]["last_problems"])
            r = client.post(path, json=body, headers=tokens.header(path))
            assert checked(r)["extension"]["org.mascds"]["knowledge_base"] == second
        log = proc.log()
        assert "knowledge base reloaded (SIGHUP)" in log
        assert re.search(r"reload \(SIGHUP\) failed with \d+ problem\(s\); still serving mascds-sjia-mas 7\.7\.7", log)
        assert re.search(r"yang2023\.tocilizumab-rechallenge\.yaml:\d+:\d+: E\d{3}", log), "located problems"
    finally:
        proc.stop()


def test_a_changed_file_is_reloaded_when_watching(ehr: FakeEhr, tmp_path_factory: pytest.TempPathFactory) -> None:
    proc, rules = _start(ehr, tmp_path_factory.mktemp("watch"), watch=True)
    try:
        with httpx.Client(base_url=proc.url, timeout=20) as client:
            before = _health(client)["knowledge_base"]
            _set_version(rules, "8.0.1")
            _wait(lambda: _health(client)["knowledge_base"]["version"] == "8.0.1")
            assert _health(client)["knowledge_base"]["content_hash"] != before["content_hash"]
        _wait(lambda: "knowledge base reloaded (files changed)" in proc.log())
    finally:
        proc.stop()

"""``mascds serve``: configuration by file, environment and options; refusals at start; development mode."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from engine.core.errors import UsageError
from engine.service.config import load_settings
from tests.test_service_harness import (
    PATIENT_VIEW,
    ROOT,
    ServiceProcess,
    as_prefetch,
    card_rules,
    checked,
    hook_request,
    mas_record,
)


def mascds(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False, env=env)


def test_settings_come_from_the_file_then_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({
        "base_url": "https://cds.example.org/", "knowledge_base": "kb", "feedback_db": "data/fb.sqlite3",
        "port": 8443, "auth": {"issuers": [{"iss": "https://ehr.example.org", "jwks_file": "ehr-jwks.json"}]},
        "fhir": {"servers": ["https://ehr.example.org/fhir/"]}}))
    settings = load_settings(path, env={"MASCDS_SERVICE_PORT": "9000",
                                        "MASCDS_SERVICE_FHIR__TIMEOUT_SECONDS": "2.5",
                                        "MASCDS_SERVICE_AUTH__ALGORITHMS": '["ES384"]'})
    assert settings.base_url == "https://cds.example.org"  # no trailing slash: audiences are built from it
    assert settings.audience("/cds-services") == "https://cds.example.org/cds-services"
    assert settings.port == 9000 and settings.fhir.timeout_seconds == 2.5 and settings.auth.algorithms == ["ES384"]
    assert settings.knowledge_base == tmp_path / "kb" and settings.feedback_db == tmp_path / "data/fb.sqlite3"
    assert settings.auth.issuers[0].jwks_file == tmp_path / "ehr-jwks.json"
    assert settings.fhir.servers == ["https://ehr.example.org/fhir"]
    assert settings.auth.replay_db is None  # unset: one process, used token ids in memory
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()),
                                    "auth": {"issuers": [{"iss": "https://e.example", "jwks_file": "j.json"}],
                                             "replay_db": "state/replay.sqlite3"}}))
    assert load_settings(path, env={}).auth.replay_db == tmp_path / "state/replay.sqlite3"
    # Options override both.
    assert load_settings(path, env={"MASCDS_SERVICE_PORT": "9000"}, overrides={"port": 1234}).port == 1234
    # The file can be named by the environment.
    assert load_settings(env={"MASCDS_SERVICE_CONFIG": str(path)}).port == 8443


@pytest.mark.parametrize(("env", "message"), [
    ({"MASCDS_SERVICE_PROT": "1"}, "prot"),
    ({"MASCDS_SERVICE_AUTH__ALGORITHMS": '["HS256"]'}, "HMAC"),
    ({"MASCDS_SERVICE_AUTH__ALGORITHMS": '["none"]'}, "'none'"),
    ({"MASCDS_SERVICE_BASE_URL": "cds.example.org"}, "base_url"),
    ({"MASCDS_SERVICE_AUTH__ISSUERS": '[{"iss": "https://x"}]'}, "needs jwks_url, jwks_file or an allowed jku"),
    ({"MASCDS_SERVICE_RULE_DOCS_URL": "https://docs.example.org/"}, "{rule_id}"),
])
def test_bad_settings_are_refused_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match="service configuration") as err:
        load_settings(env=env)
    assert message in str(err.value)


def test_serve_refuses_to_start_unsafely(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = mascds("serve", "--base-url", "https://cds.example.org", "--feedback-db", str(tmp_path / "f.db"), env=env)
    assert out.returncode == 1 and "no trusted issuers" in out.stderr
    out = mascds("serve", "--dev-no-auth", "--host", "0.0.0.0", "--base-url", "http://x.example",
                 "--feedback-db", str(tmp_path / "f.db"), env=env)
    assert out.returncode == 1 and "loopback addresses only" in out.stderr
    out = mascds("serve", "--dev-no-auth", "--feedback-db", str(tmp_path / "f.db"), env=env)
    assert out.returncode == 1 and "base URL" in out.stderr


def test_check_loads_the_knowledge_base_and_reports_located_problems(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    args = ("serve", "--dev-no-auth", "--base-url", "http://127.0.0.1:1", "--rules", str(rules),
            "--feedback-db", str(tmp_path / "f.db"), "--check")
    ok = mascds(*args)
    assert ok.returncode == 0 and "ok:" in ok.stderr
    broken = next(rules.rglob("mas.active.yaml"))
    broken.write_text(broken.read_text(encoding="utf-8") + "bogus_key: 1\n", encoding="utf-8")
    out = mascds(*args)
    assert out.returncode == 1
    assert "mas.active.yaml:" in out.stderr and "E100" in out.stderr


def test_an_unusable_replay_store_stops_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({
        "base_url": "https://cds.example.org", "feedback_db": str(tmp_path / "f.db"),
        "auth": {"issuers": [{"iss": "https://ehr.example.org", "jwks_file": "jwks.json"}],
                 "replay_db": str(blocker / "replay.sqlite3")}}))
    out = mascds("serve", "--config", str(config), "--check")
    assert out.returncode == 1, out.stderr
    assert "auth.replay_db: cannot open the replay store" in out.stderr and "not-a-directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_help_lists_serve_and_its_options() -> None:
    top = mascds("--help")
    assert top.returncode == 0 and "serve" in top.stdout
    out = mascds("serve", "--help")
    assert out.returncode == 0
    for option in ("--config", "--dev-no-auth", "--base-url", "--show-feedback", "--check"):
        assert option in out.stdout


@pytest.fixture(scope="module")
def dev_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("dev")
    config = {"base_url": "http://127.0.0.1", "feedback_db": str(workdir / "f.sqlite3"),
              "knowledge_base": str(ROOT / "rules"), "reload": {"watch": False}}
    proc = ServiceProcess(workdir, config, args=("--dev-no-auth",))
    yield proc
    proc.stop()


def test_development_mode_serves_without_tokens_and_says_so_loudly(dev_service: ServiceProcess) -> None:
    with httpx.Client(base_url=dev_service.url, timeout=20) as client:
        r = client.post(f"/cds-services/{PATIENT_VIEW}",
                        json=hook_request("patient-view", "dev-1", as_prefetch(mas_record("dev-1"))))
        body = checked(r)
        assert card_rules(body, "recommendation")
        assert r.headers["mascds-auth"] == "disabled"
        assert checked(client.get("/healthz"))["auth"] == "disabled"
    log = dev_service.log()
    assert "WARNING" in log and "AUTHENTICATION IS OFF (--dev-no-auth)" in log


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_requested_stop_ends_normally(tmp_path: Path, sig: int) -> None:
    """SIGTERM (a service manager) or SIGINT (Ctrl-C): graceful shutdown, exit 0, no traceback."""
    config = {"base_url": "http://127.0.0.1", "feedback_db": str(tmp_path / "f.sqlite3"),
              "knowledge_base": str(ROOT / "rules"), "reload": {"watch": False}}
    proc = ServiceProcess(tmp_path, config, args=("--dev-no-auth",))
    try:
        proc.proc.send_signal(sig)
        assert proc.proc.wait(timeout=30) == 0
        assert "Shutting down" in proc.log() and "Traceback" not in proc.log()
    finally:
        proc.stop()

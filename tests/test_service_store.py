"""The feedback database: one that cannot be used stops the start as a configuration error (exit 1, naming the
file and the setting); one that stops working while serving never gets a post acknowledged that it did not store
(503 with an OperationOutcome and Retry-After), while the hooks keep answering."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.test_service_harness import (
    ORDER_SIGN,
    ROOT,
    FakeEhr,
    ServiceProcess,
    Tokens,
    as_prefetch,
    checked,
    draft_order,
    hook_request,
    service_config,
    tocilizumab_reaction_record,
)


def _file_as_directory(tmp: Path) -> Path:
    (tmp / "a-file").write_text("")
    return tmp / "a-file" / "feedback.sqlite3"


def _a_directory(tmp: Path) -> Path:
    (tmp / "a-directory").mkdir()
    return tmp / "a-directory"


def _not_sqlite(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("not a database\n" * 200)
    return tmp / "notes.txt"


def _newer_schema(tmp: Path) -> Path:
    db = sqlite3.connect(tmp / "newer.sqlite3")
    db.execute("PRAGMA user_version=99")
    db.close()
    return tmp / "newer.sqlite3"


UNUSABLE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "a path below a file": (_file_as_directory, "cannot use"),
    "a directory": (_a_directory, "cannot use"),
    "not a SQLite file": (_not_sqlite, "cannot use"),
    "written by a newer mascds": (_newer_schema, "newer mascds (schema 99"),
}


@pytest.mark.parametrize("case", sorted(UNUSABLE))
@pytest.mark.parametrize("check", [True, False], ids=["check", "serve"])
def test_an_unusable_feedback_database_is_a_configuration_error(tmp_path: Path, case: str, check: bool) -> None:
    make, reason = UNUSABLE[case]
    path = make(tmp_path)
    args = ["serve", "--dev-no-auth", "--base-url", "http://127.0.0.1:1", "--port", "0", "--feedback-db", str(path)]
    out = subprocess.run([sys.executable, "-m", "engine.cli", *args, *(["--check"] if check else [])],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 1, out.stderr
    assert "feedback_db" in out.stderr and str(path) in out.stderr and reason in out.stderr, out.stderr
    assert "internal error" not in out.stderr and "Traceback" not in out.stderr


@pytest.fixture
def served(ehr: FakeEhr, tmp_path: Path) -> Iterator[tuple[ServiceProcess, Path]]:
    store = tmp_path / "store"
    proc = ServiceProcess(tmp_path / "run", service_config(ehr, tmp_path, feedback_db=str(store / "f.sqlite3")))
    yield proc, store
    proc.stop()


def _call(url: str, tokens: Tokens, path: str, body: object | None = None) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=30) as c:
        if body is None:
            return c.get(path, headers=tokens.header(path))
        return c.post(path, json=body, headers=tokens.header(path))


def _order_sign_card(url: str, tokens: Tokens, pid: str) -> str:
    req = hook_request("order-sign", pid, as_prefetch(tocilizumab_reaction_record(pid)), drafts=[draft_order(pid)])
    body = checked(_call(url, tokens, f"/cds-services/{ORDER_SIGN}", req))
    return str(body["cards"][0]["uuid"])


def _feedback(card: str, comment: str) -> dict[str, object]:
    return {"feedback": [{"card": card, "outcome": "overridden", "outcomeTimestamp": "2026-01-01T00:00:00Z",
                          "overrideReason": {"userComment": comment}}]}


def test_feedback_is_not_acknowledged_when_the_store_is_gone(served: tuple[ServiceProcess, Path],
                                                             tokens: Tokens) -> None:
    proc, store = served
    fb = f"/cds-services/{ORDER_SIGN}/feedback"
    card = _order_sign_card(proc.url, tokens, "store-1")
    assert checked(_call(proc.url, tokens, fb, _feedback(card, "before")))["stored"] == 1
    shutil.rmtree(store)  # the database's directory disappears while the service runs

    refused = _call(proc.url, tokens, fb, _feedback(card, "while gone"))
    body = checked(refused, 503)
    assert "was not stored" in body["issue"][0]["diagnostics"] and refused.headers["retry-after"] == "30"
    checked(_call(proc.url, tokens, fb), 503)  # reading it is refused the same way
    # The hooks keep answering: the advice does not depend on recording the cards.
    later = _order_sign_card(proc.url, tokens, "store-2")
    assert "issued cards not recorded" in proc.log() and "feedback database unavailable" in proc.log()

    store.mkdir()  # restored: the service opens the database at its path again
    assert checked(_call(proc.url, tokens, fb, _feedback(later, "after")))["stored"] == 1
    rows = checked(_call(proc.url, tokens, fb))["feedback"]
    assert [r["user_comment"] for r in rows] == ["after"], "only what was acknowledged is stored"
    assert "internal error" not in proc.log()


def test_show_feedback_refuses_an_unusable_database(tmp_path: Path) -> None:
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({"feedback_db": str(_a_directory(tmp_path))}))
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", "--config", str(config), "--show-feedback"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert out.returncode == 1 and "feedback_db: cannot use" in out.stderr and "Traceback" not in out.stderr

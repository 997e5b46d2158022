"""Durable store of issued cards and of the feedback clients send about them (SQLite).

Every card the service answers with is recorded (its uuid, the rule and knowledge base behind it, its
suggestions), so that feedback, which names only the card's uuid, can be read per rule: how often a rule's advice
is accepted or overridden, and why. No patient data is stored: no patient id, no values; a clinician's free-text
``userComment`` is stored as sent.

The database runs in WAL mode; feedback is committed with ``synchronous=FULL`` before the client is answered.
Issued cards are written with ``synchronous=NORMAL`` (durable across a crash of the service, not necessarily of
the machine): losing the last cards of a power cut costs only the rule attribution of their feedback.

A database that cannot be opened is a configuration error (:class:`FeedbackStoreError`, naming the file). While
serving, a write is acknowledged only when it reached the file at the configured path: SQLite keeps writing to
an open file after it is deleted (its directory removed, say), so every write checks that the path still names
the file it opened, reopens it when the file was replaced, and otherwise raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from .models import Card, Feedback

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued_cards (
    card_uuid TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    hook_instance TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT,
    rule_version TEXT,
    indicator TEXT NOT NULL,
    summary TEXT NOT NULL,
    suggestions TEXT NOT NULL,
    kb_name TEXT NOT NULL,
    kb_version TEXT NOT NULL,
    kb_hash TEXT NOT NULL,
    issued_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,
    override_system TEXT,
    override_code TEXT,
    override_display TEXT,
    user_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL,
    issuer TEXT,
    tenant TEXT
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback(card_uuid);
CREATE INDEX IF NOT EXISTS feedback_service ON feedback(service_id, received_at);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class IssuedCard:
    """What is recorded of a card: plain values (cheap to send from the evaluation process)."""

    uuid: str
    kind: str
    rule_id: str | None
    rule_version: str | None
    indicator: str
    summary: str
    suggestions: dict[str, str]  # suggestion uuid -> label

    @classmethod
    def of(cls, card: Card, kind: str, rule_id: str | None, rule_version: str | None) -> IssuedCard:
        return cls(card.uuid or "", kind, rule_id, rule_version, card.indicator, card.summary,
                   {s.uuid: s.label for s in card.suggestions or () if s.uuid})


class FeedbackStoreError(UsageError):
    """The feedback database cannot be opened or is not one mascds can use: a configuration error."""


class StoreUnavailable(Exception):
    """The feedback database stopped working while serving (its file gone, the disk full, locked too long):
    what was to be written is not stored."""


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class FeedbackStore:
    """One SQLite database; safe to use from several threads (one connection, one lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._memory = str(path) == ":memory:"
        self._lock = threading.Lock()
        self._opened: tuple[int, int] | None = None  # the file opened (device, inode), to notice it is gone
        try:
            if not self._memory:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except (OSError, sqlite3.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise FeedbackStoreError(f"feedback_db: cannot use {path} as the feedback database ({reason}); set "
                                     "feedback_db (or --feedback-db) to a writable SQLite file") from None

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FeedbackStoreError(f"feedback_db: {self.path} was written by a newer mascds (schema {version}, "
                                         f"this one reads {SCHEMA_VERSION}); upgrade mascds or choose another file")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            db.close()
            raise
        self._opened = None if self._memory else _identity(self.path)
        return db

    def _usable(self) -> None:
        """Before a write (lock held): the path still names the open file; a replaced file is reopened."""
        if self._memory or _identity(self.path) == self._opened:
            return
        if not self.path.parent.is_dir():
            raise StoreUnavailable(f"the directory of {self.path} is gone")
        try:
            db = self._open()
        except (OSError, sqlite3.Error, FeedbackStoreError) as exc:
            raise StoreUnavailable(f"{self.path} cannot be reopened ({type(exc).__name__})") from None
        self._db.close()
        self._db = db

    def _stored(self) -> None:
        """After a commit (lock held): it reached the file at the path, not one deleted meanwhile."""
        if not self._memory and _identity(self.path) != self._opened:
            raise StoreUnavailable(f"{self.path} was removed while it was written")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def record_cards(self, service_id: str, hook_instance: str, kb: dict[str, str],
                     cards: Sequence[IssuedCard]) -> None:
        if not cards:
            return
        at = _now()
        rows = [(c.uuid, service_id, hook_instance, c.kind, c.rule_id, c.rule_version, c.indicator, c.summary,
                 json.dumps(c.suggestions), kb["name"], kb["version"], kb["content_hash"], at) for c in cards]
        with self._lock:
            self._usable()
            self._write("NORMAL", "BEGIN", "INSERT OR IGNORE INTO issued_cards VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        rows)

    def add_feedback(self, service_id: str, items: Iterable[Feedback], issuer: str | None,
                     tenant: str | None) -> int:
        at = _now()
        rows = []
        for f in items:
            reason = f.overrideReason.reason if f.overrideReason else None
            rows.append((service_id, f.card, f.outcome, json.dumps([s.id for s in f.acceptedSuggestions or ()]),
                         reason.system if reason else None, reason.code if reason else None,
                         reason.display if reason else None,
                         f.overrideReason.userComment if f.overrideReason else None,
                         f.outcomeTimestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"), at, issuer, tenant))
        with self._lock:
            self._usable()
            self._write("FULL", "BEGIN IMMEDIATE",
                        "INSERT INTO feedback (service_id, card_uuid, outcome, accepted_suggestions, override_system, "
                        "override_code, override_display, user_comment, outcome_timestamp, received_at, issuer, "
                        "tenant) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def _write(self, synchronous: str, begin: str, sql: str, rows: list[Any]) -> None:
        """One transaction of ``rows`` (under the lock, store checked usable): committed and confirmed on disk, or
        rolled back and reported as :class:`StoreUnavailable` - never acknowledged unstored."""
        try:
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute(begin)
            try:
                self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"{self.path}: {type(exc).__name__}") from None
        self._stored()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def query(self, *, service_id: str | None = None, rule_id: str | None = None, outcome: str | None = None,
              since: str | None = None, issuer: str | None = None, tenant: str | None = None,
              limit: int = 1000) -> list[dict[str, Any]]:
        """Stored feedback, newest first, each with the card's rule and knowledge base when the card is known."""
        where: list[str] = []
        args: list[str | int] = []
        for column, value in (("f.service_id", service_id), ("c.rule_id", rule_id), ("f.outcome", outcome),
                              ("f.issuer", issuer), ("f.tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("f.received_at >= ?")
            args.append(since)
        sql = ("SELECT f.service_id, f.card_uuid, f.outcome, f.accepted_suggestions, f.override_system, "
               "f.override_code, f.override_display, f.user_comment, f.outcome_timestamp, f.received_at, "
               "c.rule_id, c.rule_version, c.kind, c.summary, c.suggestions, c.kb_name, c.kb_version, c.kb_hash "
               "FROM feedback f LEFT JOIN issued_cards c ON c.card_uuid = f.card_uuid"
               + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.id DESC LIMIT ?")
        args.append(max(1, min(limit, 10_000)))
        with self._lock:
            self._usable()
            try:
                rows = self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.path}: {type(exc).__name__}") from None
        out = []
        for r in rows:
            labels = json.loads(r[14]) if r[14] else {}
            accepted = json.loads(r[3])
            out.append({
                "service": r[0], "card": r[1], "outcome": r[2],
                "accepted_suggestions": [{"id": s, "label": labels.get(s)} for s in accepted],
                "override_reason": ({"system": r[4], "code": r[5], "display": r[6]} if r[5] else None),
                "user_comment": r[7], "outcome_timestamp": r[8], "received_at": r[9],
                "card_known": r[10] is not None or r[12] is not None,
                "rule_id": r[10], "rule_version": r[11], "card_kind": r[12], "card_summary": r[13],
                "knowledge_base": {"name": r[15], "version": r[16], "content_hash": r[17]} if r[15] else None,
            })
        return out

    def summary(self) -> list[dict[str, Any]]:
        """Per rule: cards issued, accepted and overridden."""
        sql = ("SELECT c.rule_id, COUNT(DISTINCT c.card_uuid), "
               "COUNT(DISTINCT CASE WHEN f.outcome = 'accepted' THEN f.card_uuid END), "
               "COUNT(DISTINCT CASE WHEN f.outcome = 'overridden' THEN f.card_uuid END) "
               "FROM issued_cards c LEFT JOIN feedback f ON f.card_uuid = c.card_uuid "
               "WHERE c.rule_id IS NOT NULL GROUP BY c.rule_id ORDER BY c.rule_id")
        with self._lock:
            rows = self._db.execute(sql).fetchall()
        return [{"rule_id": r[0], "cards": r[1], "accepted": r[2], "overridden": r[3]} for r in rows]


__all__ = ["FeedbackStore", "FeedbackStoreError", "IssuedCard", "StoreUnavailable"]

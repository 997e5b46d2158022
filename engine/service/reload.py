"""Hot reload of the knowledge base, on SIGHUP or when its files change, without dropping a request.

A new knowledge base is loaded, checked and compiled completely (durable_rules rulesets included) in a
background thread, then swapped in with one reference assignment. A request reads the current knowledge base
once when it starts and keeps it to the end, so requests in flight finish on the one they started with; the old
rulesets are freed when the last of them ends. A knowledge base that fails to load leaves the old one serving,
and every located problem (``file:line:col: code message``) is logged.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import LoadError, MascdsError
from ..runtime.kb import load_knowledge_base
from .cards import KnowledgeBaseView

log = logging.getLogger("mascds.service")
SETTLE_SECONDS = 0.3  # wait for an editor or a checkout to finish writing before loading


@dataclass(frozen=True)
class ReloadStatus:
    generation: int  # how many knowledge bases have been swapped in since start
    last_attempt: float | None
    last_ok: bool
    last_problems: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"generation": self.generation, "last_attempt": self.last_attempt, "last_ok": self.last_ok,
                "last_problems": list(self.last_problems)}


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Every YAML file under ``directory`` with its modification time and size: changes when a file does."""
    out = []
    for root, _, files in os.walk(directory):
        for name in files:
            if name.endswith((".yaml", ".yml")):
                p = Path(root, name)
                try:
                    st = p.stat()
                except OSError:
                    continue
                out.append((str(p.relative_to(directory)), st.st_mtime_ns, st.st_size))
    return tuple(sorted(out))


class KnowledgeBaseHolder:
    """The knowledge base currently serving; replaced atomically."""

    def __init__(self, directory: Path, loader: Callable[[Path], KnowledgeBaseView] | None = None) -> None:
        self.directory = directory
        self._loader = loader or (lambda d: KnowledgeBaseView.of(load_knowledge_base(d)))
        self._lock = threading.Lock()  # one load at a time
        self._fingerprint = fingerprint(directory)
        self.current: KnowledgeBaseView = self._loader(directory)
        self.status = ReloadStatus(0, None, True, ())

    def reload(self, reason: str, unless: Callable[[], bool] | None = None) -> bool:
        """Load the knowledge base again; swap it in if it loads. True when a new one now serves. With ``unless``,
        nothing is loaded when it holds once a load under way has finished."""
        with self._lock:
            if unless is not None and unless():
                return False
            before = fingerprint(self.directory)
            old = self.current
            started = time.time()
            try:
                new = self._loader(self.directory)
            except LoadError as exc:
                problems = tuple(d.format() for d in exc.diagnostics) or (exc.what,)
                self._fail(reason, started, problems, old, before)
                return False
            except (MascdsError, OSError) as exc:
                self._fail(reason, started, (f"{type(exc).__name__}: {exc}",), old, before)
                return False
            self._fingerprint = before
            was_label, was_hash = old.label, old.kb.content_hash
            if new.kb.content_hash == old.kb.content_hash:
                self.status = ReloadStatus(self.status.generation, started, True, ())
                log.info("knowledge base reload (%s): unchanged, still %s (%s)", reason, old.label,
                         old.kb.content_hash)
                return False
            self.current = new  # the swap: requests that start from now on use the new knowledge base
            self.status = ReloadStatus(self.status.generation + 1, started, True, ())
            del old
            if gc.get_freeze_count():
                # The service froze its heap at start (engine.service.app.freeze_heap): thaw it so the old
                # knowledge base can be collected, then freeze again with the new one.
                gc.unfreeze()
                gc.collect()
                gc.freeze()
            log.info("knowledge base reloaded (%s) in %.2f s: %s (%s), was %s (%s)", reason, time.time() - started,
                     new.label, new.kb.content_hash, was_label, was_hash)
            return True

    def _fail(self, reason: str, started: float, problems: tuple[str, ...], old: KnowledgeBaseView,
              before: tuple[tuple[str, int, int], ...]) -> None:
        self._fingerprint = before  # do not retry the same broken files until they change again
        self.status = ReloadStatus(self.status.generation, started, False, problems)
        log.error("knowledge base reload (%s) failed with %d problem(s); still serving %s (%s)", reason,
                  len(problems), old.label, old.kb.content_hash)
        for p in problems:
            log.error("  %s", p)

    def changed(self) -> bool:
        return fingerprint(self.directory) != self._fingerprint


class Reloader:
    """A daemon thread that reloads on request (SIGHUP) and, when watching, on file changes."""

    def __init__(self, holder: KnowledgeBaseHolder, watch: bool, poll_seconds: float) -> None:
        self.holder = holder
        self.watch = watch
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._requested = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="mascds-kb-reloader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)

    def request(self) -> None:
        """Ask for a reload now (the SIGHUP handler; safe to call from a signal handler or any thread)."""
        self._requested = True
        self._wake.set()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.poll_seconds if self.watch else None)
            self._wake.clear()
            if self._stop:
                return
            try:
                if self._requested:
                    self._requested = False
                    self.holder.reload("SIGHUP")
                elif self.watch and self.holder.changed():
                    time.sleep(SETTLE_SECONDS)
                    self.holder.reload("files changed")
            except Exception:  # the reloader must survive anything; the old knowledge base keeps serving
                log.exception("knowledge base reload crashed; still serving %s", self.holder.current.label)


__all__ = ["KnowledgeBaseHolder", "ReloadStatus", "Reloader", "fingerprint"]

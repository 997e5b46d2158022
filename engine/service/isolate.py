"""Evaluation in a child process, so that a fault of one evaluation cannot take the service down.

The rule engine is a C extension (durable_rules): a crash inside it (a segfault, an abort, memory exhausted) ends
the process it runs in. So each service process evaluates in a child process of its own: the service process
reads the request, gathers the FHIR data, and sends the call (the resources, the context, the time) to the
child, which maps the record, evaluates it and builds the cards; the answer comes back the same way. A child
that dies during a call, or takes longer than ``evaluation_timeout_seconds``, costs that call a 500
OperationOutcome; a new child is started at once and the calls queued behind it are answered by the new one.

The child loads the knowledge base from the same directory and keeps it current the same way (a reloader
watching the files, SIGHUP forwarded by the service process). Every call names the content hash of the knowledge
base the service process answers with; the child keeps the current one and the one before (for calls that
started before a reload), and a call naming neither makes it load the directory again. If that still differs
(the files changed once more meanwhile), the call answers 503 with Retry-After: a call is never evaluated with
another knowledge base than the one its answer names.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from .config import Settings
from .feedback import IssuedCard
from .models import PatientViewContext
from .prefetch import Gathered, ServiceDef
from .timing import Timings

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("mascds.service")
KEPT_KNOWLEDGE_BASES = 2
START_TIMEOUT_SECONDS = 120.0  # imports, knowledge base and warm-up take about a second; a loaded machine more


@dataclass(frozen=True)
class Job:
    """One call to evaluate, as sent to the child."""

    kb_hash: str
    service: ServiceDef
    ctx: PatientViewContext
    gathered: Gathered
    drafts: list[dict[str, Any]]
    now: float

    def wire(self) -> bytes:
        """The job as sent: the FHIR data as JSON (parsed JSON, so it round-trips; JSON is several times cheaper
        to write and read than pickled dictionaries), the rest pickled."""
        g = self.gathered
        try:
            data: bytes | None = orjson.dumps((g.resources, self.drafts))
        except orjson.JSONEncodeError:  # not from a JSON parser (cannot happen in the service): pickled instead
            data = None
        return pickle.dumps((self.kb_hash, self.service, self.ctx, data,
                             None if data is not None else (g.resources, self.drafts),
                             g.not_fetched_keys, g.fetched_keys, g.not_fetched_sections, self.now),
                            protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def unwire(cls, raw: bytes) -> Job:
        kb_hash, service, ctx, data, objects, not_fetched_keys, fetched_keys, sections, now = pickle.loads(raw)
        resources, drafts = orjson.loads(data) if data is not None else objects
        return cls(kb_hash, service, ctx, Gathered(resources, not_fetched_keys, fetched_keys, sections), drafts,
                   now)


def _cards_wire(cards: Sequence[IssuedCard]) -> list[tuple[Any, ...]]:
    """Issued cards as plain tuples (pickled dataclasses cost several times more)."""
    return [(c.uuid, c.kind, c.rule_id, c.rule_version, c.indicator, c.summary, c.suggestions) for c in cards]


class EvaluationFailed(Exception):
    """The call could not be evaluated: the child died, timed out or failed (500), or holds another knowledge
    base (503, ``retry``)."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class Rejected(Exception):
    """The record was refused by the evaluation (a 4xx :class:`~engine.service.app.Problem` in the child)."""

    def __init__(self, status: int, lines: list[str], code: str | None) -> None:
        super().__init__("; ".join(lines))
        self.status, self.lines, self.code = status, lines, code


def docs_url_for(settings: Settings, rule_id: str) -> str:
    """The link of a rule's documentation on its cards."""
    template = settings.rule_docs_url
    if template is not None:
        return template.replace("{rule_id}", rule_id)
    return f"{settings.base_url}/rules/{rule_id}"


def _child_main(settings: Settings, directory: str, conn: multiprocessing.connection.Connection) -> None:
    """The child: load, warm up, then evaluate jobs until the pipe closes."""
    from functools import partial

    from ..runtime.kb import load_knowledge_base
    from .app import Problem, _place, evaluate_call, fhir_reader_options, freeze_heap, warm_up
    from .cards import KnowledgeBaseView
    from .reload import KnowledgeBaseHolder, Reloader

    # Ctrl-C, or a service manager's SIGTERM, reaches the whole process group: the service process finishes the
    # calls in flight with this child, then closes the pipe, which ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s[evaluation]: %(message)s")
    # The last knowledge bases loaded: a call that started before a reload in the service process ends on the
    # knowledge base it started with, as calls evaluated in-process do, whichever process reloaded first.
    views: dict[str, KnowledgeBaseView] = {}

    def load(path: Path) -> KnowledgeBaseView:
        view = KnowledgeBaseView.of(load_knowledge_base(path))
        views.pop(view.kb.content_hash, None)
        views[view.kb.content_hash] = view
        while len(views) > KEPT_KNOWLEDGE_BASES:
            del views[next(iter(views))]
        return view

    holder = KnowledgeBaseHolder(Path(directory), load)
    reloader = Reloader(holder, settings.reload.watch, settings.reload.poll_seconds)
    reloader.start()
    signal.signal(signal.SIGHUP, lambda signum, frame: reloader.request())
    docs_url = partial(docs_url_for, settings)
    reader = fhir_reader_options(settings)
    warm_up(holder.current, docs_url, reader)
    freeze_heap()
    conn.send(("ready", os.getpid()))

    def reply(*message: Any) -> None:
        conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not raw:  # the service process closes the child with an empty message
            return
        job = Job.unwire(raw)
        timings = Timings()  # from here to the reply; the rest is the hand-off
        if job.kb_hash not in views:  # (a reload under way may bring it: wait for that one first)
            holder.reload("the service process serves another knowledge base", partial(views.__contains__,
                                                                                         job.kb_hash))
        view = views.get(job.kb_hash)
        if view is None:
            reply("stale", holder.current.kb.content_hash)
            continue
        try:
            ev = evaluate_call(view, job.service, job.ctx, job.gathered, job.drafts, job.now, docs_url, timings,
                               reader)
            answer = orjson.dumps(ev.response)  # the answer's bytes: cheaper to send than objects
            timings.lap("serialise")
        except Problem as exc:
            reply("rejected", exc.status, exc.lines, exc.code)
            continue
        except Exception as exc:  # a fault of the service: by type and place only (messages may hold data)
            reply("error", f"{type(exc).__name__} at {_place(exc)}")
            continue
        reply("ok", answer, _cards_wire(ev.cards), timings.stages)


class IsolatedEvaluator:
    """The evaluation child of one service process; :meth:`evaluate` is called by one thread at a time."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.timeout = settings.evaluation_timeout_seconds
        self._ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads or engine state
        self._proc: BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the child and wait until it can evaluate; :class:`RuntimeError` when it cannot start."""
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_child_main, name="mascds-evaluation", daemon=True,
                                 args=(self.settings, str(self.directory), theirs))
        proc.start()
        theirs.close()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            ready = multiprocessing.connection.wait([ours, proc.sentinel], timeout=0.5)
            if ours in ready:
                with contextlib.suppress(EOFError, OSError):
                    if ours.recv()[0] == "ready":
                        self._proc, self._conn = proc, ours
                        return
            if ready:
                break
        proc.kill()
        proc.join()
        ours.close()
        raise RuntimeError(f"the evaluation process could not start (exit code {proc.exitcode})")

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.pid is not None and self._proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, sig)

    def _replace(self, why: str) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            proc.join()
            code = proc.exitcode
            how = f"signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else \
                f"exit code {code}"
            log.error("the evaluation process %s (%s) during a call; starting a new one", why, how)
        if conn is not None:
            conn.close()
        self.restarts += 1
        self.start()

    def evaluate(self, job: Job, timings: Timings | None = None) -> tuple[bytes, list[IssuedCard]]:
        """The call's answer (JSON bytes) and its cards to record. ``timings`` receives the child's stages and
        ``handoff``: the rest of the round trip (writing and reading the messages, the pipe, the wake-up)."""
        timings = timings if timings is not None else Timings()
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                self._replace("was not running")
            timings.lap("queue")  # (includes starting a child that was not running)
            assert self._conn is not None
            try:
                self._conn.send_bytes(job.wire())
                if not self._conn.poll(self.timeout):
                    self._replace(f"did not finish within {self.timeout:g} s")
                    raise EvaluationFailed(f"the evaluation did not finish within {self.timeout:g} s")
                reply = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError):
                self._replace("died")
                raise EvaluationFailed("the evaluation of this record stopped the rule engine") from None
        kind = reply[0]
        if kind == "ok":
            answer, cards, stages = reply[1], [IssuedCard(*c) for c in reply[2]], reply[3]
            timings.lap("handoff")
            timings.add("handoff", -sum(stages.values()))
            timings.merge(stages)
            return answer, cards
        if kind == "rejected":
            raise Rejected(reply[1], reply[2], reply[3])
        if kind == "stale":
            raise EvaluationFailed("the knowledge base is being reloaded", retry=True)
        log.error("internal error %s in the evaluation process", reply[1])
        raise EvaluationFailed("the evaluation failed")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send_bytes(b"")
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join()
            if self._conn is not None:
                self._conn.close()
            self._proc = self._conn = None


__all__ = ["EvaluationFailed", "IsolatedEvaluator", "Job", "Rejected", "docs_url_for"]

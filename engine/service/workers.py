"""Several service processes behind one port (``workers`` > 1), so that a call can use each core.

One process evaluates one call at a time (the rule engine and most of a call hold the GIL), so it uses one core.
With ``workers: N`` ``mascds serve`` becomes a supervisor: it reserves the port (bound, not listening), then
starts N worker processes, each a whole service with its own knowledge base and reloader, each listening on the
same port with SO_REUSEPORT; the kernel spreads new connections over them, and a keep-alive connection stays
with the worker that accepted it. Workers share the SQLite files: feedback, and the record of used token ids
(``auth.replay_db``, by default a file beside ``feedback_db``), so a token used at one worker is a replay at all.

The supervisor forwards SIGHUP (reload the knowledge base) to every worker and stops them all on SIGTERM or
SIGINT. A worker that dies is started again; a worker that cannot start (bad settings or knowledge base) stops
the service with its error, and so do workers that keep dying, rather than a restart loop.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from ..core.errors import UsageError
from .config import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("mascds.service")
READY_TIMEOUT_SECONDS = 120.0  # imports, knowledge base and warm-up take about a second; a loaded machine more
STOP_GRACE_SECONDS = 30.0  # uvicorn finishes the calls in flight, then the worker is killed
MAX_RESTARTS = 5  # within RESTART_WINDOW_SECONDS: more means the workers cannot live, so the service stops
RESTART_WINDOW_SECONDS = 60.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind_socket(host: str, port: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to ``host:port``; listening unless ``listen`` is False (a reservation of the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only for sockets that say so
    # (with proto 0, small answers waited ~40 ms for delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _handling(handler: Callable[[int, FrameType | None], None], *signals: int) -> Iterator[None]:
    """``handler`` for ``signals`` within the block; the previous handlers after it."""
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def announce(host: str, port: int, note: str = "") -> None:
    """The line that says the service accepts connections (printed at any log level; tests and scripts wait
    for it)."""
    shown = f"[{host}]" if ":" in host else host
    print(f"mascds serve: listening on http://{shown}:{port}{note}", file=sys.stderr, flush=True)


def run_server(app: FastAPI, settings: Settings, sock: socket.socket,
               ready: multiprocessing.connection.Connection | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGTERM or SIGINT, then return; with ``ready``, tell the supervisor once
    connections are accepted. uvicorn shuts down gracefully on either signal and then raises it again, which
    would end the process by the signal (exit 143) or a KeyboardInterrupt traceback: the handlers it restores
    and re-raises to are these, which do nothing, so a requested stop ends normally (exit 0)."""
    def stopped(signum: int, frame: FrameType | None) -> None:
        pass

    config = uvicorn.Config(app, log_config=None, log_level=settings.log_level, access_log=False,
                            server_header=False, lifespan="on")
    server = uvicorn.Server(config) if ready is None else _Server(config, ready)
    with _handling(stopped, signal.SIGINT, signal.SIGTERM):
        server.run(sockets=[sock])


def worker_settings(settings: Settings, dev_no_auth: bool) -> Settings:
    """The settings every worker runs with; :class:`UsageError` when they cannot be shared by several."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise UsageError("workers above 1 need SO_REUSEPORT, which this system lacks; set workers: 1")
    if str(settings.feedback_db) == ":memory:":
        raise UsageError("workers above 1 share the feedback database, so feedback_db must be a file, "
                         "not ':memory:'")
    if dev_no_auth or settings.auth.replay_db is not None:
        return settings
    # A token accepted by one worker must be a replay at the others: an in-memory record per process would not do.
    replay = settings.feedback_db.with_name(settings.feedback_db.name + ".used-tokens")
    log.info("workers share the record of used token ids in %s", replay)
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"replay_db": replay})})


class _Server(uvicorn.Server):
    """uvicorn's server, telling the supervisor once it accepts connections."""

    def __init__(self, config: uvicorn.Config, ready: multiprocessing.connection.Connection) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self._ready.send("ready")
            self._ready.close()


def _worker_main(index: int, settings: Settings, dev_no_auth: bool, host: str, port: int,
                 ready: multiprocessing.connection.Connection) -> None:
    """One worker (in a new process): the whole service on its own SO_REUSEPORT socket."""
    from ..core.exits import guarded

    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr,
                        format=LOG_FORMAT.replace("%(name)s", f"%(name)s[worker {index}]"))

    def serve() -> int:
        from .app import create_app

        app = create_app(settings, dev_no_auth=dev_no_auth)
        run_server(app, settings, bind_socket(host, port, reuse_port=True), ready)
        return 0

    sys.exit(guarded(serve))


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    ready: multiprocessing.connection.Connection


@dataclass
class Supervisor:
    settings: Settings
    dev_no_auth: bool
    host: str
    port: int
    workers: dict[int, _Worker] = field(default_factory=dict)
    restarts: list[float] = field(default_factory=list)
    stopping: bool = False
    reload_requested: bool = False

    def start(self, index: int) -> _Worker:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that holds threads or engine state
        theirs, ours = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker_main, name=f"mascds-worker-{index}", daemon=False,
                           args=(index, self.settings, self.dev_no_auth, self.host, self.port, ours))
        proc.start()
        ours.close()
        worker = _Worker(index, proc, theirs)
        self.workers[index] = worker
        return worker

    def wait_ready(self, worker: _Worker) -> bool:
        """Whether the worker came up; False when it exited or stayed silent for READY_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline and not self.stopping:
            ready = multiprocessing.connection.wait([worker.ready, worker.process.sentinel], timeout=0.5)
            if worker.ready in ready:
                try:
                    return bool(worker.ready.recv() == "ready")
                except EOFError:
                    return False
            if worker.process.sentinel in ready:
                return False
        return False

    def signal_all(self, sig: int) -> None:
        for w in self.workers.values():
            if w.process.is_alive() and w.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w.process.pid, sig)

    def stop_all(self) -> None:
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for w in self.workers.values():
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                log.error("worker %d did not stop within %.0f s; killing it", w.index, STOP_GRACE_SECONDS)
                w.process.kill()
                w.process.join()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stopping = True

    def run(self, count: int) -> int:
        with _handling(self._on_signal, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            for index in range(count):
                worker = self.start(index)
                if not self.wait_ready(worker):
                    code = 0 if self.stopping else self._failed_start(worker)
                    self.stop_all()
                    return code
            if self.stopping:
                self.stop_all()
                return 0
            announce(self.host, self.port, f" ({count} workers)")
            return self._watch()

    def _failed_start(self, worker: _Worker) -> int:
        worker.process.join(1.0)
        code = worker.process.exitcode
        if code is None:
            log.error("worker %d did not start within %.0f s", worker.index, READY_TIMEOUT_SECONDS)
            return 1
        log.error("worker %d could not start (exit code %s); see its messages above", worker.index, code)
        return code if code > 0 else 1

    def _watch(self) -> int:
        while not self.stopping:
            if self.reload_requested:
                self.reload_requested = False
                log.info("SIGHUP: asking %d workers to reload the knowledge base", len(self.workers))
                self.signal_all(signal.SIGHUP)
            sentinels = {w.process.sentinel: w for w in self.workers.values()}
            for sentinel in multiprocessing.connection.wait(list(sentinels), timeout=0.5):
                if self.stopping:
                    break
                dead = sentinels[sentinel]  # type: ignore[index]
                dead.process.join()
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_SECONDS] + [now]
                if len(self.restarts) > MAX_RESTARTS:
                    log.error("workers died %d times within %.0f s (the last, worker %d, with exit code %s); "
                              "stopping the service", len(self.restarts), RESTART_WINDOW_SECONDS, dead.index,
                              dead.process.exitcode)
                    self.stop_all()
                    return 1
                log.error("worker %d exited with code %s; starting it again", dead.index, dead.process.exitcode)
                replacement = self.start(dead.index)
                if not self.wait_ready(replacement) and not self.stopping:
                    code = self._failed_start(replacement)
                    self.stop_all()
                    return code
        self.stop_all()
        return 0


def supervise(settings: Settings, *, dev_no_auth: bool) -> int:
    """Serve with ``settings.workers`` processes until SIGTERM or SIGINT; the exit code. ``settings`` are the
    workers' (:func:`worker_settings`)."""
    # Any process of this user could join a SO_REUSEPORT port and take a share of the calls - a second mascds
    # started by mistake, say. A plain bind first fails if anything holds the port, so this service is alone.
    probe = bind_socket(settings.host, settings.port, listen=False)
    host, port = probe.getsockname()[:2]
    probe.close()
    reservation = bind_socket(host, port, reuse_port=True, listen=False)
    try:
        return Supervisor(settings, dev_no_auth, host, port).run(settings.workers)
    finally:
        reservation.close()


__all__ = ["LOG_FORMAT", "announce", "bind_socket", "run_server", "supervise", "worker_settings"]

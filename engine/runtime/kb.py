"""The knowledge base as users hold it: load -> check -> compile once, then evaluate many snapshots."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from ..compiler.compile import CompiledKB, compile_kb
from ..core.errors import Diagnostic, EvaluationError, LoadError, UsageError
from ..core.snapshot import Snapshot
from ..core.times import TimeFormatError, check_epoch, parse_time
from ..language.check import check_knowledge_base
from ..language.load import display_path, read_rules
from .evaluate import evaluate_snapshot
from .match import Backend, ReferenceBackend
from .result import Result

BackendName = Literal["durable", "reference"]
EvaluationPath = Literal["compiled", "interpreted"]
BACKENDS: tuple[BackendName, ...] = ("durable", "reference")


def default_rules_dir() -> Path:
    """``$MASCDS_RULES``, else ``./rules``, else the rules shipped beside the package."""
    env = os.environ.get("MASCDS_RULES")
    if env:
        return Path(env)
    here = Path("rules")
    if (here / "knowledge-base.yaml").is_file():
        return here
    return Path(__file__).resolve().parents[2] / "rules"


class KnowledgeBase:
    """A loaded, checked and compiled knowledge base. Create with :func:`load_knowledge_base`."""

    def __init__(self, compiled: CompiledKB) -> None:
        self.compiled = compiled
        self._backends: dict[str, Backend] = {}

    @property
    def name(self) -> str:
        return self.compiled.manifest.name

    @property
    def version(self) -> str:
        return self.compiled.manifest.version

    @property
    def content_hash(self) -> str:
        return self.compiled.content_hash

    @property
    def rule_ids(self) -> list[str]:
        return [r.id for r in self.compiled.rules]

    def backend(self, name: BackendName = "durable") -> Backend:
        if name not in BACKENDS:
            raise UsageError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
        found = self._backends.get(name)
        if found is None:
            if name == "durable":
                from .durable_backend import DurableBackend  # imported on first use: the C engine is optional

                found = DurableBackend(self.compiled.queries)
            else:
                found = ReferenceBackend(self.compiled.queries)
            self._backends[name] = found
        return found

    def evaluate(self, snapshot: Snapshot, at: int | str | datetime | None = None,
                 backend: BackendName = "durable", lang: str = "en", *, _path: EvaluationPath = "compiled",
                 _stages: dict[str, float] | None = None) -> Result:
        """Evaluate ``snapshot`` as of ``at`` (default: its last event). ``_path`` is private: "interpreted"
        decides with the reference interpreter, for tests and the benchmark; ``_stages`` collects the time
        of each stage (see ``evaluate_snapshot``)."""
        as_of = resolve_time(snapshot, at)
        if lang not in ("en", "zh-CN"):
            raise UsageError(f"unknown language '{lang}'; choose en or zh-CN")
        be = self.backend(backend)
        session = be.open()
        try:
            return evaluate_snapshot(self.compiled, session, snapshot, as_of, be.name, lang,
                                     interpreted=_path == "interpreted", stages=_stages)
        finally:
            session.close()

    def close(self) -> None:
        for be in self._backends.values():
            be.close()
        self._backends.clear()


def resolve_time(snapshot: Snapshot, at: int | str | datetime | None) -> int:
    if at is None:
        last = snapshot.last_event()
        if last is None:
            raise UsageError("the case has no events; give an evaluation time")
        return last
    try:
        if isinstance(at, int) and not isinstance(at, bool):
            return check_epoch(at)
        return parse_time(at, snapshot.start)
    except TimeFormatError as exc:
        raise UsageError(f"bad evaluation time: {exc}") from exc


def validate_knowledge_base(path: str | Path | None = None) -> list[Diagnostic]:
    """Every problem in a rules directory (empty when it is clean)."""
    directory = Path(path) if path is not None else default_rules_dir()
    loaded, diags = read_rules(directory)
    if loaded is not None:
        diags = diags + check_knowledge_base(loaded)
    return sorted(diags)


def load_knowledge_base(path: str | Path | None = None, include_drafts: bool = False) -> KnowledgeBase:
    """Load, check and compile a rules directory; raises :class:`LoadError` with every problem."""
    directory = Path(path) if path is not None else default_rules_dir()
    loaded, diags = read_rules(directory)
    if loaded is not None:
        diags = diags + check_knowledge_base(loaded)
    errors = [d for d in diags if d.severity == "error"]
    if loaded is None or errors:
        raise LoadError(f"knowledge base {display_path(directory)} could not be loaded", errors)
    compiled, more = compile_kb(loaded, include_drafts)
    if more:
        raise LoadError(f"knowledge base {display_path(directory)} could not be compiled", more)
    kb = KnowledgeBase(compiled)
    try:
        kb.backend("durable")  # engine limits are found now, not at the first patient
    except EvaluationError as exc:
        raise LoadError(f"knowledge base {display_path(directory)} could not be compiled",
                        [Diagnostic(display_path(directory / "knowledge-base.yaml"), 1, 1, "E300", str(exc),
                                    "split the knowledge base or simplify the rules named above")]) from exc
    return kb

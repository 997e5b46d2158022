"""Replay stage: a case evaluated at every event of its timeline, and when each finding appears and disappears.

Evaluating from scratch at each of n events costs O(n²): every evaluation rebuilds and re-asserts every fact.
The incremental replay keeps one matching session for the whole timeline. At each time it adds only the facts
that are new or changed (a new measurement, a dose given, a course that has ended, the clock), retires the ones
that no longer hold, and evaluates; the results are the same as from scratch (tests/test_replay.py checks every
shipped case at every event, on both backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.snapshot import Snapshot
from ..core.times import iso, relative_label
from ..runtime.evaluate import evaluate_snapshot
from ..runtime.facts import Fact, Key, clock_fact, fact_changes, patient_fact
from ..runtime.kb import BackendName, KnowledgeBase
from ..runtime.match import MatchSession
from ..runtime.result import Result

SESSION_IDS = 15_000  # fresh session beyond this many ids: the engine's ids stay in the collision-free range


@dataclass(frozen=True)
class Span:
    """One stretch of the timeline over which a rule kept one state."""

    state: str  # fired | suppressed | undecided (recommendations); met | not_met | indeterminate (+ _unreliable)
    # | not_applicable (assessments outside their population: shown, so a gap never reads as "not met")
    start: int
    end: int | None  # the time it changed; None: still so at the last time evaluated

    def to_json(self, origin: int | None) -> dict[str, Any]:
        return {"state": self.state, "from": iso(self.start), "to": iso(self.end) if self.end is not None else None,
                "from_label": relative_label(self.start, origin),
                "to_label": relative_label(self.end, origin) if self.end is not None else None}


@dataclass(frozen=True)
class Replay:
    snapshot: Snapshot
    times: tuple[int, ...]
    results: tuple[Result, ...]
    incremental: bool

    def states(self, result: Result) -> dict[str, str]:
        """Every rule's state in one result; quiet rules (not fired, not met) are left out."""
        out: dict[str, str] = {}
        for r in result.recommendations:
            out[r.rule_id] = "fired" if r.status == "active" else "suppressed"
        for u in result.indeterminate:
            out.setdefault(u.rule_id, "undecided" if u.produces == "recommendation" else "indeterminate")
        for a in result.assessments:
            if a.status != "not_met" or not a.reliable:
                out[a.rule_id] = a.status + ("" if a.reliable else "_unreliable")
        return out

    def spans(self) -> dict[str, list[Span]]:
        """For each rule that was ever anything but quiet: the spans of its states, in time order."""
        out: dict[str, list[Span]] = {}
        current: dict[str, tuple[str, int]] = {}
        for t, result in zip(self.times, self.results, strict=True):
            now = self.states(result)
            for rid in sorted(set(current) | set(now)):
                before, after = current.get(rid), now.get(rid)
                if before is not None and (after is None or after != before[0]):
                    out.setdefault(rid, []).append(Span(before[0], before[1], t))
                    del current[rid]
                if after is not None and rid not in current:
                    current[rid] = (after, t)
        for rid, (state, start) in current.items():
            out.setdefault(rid, []).append(Span(state, start, None))
        return dict(sorted(out.items(), key=lambda kv: (kv[1][0].start, kv[0])))

    def to_json(self) -> dict[str, Any]:
        origin = self.snapshot.start
        return {"format": "mascds.replay/1", "case": {"id": self.snapshot.id, "title": self.snapshot.title},
                "times": [iso(t) for t in self.times], "evaluations": len(self.times),
                "spans": {rid: [s.to_json(origin) for s in spans] for rid, spans in self.spans().items()}}


class _Ids:
    """Session-wide fact ids: "0", "1", ... never reused within a session."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return str(self.n - 1)


class _Session:
    """One matching session brought forward through the times of a replay."""

    def __init__(self, kb: KnowledgeBase, snapshot: Snapshot, horizon: int, backend: BackendName, lang: str) -> None:
        self.kb, self.snapshot, self.lang = kb, snapshot, lang
        self.backend = kb.backend(backend)
        self.changes = fact_changes(snapshot, horizon)
        self.next_change = 0
        self.alive: dict[Key, Fact] = {}
        self.derived: list[str] = []
        self.ids = _Ids()
        self.session: MatchSession = self.backend.open(incremental=True)

    def close(self) -> None:
        self.session.close()

    def step(self, t: int) -> Result:
        """Add the facts that appeared or changed up to ``t``, retire the ones they replace, and evaluate."""
        snap, alive, ids = self.snapshot, self.alive, self.ids
        retire = self.derived
        add: list[Fact] = []
        for fact in (patient_fact(snap, t, ids()), clock_fact(t, ids())):  # both change at every time
            old = alive.get(fact.key)
            if old is not None:
                retire.append(old.id)
            alive[fact.key] = fact
            add.append(fact)
        while self.next_change < len(self.changes) and self.changes[self.next_change].time <= t:
            change = self.changes[self.next_change]
            self.next_change += 1
            made = change.make(t)
            old = alive.get(change.key)
            if made is None or (old is not None and old.data == made[0]):
                continue
            fact = Fact(ids(), made[0], made[1], made[2], change.key)
            if old is not None:
                retire.append(old.id)
            alive[change.key] = fact
            add.append(fact)
        self.session.retire(retire)
        self.session.add(add)
        result = evaluate_snapshot(self.kb.compiled, self.session, snap, t, self.backend.name, self.lang,
                                   facts=list(alive.values()), new_id=ids)
        self.derived = [f.id for f in result.derived_facts.values()]
        return result


def replay(kb: KnowledgeBase, snapshot: Snapshot, times: Sequence[int] | None = None,
           backend: BackendName = "durable", lang: str = "en", incremental: bool = True) -> Replay:
    """Evaluate ``snapshot`` at each of ``times`` (default: every event of its timeline), in time order."""
    when = tuple(sorted(set(times))) if times is not None else tuple(snapshot.event_times())
    if not incremental:
        results = tuple(kb.evaluate(snapshot, t, backend=backend, lang=lang) for t in when)
        return Replay(snapshot, when, results, False)
    out: list[Result] = []
    current: _Session | None = None
    try:
        for t in when:
            if current is None or current.ids.n > SESSION_IDS:  # a long timeline: carry on in a fresh session
                if current is not None:
                    current.close()
                current = _Session(kb, snapshot, when[-1], backend, lang)
            out.append(current.step(t))
    finally:
        if current is not None:
            current.close()
    return Replay(snapshot, when, tuple(out), True)


STATE_STYLE = {"fired": "bold green", "suppressed": "magenta", "undecided": "yellow", "met": "green",
               "indeterminate": "yellow", "met_unreliable": "magenta", "not_met_unreliable": "magenta",
               "not_applicable": "dim"}


def render_replay(rp: Replay, width: int = 100, color: bool | None = None) -> str:
    """When each recommendation and assessment appeared and disappeared, as a table for the terminal."""
    from io import StringIO

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    origin = rp.snapshot.start
    buf = StringIO()
    console = Console(file=buf, width=width, force_terminal=color, no_color=color is False, highlight=False)
    console.print(Text(f"mascds replay · {rp.snapshot.title}", style="bold"))
    how = "one incremental session" if rp.incremental else "from scratch at each time"
    first, last = relative_label(rp.times[0], origin), relative_label(rp.times[-1], origin)
    console.print(Text(f"{len(rp.times)} evaluations ({how}), {first} to {last}", style="dim"))
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for name in ("rule", "state", "from", "until"):
        table.add_column(name, no_wrap=name != "rule")
    spans = rp.spans()
    for rid, items in spans.items():
        for k, span in enumerate(items):
            until = relative_label(span.end, origin) if span.end is not None else "(still at the end)"
            state = Text(span.state.replace("_", " "), style=STATE_STYLE.get(span.state, ""))
            table.add_row(rid if k == 0 else "", state, relative_label(span.start, origin), until)
    if spans:
        console.print(table)
    else:
        console.print(Text("Nothing fired and no assessment was met or undecided at any time.", style="bold"))
    return buf.getvalue()

"""What an answer rests on in time: warnings when the evaluation time is outside what the record can speak to.

An evaluation before the patient's birth, or so long after the last recorded event that no rule's time window
reaches back to any of it, still gives a well-formed answer - mostly "nothing fired" - that looks complete. The
warnings here say why it is empty. "Long after" is not a clinical number: it is the longest span any rule of the
knowledge base looks back from the evaluation time (its widest ``within`` window, plus the widest window relating
one fact to another), computed from the compiled queries.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

from ..compiler.compile import CompiledKB
from ..compiler.ir import CLOCK, AnyOf, FieldRef, FieldTest
from ..core.snapshot import Snapshot
from ..core.times import describe_duration, iso

# Every warning about the evaluation time starts so, for renderers that show them apart from input warnings.
TIME_WARNING_PREFIX = "evaluation time"

# Per knowledge base, by identity (a CompiledKB holds dicts, so it is not hashable): (a weak reference, seconds).
_lookback: dict[int, tuple[weakref.ref[CompiledKB], int]] = {}


def _refs(tests: Iterable[FieldTest | AnyOf]) -> Iterable[tuple[FieldTest, FieldRef]]:
    for t in tests:
        if isinstance(t, AnyOf):
            for alt in t.alternatives:
                yield from _refs(alt)
        elif isinstance(t.operand, FieldRef):
            yield t, t.operand


def longest_lookback(kb: CompiledKB) -> int:
    """Seconds: how far before the evaluation time any rule can reach for a fact that must be recent (0 when
    no rule has a time window)."""
    cached = _lookback.get(id(kb))
    if cached is not None and cached[0]() is kb:
        return cached[1]
    clock = relative = 0.0
    for q in kb.queries.values():
        for pattern in (q.target, *(p for _, p in q.joins)):
            for test, ref in _refs(pattern.tests):
                if ref.alias == CLOCK:
                    if test.op in ("gt", "gte"):  # "ended no earlier than now - W": a window reaching back W
                        clock = max(clock, -ref.offset)
                else:
                    relative = max(relative, abs(ref.offset))
    found = round(clock + relative) if clock else 0
    _lookback[id(kb)] = (weakref.ref(kb), found)  # the identity check above makes a reused id harmless
    return found


def _span(seconds: int) -> str:
    """A long gap in whole days (an exact '48568 h' helps nobody), a short one exactly."""
    return f"more than {seconds // 86400} days" if seconds >= 2 * 86400 and seconds % 86400 else \
        describe_duration(seconds)


def time_warnings(kb: CompiledKB, snap: Snapshot, as_of: int) -> tuple[str, ...]:
    """Warnings about ``as_of`` for this record (empty when the time is within what the record covers)."""
    out: list[str] = []
    birth = snap.patient.birth
    if birth is not None and as_of < birth:
        out.append(f"{TIME_WARNING_PREFIX} {iso(as_of)} is before the patient's birth ({iso(birth)}): nothing in "
                   "the record had happened yet, so the answer rests on no data")
    last = snap.last_event()
    window = longest_lookback(kb)
    if last is not None and window and as_of - last > window:
        out.append(f"{TIME_WARNING_PREFIX} {iso(as_of)} is {_span(as_of - last)} after the last "
                   f"recorded event ({iso(last)}), beyond the longest time any rule looks back "
                   f"({describe_duration(window)}): no recent measurement or treatment is known, so the answer "
                   "rests only on what is not time-limited (diagnoses, history)")
    return tuple(out)


__all__ = ["TIME_WARNING_PREFIX", "longest_lookback", "time_warnings"]

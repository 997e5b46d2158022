"""The durable_rules (Rete) backend. The only module that imports durable_rules.

It drives the low-level ``durable_rules_engine`` extension directly and handles each known trap
(see docs/durable-rules.md in the design notes):

* no ``Host``, no timer threads, no callbacks: matches are collected with the action loop and turned
  into results in ordinary Python, so nothing is swallowed;
* one fresh session id per evaluation, deleted in ``finally``; a lock keeps one session per ruleset
  alive at a time, far below the 1,024-session ceiling, and serialises callers (the C code holds the GIL
  anyway, so threads would not run it in parallel);
* fact ids are ours (the fact's position), checked collision-free under the engine's 32-bit FNV-1 hash
  per session before they are sent, and a sentinel fact closing every batch proves the engine read the
  batch to its end - a dropped fact is an error (see :class:`DurableSession`);
* the glibc allocator is told once per process to keep the engine's per-session memory in the heap
  (:func:`tune_allocator`): otherwise every session mapped and unmapped megabytes, page faults and kernel
  time costing several times the matching itself;
* facts only (no events), no ``$not``/``$nex``, no rule-level ``any``, numbers sent as numbers - in the one
  spelling the engine's JSON reader understands (see :func:`engine_number`), on the fact side and the pattern
  side alike;
* two defects of the engine's expression evaluator (``reduceExpressionSequence``), found by comparing it with
  the reference backend: a pattern whose only test relating it to another fact evaluates false reads past
  the end of its expression list (a segfault, or a correct answer by luck of what lies next in memory); and a
  ``$or`` written before such a test ends the ``$and`` early, so the test is silently skipped. Patterns are
  therefore emitted with every cross-fact test first, a lone one written twice, and ``$or`` groups last;
* engine limits (64 patterns matching one fact on a branch, 256 rules per alpha node, 4,096 rules per
  ruleset) are respected by splitting the queries over several rulesets, decided when the knowledge base
  is compiled.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import math
import os
import platform
import re
import threading
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import durable_rules_engine as _dre
import orjson

from ..compiler.ir import CLOCK, AnyOf, FieldRef, FieldTest, Pattern, Query
from ..core.errors import EvaluationError
from .facts import Fact
from .match import Tuples

CATCH_ALL = "catch_all"  # the former proof (every fact returned), kept for the benchmark and the tests
SENTINEL = "$end"  # the kind of the fact that closes every batch; no pattern tests it
SENTINEL_RULE = "sentinel"
CAP = 1_000_000  # frames per action: one action hands over every match of a rule
MAX_PER_BRANCH = 60  # < 64 patterns that can match one fact below one alpha branch
MAX_CLOCK_JOINS = 200  # < 256 rules fed by the clock fact's alpha node
MAX_RULES = 3_500  # < 4,096 rules in one ruleset
MAX_FACTS = 20_000  # ids "0".."19999" are collision-free under FNV-1 (tests/test_durable_backend.py)

_names = itertools.count(1)
_sessions = itertools.count(1)


# The engine's JSON number reader (``getNumber`` in src/rules/json.c) accepts only ``-?digits`` (read with atoll)
# and ``-?digits.digits`` with an optional exponent (read with atof). An exponent with no fraction, the form
# Python and orjson write below 1e-4 and from 1e16 up (``5e-07``, ``1e+16``), ends the number at the ``e``: the
# rest of the text is then misread, which lost facts and crashed the process while it reported matches. Every
# number therefore goes in as a double in the accepted form: the shortest text that reads back as the same
# double (``repr``), with ``.0`` added before a bare exponent. atof (glibc strtod) rounds correctly, so the engine
# holds exactly the double the reference backend compares. Integers become doubles too (one comparison type,
# as in Python), which is exact up to 2**53; beyond that, and for NaN and infinity, there is no exact form.
ENGINE_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?)?")
MAX_EXACT_INT = 2**53


class EngineNumberError(EvaluationError):
    """A number the rule engine cannot hold exactly (NaN, infinity, an integer beyond 2**53)."""


def engine_number(value: float | int) -> str:
    """``value`` as the engine's JSON reader reads it back: exactly the same double."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EngineNumberError(f"{value!r} is not a number")
    if isinstance(value, int):
        if abs(value) > MAX_EXACT_INT:
            raise EngineNumberError(f"the integer {value} is too large to compare exactly (more than 2**53)")
        value = float(value)
    if not math.isfinite(value):
        raise EngineNumberError(f"{value!r} is not a finite number")
    text = repr(value)
    if "e" in text and "." not in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def check_engine_number(value: float | int) -> str:
    """:func:`engine_number`, proved: the text is in the reader's grammar and reads back as ``value``."""
    text = engine_number(value)
    if ENGINE_NUMBER.fullmatch(text) is None or float(text) != value:
        raise EngineNumberError(f"the number {value!r} cannot be passed to the rule engine exactly (as {text})")
    return text


def _encode(value: Any) -> Any:
    """``value`` with every number replaced by its engine spelling (an orjson fragment)."""
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return orjson.Fragment(check_engine_number(value))


def facts_json(rows: list[dict[str, Any]]) -> str:
    """The facts batch for the engine: orjson's text when every number in it is already in the engine's
    spelling (nearly every batch), else every number through :func:`check_engine_number`.

    orjson writes an exponent always with its sign (``5e-7``, ``1e+16``), NaN and infinity as ``null``, and an
    integer beyond 2**53 not at all under OPT_STRICT_INTEGER; integers up to it are read exactly (atoll) and
    compared with doubles as Python does. The same characters inside a string (``2e-``, ``:null``) only cost
    the exact encoder."""
    try:
        fast = orjson.dumps(rows, option=orjson.OPT_STRICT_INTEGER)
    except orjson.JSONEncodeError:
        return engine_json(rows)
    if _unsafe(fast):
        return engine_json(rows)
    return fast.decode()


_DIGITS = frozenset(b"0123456789")


def _unsafe(text: bytes) -> bool:
    """Whether orjson's text may hold what the engine misreads: an exponent (orjson writes one always signed and
    right after a digit) or a null value (only after ":", "," or "["). Text such as "active-arthritis" is not
    taken for an exponent, which sent one batch in five the slow way. (Substring searches: a regular
    expression over the batch cost more than the exact encoder it saves.)"""
    if b":null" in text or b",null" in text or b"[null" in text:
        return True
    for mark in (b"e-", b"e+"):
        i = text.find(mark)
        while i != -1:
            if i > 0 and text[i - 1] in _DIGITS:
                return True
            i = text.find(mark, i + 2)
    return False


def engine_json(value: Any) -> str:
    """JSON text for the rule engine, every number in its exact engine spelling."""
    return orjson.dumps(_encode(value)).decode()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
_tuned: dict[str, bool] = {}  # "mmap_threshold" -> in force, once decided


def tune_allocator() -> bool:
    """Keep the engine's allocations in the heap instead of fresh memory maps (glibc only; once per process).

    A durable_rules session allocates and frees about 3 MB. glibc serves large blocks with mmap and gives
    freed memory at the top of the heap back to the system (above 128 KiB by default), so every evaluation
    paid hundreds of page faults and a third of its time in the kernel. An mmap threshold of 32 MiB (glibc's
    own ceiling for its adaptive threshold) and a trim threshold of 64 MiB keep those blocks in the heap for
    reuse: the process keeps up to 64 MiB of freed memory instead of returning it at once.
    Skipped where the C library is not glibc, and where ``MALLOC_MMAP_THRESHOLD_`` already sets the value.
    Returns whether the setting is in force."""
    if "mmap_threshold" not in _tuned:
        done = "MALLOC_MMAP_THRESHOLD_" in os.environ
        if not done and platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                done = (libc.mallopt(ctypes.c_int(_M_MMAP_THRESHOLD), ctypes.c_int(MMAP_THRESHOLD)) == 1
                        and libc.mallopt(ctypes.c_int(_M_TRIM_THRESHOLD), ctypes.c_int(TRIM_THRESHOLD)) == 1)
        _tuned["mmap_threshold"] = done
    return _tuned["mmap_threshold"]


_fnv_cache: dict[str, int] = {}


def fnv1_32_cached(text: str) -> int:
    """:func:`fnv1_32`, remembered: fact ids are positions and repeat across evaluations."""
    h = _fnv_cache.get(text)
    if h is None:
        h = fnv1_32(text)
        if len(_fnv_cache) < 4 * MAX_FACTS:
            _fnv_cache[text] = h
    return h


def fnv1_32(text: str) -> int:
    """The engine's fact-id hash (FNV-1, 32 bit), to prove our ids never collide."""
    h = 0x811C9DC5
    for byte in text.encode():
        h ^= byte if byte < 128 else byte - 256 & 0xFFFFFFFF
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def _operand(ref: FieldRef) -> Any:
    base = {ref.alias: ref.field}
    if ref.offset == 0:
        return base
    if ref.offset > 0:
        return {"$add": {"$l": base, "$r": ref.offset}}
    return {"$sub": {"$l": base, "$r": -ref.offset}}


def _test(t: FieldTest | AnyOf) -> dict[str, Any]:
    if isinstance(t, AnyOf):
        alts = [_conj(list(alt)) for alt in t.alternatives]
        return {"$or": alts}
    value = _operand(t.operand) if isinstance(t.operand, FieldRef) else t.operand
    if t.op == "eq":
        return {t.field: value}
    return {f"${t.op}": {t.field: value}}


def _conj(tests: list[FieldTest | AnyOf]) -> dict[str, Any]:
    parts = [_test(t) for t in tests]
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _relates(t: FieldTest | AnyOf) -> bool:
    if isinstance(t, AnyOf):
        return any(_relates(u) for alt in t.alternatives for u in alt)
    return isinstance(t.operand, FieldRef)


def pattern_json(p: Pattern) -> dict[str, Any]:
    """The pattern in the engine's JSON, in the one test order its evaluator handles correctly:
    the kind, constant tests, then tests relating the fact to others (at least two: a lone one is repeated),
    then ``$or`` groups (which may hold constant tests only)."""
    constant = [t for t in p.tests if isinstance(t, FieldTest) and not _relates(t)]
    relating = [t for t in p.tests if isinstance(t, FieldTest) and _relates(t)]
    groups = [t for t in p.tests if isinstance(t, AnyOf)]
    if any(_relates(g) for g in groups):
        raise EvaluationError("a pattern relates facts inside an alternative, which the rule engine cannot "
                              "evaluate safely")
    if len(relating) == 1:
        relating = relating * 2
    return _conj([FieldTest("k", "eq", p.kind), *constant, *relating, *groups])


def _branch_keys(p: Pattern) -> set[tuple[str, str]]:
    """The alpha branches a pattern sits on: its kind and the first identity value(s)."""
    for t in p.tests:
        if isinstance(t, FieldTest) and t.op == "eq" and isinstance(t.operand, str):
            return {(p.kind, t.operand)}
        if isinstance(t, AnyOf):
            keys = set()
            for alt in t.alternatives:
                for u in alt:
                    if isinstance(u, FieldTest) and u.op == "eq" and isinstance(u.operand, str):
                        keys.add((p.kind, u.operand))
            if keys:
                return keys
    return {(p.kind, "*")}


class _Load:
    """How many patterns of one ruleset could match a single fact, per alpha branch."""

    def __init__(self) -> None:
        self.branch: dict[tuple[str, str], int] = defaultdict(int)
        self.clock = 0
        self.rules = 0

    def worst(self, kind: str, value: str) -> int:
        if value == "*":  # a pattern on the kind alone meets every fact of that kind
            specific = max((n for (k, v), n in self.branch.items() if k == kind and v != "*"), default=0)
            return specific + self.branch[(kind, "*")]
        return self.branch[(kind, value)] + self.branch[(kind, "*")]

    def fits(self, keys: dict[tuple[str, str], int], clock: int) -> bool:
        return (all(self.worst(k, v) + n <= MAX_PER_BRANCH for (k, v), n in keys.items())
                and self.clock + clock <= MAX_CLOCK_JOINS and self.rules < MAX_RULES)

    def add(self, keys: dict[tuple[str, str], int], clock: int) -> None:
        for key, n in keys.items():
            self.branch[key] += n
        self.clock += clock
        self.rules += 1


def shard(queries: Sequence[Query]) -> list[list[Query]]:
    """Split queries over rulesets so that no engine limit can be reached."""
    shards: list[list[Query]] = []
    loads: list[_Load] = []
    for q in queries:
        keys: dict[tuple[str, str], int] = defaultdict(int)
        for p in [p for _, p in q.joins] + [q.target]:
            for key in _branch_keys(p):
                keys[key] += 1
        clock = sum(1 for a, _ in q.joins if a == CLOCK)
        for part, load in zip(shards, loads, strict=True):
            if load.fits(keys, clock):
                part.append(q)
                load.add(keys, clock)
                break
        else:
            load = _Load()
            load.add(keys, clock)
            shards.append([q])
            loads.append(load)
    return shards or [[]]


def ruleset_json(queries: Sequence[Query], catch_all: bool = False) -> dict[str, Any]:
    """The ruleset: one rule per query, and the sentinel rule (or, ``catch_all``, the former rule that
    returned every fact)."""
    rules: dict[str, Any] = {}
    for q in queries:
        frames = [{alias: pattern_json(p)} for alias, p in q.joins] + [{"x": pattern_json(q.target)}]
        rules[q.id] = {"all": frames, "cap": CAP}
    if catch_all:
        rules[CATCH_ALL] = {"all": [{"m": {"$ex": {"k": 1}}}], "cap": CAP}
    else:
        rules[SENTINEL_RULE] = {"all": [{"m": {"k": SENTINEL}}], "cap": CAP}
    return rules


class DurableSession:
    """One evaluation's (or, incremental, one replay's) facts in the engine.

    Proof that the engine kept every fact, without returning every fact: the known ways it loses one are an
    id whose 32-bit hash another id already has (the second fact is dropped, or the batch refused) and a
    number its JSON reader misreads (the reader stops there and the rest of the batch is silently lost).
    The first is excluded before anything is sent: the session checks every id's hash against all ids it has
    sent. The second is excluded by the number encoding and detected if it happens anyway: every batch ends
    with a sentinel fact that only the sentinel rule matches, so a reader that stopped early never reports it.
    (Returning every fact through a catch-all rule, the former proof, was three quarters of the matching cost.)
    """

    def __init__(self, backend: DurableBackend, incremental: bool = False) -> None:
        self.backend = backend
        self.sid = f"s{next(_sessions)}"
        self.found: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        self.count = 0
        self.open = True
        self.hashes: set[int] = set()
        self.batches = 0
        # Incremental sessions (replay) keep facts across evaluation times. The engine cannot retract safely
        # (asserting after retract_facts crashed it), so facts that no longer hold stay in the engine and are
        # retired here: their matches are dropped, and new matches that include them are ignored.
        self.incremental = incremental
        self.retired: set[str] = set()
        self.index: dict[str, list[tuple[str, tuple[str, ...]]]] = defaultdict(list)
        backend.lock.acquire()

    def _claim(self, fid: str) -> bool:
        h = fnv1_32_cached(fid)
        if h in self.hashes:
            return False
        self.hashes.add(h)
        return True

    def _sentinel(self) -> str:
        while True:  # a name whose hash no id of this session has
            self.batches += 1
            end = f"{SENTINEL}{self.batches}"
            if self._claim(end):
                return end

    def add(self, facts: Sequence[Fact]) -> None:
        if not facts:
            return  # an empty batch crashes the engine
        self.count += len(facts)
        if self.count > MAX_FACTS:
            raise EvaluationError(f"a snapshot of more than {MAX_FACTS} facts cannot be evaluated safely")
        sid = self.sid
        rows = [{"id": f.id, "sid": sid, **f.data} for f in facts]
        if self.backend.catch_all:
            expected = {f.id for f in facts}
        else:
            for f in facts:
                if not self._claim(f.id):
                    raise EvaluationError(f"the rule engine refused the facts (code 2: the fact id {f.id!r} has "
                                          "the hash of an id it had seen)")
            end = self._sentinel()
            rows.append({"id": end, "sid": sid, "k": SENTINEL})
            expected = {end}
        # Numbers in the engine's spelling (engine_number); orjson already writes most of them so.
        try:
            payload = facts_json(rows)
        except EngineNumberError as exc:
            raise EvaluationError(f"a fact cannot be evaluated: {exc}") from exc
        for handle, aliases in self.backend.handles:
            try:
                code, offset = _dre.assert_facts(handle, payload)
            except _dre.error as exc:
                raise EvaluationError(f"the rule engine rejected the facts: {exc}") from exc
            # Drain before anything else: deleting a session that still has a pending action crashes the engine.
            seen = self._drain(handle, offset, aliases)
            if code not in (0, 1):
                raise EvaluationError(f"the rule engine refused the facts (code {code}: a fact id it had seen)")
            if seen != expected:
                if self.backend.catch_all:
                    lost = sorted(expected - seen, key=lambda s: (len(s), s))
                    raise EvaluationError(f"the rule engine did not keep every fact (lost ids: {lost[:10]})")
                raise EvaluationError("the rule engine did not keep every fact (it stopped reading the batch of "
                                      f"{len(facts)} facts before its end)")

    def _drain(self, handle: int, offset: int, aliases: dict[str, tuple[str, ...]]) -> set[str]:
        seen: set[str] = set()
        try:
            result = _dre.start_action_for_state(handle, offset)
            messages = result[1] if result else None
            while messages:
                for rule, batch in orjson.loads(messages).items():
                    frames = batch if isinstance(batch, list) else [batch]
                    if rule in (SENTINEL_RULE, CATCH_ALL):
                        seen.update(frame["m"]["id"] for frame in frames)
                        continue
                    names = aliases[rule]
                    found = self.found[rule]
                    if self.incremental:
                        self._keep(rule, [tuple([frame[a]["id"] for a in names]) for frame in frames])
                    elif len(names) == 1:
                        found.update((frame["x"]["id"],) for frame in frames)
                    else:
                        found.update(tuple([frame[a]["id"] for a in names]) for frame in frames)
                messages = _dre.complete_and_start_action(handle, offset)
        except _dre.error as exc:
            raise EvaluationError(f"the rule engine failed while reporting matches: {exc}") from exc
        return seen

    def _keep(self, rule: str, tuples: list[tuple[str, ...]]) -> None:
        found = self.found[rule]
        for t in tuples:
            if self.retired.isdisjoint(t):
                found.add(t)
                for fid in t:
                    self.index[fid].append((rule, t))

    def retire(self, ids: Iterable[str]) -> None:
        if not self.incremental:
            raise EvaluationError("facts can be retired only in an incremental session")
        for fid in ids:
            self.retired.add(fid)
            for rule, t in self.index.pop(fid, ()):
                self.found[rule].discard(t)

    def tuples(self, qid: str) -> Tuples:
        return frozenset(self.found.get(qid, ()))

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        try:
            for handle, _ in self.backend.handles:
                with contextlib.suppress(_dre.error):  # nothing was asserted in this ruleset for this session
                    _dre.delete_state(handle, self.sid)
        finally:
            self.backend.lock.release()


def _delete(handles: list[tuple[int, dict[str, tuple[str, ...]]]]) -> None:
    for handle, _ in handles:
        with contextlib.suppress(_dre.error):  # already gone at interpreter exit
            _dre.delete_ruleset(handle)


class DurableBackend:
    """Queries compiled into durable_rules rulesets (one or more shards)."""

    name = "durable_rules"

    def __init__(self, queries: dict[str, Query], *, catch_all: bool = False, tune: bool = True) -> None:
        """``catch_all`` and ``tune=False`` give the former implementation (every fact returned by a catch-all
        rule, the allocator left as it is), kept so that the benchmark and the tests can compare the two."""
        if tune:
            tune_allocator()
        self.catch_all = catch_all
        self.lock = threading.Lock()
        self.handles: list[tuple[int, dict[str, tuple[str, ...]]]] = []
        ordered = [queries[k] for k in sorted(queries, key=lambda q: int(q[1:]) if q[1:].isdigit() else q)]
        for part in shard(ordered):
            name = f"mascds{next(_names)}"
            try:
                handle = _dre.create_ruleset(name, engine_json(ruleset_json(part, catch_all)))
            except EngineNumberError as exc:
                _delete(self.handles)
                raise EvaluationError(f"a rule compares a number the rule engine cannot hold: {exc}") from exc
            except _dre.error as exc:
                _delete(self.handles)
                raise EvaluationError(f"the rule engine could not build the knowledge base: {exc}") from exc
            self.handles.append((handle, {q.id: q.aliases for q in part}))
        self._finalizer = weakref.finalize(self, _delete, self.handles)

    @property
    def shards(self) -> int:
        return len(self.handles)

    def open(self, incremental: bool = False) -> DurableSession:
        return DurableSession(self, incremental)

    def close(self) -> None:
        self._finalizer()

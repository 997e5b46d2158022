"""Match stage: which tuples of facts satisfy each query. The backend protocol and the plain-Python
reference backend (the durable_rules backend lives in ``engine.runtime.durable_backend``).

A backend answers, per query, the set of fact-id tuples (aligned with ``Query.aliases``). Sessions are
incremental: facts can be added after the first answers (derived facts of a later stratum).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from ..compiler.ir import AnyOf, FieldRef, FieldTest, Pattern, Query
from .facts import Fact, FactData

Tuples = frozenset[tuple[str, ...]]


class MatchSession(Protocol):
    def add(self, facts: Sequence[Fact]) -> None: ...

    def retire(self, ids: Iterable[str]) -> None:
        """Facts that no longer hold (an earlier clock, a course that has since ended): no answer may use them.
        Only sessions opened with ``incremental=True`` support it."""
        ...

    def tuples(self, qid: str) -> Tuples: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, incremental: bool = False) -> MatchSession: ...

    def close(self) -> None: ...


def compare(op: str, left: Any, right: Any) -> bool:
    """The comparison both backends implement: numbers with numbers, text only for equality."""
    if isinstance(left, str) or isinstance(right, str):
        return op == "eq" and isinstance(left, str) and isinstance(right, str) and left == right
    if op == "eq":
        return bool(left == right)
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def holds(test: FieldTest | AnyOf, fact: FactData, env: dict[str, FactData]) -> bool:
    if isinstance(test, AnyOf):
        return any(all(holds(t, fact, env) for t in alt) for alt in test.alternatives)
    left = fact.get(test.field)
    if left is None:
        return False  # a missing field never matches (as in the Rete)
    operand = test.operand
    if isinstance(operand, FieldRef):
        other = env[operand.alias].get(operand.field)
        if other is None or (isinstance(other, str) and operand.offset):
            return False
        right: Any = other + operand.offset if operand.offset else other
    else:
        right = operand
    return compare(test.op, left, right)


def pattern_holds(pattern: Pattern, fact: FactData, env: dict[str, FactData]) -> bool:
    return fact.get("k") == pattern.kind and all(holds(t, fact, env) for t in pattern.tests)


class ReferenceSession:
    def __init__(self, queries: dict[str, Query]) -> None:
        self.queries = queries
        self.facts: list[Fact] = []
        self.by_kind: dict[str, list[Fact]] = defaultdict(list)
        self.cache: dict[str, Tuples] = {}

    def add(self, facts: Sequence[Fact]) -> None:
        for f in facts:
            self.facts.append(f)
            self.by_kind[str(f.data["k"])].append(f)
        self.cache.clear()

    def retire(self, ids: Iterable[str]) -> None:
        gone = set(ids)
        if gone:
            self.facts = [f for f in self.facts if f.id not in gone]
            for kind, facts in self.by_kind.items():
                self.by_kind[kind] = [f for f in facts if f.id not in gone]
            self.cache.clear()

    def tuples(self, qid: str) -> Tuples:
        found = self.cache.get(qid)
        if found is None:
            found = frozenset(self._solve(self.queries[qid]))
            self.cache[qid] = found
        return found

    def _solve(self, q: Query) -> Iterable[tuple[str, ...]]:
        combos: list[tuple[list[str], dict[str, FactData]]] = [([], {})]
        for alias, pattern in q.joins:
            nxt: list[tuple[list[str], dict[str, FactData]]] = []
            candidates = [f for f in self.by_kind.get(pattern.kind, []) if pattern_holds(pattern, f.data, {})]
            for ids, env in combos:
                for f in candidates:
                    nxt.append(([*ids, f.id], {**env, alias: f.data}))
            combos = nxt
        for ids, env in combos:
            for f in self.by_kind.get(q.target.kind, []):
                if pattern_holds(q.target, f.data, env):
                    yield (*ids, f.id)

    def close(self) -> None:
        self.facts.clear()
        self.by_kind.clear()
        self.cache.clear()


class ReferenceBackend:
    """Every query solved by nested loops in Python: slow, obvious, and the yardstick for the Rete."""

    name = "reference"

    def __init__(self, queries: dict[str, Query]) -> None:
        self.queries = queries

    def open(self, incremental: bool = False) -> ReferenceSession:
        return ReferenceSession(self.queries)

    def close(self) -> None:
        return None

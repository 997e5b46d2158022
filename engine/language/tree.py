"""Walking a rule's condition tree with document paths (shared by the check and compile stages)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .conditions import (
    AllCond,
    AnyCond,
    AtLeastCond,
    DerivedSpec,
    MedicationSpec,
    NotCond,
    Ref,
    ValueFields,
    WindowFields,
)
from .rulemodel import Rule
from .source import PathKey

COMPOSITES = ("all", "any", "not", "at_least")


@dataclass(frozen=True)
class Site:
    """One condition in a rule: where it is written and how it sits in the tree."""

    kind: str  # the condition key
    spec: Any  # leaf spec model, or None for all/any/not/at_least
    cond: Any  # the condition model
    path: PathKey  # document path of the condition mapping
    ancestry: tuple[tuple[str, int], ...]  # (composite kind, child index) from the root
    order: int  # pre-order position

    @property
    def spec_path(self) -> PathKey:
        return (*self.path, self.kind)

    @property
    def alias(self) -> str | None:
        return getattr(self.spec, "as_", None) if self.spec is not None else None


def kind_of(cond: Any) -> str:
    if isinstance(cond, AllCond):
        return "all"
    if isinstance(cond, AnyCond):
        return "any"
    if isinstance(cond, NotCond):
        return "not"
    if isinstance(cond, AtLeastCond):
        return "at_least"
    for name in type(cond).model_fields:
        return str(name)
    raise ValueError(f"not a condition: {cond!r}")


def children(cond: Any, path: PathKey) -> list[tuple[Any, PathKey]]:
    if isinstance(cond, AllCond):
        return [(c, (*path, "all", i)) for i, c in enumerate(cond.all)]
    if isinstance(cond, AnyCond):
        return [(c, (*path, "any", i)) for i, c in enumerate(cond.any)]
    if isinstance(cond, NotCond):
        return [(cond.not_, (*path, "not"))]
    if isinstance(cond, AtLeastCond):
        return [(c, (*path, "at_least", "of", i)) for i, c in enumerate(cond.at_least.of)]
    return []


def sites(root: Any, path: PathKey = ("when",)) -> list[Site]:
    out: list[Site] = []

    def visit(cond: Any, p: PathKey, ancestry: tuple[tuple[str, int], ...]) -> None:
        kind = kind_of(cond)
        spec = None if kind in COMPOSITES else getattr(cond, kind)
        out.append(Site(kind, spec, cond, p, ancestry, len(out)))
        for i, (child, cp) in enumerate(children(cond, p)):
            visit(child, cp, (*ancestry, (kind, i)))

    visit(root, path, ())
    return out


@dataclass(frozen=True)
class Reference:
    alias: str
    role: str  # after | before | during | value
    path: PathKey  # document path of the reference (relative to the spec)


def references(site: Site) -> list[Reference]:
    spec = site.spec
    out: list[Reference] = []
    if spec is None:
        return out
    if isinstance(spec, WindowFields):
        if spec.after is not None:
            out.append(Reference(spec.after.fact, "after", (*site.spec_path, "after", "fact")))
        if spec.before is not None:
            out.append(Reference(spec.before.fact, "before", (*site.spec_path, "before", "fact")))
        if spec.during is not None:
            out.append(Reference(spec.during, "during", (*site.spec_path, "during")))
    if getattr(spec, "same_drug_as", None) is not None:
        out.append(Reference(spec.same_drug_as, "drug", (*site.spec_path, "same_drug_as")))
    if isinstance(spec, ValueFields) and not isinstance(spec, MedicationSpec):
        for op, value in spec.comparisons():
            if isinstance(value, Ref):
                out.append(Reference(value.ref, "value", (*site.spec_path, op, "ref")))
    return out


def guaranteed_before(definer: Site, user: Site) -> bool:
    """True when ``definer`` is necessarily true whenever the part of the tree holding ``user`` can be.

    The two must meet at an ``all`` node, the definer's branch must come first, and the definer must be
    reached from there through ``all`` nodes only (not under any/not/at_least).
    """
    a, b = definer.ancestry, user.ancestry
    p = 0
    while p < len(a) and p < len(b) and a[p] == b[p]:
        p += 1
    if p >= len(a) or p >= len(b):
        return False
    if a[p][0] != "all" or b[p][0] != "all" or a[p][1] >= b[p][1]:
        return False
    return all(kind == "all" for kind, _ in a[p + 1:])


def bound_when_true(site: Site) -> bool:
    """True when the site's alias is bound whenever the whole rule holds."""
    return all(kind == "all" for kind, _ in site.ancestry)


@dataclass(frozen=True)
class Definer:
    """Where an alias is bound: one leaf, or an ``any`` whose every branch binds it."""

    alias: str
    site: Site  # the leaf, or the any
    leaves: tuple[Site, ...]


def definers(all_sites: list[Site]) -> tuple[dict[str, Definer], list[tuple[Site, str]]]:
    """Aliases and where they are bound, plus problems as (site, message)."""
    grouped: dict[str, list[Site]] = {}
    for site in all_sites:
        if site.alias is not None:
            grouped.setdefault(site.alias, []).append(site)
    found: dict[str, Definer] = {}
    problems: list[tuple[Site, str]] = []
    for alias, group in grouped.items():
        if len(group) == 1:
            found[alias] = Definer(alias, group[0], (group[0],))
            continue
        depth = min(len(s.ancestry) for s in group)
        p = 0
        while p < depth and len({s.ancestry[p] for s in group}) == 1:
            p += 1
        branch_kinds = {s.ancestry[p][0] for s in group if len(s.ancestry) > p}
        owner = next((s for s in all_sites if s.kind == "any" and s.ancestry == group[0].ancestry[:p]
                      and all(g.path[:len(s.path)] == s.path for g in group)), None)
        ok = (owner is not None and branch_kinds == {"any"} and all(len(s.ancestry) > p for s in group)
              and sorted(s.ancestry[p][1] for s in group) == list(range(len(owner.cond.any)))
              and all(kind == "all" for s in group for kind, _ in s.ancestry[p + 1:])
              and len({type(s.spec) for s in group}) == 1)
        if ok and owner is not None:
            found[alias] = Definer(alias, owner, tuple(group))
        else:
            problems.append((group[1], f"alias '{alias}' is defined more than once"))
            found[alias] = Definer(alias, group[0], (group[0],))
    return found, problems


def extra_trees(rule: Rule) -> list[tuple[Any, PathKey]]:
    """Condition trees besides ``when``: the population of ``applies_to``, score terms and caveats of a derive
    rule."""
    out: list[tuple[Any, PathKey]] = []
    if rule.applies_to is not None:
        out.append((rule.applies_to.when, ("applies_to", "when")))
    if rule.derive is None:
        return out
    if rule.derive.score is not None:
        for i, term in enumerate(rule.derive.score.terms):
            if term.if_ is not None:
                out.append((term.if_, ("derive", "score", "terms", i, "if")))
            for j, cond in enumerate(term.count or []):
                out.append((cond, ("derive", "score", "terms", i, "count", j)))
    for i, caveat in enumerate(rule.derive.caveats):
        out.append((caveat.when, ("derive", "caveats", i, "when")))
    return out


def derived_uses(rule: Rule) -> list[tuple[str, PathKey]]:
    """Derived facts a rule uses, anywhere in its conditions, with where."""
    trees = [(rule.when, ("when",)), *extra_trees(rule)]
    return [(s.spec.fact, (*s.spec_path, "fact")) for cond, path in trees for s in sites(cond, path)
            if isinstance(s.spec, DerivedSpec)]

"""Check stage: problems that no single field shows - within one rule (aliases, templates) and between
rules (duplicate ids, derived facts used but never derived, cycles)."""

from __future__ import annotations

from collections.abc import Iterable

from ..core.errors import Diagnostic, did_you_mean
from ..core.vocab import vocabulary
from .conditions import DerivedSpec, ObservationSpec
from .fields import LocalText
from .load import LoadedRules, RuleFile
from .rulemodel import Rule
from .scope import unscoped_rules
from .source import PathKey, format_path
from .templates import FIELDS, TemplateError, parse
from .tree import Site, bound_when_true, definers, derived_uses, extra_trees, guaranteed_before, references, sites

DRUG_KINDS = ("reaction", "medication", "order")  # conditions whose matched fact names a drug


def _diag(rf: RuleFile, path: PathKey, code: str, message: str, hint: str = "", key: bool = False) -> Diagnostic:
    pos = rf.doc.positions
    line, col = pos.of_key(path) if key else pos.of_value(path)
    return Diagnostic(rf.file, line, col, code, message, hint, format_path(path))


def evaluable(rule: Rule, include_drafts: bool) -> bool:
    return rule.status == "active" or (include_drafts and rule.status == "draft")


def check_rule(rf: RuleFile) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    rule = rf.rule
    all_sites = sites(rule.when)
    found, problems = definers(all_sites)
    for site, message in problems:
        out.append(_diag(rf, (*site.spec_path, "as"), "E207", message,
                         "give each fact its own name; one name may be reused only in every branch of one "
                         "'any', for facts of the same kind"))
    defined: dict[str, Site] = {alias: d.site for alias, d in found.items()}
    kinds: dict[str, Site] = {alias: d.leaves[0] for alias, d in found.items()}
    for site in all_sites:
        for ref in references(site):
            target = defined.get(ref.alias)
            if target is None:
                out.append(_diag(rf, ref.path, "E203", f"unknown alias '{ref.alias}'",
                                 did_you_mean(ref.alias, defined) or "name an earlier condition with 'as:'"))
                continue
            if target.order >= site.order:
                out.append(_diag(rf, ref.path, "E203", f"alias '{ref.alias}' is used before it is defined",
                                 "move the condition that defines it earlier in the same 'all' list"))
                continue
            if not guaranteed_before(target, site):
                out.append(_diag(rf, ref.path, "E204",
                                 f"alias '{ref.alias}' is not guaranteed to be matched here",
                                 "define it in an earlier item of an 'all' list that contains this condition, "
                                 "not under any/not/at_least"))
                continue
            leaf = kinds[ref.alias]
            if ref.role == "drug" and leaf.kind not in DRUG_KINDS:
                out.append(_diag(rf, ref.path, "E212", f"'{ref.alias}' is a {leaf.kind} condition and names no drug",
                                 "name a reaction, medication or order condition"))
            if ref.role == "value" and not isinstance(leaf.spec, ObservationSpec | DerivedSpec):
                out.append(_diag(rf, ref.path, "E107",
                                 f"'{ref.alias}' is a {leaf.kind} condition and has no value to compare with",
                                 "compare with an observation or a derived score"))
    for cond, path in extra_trees(rule):
        for site in sites(cond, path):
            named = [(site.alias, (*site.spec_path, "as"))] if site.alias else []
            named += [(r.alias, r.path) for r in references(site)]
            for alias, where in named:
                out.append(_diag(rf, where, "E204", f"'{alias}': score terms and caveats cannot name or use "
                                 "other facts", "write the condition on its own, without as/after/before/ref"))
    out.extend(_unit_warnings(rf))
    if rule.recommend is not None:
        for k, act in enumerate(rule.recommend.actions):
            if isinstance(act.target, str):
                continue
            where = ("recommend", "actions", k, "target", "drug_of")
            alias = act.target.drug_of
            found_at = found.get(alias)
            if found_at is None:
                out.append(_diag(rf, where, "E203", f"unknown alias '{alias}'",
                                 did_you_mean(alias, defined) or "name a condition with 'as:'"))
            elif not bound_when_true(found_at.site):
                out.append(_diag(rf, where, "E204", f"alias '{alias}' is not guaranteed to be matched when the rule "
                                 "fires", "define it in the rule's top-level 'all' list, not under any/not/at_least"))
            elif kinds[alias].kind not in DRUG_KINDS:
                out.append(_diag(rf, where, "E212", f"'{alias}' is a {kinds[alias].kind} condition and names no drug",
                                 "take the target from a reaction, medication or order condition"))
        texts: list[tuple[PathKey, str]] = []
        rationale = rule.recommend.rationale
        if isinstance(rationale, LocalText):
            texts.append((("recommend", "rationale", "en"), rationale.en))
            if rationale.zh_CN:
                texts.append((("recommend", "rationale", "zh-CN"), rationale.zh_CN))
        else:
            texts.append((("recommend", "rationale"), rationale))
        for path, text in texts:
            out.extend(_check_template(rf, path, text, defined, kinds))
    return out


def _unit_warnings(rf: RuleFile) -> list[Diagnostic]:
    """Thresholds written in another unit than the analyte's canonical one are converted exactly; say so."""
    vocab = vocabulary()
    rule = rf.rule
    found: list[tuple[str, str, PathKey]] = []
    trees = [(rule.when, ("when",)), *extra_trees(rule)]
    for cond, path in trees:
        for site in sites(cond, path):
            if isinstance(site.spec, ObservationSpec) and site.spec.unit is not None:
                found.append((site.spec.analyte, site.spec.unit, (*site.spec_path, "unit")))
    if rule.derive is not None and rule.derive.score is not None:
        for i, term in enumerate(rule.derive.score.terms):
            if term.value is not None and term.value.unit is not None:
                found.append((term.value.analyte, term.value.unit, ("derive", "score", "terms", i, "value", "unit")))
    out = []
    for analyte, unit, path in found:
        a = vocab.analytes[analyte]
        if vocab.unit_code(unit) != a.canonical:
            d = _diag(rf, path, "E115", f"{a.name} is compared in {vocab.display_unit(a.canonical)}; thresholds "
                      f"written in {unit} are converted exactly", "fine when the source publishes this unit")
            out.append(Diagnostic(d.file, d.line, d.col, d.code, d.message, d.hint, d.path, "warning"))
    return out


def _check_template(rf: RuleFile, path: PathKey, text: str, defined: dict[str, Site],
                    kinds: dict[str, Site]) -> list[Diagnostic]:
    try:
        parts = parse(text)
    except TemplateError as exc:
        return [_diag(rf, path, "E205", f"bad template: {exc}", "quote values as {alias.field}")]
    out: list[Diagnostic] = []
    for part in parts:
        if part.alias is None or part.field is None:
            continue
        site = defined.get(part.alias)
        if site is None:
            out.append(_diag(rf, path, "E205", f"template uses unknown alias '{part.alias}'",
                             did_you_mean(part.alias, defined) or "name the condition with 'as:'"))
            continue
        if not bound_when_true(site):
            out.append(_diag(rf, path, "E204", f"template quotes '{part.alias}', which may be unmatched "
                             "when the rule fires", "quote only conditions reached through 'all' lists"))
            continue
        allowed = FIELDS[kinds[part.alias].kind]
        if part.field not in allowed:
            out.append(_diag(rf, path, "E205", f"'{part.field}' is not a field of a {kinds[part.alias].kind} match",
                             did_you_mean(part.field, allowed) or "fields: " + ", ".join(allowed)))
    return out


def check_knowledge_base(loaded: LoadedRules, include_drafts: bool = True) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    seen: dict[str, RuleFile] = {}
    for rf in loaded.rules:
        first = seen.get(rf.rule.id)
        if first is not None:
            line = first.doc.positions.of_value(("id",))[0]
            out.append(_diag(rf, ("id",), "E200", f"rule id '{rf.rule.id}' is also used in {first.file}:{line}",
                             "rule ids must be unique; change one of them"))
        else:
            seen[rf.rule.id] = rf
        out.extend(check_rule(rf))
    live = [rf for rf in loaded.rules if rf.rule.status != "retired"]
    producers: dict[str, RuleFile] = {}
    for rf in live:
        if rf.rule.derive is None:
            continue
        fact = rf.rule.derive.fact
        if fact in producers:
            other = producers[fact]
            out.append(_diag(rf, ("derive", "fact"), "E206",
                             f"fact '{fact}' is also derived by rule '{other.rule.id}' ({other.file})",
                             "derive each fact in one rule; combine the conditions with any:"))
            continue
        producers[fact] = rf
    for rf in live:
        for fact, path in derived_uses(rf.rule):
            producer = producers.get(fact)
            if producer is None:
                out.append(_diag(rf, path, "E201", f"fact '{fact}' is never derived",
                                 did_you_mean(fact, producers) or "add a rule with derive: {fact: " + fact + "}"))
            elif rf.rule.status == "active" and producer.rule.status != "active":
                out.append(_diag(rf, path, "E201", f"fact '{fact}' is derived only by the draft rule "
                                 f"'{producer.rule.id}'", "activate that rule, or make this one a draft"))
    out.extend(_cycles(live, producers))
    out.extend(_negated_population(live, producers))
    scope = loaded.manifest.scope
    if scope is not None:
        files = {rf.rule.id: rf for rf in live}
        for rule in unscoped_rules((rf.rule for rf in live if evaluable(rf.rule, include_drafts)), scope):
            out.append(_diag(files[rule.id], ("when",), "E210",
                             f"rule '{rule.id}' could fire for a patient outside the knowledge base's scope, and "
                             "its advice would then be hidden",
                             "require a scope diagnosis or a watched drug in its 'when' (an item of its top 'all'), "
                             "or add the drug it watches to scope.drugs in knowledge-base.yaml", key=True))
    return out


def _negated_population(rules: Iterable[RuleFile], producers: dict[str, RuleFile]) -> list[Diagnostic]:
    """``not: {derived: X}`` where X has ``applies_to``: "not classified" would hold for everyone outside the
    population, for whom the assessment says nothing."""
    out: list[Diagnostic] = []
    for rf in rules:
        for cond, path in [(rf.rule.when, ("when",)), *extra_trees(rf.rule)]:
            for site in sites(cond, path):
                if not isinstance(site.spec, DerivedSpec) or not any(k == "not" for k, _ in site.ancestry):
                    continue
                producer = producers.get(site.spec.fact)
                if producer is not None and producer.rule.applies_to is not None:
                    out.append(_diag(rf, (*site.spec_path, "fact"), "E211",
                                     f"'not' over '{site.spec.fact}', which is not applicable outside its "
                                     "population", "use {derived: {fact: " + site.spec.fact + ", is: not_met}}, "
                                     "which is false when the assessment does not apply"))
    return out


def _cycles(rules: Iterable[RuleFile], producers: dict[str, RuleFile]) -> list[Diagnostic]:
    graph: dict[str, list[tuple[str, PathKey]]] = {}
    by_id: dict[str, RuleFile] = {}
    for rf in rules:
        by_id[rf.rule.id] = rf
        graph[rf.rule.id] = [(producers[f].rule.id, p) for f, p in derived_uses(rf.rule) if f in producers]
    out: list[Diagnostic] = []
    state: dict[str, int] = {}
    reported: set[frozenset[str]] = set()

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt, path in graph.get(node, []):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    rf = by_id[node]
                    out.append(_diag(rf, path, "E202", "derived facts depend on each other in a cycle: "
                                     + " -> ".join([*cycle, nxt]), "a rule cannot use what it derives, even "
                                     "through other rules"))
            elif state.get(nxt) is None:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for rid in sorted(graph):
        if rid not in state:
            visit(rid, [])
    return out

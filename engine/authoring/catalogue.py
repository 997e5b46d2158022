"""Catalogue stage: the knowledge base described as a Markdown table, generated from the compiled rules.

``docs/knowledge-base.md`` is this module's output; a test regenerates it and fails when the file has drifted,
so the published table always says what the rules do.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from ..compiler.compile import CompiledKB
from ..compiler.ir import All, AtLeast, CompiledRule, Leaf, Node, Not
from ..core.vocab import vocabulary
from ..language.actions import target_label
from ..language.derivations import Threshold
from ..language.fields import text_in
from ..language.rulemodel import Rule

EVIDENCE = {
    "guideline": "guideline", "consensus": "consensus", "classification-criteria": "classification criteria",
    "validated-score": "validated score", "rct": "randomised trial", "cohort": "cohort", "case-series": "case series",
    "case-report": "case report", "regulatory-label": "regulatory label", "expert-opinion": "expert opinion",
}
OPS = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "eq": "="}


def _cell(text: str) -> str:
    return " ".join(text.replace("|", "\\|").split())


def condition_text(node: Node, top: bool = True) -> str:
    """A condition tree in words, from the labels the compiler gives each leaf."""
    if isinstance(node, Leaf):
        return node.label
    if isinstance(node, Not):
        inner = condition_text(node.child, top=False)
        return f"no {inner}" if isinstance(node.child, Leaf) else f"not {inner}"
    parts = [condition_text(c, top=False) for c in node.children]
    if isinstance(node, AtLeast):
        return f"at least {node.n} of ({'; '.join(parts)})"
    text = (" and " if isinstance(node, All) else " or ").join(parts)
    return text if top else f"({text})"


def threshold_text(t: Threshold) -> str:
    return " and ".join(f"{OPS[op]} {getattr(t, op):g}".replace("-", "−") for op in OPS if getattr(t, op) is not None)


def _term_label(term: Any) -> str:
    if term.count is not None:
        return f"{term.label or 'count'}: a count of {len(term.count)} conditions"
    if term.label:
        return str(term.label)
    return vocabulary().analytes[term.value.analyte].name if term.value is not None else "term"


def _derives(cr: CompiledRule, rule: Rule) -> str:
    derive = rule.derive
    assert derive is not None
    text = f"**{derive.fact}**"
    if derive.summary:
        text += f": {text_in(derive.summary)}"
    if derive.score is not None:
        terms = derive.score.terms
        text += f" Score of {len(terms)} item{'s' if len(terms) != 1 else ''} ({'; '.join(map(_term_label, terms))})"
        text += f", cut-off {threshold_text(derive.score.cutoff)}." if derive.score.cutoff else "."
    if derive.ratio is not None:
        names = vocabulary().analytes
        text += (f" Ratio {names[derive.ratio.numerator.analyte].name} / {names[derive.ratio.denominator.analyte].name}"
                 f", cut-off {threshold_text(derive.ratio.cutoff)}.")
    for caveat in cr.caveats:
        results = " or ".join(s.replace("_", " ") for s in caveat.applies_to)
        text += f" A {results} result is marked unreliable when: {condition_text(caveat.node)}."
    if cr.applies_to is not None:
        text += (f" Applies to: {condition_text(cr.applies_to.node)}; otherwise **not applicable** "
                 f"({text_in(cr.applies_to.reason)})")
    return text


def _recommends(rule: Rule) -> str:
    rec = rule.recommend
    assert rec is not None
    actions = "; ".join(f"{a.kind.replace('_', ' ')} {target_label(a.target)}" for a in rec.actions)
    priority = f", priority {rec.priority}" if rec.priority else ""
    return f"{rec.indicator.upper()}{priority}: {actions}"


def _sources(rule: Rule) -> str:
    out = []
    for s in rule.sources:
        ids = []
        if s.doi:
            ids.append(f"[doi:{s.doi}](https://doi.org/{s.doi})")
        if s.pmid:
            ids.append(f"[PMID {s.pmid}](https://pubmed.ncbi.nlm.nih.gov/{s.pmid}/)")
        first_author = s.reference.split(",")[0].split(".")[0].strip()
        out.append(f"{first_author}: {', '.join(ids)}")
    return "<br>".join(out)


def _row(cr: CompiledRule, rule: Rule) -> str:
    what = _derives(cr, rule) if rule.derive is not None else _recommends(rule)
    title = text_in(rule.title)
    return (f"| `{cr.id}` {cr.version} | {_cell(title)} | {_cell(what)} | {_cell(condition_text(cr.root))} | "
            f"{_sources(rule)} | {EVIDENCE.get(rule.evidence_level, rule.evidence_level)} |")


def _scope_lines(kb: CompiledKB) -> list[str]:
    """The knowledge base's scope: outside it a result shows the clinician nothing (no CDS Hooks cards)."""
    scope = kb.manifest.scope
    if scope is None:
        return ["Scope: every patient (the manifest states none).", ""]
    vocab = vocabulary()
    lines = ["## Scope", "", _cell(" ".join(scope.description.split())), "",
             "Outside the scope a result shows nothing (no cards); every recommendation rule requires one of these "
             "(checked at load, E210).", "", "| In scope with | Why |", "|---|---|"]
    lines += [f"| diagnosis: {vocab.diagnoses[d.code].name} | {_cell(d.reason)} |" for d in scope.diagnoses]
    lines += [f"| exposure to {vocab.target_name(d.target)} | {_cell(d.reason)} |" for d in scope.drugs]
    return [*lines, ""]


def _drug_lines() -> list[str]:
    """The drug table the rules read (engine/data/drugs.yaml): exposure periods and the product labels cited."""
    drugs = vocabulary().drugs.values()
    lines = ["## Drug table", "", "Exposure (`exposed: true`) is a course running, or its last dose less than one "
             "dosing interval ago, or less than the drug's exposure period after it:", "",
             "| Drug | Exposure period after the last dose | Basis |", "|---|---|---|"]
    for d in drugs:
        if d.exposure_after_last_dose_days:
            basis = _cell(" ".join((d.exposure_basis or "").split()))
            lines.append(f"| {d.name} | {d.exposure_after_last_dose_days} days | {basis} |")
    lines += ["", "Product information cited by the hypersensitivity recommendations (`{drug_of: ...}` actions); "
              "a drug not listed has no label read, and its recommendations cite the anaphylaxis criteria only:", "",
              "| Drug | Label | What it says, as read |", "|---|---|---|"]
    lines += [f"| {d.name} | [{_cell(d.label.reference)}]({d.label.url}) | {_cell(d.label.reported)} |"
              for d in drugs if d.label is not None]
    return lines


def render_catalogue(kb: CompiledKB) -> str:
    """The Markdown page: one table per rule folder, assessments first."""
    m = kb.manifest
    rules = sorted(kb.rules, key=lambda r: (kb.models[r.id].derive is None, PurePosixPath(r.file).parent.name, r.id))
    derived = sum(1 for r in rules if kb.models[r.id].derive is not None)
    lines = [
        f"# Knowledge base: {m.name} {m.version}",
        "",
        "Generated from `rules/` by `mascds catalogue --output docs/knowledge-base.md`; do not edit by hand (the",
        "test suite regenerates it and fails when it has drifted).",
        "",
        f"{len(rules)} rules: {derived} assessments (derived facts other rules use) and {len(rules) - derived} "
        f"recommendations. Conflicts: `{m.conflict_resolution}`.",
        "",
        *_scope_lines(kb),
        *_drug_lines(),
    ]
    header = ["| Rule | Title | {what} | When | Sources | Evidence |", "|---|---|---|---|---|---|"]
    section: tuple[bool, str] | None = None
    for cr in rules:
        rule = kb.models[cr.id]
        key = (rule.derive is not None, PurePosixPath(cr.file).parent.name)
        if key != section:
            section = key
            kind = "Assessments" if key[0] else "Recommendations"
            lines += ["", f"## {kind}: `{key[1]}/`", ""]
            lines += [header[0].format(what="Derives" if key[0] else "Recommends"), header[1]]
        lines.append(_row(cr, rule))
    return "\n".join(lines) + "\n"

"""Diagnostics and the library's exception root.

Every problem found while loading rules or cases is a :class:`Diagnostic` with a stable code, a place
(``file:line:col``), a path into the document, a message and a fix hint. Stages collect all diagnostics
they can find and raise one :class:`LoadError` carrying them, sorted by place.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]

# Stable diagnostic codes. A code never changes meaning once published; docs/error-codes.md lists them.
CODES: dict[str, str] = {
    # reading files
    "E001": "YAML syntax error",
    "E002": "duplicate key",
    "E003": "document is not a mapping",
    "E004": "file cannot be read",
    "E005": "no rule files found",
    "E006": "file too large",
    "E007": "nesting too deep",
    "E008": "document expands too far",
    # shape of a rule or case document
    "E100": "unknown key",
    "E101": "required key missing",
    "E102": "wrong type",
    "E103": "value not allowed",
    "E104": "unknown analyte",
    "E105": "unknown or unsupported unit",
    "E106": "unknown drug or drug class",
    "E107": "unknown or misplaced operator",
    "E108": "bad duration or time",
    "E109": "rule has no source",
    "E110": "bad DOI or PMID",
    "E111": "unknown vocabulary term",
    "E112": "condition must have exactly one kind",
    "E113": "conflicting options",
    "E114": "impossible value",
    "E115": "threshold written in another unit than the analyte's canonical unit (warning)",
    # cross-checks within and between rules
    "E200": "duplicate rule id",
    "E201": "derived fact used but never derived",
    "E202": "dependency cycle between derived facts",
    "E203": "unknown alias",
    "E204": "alias is not guaranteed to be bound",
    "E205": "bad text template",
    "E206": "fact derived by more than one rule",
    "E207": "alias defined twice",
    "E208": "knowledge-base manifest problem",
    "E209": "action on a target that is not a drug or procedure",
    "E210": "recommendation rule that could fire outside the knowledge base's scope",
    "E211": "'not' over an assessment that can be not applicable",
    "E212": "drug taken from a fact that names no drug",
    # engine limits, checked when the knowledge base is compiled
    "E300": "engine limit exceeded",
    "E301": "a rule could not be evaluated, or a conflict is unresolved",
    # case files
    "E400": "time outside the patient's life or timeline",
    "E401": "expectation names an unknown rule",
    "E402": "entry must say whether it is reported or illustrative",
    "E403": "course ends before it starts",
    "E404": "case has no events",
    "E405": "no case files found",
    # lint: across the knowledge base and its cases
    "L100": "derived fact is never used",
    "L101": "condition can never be true",
    "L102": "opposite actions on one target at the same priority",
    "L103": "no case where the rule fires",
    "L104": "no case where the rule must not fire",
    "L105": "text without a translation",
    "L106": "no case files to check the rules against",
    "L107": "translation differs from the English in quoted values or numbers",
    # FHIR input
    "E500": "not a FHIR R4 Bundle",
    "E501": "FHIR resource fails validation",
}


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem, located in a file."""

    file: str
    line: int
    col: int
    code: str
    message: str
    hint: str = ""
    path: str = ""
    severity: Severity = "error"

    def format(self) -> str:
        label = "" if self.severity == "error" else f"{self.severity}: "
        text = f"{self.file}:{self.line}:{self.col}: {self.code} {label}{self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_json(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
            "path": self.path,
        }


class MascdsError(Exception):
    """Root of every exception the library raises on purpose."""


@dataclass
class LoadError(MascdsError):
    """Rules or a case could not be loaded; ``diagnostics`` says every reason found."""

    what: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.diagnostics = sorted(self.diagnostics)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        n = len(self.diagnostics)
        head = f"{self.what}: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head, *(d.format() for d in self.diagnostics)])


class EvaluationError(MascdsError):
    """Evaluation could not be completed (for example an engine fault); never a partial silent result."""


class UsageError(MascdsError):
    """A caller passed something the API cannot use (bad time, unknown rule id, unknown backend)."""


def did_you_mean(word: str, choices: Iterable[str], n: int = 1) -> str:
    """Return a "did you mean 'x'?" hint, or "" when nothing is close."""
    options: Sequence[str] = sorted(set(choices))
    close = difflib.get_close_matches(word, options, n=n, cutoff=0.6)
    if not close:
        lowered = {o.lower(): o for o in options}
        close = [lowered[c] for c in difflib.get_close_matches(word.lower(), list(lowered), n=n, cutoff=0.6)]
    if not close and len(word) >= 3:
        w = word.lower()
        close = [o for o in options if o.lower().startswith(w)][:3] or [o for o in options if w in o.lower()][:3]
    if close:
        return "did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return ""


def choices_hint(word: str, choices: Iterable[str], limit: int = 12) -> str:
    """did-you-mean when something is close, else the list of allowed values (shortened)."""
    hint = did_you_mean(word, choices)
    if hint:
        return hint
    options = sorted(set(choices))
    shown = ", ".join(options[:limit])
    more = f", … ({len(options) - limit} more)" if len(options) > limit else ""
    return f"expected one of: {shown}{more}"

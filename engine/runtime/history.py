"""Treatment history: the lines a patient has been through, as known at the evaluation time.

A *line* is one drug (all its courses in the record); supportive drugs (vasoactive) are not lines. At a time it is
running, or it was stopped, and a stopped line is read as the clinical reference (section 6) reads it: a drug
stopped for inefficacy, or *escalated past* (stopped while the disease was active, after a line of another class had
been started while the disease was active), is a failed line; a drug stopped for an adverse reaction caused a
reaction; a course completed or stopped in remission is neither. A stop whose reason is not recorded while the
disease was active, with no later line, is *undetermined*: the history says so and names the stop reason as what to
record, and it suppresses nothing (a possible failure does not silence a guideline recommendation; a recorded one
does).

"Disease active" is a recorded diagnosis of MAS or HLH running at the time (onset at or before, not yet resolved):
the record's own statement, not a re-derivation of the criteria at past times. Without such a diagnosis a stop
without reason stays undetermined.

The history is computed from the snapshot alone, so both matching backends see the same one. It is used by
evaluation to suppress, visibly, a suggestion (start/consider) of a failed drug or of a class containing one, and is
shown in the result (text, JSON, explain).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..core.snapshot import Course, Snapshot
from ..core.times import relative_label_in
from ..core.vocab import vocabulary

# Diagnoses whose running record means "the disease is active" for the history.
ACTIVE_DISEASE = frozenset({"mas", "hlh"})
# Supportive care, not a line of MAS treatment: vasopressors and inotropes are neither lines nor later lines.
SUPPORTIVE = frozenset({"vasoactive"})
# Statuses that suppress a suggestion of the drug (or of a class containing it).
SUPPRESSING = frozenset({"failed", "reaction"})

_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "running": "{drug}: running (since {start})",
        "failed-inefficacy": "{drug}: failed (stopped for inefficacy {end})",
        "failed-escalated": "{drug}: failed (escalated past: {later} started {later_start} while {disease} was "
                            "active; {drug} stopped {end})",
        "reaction": "{drug}: caused a reaction (stopped for an adverse reaction {end})",
        "completed": "{drug}: not a failure ({reason} {end})",
        "stopped": "{drug}: stopped {end} ({reason}); not a failure",
        "undetermined": "{drug}: stopped {end} while {disease} was active, reason not recorded - record the stop "
                        "reason to decide whether it failed",
        "inactive": "{drug}: stopped {end}, the disease not recorded as active then; not a failure",
    },
    "zh-CN": {
        "running": "{drug}：使用中（自 {start}）",
        "failed-inefficacy": "{drug}：治疗失败（{end} 因疗效不佳停用）",
        "failed-escalated": "{drug}：治疗失败（已升级治疗：{disease}活动期间于 {later_start} 开始 {later}；"
                            "{drug} 于 {end} 停用）",
        "reaction": "{drug}：曾引起不良反应（{end} 因不良反应停用）",
        "completed": "{drug}：非治疗失败（{reason}，{end}）",
        "stopped": "{drug}：{end} 停用（{reason}）；非治疗失败",
        "undetermined": "{drug}：{end} 在{disease}活动期停用，停药原因未记录——请记录停药原因以判断是否治疗失败",
        "inactive": "{drug}：{end} 停用，当时未记录疾病活动；非治疗失败",
    },
}


@dataclass(frozen=True)
class Line:
    """One drug's place in the treatment history at the evaluation time."""

    drug: str
    classes: tuple[str, ...]
    status: str  # running | failed | reaction | completed | stopped | undetermined
    start: int  # first course's start
    end: int | None  # last course's end; None while running
    stop_reason: str | None  # as recorded on the last course
    how: str  # running | inefficacy | escalated | adverse-reaction | completed | remission | other | undetermined
    later: str | None  # the later line this one was escalated past (drug id)
    later_start: int | None
    text: str  # the line as a clinician reads it, in the result language
    refs: tuple[str, ...]

    @property
    def suppresses(self) -> bool:
        return self.status in SUPPRESSING

    def to_json(self) -> dict[str, Any]:
        return {"drug": self.drug, "classes": list(self.classes), "status": self.status, "how": self.how,
                "stop_reason": self.stop_reason, "later_line": self.later, "text": self.text}


def _active_at(snap: Snapshot, t: int, as_of: int) -> str | None:
    """The active-disease diagnosis running at ``t`` as known at ``as_of``, if any."""
    for d in snap.diagnoses:
        if d.code not in ACTIVE_DISEASE or (d.onset is not None and d.onset > t):
            continue
        resolved = d.resolved if d.resolved is not None and d.resolved <= as_of else None
        if resolved is None or resolved > t:
            return d.code
    return None


def _running(c: Course, as_of: int) -> bool:
    return c.start <= as_of and (c.end is None or c.end > as_of)


def treatment_history(snap: Snapshot, as_of: int, lang: str = "en") -> tuple[Line, ...]:
    """Every drug given up to ``as_of``, each as a line with its status, in order of first start."""
    v = vocabulary()
    words = _WORDS.get(lang, _WORDS["en"])
    given = sorted((c for c in snap.courses if c.start <= as_of
                    and not set(v.drugs[c.drug].classes) <= SUPPORTIVE), key=lambda c: (c.start, c.drug))
    by_drug: dict[str, list[Course]] = {}
    for c in given:
        by_drug.setdefault(c.drug, []).append(c)
    first_start = {drug: cs[0].start for drug, cs in by_drug.items()}

    def label(t: int) -> str:
        return relative_label_in(t, snap.start, lang)

    lines: list[Line] = []
    for drug, courses in by_drug.items():
        classes = v.drugs[drug].classes
        name = v.drugs[drug].name_in(lang)
        refs = tuple(c.ref for c in courses)
        start = courses[0].start
        if any(_running(c, as_of) for c in courses):
            lines.append(Line(drug, classes, "running", start, None, None, "running", None, None,
                              words["running"].format(drug=name, start=label(start)), refs))
            continue
        last = max(courses, key=lambda c: (c.end if c.end is not None else c.start, c.start))
        end = last.end if last.end is not None else last.start
        reason = last.stop_reason
        fields = {"drug": name, "end": label(end), "start": label(start)}
        if reason == "inefficacy":
            lines.append(Line(drug, classes, "failed", start, end, reason, "inefficacy", None, None,
                              words["failed-inefficacy"].format(**fields), refs))
            continue
        if reason == "adverse-reaction":
            lines.append(Line(drug, classes, "reaction", start, end, reason, "adverse-reaction", None, None,
                              words["reaction"].format(**fields), refs))
            continue
        if reason in ("completed", "remission", "other"):
            status = "completed" if reason != "other" else "stopped"
            text = words[status].format(reason=v.name("stop_reasons", reason, lang), **fields)
            lines.append(Line(drug, classes, status, start, end, reason, reason, None, None, text, refs))
            continue
        disease = _active_at(snap, end, as_of)
        if disease is None:
            lines.append(Line(drug, classes, "stopped", start, end, reason, "inactive", None, None,
                              words["inactive"].format(**fields), refs))
            continue
        # escalated past: a drug of another class, first started after this line began, at a time the disease
        # was active; the one started first after the stop names it (else the last one before the stop).
        # Glucocorticoids are the backbone added to any line, so starting one says nothing about another failing.
        later_lines = [c for c in given if c.drug != drug and first_start[c.drug] == c.start and c.start >= start
                       and not set(v.drugs[c.drug].classes) & {*classes, "glucocorticoid"}
                       and _active_at(snap, c.start, as_of) is not None]
        after = [c for c in later_lines if c.start >= end]
        later = after[0] if after else (later_lines[-1] if later_lines else None)
        dname = v.name("diagnoses", disease, lang)
        if later is not None:
            text = words["failed-escalated"].format(disease=dname, later=v.drugs[later.drug].name_in(lang),
                                                    later_start=label(later.start), **fields)
            lines.append(Line(drug, classes, "failed", start, end, reason, "escalated", later.drug, later.start,
                              text, refs))
        else:
            lines.append(Line(drug, classes, "undetermined", start, end, reason, "undetermined", None, None,
                              words["undetermined"].format(disease=dname, **fields), refs))
    return tuple(lines)


def suppressing_line(history: tuple[Line, ...], target: str) -> Line | None:
    """The failed (or reaction-causing) line that a suggestion of ``target`` would re-offer: the drug itself, or
    a class containing it. A failed drug does not suppress a suggestion naming another drug of its class (a
    different molecule is a different line: anakinra and canakinumab), but it does suppress the class, since a
    class suggestion would offer the failed drug too."""
    drugs = vocabulary().target_drugs(target)
    return next((line for line in history if line.suppresses and line.drug in drugs), None)


__all__ = ["Line", "suppressing_line", "treatment_history"]

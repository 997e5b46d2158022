"""Render stage: results as text for clinicians (rich) and as stable JSON.

The text speaks the result's language (``Result.lang``): English, or Simplified Chinese (zh-CN) for the screen's
own words, the record's values and the inputs still missing. Condition labels, citations, rule ids and
messages about faulty input stay as they are.
"""

from __future__ import annotations

import functools
import re
from io import StringIO
from typing import Any

from rich.console import Console, Group, OverflowMethod
from rich.markup import escape
from rich.padding import Padding
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..compiler.ir import Missing
from ..core.times import relative_label_in
from ..core.vocab import vocabulary
from ..runtime.result import Assessment, Matched, Recommendation, Result

ICONS = {"critical": ("CRITICAL", "bold white on red"), "warning": ("WARNING", "bold black on yellow"),
         "info": ("INFO", "bold white on blue")}
KIND_WORDS = {"start": "START", "stop": "STOP", "avoid": "AVOID", "consider": "CONSIDER", "reduce": "REDUCE",
              "monitor": "MONITOR", "escalate_care": "ESCALATE", "record_allergy": "RECORD ALLERGY"}
EVIDENCE_WORDS = {
    "guideline": "clinical practice guideline", "consensus": "expert consensus statement",
    "classification-criteria": "validated classification criteria", "validated-score": "validated score",
    "rct": "randomised controlled trial", "cohort": "cohort study", "case-series": "case series",
    "case-report": "single case report", "regulatory-label": "regulatory label", "expert-opinion": "expert opinion",
}


# The screen's own words in zh-CN, by the English they replace (indicators, action kinds, evidence levels).
ICONS_ZH_CN = {"critical": "危急", "warning": "警告", "info": "提示"}
KIND_WORDS_ZH_CN = {"start": "【开始】", "stop": "【停用】", "avoid": "【避免】", "consider": "【考虑】",
                    "reduce": "【减量】", "monitor": "【监测】", "escalate_care": "【升级处理】",
                    "record_allergy": "【记录过敏】"}
EVIDENCE_WORDS_ZH_CN = {
    "guideline": "临床实践指南", "consensus": "专家共识", "classification-criteria": "经验证的分类标准",
    "validated-score": "经验证的评分", "rct": "随机对照试验", "cohort": "队列研究", "case-series": "病例系列",
    "case-report": "单个病例报告", "regulatory-label": "药品说明书", "expert-opinion": "专家意见",
}
STATUS_WORDS_ZH_CN = {"met": "✔ 符合", "not_met": "✘ 不符合", "indeterminate": "? 未能判定",
                      "not_applicable": "– 不适用"}

# The screen's sentences, by language; English is the default and the fallback.
UI: dict[str, dict[str, str]] = {
    "en": {
        "as_of": "as of {as_of}", "as_of_relative": " ({when})",
        "knowledge_base": "knowledge base {name} {version} ({hash}…), {rules} rules, backend {backend}",
        "incomplete": "The record is incomplete: some sections were not provided; rules that need them are undecided.",
        "left_out": "left out: {problem}",
        "unusable": "The record had entries that could not be used: the answer below may be incomplete.",
        "warning": "warning: {warning}",
        "recommendations_one": "{n} recommendation", "recommendations_many": "{n} recommendations",
        "none_fired": "No recommendation fired.",
        "undecided": "Recommendations that could not be decided - measure or record:",
        "suppressed": "Suppressed by a higher-priority recommendation or by the treatment history (shown, not "
                      "applied):",
        "failed_line": "  (suppressed by the treatment history: {detail})",
        "history": "Treatment history",
        "errors": "Errors",
        "assessments": "Assessments", "assessments_hint": "(undecided: what to measure or record)",
        "unreliable": "{status} (unreliable)", "caution": "caution: {caveat}", "missing": "- {what}: {detail}",
        "suppressed_tag": "  [SUPPRESSED]", "rule": "rule {rule_id} v{version}", "what_to_do": "What to do",
        "suppressed_by": "  (suppressed by {rule_id}: {action} {target})", "reported_dose": "Dose as reported: {dose}",
        "why": "Why", "based_on": "Based on the patient's record", "earlier": "(+{n} earlier)", "source": "Source",
        "reported": "Reported: {reported}", "evidence": "Evidence: {level}",
        "value": "value {value}", "above": "above {low}", "range": "{low} to {high}",
        "value_until": "value {span} until the missing inputs are known",
        "value_unrecorded": "value {span} (not recorded: {items}; the result holds whatever their values)",
        "list": ", ",
        "out_of_scope": "Out of scope: this patient is not one the knowledge base is about; nothing is shown.",
        "undetermined": "Scope undetermined: the record cannot say whether the knowledge base applies to this patient; "
                        "record what is missing. Undecided rules and assessments are not shown.",
        "scope_reason": "  - {reason}",
        "scope_full": "(every rule was still evaluated: the full result is in --format json)",
    },
    "zh-CN": {
        "as_of": "评估时间 {as_of}", "as_of_relative": "（{when}）",
        "knowledge_base": "知识库 {name} {version}（{hash}…），{rules} 条规则，匹配后端 {backend}",
        "incomplete": "病历不完整：部分内容未提供，依赖这些内容的规则无法判定。",
        "left_out": "已略去：{problem}",
        "unusable": "病历中有无法使用的条目：以下结果可能不完整。",
        "warning": "警告：{warning}",
        "recommendations_one": "{n} 条建议", "recommendations_many": "{n} 条建议",
        "none_fired": "没有触发任何建议。",
        "undecided": "未能判定的建议（需检测或记录以下项目）：",
        "suppressed": "被更高优先级的建议或治疗史抑制（仅显示，不执行）：",
        "failed_line": "  （因治疗史被抑制：{detail}）",
        "history": "治疗史",
        "errors": "错误",
        "assessments": "评估", "assessments_hint": "（未能判定：需检测或记录的项目）",
        "unreliable": "{status}（不可靠）", "caution": "注意：{caveat}", "missing": "- {what}：{detail}",
        "suppressed_tag": "  [已抑制]", "rule": "规则 {rule_id} v{version}", "what_to_do": "处理建议",
        "suppressed_by": "  （被 {rule_id} 抑制：{action}{target}）", "reported_dose": "文献报道的剂量：{dose}",
        "why": "理由", "based_on": "病历依据", "earlier": "（另有 {n} 条更早的记录）", "source": "文献来源",
        "reported": "文献报道：{reported}", "evidence": "证据级别：{level}",
        "value": "数值 {value}", "above": "高于 {low}", "range": "{low} 至 {high}",
        "value_until": "数值 {span}，待缺失项明确后确定",
        "value_unrecorded": "数值 {span}（未记录：{items}；无论其取值如何，结论均成立）",
        "list": "、",
        "out_of_scope": "不在适用范围内：该患者不属于本知识库所针对的人群，不显示任何内容。",
        "undetermined": "适用范围无法判定：病历无法说明本知识库是否适用于该患者；请记录缺失的内容。"
                        "未能判定的规则和评估不予显示。",
        "scope_reason": "  - {reason}",
        "scope_full": "（所有规则仍已评估：完整结果见 --format json）",
    },
}

MAX_FACTS_LISTED = 4


def _ui(lang: str) -> dict[str, str]:
    return UI.get(lang, UI["en"])


def _overflow(lang: str) -> OverflowMethod:
    """How a table cell treats a word wider than itself: Chinese runs have no spaces to wrap at, so they fold."""
    return "fold" if lang == "zh-CN" else "ellipsis"


# --- the inputs still missing, in zh-CN ---------------------------------------------------------------------
# A missing input names what to measure or record and in which window, in English words built when the rules
# compile; the zh-CN screen translates the forms it knows and leaves anything else as written.
_MISSING_WHAT_ZH_CN = {
    "reaction severity": "反应严重程度", "birth date": "出生日期", "dosing frequency or body weight": "给药频次或体重",
    "body weight and dosing frequency": "体重和给药频次", "infusion rate per kg": "按体重计算的输注速率",
    "observations": "检查与测量", "findings": "检查所见", "medications": "用药", "orders": "医嘱",
    "reactions": "不良反应", "organ support": "器官支持", "diagnoses": "诊断", "patient": "患者信息",
    "rule evaluation": "规则评估",
}
_MISSING_DETAIL_ZH_CN = {
    "a measurement": "一次检测结果", "at least two measurements": "至少两次检测结果",
    "recorded as present or absent": "记录有或无", "not provided in the record": "病历中未提供",
    "assessment not evaluated": "该评估未进行", "its value was not computed": "其数值未能计算",
    "the age is not known precisely enough to decide the age condition": "年龄不够精确，无法判定年龄条件",
    "body weight (to convert a per-kg dose to mg)": "体重（用于将按千克体重计的剂量换算为 mg）",
    "body weight (to express the dose per kg)": "体重（用于按千克体重表示剂量）",
    "dosing frequency or body weight (to express the daily dose)": "给药频次或体重（用于计算日剂量）",
    "body weight and dosing frequency (to express the daily dose per kg)":
        "体重和给药频次（用于计算按千克体重的日剂量）",
    "infusion rate per kg": "按体重计算的输注速率", "internal error": "内部错误",
}
_DETAIL_HEADS = ("a measurement ", "at least two measurements ", "recorded as present or absent ")
_DURATION = re.compile(r"(\d+) (h|min|s|days?|weeks?)")
_DURATION_ZH_CN = {"h": "小时", "min": "分钟", "s": "秒", "day": "天", "days": "天", "week": "周", "weeks": "周"}
_EDGE_ZH_CN = {("after", "end"): "结束后", ("after", "start"): "开始后", ("before", "end"): "结束前",
               ("before", "start"): "开始前"}
_RELATIVE_WINDOW = re.compile(r"(after|before) the (end|start) of (.+?)(?: \(within (.+)\))?")


def _duration_zh_cn(text: str) -> str:
    m = _DURATION.fullmatch(text)
    return f"{m.group(1)} {_DURATION_ZH_CN[m.group(2)]}" if m is not None else text


def _window_zh_cn(part: str) -> str:
    """One part of a window in words ('in the last 72 h') in zh-CN; a part naming another condition keeps that
    condition's English label ('after the end of the 3rd ... course' -> 'the 3rd ... course 结束后')."""
    if part == "active now":
        return "目前仍在进行"
    m = re.fullmatch(r"in the last (.+)", part)
    if m is not None:
        return f"近 {_duration_zh_cn(m.group(1))}内"
    m = re.fullmatch(r"started at least (.+) ago", part)
    if m is not None:
        return f"至少 {_duration_zh_cn(m.group(1))}前已开始"
    m = _RELATIVE_WINDOW.fullmatch(part)
    if m is not None:
        within = f" {_duration_zh_cn(m.group(4))}内" if m.group(4) else ""
        return f"{m.group(3)} {_EDGE_ZH_CN[(m.group(1), m.group(2))]}{within}"
    m = re.fullmatch(r"during (.+)", part)
    if m is not None:
        return f"{m.group(1)} 期间"
    return part


@functools.cache
def _names_zh_cn() -> dict[str, str]:
    """zh-CN names by English name, over every vocabulary table (the first table naming a term wins)."""
    names: dict[str, str] = {}
    for _, _, en, zh in vocabulary().translations():
        if zh:
            names.setdefault(en, zh)
    return names


def missing_what(what: str, lang: str) -> str:
    """What a missing input names (an analyte, a finding, the birth date ...) in ``lang``."""
    if lang != "zh-CN":
        return what
    if what in _MISSING_WHAT_ZH_CN:
        return _MISSING_WHAT_ZH_CN[what]
    unreliable = re.fullmatch(r"(.+) is unreliable here - a clinical judgement", what)
    if unreliable is not None:
        return f"{unreliable.group(1)} 在此不可靠，需临床判断"
    return _names_zh_cn().get(what, what)


def missing_detail(detail: str, lang: str) -> str:
    """How a missing input would decide (a measurement in a window, ...) in ``lang``."""
    if lang != "zh-CN":
        return detail
    if detail in _MISSING_DETAIL_ZH_CN:
        return _MISSING_DETAIL_ZH_CN[detail]
    for head in _DETAIL_HEADS:
        if detail.startswith(head):
            window = "，".join(_window_zh_cn(p) for p in detail[len(head):].split(", "))
            return f"{_MISSING_DETAIL_ZH_CN[head.strip()]}（{window}）"
    severity = re.fullmatch(r"the severity of the reaction to (.+) is not recorded", detail)
    if severity is not None:
        drug = _names_zh_cn().get(severity.group(1), severity.group(1))
        return f"对 {drug} 的反应未记录严重程度"
    return detail


def _missing_line(m: Missing, lang: str) -> str:
    return _ui(lang)["missing"].format(what=missing_what(m.what, lang), detail=missing_detail(m.detail, lang))


def _row(bullet: str, text: Text, indent: int, lang: str = "en") -> Padding:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow=_overflow(lang))
    grid.add_row(Text(bullet, style="dim"), text)
    return Padding(grid, (0, 0, 0, indent))


def _matched_rows(out: list[Any], items: tuple[Matched, ...], depth: int = 0, lang: str = "en") -> None:
    for m in items:
        out.append(_row("•", Text(m.condition, style="italic" if m.negated else ""), 2 + 2 * depth, lang))
        if m.derived is not None:
            _matched_rows(out, m.because, depth + 1, lang)
            continue
        facts = list(m.facts)
        hidden = len(facts) - MAX_FACTS_LISTED
        for f in facts[-MAX_FACTS_LISTED:]:
            out.append(_row(" ", Text(str(f.get("text", "")), style="cyan"), 4 + 2 * depth, lang))
        if hidden > 0:
            out.append(_row(" ", Text(_ui(lang)["earlier"].format(n=hidden), style="dim cyan"), 4 + 2 * depth, lang))


def _section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _kind_word(kind: str, lang: str) -> str:
    return KIND_WORDS_ZH_CN[kind] if lang == "zh-CN" else KIND_WORDS[kind]


def _recommendation(rec: Recommendation, lang: str = "en") -> Panel:
    ui = _ui(lang)
    label, style = ICONS[rec.indicator]
    if lang == "zh-CN":
        label = ICONS_ZH_CN[rec.indicator]
    head = Text()
    head.append(f" {label} ", style=style)
    head.append(f" {rec.title}", style="bold")
    if rec.status == "suppressed":
        head.append(ui["suppressed_tag"], style="bold magenta")
    parts: list[Any] = [head, Text(ui["rule"].format(rule_id=rec.rule_id, version=rec.rule_version), style="dim"),
                        _section(ui["what_to_do"])]
    actions = Table.grid(padding=(0, 1))
    actions.add_column(no_wrap=True, style="bold")
    actions.add_column(overflow=_overflow(lang))
    for a in rec.actions:
        text = Text(a.text)
        by = a.suppressed_by
        if by is not None and by.reason == "failed-line":
            text.append(ui["failed_line"].format(detail=by.detail or by.target), style="magenta")
        elif by is not None:
            action, target = by.action, by.target
            if lang == "zh-CN":
                action, target = _kind_word(by.action, lang), vocabulary().target_name(by.target, lang)
            text.append(ui["suppressed_by"].format(rule_id=by.rule_id, action=action, target=target),
                        style="magenta")
        actions.add_row(f"  {_kind_word(a.kind, lang)}", text)
        if a.reported_dose:
            actions.add_row("", Text(ui["reported_dose"].format(dose=a.reported_dose), style="yellow"))
    parts.append(actions)
    parts.append(_section(ui["why"]))
    parts.append(Padding(Text(rec.rationale), (0, 0, 0, 2)))
    parts.append(_section(ui["based_on"]))
    _matched_rows(parts, rec.matched, lang=lang)
    parts.append(_section(ui["source"]))
    for c in rec.citations:
        ident = " · ".join(x for x in (f"doi:{c.doi}" if c.doi else "", f"PMID {c.pmid}" if c.pmid else "") if x)
        block = Table.grid()
        block.add_column(overflow=_overflow(lang))
        block.add_row(Text(c.reference))
        block.add_row(Text(f"{ident}  {c.url or ''}", style="blue"))
        block.add_row(Text(ui["reported"].format(reported=c.reported), style="dim"))
        parts.append(Padding(block, (0, 0, 0, 2)))
    words = EVIDENCE_WORDS_ZH_CN if lang == "zh-CN" else EVIDENCE_WORDS
    parts.append(Padding(Text(ui["evidence"].format(level=words.get(rec.evidence_level, rec.evidence_level)),
                              style="bold"), (0, 0, 0, 2)))
    border = {"critical": "red", "warning": "yellow", "info": "blue"}[rec.indicator]
    return Panel(Group(*parts), border_style="magenta" if rec.status == "suppressed" else border)


STATUS_WORDS = {"met": ("✔ met", "green"), "not_met": ("✘ not met", ""),
                "indeterminate": ("? undecided", "bold yellow"), "not_applicable": ("– not applicable", "dim")}


def number(x: float) -> str:
    """A value as a clinician reads it: up to 4 significant digits, a true minus sign."""
    text = f"{x:.4g}" if abs(x) < 1e6 else f"{x:.3e}"
    return text.replace("-", "−")


def value_text(a: Assessment, lang: str = "en") -> str | None:
    """The computed value of a score or ratio: exact, or the range the unrecorded inputs leave open."""
    ui = _ui(lang)
    if a.value is not None:
        return ui["value"].format(value=number(a.value))
    if a.value_range is None:
        return None
    lo, hi = a.value_range
    span = ui["above"].format(low=number(lo)) if hi is None else ui["range"].format(low=number(lo), high=number(hi))
    if a.status == "indeterminate":
        return ui["value_until"].format(span=span)
    unknown = sorted({m.what for m in a.unrecorded})
    return ui["value_unrecorded"].format(span=span, items=ui["list"].join(missing_what(w, lang) for w in unknown))


def _assessments(items: tuple[Assessment, ...], lang: str = "en") -> Table:
    """Each assessment on one line, with its value, its reliability and, when undecided, what to measure."""
    ui = _ui(lang)
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow=_overflow(lang))
    grid.add_row(Text(ui["assessments"], style="bold"), Text(ui["assessments_hint"], style="dim"))
    for a in items:
        word, style = STATUS_WORDS[a.status]
        if lang == "zh-CN":
            word = STATUS_WORDS_ZH_CN[a.status]
        if not a.reliable:
            word, style = ui["unreliable"].format(status=word), "bold magenta"
        grid.add_row(Text(f"  {word}", style=style), Text(f"{a.title}  [{a.rule_id}]"))
        value = value_text(a, lang)
        if value:
            grid.add_row("", Text(value, style="cyan"))
        if a.interpretation:
            grid.add_row("", Text(a.interpretation, style="cyan"))
        if a.not_applicable_reason:
            grid.add_row("", Text(a.not_applicable_reason, style="dim"))
        for caveat in a.caveats:
            grid.add_row("", Text(ui["caution"].format(caveat=caveat), style="magenta"))
        if a.status == "indeterminate":
            for m in a.missing:
                grid.add_row("", Text(_missing_line(m, lang), style="yellow"))
    return grid


def render_text(result: Result, width: int | None = None, color: bool | None = None) -> str:
    """The result for a person: what to do, why (with the patient's values), and the source."""
    buf = StringIO()
    console = Console(file=buf, width=width or 100, force_terminal=color, no_color=color is False,
                      highlight=False, soft_wrap=False)
    lang = result.lang
    ui = _ui(lang)
    start = result.timeline_start
    kb = result.knowledge_base
    console.print(Text(f"mascds · {result.case_title}", style="bold"))
    when = relative_label_in(result.as_of_epoch, start, lang)
    console.print(Text(ui["as_of"].format(as_of=result.as_of) +
                       (ui["as_of_relative"].format(when=when) if start is not None else "")))
    console.print(Text(ui["knowledge_base"].format(name=kb.name, version=kb.version, hash=kb.content_hash[:19],
                                                   rules=kb.rules_evaluated, backend=result.backend), style="dim"))
    if not result.complete:
        console.print(Text(ui["incomplete"], style="bold yellow"))
    for problem in result.input_errors:
        console.print(Text(ui["left_out"].format(problem=problem), style="bold red"))
    if result.input_errors:
        console.print(Text(ui["unusable"], style="bold yellow"))
    for w in result.warnings:
        console.print(Text(ui["warning"].format(warning=w), style="yellow"))
    active = [r for r in result.recommendations if r.status == "active"]
    suppressed = [r for r in result.recommendations if r.status != "active"]
    scope = result.scope
    if not scope.shown:
        console.print()
        console.print(Text(ui[scope.status], style="bold"))
        for reason in scope.reasons:
            console.print(Text(ui["scope_reason"].format(reason=reason)))
        console.print(Text(ui["scope_full"], style="dim"))
    if result.assessments and scope.shown:
        console.print()
        console.print(_assessments(result.assessments, lang))
    if result.treatment_history:
        console.print()
        console.print(Text(ui["history"], style="bold"))
        for line in result.treatment_history:
            console.print(Text(f"  {line.text}", style="magenta" if line.suppresses else ""))
    console.print()
    if active:
        count = ui["recommendations_one" if len(active) == 1 else "recommendations_many"].format(n=len(active))
        console.print(Text(count, style="bold"))
        for rec in active:
            console.print(_recommendation(rec, lang))
    elif scope.shown:
        console.print(Text(ui["none_fired"], style="bold"))
    undecided = result.shown_undecided()
    if undecided:
        console.print()
        console.print(Text(ui["undecided"], style="bold yellow"))
        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True)
        grid.add_column(overflow=_overflow(lang))
        for u in undecided:
            grid.add_row(Text("  ?", style="bold yellow"), Text(f"{u.title}  [{u.rule_id}]", style="yellow"))
            for m in u.missing:
                grid.add_row("", Text(_missing_line(m, lang)))
        console.print(grid)
    if suppressed:
        console.print()
        console.print(Text(ui["suppressed"], style="bold magenta"))
        for rec in suppressed:
            console.print(_recommendation(rec, lang))
    if result.errors:
        console.print()
        console.print(Text(ui["errors"], style="bold red"))
        for e in result.errors:
            console.print(Text(f"  {e.rule_id}: {escape(e.message)}", style="red"))
    return buf.getvalue()

"""Plot stage: a replayed timeline as a chart - laboratory trends, treatment courses as bars, and when each
recommendation and assessment held - as PNG, SVG, or a self-contained HTML page (inline SVG, no scripts, no
network). Drawn with matplotlib's Agg backend, so no display is needed."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from ..core.errors import UsageError
from ..core.times import iso, relative_label
from ..core.vocab import vocabulary
from .timeline import Replay, Span

# Panels of laboratory trends, top to bottom: the analytes the MAS assessments watch.
LAB_PANELS = (("ferritin",), ("platelets",), ("ast", "alt"), ("fibrinogen",), ("temperature",))
FORMATS = (".png", ".svg", ".html")
STATE_COLOUR = {"fired": "#c0392b", "suppressed": "#8e44ad", "undecided": "#e1a100", "met": "#1e8449",
                "indeterminate": "#e1a100", "met_unreliable": "#8e44ad", "not_met_unreliable": "#8e44ad",
                "not_applicable": "#95a5a6"}
DAY = 86400.0


def _x(t: float, origin: int) -> float:
    return (t - origin) / DAY


def _figure(rp: Replay) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    snap = rp.snapshot
    origin = snap.start if snap.start is not None else rp.times[0]
    vocab = vocabulary()
    end = rp.times[-1]
    labs = [p for p in LAB_PANELS if any(o.analyte in p and o.time <= end for o in snap.observations)]
    courses = [c for c in snap.courses if c.start <= end]
    spans = rp.spans()
    heights = [2.0] * len(labs) + [max(1.0, 0.3 * len(courses))] * bool(courses) + \
              [max(1.0, 0.28 * len(spans))] * bool(spans)
    if not heights:
        raise UsageError("nothing to draw: the case has no measurements, courses or findings in the replay")
    fig, grid = plt.subplots(len(heights), 1, sharex=True, figsize=(11, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    axes = [a[0] for a in grid]
    row = 0
    for panel in labs:
        ax = axes[row]
        row += 1
        for analyte in panel:
            points = sorted((o.time, o.value) for o in snap.observations if o.analyte == analyte and o.time <= end)
            if points:
                a = vocab.analytes[analyte]
                ax.plot([_x(t, origin) for t, _ in points], [v for _, v in points], marker="o", markersize=3,
                        linewidth=1.2, label=f"{a.name} ({vocab.display_unit(a.canonical)})")
        if panel == ("ferritin",):
            ax.set_yscale("log")
        ax.legend(loc="upper left", fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    if courses:
        ax = axes[row]
        row += 1
        labels = []
        for i, c in enumerate(courses):
            stop = c.end if c.end is not None and c.end <= end else end
            width = max(_x(stop, origin) - _x(c.start, origin), 0.15)  # a single dose still shows
            ax.barh(i, width, left=_x(c.start, origin), height=0.6, color="#5d6d7e",
                    hatch="//" if c.end is None or c.end > end else None)
            regimen = f" ({vocab.regimens[c.regimen].name})" if c.regimen else ""
            labels.append(f"{vocab.drugs[c.drug].name}{regimen}")
        ax.set_yticks(range(len(courses)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    if spans:
        ax = axes[row]
        for i, items in enumerate(spans.values()):
            for span in items:
                stop = span.end if span.end is not None else end
                left = _x(span.start, origin)
                undecided = span.state in ("undecided", "indeterminate")
                ax.barh(i, max(_x(stop, origin) - left, 0.15), left=left, height=0.3 if undecided else 0.6,
                        color=STATE_COLOUR.get(span.state, "#7f8c8d"), alpha=0.45 if undecided else 0.9)
                if span.state == "fired":
                    ax.plot(left, i, marker="v", color="black", markersize=4)
        ax.set_yticks(range(len(spans)), list(spans), fontsize=7)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
        colours = ("#c0392b", "#1e8449", "#e1a100", "#8e44ad", STATE_COLOUR["not_applicable"])
        handles = [Rectangle((0, 0), 1, 1, color=c) for c in colours]
        ax.legend(handles, ["fired", "met", "undecided", "suppressed / unreliable", "not applicable"],
                  loc="lower left", fontsize=7, frameon=False, ncols=5, bbox_to_anchor=(0, 1.0))
    # from the first thing drawn (a diagnosis years before is a fact, not a point on the chart)
    drawn = [o.time for o in snap.observations] + [c.start for c in courses] + [o.time for o in snap.orders] + \
        [r.time for r in snap.reactions] + [s.start for s in snap.supports]
    first = max(min([t for t in drawn if t <= end], default=rp.times[0]), rp.times[0])
    axes[-1].set_xlim(_x(first, origin) - 0.5, _x(end, origin) + 0.5)
    axes[-1].set_xlabel("day of the timeline" if snap.start is not None else f"days from {iso(origin)}")
    fig.suptitle(f"{snap.title} - as of {relative_label(end, snap.start)}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def _html(rp: Replay, svg: str) -> str:
    origin = rp.snapshot.start
    rows = []
    for rid, items in rp.spans().items():
        for k, span in enumerate(items):
            rows.append(_row(rid if k == 0 else "", span, origin))
    table = "\n".join(rows) or '<tr><td colspan="4">Nothing fired, met or undecided at any time.</td></tr>'
    title = html.escape(rp.snapshot.title)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>mascds replay - {title}</title>
<style>body{{font-family:sans-serif;margin:1.5em;color:#222}}table{{border-collapse:collapse;font-size:13px}}
td,th{{padding:2px 10px;text-align:left;border-bottom:1px solid #ddd}}svg{{max-width:100%;height:auto}}</style>
</head><body>
<h1 style="font-size:1.2em">{title}</h1>
<p>{len(rp.times)} evaluations, {html.escape(relative_label(rp.times[0], origin))} to
{html.escape(relative_label(rp.times[-1], origin))}. Generated by mascds replay; not a medical device.</p>
{svg}
<table><thead><tr><th>rule</th><th>state</th><th>from</th><th>until</th></tr></thead><tbody>
{table}
</tbody></table></body></html>
"""


def _row(rid: str, span: Span, origin: int | None) -> str:
    until = relative_label(span.end, origin) if span.end is not None else "(still at the end)"
    colour = STATE_COLOUR.get(span.state, "#222")
    return (f"<tr><td>{html.escape(rid)}</td><td style=\"color:{colour}\">{html.escape(span.state.replace('_', ' '))}"
            f"</td><td>{html.escape(relative_label(span.start, origin))}</td><td>{html.escape(until)}</td></tr>")


def plot_replay(rp: Replay, path: str | Path) -> Path:
    """Write the chart to ``path``: .png, .svg, or .html (a self-contained page with the chart and the table)."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"cannot draw to '{out.name}': use a file ending in {', '.join(FORMATS)}")
    fig = _figure(rp)
    try:
        import matplotlib.pyplot as plt

        if suffix == ".html":
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None})
            svg = buf.getvalue()
            text = _html(rp, svg[svg.index("<svg"):])
            _write(out, text.encode("utf-8"))
        else:
            data = io.BytesIO()
            fig.savefig(data, format=suffix[1:], dpi=130,
                        metadata={"Date": None} if suffix == ".svg" else {"Software": None})
            _write(out, data.getvalue())
    finally:
        plt.close(fig)
    return out


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None


"""Times and durations as authors write them, and as the engine uses them (UTC epoch seconds).

Accepted times: ISO 8601 date-times (``2024-03-01T08:00``, with or without an offset; no offset means
the case's timezone offset, default UTC), dates (``2024-03-01`` = midnight), and times relative to a
case's ``timeline.start``: ``day 3``, ``day 3 08:30``, ``day -2 23:00`` (day 0 is the start date).
Durations: a number and a unit, ``30min``, ``24h``, ``3d``, ``2w``.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(min|h|d|w)\s*$")
_UNIT_SECONDS = {"min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_UNIT_WORDS = {"min": "min", "h": "h", "d": "day", "w": "week"}
_RELATIVE = re.compile(r"^\s*day\s+(-?\d+)(?:\s+(\d{1,2}):(\d{2}))?\s*$", re.IGNORECASE)

# Every time mascds accepts lies in [EARLIEST, LATEST). Far outside any real record, the bounds keep every time,
# window end and age inside the calendar Python can write (years 1..9999; `day 99999999` is year 275814) and far
# below the engine's "ongoing" end (1e12 s, year 33658): before 1850 no living patient was born (the longest
# recorded life is 122 years), and 2500 leaves centuries for future-dated orders.
EARLIEST = int(datetime(1850, 1, 1, tzinfo=UTC).timestamp())
LATEST = int(datetime(2500, 1, 1, tzinfo=UTC).timestamp())
RANGE_TEXT = "between 1850-01-01 and 2500-01-01"

DURATION_HINT = "write a number and a unit, e.g. 30min, 24h, 3d or 2w"
TIME_HINT = "write an ISO date-time like 2024-03-01T08:00, a date, or 'day 3 08:00' relative to timeline.start"


class TimeFormatError(ValueError):
    """A time or duration string could not be understood."""


def parse_duration(text: str) -> int:
    """Seconds in a duration like ``72h``. Raises :class:`TimeFormatError`."""
    if not isinstance(text, str):
        raise TimeFormatError(f"expected a duration such as '72h', got {text!r}")
    m = _DURATION.match(text)
    if not m:
        raise TimeFormatError(f"'{text}' is not a duration")
    seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    if seconds <= 0:
        raise TimeFormatError(f"'{text}' must be longer than zero")
    if seconds > LATEST - EARLIEST:  # no window can be longer than the span of times mascds reads
        raise TimeFormatError(f"'{text[:40]}' is longer than any record ({RANGE_TEXT})")
    return round(seconds)


def describe_duration(seconds: float) -> str:
    """Readable duration: ``72 h``, ``3 days``, ``30 min``."""
    s = abs(int(seconds))
    if s < 4 * 86400 and s % 3600 == 0:
        return f"{s // 3600} h"
    for unit in ("w", "d", "h", "min"):
        size = _UNIT_SECONDS[unit]
        if s >= size and s % size == 0:
            n = s // size
            word = _UNIT_WORDS[unit]
            if word in ("day", "week") and n != 1:
                word += "s"
            return f"{n} {word}"
    return f"{s} s"


def check_epoch(epoch: int, text: object = None) -> int:
    """``epoch`` if it lies in [EARLIEST, LATEST); else :class:`TimeFormatError` naming ``text`` (or the epoch)."""
    if not EARLIEST <= epoch < LATEST:
        written = epoch if text is None else text
        shown = str(written) if len(str(written)) <= 40 else f"{str(written)[:37]}..."
        raise TimeFormatError(f"'{shown}' is not a plausible time: mascds reads times {RANGE_TEXT}")
    return epoch


def parse_time(text: object, start: int | None = None, tz_offset_minutes: int = 0) -> int:
    """Epoch seconds (UTC) for an author's time. ``start`` is the epoch of day 0 for relative times. A time
    outside [EARLIEST, LATEST) is a :class:`TimeFormatError` (see :func:`check_epoch`)."""
    return check_epoch(_parse_time(text, start, tz_offset_minutes), text)


def _parse_time(text: object, start: int | None, tz_offset_minutes: int) -> int:
    if isinstance(text, datetime):
        dt = text if text.tzinfo else text.replace(tzinfo=timezone(timedelta(minutes=tz_offset_minutes)))
        return int(dt.timestamp())
    if not isinstance(text, str):
        raise TimeFormatError(f"expected a time, got {text!r}")
    if len(text) > 100:  # no time is this long; the regex and int() below need not see a 400-digit day
        raise TimeFormatError(f"'{text[:37]}...' is not a time")
    m = _RELATIVE.match(text)
    if m:
        if start is None:
            raise TimeFormatError(f"'{text}' is relative, but the case has no timeline.start")
        day = int(m.group(1))
        hour = int(m.group(2) or 0)
        minute = int(m.group(3) or 0)
        if hour > 23 or minute > 59:
            raise TimeFormatError(f"'{text}' has an impossible clock time")
        return start + day * 86400 + hour * 3600 + minute * 60
    raw = text.strip()
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
    except ValueError as exc:
        raise TimeFormatError(f"'{text}' is not a time") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone(timedelta(minutes=tz_offset_minutes)))
    return int(dt.timestamp())


@functools.lru_cache(maxsize=8192)
def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(epoch: float) -> str:
    """ISO 8601 UTC with a Z, to the second: the stable form used in JSON."""
    return _iso(int(epoch))


def relative_label(epoch: float, start: int | None) -> str:
    """'day 3 08:00' relative to ``start`` (which is midnight of day 0), or the ISO time."""
    return relative_label_in(epoch, start, "en")


def relative_label_in(epoch: float, start: int | None, lang: str) -> str:
    """:func:`relative_label` in ``lang``: 'day 3 08:00' in English, '第 3 天 08:00' in zh-CN; ISO times stay ISO."""
    if start is None:
        return iso(epoch)
    delta = int(epoch) - start
    day, rest = divmod(delta, 86400)
    clock = f"{rest // 3600:02d}:{(rest % 3600) // 60:02d}"
    return f"第 {day} 天 {clock}" if lang == "zh-CN" else f"day {day} {clock}"

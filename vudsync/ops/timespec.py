"""Points in time and durations as operators type them: ``2h``, ``1h30m``, ``2026-11-27T12:00``.

Pure: the current time is an argument.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from kernel.errors import ConfigurationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_WHOLE = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``2h``, ``1h30m``, ``7d``, ``1w``; a bare number means seconds."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        return timedelta(seconds=float(value))
    if not _WHOLE.match(value):
        raise ConfigurationError(
            f"not a duration: {text!r}", hint="use a number with a unit: 90s, 10m, 2h, 1h30m, 7d"
        )
    seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    return timedelta(seconds=seconds)


def parse_since(text: str, now: datetime) -> datetime:
    """A point in time: relative to ``now`` (``2h`` = two hours ago) or ISO 8601.

    An ISO time without a zone is the operator's local time. The result is aware (UTC) and
    never after ``now``.
    """
    value = text.strip()
    if _WHOLE.match(value.lower()):
        return (now - parse_duration(value)).astimezone(UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(
            f"not a point in time: {text!r}",
            hint="use a duration ago (2h, 30m, 1d) or an ISO time (2026-11-27T12:00, 2026-11-27T12:00Z)",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.astimezone()  # the operator's local zone
    parsed = parsed.astimezone(UTC)
    if parsed > now:
        raise ConfigurationError(f"{text!r} is in the future", hint="replay can only go back in time")
    return parsed


def format_age(seconds: float) -> str:
    """``42s``, ``3m 05s``, ``2h 10m``, ``3d 4h`` — for humans."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"

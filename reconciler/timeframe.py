"""Time frames for ``history``: epoch milliseconds, ISO-8601, and relative ``now-2h/h`` frames.

Numbers are epoch milliseconds, except eight digits that form a date (``20260131``: ISO-8601's basic
form). Relative frames follow the events API of ``seeds/003``: ``now``, ``now-NU`` / ``now+NU`` with units
``s m h d w M y`` (``M`` months, ``m`` minutes), and an optional alignment ``/U`` that truncates to
the start of that unit (``now-1d/d`` is the start of yesterday; weeks start on Monday). Times without
a zone are UTC. Everything returns epoch milliseconds; ``now`` is injected for tests.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def epoch_millis(moment: datetime) -> int:
    """Exact epoch milliseconds of an aware datetime (naive ones are taken as UTC).

    Integer arithmetic on timedeltas: ``int(moment.timestamp() * 1000)`` goes through a float and
    comes out one millisecond early for some values (``.001`` → ``0.9999…``).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _MILLISECOND


_RELATIVE = re.compile(
    r"^now(?:(?P<sign>[+-])(?P<n>\d+)(?P<unit>[smhdwMy]))?(?:/(?P<align>[smhdwMy]))?$"
)


def parse_start_date(value: str | int) -> int:
    """``startDate`` (ISO-8601 or epoch ms) → epoch milliseconds; ``ValueError`` if neither."""
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    return epoch_millis(datetime.fromisoformat(text))


def _add_months(moment: datetime, months: int) -> datetime:
    """``moment`` ``months`` later, on the same day or the last of a shorter month."""
    year, month = divmod(moment.year * 12 + moment.month - 1 + months, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return moment.replace(year=year, month=month + 1, day=min(moment.day, last))


def _shift(moment: datetime, n: int, unit: str) -> datetime:
    if unit == "M":
        return _add_months(moment, n)
    if unit == "y":
        return _add_months(moment, 12 * n)
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[unit]
    return moment + timedelta(seconds=n * seconds)


def _align(moment: datetime, unit: str) -> datetime:
    if unit == "s":
        return moment.replace(microsecond=0)
    if unit == "m":
        return moment.replace(second=0, microsecond=0)
    if unit == "h":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)  # y


def parse_time(text: str, *, now: datetime | None = None) -> int:
    """Epoch milliseconds of ``text``; ``ValueError`` with a hint when it is none of the formats."""
    value = text.strip()
    if re.fullmatch(r"[0-9]{8}", value):  # ISO-8601 basic date (20260131), not 5.6 h after 1970
        try:
            return epoch_millis(datetime.strptime(value, "%Y%m%d"))
        except ValueError:
            pass
    if re.fullmatch(r"-?[0-9]+", value):
        return int(value)
    match = _RELATIVE.match(value.replace(" ", ""))
    if match:
        moment = now or datetime.now(UTC)
        if match.group("n"):
            n = int(match.group("n")) * (-1 if match.group("sign") == "-" else 1)
            moment = _shift(moment, n, match.group("unit"))
        if match.group("align"):
            moment = _align(moment, match.group("align"))
        return epoch_millis(moment)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use epoch milliseconds, ISO-8601 (2026-01-31T10:00:00Z), "
            "or now-1d, now-2h/h"
        ) from None
    return epoch_millis(parsed)

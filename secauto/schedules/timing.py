"""When a schedule's slots are: cron expressions (cronsim), intervals, time zones, DST and jitter.

Times are integers, milliseconds since the Unix epoch (the unit of the Redis clock that decides when a
slot is due), and every function here is pure: each node computes the same slots from the same
definition, and tests pass fixed instants instead of waiting.

Cron: 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first (as BullMQ and
Quartz), or ``@hourly``, ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``. Parsing and calendar
matching are cronsim's (Debian cron's semantics: day-of-month and day-of-week are OR-ed unless one
starts with ``*``; ``L``, ``LW``, ``MON#2`` work).

Daylight saving time (the rules of Debian cron, for 5- and 6-field expressions alike):

- A *fixed-time* expression (minute and hour fields both without a leading ``*``, e.g. ``30 2 * * *``)
  is matched against the wall clock of its time zone. A wall time that does not exist (the clock springs
  forward) fires at the first minute after the gap: 02:30 Europe/Berlin on 2026-03-29 fires at 03:00
  CEST. A wall time that happens twice (the clock falls back) fires once, at its first occurrence:
  02:30 CEST on 2026-10-25, not again at 02:30 CET.
- Any other expression (``*/15 * * * *``, ``0 * * * *``) follows elapsed time through the change: no
  slot falls in the missing hour, and the repeated hour's slots fire in both of its passes, so a
  quarter-hourly schedule never pauses for an hour.
- ``every: N`` schedules fire at the multiples of N seconds since the Unix epoch: elapsed time, the
  same on every node, unaffected by time zones.

Jitter delays each slot's *due time* (not the slot itself, which stays the job's ``scheduled_for``) by
a pseudo-random amount derived from SHA-256 of (schedule name, slot): every node computes the same
delay, so a failover does not move a fire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# A slot that never comes (a cron expression with no match in cronsim's 50-year horizon): far beyond any
# real time, still exact as a Redis ZSET score (a double).
NEVER = 2**53 - 1

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MINUTE = timedelta(minutes=1)
# The largest change of a UTC offset that the DST handling below looks across (real ones are <= 2 h).
_SHIFT = timedelta(hours=3)
_SEARCH_LIMIT = 20_000  # matches one backward search may look at (a guard, not a real bound)


class CronError(ValueError):
    """A cron expression that cannot be used; the message says what is wrong."""


def parse_cron(expression: str) -> str:
    """The expression as 6 fields (seconds first); raises :class:`CronError` if it is not usable."""
    text = expression.strip()
    text = ALIASES.get(text.lower(), text)
    if text.startswith("@"):
        raise CronError(f"unknown alias {text!r} (known: {', '.join(ALIASES)})")
    fields = text.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    elif len(fields) != 6:
        raise CronError(f"{expression!r}: expected 5 fields (minute hour day month weekday), 6 with seconds "
                        "first, or an alias such as @daily")
    normalized = " ".join(fields)
    try:
        next(CronSim(normalized, datetime(2000, 1, 1)))
    except CronSimError as exc:
        raise CronError(f"{expression!r}: {str(exc).lower() or 'invalid'}") from None
    except StopIteration:
        raise CronError(f"{expression!r}: never matches") from None
    return normalized


def zone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA time zone (None if it is)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (an IANA name such as UTC or Europe/Berlin)"
    return None


def iso_ms(ms: int) -> str:
    """``ms`` (since the epoch) as RFC 3339 UTC with milliseconds, exactly (no float rounding)."""
    seconds, millis = divmod(ms, 1000)
    return f"{datetime.fromtimestamp(seconds, UTC).strftime('%Y-%m-%dT%H:%M:%S')}.{millis:03d}Z"


def jitter_ms(name: str, slot: int, jitter: int) -> int:
    """The deterministic delay (0..jitter ms) of ``slot`` for schedule ``name``."""
    if jitter <= 0:
        return 0
    digest = hashlib.sha256(f"{name}\0{slot}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (jitter + 1)


class Timing:
    """The slots of one schedule. Build it with :meth:`of`."""

    def __init__(self, name: str, jitter: int) -> None:
        self.name = name
        self.jitter = jitter  # ms

    @staticmethod
    def of(name: str, *, cron: str | None, every: float | None, timezone: str = "UTC",
           jitter: float = 0.0) -> Timing:
        """The timing of a definition. Raises :class:`CronError` or ValueError for bad fields (the
        definition's checks report them before this is ever called)."""
        jitter_ms = round(jitter * 1000)
        if every is not None:
            return EveryTiming(name, jitter_ms, round(every * 1000))
        if cron is None:
            raise ValueError("a schedule needs cron or every")
        return CronTiming(name, jitter_ms, parse_cron(cron), ZoneInfo(timezone))

    def iter_after(self, ms: int) -> Iterator[int]:
        """The slots strictly after ``ms``, in increasing order (finite only for a cron with no match)."""
        raise NotImplementedError

    def prev_before(self, ms: int) -> int | None:
        """The newest slot strictly before ``ms`` (None if there is none)."""
        raise NotImplementedError

    def next_after(self, ms: int) -> int:
        """The first slot strictly after ``ms``, or :data:`NEVER`."""
        return next(self.iter_after(ms), NEVER)

    def due(self, slot: int) -> int:
        """When ``slot`` may fire: the slot plus its jitter."""
        return slot if slot >= NEVER else slot + jitter_ms(self.name, slot, self.jitter)

    def first_due_after(self, now: int) -> int:
        """The first slot whose due time is after ``now`` (the slot, not its due time)."""
        for slot in self.iter_after(now - self.jitter - 1):
            if self.due(slot) > now:
                return slot
        return NEVER

    def upcoming(self, after: int, count: int) -> list[int]:
        """The first ``count`` slots strictly after ``after``."""
        slots: list[int] = []
        for slot in self.iter_after(after):
            slots.append(slot)
            if len(slots) == count:
                break
        return slots


class EveryTiming(Timing):
    """``every: N``: the multiples of N seconds since the epoch."""

    def __init__(self, name: str, jitter: int, period: int) -> None:
        super().__init__(name, jitter)
        self.period = max(1, period)

    def iter_after(self, ms: int) -> Iterator[int]:
        slot = (ms // self.period + 1) * self.period
        while True:
            yield slot
            slot += self.period

    def prev_before(self, ms: int) -> int | None:
        slot = ((ms - 1) // self.period) * self.period
        return slot if slot >= 0 else None


class CronTiming(Timing):
    """A cron expression in a time zone, with Debian cron's DST rules (see the module docstring)."""

    def __init__(self, name: str, jitter: int, expression: str, zone: ZoneInfo) -> None:
        super().__init__(name, jitter)
        self.expression = expression
        self.zone = zone
        fields = expression.split()
        # Fixed-time expressions are matched on the wall clock; the others on elapsed time.
        self.wall_clock = (str(zone) != "UTC" and not fields[1].startswith("*")
                           and not fields[2].startswith("*"))

    def _aware(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, self.zone)

    def iter_after(self, ms: int) -> Iterator[int]:
        start = self._aware(ms)
        if not self.wall_clock:
            for moment in _matches(self.expression, start):
                yield _ms(moment)
            return
        last = ms
        for wall in _matches(self.expression, start.replace(tzinfo=None)):
            instant = _ms(wall_to_instant(wall, self.zone))
            # A wall time that fell back before `ms`, or a gap time rolled onto a slot already given.
            if instant > last:
                last = instant
                yield instant

    def prev_before(self, ms: int) -> int | None:
        start = self._aware(ms)
        if not self.wall_clock:
            moment = next(CronSim(self.expression, start, reverse=True), None)
            return None if moment is None else _ms(moment)
        # Wall times map onto instants almost in order: only around an offset change can a later wall
        # time give an earlier instant, by at most the size of the change. So start that far ahead,
        # and once a candidate is found, look that far further back for a later instant.
        best: int | None = None
        best_wall: datetime | None = None
        walls = CronSim(self.expression, (start + _SHIFT).replace(tzinfo=None), reverse=True)
        for seen, wall in enumerate(walls):
            if (best_wall is not None and wall < best_wall - _SHIFT) or seen >= _SEARCH_LIMIT:
                break
            instant = _ms(wall_to_instant(wall, self.zone))
            if instant < ms and (best is None or instant > best) and self._is_slot(wall, instant):
                best, best_wall = instant, wall
        return best

    def _is_slot(self, wall: datetime, instant: int) -> bool:
        # iter_after drops a gap time whose instant repeats the previous match's: the newest slot before
        # `instant` must then be that same instant.
        previous = _previous_wall_instant(self.expression, wall, self.zone)
        return previous is None or previous < instant


def _previous_wall_instant(expression: str, wall: datetime, zone: tzinfo) -> int | None:
    previous = next(CronSim(expression, wall, reverse=True), None)
    return None if previous is None else _ms(wall_to_instant(previous, zone))


def wall_to_instant(wall: datetime, zone: tzinfo) -> datetime:
    """A naive wall-clock time in ``zone`` as an aware datetime: a time that happens twice is its first
    occurrence; a time in a spring-forward gap moves on by whole minutes until it exists (02:30 -> 03:00)."""
    moment = wall.replace(tzinfo=zone, fold=0)
    while _imaginary(moment):
        wall += _MINUTE
        moment = wall.replace(tzinfo=zone, fold=0)
    return moment


def _imaginary(moment: datetime) -> bool:
    return moment != moment.astimezone(UTC).astimezone(moment.tzinfo)


def _matches(expression: str, start: datetime) -> Iterator[datetime]:
    yield from CronSim(expression, start)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)

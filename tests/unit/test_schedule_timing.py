"""Schedule slots: cron (5 and 6 fields, aliases), time zones and DST, intervals, jitter.

Every test passes fixed instants ("now") to the pure timing functions: nothing waits for a clock.
"""

from __future__ import annotations

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from secauto.schedules.timing import CronError, Timing, iso_ms, jitter_ms, parse_cron, zone_problem

BERLIN = ZoneInfo("Europe/Berlin")


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, tz: ZoneInfo = BERLIN,
       fold: int = 0) -> int:
    return round(datetime(year, month, day, hour, minute, second, tzinfo=tz, fold=fold).timestamp() * 1000)


def local(slot: int) -> str:
    """A slot as Berlin wall time with its offset, e.g. 2026-03-29T03:00:00+02:00."""
    return datetime.fromtimestamp(slot / 1000, BERLIN).isoformat()


def slots_between(timing: Timing, start: int, end: int) -> list[int]:
    found = []
    for slot in timing.iter_after(start):
        if slot >= end:
            return found
        found.append(slot)
    return found


def berlin(cron: str) -> Timing:
    return Timing.of("sweep", cron=cron, every=None, timezone="Europe/Berlin")


# -- DST: 02:30 Europe/Berlin on both transition days of 2026 ----------------------------------------

@pytest.mark.parametrize("cron", ["30 2 * * *", "0 30 2 * * *"])
def test_0230_berlin_runs_once_on_the_spring_forward_day(cron: str) -> None:
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist. It fires once, right after the gap.
    day = slots_between(berlin(cron), ms(2026, 3, 29), ms(2026, 3, 30))
    assert [local(slot) for slot in day] == ["2026-03-29T03:00:00+02:00"]
    around = slots_between(berlin(cron), ms(2026, 3, 27), ms(2026, 3, 31))
    assert [local(slot) for slot in around] == ["2026-03-27T02:30:00+01:00", "2026-03-28T02:30:00+01:00",
                                                 "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


@pytest.mark.parametrize("cron", ["30 2 * * *", "0 30 2 * * *"])
def test_0230_berlin_runs_once_on_the_fall_back_day(cron: str) -> None:
    # 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice. It fires at the first one only.
    day = slots_between(berlin(cron), ms(2026, 10, 25), ms(2026, 10, 26))
    assert [local(slot) for slot in day] == ["2026-10-25T02:30:00+02:00"]


def test_fall_back_once_even_when_planning_from_inside_the_repeated_hour() -> None:
    timing = berlin("45 2 * * *")
    second_pass = ms(2026, 10, 25, 2, 40, fold=1)  # 02:40 CET, after 02:45 CEST already happened
    assert local(timing.next_after(second_pass)) == "2026-10-26T02:45:00+01:00"
    assert local(timing.next_after(ms(2026, 10, 25, 2, 40))) == "2026-10-25T02:45:00+02:00"
    assert local(timing.prev_before(second_pass) or 0) == "2026-10-25T02:45:00+02:00"


def test_wildcard_expressions_follow_elapsed_time_through_dst() -> None:
    quarter = berlin("*/15 * * * *")
    spring = slots_between(quarter, ms(2026, 3, 29, 1, 30), ms(2026, 3, 29, 3, 31))
    assert [local(slot)[11:] for slot in spring] == ["01:45:00+01:00", "03:00:00+02:00", "03:15:00+02:00",
                                                      "03:30:00+02:00"]
    autumn = slots_between(quarter, ms(2026, 10, 25, 1, 50), ms(2026, 10, 25, 3, 1))
    # The repeated hour's slots fire in both passes: every 15 minutes of elapsed time, no pause.
    assert len(autumn) == 9 and all(b - a == 15 * 60_000 for a, b in itertools.pairwise(autumn))
    hourly = slots_between(berlin("0 * * * *"), ms(2026, 10, 25, 1), ms(2026, 10, 25, 4))
    assert [local(slot)[11:] for slot in hourly] == ["02:00:00+02:00", "02:00:00+01:00", "03:00:00+01:00"]


def test_a_gap_slot_that_lands_on_a_real_slot_fires_once() -> None:
    both = slots_between(berlin("0 2,3 * * *"), ms(2026, 3, 29), ms(2026, 3, 30))
    assert [local(slot)[11:] for slot in both] == ["03:00:00+02:00"]


@pytest.mark.parametrize("cron", ["30 2 * * *", "*/15 * * * *", "0 2,3 * * *", "45 2 * * *", "*/20 30 2 * * *",
                                  "0 9 * * MON-FRI", "@daily"])
def test_prev_before_walks_back_over_exactly_the_slots_iter_after_gives(cron: str) -> None:
    for start in (ms(2026, 3, 27), ms(2026, 10, 23)):
        timing = berlin(cron)
        slots = slots_between(timing, start, start + 4 * 86_400_000)
        assert slots
        for previous, slot in itertools.pairwise(slots):
            assert timing.prev_before(slot) == previous, (cron, local(slot))
            assert timing.prev_before(slot - 1) == previous if slot - 1 > previous else True


# -- cron syntax -------------------------------------------------------------------------------------

def test_five_and_six_fields_and_aliases() -> None:
    utc = Timing.of("t", cron="*/20 * * * * *", every=None)
    start = ms(2026, 1, 1, tz=ZoneInfo("UTC"))
    assert [slot - start for slot in utc.upcoming(start, 3)] == [20_000, 40_000, 60_000]
    assert parse_cron("@hourly") == "0 0 * * * *" and parse_cron("@weekly") == "0 0 0 * * 0"
    daily = Timing.of("t", cron="@daily", every=None, timezone="Europe/Berlin")
    assert local(daily.next_after(ms(2026, 6, 1, 12))) == "2026-06-02T00:00:00+02:00"
    monday = Timing.of("t", cron="0 9 * * mon#1", every=None)
    assert iso_ms(monday.next_after(ms(2026, 6, 2, tz=ZoneInfo("UTC")))) == "2026-07-06T09:00:00.000Z"


@pytest.mark.parametrize(("cron", "message"), [
    ("61 * * * *", "bad minute"),
    ("* 24 * * *", "bad hour"),
    ("* * * *", "expected 5 fields"),
    ("* * * * * * *", "expected 5 fields"),
    ("0 0 31 2 *", "bad day-of-month"),
    ("@fortnightly", "unknown alias"),
    ("*/0 * * * *", "bad minute"),
])
def test_bad_cron_says_what_is_wrong(cron: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(cron)


def test_time_zones_are_iana_names() -> None:
    assert zone_problem("Europe/Berlin") is None and zone_problem("UTC") is None
    assert "unknown time zone" in (zone_problem("Mars/Olympus") or "")
    assert "unknown time zone" in (zone_problem("../etc/passwd") or "")


# -- every and jitter --------------------------------------------------------------------------------

def test_every_is_elapsed_time_on_multiples_of_the_interval() -> None:
    every = Timing.of("feed", cron=None, every=900, timezone="Europe/Berlin")
    # 15-minute slots straight through the fall-back night, the repeated hour included: 12 in 3 hours
    start = ms(2026, 10, 25, 1, 50)
    slots = slots_between(every, start, start + 3 * 3_600_000)
    assert all(slot % 900_000 == 0 for slot in slots) and len(slots) == 12
    assert all(b - a == 900_000 for a, b in itertools.pairwise(slots))
    assert every.prev_before(slots[3]) == slots[2] and every.next_after(slots[3]) == slots[4]
    half = Timing.of("fast", cron=None, every=1.5)
    assert half.upcoming(0, 3) == [1500, 3000, 4500]


def test_jitter_is_deterministic_per_schedule_and_slot() -> None:
    one = Timing.of("intel", cron=None, every=900, jitter=60)
    again = Timing.of("intel", cron=None, every=900, jitter=60)  # another node computes the same
    other = Timing.of("other", cron=None, every=900, jitter=60)
    slots = one.upcoming(ms(2026, 5, 1, tz=ZoneInfo("UTC")), 50)
    delays = [one.due(slot) - slot for slot in slots]
    assert delays == [again.due(slot) - slot for slot in slots]
    assert all(0 <= delay <= 60_000 for delay in delays) and len(set(delays)) > 40
    assert delays != [other.due(slot) - slot for slot in slots]
    assert jitter_ms("intel", slots[0], 0) == 0


def test_first_due_after_accounts_for_jitter() -> None:
    timing = Timing.of("j", cron=None, every=10, jitter=9)
    for slot in timing.upcoming(0, 20):
        due = timing.due(slot)
        assert timing.first_due_after(due - 1) == slot
        assert timing.first_due_after(due) > slot


def test_iso_ms_is_exact() -> None:
    assert iso_ms(1_767_226_500_123) == "2026-01-01T00:15:00.123Z"
    assert iso_ms(ms(2026, 3, 29, 1, tz=ZoneInfo("UTC")) + 7) == "2026-03-29T01:00:00.007Z"

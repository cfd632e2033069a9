"""What the leader does with due slots: catch-up policies, pause, and the bound on work after a long
outage. Pure: the Redis time is a parameter."""

from __future__ import annotations

import pytest

from secauto.schedules.plan import CATCHUP_ALL_MAX, FORWARD_LIMIT, Plan, plan_pass
from secauto.schedules.timing import Timing

MINUTE = 60_000
HOUR = 60 * MINUTE
GRACE = 5_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % HOUR  # a whole hour


def every_minute() -> Timing:
    return Timing.of("m", cron=None, every=60)


def plan(timing: Timing, pending: int, now: int, *, catchup: str = "latest", window: int = HOUR,
         paused: bool = False) -> Plan:
    return plan_pass(timing, pending=pending, now=now, paused=paused, catchup=catchup,  # type: ignore[arg-type]
                     window_ms=window, grace_ms=GRACE)


def intents(result: Plan) -> list[tuple[int, str]]:
    return [((entry.slot - T0) // MINUTE, entry.intent) for entry in result.entries]


@pytest.mark.parametrize("catchup", ["latest", "none", "all"])
def test_one_due_slot_on_time_fires_whatever_the_policy(catchup: str) -> None:
    result = plan(every_minute(), T0, T0 + 30, catchup=catchup)
    assert intents(result) == [(0, "fire")] and result.next_slot == T0 + MINUTE


def test_latest_fires_the_newest_missed_slot_and_records_the_others() -> None:
    result = plan(every_minute(), T0, T0 + 5 * MINUTE + 20_000)  # no node ran for 5 minutes
    assert intents(result) == [(0, "missed"), (1, "missed"), (2, "missed"), (3, "missed"), (4, "missed"),
                               (5, "fire")]
    assert result.next_slot == T0 + 6 * MINUTE


def test_latest_outside_the_window_fires_nothing() -> None:
    result = plan(every_minute(), T0, T0 + 5 * MINUTE + 20_000, window=10_000)  # the newest slot is 20 s old
    assert [intent for _, intent in intents(result)] == ["missed"] * 6


def test_none_fires_only_a_slot_that_is_on_time() -> None:
    late = plan(every_minute(), T0, T0 + 3 * MINUTE + 20_000, catchup="none")
    assert [intent for _, intent in intents(late)] == ["missed"] * 4
    on_time = plan(every_minute(), T0, T0 + 3 * MINUTE + 2_000, catchup="none")  # newest is 2 s late
    assert [intent for _, intent in intents(on_time)] == ["missed", "missed", "missed", "fire"]


def test_all_fires_each_missed_slot_inside_the_window_capped() -> None:
    few = plan(every_minute(), T0, T0 + 4 * MINUTE + 1_000, catchup="all")
    assert [intent for _, intent in intents(few)] == ["fire"] * 5
    many = plan(every_minute(), T0, T0 + 20 * MINUTE + 1_000, catchup="all")
    fired = [slot for slot, intent in intents(many) if intent == "fire"]
    assert fired == list(range(21 - CATCHUP_ALL_MAX, 21))  # the newest ten
    assert [intent for _, intent in intents(many)].count("missed") == 21 - CATCHUP_ALL_MAX
    windowed = plan(every_minute(), T0, T0 + 4 * MINUTE + 1_000, catchup="all", window=2 * MINUTE + 1_000)
    assert [intent for _, intent in intents(windowed)] == ["missed", "missed", "fire", "fire", "fire"]


@pytest.mark.parametrize("catchup", ["latest", "none", "all"])
def test_a_long_outage_is_bounded_work_and_no_storm(catchup: str) -> None:
    every_second = Timing.of("s", cron="* * * * * *", every=None)
    now = T0 + 30 * 86_400_000 + 400  # a month without any node: 2.6 million missed slots
    result = plan(every_second, T0, now, catchup=catchup)
    assert len(result.entries) <= CATCHUP_ALL_MAX + 1
    first = result.entries[0]
    assert first.slot == T0 and first.intent == "missed" and first.until is not None
    listed = [entry.slot for entry in result.entries[1:]]
    assert first.until < listed[0] and listed == sorted(listed) and listed[-1] == now - 400
    assert result.next_slot == now - 400 + 1000
    fires = [entry for entry in result.entries if entry.intent == "fire"]
    assert len(fires) == {"latest": 1, "none": 1, "all": CATCHUP_ALL_MAX}[catchup]  # the newest is on time


def test_a_backlog_just_past_the_forward_limit_keeps_every_slot_accounted_for() -> None:
    timing = every_minute()
    now = T0 + (FORWARD_LIMIT + 3) * MINUTE + 1_000
    result = plan(timing, T0, now)
    first = result.entries[0]
    covered = (first.until - first.slot) // MINUTE + 1 if first.until else 1
    assert covered + len(result.entries) - 1 == FORWARD_LIMIT + 4  # nothing skipped, nothing twice
    assert result.entries[-1].intent == "fire" and result.entries[-1].slot == T0 + (FORWARD_LIMIT + 3) * MINUTE


def test_paused_records_every_due_slot_as_paused() -> None:
    result = plan(every_minute(), T0, T0 + 2 * MINUTE + 1, paused=True)
    assert intents(result) == [(0, "paused"), (1, "paused"), (2, "paused")]
    long = plan(every_minute(), T0, T0 + 5 * HOUR, paused=True)
    assert {entry.intent for entry in long.entries} == {"paused"} and long.entries[0].until is not None


def test_jitter_moves_the_due_time_not_the_slot() -> None:
    timing = Timing.of("j", cron=None, every=60, jitter=30)
    due = timing.due(T0)
    assert intents(plan(timing, T0, due)) == [(0, "fire")]
    assert plan(timing, T0, due).next_slot == T0 + MINUTE

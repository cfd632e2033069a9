"""What the leader does with a schedule whose pending slot is due: which due slots fire, which are
recorded ``missed`` or ``paused``, and which slot is pending next. Pure: given the Redis time.

A slot is *due* once its due time (slot + jitter) has passed. Usually one slot is due and it fires. When
several are due (no node ran for a while, or the leader changed), the newest is handled by ``catchup``:

- ``latest`` (default): the newest due slot fires if it is inside ``catchup_window`` (or on time); every
  older one is recorded ``missed``.
- ``none``: only a slot that is on time fires; the others are ``missed``.
- ``all``: every due slot inside ``catchup_window`` fires, oldest first, but at most
  :data:`CATCHUP_ALL_MAX` (the newest ones) per pass; older ones are ``missed``.

*On time* means at most ``grace`` late: a leader failover (a few seconds up to ``election_timeout``) is
not an outage. Work per pass is bounded whatever the outage: at most :data:`FORWARD_LIMIT` slots are
looked at one by one; past that the schedule skips ahead to the first slot that is not due yet, the
newest due slots are handled one by one (at most ``CATCHUP_ALL_MAX``) and everything older is recorded as
one ``missed`` entry covering the range (``slot`` .. ``until``). A paused schedule records its due slots
as ``paused`` the same way and fires nothing.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from secauto.schedules.spec import Catchup
from secauto.schedules.timing import NEVER, Timing

FORWARD_LIMIT = 25
CATCHUP_ALL_MAX = 10

Intent = Literal["fire", "missed", "paused"]


class SlotEntry(msgspec.Struct, frozen=True):
    """One slot (or, with ``until``, a range of slots) and what to do with it."""

    slot: int
    intent: Intent
    until: int | None = None  # the last slot of a collapsed range


class Plan(msgspec.Struct, frozen=True):
    entries: list[SlotEntry]  # oldest first
    next_slot: int  # the slot pending after this pass (NEVER: no more slots)


def plan_pass(timing: Timing, *, pending: int, now: int, paused: bool, catchup: Catchup, window_ms: int,
              grace_ms: int) -> Plan:
    """Handle the due slots from ``pending`` (which must be due) up to ``now`` (Redis time, ms)."""
    due: list[int] = [pending]
    next_slot = NEVER
    backlog = False
    for slot in timing.iter_after(pending):
        if timing.due(slot) > now:
            next_slot = slot
            break
        if len(due) == FORWARD_LIMIT:
            backlog = True
            break
        due.append(slot)
    collapsed: SlotEntry | None = None
    if backlog:
        next_slot = timing.first_due_after(now)
        newest: list[int] = []
        cursor = next_slot
        while len(newest) < CATCHUP_ALL_MAX:
            previous = timing.prev_before(cursor)
            if previous is None or previous <= pending:
                break
            newest.append(previous)
            cursor = previous
        newest.reverse()
        oldest_listed = newest[0] if newest else next_slot
        until = timing.prev_before(oldest_listed)
        collapsed = SlotEntry(pending, "paused" if paused else "missed",
                              until if until is not None and until > pending else None)
        due = newest
    entries = [collapsed] if collapsed is not None else []
    if paused:
        entries += [SlotEntry(slot, "paused") for slot in due]
        return Plan(entries, next_slot)
    intents: list[Intent] = []
    for index, slot in enumerate(due):
        late = now - timing.due(slot)
        inside = now - slot <= window_ms
        if index == len(due) - 1:
            fire = late <= grace_ms or (catchup != "none" and inside)
        else:
            fire = catchup == "all" and inside
        intents.append("fire" if fire else "missed")
    fired = [index for index, intent in enumerate(intents) if intent == "fire"]
    for index in fired[:-CATCHUP_ALL_MAX] if len(fired) > CATCHUP_ALL_MAX else ():
        intents[index] = "missed"
    entries += [SlotEntry(slot, intent) for slot, intent in zip(due, intents, strict=True)]
    return Plan(entries, next_slot)

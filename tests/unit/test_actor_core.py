"""Unit tests of the asyncio actor runtime (actors/core.py). Every wait is bounded."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import pytest
from loguru import logger

from actors import core
from actors.core import (
    Actor,
    ActorDeadError,
    ActorRef,
    ActorSystem,
    AskTimeoutError,
    MailboxFullError,
    NodeFatalError,
    SupervisionPolicy,
    backoff_delay,
)

pytestmark = pytest.mark.timeout(10)

FAST = SupervisionPolicy(max_restarts=3, window=10.0, backoff_initial=0.001, backoff_max=0.01)


# ---- messages --------------------------------------------------------------------------------------


class Add(msgspec.Struct):
    n: int


class Get(msgspec.Struct):
    pass


class Echo(msgspec.Struct):
    text: str


class Total(msgspec.Struct):
    value: int


class Fail(msgspec.Struct):
    reason: str = "nope"


class Boom(msgspec.Struct):
    pass


class Block(msgspec.Struct):
    pass


class Tick(msgspec.Struct):
    key: str = "t"


# ---- helpers ---------------------------------------------------------------------------------------


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``within`` seconds."""
    step = 0.002
    for _ in range(int(within / step)):
        if predicate():
            return
        await asyncio.sleep(step)
    assert predicate(), f"condition still false after {within}s"


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    sys_ = ActorSystem("test", policy=FAST)
    yield sys_
    await sys_.stop(timeout=2.0)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    records: list[Any] = []
    handler = logger.add(lambda m: records.append(m.record), level="DEBUG", format="{message}")
    yield records
    logger.remove(handler)


def messages(records: list[dict[str, Any]], level: str, text: str) -> list[str]:
    return [r["message"] for r in records if r["level"].name == level and text in r["message"]]


class Counter(Actor):
    """Counts Add messages; answers Get and Echo; Fail fails the request; Boom crashes; Block waits."""

    def __init__(self) -> None:
        self.total = 0
        self.starts = 0
        self.stops = 0
        self.handled: list[Any] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def on_start(self) -> None:
        self.starts += 1

    async def on_stop(self) -> None:
        self.stops += 1

    async def receive(self, message: Any) -> Any:
        self.handled.append(message)
        match message:
            case Add(n=n):
                self.total += n
            case Get():
                return Total(self.total)
            case Echo(text=text):
                return Echo(text.upper())
            case Fail(reason=reason):
                raise ValueError(reason)
            case Boom():
                raise RuntimeError("boom")
            case Tick():
                pass
            case Block():
                self.entered.set()
                await self.gate.wait()
                return "unblocked"
            case _:
                raise TypeError(f"unexpected {message!r}")
        return None


# ---- messaging -------------------------------------------------------------------------------------


async def test_tell_ask_round_trip_with_structs(system: ActorSystem) -> None:
    ref = await system.spawn(Counter())
    assert ref.name == "Counter" and system.get("Counter") is ref and ref.is_alive
    for n in (1, 2, 3):
        ref.tell(Add(n))
    assert await ref.ask(Get()) == Total(6)
    assert await ref.ask(Echo("hi")) == Echo("HI")


async def test_messages_are_handled_in_order_one_at_a_time(system: ActorSystem) -> None:
    class Tracker(Actor):
        def __init__(self) -> None:
            self.active = 0
            self.max_active = 0
            self.seen: list[int] = []

        async def receive(self, message: Any) -> Any:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            await asyncio.sleep(0)
            self.seen.append(message.n)
            self.active -= 1
            return None

    actor = Tracker()
    ref = await system.spawn(actor, name="tracker")
    for n in range(20):
        ref.tell(Add(n))
    await eventually(lambda: len(actor.seen) == 20)
    assert actor.seen == list(range(20))
    assert actor.max_active == 1


async def test_ask_timeout(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    with pytest.raises(AskTimeoutError) as info:
        await ref.ask(Block(), timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    # The message is still handled; the late answer is dropped and the actor keeps working.
    actor.gate.set()
    assert await ref.ask(Get(), timeout=1.0) == Total(0)
    assert ref.is_alive and actor.starts == 1


async def test_ask_gets_receive_exception_without_crashing(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    with pytest.raises(ValueError, match="bad input"):
        await ref.ask(Fail("bad input"))
    assert ref.is_alive
    assert await ref.ask(Get()) == Total(0)
    assert (actor.starts, actor.stops) == (1, 0)


async def test_timeout_error_raised_by_receive_is_not_an_ask_timeout(system: ActorSystem) -> None:
    class Slow(Actor):
        async def receive(self, message: Any) -> Any:
            raise TimeoutError("redis timed out")

    ref = await system.spawn(Slow())
    with pytest.raises(TimeoutError, match="redis timed out") as info:
        await ref.ask(Get(), timeout=1.0)
    assert not isinstance(info.value, AskTimeoutError)


async def test_bounded_mailbox_raises_mailbox_full(system: ActorSystem) -> None:
    class Small(Counter):
        mailbox_size = 2

    actor = Small()
    ref = await system.spawn(actor)
    ref.tell(Block())
    await asyncio.wait_for(actor.entered.wait(), 1.0)  # Block is in progress, the mailbox is empty
    ref.tell(Add(1))
    ref.tell(Add(2))
    with pytest.raises(MailboxFullError):
        ref.tell(Add(3))
    with pytest.raises(MailboxFullError):
        await ref.ask(Get())
    actor.gate.set()
    await eventually(lambda: actor.total == 3)  # the queued tells are handled once Block returns
    assert await ref.ask(Get(), timeout=1.0) == Total(3)


async def test_ask_caller_cancellation_does_not_break_actor(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    asker = asyncio.create_task(ref.ask(Block(), timeout=5.0))
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    asker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asker
    actor.gate.set()
    assert await ref.ask(Echo("still here"), timeout=1.0) == Echo("STILL HERE")
    assert (actor.starts, actor.stops) == (1, 0)


async def test_actor_cannot_ask_itself(system: ActorSystem) -> None:
    class Narcissus(Actor):
        async def receive(self, message: Any) -> Any:
            return await self.ref.ask(Get())

    ref = await system.spawn(Narcissus())
    with pytest.raises(RuntimeError, match="cannot ask itself"):
        await ref.ask(Echo("x"), timeout=1.0)


# ---- spawn and names -------------------------------------------------------------------------------


async def test_duplicate_name_and_double_spawn_rejected(system: ActorSystem) -> None:
    actor = Counter()
    await system.spawn(actor, name="one")
    with pytest.raises(ValueError, match="already exists"):
        await system.spawn(Counter(), name="one")
    with pytest.raises(ValueError, match="already spawned"):
        await system.spawn(actor, name="two")
    with pytest.raises(KeyError):
        system.get("two")


async def test_spawn_failing_on_start_raises_and_cleans_up(system: ActorSystem, logs: list[Any]) -> None:
    ticks: list[Any] = []

    class Broken(Actor):
        stopped = False

        async def on_start(self) -> None:
            self.start_timer("t", 0.001, Tick(), initial_delay=0.0)
            self.task = self.run_task(asyncio.sleep(30), name="sleeper")
            self.ref.tell(Add(1))
            self.pending = asyncio.create_task(self.ref.ask(Get()))
            await asyncio.sleep(0.01)
            raise ConnectionError("redis is down")

        async def on_stop(self) -> None:
            self.stopped = True

        async def receive(self, message: Any) -> Any:
            ticks.append(message)

    actor = Broken()
    with pytest.raises(ConnectionError, match="redis is down"):
        await system.spawn(actor, name="broken")
    with pytest.raises(KeyError):
        system.get("broken")
    assert not actor.ref.is_alive
    assert actor.task.cancelled()
    assert not actor.stopped  # on_stop is never called after an on_start that raised
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(actor.pending, 1.0)
    await asyncio.sleep(0.02)
    assert ticks == []  # nothing was ever handled: the timer and the queued messages died with it
    # The name is free again and the instance may be spawned again.
    ref = await system.spawn(Counter(), name="broken")
    assert ref.is_alive


async def test_spawn_refused_after_system_stop() -> None:
    sys_ = ActorSystem()
    await sys_.stop()
    with pytest.raises(RuntimeError, match="stopping"):
        await sys_.spawn(Counter())


def test_timer_and_task_need_a_spawned_actor() -> None:
    actor = Counter()
    with pytest.raises(RuntimeError, match="not spawned"):
        actor.start_timer("t", 1.0, Tick())

    async def nothing() -> None:
        return None

    coro = nothing()
    with pytest.raises(RuntimeError, match="not spawned"):
        actor.run_task(coro, name="x")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # closed, so no "never awaited" warning


# ---- timers ----------------------------------------------------------------------------------------


class Ticker(Actor):
    def __init__(self, *, interval: float = 0.005, repeat: bool = True, initial: float | None = None) -> None:
        self.interval = interval
        self.repeat = repeat
        self.initial = initial
        self.ticks = 0

    async def on_start(self) -> None:
        self.start_timer("tick", self.interval, Tick(), repeat=self.repeat, initial_delay=self.initial)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            self.ticks += 1
        elif isinstance(message, Echo) and message.text == "cancel":
            self.cancel_timer("tick")
            return self.ticks
        return None


async def test_repeating_timer(system: ActorSystem) -> None:
    actor = Ticker(interval=0.005)
    await system.spawn(actor)
    await eventually(lambda: actor.ticks >= 3)


async def test_one_shot_timer_with_initial_delay(system: ActorSystem) -> None:
    actor = Ticker(interval=10.0, repeat=False, initial=0.0)
    await system.spawn(actor)
    await eventually(lambda: actor.ticks == 1)
    await asyncio.sleep(0.05)
    assert actor.ticks == 1
    assert actor._actor_cell is not None and actor._actor_cell.timers == {}


async def test_cancel_timer_stops_deliveries(system: ActorSystem) -> None:
    actor = Ticker(interval=0.005)
    ref = await system.spawn(actor)
    await eventually(lambda: actor.ticks >= 1)
    seen = await ref.ask(Echo("cancel"))
    await asyncio.sleep(0.05)
    assert actor.ticks == seen
    actor.cancel_timer("unknown")  # no-op


async def test_restarting_a_timer_key_replaces_it(system: ActorSystem) -> None:
    actor = Ticker(interval=0.005)
    await system.spawn(actor)
    actor.start_timer("tick", 60.0, Tick())  # replaces the fast timer
    assert actor._actor_cell is not None and len(actor._actor_cell.timers) == 1
    await asyncio.sleep(0.02)
    before = actor.ticks
    await asyncio.sleep(0.05)
    assert actor.ticks == before


async def test_timers_are_cancelled_on_stop(system: ActorSystem) -> None:
    actor = Ticker(interval=0.005)
    ref = await system.spawn(actor)
    await eventually(lambda: actor.ticks >= 1)
    cell = actor._actor_cell
    assert cell is not None
    timer = cell.timers["tick"].task
    await system.stop_actor(ref)
    assert timer.done() and cell.timers == {}
    ticks = actor.ticks
    await asyncio.sleep(0.03)
    assert actor.ticks == ticks


async def test_cancel_timer_drops_ticks_already_queued(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    ref.tell(Block())
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    actor.start_timer("tick", 0.002, Tick())
    cell = actor._actor_cell
    assert cell is not None
    await eventually(lambda: len(cell.mailbox) >= 3)  # ticks pile up behind Block
    actor.cancel_timer("tick")
    actor.gate.set()
    assert await ref.ask(Get(), timeout=1.0) == Total(0)
    assert not any(isinstance(m, Tick) for m in actor.handled)


async def test_one_shot_tick_queued_behind_a_slow_message_is_still_handled(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    ref.tell(Block())
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    actor.start_timer("once", 0.0, Tick(), repeat=False, initial_delay=0.0)
    cell = actor._actor_cell
    assert cell is not None
    await eventually(lambda: len(cell.mailbox) == 1)
    actor.gate.set()
    await ref.ask(Get(), timeout=1.0)
    assert [m for m in actor.handled if isinstance(m, Tick)] == [Tick()]
    assert cell.timers == {}


async def test_restart_drops_ticks_of_the_previous_incarnation(system: ActorSystem) -> None:
    class CrashAfterBlock(Counter):
        async def receive(self, message: Any) -> Any:
            result = await super().receive(message)
            if isinstance(message, Block):
                raise RuntimeError("crash after a slow message")
            return result

    actor = CrashAfterBlock()
    ref = await system.spawn(actor)
    ref.tell(Block())
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    actor.start_timer("tick", 0.002, Tick())  # the restarted actor does not start it again
    cell = actor._actor_cell
    assert cell is not None
    await eventually(lambda: len(cell.mailbox) >= 3)
    actor.gate.set()
    assert await ref.ask(Get(), timeout=2.0) == Total(0)
    assert actor.starts == 2
    assert not any(isinstance(m, Tick) for m in actor.handled)


async def test_timer_validation(system: ActorSystem) -> None:
    actor = Counter()
    await system.spawn(actor)
    with pytest.raises(ValueError):
        actor.start_timer("t", 0.0, Tick())
    with pytest.raises(ValueError):
        actor.start_timer("t", 1.0, Tick(), initial_delay=-1.0)


async def test_timer_tick_on_full_mailbox_is_skipped_with_warning(
    system: ActorSystem, logs: list[dict[str, Any]]
) -> None:
    class Tiny(Counter):
        mailbox_size = 1

    actor = Tiny()
    ref = await system.spawn(actor)
    ref.tell(Block())
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    actor.start_timer("tick", 0.002, Tick())
    await eventually(lambda: bool(messages(logs, "WARNING", "skipped a tick of timer 'tick'")))
    actor.cancel_timer("tick")
    actor.gate.set()
    assert ref.is_alive


# ---- tracked tasks ---------------------------------------------------------------------------------


class Reader(Actor):
    """Runs a background loop; the first incarnation's loop crashes when told to."""

    def __init__(self) -> None:
        self.starts = 0
        self.stops = 0
        self.crash = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.cancelled = 0

    async def on_start(self) -> None:
        self.starts += 1
        self.task = self.run_task(self._loop(first=self.starts == 1), name="reader")

    async def on_stop(self) -> None:
        self.stops += 1

    async def _loop(self, *, first: bool) -> None:
        try:
            while True:
                await self.crash.wait()
                if first:
                    raise ConnectionError("pub/sub connection lost")
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def receive(self, message: Any) -> Any:
        return self.starts


async def test_run_task_is_cancelled_and_awaited_on_stop(system: ActorSystem) -> None:
    actor = Reader()
    ref = await system.spawn(actor)
    task = actor.task
    assert task is not None and not task.done()
    assert task.get_name() == "actor:Reader:reader"
    await system.stop_actor(ref)
    assert task.cancelled() and actor.cancelled == 1 and actor.stops == 1
    assert not ref.is_alive


async def test_task_crash_restarts_actor(system: ActorSystem, logs: list[dict[str, Any]]) -> None:
    actor = Reader()
    ref = await system.spawn(actor)
    first = actor.task
    actor.crash.set()
    await eventually(lambda: actor.starts == 2)
    assert first is not None and first.done() and isinstance(first.exception(), ConnectionError)
    assert actor.stops == 1
    assert await ref.ask(Get()) == 2
    assert actor.task is not first and actor.task is not None and not actor.task.done()
    assert messages(logs, "ERROR", "task 'actor:Reader:reader' of actor 'Reader' crashed")
    assert any(r["exception"] is not None for r in logs if "crashed" in r["message"])
    assert all(r["extra"].get("component") == "actors" for r in logs if "Reader" in r["message"])


async def test_run_task_refused_on_stopped_actor(system: ActorSystem) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    await system.stop_actor(ref)

    async def nothing() -> None:
        return None

    with pytest.raises(ActorDeadError):
        actor.run_task(nothing(), name="late")
    with pytest.raises(ActorDeadError):
        actor.start_timer("late", 1.0, Tick())


# ---- supervision -----------------------------------------------------------------------------------


def test_backoff_delay_is_exponential_and_capped() -> None:
    policy = SupervisionPolicy(backoff_initial=0.1, backoff_max=5.0)
    delays = [backoff_delay(policy, n) for n in range(8)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])
    assert backoff_delay(policy, 10_000) == 5.0  # no overflow
    with pytest.raises(ValueError):
        backoff_delay(policy, -1)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        SupervisionPolicy(max_restarts=-1)
    with pytest.raises(ValueError):
        SupervisionPolicy(window=0)
    with pytest.raises(ValueError):
        SupervisionPolicy(backoff_initial=-0.1)
    assert SupervisionPolicy() == SupervisionPolicy(5, 60.0, 0.1, 5.0)


async def test_tell_crash_restarts_same_instance_and_keeps_mailbox(
    system: ActorSystem, logs: list[dict[str, Any]]
) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    ref.tell(Add(1))
    ref.tell(Boom())
    ref.tell(Add(10))  # queued behind the crash: handled after the restart
    assert await ref.ask(Get(), timeout=2.0) == Total(11)  # same instance: state survives
    assert (actor.starts, actor.stops) == (2, 1)
    assert ref.is_alive and system.get("Counter") is ref
    crash = [r for r in logs if r["level"].name == "ERROR" and "crashed handling Boom" in r["message"]]
    assert len(crash) == 1 and crash[0]["exception"] is not None
    assert crash[0]["extra"] == {"component": "actors", "actor": "Counter"}
    assert messages(logs, "INFO", "actor 'Counter' restarted")


async def test_restart_backoff_grows_with_crashes_in_window(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[tuple[int, float]] = []

    def recording(policy: SupervisionPolicy, restart_number: int) -> float:
        delay = backoff_delay(policy, restart_number)
        computed.append((restart_number, delay))
        return delay

    monkeypatch.setattr(core, "backoff_delay", recording)
    policy = SupervisionPolicy(max_restarts=5, window=10.0, backoff_initial=0.001, backoff_max=0.004)
    actor = Counter()
    ref = await system.spawn(actor, policy=policy)
    for _ in range(4):
        ref.tell(Boom())
    assert await ref.ask(Get(), timeout=2.0) == Total(0)
    assert computed == [(0, 0.001), (1, 0.002), (2, 0.004), (3, 0.004)]
    assert (actor.starts, actor.stops) == (5, 4)


async def test_restart_waits_for_backoff(system: ActorSystem) -> None:
    policy = SupervisionPolicy(max_restarts=5, backoff_initial=0.05, backoff_max=0.05)
    actor = Counter()
    ref = await system.spawn(actor, policy=policy)
    loop = asyncio.get_running_loop()
    started = loop.time()
    ref.tell(Boom())
    await ref.ask(Get(), timeout=2.0)
    assert loop.time() - started >= 0.045  # loose lower bound only: no flaky upper bound


async def test_on_start_failure_during_restart_counts_as_crash(
    system: ActorSystem, logs: list[dict[str, Any]]
) -> None:
    class Flaky(Counter):
        async def on_start(self) -> None:
            self.starts += 1
            if self.starts == 2:
                raise ConnectionError("still down")

    actor = Flaky()
    ref = await system.spawn(actor)
    ref.tell(Boom())
    assert await ref.ask(Get(), timeout=2.0) == Total(0)
    assert actor.starts == 3
    assert actor.stops == 1  # no on_stop after the on_start that raised
    assert messages(logs, "ERROR", "failed to restart: on_start raised")


async def test_too_many_crashes_fire_fatal_and_stop_actor(
    system: ActorSystem, logs: list[dict[str, Any]]
) -> None:
    policy = SupervisionPolicy(max_restarts=2, window=60.0, backoff_initial=0.001, backoff_max=0.001)
    actor = Counter()
    ref = await system.spawn(actor, name="dispatcher", policy=policy)
    assert system.fatal is None
    for _ in range(3):
        ref.tell(Boom())
    pending = asyncio.create_task(ref.ask(Get(), timeout=5.0))  # queued behind the fatal crash
    error = await asyncio.wait_for(system.wait_fatal(), 2.0)
    assert isinstance(error, NodeFatalError)
    assert str(error) == "actor 'dispatcher' crashed 3 times in 60s, giving up: stopping the node"
    assert isinstance(error.__cause__, RuntimeError)
    assert system.fatal is error
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(pending, 1.0)
    await eventually(lambda: actor.stops == 3)  # two restarts, then the final stop
    assert not ref.is_alive
    with pytest.raises(ActorDeadError):
        ref.tell(Add(1))
    with pytest.raises(KeyError):
        system.get("dispatcher")
    assert actor.starts == 3
    giving_up = [r for r in logs if "giving up" in r["message"]]
    assert len(giving_up) == 1 and giving_up[0]["level"].name == "ERROR"
    assert giving_up[0]["extra"]["actor"] == "dispatcher"


async def test_crashes_outside_the_window_are_forgotten(system: ActorSystem) -> None:
    policy = SupervisionPolicy(max_restarts=1, window=0.05, backoff_initial=0.001, backoff_max=0.001)
    actor = Counter()
    ref = await system.spawn(actor, policy=policy)
    for _ in range(3):
        ref.tell(Boom())
        await ref.ask(Get(), timeout=2.0)
        await asyncio.sleep(0.06)
    assert ref.is_alive and system.fatal is None and actor.starts == 4


async def test_restart_loop_of_failing_on_start_gives_up(system: ActorSystem) -> None:
    class Doomed(Counter):
        async def on_start(self) -> None:
            self.starts += 1
            if self.starts > 1:
                raise ConnectionError("gone for good")

    actor = Doomed()
    ref = await system.spawn(actor, name="doomed")
    ref.tell(Boom())
    error = await asyncio.wait_for(system.wait_fatal(), 2.0)
    assert "actor 'doomed' crashed 4 times" in str(error)
    assert isinstance(error.__cause__, ConnectionError)
    await eventually(lambda: not ref.is_alive)
    assert actor.stops == 1


async def test_stop_during_backoff_is_prompt(system: ActorSystem) -> None:
    policy = SupervisionPolicy(backoff_initial=30.0, backoff_max=30.0)
    actor = Counter()
    ref = await system.spawn(actor, policy=policy)
    ref.tell(Boom())
    await eventually(lambda: actor.stops == 1)  # now waiting out the 30 s backoff
    loop = asyncio.get_running_loop()
    started = loop.time()
    await system.stop_actor(ref, timeout=5.0)
    assert loop.time() - started < 1.0
    assert not ref.is_alive and actor.starts == 1 and actor.stops == 1


# ---- stopping --------------------------------------------------------------------------------------


async def test_system_stop_is_reverse_spawn_order_and_idempotent() -> None:
    order: list[str] = []

    class Recorder(Actor):
        async def on_stop(self) -> None:
            order.append(self.name)

    sys_ = ActorSystem()
    refs = [await sys_.spawn(Recorder(), name=n) for n in ("store", "dispatcher", "executor")]
    await sys_.stop(timeout=2.0)
    assert order == ["executor", "dispatcher", "store"]
    assert not any(ref.is_alive for ref in refs)
    await sys_.stop(timeout=2.0)
    assert order == ["executor", "dispatcher", "store"]


async def test_stop_finishes_current_message_and_fails_queued_asks(
    system: ActorSystem, logs: list[dict[str, Any]]
) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    in_flight = asyncio.create_task(ref.ask(Block()))
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    queued = [asyncio.create_task(ref.ask(Get())) for _ in range(2)]
    ref.tell(Add(1))
    await asyncio.sleep(0)
    stopper = asyncio.create_task(system.stop_actor(ref, timeout=5.0))
    for task in queued:  # fail at once, not when the actor gets around to them
        with pytest.raises(ActorDeadError):
            await asyncio.wait_for(task, 1.0)
    assert not ref.is_alive and not stopper.done()
    with pytest.raises(ActorDeadError):
        await ref.ask(Get())
    actor.gate.set()
    assert await asyncio.wait_for(in_flight, 1.0) == "unblocked"
    await asyncio.wait_for(stopper, 1.0)
    assert actor.total == 0 and actor.stops == 1
    assert messages(logs, "DEBUG", "dropped 1 queued tell(s)")


async def test_tell_and_ask_to_dead_actor(system: ActorSystem) -> None:
    ref = await system.spawn(Counter())
    await system.stop_actor(ref)
    await system.stop_actor(ref)  # idempotent
    assert not ref.is_alive
    with pytest.raises(ActorDeadError):
        ref.tell(Add(1))
    with pytest.raises(ActorDeadError):
        await ref.ask(Get())
    with pytest.raises(KeyError):
        system.get("Counter")
    # A new actor under the same name gets a new ref; the old one stays dead.
    new = await system.spawn(Counter())
    assert new is not ref and new.is_alive and not ref.is_alive


async def test_hard_cancel_fails_in_flight_ask(system: ActorSystem, logs: list[dict[str, Any]]) -> None:
    actor = Counter()
    ref = await system.spawn(actor)
    in_flight = asyncio.create_task(ref.ask(Block()))
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    await system.stop_actor(ref, timeout=0.05)
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(in_flight, 1.0)
    assert not ref.is_alive
    assert messages(logs, "WARNING", "did not stop within 0.05s")


async def test_hanging_on_stop_is_hard_cancelled(system: ActorSystem) -> None:
    class Stuck(Actor):
        cancelled = False

        async def on_stop(self) -> None:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled = True
                raise

    actor = Stuck()
    ref = await system.spawn(actor)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await system.stop_actor(ref, timeout=0.05)
    assert loop.time() - started < 1.0
    assert actor.cancelled and not ref.is_alive


async def test_system_stop_budget_bounds_a_hanging_on_stop() -> None:
    order: list[str] = []

    class Quick(Actor):
        async def on_stop(self) -> None:
            order.append(self.name)

    class Stuck(Actor):
        async def on_stop(self) -> None:
            await asyncio.sleep(30)

    sys_ = ActorSystem()
    first = await sys_.spawn(Quick(), name="first")
    stuck = await sys_.spawn(Stuck(), name="stuck")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sys_.stop(timeout=0.1)
    assert loop.time() - started < 2.0
    assert not first.is_alive and not stuck.is_alive


async def test_on_stop_error_is_logged_not_raised(system: ActorSystem, logs: list[dict[str, Any]]) -> None:
    class Sloppy(Actor):
        async def on_stop(self) -> None:
            raise OSError("close failed")

    ref = await system.spawn(Sloppy())
    await system.stop_actor(ref)
    assert not ref.is_alive
    errors = [r for r in logs if "on_stop of actor 'Sloppy' raised" in r["message"]]
    assert len(errors) == 1 and errors[0]["exception"] is not None


async def test_actor_can_stop_itself(system: ActorSystem) -> None:
    class Quitter(Counter):
        async def receive(self, message: Any) -> Any:
            if isinstance(message, Echo):
                await self.system.stop_actor(self.ref)
                return "bye"
            return await super().receive(message)

    actor = Quitter()
    ref = await system.spawn(actor)
    assert await ref.ask(Echo("quit"), timeout=1.0) == "bye"
    await eventually(lambda: actor.stops == 1)
    assert not ref.is_alive


async def test_stopping_the_system_cancels_asks_in_progress() -> None:
    sys_ = ActorSystem()
    actor = Counter()
    ref = await sys_.spawn(actor)
    in_flight = asyncio.create_task(ref.ask(Block(), timeout=5.0))
    await asyncio.wait_for(actor.entered.wait(), 1.0)
    await sys_.stop(timeout=0.05)
    with pytest.raises(ActorDeadError):
        await asyncio.wait_for(in_flight, 1.0)


async def test_ref_repr_and_name(system: ActorSystem) -> None:
    ref = await system.spawn(Counter(), name="c1")
    assert isinstance(ref, ActorRef)
    assert repr(ref) == "<ActorRef 'c1' running>"


async def test_concurrent_system_stops_wait_for_the_same_actors() -> None:
    class Slow(Actor):
        stopped = 0

        async def on_stop(self) -> None:
            await asyncio.sleep(0.02)
            self.stopped += 1

    sys_ = ActorSystem()
    actor = Slow()
    ref = await sys_.spawn(actor)
    await asyncio.wait_for(asyncio.gather(sys_.stop(timeout=2.0), sys_.stop(timeout=2.0)), 3.0)
    assert not ref.is_alive and actor.stopped == 1


async def test_spawn_racing_system_stop_stops_the_new_actor() -> None:
    release = asyncio.Event()

    class Late(Counter):
        async def on_start(self) -> None:
            await release.wait()
            self.starts += 1

    sys_ = ActorSystem()
    actor = Late()
    spawning = asyncio.create_task(sys_.spawn(actor, name="late"))
    await asyncio.sleep(0.01)
    await sys_.stop(timeout=1.0)
    release.set()
    with pytest.raises(RuntimeError, match="began stopping"):
        await asyncio.wait_for(spawning, 1.0)
    assert (actor.starts, actor.stops) == (1, 1)
    assert not actor.ref.is_alive


async def test_task_crashing_during_on_start_is_supervised_after_spawn(system: ActorSystem) -> None:
    class EarlyCrash(Counter):
        async def on_start(self) -> None:
            self.starts += 1
            if self.starts == 1:
                self.run_task(self._fail(), name="connect")
                await asyncio.sleep(0.01)  # the task fails while on_start is still running

        async def _fail(self) -> None:
            raise ConnectionError("refused")

    actor = EarlyCrash()
    ref = await system.spawn(actor)
    assert await ref.ask(Get(), timeout=2.0) == Total(0)
    assert (actor.starts, actor.stops) == (2, 1)


async def test_stray_cancelled_error_from_receive_is_a_failure_not_a_stop(system: ActorSystem) -> None:
    class Leaky(Actor):
        async def receive(self, message: Any) -> Any:
            if isinstance(message, Fail):
                inner = asyncio.create_task(asyncio.sleep(10))
                inner.cancel()
                await inner  # raises CancelledError although nobody cancelled this actor
            return "ok"

    ref = await system.spawn(Leaky())
    with pytest.raises(RuntimeError, match="raised CancelledError"):
        await ref.ask(Fail(), timeout=1.0)
    assert ref.is_alive
    assert await ref.ask(Get(), timeout=1.0) == "ok"


async def test_ask_without_timeout(system: ActorSystem) -> None:
    ref = await system.spawn(Counter())
    assert await asyncio.wait_for(ref.ask(Echo("x"), timeout=None), 1.0) == Echo("X")

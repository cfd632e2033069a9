"""A small, Ray-free asyncio actor runtime shared by the node's actors.

Model
-----
* An :class:`Actor` is a plain object with ``on_start`` / ``receive`` / ``on_stop`` coroutines. It is
  spawned into an :class:`ActorSystem`, which gives back an :class:`ActorRef`.
* Each spawned actor owns one loop task that takes messages from its mailbox and awaits
  ``receive()`` for them **one at a time**. The mailbox is a bounded FIFO of envelopes
  ``(message, reply future or None)``; ``tell`` and ``ask`` never block on a full mailbox, they raise
  :class:`MailboxFullError`.
* An actor owns its timers (:meth:`Actor.start_timer`) and background tasks (:meth:`Actor.run_task`).
  Both are cancelled and awaited when the actor stops or restarts; nothing the runtime starts is left
  running untracked.

Supervision
-----------
A *crash* is: ``receive()`` raising for a ``tell`` (an exception for an ``ask`` goes back to the asker
and is not a crash), a tracked task raising, or ``on_start`` raising during a restart. On a crash the
runtime logs the exception, cancels the actor's timers and tasks, awaits ``on_stop``, waits an
exponential backoff (:func:`backoff_delay`), then awaits ``on_start`` again **on the same actor
instance** (its attributes survive; ``on_start`` must re-initialise whatever it needs). The mailbox is
kept: messages queued before or during the restart are handled afterwards. When an actor crashes more
than ``max_restarts`` times within ``window`` seconds the runtime gives up: it logs one error line, stops
the actor (pending asks fail with :class:`ActorDeadError`) and resolves the system's fatal signal
(:meth:`ActorSystem.wait_fatal`), so the node can shut down instead of looping.

``on_stop`` is called once after every ``on_start`` that succeeded, never after one that raised (like
``__exit__`` after ``__enter__``); timers and tasks started by a failed ``on_start`` are cancelled by the
runtime.

Stopping
--------
A stop (:meth:`ActorSystem.stop_actor`, :meth:`ActorSystem.stop` in reverse spawn order, or supervision
giving up) refuses new messages at once, drops queued tells (debug log) and fails queued asks with
:class:`ActorDeadError`, lets the message in progress finish, cancels timers and tasks, then awaits
``on_stop``. Past the stop timeout the actor's loop is cancelled; an ask in flight then fails with
:class:`ActorDeadError`. No ask is ever left hanging.

The runtime is single-threaded asyncio: refs must be used from the event loop the system runs on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
from collections.abc import Coroutine
from typing import Any, ClassVar, Final

import msgspec
from loguru import logger

__all__ = [
    "Actor",
    "ActorDeadError",
    "ActorRef",
    "ActorSystem",
    "AskTimeoutError",
    "MailboxFullError",
    "NodeFatalError",
    "SupervisionPolicy",
    "backoff_delay",
]

# How long a hard-cancelled actor loop (or its leftover tasks) may take to acknowledge cancellation
# before the runtime abandons them with an error log.
_HARD_CANCEL_GRACE: Final = 1.0


class ActorDeadError(Exception):
    """The actor is stopped (or stopping): a ``tell``/``ask`` was refused, or a pending ask was dropped."""


class AskTimeoutError(asyncio.TimeoutError):
    """``ask(..., timeout=)`` expired before the actor answered (a subclass of ``TimeoutError``)."""


class MailboxFullError(Exception):
    """The actor's bounded mailbox is full; ``tell``/``ask`` never wait for room."""


class NodeFatalError(Exception):
    """Supervision gave up on an actor; the node should shut down. ``__cause__`` is the last crash."""


class SupervisionPolicy(msgspec.Struct, frozen=True):
    """How an actor is restarted after a crash.

    More than ``max_restarts`` crashes within ``window`` seconds stop the actor and fire the system's
    fatal signal. Between restarts the runtime waits ``backoff_initial * 2**n`` seconds, capped at
    ``backoff_max``, where ``n`` is the number of earlier crashes still inside the window.
    """

    max_restarts: int = 5
    window: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if self.window <= 0:
            raise ValueError(f"window must be > 0, got {self.window}")
        if self.backoff_initial < 0 or self.backoff_max < 0:
            raise ValueError("backoff_initial and backoff_max must be >= 0")


def backoff_delay(policy: SupervisionPolicy, restart_number: int) -> float:
    """Seconds to wait before restart number ``restart_number`` (0 for the first restart in the window).

    Pure function: ``min(backoff_max, backoff_initial * 2**restart_number)``. Raises ``ValueError`` for a
    negative ``restart_number``.
    """
    if restart_number < 0:
        raise ValueError(f"restart_number must be >= 0, got {restart_number}")
    exponent = min(restart_number, 62)  # beyond this the cap always wins; avoids float overflow
    return float(min(policy.backoff_max, policy.backoff_initial * 2**exponent))


class Actor:
    """Base class of every actor: subclass it and override ``on_start``, ``receive`` and ``on_stop``.

    Messages may be any object; the convention is typed ``msgspec.Struct`` messages. Subclasses need
    not call ``super().__init__()``. ``name``, ``system`` and ``ref`` are set by
    :meth:`ActorSystem.spawn` before ``on_start`` runs. ``mailbox_size`` bounds the mailbox
    (``<= 0`` means unbounded).
    """

    mailbox_size: ClassVar[int] = 1000
    name: str
    system: ActorSystem
    ref: ActorRef
    _actor_cell: _Cell | None = None

    async def on_start(self) -> None:
        """Called at spawn and after each supervised restart (same instance).

        If it raises at spawn, :meth:`ActorSystem.spawn` raises that exception and the actor is not
        registered; if it raises during a restart, that counts as another crash. ``on_stop`` is not
        called after an ``on_start`` that raised.
        """

    async def on_stop(self) -> None:
        """Called after the actor's timers and tasks were cancelled, on stop and before a restart.

        Exceptions are logged and otherwise ignored. At system/actor stop it is bounded by the stop
        timeout: past it the actor's loop is cancelled, which cancels ``on_stop`` too.
        """

    async def receive(self, message: Any) -> Any:
        """Handle one message. The return value answers an ``ask`` (ignored for a ``tell``).

        An exception is sent to the asker for an ``ask`` (the actor keeps running); for a ``tell`` it
        crashes the actor and supervision restarts it. The default implementation raises
        ``NotImplementedError``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(message).__name__}")

    def start_timer(
        self,
        key: str,
        interval: float,
        message: Any,
        *,
        repeat: bool = True,
        initial_delay: float | None = None,
    ) -> None:
        """Deliver ``message`` to this actor's own mailbox (as a ``tell``) every ``interval`` seconds.

        The first delivery comes after ``initial_delay`` (default: ``interval``); with ``repeat=False``
        there is only that one. Starting a timer with a key already in use replaces that timer. A tick
        that finds the mailbox full is skipped with a warning log. Timers are cancelled automatically
        when the actor stops or restarts; ticks of a cancelled, replaced or reset timer that are still
        queued are dropped, never handled. Raises ``ActorDeadError`` if the actor is stopping, ``ValueError``
        for a non-positive repeating interval or a negative delay, ``RuntimeError`` before spawn.
        """
        self._cell("start a timer").start_timer(key, interval, message, repeat, initial_delay)

    def cancel_timer(self, key: str) -> None:
        """Cancel the timer ``key`` (no-op if there is none). Its ticks still queued in the mailbox are
        dropped too: ``receive`` sees no message from it after this returns."""
        self._cell("cancel a timer").cancel_timer(key)

    def run_task(self, coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a background task owned by this actor (e.g. a pub/sub reader loop).

        The task is cancelled and awaited when the actor stops or restarts. If it raises, the exception
        is logged and the actor is treated as crashed (supervision restarts it, after the message being
        handled, if any, is finished). A task that returns normally or is cancelled by its owner simply
        ends. Raises ``ActorDeadError`` if the actor is stopping, ``RuntimeError`` before spawn; in both
        cases ``coro`` is closed.
        """
        cell = self._actor_cell
        if cell is None:
            coro.close()
            raise RuntimeError(f"{type(self).__name__} is not spawned: cannot run a task")
        return cell.run_task(coro, name)

    def _cell(self, action: str) -> _Cell:
        if self._actor_cell is None:
            raise RuntimeError(f"{type(self).__name__} is not spawned: cannot {action}")
        return self._actor_cell


class ActorRef:
    """Handle to a spawned actor. A ref stays bound to that one actor: once it is stopped, the ref is
    dead for good, even if another actor is later spawned under the same name."""

    __slots__ = ("_cell",)

    def __init__(self, cell: _Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def is_alive(self) -> bool:
        """True while the actor accepts messages (starting, running or restarting)."""
        return self._cell.state in _ALIVE

    def tell(self, message: Any) -> None:
        """Queue ``message`` without waiting for it to be handled; never blocks.

        Raises ``ActorDeadError`` if the actor is stopped or stopping, ``MailboxFullError`` if its
        mailbox is full.
        """
        self._cell.enqueue(_Envelope(message, None))

    async def ask(self, message: Any, *, timeout: float | None = 5.0) -> Any:  # noqa: ASYNC109 (the API takes a timeout)
        """Queue ``message`` and wait for ``receive()``'s answer (``timeout=None`` waits forever).

        Raises ``AskTimeoutError`` when the timeout expires, ``ActorDeadError`` if the actor is stopped
        or stops before answering, ``MailboxFullError`` if its mailbox is full, ``RuntimeError`` when an
        actor asks itself from ``receive`` (that would deadlock), or whatever ``receive()`` raised. If
        the caller is cancelled or times out, the message is still handled; the answer is dropped.
        """
        cell = self._cell
        if cell.loop_task is not None and asyncio.current_task() is cell.loop_task:
            raise RuntimeError(f"actor {cell.name!r} cannot ask itself (it would deadlock); use tell")
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        cell.enqueue(_Envelope(message, reply))
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                return await reply
        except TimeoutError:
            if deadline.expired():
                raise AskTimeoutError(
                    f"actor {cell.name!r} did not answer {type(message).__name__} within {timeout:g}s"
                ) from None
            raise  # receive() itself raised a TimeoutError: pass it on unchanged

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {self._cell.state.value}>"


class ActorSystem:
    """Spawns actors, supervises them and stops them in reverse spawn order."""

    def __init__(self, name: str = "system", *, policy: SupervisionPolicy | None = None) -> None:
        self.name = name
        self.policy = policy if policy is not None else SupervisionPolicy()
        self._cells: dict[str, _Cell] = {}  # insertion order == spawn order
        self._reserved: set[str] = set()  # names whose on_start is running
        self._stopping = False
        self._fatal: NodeFatalError | None = None
        self._fatal_event = asyncio.Event()

    async def spawn(
        self, actor: Actor, *, name: str | None = None, policy: SupervisionPolicy | None = None
    ) -> ActorRef:
        """Start ``actor`` under ``name`` (default: its class name) and return its ref.

        Awaits ``on_start`` in the caller's task. If it raises (or the caller is cancelled), the timers
        and tasks it started are cancelled, messages already sent to it are dropped (asks fail with
        ``ActorDeadError``), the actor is not registered and the exception propagates. Raises
        ``ValueError`` if the name is taken or the instance is already running, ``RuntimeError`` if the
        system is stopping (also when it began stopping while ``on_start`` ran; ``on_stop`` is then
        awaited before raising).
        """
        if self._stopping:
            raise RuntimeError(f"actor system {self.name!r} is stopping: cannot spawn")
        old = actor._actor_cell
        if old is not None and old.state is not _State.STOPPED:
            raise ValueError(f"{type(actor).__name__} instance is already spawned as {old.name!r}")
        actor_name = name if name is not None else type(actor).__name__
        if not actor_name:
            raise ValueError("actor name must not be empty")
        if actor_name in self._cells or actor_name in self._reserved:
            raise ValueError(f"an actor named {actor_name!r} already exists in system {self.name!r}")
        cell = _Cell(actor, self, actor_name, policy if policy is not None else self.policy)
        self._reserved.add(actor_name)
        try:
            await cell.start()
        finally:
            self._reserved.discard(actor_name)
        if self._stopping:
            await cell.abort()
            raise RuntimeError(f"actor system {self.name!r} began stopping while {actor_name!r} started")
        self._cells[actor_name] = cell
        cell.launch()
        cell.log.debug(f"actor {actor_name!r} started")
        return cell.ref

    def get(self, name: str) -> ActorRef:
        """The ref of the live actor ``name``; ``KeyError`` if there is none."""
        try:
            return self._cells[name].ref
        except KeyError:
            raise KeyError(f"no actor named {name!r} in system {self.name!r}") from None

    async def stop_actor(self, ref: ActorRef, *, timeout: float = 5.0) -> None:  # noqa: ASYNC109 (the API takes a timeout)
        """Stop one actor and wait (bounded) until it is stopped. Idempotent.

        At once: the actor stops accepting messages, queued tells are dropped (debug log) and queued asks
        fail with ``ActorDeadError``. The message being handled is finished, then timers and tasks are
        cancelled and awaited and ``on_stop`` is awaited. If that takes longer than ``timeout`` the
        actor's loop is cancelled (interrupting ``receive``/``on_stop``; an ask in flight fails with
        ``ActorDeadError``), with a grace of ``_HARD_CANCEL_GRACE`` seconds for it to unwind. Called
        from the actor's own ``receive`` it only requests the stop (which happens once the message is
        handled) and returns. If the actor is still in ``on_start`` the stop happens right after it.
        Cancelling the caller does not interrupt the (graceful) stop.
        """
        cell = ref._cell
        if cell.system is not self:
            raise ValueError(f"actor {cell.name!r} belongs to another actor system")
        cell.request_stop()
        task = cell.loop_task
        if task is None or task is asyncio.current_task():
            return
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
            if not done:
                cell.log.warning(
                    f"actor {cell.name!r} did not stop within {timeout:.3g}s: cancelling it "
                    "(the message in progress and on_stop are interrupted)"
                )
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=_HARD_CANCEL_GRACE)
                if not done:
                    cell.log.error(f"actor {cell.name!r} ignored cancellation: abandoning its loop task")
                    cell.finalize()
        await cell.reap_orphans()

    async def stop(self, *, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (the API takes a timeout)
        """Stop every actor, in reverse spawn order, within ``timeout`` seconds overall. Idempotent.

        Each actor is stopped as by :meth:`stop_actor` with whatever is left of the overall timeout (so
        once the budget is spent, the remaining actors are cancelled without a graceful stop). No actor
        can be spawned afterwards. Safe to call concurrently and repeatedly.
        """
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for cell in reversed(list(self._cells.values())):
            await self.stop_actor(cell.ref, timeout=max(0.0, deadline - loop.time()))

    @property
    def fatal(self) -> NodeFatalError | None:
        """The first fatal supervision failure, or ``None`` while there has been none."""
        return self._fatal

    async def wait_fatal(self) -> NodeFatalError:
        """Wait until supervision gives up on some actor; return that (first) failure.

        The system does not stop itself: the node's main loop is expected to await this and then shut
        down (``await system.stop()``). Cancelling the caller just stops waiting.
        """
        await self._fatal_event.wait()
        assert self._fatal is not None
        return self._fatal

    def _on_fatal(self, error: NodeFatalError) -> None:
        if self._fatal is None:
            self._fatal = error
            self._fatal_event.set()

    def _forget(self, cell: _Cell) -> None:
        if self._cells.get(cell.name) is cell:
            del self._cells[cell.name]


# --------------------------------------------------------------------------------------------------
# Internals


class _State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"


_ALIVE: Final = frozenset({_State.STARTING, _State.RUNNING, _State.RESTARTING})


class _Timer:
    """One started timer. Its ticks carry it, so ticks of a cancelled or replaced timer are dropped."""

    __slots__ = ("key", "repeat", "task")
    task: asyncio.Task[None]

    def __init__(self, key: str, repeat: bool) -> None:
        self.key = key
        self.repeat = repeat


class _Envelope:
    __slots__ = ("message", "reply", "timer")

    def __init__(
        self, message: Any, reply: asyncio.Future[Any] | None, timer: _Timer | None = None
    ) -> None:
        self.message = message
        self.reply = reply
        self.timer = timer


class _Cell:
    """Runtime state of one spawned actor: mailbox, loop task, timers, tasks, supervision."""

    def __init__(self, actor: Actor, system: ActorSystem, name: str, policy: SupervisionPolicy) -> None:
        self.actor = actor
        self.system = system
        self.name = name
        self.policy = policy
        self.ref = ActorRef(self)
        self.log = logger.bind(component="actors", actor=name)
        self.state = _State.STARTING
        self.capacity = actor.mailbox_size
        self.mailbox: collections.deque[_Envelope] = collections.deque()
        self.wakeup = asyncio.Event()  # set when the loop has something to look at
        self.stop_event = asyncio.Event()  # set once a stop is requested
        self.crash: BaseException | None = None  # crash waiting to be handled by the loop
        self.crash_times: collections.deque[float] = collections.deque()
        self.started = False  # on_start succeeded and on_stop is still owed
        self.timers: dict[str, _Timer] = {}  # live timers; a one-shot one until its tick is handled
        self.tasks: set[asyncio.Task[None]] = set()
        self.orphans: set[asyncio.Task[None]] = set()  # cancelled but not yet seen finished
        self.loop_task: asyncio.Task[None] | None = None
        actor.name = name
        actor.system = system
        actor.ref = self.ref
        actor._actor_cell = self

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.actor.on_start()
        except BaseException:
            try:
                await self.cancel_owned()
            finally:
                self.finalize()
            raise
        self.started = True

    async def abort(self) -> None:
        """Stop an actor that started but was never launched (runs in the caller's task)."""
        self.request_stop()
        try:
            await self.teardown()
        finally:
            self.finalize()

    def launch(self) -> None:
        if self.state is _State.STARTING:
            self.state = _State.RUNNING
        self.loop_task = asyncio.create_task(self._run(), name=f"actor:{self.name}")
        self.loop_task.add_done_callback(self._on_loop_done)

    def request_stop(self) -> None:
        if self.state not in _ALIVE:
            return
        self.state = _State.STOPPING
        self._drop_mailbox()
        self.stop_event.set()
        self.wakeup.set()

    async def _run(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self.crash is not None:
                    exc, self.crash = self.crash, None
                    await self._recover(exc)
                elif self.mailbox:
                    envelope = self.mailbox.popleft()
                    if self._is_current_tick(envelope):
                        await self._process(envelope)
                else:
                    self.wakeup.clear()
                    await self.wakeup.wait()
            await self.teardown()
        finally:
            self.finalize()

    def _on_loop_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug in this runtime: make it loud and fatal rather than silent
            message = f"loop of actor {self.name!r} failed unexpectedly: stopping the node"
            self.log.opt(exception=exc).error(message)
            error = NodeFatalError(message)
            error.__cause__ = exc
            self.system._on_fatal(error)

    async def teardown(self) -> None:
        """Cancel and await timers and tasks, then await on_stop if it is owed (errors logged)."""
        await self.cancel_owned()
        if self.started:
            self.started = False
            try:
                await self.actor.on_stop()
            except Exception as exc:
                self.log.opt(exception=exc).error(f"on_stop of actor {self.name!r} raised")

    def finalize(self) -> None:
        """Mark the actor stopped, fail every pending ask, cancel what it still owns. Idempotent."""
        if self.state is _State.STOPPED:
            return
        self.state = _State.STOPPED
        self.stop_event.set()
        self.wakeup.set()
        self._drop_mailbox()
        self.orphans.update(timer.task for timer in self.timers.values())
        self.orphans.update(self.tasks)
        self.timers.clear()
        self.tasks.clear()
        for task in self.orphans:
            task.cancel()
        self.system._forget(self)
        self.log.debug(f"actor {self.name!r} stopped")

    async def reap_orphans(self) -> None:
        """Wait (bounded) for cancelled tasks that were not awaited yet (after a hard cancel)."""
        pending = [task for task in self.orphans if not task.done()]
        if not pending:
            return
        _, still = await asyncio.wait(pending, timeout=_HARD_CANCEL_GRACE)
        if still:
            names = sorted(task.get_name() for task in still)
            self.log.error(f"tasks of actor {self.name!r} ignored cancellation: {names}")

    def _drop_mailbox(self) -> None:
        dropped = 0
        while self.mailbox:
            envelope = self.mailbox.popleft()
            if envelope.reply is None:
                dropped += 1
            else:
                self._reject(envelope, "stopped before handling the request")
        if dropped:
            self.log.debug(f"dropped {dropped} queued tell(s) of stopping actor {self.name!r}")

    def _reject(self, envelope: _Envelope, reason: str) -> None:
        if envelope.reply is not None and not envelope.reply.done():
            envelope.reply.set_exception(ActorDeadError(f"actor {self.name!r} {reason}"))

    # ---- messages --------------------------------------------------------------------------------

    def enqueue(self, envelope: _Envelope) -> None:
        if self.state not in _ALIVE:
            raise ActorDeadError(f"actor {self.name!r} is stopped")
        if 0 < self.capacity <= len(self.mailbox):
            raise MailboxFullError(f"mailbox of actor {self.name!r} is full ({self.capacity} messages)")
        self.mailbox.append(envelope)
        self.wakeup.set()

    async def _process(self, envelope: _Envelope) -> None:
        try:
            result = await self.actor.receive(envelope.message)
        except asyncio.CancelledError as err:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._reject(envelope, "was stopped while handling the request")
                raise
            # receive() let a CancelledError of something it awaited escape: that is a failure of
            # receive, not a request to stop this actor.
            failure = RuntimeError(f"receive() of actor {self.name!r} raised CancelledError")
            failure.__cause__ = err
            self._fail(envelope, failure)
        except Exception as exc:
            self._fail(envelope, exc)
        else:
            if envelope.reply is not None and not envelope.reply.done():
                envelope.reply.set_result(result)

    def _fail(self, envelope: _Envelope, exc: BaseException) -> None:
        kind = type(envelope.message).__name__
        if envelope.reply is None:
            self.log.opt(exception=exc).error(f"actor {self.name!r} crashed handling {kind}")
            self._record_crash(exc)
        elif envelope.reply.done():
            self.log.opt(exception=exc).warning(
                f"actor {self.name!r} failed an ask ({kind}) whose caller already gave up"
            )
        else:
            envelope.reply.set_exception(exc)

    # ---- supervision -----------------------------------------------------------------------------

    def _record_crash(self, exc: BaseException) -> None:
        """Note a crash for the loop to handle (after the message in progress). Already logged."""
        if self.state not in _ALIVE:
            return
        if self.crash is None:
            self.crash = exc
        self.wakeup.set()

    async def _recover(self, exc: BaseException) -> None:
        """Restart after ``exc`` with backoff, or give up. Returns early if a stop is requested."""
        loop = asyncio.get_running_loop()
        policy = self.policy
        while not self.stop_event.is_set():
            now = loop.time()
            self.crash_times.append(now)
            while self.crash_times[0] < now - policy.window:
                self.crash_times.popleft()
            crashes = len(self.crash_times)
            if crashes > policy.max_restarts:
                self._give_up(crashes, exc)
                return
            self.state = _State.RESTARTING
            await self.teardown()
            delay = backoff_delay(policy, crashes - 1)
            self.log.warning(
                f"restarting actor {self.name!r} in {delay:.3g}s "
                f"(crash {crashes}, at most {policy.max_restarts} restarts in {policy.window:g}s)"
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.stop_event.wait()
            if self.stop_event.is_set():
                return
            try:
                await self.actor.on_start()
            except Exception as err:
                self.log.opt(exception=err).error(f"actor {self.name!r} failed to restart: on_start raised")
                exc = err
                continue
            self.started = True
            if self.state is _State.RESTARTING:
                self.state = _State.RUNNING
            self.log.info(f"actor {self.name!r} restarted")
            return

    def _give_up(self, crashes: int, exc: BaseException) -> None:
        message = (
            f"actor {self.name!r} crashed {crashes} times in {self.policy.window:g}s, "
            "giving up: stopping the node"
        )
        self.log.error(message)
        error = NodeFatalError(message)
        error.__cause__ = exc
        self.request_stop()
        self.system._on_fatal(error)

    # ---- timers and tasks ------------------------------------------------------------------------

    def _require_alive(self, action: str) -> None:
        if self.state not in _ALIVE:
            raise ActorDeadError(f"actor {self.name!r} is stopped: cannot {action}")

    def start_timer(
        self, key: str, interval: float, message: Any, repeat: bool, initial_delay: float | None
    ) -> None:
        self._require_alive("start a timer")
        if interval < 0 or (repeat and interval <= 0):
            raise ValueError(f"timer {key!r}: interval must be > 0, got {interval}")
        if initial_delay is not None and initial_delay < 0:
            raise ValueError(f"timer {key!r}: initial_delay must be >= 0, got {initial_delay}")
        self.cancel_timer(key)
        first = interval if initial_delay is None else initial_delay
        timer = _Timer(key, repeat)
        timer.task = asyncio.create_task(
            self._timer(timer, interval, message, first), name=f"actor:{self.name}:timer:{key}"
        )
        self.timers[key] = timer
        timer.task.add_done_callback(self._on_owned_done)

    def cancel_timer(self, key: str) -> None:
        timer = self.timers.pop(key, None)
        if timer is not None and not timer.task.done():
            timer.task.cancel()
            self.orphans.add(timer.task)  # still tracked until it has unwound (see _on_owned_done)

    def _is_current_tick(self, envelope: _Envelope) -> bool:
        """False for a tick of a timer cancelled, replaced or reset (restart) since it was queued."""
        timer = envelope.timer
        if timer is None:
            return True
        if self.timers.get(timer.key) is not timer:
            return False
        if not timer.repeat:
            del self.timers[timer.key]  # a one-shot timer is over once its tick is handled
        return True

    async def _timer(self, timer: _Timer, interval: float, message: Any, first: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + first
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                self.enqueue(_Envelope(message, None, timer))
            except MailboxFullError:
                self.log.warning(
                    f"mailbox of actor {self.name!r} is full: skipped a tick of timer {timer.key!r}"
                )
                if not timer.repeat and self.timers.get(timer.key) is timer:
                    del self.timers[timer.key]
            except ActorDeadError:
                return
            if not timer.repeat:
                return
            # Fixed rate; if the loop fell behind, fire once now rather than a burst of missed ticks.
            due = max(due + interval, loop.time())

    def run_task(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        if self.state not in _ALIVE:
            coro.close()
            raise ActorDeadError(f"actor {self.name!r} is stopped: cannot run task {name!r}")
        task = asyncio.create_task(coro, name=f"actor:{self.name}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self._on_owned_done)
        return task

    def _on_owned_done(self, task: asyncio.Task[None]) -> None:
        """Done callback of every timer and tracked task: untrack it; a failure is logged here, once,
        and is a crash if the task was still owned (not being cancelled by the runtime)."""
        self.orphans.discard(task)
        owned = task in self.tasks or any(timer.task is task for timer in self.timers.values())
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if owned:
            self.log.opt(exception=exc).error(f"task {task.get_name()!r} of actor {self.name!r} crashed")
            self._record_crash(exc)
        else:
            self.log.opt(exception=exc).error(
                f"task {task.get_name()!r} of actor {self.name!r} raised while being cancelled"
            )

    async def cancel_owned(self) -> None:
        """Cancel all timers and tasks and wait until they have finished."""
        owned = [*(timer.task for timer in self.timers.values()), *self.tasks]
        self.timers.clear()  # ticks still queued from these timers are dropped when dequeued
        self.tasks.clear()
        if not owned:
            return
        self.orphans.update(owned)  # tracked until done, in case this wait is itself cancelled
        for task in owned:
            task.cancel()
        await asyncio.wait(owned)

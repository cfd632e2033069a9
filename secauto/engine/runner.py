"""Running validated playbooks: step options, results, failures, limits and cancellation.

For each step, in order: ``when`` is evaluated (false: the step is recorded as ``skipped``); the
step's fields are rendered (:mod:`secauto.engine.templates`) and converted to the action's typed
fields; the action runs, under ``timeout`` when the step has one (per attempt); a failed attempt is
retried up to ``retry.attempts`` tries in total, sleeping ``delay`` then ``delay * backoff``...; then,
if it still failed, ``on_error: continue`` records the failure and goes on while ``on_error: fail``
(the default) stops the playbook. A failure that was continued past leaves the playbook
successful (the failed step is recorded with its error). Errors marked fatal (the ``fail`` action,
limits, recursion) are neither retried nor continued. On success the result is stored under
``output`` when the step names one, and the context size is checked against ``max_context_bytes``.

Step failures never escape :func:`run_playbook`: they become ``success=False`` with ``error`` set and
the failing step recorded. Unexpected exceptions inside an action are logged with their traceback and
recorded as a failed step too. ``asyncio.CancelledError`` (job cancel or timeout) is never caught:
whatever the step was doing is torn down (a script's whole process group is killed) and the
cancellation propagates to the caller.

The engine only ever replaces top-level context keys (it never mutates nested values in place), so
shallow copies of a context, as used by ``foreach`` iterations, are independent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from loguru import logger

from secauto.engine.actions import ActionCall, get_action
from secauto.engine.conditions import holds
from secauto.engine.errors import PlaybookInvalid, StepError, split_validation_error
from secauto.engine.loader import load_playbook_file, resolve_named_playbook
from secauto.engine.model import Playbook, Step
from secauto.engine.results import PlaybookResult, StepNotes, StepResult, utc_now
from secauto.engine.secrets import NoSecrets, SecretSource, SecretUnavailable
from secauto.engine.settings import EngineSettings
from secauto.engine.templates import render
from secauto.engine.validation import validate_playbook

if TYPE_CHECKING:
    from loguru import Logger


# For actions that enforce `timeout` themselves: the runner's safety net fires this much later.
OWN_TIMEOUT_GRACE = 2.0


class StepsFailed(StepError):
    """A list of steps stopped at a failed step; ``results`` holds every result up to it."""

    def __init__(self, message: str, results: list[StepResult], *, fatal: bool) -> None:
        super().__init__(message, fatal=fatal, output=msgspec.to_builtins(results))
        self.results = results


class _Budget:
    """Counts executed steps across one run_playbook call, ``play`` included."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def spend(self) -> None:
        self.used += 1
        if self.used > self.limit:
            raise StepError(f"more than {self.limit} steps executed in one run (a runaway loop?)", fatal=True)


class _Secrets:
    """The secrets of one run_playbook call (``play`` included): each is revealed once per run."""

    def __init__(self, source: SecretSource) -> None:
        self.source = source
        self.values: dict[str, str] = {}

    async def reveal(self, names: Sequence[str]) -> dict[str, str]:
        missing = [name for name in names if name not in self.values]
        if missing:
            self.values.update(await self.source.reveal(missing))
        try:
            return {name: self.values[name] for name in names}
        except KeyError as exc:
            raise SecretUnavailable(f"secret {exc.args[0]!r} was not revealed") from None


def context_size(context: dict[str, Any]) -> int:
    return len(msgspec.json.encode(context))


class Run:
    """One playbook run (or one nested ``play``); implements the actions' ``Runtime`` protocol."""

    def __init__(
        self,
        settings: EngineSettings,
        job_id: str | None,
        *,
        budget: _Budget,
        secrets: _Secrets,
        play_stack: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.job_id = job_id
        self.log: Logger = logger.bind(component="engine", job_id=job_id)
        self.budget = budget
        self.secrets = secrets
        self.play_stack = play_stack

    # ------------------------------------------------------------ Runtime protocol

    async def run_steps(self, steps: Sequence[Step], context: dict[str, Any]) -> list[StepResult]:
        results: list[StepResult] = []
        for step in steps:
            result, fatal = await self.run_step(step, context)
            results.append(result)
            if result.status == "failed" and (fatal or step.options.on_error == "fail"):
                where = f" in playbook {self.play_stack[-1]!r}" if self.play_stack else ""
                message = f"step {step.path} {step.name!r}{where} failed: {result.error}"
                raise StepsFailed(message, results, fatal=fatal)
        return results

    async def run_named(self, name: str, context: dict[str, Any]) -> list[StepResult]:
        if len(self.play_stack) >= self.settings.max_depth:
            chain = " -> ".join([*self.play_stack, name])
            raise StepError(
                f"play depth limit {self.settings.max_depth} reached ({chain}); recursive playbooks?", fatal=True
            )
        try:
            path = resolve_named_playbook(name, self.settings)
            playbook = validate_playbook(load_playbook_file(path), self.settings)
        except PlaybookInvalid as exc:
            raise StepError(f"playbook {name!r}: {exc}") from None
        child = Run(self.settings, self.job_id, budget=self.budget, secrets=self.secrets,
                    play_stack=(*self.play_stack, name))
        self.log.debug("playing {}", name)
        return await child.run_steps(playbook.steps, context)

    def check_context(self, context: dict[str, Any]) -> None:
        try:
            size = context_size(context)
        except (TypeError, msgspec.EncodeError) as exc:
            raise StepError(f"the context is no longer JSON-serialisable: {exc}", fatal=True) from None
        if size > self.settings.max_context_bytes:
            raise StepError(
                f"the context grew to {size} bytes, over the limit of {self.settings.max_context_bytes}", fatal=True
            )

    # ------------------------------------------------------------ one step

    async def run_step(self, step: Step, context: dict[str, Any]) -> tuple[StepResult, bool]:
        """Run one step with its options; returns its result and whether a failure is fatal."""
        started_at, t0 = utc_now(), time.monotonic()
        log = self.log.bind(step=step.name, action=step.action)
        notes = StepNotes()

        def finish(status: str, output: Any = None, error: str | None = None) -> StepResult:
            duration = round((time.monotonic() - t0) * 1000, 3)
            return StepResult(
                name=step.name,
                action=step.action,
                status=status,
                started_at=started_at,
                duration_ms=duration,
                output=output,
                error=error,
                runner=notes.runner,
            )

        try:
            self.budget.spend()
            if step.when is not None and not await holds(step.when, context, strict=step.options.strict_templates):
                log.debug("step {} skipped: 'when' is false", step.path)
                return finish("skipped"), False
        except StepError as exc:
            log.warning("step {} failed: {}", step.path, exc.message)
            return finish("failed", error=f"when: {exc.message}" if not exc.fatal else exc.message), exc.fatal

        output, error = await self._attempts(step, context, log, notes)
        if error is not None:
            log.warning("step {} failed: {}", step.path, error.message)
            return finish("failed", output=error.output, error=error.message), error.fatal
        if step.options.output is not None:
            context[step.options.output] = output
        try:
            self.check_context(context)
        except StepError as exc:
            log.warning("step {} failed: {}", step.path, exc.message)
            return finish("failed", output=output, error=exc.message), True
        log.debug("step {} completed", step.path)
        return finish("completed", output=output), False

    async def _attempts(self, step: Step, context: dict[str, Any], log: Logger,
                        notes: StepNotes) -> tuple[Any, StepError | None]:
        """``(output, None)``, or ``(None, error)`` with the StepError of the last failed attempt."""
        retry = step.options.retry
        delay = retry.delay
        failure: StepError | None = None
        for attempt in range(1, retry.attempts + 1):
            try:
                return await self._attempt(step, context, notes), None
            except StepError as exc:
                failure = exc
            except Exception as exc:  # a bug in an action: keep the traceback, fail the step
                log.opt(exception=exc).error("step {} raised an unexpected error", step.path)
                failure = StepError(f"internal error: {type(exc).__name__}: {exc}")
            if failure.fatal or attempt == retry.attempts:
                break
            log.info("step {} attempt {}/{} failed ({}); retrying in {:g}s", step.path, attempt,
                     retry.attempts, failure.message, delay)  # fmt: skip
            await asyncio.sleep(delay)
            delay *= retry.backoff
        assert failure is not None
        return None, failure

    async def _attempt(self, step: Step, context: dict[str, Any], notes: StepNotes) -> Any:
        spec = get_action(step.action)
        if spec is None:  # validated steps always name a registered action
            raise StepError(f"unknown action {step.action!r}", fatal=True)
        # Secret values exist only in the rendered fields handed to the action (never in the context).
        values = await self.secrets.reveal(step.secrets) if step.secrets else None
        rendered = render(step.fields, context, strict=step.options.strict_templates, secrets=values)
        for key, check in spec.field_checks.items():
            problem = check(rendered[key]) if key in rendered else None
            if problem:
                raise StepError(f"{key}: {problem}")
        try:
            fields = msgspec.convert(rendered, spec.fields)
        except msgspec.ValidationError as exc:
            where, message = split_validation_error(exc)
            raise StepError(f"{where.lstrip('.') or 'fields'}: {message}") from None
        call = ActionCall(step=step, fields=fields, context=context, runtime=self, notes=notes)
        timeout = step.options.timeout
        if timeout is None:
            return await spec.run(call)
        limit = timeout + OWN_TIMEOUT_GRACE if spec.own_timeout else timeout
        try:
            async with asyncio.timeout(limit) as scope:
                return await spec.run(call)
        except TimeoutError:
            if scope.expired():
                raise StepError(f"timed out after {timeout:g}s") from None
            raise


def own_context(context: Any, settings: EngineSettings) -> dict[str, Any]:
    """A private deep copy of ``context`` (via JSON); raises PlaybookInvalid if it is not a JSON
    object or is larger than ``max_context_bytes``."""
    if not isinstance(context, dict):
        raise PlaybookInvalid.single("context", f"the context must be an object, got {type(context).__name__}")
    try:
        encoded = msgspec.json.encode(context)
    except (TypeError, msgspec.EncodeError) as exc:
        raise PlaybookInvalid.single("context", f"the context is not JSON: {exc}") from None
    if len(encoded) > settings.max_context_bytes:
        raise PlaybookInvalid.single(
            "context", f"the context is {len(encoded)} bytes, over the limit of {settings.max_context_bytes}"
        )
    copy: dict[str, Any] = msgspec.json.decode(encoded)
    return copy


async def run_playbook(
    playbook: Any,
    context: dict[str, Any],
    settings: EngineSettings,
    *,
    job_id: str | None = None,
    secrets: SecretSource | None = None,
) -> PlaybookResult:
    """Validate and run ``playbook`` on a private copy of ``context``.

    ``secrets`` gives the values of ``{{secrets.NAME}}`` (the node's vault); without it a step that
    references a secret fails saying that secrets need a node.

    Raises :class:`PlaybookInvalid` (before running anything) for an invalid playbook or context.
    Step failures do not raise: they give ``success=False`` and ``error``. ``CancelledError``
    propagates after the running step was torn down (script process groups killed).
    """
    book = playbook if isinstance(playbook, Playbook) else validate_playbook(playbook, settings)
    ctx = own_context(context, settings)
    run = Run(settings, job_id, budget=_Budget(settings.max_executed_steps),
              secrets=_Secrets(secrets if secrets is not None else NoSecrets()))
    # Debug only: the job's lifecycle (started, ended with its error) is the executor's to log, one line
    # per transition; these would double it.
    run.log.debug("playbook started: {} steps", len(book.steps))
    t0 = time.monotonic()
    try:
        results = await run.run_steps(book.steps, ctx)
    except StepsFailed as exc:
        run.log.debug("playbook failed after {:.0f} ms: {}", (time.monotonic() - t0) * 1000, exc.message)
        return PlaybookResult(success=False, results=exc.results, context=ctx, error=exc.message)
    except asyncio.CancelledError:
        run.log.debug("playbook cancelled after {:.0f} ms", (time.monotonic() - t0) * 1000)
        raise
    run.log.debug("playbook completed in {:.0f} ms", (time.monotonic() - t0) * 1000)
    return PlaybookResult(success=True, results=results, context=ctx)

"""Run and check playbooks without the queue: ``POST /playbook`` (synchronous, SecAuto compatibility)
and ``POST /validate``. ``POST /playbook/async`` is an alias of ``POST /cluster/jobs`` (see cluster.py).

Synchronous runs happen on the receiving node, outside the job slots, at most
``cluster.max_concurrent_jobs`` at a time (429 beyond that), each under ``cluster.job_timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from secauto.api.errors import ApiError, ErrorDetail, body_detail, playbook_details
from secauto.api.inputs import read_json
from secauto.api.roles import requires
from secauto.api.secret_refs import require_secrets, unknown_secret_details
from secauto.api.spec import operation, respond
from secauto.api.state import ENGINE, SETTINGS, SYNC_SLOTS, VAULT
from secauto.engine import (
    PlaybookInvalid,
    StepResult,
    load_playbook_file,
    resolve_named_playbook,
    run_playbook,
    validate_playbook,
)
from secauto.models import utc_now


class PlaybookRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /playbook`` and ``POST /validate``."""

    playbook: list[Any] | dict[str, Any] | None = None
    playbook_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    context: dict[str, Any] = {}


# /validate also takes a bare playbook (a JSON list), like `secauto validate FILE`.
ValidateBody = PlaybookRun | list[Any]


class RunResponse(msgspec.Struct, kw_only=True):
    """``POST /playbook``: ``success`` is false when a step failed the playbook (``error`` says why)."""

    success: bool
    results: list[StepResult]  # one per step that ran
    context: dict[str, Any]  # the context after the run
    error: str | None
    timestamp: str = msgspec.field(default_factory=utc_now)


class ValidateResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    valid: bool
    problems: list[ErrorDetail]  # empty when valid
    steps: int | msgspec.UnsetType = msgspec.UNSET  # how many steps, nested ones included (when valid)
    timestamp: str = msgspec.field(default_factory=utc_now)


def _problems(exc: PlaybookInvalid, body: PlaybookRun) -> list[ErrorDetail]:
    return playbook_details(exc.problems, "playbook" if body.playbook_name is None else "playbook_name")


def _load(body: PlaybookRun, request: web.Request) -> Any:
    if (body.playbook is None) == (body.playbook_name is None):
        field = "playbook" if body.playbook is None else "playbook_name"
        raise ApiError(400, "validation_error", "give exactly one of playbook or playbook_name",
                       [body_detail(field, "give exactly one of playbook or playbook_name")])
    if body.playbook_name is not None:
        return load_playbook_file(resolve_named_playbook(body.playbook_name, request.app[ENGINE]))
    return body.playbook


@requires("operator")
@operation("Run a playbook on this node now and answer its results", body=PlaybookRun, ok=RunResponse,
           errors=(429, 504), tag="playbooks", audit="playbook.run")
async def run_sync(request: web.Request) -> web.StreamResponse:
    """Runs on the receiving node outside the job slots, at most cluster.max_concurrent_jobs at a time
    (429 beyond that), within cluster.job_timeout (504 beyond that). A playbook that fails is a 200
    with success false."""
    body = await read_json(request, PlaybookRun)
    engine = request.app[ENGINE]
    try:
        playbook = validate_playbook(_load(body, request), engine)
    except PlaybookInvalid as exc:
        raise ApiError(400, "validation_error", f"invalid playbook: {exc}", _problems(exc, body)) from None
    await require_secrets(request, [playbook.secret_refs])
    slots = request.app[SYNC_SLOTS]
    if slots.locked():
        raise ApiError(429, "too_many_requests", "too many synchronous playbook runs on this node; retry, or "
                                                 "submit it as a job (POST /cluster/jobs)",
                       headers={"Retry-After": "1"})
    timeout = request.app[SETTINGS].config.cluster.job_timeout
    async with slots:
        try:
            result = await asyncio.wait_for(run_playbook(playbook, body.context, engine, secrets=request.app[VAULT]),
                                            timeout=timeout)
        except TimeoutError:
            raise ApiError(504, "timeout", f"the playbook did not finish within {timeout:g}s") from None
        except PlaybookInvalid as exc:  # the context itself (size, type) is checked at run time
            raise ApiError(400, "validation_error", f"invalid request: {exc}", _problems(exc, body)) from None
    return respond(request, RunResponse(success=result.success, results=result.results, context=result.context,
                                        error=result.error))


@requires("viewer")
@operation("Check a playbook without running it", body=ValidateBody, ok=ValidateResponse, tag="playbooks",
           audit=False)
async def validate(request: web.Request) -> web.StreamResponse:
    """The body is ``{playbook | playbook_name, context}`` as for POST /playbook, or a bare playbook (a
    list of steps). An invalid playbook is a 200 with valid false and one problem per mistake."""
    raw: PlaybookRun | list[Any] = await read_json(request, ValidateBody)
    body = PlaybookRun(playbook=raw) if isinstance(raw, list) else raw
    try:
        playbook = validate_playbook(_load(body, request), request.app[ENGINE])
    except PlaybookInvalid as exc:
        return respond(request, ValidateResponse(valid=False, problems=_problems(exc, body)))
    unknown = await unknown_secret_details(request, [playbook.secret_refs], ["playbook"])
    if unknown:
        return respond(request, ValidateResponse(valid=False, problems=unknown))
    return respond(request, ValidateResponse(valid=True, problems=[], steps=playbook.step_count))


ROUTES = [
    ("POST", "/playbook", run_sync),
    ("POST", "/validate", validate),
]

"""Run and check playbooks without the queue: ``POST /playbook`` (synchronous, SecAuto compatibility)
and ``POST /validate``. ``POST /playbook/async`` is an alias of ``POST /cluster/jobs`` (see cluster.py).

Synchronous runs happen on the receiving node, outside the job slots, at most
``cluster.max_concurrent_jobs`` at a time (429 beyond that), each under ``cluster.job_timeout``.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from aiohttp import web

from secauto.api.app import ENGINE, SETTINGS, read_json, requires
from secauto.api.errors import ApiError, ErrorDetail, json_response
from secauto.engine import PlaybookInvalid, load_playbook_file, resolve_named_playbook, run_playbook, validate_playbook

SYNC_SLOTS = web.AppKey("sync_slots", asyncio.Semaphore)


class PlaybookRun(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /playbook`` and ``POST /validate``."""

    playbook: list[Any] | dict[str, Any] | None = None
    playbook_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    context: dict[str, Any] = {}


def _problems(exc: PlaybookInvalid) -> list[ErrorDetail]:
    return [ErrorDetail(field="playbook", message=problem.message, path=problem.path) for problem in exc.problems]


def _load(body: PlaybookRun, request: web.Request) -> Any:
    if (body.playbook is None) == (body.playbook_name is None):
        raise ApiError(400, "validation_error", "give exactly one of playbook or playbook_name",
                       [ErrorDetail(field="playbook", message="give exactly one of playbook or playbook_name")])
    if body.playbook_name is not None:
        return load_playbook_file(resolve_named_playbook(body.playbook_name, request.app[ENGINE]))
    return body.playbook


async def _read_body(request: web.Request) -> PlaybookRun:
    # /validate also takes a bare playbook (a JSON list), like `secauto validate FILE`.
    if request.path == "/validate":
        raw = await read_json(request, Any)
        if isinstance(raw, list):
            return PlaybookRun(playbook=raw)
        try:
            return msgspec.convert(raw, PlaybookRun)
        except msgspec.ValidationError as exc:
            from secauto.api.app import validation_detail

            raise ApiError(400, "validation_error", "invalid request body", [validation_detail(exc)]) from None
    return await read_json(request, PlaybookRun)


@requires("operator")
async def run_sync(request: web.Request) -> web.StreamResponse:
    body = await _read_body(request)
    engine = request.app[ENGINE]
    try:
        playbook = validate_playbook(_load(body, request), engine)
    except PlaybookInvalid as exc:
        raise ApiError(400, "validation_error", f"invalid playbook: {exc}", _problems(exc)) from None
    slots = request.app[SYNC_SLOTS]
    if slots.locked():
        raise ApiError(429, "too_many_requests", "too many synchronous playbook runs on this node; retry, or "
                                                 "submit it as a job (POST /cluster/jobs)",
                       headers={"Retry-After": "1"})
    timeout = request.app[SETTINGS].config.cluster.job_timeout
    async with slots:
        try:
            result = await asyncio.wait_for(run_playbook(playbook, body.context, engine), timeout=timeout)
        except TimeoutError:
            raise ApiError(504, "timeout", f"the playbook did not finish within {timeout:g}s") from None
        except PlaybookInvalid as exc:  # the context itself (size, type) is checked at run time
            raise ApiError(400, "validation_error", f"invalid request: {exc}", _problems(exc)) from None
    return json_response({"success": result.success, "results": msgspec.to_builtins(result.results),
                          "context": result.context, "error": result.error})


@requires("viewer")
async def validate(request: web.Request) -> web.StreamResponse:
    body = await _read_body(request)
    try:
        playbook = validate_playbook(_load(body, request), request.app[ENGINE])
    except PlaybookInvalid as exc:
        problems = [msgspec.to_builtins(detail) for detail in _problems(exc)]
        return json_response({"success": True, "valid": False, "problems": problems})
    return json_response({"success": True, "valid": True, "problems": [], "steps": playbook.step_count})


ROUTES = [
    ("POST", "/playbook", run_sync),
    ("POST", "/validate", validate),
]

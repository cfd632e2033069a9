"""The API side of job dependencies (README, "Dependencies"): the graph check of a submission, the 400
for a submission the store refused because of a dependency, and the dependency fields of a job's view."""

from __future__ import annotations

import msgspec
from aiohttp import web

from actors.messages import GetDependencyState
from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.state import SYSTEM
from secauto.dependencies import MAX_DEPENDENTS, BatchPlan, Entry, GraphInvalid, plan_batch
from secauto.models import DependencyState, Job, JobStatus, JobView, job_dependencies_decoder, job_view_decoder
from secauto.store.jobs import DependencyRefused


def check_graph(entries: list[Entry], *, batch: bool) -> BatchPlan:
    """The dependency graph of a submission, checked (400 naming ``jobs[i].depends_on[k]``, or
    ``depends_on[k]`` for a single job)."""
    try:
        return plan_batch(entries)
    except GraphInvalid as exc:
        details = [ErrorDetail(field=problem.field if batch else problem.field.removeprefix("jobs[0]."),
                               message=problem.message) for problem in exc.problems]
        for detail in details:
            detail.path = f"$.{detail.field}"
        raise ApiError(400, "validation_error", f"invalid dependencies: {exc}", details) from None


def refusal_error(exc: DependencyRefused, submitted: list[Job], *, batch: bool) -> ApiError:
    """The 400 for a submission the store refused because of dependencies, naming every ``depends_on``
    entry of ``submitted`` (the jobs in submission order) that names one of them."""
    refused = set(exc.job_ids)
    details = []
    for index, job in enumerate(submitted):
        for position, parent in enumerate(job.depends_on or []):
            if parent in refused:
                field = f"jobs[{index}].depends_on[{position}]" if batch else f"depends_on[{position}]"
                details.append(ErrorDetail(field=field, message=_refusal(exc.problem, parent), path=f"$.{field}"))
    names = ", ".join(repr(job_id) for job_id in exc.job_ids)
    summary = f"no job {names}" if exc.problem == "unknown_dependency" else f"too many dependents for {names}"
    return ApiError(400, "validation_error", f"invalid dependencies: {summary}", details)


def _refusal(problem: str, job_id: str) -> str:
    if problem == "unknown_dependency":
        return f"no job {job_id!r} (never submitted, or expired after the retention period)"
    return f"job {job_id!r} already has the most dependents a job may have ({MAX_DEPENDENTS})"


async def with_dependencies(request: web.Request, raw: bytes) -> JobView:
    """The view of stored record ``raw``, with ``waiting_on`` and ``dependencies`` filled in from the store
    (one more round-trip, only for a job with dependencies)."""
    view = job_view_decoder.decode(raw)
    if not view.depends_on:
        return view
    # config_dict: the dashboard (a sub-app) shows dependencies too.
    waiting, statuses = await request.config_dict[SYSTEM].get("dispatcher").ask(
        GetDependencyState(view.id, view.depends_on), timeout=5.0)
    keys = job_dependencies_decoder.decode(raw).dependency_keys
    dependencies = {keys.get(job_id, job_id): DependencyState(id=job_id, status=msgspec.convert(status,
                                                                                                JobStatus | None))
                    for job_id, status in zip(view.depends_on, statuses, strict=True)}
    return msgspec.structs.replace(view, waiting_on=waiting if view.status == "waiting" else [],
                                   dependencies=dependencies)

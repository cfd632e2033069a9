"""The cluster resource: ``GET /cluster``, ``POST /cluster/jobs``, ``GET /cluster/jobs/{id}``."""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web
from msgspec import UNSET

from actors.core import AskTimeoutError
from actors.messages import ClusterView, GetClusterView, GetJob
from secauto.api.errors import RETRY_AFTER_S, ApiError, body_detail, playbook_details
from secauto.api.inputs import read_json
from secauto.api.job_dependencies import check_graph, refusal_error, with_dependencies
from secauto.api.roles import requires
from secauto.api.secret_refs import require_secrets
from secauto.api.spec import operation, respond, whole
from secauto.api.state import AUDIT_TARGET, ENGINE, IDENTITY, METRICS, SETTINGS, SUBMISSIONS, SYSTEM
from secauto.dependencies import KEY_PATTERN, MAX_DEPENDENCIES, Entry
from secauto.engine import PlaybookInvalid, load_playbook_file, resolve_named_playbook, validate_playbook
from secauto.engine.model import SecretRef
from secauto.models import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    DependencyFailurePolicy,
    Job,
    JobStatus,
    JobView,
    NodeView,
    new_job_id,
    utc_now,
)
from secauto.operations import cancel_job as cancel_job_of
from secauto.operations import retry_job as retry_job_of
from secauto.store.jobs import DependencyRefused, Quota, QuotaExceeded

JOB_ID_PATTERN = whole(r"[A-Za-z0-9_-]{1,100}")
_JOB_ID = re.compile(JOB_ID_PATTERN)
# Anything else is answered 404 (no such job) without asking the store.
JobId = Annotated[str, msgspec.Meta(pattern=JOB_ID_PATTERN, description="a job id, e.g. job-<32 hex digits>")]

Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=whole(r"[A-Za-z0-9_.:-]+"))]
BatchKey = Annotated[str, msgspec.Meta(pattern=whole(KEY_PATTERN), description="a name local to the batch")]
# A job id, or in a batch also the key of another entry.
DependencyName = Annotated[str, msgspec.Meta(pattern=whole(KEY_PATTERN),
                                             description="a job id, or in a batch the key of another entry")]


class JobSubmission(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /cluster/jobs``."""

    playbook: list[Any] | None = None
    playbook_name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    context: dict[str, Any] = {}
    priority: Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = []
    affinity: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] | None = None
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    delay: Annotated[float, msgspec.Meta(ge=0, le=366 * 86400)] | None = None
    run_at: Annotated[datetime.datetime, msgspec.Meta(tz=True)] | None = None  # RFC 3339 with a time zone
    # The job waits (status waiting) until these jobs completed.
    depends_on: Annotated[list[DependencyName], msgspec.Meta(max_length=MAX_DEPENDENCIES)] = []
    # When one of them ends failed or cancelled: cancel this job (and its own dependents), or run it anyway.
    on_dependency_failure: DependencyFailurePolicy = "cancel"

    def delay_ms(self) -> int:
        """How long to hold the job back: ``delay`` seconds, or until ``run_at`` (0: run now)."""
        if self.run_at is not None:
            return max(0, int((self.run_at.timestamp() - time.time()) * 1000))
        return int((self.delay or 0) * 1000)

    def run_at_utc(self) -> str | None:
        """``run_at`` as RFC 3339 UTC with milliseconds, for display."""
        if self.run_at is None:
            return None
        try:
            moment = self.run_at.astimezone(datetime.UTC)
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise ApiError(400, "validation_error", "run_at is out of range",
                           [body_detail("run_at", "out of range")]) from None
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_job(body: JobSubmission, request: web.Request, *, job_id: str | None = None,
              depends_on: list[str] | None = None,
              dependency_keys: dict[str, str] | None = None) -> tuple[Job, tuple[SecretRef, ...]]:
    """Validate the playbook (inline or named) and turn a submission into a pending Job; with it, the
    secrets its playbook references, with JSON paths into the submitted playbook (the steps, for a
    named playbook document), found by the same validation.

    ``depends_on`` are the dependencies' job ids (batch keys resolved; default: ``body.depends_on``),
    ``dependency_keys`` names those given by batch key. Raises ApiError 400 with one detail per problem,
    each naming its field (see ``playbook_details``).
    """
    settings = request.app[SETTINGS]
    engine = request.app[ENGINE]
    if (body.playbook is None) == (body.playbook_name is None):
        # Both missing: the playbook is; both given: the name is one too many.
        field = "playbook" if body.playbook is None else "playbook_name"
        raise ApiError(400, "validation_error", "give exactly one of playbook or playbook_name",
                       [body_detail(field, "give exactly one of playbook or playbook_name")])
    if body.delay is not None and body.run_at is not None:
        raise ApiError(400, "validation_error", "give at most one of delay or run_at",
                       [body_detail("run_at", "give at most one of delay or run_at")])
    playbook: Any = body.playbook
    try:
        if body.playbook_name is not None:
            playbook = load_playbook_file(resolve_named_playbook(body.playbook_name, engine))
        validated = validate_playbook(playbook, engine)
        if isinstance(playbook, dict):  # a playbook document {"steps": [...], "name": ...}
            playbook = playbook["steps"]
            validated = validate_playbook(playbook, engine)  # the paths of its references: into the steps
    except PlaybookInvalid as exc:
        field = "playbook" if body.playbook_name is None else "playbook_name"
        raise ApiError(400, "validation_error", f"invalid playbook: {exc}",
                       playbook_details(exc.problems, field)) from None
    cluster = settings.config.cluster
    identity = request.get(IDENTITY)
    parents = list(body.depends_on) if depends_on is None else depends_on
    return Job(
        id=job_id or new_job_id(),
        max_retries=cluster.max_retries if body.max_retries is None else body.max_retries,
        priority=body.priority,
        submitted_at=utc_now(),
        submitted_to=settings.node_id,
        submitted_by=identity.name if identity is not None else None,
        tags=list(body.tags),
        tag_list=",".join(body.tags) or None,
        affinity=body.affinity,
        run_at=body.run_at_utc(),
        timeout=body.timeout,
        playbook_name=body.playbook_name,
        playbook=playbook,
        context=body.context,
        depends_on=parents or UNSET,
        dependency_keys=dependency_keys or UNSET,
        parent_list=",".join(parents) or UNSET,
        on_dependency_failure=body.on_dependency_failure if parents else UNSET,
    ), validated.secret_refs


class ClusterInfo(msgspec.Struct, kw_only=True):
    cluster_name: str
    node_id: str  # the node that answered
    leader: str | None
    total_nodes: int
    nodes: list[NodeView]
    queue_size: int


class ClusterResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    cluster: ClusterInfo
    timestamp: str = msgspec.field(default_factory=utc_now)


class SubmitResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    job_id: str
    status: Literal["submitted"] = "submitted"
    timestamp: str = msgspec.field(default_factory=utc_now)


class BatchSubmitResponse(msgspec.Struct, kw_only=True):
    success: Literal[True] = True
    job_ids: list[str]  # in the order of the submitted jobs
    status: Literal["submitted"] = "submitted"
    timestamp: str = msgspec.field(default_factory=utc_now)


class JobResponse(msgspec.Struct, kw_only=True):
    """``GET /cluster/jobs/{job_id}``: the job's public view."""

    success: Literal[True] = True
    job: JobView
    timestamp: str = msgspec.field(default_factory=utc_now)


class JobStatusResponse(msgspec.Struct, kw_only=True):
    """A job's status changed on request (cancel, retry, DLQ requeue)."""

    success: Literal[True] = True
    job_id: str
    status: JobStatus
    previous_status: JobStatus
    timestamp: str = msgspec.field(default_factory=utc_now)


@requires("viewer")
@operation("The cluster: nodes with load and counters, leader, queue size", ok=ClusterResponse)
async def get_cluster(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    view: ClusterView = await request.app[SYSTEM].get("discovery").ask(GetClusterView(), timeout=5.0)
    return respond(request, ClusterResponse(cluster=ClusterInfo(
        cluster_name=settings.config.cluster.cluster_name,
        node_id=settings.node_id,
        leader=view.leader,
        total_nodes=len(view.nodes),
        nodes=[NodeView.of(node) for node in view.nodes],
        queue_size=view.queue_size,
    )))


async def store_jobs(request: web.Request, jobs: list[Job], delays_ms: list[int], timeout: float, *,  # noqa: ASYNC109
                     submitted: list[Job] | None = None, batch: bool = False) -> None:
    """Have the dispatcher's submit writer store ``jobs`` (in this order); returns once they are in
    Redis. Raises AskTimeoutError past ``timeout`` seconds and ActorDeadError if the node is stopping
    (both 503), or the Redis error. A dependency the store refuses is a 400 naming every ``depends_on`` entry of
    ``submitted`` (the same jobs in submission order; default ``jobs``) that names it."""
    stored = request.app[SUBMISSIONS].add(jobs, delays_ms, quota_of(request))
    # A plain timer rather than asyncio.timeout: the same bound for 2.2 instead of 3.7 us a request.
    expiry = asyncio.get_running_loop().call_later(timeout, _expire, stored, timeout)
    try:
        await stored
    except DependencyRefused as exc:
        raise refusal_error(exc, submitted or jobs, batch=batch) from None
    except QuotaExceeded as exc:
        request.app[METRICS].rate_limited.labels(code="quota_exceeded").inc()
        raise ApiError(429, "quota_exceeded", f"this key's quota is full: {exc}; retry once some of its jobs "
                                              "ended", headers={"Retry-After": RETRY_AFTER_S}) from None
    finally:
        expiry.cancel()


def _expire(stored: asyncio.Future[None], timeout: float) -> None:
    """The submission was not stored in time: its request answers 503 (the writer skips a done future)."""
    if not stored.done():
        stored.set_exception(AskTimeoutError(f"the jobs were not stored within {timeout:g}s"))


def quota_of(request: web.Request) -> Quota | None:
    """The calling key's max_pending quota, if it has one."""
    identity = request.get(IDENTITY)
    if identity is None or identity.max_pending is None:
        return None
    return Quota(key_name=identity.name, max_pending=identity.max_pending)


@requires("operator")
@operation("Submit a job", body=JobSubmission, ok=SubmitResponse, tag="jobs", audit="job.submit",
           description="Queue a playbook (inline, or by name from playbooks_dir) with its context. With "
                       "depends_on, the job waits until those jobs completed. POST /playbook/async is the same "
                       "operation.")
async def submit_job(request: web.Request) -> web.StreamResponse:
    body = await read_json(request, JobSubmission)
    if body.depends_on:  # no dependencies: no graph to check
        check_graph([Entry(None, body.depends_on)], batch=False)
    job, refs = build_job(body, request)
    request[AUDIT_TARGET] = job.id
    await require_secrets(request, [refs])
    await store_jobs(request, [job], [body.delay_ms()], timeout=10.0, batch=False)
    return respond(request, SubmitResponse(job_id=job.id))


class BatchEntry(JobSubmission, kw_only=True, forbid_unknown_fields=True):
    """A job of ``POST /cluster/jobs/batch``: a job body, plus ``key``, a name other entries' ``depends_on``
    may use for it."""

    key: BatchKey | None = None


class BatchSubmission(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The body of ``POST /cluster/jobs/batch``: up to MAX_BATCH jobs, stored in one round-trip."""

    jobs: Annotated[list[BatchEntry], msgspec.Meta(min_length=1, max_length=1000)]


@requires("operator")
@operation("Submit up to 1000 jobs, all or nothing", body=BatchSubmission, ok=BatchSubmitResponse, tag="jobs",
           audit="job.submit_batch",
           description="The batch is one atomic dependency graph: entries may carry a key and depend on other "
                       "entries by key, or on existing jobs by id.")
async def submit_batch(request: web.Request) -> web.StreamResponse:
    """All or nothing: if any job is invalid, none is stored and the details name ``jobs[i]``: the
    field ``jobs[i].playbook[2].script`` (a playbook problem keeps its path in the playbook,
    ``$[2].script``) or ``jobs[i].run_at`` with the path ``$.jobs[i].run_at``."""
    body = await read_json(request, BatchSubmission)
    plan = check_graph([Entry(item.key, item.depends_on) for item in body.jobs], batch=True)
    ids = [new_job_id() for _ in body.jobs]
    jobs: list[Job] = []
    refs: list[tuple[SecretRef, ...]] = []
    delays = []
    for index, item in enumerate(body.jobs):
        parents = [ids[parent] if isinstance(parent, int) else parent for parent in plan.parents[index]]
        keys = {ids[parent]: key for parent in plan.parents[index]
                if isinstance(parent, int) and (key := body.jobs[parent].key) is not None}
        try:
            job, job_refs = build_job(item, request, job_id=ids[index], depends_on=parents, dependency_keys=keys)
            jobs.append(job)
            refs.append(job_refs)
            delays.append(item.delay_ms())
        except ApiError as exc:
            for detail in exc.details:
                if detail.path == f"$.{detail.field}":  # a body field: its path is in the batch body
                    detail.path = f"$.jobs[{index}].{detail.field}"
                detail.field = f"jobs[{index}].{detail.field}"
            raise ApiError(exc.status, exc.code, f"jobs[{index}]: {exc.message}", exc.details) from None
    request[AUDIT_TARGET] = jobs[0].id if len(jobs) == 1 else f"{len(jobs)} jobs: {jobs[0].id} .. {jobs[-1].id}"
    await require_secrets(request, refs, [f"jobs[{index}].playbook" for index in range(len(jobs))])
    # Stored in dependency order (each job after those it depends on); answered in submission order.
    await store_jobs(request, [jobs[index] for index in plan.order], [delays[index] for index in plan.order],
                     timeout=30.0, submitted=jobs, batch=True)
    return respond(request, BatchSubmitResponse(job_ids=ids))


def job_id_from(request: web.Request) -> str:
    """The ``{job_id}`` path part; 404 for anything that cannot be a job id."""
    job_id = request.match_info["job_id"]
    if not _JOB_ID.match(job_id):
        raise ApiError(404, "not_found", f"no job {job_id[:100]!r}")
    return job_id


@requires("viewer")
@operation("A job: status, attempts, results, context", ok=JobResponse, path={"job_id": JobId}, errors=(404,),
           tag="jobs", description="The job: id, playbook, context, status, submitted_at, started_at, completed_at, "
                                   "assigned_to, results, retry_count, priority, tags, attempts, error, reason, ...")
async def get_job(request: web.Request) -> web.StreamResponse:
    job_id = job_id_from(request)
    raw: bytes | None = await request.app[SYSTEM].get("dispatcher").ask(GetJob(job_id), timeout=5.0)
    if raw is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (unknown, or expired after the retention period)")
    return respond(request, JobResponse(job=await with_dependencies(request, raw)))


@requires("operator")
@operation("Cancel a waiting, pending or running job", ok=JobStatusResponse, path={"job_id": JobId},
           errors=(404, 409), tag="jobs", audit="job.cancel")
async def cancel_job(request: web.Request) -> web.StreamResponse:
    """Cancel a waiting or pending job at once, a running one within a second on the node that runs it;
    409 if the job already ended. Its dependents are settled as for any cancelled dependency (by
    default they are cancelled too, with reason dependency_failed, and so on down)."""
    job_id = job_id_from(request)
    change = await cancel_job_of(request.app[SYSTEM].get("dispatcher"), job_id)
    if change is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if not change.applied:
        raise ApiError(409, "conflict", f"job {change.job_id} is already {change.before}; only waiting, pending or "
                                        "running jobs can be cancelled")
    return respond(request, JobStatusResponse(job_id=change.job_id, status="cancelled", previous_status=change.before))


@requires("operator")
@operation("Run a failed or cancelled job again", ok=JobStatusResponse, path={"job_id": JobId},
           errors=(404, 409), tag="jobs", audit="job.retry")
async def retry_job(request: web.Request) -> web.StreamResponse:
    """Run a failed or cancelled job again, with a fresh retry budget; 409 for a job in another state.
    A job with dependencies enters them again: ``status`` says whether it is pending, waiting, or
    cancelled again at once (a dependency failed and its policy is cancel)."""
    job_id = job_id_from(request)
    change = await retry_job_of(request.app[SYSTEM].get("dispatcher"), job_id)
    if change is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    if change.after is None:
        raise ApiError(409, "conflict", f"job {change.job_id} is {change.before}; only failed or cancelled jobs "
                                        "can be retried")
    return respond(request, JobStatusResponse(job_id=change.job_id, status=change.after, previous_status=change.before))


ROUTES = [
    ("GET", "/cluster", get_cluster),
    ("POST", "/cluster/jobs", submit_job),
    ("POST", "/cluster/jobs/batch", submit_batch),
    ("GET", "/cluster/jobs/{job_id}", get_job),
    ("DELETE", "/cluster/jobs/{job_id}", cancel_job),
    ("POST", "/cluster/jobs/{job_id}/retry", retry_job),
    ("POST", "/playbook/async", submit_job),
]

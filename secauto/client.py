"""An async Python client for a SecAuto node's HTTP API (aiohttp).

::

    async with SecautoClient("http://127.0.0.1:8080", api_key) as client:
        job_id = await client.submit([{"action": "run_script", "script": "baseit.py",
                                       "parameters": {"target": "192.168.1.1"}}], {"env": "prod"})
        job = await client.wait(job_id, timeout=30)

Every method raises :class:`SecautoError` when the node answers with an error body
(``{"success": false, "error": {code, message, details}}``) or with something that is not the
expected JSON, and also when the node cannot be reached (``status`` 0, ``code``
``"connection_error"``) or does not answer within the request timeout (``status`` 0, ``code``
``"timeout"``). Bodies are encoded and decoded with msgspec, so large batches stay cheap for the caller.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlencode

import aiohttp
import msgspec

__all__ = ["FINISHED_STATUSES", "MAX_BATCH", "UNFINISHED_STATUSES", "SecautoClient", "SecautoError"]

#: The most jobs ``POST /cluster/jobs/batch`` accepts in one request.
MAX_BATCH: Final = 1000
#: Job statuses after which a job does not change any more.
FINISHED_STATUSES: Final = frozenset({"completed", "failed", "cancelled"})
#: The others: waiting (for its dependencies), pending (queued), running.
UNFINISHED_STATUSES: Final = frozenset({"waiting", "pending", "running"})

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class SecautoError(Exception):
    """An error answer from a node, or a failure to get an answer at all.

    ``status`` is the HTTP status (0 when no HTTP answer arrived), ``code`` the API's error code
    (``validation_error``, ``unauthorized``, ``not_found``, ...; ``connection_error``, ``timeout`` or
    ``bad_response`` when the failure is on the way), ``message`` a readable sentence, ``details`` the
    API's list of ``{field, message, path}`` objects (empty when there are none) and ``retry_after``
    the seconds of a ``Retry-After`` header (503 while Redis is unreachable), else None.
    """

    def __init__(self, status: int, code: str, message: str, details: Sequence[Mapping[str, Any]] | None = None,
                 *, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: list[dict[str, Any]] = [dict(detail) for detail in details or ()]
        self.retry_after = retry_after


class SecautoClient:
    """A connection pool to one node. Use it as ``async with SecautoClient(url, key) as client``.

    ``url`` is the node's base URL (``http://host:port``), ``api_key`` is sent as
    ``Authorization: Bearer KEY`` (None sends no key: only ``health()``/``live()`` then work),
    ``request_timeout`` bounds each HTTP request in seconds, and ``max_connections`` bounds the
    concurrent connections of the pool. For an ``https://`` node whose certificate a private CA
    signed, ``ca_file`` names that CA's PEM file (otherwise the system's trust store decides). Calling
    a method outside the ``async with`` block (or after ``close()``) raises ``RuntimeError``.
    """

    def __init__(self, url: str, api_key: str | None = None, *, request_timeout: float = 30.0,
                 max_connections: int = 100, ca_file: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.ca_file = ca_file
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the connection pool (``async with`` does this); a second call does nothing."""
        if self._session is not None:
            return
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            connector=aiohttp.TCPConnector(limit=self.max_connections, ssl=self._tls()),
        )

    def _tls(self) -> ssl.SSLContext | bool:
        """Certificate checks always on; a private CA when ``ca_file`` is given. Raises OSError or
        ssl.SSLError for a CA file that cannot be read."""
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True

    async def close(self) -> None:
        """Close the connection pool; safe to call more than once."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # -- jobs -----------------------------------------------------------------------------------------

    @staticmethod
    def job_body(playbook: Sequence[Any] | str, context: Mapping[str, Any] | None = None, *,
                 priority: int | None = None, tags: Sequence[str] | None = None, affinity: str | None = None,
                 timeout: float | None = None, max_retries: int | None = None, delay: float | None = None,
                 run_at: str | None = None, depends_on: Sequence[str] | None = None,
                 on_dependency_failure: str | None = None, key: str | None = None) -> dict[str, Any]:
        """The JSON body of one job, as ``submit`` sends it and ``submit_batch`` takes it.

        ``playbook`` is a list of steps, or a string naming a playbook in the node's playbooks_dir
        (sent as ``playbook_name``). ``depends_on`` names the jobs it waits for (job ids; in a batch
        also other entries' ``key``), ``on_dependency_failure`` is ``cancel`` (the node's default) or
        ``run``, ``key`` names the job inside a batch (``submit_batch`` only). Options left at None are
        not sent, so the node's defaults apply. Nothing is validated here: the node does it and answers
        400 with the field paths.
        """
        body: dict[str, Any] = (
            {"playbook_name": playbook} if isinstance(playbook, str) else {"playbook": list(playbook)}
        )
        body["context"] = dict(context) if context is not None else {}
        options: dict[str, Any] = {"priority": priority, "tags": None if tags is None else list(tags),
                                   "affinity": affinity, "timeout": timeout, "max_retries": max_retries,
                                   "delay": delay, "run_at": run_at,
                                   "depends_on": None if depends_on is None else list(depends_on),
                                   "on_dependency_failure": on_dependency_failure, "key": key}
        body.update({key: value for key, value in options.items() if value is not None})
        return body

    async def submit(self, playbook: Sequence[Any] | str, context: Mapping[str, Any] | None = None, *,
                     priority: int | None = None, tags: Sequence[str] | None = None, affinity: str | None = None,
                     # the job's run-time limit, sent to the node (not a timeout of this call)
                     timeout: float | None = None,  # noqa: ASYNC109
                     max_retries: int | None = None, delay: float | None = None,
                     run_at: str | None = None, depends_on: Sequence[str] | None = None,
                     on_dependency_failure: str | None = None) -> str:
        """Submit one job (``POST /cluster/jobs``) and return its id.

        ``playbook`` and the options are as in :meth:`job_body` (``timeout`` is the job's run-time
        limit in seconds, not a request timeout; with ``depends_on`` the job is ``waiting`` until those
        jobs completed). Raises :class:`SecautoError`: 400 with details naming the bad field (an unknown
        dependency: ``depends_on[i]``), 401/403 for a missing, wrong or under-privileged key, 503 while
        the node cannot reach Redis (see ``retry_after``).
        """
        body = self.job_body(playbook, context, priority=priority, tags=tags, affinity=affinity, timeout=timeout,
                             max_retries=max_retries, delay=delay, run_at=run_at, depends_on=depends_on,
                             on_dependency_failure=on_dependency_failure)
        answer = await self._request("POST", "/cluster/jobs", body)
        return str(self._field(answer, "job_id", str))

    async def submit_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Submit up to :data:`MAX_BATCH` jobs in one request (``POST /cluster/jobs/batch``).

        Each item is a job body (see :meth:`job_body`). Returns the job ids in the order of ``jobs``;
        an empty sequence returns ``[]`` without a request. The node stores all of them or none: on
        any invalid job it answers 400 (raised as :class:`SecautoError`, details naming ``jobs[i]``).
        More than :data:`MAX_BATCH` jobs raise ``ValueError`` before anything is sent, since splitting
        them here would lose that all-or-nothing guarantee: split them yourself.
        """
        if not jobs:
            return []
        if len(jobs) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} jobs, got {len(jobs)}; split it")
        answer = await self._request("POST", "/cluster/jobs/batch", {"jobs": list(jobs)})
        ids = self._field(answer, "job_ids", list)
        if len(ids) != len(jobs) or not all(isinstance(job_id, str) for job_id in ids):
            raise SecautoError(200, "bad_response", f"expected {len(jobs)} job ids, got {ids!r:.200}")
        return [str(job_id) for job_id in ids]

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """The job's public view (``GET /cluster/jobs/{id}``): id, status, playbook, context,
        submitted_at, submitted_by, started_at, completed_at, assigned_to, attempt, results, attempts, ...

        Raises :class:`SecautoError` 404 (``not_found``) for an unknown or expired job id.
        """
        answer = await self._request("GET", f"/cluster/jobs/{job_id}")
        return dict(self._field(answer, "job", dict))

    async def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:  # noqa: ASYNC109
        """Poll :meth:`get_job` every ``poll`` seconds until the job is completed, failed or cancelled
        (a ``waiting`` job, whose dependencies have not all ended, is still unfinished), and return its
        record (a failed job is returned, not raised: look at ``status`` and ``error``).

        Raises ``TimeoutError`` if the job has not finished after ``timeout`` seconds, and
        :class:`SecautoError` as :meth:`get_job` does (404 if the job is unknown).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            job = await self.get_job(job_id)
            if job.get("status") in FINISHED_STATUSES:
                return job
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(f"job {job_id} still {job.get('status')!r} after {timeout:g}s")
            await asyncio.sleep(min(poll, left))

    async def list_jobs(self, *, status: str | None = None, tag: str | None = None, node: str | None = None,
                        limit: int = 50, cursor: str | None = None,
                        schedule: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``GET /cluster/jobs`` (job summaries, newest first) and the cursor of the next
        page (None at the end)."""
        query = {key: value for key, value in (("status", status), ("tag", tag), ("node", node),
                                               ("schedule", schedule), ("limit", str(limit)), ("cursor", cursor))
                 if value is not None}
        answer = await self._request("GET", "/cluster/jobs?" + urlencode(query))
        cursor_next = answer.get("next_cursor")
        return list(self._field(answer, "jobs", list)), cursor_next if isinstance(cursor_next, str) else None

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """``DELETE /cluster/jobs/{id}``; raises :class:`SecautoError` 404/409 when it cannot."""
        return await self._request("DELETE", f"/cluster/jobs/{quote(job_id, safe='')}")

    async def retry(self, job_id: str) -> dict[str, Any]:
        """``POST /cluster/jobs/{id}/retry`` for a failed or cancelled job."""
        return await self._request("POST", f"/cluster/jobs/{quote(job_id, safe='')}/retry")

    async def dead_letters(self, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """``GET /cluster/dlq``: ``{size, offset, jobs}``."""
        answer = await self._request("GET", f"/cluster/dlq?limit={limit}&offset={offset}")
        return dict(self._field(answer, "dlq", dict))

    async def requeue_dead_letter(self, job_id: str) -> dict[str, Any]:
        return await self._request("POST", f"/cluster/dlq/{quote(job_id, safe='')}/requeue")

    async def delete_dead_letter(self, job_id: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/cluster/dlq/{quote(job_id, safe='')}")

    async def events(self, *, job_id: str | None = None, kind: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """Follow ``GET /cluster/events`` (Server-Sent Events) and yield each event as a dict, until the
        node closes the stream. Raises :class:`SecautoError` for an error answer or a lost connection;
        the request timeout does not apply to the stream."""
        if self._session is None:
            raise RuntimeError("SecautoClient is not open: use `async with SecautoClient(...) as client`")
        query = urlencode({key: value for key, value in (("job_id", job_id), ("type", kind)) if value})
        try:
            async with self._session.get(f"{self.url}/cluster/events?{query}",
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=10)) as response:
                if response.status != 200:
                    raw = await response.read()
                    answer = _decode(raw) if raw.startswith(b"{") else {}
                    error = answer.get("error") if isinstance(answer, dict) else None
                    error = error if isinstance(error, dict) else {}
                    raise SecautoError(response.status, str(error.get("code") or "error"),
                                       str(error.get("message") or f"HTTP {response.status}"))
                async for line in response.content:
                    if line.startswith(b"data: "):
                        yield dict(_decode(line[6:]))
        except aiohttp.ClientError as exc:
            raise SecautoError(0, "connection_error", f"event stream: {exc or type(exc).__name__}") from exc

    # -- schedules ------------------------------------------------------------------------------------

    async def schedules(self) -> list[dict[str, Any]]:
        """Every schedule (``GET /schedules``): definition, ``paused``, ``next_fires``, ``last_fire``."""
        answer = await self._request("GET", "/schedules")
        return list(self._field(answer, "schedules", list))

    async def schedule(self, name: str) -> dict[str, Any]:
        """One schedule with its ``history`` (``GET /schedules/{name}``); 404 raises SecautoError."""
        answer = await self._request("GET", f"/schedules/{quote(name, safe='')}")
        return dict(self._field(answer, "schedule", dict))

    async def create_schedule(self, definition: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /schedules`` (409 if the name exists). ``definition`` has ``name``, ``cron`` or
        ``every``, the job fields and the options of the README's Schedules section."""
        answer = await self._request("POST", "/schedules", dict(definition))
        return dict(self._field(answer, "schedule", dict))

    async def put_schedule(self, name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        """``PUT /schedules/{name}``: create or replace (409 managed_by_config for config schedules)."""
        answer = await self._request("PUT", f"/schedules/{quote(name, safe='')}", dict(definition))
        return dict(self._field(answer, "schedule", dict))

    async def delete_schedule(self, name: str) -> dict[str, Any]:
        return await self._request("DELETE", f"/schedules/{quote(name, safe='')}")

    async def pause_schedule(self, name: str, note: str | None = None) -> dict[str, Any]:
        """Pause: its slots are recorded ``paused`` until :meth:`resume_schedule`."""
        body = {"note": note} if note else None
        answer = await self._request("POST", f"/schedules/{quote(name, safe='')}/pause", body)
        return dict(self._field(answer, "schedule", dict))

    async def resume_schedule(self, name: str, note: str | None = None) -> dict[str, Any]:
        """Resume from now: the slots that passed while paused do not fire."""
        body = {"note": note} if note else None
        answer = await self._request("POST", f"/schedules/{quote(name, safe='')}/resume", body)
        return dict(self._field(answer, "schedule", dict))

    async def trigger_schedule(self, name: str) -> str:
        """Run one job of the schedule now; returns its id."""
        answer = await self._request("POST", f"/schedules/{quote(name, safe='')}/trigger")
        return str(self._field(answer, "job_id", str))

    # -- cluster and health ---------------------------------------------------------------------------

    async def cluster(self) -> dict[str, Any]:
        """The cluster view (``GET /cluster``): cluster_name, node_id, leader, total_nodes, nodes
        (each with id, status, load, jobs_running, jobs_completed, capacity, ...) and queue_size.

        Raises :class:`SecautoError` (401/403 without a viewer key).
        """
        answer = await self._request("GET", "/cluster")
        return dict(self._field(answer, "cluster", dict))

    async def health(self) -> dict[str, Any]:
        """The readiness report (``GET /health``, no key needed): ``status`` is ``"healthy"``, or
        ``"degraded"`` with a ``reason`` when the node cannot reach Redis.

        A degraded node answers 503; that body is returned too, since it is a report, not a failure.
        Any other error answer raises :class:`SecautoError`.
        """
        return await self._request("GET", "/health", accept=(200, 503), report=True)

    async def live(self) -> dict[str, Any]:
        """The liveness report (``GET /health/live``): answered while the node's event loop runs."""
        return await self._request("GET", "/health/live")

    # -- internals ------------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: Any = None,
                       accept: tuple[int, ...] = (200,), report: bool = False) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("SecautoClient is not open: use `async with SecautoClient(...) as client`")
        data = None if body is None else _encode(body)
        headers = None if data is None else {"Content-Type": "application/json"}
        try:
            async with self._session.request(method, self.url + path, data=data, headers=headers) as response:
                raw = await response.read()
                status = response.status
                retry_after = _seconds(response.headers.get("Retry-After"))
        except TimeoutError:
            raise SecautoError(0, "timeout", f"{method} {path}: no answer within {self.request_timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise SecautoError(0, "connection_error", f"{method} {path}: {exc or type(exc).__name__}") from exc
        try:
            answer = _decode(raw)
        except msgspec.DecodeError:
            answer = None
        if not isinstance(answer, dict):
            snippet = raw[:200].decode("utf-8", errors="replace")
            raise SecautoError(status, "bad_response", f"{method} {path}: expected a JSON object, got {snippet!r}",
                               retry_after=retry_after)
        if status in accept and (report or answer.get("success") is not False):
            return answer
        error = answer.get("error")
        if isinstance(error, dict):
            details = error.get("details")
            raise SecautoError(status, str(error.get("code") or "error"), str(error.get("message") or ""),
                               [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
                               retry_after=retry_after)
        raise SecautoError(status, "bad_response", f"{method} {path}: HTTP {status} without an error object",
                           retry_after=retry_after)

    @staticmethod
    def _field(answer: Mapping[str, Any], name: str, kind: type) -> Any:
        value = answer.get(name)
        if not isinstance(value, kind):
            raise SecautoError(200, "bad_response", f"the answer has no {name!r} {kind.__name__}")
        return value


def _seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None

"""``/ui/dlq``: the dead-letter queue in pages, and acting on the jobs one selected there.

Requeue (operators) and delete (admins) act only on the jobs ticked on the page, never on "all": the
selection goes to a confirmation page that names each job and the count, and only its POST acts. The
list itself is not refreshed live (a refresh would undo the ticks); its size is.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec
from aiohttp import web

from secauto.api.cluster import JOB_ID_PATTERN
from secauto.api.spec import audited
from secauto.api.state import AUDIT_TARGET, SYSTEM
from secauto.operations import dead_letters, delete_dead_letter, requeue_dead_letter
from secauto.ui.access import access
from secauto.ui.errors import PageError, read_query
from secauto.ui.render import render
from secauto.ui.sessions import is_fragment, redirect
from secauto.ui.state import VISITOR

PAGE_SIZE = 50
MAX_SELECTED = 100
_JOB_ID = re.compile(JOB_ID_PATTERN)
ACTION_ROLE = {"requeue": "operator", "delete": "admin"}


class DlqQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    offset: Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)] = 0
    done: Literal["requeue", "delete"] | None = None
    count: Annotated[int, msgspec.Meta(ge=0, le=MAX_SELECTED)] = 0
    missing: Annotated[int, msgspec.Meta(ge=0, le=MAX_SELECTED)] = 0


def _selected(values: list[str]) -> list[str]:
    """The ticked job ids, each once, in order; 400 for none, too many, or one that is not a job id."""
    jobs = list(dict.fromkeys(value.strip() for value in values))
    if not jobs:
        raise PageError(400, "Select at least one job.")
    if len(jobs) > MAX_SELECTED:
        raise PageError(400, f"Select at most {MAX_SELECTED} jobs at a time.")
    bad = next((job for job in jobs if not _JOB_ID.match(job)), None)
    if bad is not None:
        raise PageError(400, f"job: {bad[:100]!r} is not a job id")
    return jobs


def _notice(query: DlqQuery) -> str | None:
    if query.done is None:
        return None
    verb = "requeued" if query.done == "requeue" else "deleted"
    text = f"{query.count} job(s) {verb}."
    if query.missing:
        text += f" {query.missing} were no longer in the dead-letter queue."
    return text


@access("viewer")
async def dlq_page(request: web.Request) -> web.StreamResponse:
    query = read_query(request, DlqQuery)
    size, jobs = await dead_letters(request.config_dict[SYSTEM].get("dispatcher"),
                                    offset=0 if is_fragment(request) else query.offset,
                                    limit=0 if is_fragment(request) else PAGE_SIZE)
    context = {
        "nav": "dlq",
        "live": True,
        "size": size,
        "jobs": jobs,
        "offset": query.offset,
        "page_size": PAGE_SIZE,
        "notice": _notice(query),
    }
    return render(request, "dlq_live.html" if is_fragment(request) else "dlq.html", context)


@access("operator")
async def dlq_confirm(request: web.Request) -> web.StreamResponse:
    """The confirmation page of a requeue or delete of the ticked jobs (nothing changes here)."""
    action = request.query.get("action", "")
    if action not in ACTION_ROLE:
        raise PageError(400, "action: must be requeue or delete")
    visitor = request[VISITOR]
    if action == "delete" and visitor.identity.role != "admin":
        raise PageError(403, "Deleting dead-lettered jobs needs the admin role.")
    jobs = _selected(request.query.getall("job", []))
    return render(request, "dlq_confirm.html", {"nav": "dlq", "action": action, "jobs": jobs})


async def _act(request: web.Request, action: Literal["requeue", "delete"]) -> web.StreamResponse:
    form = await request.post()
    jobs = _selected([value for value in form.getall("job", []) if isinstance(value, str)])
    request[AUDIT_TARGET] = ",".join(jobs)[:200]
    if form.get("count") != str(len(jobs)):
        raise PageError(400, "count: does not match the selected jobs; go back to the dead-letter queue and "
                             "select again.")
    dispatcher = request.config_dict[SYSTEM].get("dispatcher")
    done = 0
    for job_id in jobs:
        if action == "requeue":
            ok = await requeue_dead_letter(dispatcher, job_id) is not None
        else:
            ok = await delete_dead_letter(dispatcher, job_id)
        done += ok
    return redirect(f"/ui/dlq?done={action}&count={done}&missing={len(jobs) - done}")


@access("operator")
@audited("dlq.requeue")
async def dlq_requeue(request: web.Request) -> web.StreamResponse:
    return await _act(request, "requeue")


@access("admin")
@audited("dlq.delete")
async def dlq_delete(request: web.Request) -> web.StreamResponse:
    return await _act(request, "delete")


ROUTES = [
    ("GET", "/dlq", dlq_page),
    ("GET", "/dlq/confirm", dlq_confirm),
    ("POST", "/dlq/requeue", dlq_requeue),
    ("POST", "/dlq/delete", dlq_delete),
]

"""Checking, when a playbook is accepted, that the secrets it references exist.

``{{secrets.NAME}}`` is resolved only when the step runs; the API refuses a job (or a synchronous run)
whose playbook names an unknown secret at once, with 400 naming the secret and the JSON path of the
value using it, rather than letting it fail later. Playbooks that a ``play`` step loads at run time
are not checked here: an unknown secret there fails that step. (``secauto validate`` cannot check
names: it has no store.)
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from secauto.api.errors import ApiError, ErrorDetail
from secauto.api.state import VAULT
from secauto.engine.model import SecretRef


async def unknown_secret_details(request: web.Request, refs: Sequence[Sequence[SecretRef]],
                                 fields: Sequence[str]) -> list[ErrorDetail]:
    """One detail per reference to a secret that is not stored; ``refs[i]`` are the references of
    the playbook that ``fields[i]`` names (``playbook``, ``jobs[3].playbook``). One Redis call."""
    names = {ref.name for item in refs for ref in item}
    if not names:
        return []
    missing = set(await request.app[VAULT].missing(names))
    return [ErrorDetail(field=field, message=f"unknown secret {ref.name!r}", path=ref.path)
            for item, field in zip(refs, fields, strict=True) for ref in item if ref.name in missing]


async def require_secrets(request: web.Request, refs: Sequence[Sequence[SecretRef]],
                          fields: Sequence[str] = ("playbook",)) -> None:
    """Raise ApiError 400 naming every unknown secret (the first one in the message)."""
    details = await unknown_secret_details(request, refs, fields)
    if details:
        first = details[0]
        where = f"{first.field.removesuffix('.playbook')}: " if first.field != "playbook" else ""
        raise ApiError(400, "validation_error", f"{where}{first.message} (used at {first.path})", details)

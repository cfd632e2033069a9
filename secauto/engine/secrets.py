"""Secrets in playbooks: ``{{secrets.NAME}}`` and where a run gets the values from.

* A step references a stored secret as ``{{secrets.NAME}}`` in ``run_script``'s ``parameters`` and in
  ``http_request``'s ``url``, ``headers``, ``json`` and ``body``. Anywhere else (other fields and
  actions, conditions, ``var``) a path rooted at ``secrets`` is a validation problem: the value would
  end up in the context, a log line or an error message for no use.
* The reference is resolved when the step runs, never earlier: the stored job keeps the template text,
  the context never holds the value, and a context key named ``secrets`` is never read by these
  templates (it cannot shadow or inject a secret).
* A secret reference takes no default (``{{secrets.X|y}}`` is refused) and names exactly one secret
  (``{{secrets}}`` and ``{{secrets.X.y}}`` are refused).
* A run gets the values from a :class:`SecretSource` (the node's vault). Without one (``secauto run``),
  a step that uses a secret fails saying that secrets need a node.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Protocol

from secauto.engine.errors import StepError

SECRETS_ROOT = "secrets"
SECRET_NAME_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_NAME_RE = re.compile(SECRET_NAME_PATTERN)
WHERE_ALLOWED = ("secrets can only be used as {{secrets.NAME}} in run_script parameters and in the url, headers, "
                 "json and body of http_request")


class SecretUnavailable(StepError):
    """A step needs a secret that cannot be had: unknown, no key on this node, not decryptable, or the
    store unreachable. The message names the secret and says why, in one line."""


class SecretSource(Protocol):
    """Where a run gets secret values (the node's vault)."""

    async def reveal(self, names: Collection[str]) -> Mapping[str, str]:
        """The values of ``names``; raises :class:`SecretUnavailable` naming the first secret that
        cannot be had. Every value returned is registered for redaction before it is returned."""
        ...


def is_secret_path(path: str) -> bool:
    """Whether a variable path is rooted at ``secrets`` (and so never reads the context)."""
    return path == SECRETS_ROOT or path.startswith(SECRETS_ROOT + ".")


def secret_name(path: str) -> str:
    """The secret a ``secrets.NAME`` path names; raises ValueError with a readable message otherwise."""
    _, _, name = path.partition(".")
    if not name:
        raise ValueError("name a secret: {{secrets.NAME}}")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"bad secret name {name[:80]!r}: use 1-64 letters, digits, '_' or '-'")
    return name


def secret_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a secret, or None."""
    if not _NAME_RE.fullmatch(name):
        return "a secret name is 1-64 letters, digits, '_' or '-'"
    return None


class NoSecrets:
    """The source of runs that have no secret store (``secauto run``, tests)."""

    async def reveal(self, names: Collection[str]) -> Mapping[str, str]:
        first = sorted(names)[0] if names else "?"
        raise SecretUnavailable(f"secret {first!r} cannot be used here: secrets are only available to jobs run by a "
                                "node (POST /secrets)")

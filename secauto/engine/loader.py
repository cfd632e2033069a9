"""Loading playbook files (YAML or JSON) and resolving named playbooks inside ``playbooks_dir``.

YAML is read with a safe loader that also refuses aliases (``*name``); files are at most 1 MiB.

Both functions raise :class:`PlaybookInvalid` (with the path ``$`` and a clear message) and nothing
else: unreadable files, bad syntax, names that try to leave the folder, missing playbooks.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from secauto.engine.errors import PlaybookInvalid, short
from secauto.engine.settings import EngineSettings

MAX_FILE_BYTES = 1_048_576
# Names: segments of letters, digits, '_', '-', '.', separated by '/'; no segment may be '.' or '..'.
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$")
EXTENSIONS = ("", ".yaml", ".yml", ".json")


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader without aliases: ``*ref`` can make a small file expand into an exponentially large
    document (the "billion laughs"), which validation would then have to walk."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call, unused-ignore]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not supported in playbooks", event.start_mark
            )
        return super().compose_node(parent, index)


def load_playbook_file(path: Path) -> Any:
    """Read ``path`` and parse it as YAML (JSON is YAML too, ``.json`` files are read as JSON)."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PlaybookInvalid.single("$", f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise PlaybookInvalid.single("$", f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PlaybookInvalid.single("$", f"{path} is not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        return _parse_json(text, path)
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PlaybookInvalid.single("$", f"{path} is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise PlaybookInvalid.single("$", f"{path} is nested too deeply") from None


def _parse_json(text: str, path: Path) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlaybookInvalid.single(
            "$", f"{path} is not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise PlaybookInvalid.single("$", f"{path} is nested too deeply") from None


def playbook_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a playbook (see :func:`resolve_named_playbook`), or None."""
    if not isinstance(name, str) or len(name) > 200 or not NAME_RE.fullmatch(name) or ".." in name.split("/"):
        return f"bad playbook name {short(name)}: use letters, digits, '_', '-', '.' and '/'"
    return None


def resolve_named_playbook(name: str, settings: EngineSettings) -> Path:
    """The file for playbook ``name`` in ``settings.playbooks_dir``: tries the name as given, then
    with ``.yaml``, ``.yml`` and ``.json``. Subfolders (``team/triage``) are allowed; ``..``, absolute
    paths and symlinks leading out of the folder are not."""
    problem = playbook_name_problem(name)
    if problem:
        raise PlaybookInvalid.single("$", problem)
    root = settings.playbooks_dir.resolve()
    for ext in EXTENSIONS:
        candidate = root / f"{name}{ext}"
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if not resolved.is_relative_to(root):
            raise PlaybookInvalid.single("$", f"playbook {name!r} resolves outside the playbooks folder; refused")
        if resolved.is_file():
            return resolved
    raise PlaybookInvalid.single("$", f"no playbook named {name!r} in {root}")

"""Engine settings: where scripts and playbooks live, the script interpreter and runner, and the limits.

The node builds one :class:`EngineSettings` from ``config.engine`` (plus ``sys.executable`` when no
interpreter is configured) and attaches its warm runner; tests build their own. Nothing here reads
the environment or the disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from secauto.engine.netguard import HttpPolicy
from secauto.engine.script_limits import ScriptLimits, ScriptUser
from secauto.engine.warm import WarmRunner
from secauto.engine.warm_runner import DEFAULT_PRELOAD


class EngineSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything the engine needs to run playbooks; immutable and shared by all runs."""

    scripts_dir: Path
    playbooks_dir: Path
    python: str  # interpreter for scripts (the caller passes sys.executable by default)
    script_timeout: float = 60.0
    max_output_bytes: int = 1_048_576  # cap on a script's stdout and on its stderr, each
    script_env: dict[str, str] = {}  # extra variables allowed into scripts' environment
    # engine.runner: "warm" runs each script in a fork of script_host (when it can, see
    # secauto.engine.scripts), "spawn" starts `python` per script. engine.preload: what the runner imports.
    runner: Literal["warm", "spawn"] = "warm"
    preload: tuple[str, ...] = DEFAULT_PRELOAD
    # The node's live warm runner (started and stopped with the node); None: every script spawns.
    script_host: WarmRunner | None = None
    # engine.script_limits (setrlimit in each script's process) and engine.script_user (the uid scripts
    # run as; None: the node's own). Both runners apply them with script_limits.apply_in_child.
    script_limits: ScriptLimits = msgspec.field(default_factory=ScriptLimits)
    script_user: ScriptUser | None = None
    # Limits. Validation: steps in one document (nested ones included), nesting of if/foreach
    # (and of `play` at run time), the size of the context as JSON.
    max_steps: int = 1000
    max_depth: int = 16
    max_context_bytes: int = 1_048_576
    # Run time: steps executed by one run_playbook call (loops and `play` included).
    max_executed_steps: int = 100_000
    # http_request: default timeout and the cap on a response body.
    http_timeout: float = 30.0
    # http_request: which addresses it may connect to (engine.http_allow / engine.http_deny).
    http_policy: HttpPolicy = msgspec.field(default_factory=HttpPolicy)

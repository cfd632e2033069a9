"""The SecAuto rule engine: validate playbooks and run them (steps, conditions, templates, scripts).

Public API (used by the HTTP API, the cluster executor and the command line)::

    validate_playbook(raw, settings=None) -> Playbook      # raises PlaybookInvalid only
    load_playbook_file(path) -> Any                        # YAML/JSON; raises PlaybookInvalid
    resolve_named_playbook(name, settings) -> Path         # confined to playbooks_dir
    await run_playbook(playbook, context, settings, job_id=None) -> PlaybookResult

See the README ("Playbooks") for the playbook language and the module docstrings for the details:
:mod:`.validation` (forms and limits), :mod:`.runner` (options, failures, cancellation),
:mod:`.templates`, :mod:`.conditions`, :mod:`.scripts` (the script sandbox) and :mod:`.actions`.
"""

from secauto.engine.errors import PlaybookInvalid, Problem, StepError
from secauto.engine.loader import load_playbook_file, resolve_named_playbook
from secauto.engine.model import Playbook, RetryPolicy, Step, StepOptions
from secauto.engine.results import PlaybookResult, StepResult
from secauto.engine.runner import run_playbook
from secauto.engine.settings import EngineSettings
from secauto.engine.validation import validate_playbook

__all__ = [
    "EngineSettings",
    "Playbook",
    "PlaybookInvalid",
    "PlaybookResult",
    "Problem",
    "RetryPolicy",
    "Step",
    "StepError",
    "StepOptions",
    "StepResult",
    "load_playbook_file",
    "resolve_named_playbook",
    "run_playbook",
    "validate_playbook",
]

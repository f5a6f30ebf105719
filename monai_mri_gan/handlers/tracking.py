"""Complete the experiment trackers that ``python -m monai.bundle run ... --tracking mlflow`` adds to a run."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from monai.handlers import MLFlowHandler

__all__ = ["describe_tracked_run"]

# MONAI (1.6) names the executed config it saves for the tracker by appending the text `` + '/config_<time>.json'``
# to the raw ``output_dir`` entry; when ``output_dir`` is a plain path (as any ``--output_dir`` override makes it)
# rather than a ``$`` expression, the tracker receives that literal text and silently records nothing.
_UNEVALUATED_JOIN = re.compile(r"^(?P<head>.+) \+ '(?P<tail>/[^']+)'$")


def _repaired(path: Any) -> Any:
    match = _UNEVALUATED_JOIN.match(str(path)) if path and not os.path.exists(path) else None
    return match["head"] + match["tail"] if match else path


def describe_tracked_run(handlers: Sequence, params: Mapping[str, Any],
                         artifacts: Sequence[str | os.PathLike]) -> list:
    """Give every ``MLFlowHandler`` among ``handlers`` the run's parameters and artifact folders.

    ``--tracking mlflow`` appends MONAI's default ``MLFlowHandler`` to the trainer's handlers; that handler records
    losses and metrics but, as a generic default, knows nothing of the bundle's parameters or of the pictures it
    writes. A handler that already has parameters (a user's own settings file) keeps them.

    Args:
        handlers: the trainer's handlers, before they are attached.
        params: parameters to record once per run (e.g. the bundle's ``run_config``).
        artifacts: files or folders to record when the run completes (e.g. the sample grids and evaluation report),
            in addition to the handler's own (the executed config).

    Returns:
        ``handlers``, as a list.
    """
    for handler in handlers:
        if isinstance(handler, MLFlowHandler):
            if not handler.experiment_param:
                handler.experiment_param = dict(params)
            known = [_repaired(a) for a in handler.artifacts if a]
            handler.artifacts = tuple(known + [os.fspath(a) for a in artifacts if os.fspath(a) not in known])
    return list(handlers)

"""Complete the experiment trackers that ``python -m monai.bundle run ... --tracking mlflow`` adds to a run."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from monai.handlers import MLFlowHandler

from ..runs import RunRecord

__all__ = ["describe_tracked_run", "every_n"]

# MONAI (1.6) names the executed config it saves for the tracker by appending the text `` + '/config_<time>.json'``
# to the raw ``output_dir`` entry; when ``output_dir`` is a plain path (as any ``--output_dir`` override makes it)
# rather than a ``$`` expression, the tracker receives that literal text and silently records nothing.
_UNEVALUATED_JOIN = re.compile(r"^(?P<head>.+) \+ '(?P<tail>/[^']+)'$")


def _repaired(path: Any) -> Any:
    match = _UNEVALUATED_JOIN.match(str(path)) if path and not os.path.exists(path) else None
    return match["head"] + match["tail"] if match else path


def every_n(n: int) -> Callable[[Any, int], bool]:
    """An Ignite event filter ``(engine, event) -> bool`` that passes every ``n``-th event (e.g. for logging).

    Args:
        n: interval (>= 1).

    Raises:
        ValueError: when ``n < 1``.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return lambda engine, event: event % int(n) == 0


def describe_tracked_run(handlers: Sequence, record: RunRecord | Mapping[str, Any],
                         artifacts: Sequence[str | os.PathLike], log_every: int = 1,
                         local_artifacts: Sequence[str | os.PathLike] = (), upload_local: bool = False) -> list:
    """Give every ``MLFlowHandler`` among ``handlers`` the run's parameters, artifact folders and logging interval.

    ``--tracking mlflow`` appends MONAI's default ``MLFlowHandler`` to the trainer's handlers; that handler records
    losses and metrics but, as a generic default, knows nothing of the bundle's parameters or of the pictures it
    writes, and reads the losses at every iteration (a host synchronisation per step on a GPU). A handler that
    already has parameters or an iteration filter (a user's own settings file) keeps them.

    A tracker is often a shared server, so only shareable outputs go there by default: the parameters (the run
    record holds no path), the losses and metrics, and ``artifacts``. The handler's own artifact, the executed
    config, names the user's data folders and datalists (hospital exports put patient names in them), so it counts
    as local, with ``local_artifacts`` (pictures of real slices): both are uploaded only with ``upload_local``.

    Args:
        handlers: the trainer's handlers, before they are attached.
        record: the run record (its :meth:`~monai_mri_gan.runs.RunRecord.params`), or plain parameters.
        artifacts: shareable files or folders to record when the run completes (e.g. generated sample grids and
            the evaluation metrics).
        log_every: iterations between logged losses, as for the other loggers.
        local_artifacts: local files or folders (pictures of real slices), recorded only with ``upload_local``.
        upload_local: also record the executed config and ``local_artifacts``.

    Returns:
        ``handlers``, as a list.
    """
    params = record.params() if isinstance(record, RunRecord) else dict(record)
    for handler in handlers:
        if isinstance(handler, MLFlowHandler):
            if handler.iteration_log is True:
                handler.iteration_log = every_n(log_every)
            if not handler.experiment_param:
                handler.experiment_param = params
            wanted = [os.fspath(a) for a in artifacts]
            if upload_local:
                local = [os.fspath(a) for a in local_artifacts]
                wanted = [_repaired(a) for a in handler.artifacts if a] + wanted + local
            handler.artifacts = tuple(dict.fromkeys(wanted))
    return list(handlers)

"""Stop training with a clear message when a loss becomes NaN or infinite."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine

__all__ = ["TrainingDiverged", "DivergenceGuard"]


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the message names the iteration and the last good checkpoint."""


class DivergenceGuard:
    """Ignite handler that raises :class:`TrainingDiverged` when a watched loss is NaN or infinite.

    The exception stops the engine before any later handler (such as a checkpoint saver) sees the diverged
    state, so the last checkpoint on disk stays the last good one.

    Args:
        keys: keys of the losses to watch.
        checkpoint_dir: where checkpoints are written, to name the last good one in the message.
        output_transform: maps ``engine.state.output`` to a dictionary of losses; the default reads the
            ``loss`` dictionary of a decollated output, as MONAI's ``from_engine(["loss"], first=True)`` does.
    """

    def __init__(self, keys: Sequence[str] = ("g_loss", "d_loss"), checkpoint_dir: str | None = None,
                 output_transform: Callable[[Any], dict] | None = None) -> None:
        self.keys = tuple(keys)
        self.checkpoint_dir = checkpoint_dir
        self.output_transform = from_engine(["loss"], first=True) if output_transform is None else output_transform
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Check the output after every iteration, before handlers attached later."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = self.output_transform(engine.state.output)
        bad = {k: output[k] for k in self.keys if k in output and not math.isfinite(float(output[k]))}
        if not bad:
            return
        from .checkpoint import latest_checkpoint

        last = latest_checkpoint(self.checkpoint_dir) if self.checkpoint_dir else None
        where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        details = ", ".join(f"{k}={v}" for k, v in bad.items())
        message = (
            f"training diverged at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {details}; "
            f"{where}. Try a lower learning rate, a larger R1 gamma or disabling mixed precision."
        )
        self.logger.error(message)
        raise TrainingDiverged(message)

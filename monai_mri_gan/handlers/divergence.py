"""Stop training with a clear message when a loss becomes NaN or infinite, without a host sync per iteration."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from ..errors import TrainingDiverged
from ..runs import latest_checkpoint

__all__ = ["DivergenceGuard"]


class DivergenceGuard:
    """Ignite handler that raises :class:`~monai_mri_gan.errors.TrainingDiverged` when a watched loss is not finite.

    Every iteration, the watched losses are checked on the training device and the first non-finite iteration is
    remembered there (no host synchronisation). Every ``check_every`` iterations, and at the end of every epoch, the
    guard reads that record and raises, naming the first bad iteration. It is attached before the checkpoint saver,
    so a diverged state never reaches a checkpoint: the last checkpoint on disk stays the last good one.

    Args:
        keys: keys of the losses to watch.
        ckpt_dir: where checkpoints are written, to name the last good one in the message.
        output_transform: maps ``engine.state.output`` to a mapping of losses; the default reads the ``loss``
            mapping of a decollated output, as MONAI's ``from_engine(["loss"], first=True)`` does. A mapping with a
            ``tensors`` attribute (:class:`~monai_mri_gan.engines.StepLosses`) is checked on the device.
        check_every: iterations between reads of the record (a bundle passes its ``log_every``); 1 reads every one.

    Raises:
        ValueError: when ``check_every`` is not positive.
    """

    def __init__(self, keys: Sequence[str] = ("g_loss", "d_loss"), ckpt_dir: str | os.PathLike | None = None,
                 output_transform: Callable[[Any], dict] | None = None, check_every: int = 1) -> None:
        if int(check_every) < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}.")
        self.keys = tuple(keys)
        self.ckpt_dir = ckpt_dir
        self.output_transform = from_engine(["loss"], first=True) if output_transform is None else output_transform
        self.check_every = int(check_every)
        self.logger = logging.getLogger(__name__)
        self._first_bad: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        """Record after every iteration and read the record periodically, before handlers attached later."""
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.check_every), self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget what was recorded (a new run starts)."""
        self._first_bad, self._values = None, None

    def record(self, engine: Engine) -> None:
        """Remember, on the device, the first iteration whose watched losses are not all finite."""
        losses = self.output_transform(engine.state.output)
        tensors = getattr(losses, "tensors", None)
        if tensors is None:
            tensors = {k: torch.as_tensor(v) for k, v in losses.items()}
        values = torch.stack([tensors[k].detach().double() for k in self.keys if k in tensors])
        if self._first_bad is None:
            self._first_bad = torch.zeros((), dtype=torch.long, device=values.device)
            self._values = torch.zeros_like(values)
        newly = torch.logical_and(~torch.isfinite(values).all(), self._first_bad == 0)
        self._first_bad = torch.where(newly, torch.full_like(self._first_bad, engine.state.iteration), self._first_bad)
        self._values = torch.where(newly, values, self._values)

    def __call__(self, engine: Engine) -> None:
        if self._first_bad is None or int(self._first_bad) == 0:
            return
        iteration = int(self._first_bad)
        epoch_length = engine.state.epoch_length or iteration
        watched = [k for k in self.keys if k in self.output_transform(engine.state.output)]
        details = ", ".join(f"{k}={v}" for k, v in zip(watched, self._values.tolist(), strict=True)
                            if not torch.isfinite(torch.tensor(v)))
        last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir else None
        where = f"the last good checkpoint is {last}" if last else "no checkpoint had been written yet"
        message = (
            f"training diverged at epoch {(iteration - 1) // epoch_length + 1}, iteration {iteration}: {details}; "
            f"{where}. Try a lower learning rate, a larger R1 gamma or disabling mixed precision."
        )
        self.logger.error(message)
        raise TrainingDiverged(message)

"""Atomic GAN checkpoints, with the run record, the bundle's model file, and automatic resume from an output folder."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from ..runs import (
    CHECKPOINT_PATTERN,
    MODEL_FILE,
    RunRecord,
    check_fingerprint,
    export_model,
    latest_checkpoint,
    save_checkpoint,
)

__all__ = ["GanCheckpointSaver", "ResumeFromCheckpoint"]


def _non_finite(state: Any, prefix: str = "") -> str | None:
    if isinstance(state, torch.Tensor):
        return prefix if state.is_floating_point() and not torch.isfinite(state).all() else None
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, list | tuple):
        items = enumerate(state)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{prefix}.{k}" if prefix else str(k))
        if found:
            return found
    return None


class GanCheckpointSaver:
    """Ignite handler: every ``every_n_epochs`` epochs, write ``checkpoint_epochNNNN.pt`` atomically.

    The checkpoint holds ``{name: obj.state_dict()}`` for every entry of ``save_dict`` (generator, EMA generator,
    discriminator, optimisers, scalers, the trainer engine, random state) and the run record under ``"config"``
    (:class:`~monai_mri_gan.runs.RunRecord`). A state with a NaN or infinite tensor is never written: the handler
    raises instead, so the previous checkpoint stays the last good one. Only the newest ``keep_last`` checkpoints are
    kept; a final checkpoint is written when training completes.

    With ``model_weights`` (e.g. ``"ema_generator"``), each checkpoint's state of that entry is also written as
    ``ckpt_dir/models/model.pt``, a MONAI bundle's model file, with the run record beside it
    (:func:`~monai_mri_gan.runs.export_model`): the newest model file always holds exactly the weights of the newest
    checkpoint, and is never written from a state that was refused.

    Args:
        ckpt_dir: output folder.
        save_dict: objects with ``state_dict()``.
        every_n_epochs: epoch interval.
        keep_last: how many epoch checkpoints to keep (>= 1).
        config: the run record (a :class:`~monai_mri_gan.runs.RunRecord`, or a plain mapping kept as it is).
        model_weights: the entry of ``save_dict`` to write as ``models/model.pt``; None writes no model file.

    Raises:
        ValueError: on bad intervals, or a ``model_weights`` that is not in ``save_dict`` or has no run record.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, save_dict: Mapping[str, Any], every_n_epochs: int = 1,
                 keep_last: int = 2, config: RunRecord | Mapping[str, Any] | None = None,
                 model_weights: str | None = None) -> None:
        if every_n_epochs < 1 or keep_last < 1:
            raise ValueError("every_n_epochs and keep_last must be >= 1.")
        if model_weights is not None and (model_weights not in save_dict or config is None):
            raise ValueError(f"model_weights {model_weights!r} must name an entry of save_dict ({sorted(save_dict)}) "
                             "and needs the run record (config) to travel with it.")
        self.ckpt_dir = Path(ckpt_dir)
        self.save_dict = dict(save_dict)
        if config is not None:
            self.save_dict["config"] = RunRecord.from_state(config)
        self.every_n_epochs = int(every_n_epochs)
        self.keep_last = int(keep_last)
        self.model_weights = model_weights
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Save at the chosen epochs and when training completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        path = self.ckpt_dir / f"checkpoint_epoch{engine.state.epoch:04d}.pt"
        if path.exists() and engine.last_event_name == Events.COMPLETED:
            return  # the epoch handler wrote this state already
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        bad = _non_finite(state)
        if bad:
            raise RuntimeError(f"refusing to write {path}: non-finite values in {bad}; the last good checkpoint "
                               f"is {latest_checkpoint(self.ckpt_dir)}.")
        save_checkpoint(state, path)
        self.logger.info("saved checkpoint %s", path)
        if self.model_weights is not None:
            export_model(state, self.ckpt_dir / MODEL_FILE, self.model_weights)
        kept = sorted((int(m.group(1)), p) for p in self.ckpt_dir.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)))
        for _, old in kept[: -self.keep_last]:
            old.unlink()


class ResumeFromCheckpoint(CheckpointLoader):
    """MONAI ``CheckpointLoader`` that resumes from the latest checkpoint of a folder, if there is one.

    When the folder has no checkpoint the run starts fresh. The engine keeps its configured ``max_epochs``, so a
    larger ``max_epochs`` continues a finished run. With a ``fingerprint`` (:func:`~monai_mri_gan.runs.run_fingerprint`)
    a folder whose run had other data or settings is refused (:class:`~monai_mri_gan.errors.RunMismatchError`,
    naming what differs) instead of silently continued, and the folder records this run's fingerprint.

    Args:
        ckpt_dir: folder to look in when the engine starts.
        load_dict: objects to restore, keyed as in the saved checkpoint.
        map_location: device to map tensors to.
        enabled: False turns resuming off (the run always starts fresh).
        fingerprint: this run's fingerprint; None skips the check.
        force: resume even when the folder's fingerprint differs.
    """

    def __init__(self, ckpt_dir: str | os.PathLike, load_dict: dict, map_location: Any = "cpu",
                 enabled: bool = True, fingerprint: Mapping[str, Any] | None = None, force: bool = False) -> None:
        super().__init__(load_path=str(ckpt_dir), load_dict=load_dict, map_location=map_location)
        self.ckpt_dir = ckpt_dir
        self.enabled = enabled
        self.fingerprint = fingerprint
        self.force = force

    def __call__(self, engine: Engine) -> None:
        found = latest_checkpoint(self.ckpt_dir) if self.enabled else None
        if self.fingerprint is not None:
            check_fingerprint(self.ckpt_dir, self.fingerprint, resuming=found is not None, force=self.force)
        if found is None:
            self.logger.info("no checkpoint in %s: starting a new run", self.ckpt_dir)
            return
        self.load_path = str(found)
        super().__call__(engine)

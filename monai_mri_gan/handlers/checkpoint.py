"""Atomic GAN checkpoints and automatic resume from an output folder."""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from ..atomic import replace_atomically

__all__ = [
    "CHECKPOINT_PATTERN",
    "RandomState",
    "RunConfig",
    "GanCheckpointSaver",
    "ResumeFromCheckpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_atomic",
]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch(\d+)\.pt$")


class RandomState:
    """The global random number generators' state, as a checkpoint entry, so resumed runs draw the same numbers."""

    def state_dict(self) -> dict:
        """Torch (CPU and CUDA) and Python RNG states."""
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the states saved by :meth:`state_dict`."""
        torch.set_rng_state(state["torch"])
        random.setstate(_as_python_random_state(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_random_state(state: Any) -> tuple:
    version, internal, gauss = state
    return int(version), tuple(int(v) for v in internal), gauss


class RunConfig:
    """The resolved run configuration (plain values), stored in checkpoints so that they can be rebuilt alone.

    Args:
        config: a mapping of JSON-like values, e.g. image size, latent size, classes, network widths.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def state_dict(self) -> dict:
        """The configuration."""
        return dict(self.config)

    def load_state_dict(self, state: Mapping) -> None:
        """Replace the configuration with a saved one."""
        self.config = dict(state)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the target folder, flush it to disk, then rename it into place.

    An interrupted save leaves the previous file (if any) untouched and no partial file under ``path``.

    Args:
        obj: what to save.
        path: destination.

    Returns:
        the destination path.
    """
    return replace_atomically(path, lambda handle: torch.save(obj, handle))


def latest_checkpoint(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint with the highest epoch in ``checkpoint_dir``, or None when there is none.

    Args:
        checkpoint_dir: folder holding ``checkpoint_epochNNNN.pt`` files; a missing folder has none.
    """
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a training output folder's latest checkpoint.

    Args:
        path: a checkpoint file or a folder of ``checkpoint_epochNNNN.pt`` files.

    Raises:
        FileNotFoundError: when there is no checkpoint at ``path``.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no checkpoint_epochNNNN.pt in this folder.")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); a folder means its latest checkpoint.

    Args:
        path: a checkpoint file, or a folder of them.
        map_location: device to map tensors to.

    Raises:
        FileNotFoundError: when there is no checkpoint at ``path``.
    """
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=True)


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
    discriminator, optimisers, scalers, the trainer engine, random state, run config). A state with a NaN or
    infinite tensor is never written: the handler raises instead, so the previous checkpoint stays the last good
    one. Only the newest ``keep_last`` checkpoints are kept; a final checkpoint is written when training completes.

    Args:
        checkpoint_dir: output folder.
        save_dict: objects with ``state_dict()``.
        every_n_epochs: epoch interval.
        keep_last: how many epoch checkpoints to keep (>= 1).
        config: the resolved run configuration, stored under ``"config"`` (see :class:`RunConfig`).

    Raises:
        ValueError: on bad intervals.
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, save_dict: Mapping[str, Any], every_n_epochs: int = 1,
                 keep_last: int = 2, config: Mapping[str, Any] | None = None) -> None:
        if every_n_epochs < 1 or keep_last < 1:
            raise ValueError("every_n_epochs and keep_last must be >= 1.")
        self.checkpoint_dir = Path(checkpoint_dir)
        self.save_dict = dict(save_dict)
        if config is not None:
            self.save_dict["config"] = RunConfig(config)
        self.every_n_epochs = int(every_n_epochs)
        self.keep_last = int(keep_last)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Save at the chosen epochs and when training completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        path = self.checkpoint_dir / f"checkpoint_epoch{engine.state.epoch:04d}.pt"
        if path.exists() and engine.last_event_name == Events.COMPLETED:
            return  # the epoch handler wrote this state already
        state = {name: obj.state_dict() for name, obj in self.save_dict.items()}
        bad = _non_finite(state)
        if bad:
            raise RuntimeError(f"refusing to write {path}: non-finite values in {bad}; the last good checkpoint "
                               f"is {latest_checkpoint(self.checkpoint_dir)}.")
        save_atomic(state, path)
        self.logger.info("saved checkpoint %s", path)
        kept = sorted((int(m.group(1)), p) for p in self.checkpoint_dir.iterdir()
                      if (m := CHECKPOINT_PATTERN.match(p.name)))
        for _, old in kept[: -self.keep_last]:
            old.unlink()


class ResumeFromCheckpoint(CheckpointLoader):
    """MONAI ``CheckpointLoader`` that resumes from the latest checkpoint of a folder, if there is one.

    When the folder has no checkpoint the run starts fresh. The engine keeps its configured ``max_epochs``, so a
    larger ``max_epochs`` continues a finished run.

    Args:
        checkpoint_dir: folder to look in when the engine starts.
        load_dict: objects to restore, keyed as in the saved checkpoint.
        map_location: device to map tensors to.
        enabled: False turns resuming off (the run always starts fresh).
    """

    def __init__(self, checkpoint_dir: str | os.PathLike, load_dict: dict, map_location: Any = "cpu",
                 enabled: bool = True) -> None:
        super().__init__(load_path=str(checkpoint_dir), load_dict=load_dict, map_location=map_location)
        self.checkpoint_dir = checkpoint_dir
        self.enabled = enabled

    def __call__(self, engine: Engine) -> None:
        found = latest_checkpoint(self.checkpoint_dir) if self.enabled else None
        if found is None:
            self.logger.info("no checkpoint in %s: starting a new run", self.checkpoint_dir)
            return
        self.load_path = str(found)
        super().__call__(engine)

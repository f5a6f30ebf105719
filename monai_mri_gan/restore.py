"""Rebuild what a training run made from its checkpoint alone: the generator and the run's slice cohort.

Evaluation and synthesis never read a bundle's current hyperparameters: a checkpoint's ``config`` entry (train.json's
``run_config``) says which architecture and which slicing produced it.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .data import SliceCohort, slice_transforms
from .handlers.checkpoint import load_checkpoint
from .networks import SliceGenerator

__all__ = ["SUPPORTED_GENERATORS", "build_generator", "cohort_from_config", "generator_from_checkpoint",
           "slicing_kwargs"]

SUPPORTED_GENERATORS = ("monai_mri_gan.networks.SliceGenerator", "monai_mri_gan.networks.generator.SliceGenerator")
"""Generator classes a checkpoint's ``config["generator"]`` may name; anything else is refused, not imported."""

_SLICE_PARAMETERS = frozenset(inspect.signature(slice_transforms).parameters) - {"image_size"}


def build_generator(config: Mapping[str, Any], seed: int | None = None) -> SliceGenerator:
    """A freshly initialised generator with the architecture recorded in a checkpoint's run configuration.

    Args:
        config: the checkpoint's ``"config"`` entry (``image_size``, ``latent_dim``, ``num_classes``,
            ``g_channels`` and optionally ``channels``, ``max_channels``, ``embedding_dim``, ``generator``).
        seed: seed of the initialisation, drawn from a private random state (the global one is untouched);
            None draws from the global random state.

    Raises:
        ValueError: when ``config["generator"]`` names a class other than :data:`SUPPORTED_GENERATORS`.
        KeyError: when a required entry is missing.
    """
    name = config.get("generator", SUPPORTED_GENERATORS[0])
    if name not in SUPPORTED_GENERATORS:
        raise ValueError(f"the checkpoint's generator {name!r} is not one of {SUPPORTED_GENERATORS}.")
    kwargs = dict(
        latent_dim=int(config["latent_dim"]),
        image_size=int(config["image_size"]),
        channels=int(config.get("channels", 1)),
        base_channels=None if config.get("g_channels") is None else int(config["g_channels"]),
        max_channels=int(config.get("max_channels", 256)),
        num_classes=int(config.get("num_classes") or 0),
        embedding_dim=int(config.get("embedding_dim", 32)),
    )
    if seed is None:
        return SliceGenerator(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return SliceGenerator(**kwargs)


def generator_from_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Any],
                              weights_key: str | None = "ema_generator", seed: int = 0,
                              device: str | torch.device = "cpu") -> SliceGenerator:
    """The generator of a checkpoint, built from the checkpoint's own run configuration, in eval mode.

    Args:
        checkpoint: a checkpoint file, a training output folder (its latest checkpoint), or a loaded checkpoint.
        weights_key: the weights to load: ``"ema_generator"`` (the moving average, usually better) or
            ``"generator"``; None keeps the fresh initialisation (seeded with ``seed``), e.g. an untrained baseline,
            or the architecture alone for ``python -m monai.bundle ckpt_export``, which loads weights itself.
        seed: seed of the fresh initialisation.
        device: device to put the generator on.

    Raises:
        FileNotFoundError: when there is no checkpoint at the given path.
        KeyError: when the checkpoint has no ``config`` entry or no ``weights_key`` entry.
    """
    if not isinstance(checkpoint, Mapping):
        checkpoint = load_checkpoint(checkpoint)
    if "config" not in checkpoint:
        raise KeyError("the checkpoint has no 'config' entry: it was not written by the training bundle.")
    generator = build_generator(checkpoint["config"], seed=seed)
    if weights_key is not None:
        if weights_key not in checkpoint:
            raise KeyError(f"the checkpoint has no {weights_key!r} entry; entries are {sorted(checkpoint)}.")
        generator.load_state_dict(checkpoint[weights_key])
    return generator.to(device).eval()


def slicing_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`~monai_mri_gan.data.slice_transforms` arguments of a checkpoint's run configuration.

    Args:
        config: the checkpoint's ``"config"`` entry, with ``image_size`` and a ``slicing`` mapping.
    """
    slicing = dict(config.get("slicing") or {})
    kwargs = {k: v for k, v in slicing.items() if k in _SLICE_PARAMETERS}
    kwargs["image_size"] = int(config["image_size"])
    return kwargs


def cohort_from_config(config: Mapping[str, Any], datalist: Sequence[dict], cache_dir: str | os.PathLike | None = None,
                       on_error: str = "raise", **overrides: Any) -> SliceCohort:
    """A slice cohort cut exactly as the checkpoint's training data was (slicing configuration and image size).

    Args:
        config: the checkpoint's ``"config"`` entry.
        datalist: datalist items (``image``, optional ``label``, ``class``, ``subject``).
        cache_dir: optional on-disk cache of the cohort.
        on_error: "raise" or "skip" bad volumes.
        overrides: slicing arguments to change (e.g. ``min_foreground=0.0`` to keep every slice).
    """
    return SliceCohort(datalist, cache_dir=cache_dir, on_error=on_error, **{**slicing_kwargs(config), **overrides})

"""The GAN of a study condition: trained by the training bundle on that condition's slices, and sampled."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import SliceTensorDataset
from ..utils import replace_atomically
from .splits import SubjectSplit, check_no_leakage

__all__ = ["sample_synthetic", "train_gan", "training_config"]


def training_config(train_config: str | os.PathLike) -> Path:
    """The training bundle's configuration file, checked to exist.

    Args:
        train_config: the ``configs/train.json`` of the training bundle (``bundles/brain_mri_gan`` in the
            repository; the package does not ship it).

    Returns:
        the path, resolved.

    Raises:
        FileNotFoundError: when there is no file at ``train_config``.
    """
    path = Path(train_config).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training bundle's config file is not there; pass the train.json of "
                                "the brain_mri_gan bundle (e.g. <bundle_root>/configs/train.json).")
    return path


def train_gan(images: torch.Tensor, classes: torch.Tensor, subjects: Sequence[str], split: SubjectSplit,
              output_dir: str | os.PathLike, train_config: str | os.PathLike, iterations: int = 400, seed: int = 0,
              batch_size: int = 32, **overrides: Any) -> Path:
    """Train the bundle's class-conditional GAN on given training slices, refusing any held-out subject.

    The training bundle's ``train.json`` runs through ``monai.bundle.ConfigWorkflow`` with its dataset
    (``train#dataset``) replaced by the given slices, evaluation off, and one checkpoint and sample grid at the end.
    The subject ids and class counts the GAN saw are written to ``gan_training_subjects.json`` beside the
    checkpoint. Like any run of the bundle, it seeds the global random state
    (``monai.utils.set_determinism(seed)``).

    Args:
        images: ``(N, 1, S, S)`` training slices in [-1, 1]; ``S`` becomes the bundle's ``image_size``.
        classes: ``(N,)`` class of each slice.
        subjects: subject id of each slice.
        split: the study's split; a slice of a validation or test subject is refused.
        output_dir: the run's folder (a previous run's checkpoints there are not resumed).
        train_config: the training bundle's ``configs/train.json`` (see :func:`training_config`).
        iterations: generator steps, rounded up to whole epochs.
        seed: the bundle's seed.
        batch_size: slices per step.
        overrides: further top-level bundle overrides (e.g. ``{"learning_rate": 1e-4}``).

    Returns:
        the path of the final checkpoint.

    Raises:
        SubjectLeakageError: when a slice belongs to a validation or test subject.
        ValueError: when the lengths of ``images``, ``classes`` and ``subjects`` differ.
        FileNotFoundError: when there is no file at ``train_config``.
    """
    from monai.bundle import ConfigWorkflow

    if not len(images) == len(classes) == len(subjects):
        raise ValueError(f"{len(images)} images, {len(classes)} classes and {len(subjects)} subject ids.")
    check_no_leakage(subjects, split)
    config_file = training_config(train_config)
    output_dir = Path(output_dir)
    epoch_length = math.ceil(len(images) / batch_size)
    max_epochs = max(1, math.ceil(int(iterations) / epoch_length))
    settings = {
        "train#dataset": SliceTensorDataset(torch.as_tensor(images).float(), torch.as_tensor(classes).long()),
        "output_dir": str(output_dir), "image_size": int(images.shape[-1]), "max_epochs": max_epochs,
        "batch_size": int(batch_size), "seed": int(seed), "evaluate_every": 0, "resume": False,
        "checkpoint_every": max_epochs, "sample_every": max_epochs, "log_every": 10**9,
    }
    workflow = ConfigWorkflow(config_file=str(config_file), workflow_type="train", **{**settings, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    counts = torch.bincount(torch.as_tensor(classes).long(), minlength=2).tolist()
    record = {"subjects": sorted(set(subjects)), "class_counts": counts, "iterations": max_epochs * epoch_length}
    replace_atomically(output_dir / "gan_training_subjects.json",
                       lambda f: f.write(json.dumps(record, indent=2).encode()))
    return output_dir / f"checkpoint_epoch{max_epochs:04d}.pt"


@torch.no_grad()
def sample_synthetic(generator: nn.Module, class_index: int, count: int, seed: int = 0,
                     batch_size: int = 128) -> torch.Tensor:
    """Slices of one class from a conditional generator, in training space, reproducibly.

    Latents are drawn as :class:`~monai_mri_gan.synthesis.SliceSynthesiser` draws them (row ``i`` of a CPU
    ``torch.Generator`` seeded with ``seed`` is sample ``i``).

    Args:
        generator: a conditional :class:`~monai_mri_gan.networks.SliceGenerator` (eval mode).
        class_index: the class to generate.
        count: number of slices.
        seed: seed of the latents.
        batch_size: slices per forward pass.

    Returns:
        ``(count, C, S, S)`` slices on the CPU.
    """
    generator.eval()
    device = next(generator.parameters()).device
    z = torch.randn(int(count), int(generator.latent_dim), generator=torch.Generator().manual_seed(int(seed)))
    labels = torch.full((int(count),), int(class_index), dtype=torch.long)
    out = [generator(z[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)).float().cpu()
           for i in range(0, int(count), batch_size)]
    return torch.cat(out)



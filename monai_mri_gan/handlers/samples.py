"""Fixed sample grids written as PNG (and to TensorBoard) while a GAN trains: latents, or lesions to paint."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from ..metrics.report import radiological_view
from ..networks import seeded_latents
from ..utils import replace_atomically

__all__ = ["PaintedGridSaver", "SampleGridSaver", "hole_picture", "sample_grid", "save_grid_png", "tile_rows"]


def tile_rows(images: torch.Tensor, rows: int, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Tile ``(N, H, W)`` images row by row into a uint8 grid in the radiological view.

    Args:
        images: ``(N, H, W)`` images; N must be a multiple of ``rows``.
        rows: number of rows.
        value_range: intensity range mapped to 0..255 (values outside are clipped).

    Returns:
        a ``(rows * W, cols * H)`` uint8 array (:func:`~monai_mri_gan.metrics.report.radiological_view`).
    """
    lo, hi = value_range
    images = ((images.float().clamp(lo, hi) - lo) / (hi - lo) * 255.0).round().to(torch.uint8).cpu().numpy()
    n, h, w = images.shape
    cols = n // rows
    return radiological_view(images).reshape(rows, cols, w, h).transpose(0, 2, 1, 3).reshape(rows * w, cols * h)


def hole_picture(weights: torch.Tensor, labels: torch.Tensor, label_values: Sequence[int]) -> torch.Tensor:
    """A lesion painter's hole as an image in [-1, 1]: the blend weights in grey, each label a brighter shade inside.

    Args:
        weights: ``(N, 1, H, W)`` blend weights (:func:`~monai_mri_gan.transforms.blend_weights`), 1 = painted.
        labels: ``(N, 1, H, W)`` label maps (0 = no lesion).
        label_values: the tumour labels; the largest is the brightest.

    Returns:
        ``weights - 1`` (black outside the hole, white inside) plus half of ``label / max(label_values)`` on lesions.
    """
    shades = (labels > 0).float() * (labels.float() / max(label_values)) * 0.5
    return weights.float() - 1.0 + shades


@torch.no_grad()
def sample_grid(generator: torch.nn.Module, latents: torch.Tensor, labels: torch.Tensor | None,
                rows: int, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Generate one image per latent and tile them into a uint8 grid, ``rows`` rows (e.g. one per class).

    Each image is shown in the radiological view (:func:`~monai_mri_gan.metrics.report.radiological_view`).

    Args:
        generator: maps ``(z, labels)`` to ``(N, 1, H, W)`` images.
        latents: ``(N, latent_dim)``; N must be a multiple of ``rows``.
        labels: ``(N,)`` classes, or None for an unconditional generator.
        rows: number of rows.
        value_range: intensity range of the generator's output, mapped to 0..255.

    Returns:
        a ``(rows * H, cols * W)`` uint8 array.
    """
    was_training = generator.training
    generator.eval()
    try:
        images = generator(latents, labels).float()[:, 0].clamp(*value_range)
    finally:
        generator.train(was_training)
    return tile_rows(images, rows, value_range)


def save_grid_png(grid: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 grid to PNG atomically (temporary name, then rename)."""
    return replace_atomically(path, lambda handle: Image.fromarray(np.ascontiguousarray(grid)).save(handle, "PNG"))


class _GridSaver:
    """Every ``every_n_epochs`` epochs (and at the end), write :meth:`render`'s grid to ``samples/epoch_NNNN.png``."""

    def __init__(self, generator: torch.nn.Module, output_dir: str | os.PathLike, every_n_epochs: int = 1,
                 summary_writer=None) -> None:
        self.generator = generator
        self.output_dir = Path(output_dir)
        self.every_n_epochs = int(every_n_epochs)
        self.summary_writer = summary_writer
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Render at the chosen epochs and when training completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def render(self, device: torch.device) -> np.ndarray:
        """The grid, as a uint8 array."""
        raise NotImplementedError

    def __call__(self, engine: Engine) -> None:
        path = self.output_dir / "samples" / f"epoch_{engine.state.epoch:04d}.png"
        if path.exists() and engine.last_event_name == Events.COMPLETED:
            return
        grid = self.render(next(self.generator.parameters()).device)
        save_grid_png(grid, path)
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", grid[None], engine.state.iteration, dataformats="CHW")
            self.summary_writer.flush()
        self.logger.info("sample grid %s", path)


class SampleGridSaver(_GridSaver):
    """Ignite handler: every ``every_n_epochs`` epochs, render a fixed-latent grid, one row per class.

    The latents are drawn once from a private generator seeded with ``seed``, so successive grids show how the
    same samples evolve. Grids go to ``output_dir/samples/epoch_NNNN.png`` and, when a TensorBoard
    ``summary_writer`` is given, to its image tab.

    Args:
        generator: the network to sample (usually the EMA generator).
        output_dir: run output folder.
        latent_dim: latent size.
        num_classes: classes of a conditional generator; 0 for an unconditional one.
        per_row: samples per row.
        seed: seed of the fixed latents.
        every_n_epochs: epoch interval (the last epoch is always rendered).
        summary_writer: optional ``torch.utils.tensorboard.SummaryWriter``.
        unconditional_rows: rows of an unconditional grid.
    """

    def __init__(self, generator: torch.nn.Module, output_dir: str | os.PathLike, latent_dim: int,
                 num_classes: int = 0, per_row: int = 8, seed: int = 0, every_n_epochs: int = 1,
                 summary_writer=None, unconditional_rows: int = 2) -> None:
        super().__init__(generator, output_dir, every_n_epochs, summary_writer)
        self.rows = num_classes if num_classes > 0 else unconditional_rows
        self.latents = seeded_latents(self.rows * per_row, latent_dim, seed)
        self.labels = (torch.arange(num_classes).repeat_interleave(per_row) if num_classes > 0 else None)

    def render(self, device: torch.device) -> np.ndarray:
        """The fixed latents' samples, one row per class."""
        labels = None if self.labels is None else self.labels.to(device)
        return sample_grid(self.generator, self.latents.to(device), labels, self.rows)


class PaintedGridSaver(_GridSaver):
    """Ignite handler: every ``every_n_epochs`` epochs, repaint fixed lesion crops; rows real | mask | painted.

    The crops (a seeded choice of ``per_row`` training items) keep their real lesion in the top row; the middle row
    shows the hole the painter fills (the blend weights, white = painted) with the label map inside; the bottom row
    is the painter's result for fixed latent vectors, composited into the real crop.

    Args:
        generator: the painter to render (usually the EMA generator).
        objective: the :class:`~monai_mri_gan.objectives.LesionPainterObjective` (condition and compositing).
        dataset: the training crops (items with ``image`` and ``label``, ``(1, H, W)``).
        output_dir: run output folder.
        per_row: crops shown.
        seed: seed of the choice of crops and of the latent vectors.
        every_n_epochs: epoch interval (the last epoch is always rendered).
        summary_writer: optional ``torch.utils.tensorboard.SummaryWriter``.
    """

    def __init__(self, generator: torch.nn.Module, objective: Any, dataset: Any, output_dir: str | os.PathLike,
                 per_row: int = 8, seed: int = 0, every_n_epochs: int = 1, summary_writer=None) -> None:
        super().__init__(generator, output_dir, every_n_epochs, summary_writer)
        rng = torch.Generator().manual_seed(int(seed))
        chosen = torch.randperm(len(dataset), generator=rng)[:per_row].tolist()
        self.images = torch.stack([torch.as_tensor(dataset[i]["image"]).float() for i in chosen])
        self.labels = torch.stack([torch.as_tensor(dataset[i]["label"]).long() for i in chosen])
        self.objective = objective
        self.latents = seeded_latents(len(chosen), objective.latent_dim, rng) if objective.latent_dim else None

    @torch.no_grad()
    def render(self, device: torch.device) -> np.ndarray:
        """Real crops, their holes and label maps, and the painted crops, one row each."""
        images, labels = self.images.to(device), self.labels.to(device)
        condition = self.objective.condition(labels)
        latents = None if self.latents is None else self.latents.to(device)
        was_training = self.generator.training
        self.generator.eval()
        try:
            painted = self.objective.paint(self.generator, images, condition, latents)
        finally:
            self.generator.train(was_training)
        mask = hole_picture(condition[:, :1], labels, self.objective.label_values)
        return tile_rows(torch.cat([images, mask, painted])[:, 0], rows=3)

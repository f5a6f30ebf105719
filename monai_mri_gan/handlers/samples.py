"""Fixed-latent sample grids written as PNG (and to TensorBoard) while a GAN trains."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from ..metrics.report import radiological_view
from ..networks import seeded_latents
from ..utils import replace_atomically

__all__ = ["sample_grid", "save_grid_png", "SampleGridSaver"]


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
    lo, hi = value_range
    images = ((images - lo) / (hi - lo) * 255.0).round().to(torch.uint8).cpu().numpy()
    n, h, w = images.shape
    cols = n // rows
    return radiological_view(images).reshape(rows, cols, w, h).transpose(0, 2, 1, 3).reshape(rows * w, cols * h)


def save_grid_png(grid: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 grid to PNG atomically (temporary name, then rename)."""
    return replace_atomically(path, lambda handle: Image.fromarray(np.ascontiguousarray(grid)).save(handle, "PNG"))


class SampleGridSaver:
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
        self.generator = generator
        self.output_dir = Path(output_dir)
        self.rows = num_classes if num_classes > 0 else unconditional_rows
        self.latents = seeded_latents(self.rows * per_row, latent_dim, seed)
        self.labels = (torch.arange(num_classes).repeat_interleave(per_row) if num_classes > 0 else None)
        self.every_n_epochs = int(every_n_epochs)
        self.summary_writer = summary_writer
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Render at the chosen epochs and when training completes."""
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_n_epochs), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        path = self.output_dir / "samples" / f"epoch_{engine.state.epoch:04d}.png"
        if path.exists() and engine.last_event_name == Events.COMPLETED:
            return
        device = next(self.generator.parameters()).device
        labels = None if self.labels is None else self.labels.to(device)
        grid = sample_grid(self.generator, self.latents.to(device), labels, self.rows)
        save_grid_png(grid, path)
        if self.summary_writer is not None:
            self.summary_writer.add_image("samples", grid[None], engine.state.iteration, dataformats="CHW")
            self.summary_writer.flush()
        self.logger.info("sample grid %s", path)

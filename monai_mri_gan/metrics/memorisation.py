"""Memorisation audit: how close is each generated slice to its nearest training slice?

A generator that copies training slices leaks them. :func:`memorisation_report` finds, for every generated slice,
its nearest training slice in pixel space (normalised cross-correlation, optionally allowing small shifts) and,
given features, in feature space; :func:`save_closest_pairs_png` shows the closest pairs for a human to judge.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..utils import replace_atomically

__all__ = ["memorisation_report", "save_closest_pairs_png"]


def _unit_rows(x: torch.Tensor, centre: bool) -> torch.Tensor:
    """Rows (optionally centred) scaled to unit length; all-zero rows stay zero."""
    x = x.flatten(1)
    if centre:
        x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _nearest(queries: torch.Tensor, keys: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest dot product of each query row over all key rows, and its key index."""
    best = torch.full((queries.shape[0],), -torch.inf, dtype=queries.dtype)
    index = torch.zeros(queries.shape[0], dtype=torch.long)
    for start in range(0, keys.shape[0], batch_size):
        value, arg = (queries @ keys[start : start + batch_size].T).max(dim=1)
        better = value > best
        best = torch.where(better, value, best)
        index = torch.where(better, arg + start, index)
    return best, index


def memorisation_report(
    generated: torch.Tensor,
    training: torch.Tensor,
    gen_feats: torch.Tensor | None = None,
    train_feats: torch.Tensor | None = None,
    threshold: float = 0.95,
    feature_threshold: float | None = None,
    top_k_pairs: int = 16,
    max_shift: int = 0,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Nearest training slice of every generated slice, in pixel and feature space, and the suspicious ones.

    Pixel similarity is the normalised cross-correlation (cosine similarity of mean-centred pixel vectors, in
    [-1, 1]; a constant image has similarity 0 to everything). With ``max_shift > 0`` every generated slice is also
    compared after circular shifts of up to ``max_shift`` pixels in each direction, so that a copy moved by a pixel
    or two is still found, at ``(2 max_shift + 1)^2`` times the cost. Feature similarity is the cosine similarity
    of features standardised with the training features' mean and standard deviation (raw features share large
    offsets, which would make every pair look alike). A generated slice is flagged when its pixel similarity
    reaches ``threshold``. Distinct real slices of one anatomy can correlate highly: calibrate the threshold on
    held-out real slices against the training set, and look at the closest pairs.

    Args:
        generated: ``(N, 1, H, W)`` generated slices.
        training: ``(M, 1, H, W)`` training slices, same ``H, W``.
        gen_feats: ``(N, D)`` features of ``generated``, or None to skip the feature space.
        train_feats: ``(M, D)`` features of ``training``.
        threshold: pixel similarity at or above which a generated slice is flagged.
        feature_threshold: feature similarity counted in ``feature_fraction_above_threshold``; None for
            ``threshold``.
        top_k_pairs: number of closest pairs listed.
        max_shift: largest shift, in pixels, tried in each direction.
        batch_size: training slices compared at once.

    Returns:
        a dict with ``pixel_similarity`` (``(N,)`` float tensor), ``pixel_nearest`` (``(N,)`` training indices),
        ``pixel_shift`` (``(N, 2)`` shift of the generated slice that matched best), ``feature_similarity`` and
        ``feature_nearest`` (or None), ``threshold``, ``flagged`` (generated indices at or above the threshold,
        most similar first), ``fraction_above_threshold``, ``feature_fraction_above_threshold`` (or None) and
        ``closest_pairs``: a list of ``(generated index, training index, pixel similarity)``, most similar first.

    Raises:
        ValueError: when the image or feature shapes do not match.
    """
    generated = torch.as_tensor(generated).as_subclass(torch.Tensor)
    training = torch.as_tensor(training).as_subclass(torch.Tensor)
    if generated.ndim != 4 or training.ndim != 4 or generated.shape[1:] != training.shape[1:]:
        raise ValueError(
            "generated and training must be (N, C, H, W) batches of equal C, H, W; got "
            f"{tuple(generated.shape)} and {tuple(training.shape)}."
        )
    if (gen_feats is None) != (train_feats is None):
        raise ValueError("Give both gen_feats and train_feats, or neither.")
    if max_shift < 0:
        raise ValueError(f"max_shift must be non-negative, got {max_shift}.")
    with torch.no_grad():
        keys = _unit_rows(training.float(), centre=True)
        queries = _unit_rows(generated.float(), centre=True).view(generated.shape)
        pixel_similarity = torch.full((generated.shape[0],), -torch.inf)
        pixel_nearest = torch.zeros(generated.shape[0], dtype=torch.long)
        pixel_shift = torch.zeros(generated.shape[0], 2, dtype=torch.long)
        shifts = range(-max_shift, max_shift + 1)
        for dy in shifts:
            for dx in shifts:
                # a circular shift keeps a centred unit vector centred and of unit length
                shifted = torch.roll(queries, shifts=(dy, dx), dims=(-2, -1)).flatten(1)
                value, index = _nearest(shifted, keys, batch_size)
                better = value > pixel_similarity
                pixel_similarity = torch.where(better, value, pixel_similarity)
                pixel_nearest = torch.where(better, index, pixel_nearest)
                pixel_shift[better] = torch.tensor([dy, dx])
        feature_similarity = feature_nearest = feature_fraction = None
        if gen_feats is not None and train_feats is not None:
            gen_feats, train_feats = torch.as_tensor(gen_feats).double(), torch.as_tensor(train_feats).double()
            if gen_feats.shape[0] != generated.shape[0] or train_feats.shape[0] != training.shape[0]:
                raise ValueError("gen_feats and train_feats must have one row per generated and training slice.")
            mean, std = train_feats.mean(0), train_feats.std(0).clamp_min(1e-12)
            feature_similarity, feature_nearest = _nearest(
                _unit_rows((gen_feats - mean) / std, centre=False),
                _unit_rows((train_feats - mean) / std, centre=False),
                batch_size,
            )
            limit = threshold if feature_threshold is None else feature_threshold
            feature_fraction = float((feature_similarity >= limit).double().mean())
    order = pixel_similarity.argsort(descending=True)
    flagged = order[pixel_similarity[order] >= threshold]
    closest = [(int(i), int(pixel_nearest[i]), float(pixel_similarity[i])) for i in order[:top_k_pairs]]
    return {
        "pixel_similarity": pixel_similarity,
        "pixel_nearest": pixel_nearest,
        "pixel_shift": pixel_shift,
        "feature_similarity": feature_similarity,
        "feature_nearest": feature_nearest,
        "threshold": threshold,
        "flagged": flagged,
        "fraction_above_threshold": float((pixel_similarity >= threshold).double().mean()),
        "feature_fraction_above_threshold": feature_fraction,
        "closest_pairs": closest,
    }


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """A ``(1, H, W)`` slice in [-1, 1] as 8-bit grey levels."""
    return ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def save_closest_pairs_png(
    report: dict[str, Any],
    generated: torch.Tensor,
    training: torch.Tensor,
    path: str | os.PathLike,
    n: int = 8,
    gap: int = 2,
    overwrite: bool = False,
) -> Path:
    """Write a PNG with the ``n`` closest pairs of a report, one pair per row: generated left, training right.

    The file is written under a temporary name in the target folder and renamed into place.

    Args:
        report: the output of :func:`memorisation_report` for these slices.
        generated: the generated slices of the report.
        training: the training slices of the report.
        path: the PNG to write; its folder is created if needed.
        n: number of pairs (at most the report's ``closest_pairs``).
        gap: white pixels between columns and rows.
        overwrite: replace an existing file.

    Returns:
        the path written.

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is False.
        ValueError: when the report lists no pairs.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it.")
    pairs = report["closest_pairs"][:n]
    if not pairs:
        raise ValueError("The report lists no closest pairs.")
    height, width = generated.shape[-2:]
    canvas = np.full((len(pairs) * (height + gap) - gap, 2 * width + gap), 255, dtype=np.uint8)
    for row, (gen_index, train_index, _) in enumerate(pairs):
        top = row * (height + gap)
        canvas[top : top + height, :width] = _to_uint8(generated[gen_index])
        canvas[top : top + height, width + gap :] = _to_uint8(training[train_index])
    return replace_atomically(path, lambda handle: Image.fromarray(canvas, mode="L").save(handle, format="PNG"))

"""Evaluation reports on disk: ``metrics.json`` (atomic), a sample grid and a metric-versus-floor bar chart (PIL)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..utils import replace_atomically

__all__ = ["radiological_view", "save_metric_bars_png", "save_sample_grid_png", "write_json_atomic"]


def radiological_view(images: np.ndarray) -> np.ndarray:
    """RAS slices as a radiologist views them: anterior up, the patient's right on the viewer's left.

    Args:
        images: ``(..., H, W)`` slices whose last two axes are the first two RAS voxel axes (an axial slicing's).

    Returns:
        a ``(..., W, H)`` view (no copy): the last two axes swapped, and both reversed.
    """
    return np.swapaxes(images, -1, -2)[..., ::-1, ::-1]


def write_json_atomic(data: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON under a temporary name and rename it into place (replacing a previous file).

    Args:
        data: JSON-serialisable mapping (non-finite floats are written as ``null``).
        path: destination.

    Returns:
        the path written.
    """

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(data), indent=2, sort_keys=False) + "\n"
    return replace_atomically(Path(path), lambda handle: handle.write(text.encode()))


def _save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    image = Image.fromarray(np.ascontiguousarray(array))
    return replace_atomically(Path(path), lambda handle: image.save(handle, format="PNG"))


def save_sample_grid_png(
    images: torch.Tensor, labels: torch.Tensor | None, path: str | os.PathLike, per_row: int = 8,
) -> Path:
    """Tile generated slices into a PNG: one row per class (the first ``per_row`` of each), or rows of ``per_row``.

    Slices in [-1, 1] map to 0..255 and are shown as the training sample grids show them
    (:func:`radiological_view`); missing cells stay black.

    Args:
        images: ``(N, 1, H, W)`` slices.
        labels: ``(N,)`` classes, or None for an unconditional set (at most two rows).
        path: the PNG to write (atomically).
        per_row: slices per row.

    Returns:
        the path written.
    """
    images = torch.as_tensor(images).float()[:, 0].clamp(-1, 1)
    if labels is None:
        rows = [torch.arange(min(len(images), 2 * per_row))[i : i + per_row] for i in range(0, 2 * per_row, per_row)]
    else:
        labels = torch.as_tensor(labels).reshape(-1).cpu()
        rows = [torch.nonzero(labels == c).flatten()[:per_row] for c in range(int(labels.max()) + 1)]
    rows = [r for r in rows if r.numel()] or [torch.arange(0)]
    height, width = images.shape[-2:]
    canvas = np.zeros((len(rows) * width, per_row * height), dtype=np.uint8)
    for row, index in enumerate(rows):
        for col, i in enumerate(index.tolist()):
            grey = ((images[i] + 1) * 127.5).round().to(torch.uint8).numpy()
            canvas[row * width : (row + 1) * width, col * height : (col + 1) * height] = radiological_view(grey)
    return _save_png(canvas, path)


def save_metric_bars_png(
    series: Mapping[str, Mapping[str, float | None]], path: str | os.PathLike,
    metrics: Sequence[str] | None = None, bar_height: int = 12, width: int = 560,
) -> Path:
    """Draw one group of horizontal bars per metric, one bar per series (e.g. generated, real-vs-real floor,
    untrained), each row scaled to its largest absolute value and labelled with the values.

    Args:
        series: ``{series name: {metric name: value}}``; the first series' metrics are drawn unless ``metrics``
            is given. Missing or non-finite values are left out.
        path: the PNG to write (atomically).
        metrics: metric names, in drawing order.
        bar_height: pixels per bar.
        width: image width in pixels.

    Returns:
        the path written.
    """
    names = list(series)
    if metrics is None:
        metrics = list(next(iter(series.values()), {}))
    colours = [(40, 90, 160), (150, 150, 150), (220, 140, 60), (90, 160, 90)]
    label_width, gap = 190, 6
    group = len(names) * bar_height + gap
    legend = 18
    image = Image.new("RGB", (width, legend + max(1, len(metrics)) * group + gap), "white")
    draw = ImageDraw.Draw(image)
    x = 4
    for s, name in enumerate(names):
        draw.rectangle([x, 4, x + 10, 14], fill=colours[s % len(colours)])
        draw.text((x + 14, 3), name, fill="black")
        x += 14 + 7 * len(name) + 16
    span = width - label_width - 80
    for m, metric in enumerate(metrics):
        top = legend + m * group
        draw.text((4, top + 2), metric, fill="black")
        values = [series[n].get(metric) for n in names]
        finite = [abs(v) for v in values if isinstance(v, int | float) and math.isfinite(v)]
        scale = max(finite, default=0.0) or 1.0
        for s, value in enumerate(values):
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            y = top + s * bar_height
            length = int(round(span * abs(value) / scale))
            draw.rectangle([label_width, y + 1, label_width + max(length, 1), y + bar_height - 2],
                           fill=colours[s % len(colours)])
            draw.text((label_width + length + 4, y), f"{value:.4g}", fill="black")
    return replace_atomically(Path(path), lambda handle: image.save(handle, format="PNG"))

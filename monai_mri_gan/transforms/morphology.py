"""Binary morphology on 2D masks with torch: connected components, hole filling and the head region of a slice.

MONAI's own ``FillHoles`` and ``KeepLargestConnectedComponent`` need scipy (or cuCIM), which is not a dependency
of this package: components are labelled with torch (3x3 max filters until nothing changes), and holes are filled
along row and column runs with numpy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_dst_type, convert_to_numpy

__all__ = ["component_ids", "fill_holes", "head_region"]


def _max_filter3(x: torch.Tensor, cross: bool) -> torch.Tensor:
    """Maximum over each pixel's 3x3 neighbourhood (``cross``: its 4-neighbourhood) of ``(N, 1, H, W)`` values >= 0."""
    if not cross:
        return F.max_pool2d(x, 3, stride=1, padding=1)
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = (padded[..., 1:-1, :-2], padded[..., 1:-1, 2:], padded[..., :-2, 1:-1], padded[..., 2:, 1:-1])
    out = x
    for s in shifted:
        out = torch.maximum(out, s)
    return out


def _spread(seeds: torch.Tensor, within: torch.Tensor, cross: bool) -> torch.Tensor:
    """Propagate the largest seed value through each connected region of ``within`` until nothing changes."""
    while True:
        grown = torch.where(within, _max_filter3(seeds, cross), 0.0)
        if torch.equal(grown, seeds):
            return seeds
        seeds = grown


def component_ids(mask: torch.Tensor) -> torch.Tensor:
    """Label the 8-connected components of a 2D mask.

    Args:
        mask: ``(H, W)`` bool tensor.

    Returns:
        ``(H, W)`` float64 map: each component carries one id (> 0, not consecutive), the background 0.
    """
    height, width = mask.shape
    ids = torch.arange(1, height * width + 1, dtype=torch.float64, device=mask.device).view(1, 1, height, width)
    return _spread(torch.where(mask, ids, 0.0), mask[None, None], cross=False)[0, 0]


def _runs_reached(within: np.ndarray, seeds: np.ndarray, axis: int) -> np.ndarray:
    """The pixels of ``within`` whose run along ``axis`` (consecutive ``within`` pixels of a row or column) holds a
    seed."""
    if axis == 0:
        return _runs_reached(within.T, seeds.T, 1).T
    starts = within.copy()
    starts[:, 1:] &= ~within[:, :-1]
    # a run's id is the number of runs started up to it; every row's first run starts anew
    runs = np.cumsum(starts, axis=None, dtype=np.int32).reshape(within.shape)
    reached = np.zeros(int(runs[-1, -1]) + 1, bool)
    reached[runs[seeds & within]] = True
    return within & reached[runs]


def fill_holes(mask: NdarrayOrTensor) -> NdarrayOrTensor:
    """Fill every background region of a 2D mask that does not reach the edge of the plane.

    The background is 4-connected, the complement of the 8-connected foreground (a diagonal step closes a ring), so
    reaching a pixel is moving along row and column runs of background: alternate passes over whole runs converge in
    as many passes as a path from the edge has turns, not one pass per pixel of its length (some ten times faster
    than 3x3 propagation; placement fills the head of every base slice it draws).

    Args:
        mask: ``(H, W)`` bool mask (numpy or torch).

    Returns:
        ``mask`` with its enclosed holes set, of ``mask``'s array type.
    """
    background = ~np.asarray(convert_to_numpy(mask), dtype=bool)
    edge = np.zeros_like(background)
    edge[[0, -1], :] = background[[0, -1], :]
    edge[:, [0, -1]] = background[:, [0, -1]]
    outside, axis = _runs_reached(background, edge, 1), 0
    while True:
        grown = _runs_reached(background, outside, axis)
        # closed along the last pass's axis already: a pass along the other that adds nothing closes it along both
        if np.array_equal(grown, outside):
            break
        outside, axis = grown, 1 - axis
    out, *_ = convert_to_dst_type(~outside, mask, dtype=bool)
    return out


def head_region(plane: NdarrayOrTensor, threshold: float, min_fraction: float = 0.005) -> NdarrayOrTensor:
    """The head (or body) region of one slice: bright components of a useful size, holes filled.

    Pixels above ``threshold`` form the candidate foreground; components smaller than ``min_fraction`` of the plane
    (specks of noise in the air, or a generator's background noise) are dropped, and what lies enclosed by the
    remaining ones (ventricles, sinuses, dark lesions) is added back. The complement is what a scanner shows as
    air.

    Args:
        plane: ``(H, W)`` intensities (numpy or torch).
        threshold: pixels strictly above it are candidates.
        min_fraction: the least component size kept, as a fraction of ``H * W``.

    Returns:
        ``(H, W)`` bool mask of ``plane``'s array type.
    """
    values = torch.as_tensor(plane)
    if values.ndim != 2:
        raise ValueError(f"head_region takes one 2D plane, got shape {tuple(values.shape)}.")
    candidates = values > threshold
    ids = component_ids(candidates)
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    keep = candidates & (counts[inverse] >= min_fraction * values.numel())
    out, *_ = convert_to_dst_type(fill_holes(keep.numpy()), plane, dtype=bool)
    return out

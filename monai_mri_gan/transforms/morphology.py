"""Binary morphology on 2D masks with torch: connected components, hole filling and the head region of a slice.

MONAI's own ``FillHoles`` and ``KeepLargestConnectedComponent`` need scipy (or cuCIM), which is not a dependency
of this package; these run on torch alone, on any device, by propagating values with 3x3 max filters until nothing
changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.utils import convert_to_dst_type

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


def fill_holes(mask: torch.Tensor) -> torch.Tensor:
    """Fill every background region of a 2D mask that does not reach the edge of the plane.

    Args:
        mask: ``(H, W)`` bool tensor.

    Returns:
        ``(H, W)`` bool tensor: ``mask`` with its enclosed holes set.
    """
    background = ~mask[None, None]
    edge = torch.zeros_like(background)
    edge[..., 0, :] = edge[..., -1, :] = True
    edge[..., :, 0] = edge[..., :, -1] = True
    # background is 4-connected, the complement of the 8-connected foreground: a diagonal step closes a ring
    outside = _spread((edge & background).double(), background, cross=True) > 0
    return ~outside[0, 0]


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
    out, *_ = convert_to_dst_type(fill_holes(keep), plane, dtype=bool)
    return out

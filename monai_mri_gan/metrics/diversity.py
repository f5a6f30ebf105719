"""Diversity of generated slices: mean MS-SSIM over random pairs (Odena et al. 2017), with MONAI's MS-SSIM."""

from __future__ import annotations

import torch
from monai.metrics import MultiScaleSSIMMetric

__all__ = ["ms_ssim_diversity", "ms_ssim_settings"]

_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(image_size: int, kernel_size: int | None = None) -> tuple[int, tuple[float, ...]]:
    """Gaussian kernel size and scale weights of MS-SSIM that fit slices of a given side.

    MONAI's MS-SSIM requires ``image_size // (scales - 1)^2 > kernel_size - 1``; with the standard 5 scales and
    kernel 11 that means more than 160 px. The 5 standard scales are kept and the kernel is the largest odd size
    up to 11 that fits: 7 at 128 px, 3 at 64 px, 11 from 176 px. Below 48 px, where not even kernel 3 fits 5
    scales (or when a fixed ``kernel_size`` does not fit), the coarsest scales are dropped and the remaining
    weights renormalised to sum to 1.

    Args:
        image_size: the smaller side of the slices.
        kernel_size: a fixed kernel size (odd); None for the largest that fits.

    Returns:
        ``(kernel_size, weights)``.

    Raises:
        ValueError: when the slices are too small for the kernel even at one scale.
    """
    for scales in range(len(_MS_SSIM_WEIGHTS), 0, -1):
        div = max(1, scales - 1) ** 2
        limit = image_size // div  # MONAI's check: limit > kernel - 1
        if kernel_size is None:
            kernel = min(11, limit if limit % 2 == 1 else limit - 1)
            fits = kernel >= 3
        else:
            kernel, fits = kernel_size, limit > kernel_size - 1
        if fits and scales == len(_MS_SSIM_WEIGHTS):
            return kernel, _MS_SSIM_WEIGHTS
        if fits:
            total = sum(_MS_SSIM_WEIGHTS[:scales])
            return kernel, tuple(w / total for w in _MS_SSIM_WEIGHTS[:scales])
    raise ValueError(f"Slices of {image_size} px are too small for MS-SSIM with kernel {kernel_size or 3}.")


def ms_ssim_diversity(
    images: torch.Tensor,
    num_pairs: int = 1000,
    seed: int = 0,
    kernel_size: int | None = None,
    batch_size: int = 250,
) -> float:
    """Mean MS-SSIM between random pairs of distinct images of a set: lower means more diverse.

    Pairs ``(i, j)`` with ``i != j`` are drawn uniformly with replacement across pairs. Images are mapped from
    [-1, 1] to [0, 1] and compared with ``data_range=1``, a Gaussian kernel (sigma 1.5) and the kernel size and
    scales of :func:`ms_ssim_settings`. Identical images give 1; compare a generator's value with that of real
    slices (mode collapse shows as a value above the reals').

    Args:
        images: ``(N, 1, H, W)`` slices in [-1, 1], ``N >= 2``.
        num_pairs: number of random pairs.
        seed: seed of the pair draws.
        kernel_size: fixed MS-SSIM kernel size; None to choose it from the image size.
        batch_size: pairs compared at once.

    Returns:
        the mean MS-SSIM over the pairs.

    Raises:
        ValueError: when ``images`` is not ``(N, C, H, W)`` with ``N >= 2`` or ``num_pairs < 1``.
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[0] < 2:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 2, got {tuple(images.shape)}.")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be at least 1, got {num_pairs}.")
    kernel, weights = ms_ssim_settings(min(images.shape[-2:]), kernel_size)
    metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0, kernel_size=kernel, weights=weights)
    n = images.shape[0]
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(n, (num_pairs,), generator=generator)
    second = (first + torch.randint(1, n, (num_pairs,), generator=generator)) % n
    scaled = ((images.float() + 1) / 2).clamp(0, 1)
    with torch.no_grad():
        for start in range(0, num_pairs, batch_size):
            i, j = first[start : start + batch_size], second[start : start + batch_size]
            metric(y_pred=scaled[i], y=scaled[j])
        result = metric.aggregate()
    return float(result)

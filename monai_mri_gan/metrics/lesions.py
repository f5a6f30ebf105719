"""Metrics of painted (or pasted) lesions: the seam around them, a lesion segmenter's Dice, and copies of the source.

- :func:`seam_band` and :func:`seam_gradient`: how sharp the intensities are where a painting meets the base slice
  (the blend band and the ring just outside it), to compare with the same band around real lesions;
- :func:`train_lesion_segmenter` and :func:`segmentation_dice`: a small MONAI ``UNet`` trained on real lesion crops
  finds painted lesions where their masks say, or not;
- :func:`masked_correlation` and :func:`label_map_correlation`: how closely a painted lesion reproduces the real
  lesion its mask came from, and how much of that the mask alone explains.

All functions take ``(N, 1, H, W)`` batches in the training intensity space ([-1, 1]) and label maps of the same
shape (0 = no lesion).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.metrics import compute_dice
from monai.networks.nets import UNet
from monai.networks.utils import one_hot
from monai.transforms import SobelGradients

from ..transforms import blend_weights

__all__ = [
    "label_map_correlation",
    "masked_correlation",
    "seam_band",
    "seam_gradient",
    "segmentation_dice",
    "train_lesion_segmenter",
]


def _batch(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` as a plain ``(N, 1, H, W)`` tensor."""
    x = torch.as_tensor(x).as_subclass(torch.Tensor)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{what} must be (N, 1, H, W), got {tuple(x.shape)}.")
    return x


def seam_band(labels: torch.Tensor, dilate_px: int = 2, band_px: int = 4) -> torch.Tensor:
    """Where a painting meets its base: the blend band (``0 < w < 1``) and the ring of ``w = 0`` pixels just outside.

    ``w`` is :func:`~monai_mri_gan.transforms.blend_weights` of the labels; the ring is the pixels of weight 0 with a
    pixel of positive weight among their 8 neighbours. Around a real lesion the same band covers the tissue at the
    same distances from it, which no painting has touched.

    Args:
        labels: ``(N, 1, H, W)`` label maps.
        dilate_px: see :func:`~monai_mri_gan.transforms.blend_weights`.
        band_px: see :func:`~monai_mri_gan.transforms.blend_weights`.

    Returns:
        ``(N, 1, H, W)`` bool mask.
    """
    weights = blend_weights(_batch(labels, "labels"), dilate_px, band_px)
    touched = weights > 0
    ring = ~touched & (F.max_pool2d(touched.float(), 3, stride=1, padding=1) > 0)
    return (touched & (weights < 1)) | ring


def seam_gradient(images: torch.Tensor, labels: torch.Tensor, dilate_px: int = 2, band_px: int = 4) -> torch.Tensor:
    """Mean intensity-gradient magnitude of each image over its :func:`seam_band`.

    The gradient is MONAI's ``SobelGradients`` (normalised kernels: ``[-1, 0, 1] / 2`` across, ``[1, 2, 1] / 4``
    along; edges replicated), so a ramp of slope ``a`` per pixel has magnitude ``a``. A copied lesion whose own
    surroundings do not match the base shows a higher value than real lesions; a painting that blends in, the same.

    Args:
        images: ``(N, 1, H, W)`` images.
        labels: ``(N, 1, H, W)`` label maps of the lesions the band surrounds.
        dilate_px: see :func:`~monai_mri_gan.transforms.blend_weights`.
        band_px: see :func:`~monai_mri_gan.transforms.blend_weights`.

    Returns:
        ``(N,)`` float64 means, in intensity units per pixel; NaN for an image without a lesion (no band).

    Raises:
        ValueError: when the shapes differ or are not ``(N, 1, H, W)``.
    """
    images, labels = _batch(images, "images"), _batch(labels, "labels")
    if images.shape != labels.shape:
        raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} differ in shape.")
    band = seam_band(labels, dilate_px, band_px)[:, 0].double()
    # the batch goes in as channels: SobelGradients filters each channel alone, rows' gradients first
    gradients = SobelGradients(padding_mode="replicate", dtype=torch.float64)(images[:, 0].double())
    magnitude = torch.hypot(*gradients.as_subclass(torch.Tensor).split(images.shape[0]))
    return (magnitude * band).sum((1, 2)) / band.sum((1, 2))


def train_lesion_segmenter(images: torch.Tensor, labels: torch.Tensor, steps: int = 600, batch_size: int = 16,
                           learning_rate: float = 1e-3, seed: int = 0, device: str | torch.device = "cpu",
                           channels: Sequence[int] = (16, 32, 64, 128),
                           strides: Sequence[int] = (2, 2, 2)) -> UNet:
    """Train a small MONAI ``UNet`` to find lesions (any label) against background on real lesion crops.

    Binary: every non-zero label counts as lesion, so the Dice says whether a lesion is found where its mask says,
    not which compartment it is. Dice + cross-entropy (MONAI's ``DiceCELoss``), Adam, batches drawn in a shuffled
    order, each turned by a random quarter turn and mirrored with probability 1/2 (painted lesions come in every
    orientation). Initialisation and every draw come from a private random state seeded with ``seed``; the global
    random state is left as it was.

    Args:
        images: ``(N, 1, H, W)`` real crops; ``H`` and ``W`` multiples of the strides' product.
        labels: ``(N, 1, H, W)`` their label maps.
        steps: optimiser steps.
        batch_size: crops per step.
        learning_rate: Adam learning rate.
        seed: seed of initialisation, order and augmentation.
        device: device to train on.
        channels: the ``UNet``'s channels.
        strides: the ``UNet``'s strides.

    Returns:
        the network (2 output channels: background, lesion), in eval mode, on ``device``.

    Raises:
        ValueError: on mismatched inputs or fewer than one step.
    """
    images, labels = _batch(images, "images").float(), _batch(labels, "labels")
    if images.shape != labels.shape or int(steps) < 1:
        raise ValueError(f"need images and labels of one (N, 1, H, W) shape and steps >= 1, got "
                         f"{tuple(images.shape)}, {tuple(labels.shape)} and {steps}.")
    targets = (labels != 0).long()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(channels),
                       strides=tuple(strides)).to(device)
        optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
        rng = torch.Generator().manual_seed(int(seed))
        order = torch.zeros(0, dtype=torch.long)
        network.train()
        for _ in range(int(steps)):
            if order.numel() < batch_size:
                order = torch.cat([order, torch.randperm(images.shape[0], generator=rng)])
            index, order = order[:batch_size], order[batch_size:]
            turns, mirror = int(torch.randint(4, (1,), generator=rng)), bool(torch.rand(1, generator=rng) < 0.5)
            batch = torch.stack([images[index], targets[index].float()])
            batch = torch.rot90(batch, turns, dims=(-2, -1))
            if mirror:
                batch = batch.flip(-1)
            loss = loss_fn(network(batch[0].to(device)), batch[1].long().to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return network.eval()


@torch.no_grad()
def segmentation_dice(network: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int = 64) -> torch.Tensor:
    """Dice of a lesion segmenter's prediction (arg-max class) against each crop's lesion mask (any label).

    Computed with MONAI's ``compute_dice`` on the lesion class alone (background excluded).

    Args:
        network: a segmenter such as :func:`train_lesion_segmenter` returns (background and lesion logits).
        images: ``(N, 1, H, W)`` crops.
        labels: ``(N, 1, H, W)`` their label maps; the mask is ``labels != 0``.
        batch_size: crops per forward pass.

    Returns:
        ``(N,)`` Dice per crop; NaN for a crop whose mask is empty.
    """
    images, labels = _batch(images, "images").float(), _batch(labels, "labels")
    device = next(network.parameters()).device
    network.eval()
    scores = []
    for start in range(0, images.shape[0], batch_size):
        logits = network(images[start: start + batch_size].to(device)).cpu()
        prediction = one_hot(logits.argmax(1, keepdim=True), num_classes=2)
        target = one_hot((labels[start: start + batch_size] != 0).long(), num_classes=2)
        scores.append(compute_dice(prediction, target, include_background=False, ignore_empty=True)[:, 0])
    return torch.cat(scores).double()


def masked_correlation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of two images over a mask, image by image.

    The cosine of the mean-centred pixel values inside the mask, in [-1, 1]; 0 when either image is constant there
    (or the mask is empty), as :func:`~monai_mri_gan.metrics.memorisation_report` counts a constant image.

    Args:
        a: ``(N, 1, H, W)`` images.
        b: ``(N, 1, H, W)`` images.
        mask: ``(N, 1, H, W)`` bool masks.

    Returns:
        ``(N,)`` float64 correlations.
    """
    a, b, mask = _batch(a, "a").double(), _batch(b, "b").double(), _batch(mask, "mask").bool()
    weight = mask.double()
    count = weight.sum((1, 2, 3)).clamp_min(1).view(-1, 1, 1, 1)
    a = (a - (a * weight).sum((1, 2, 3), keepdim=True) / count) * weight
    b = (b - (b * weight).sum((1, 2, 3), keepdim=True) / count) * weight
    norms = a.flatten(1).norm(dim=1) * b.flatten(1).norm(dim=1)
    return torch.where(norms > 1e-12, (a * b).sum((1, 2, 3)) / norms.clamp_min(1e-12), 0.0)


def label_map_correlation(images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much of each image, inside a mask, its label map explains: its correlation with its per-label means.

    Each pixel of the mask is replaced by the mean of the image over the mask's pixels of the same label (0
    included), and :func:`masked_correlation` of the image with that picture is returned (the correlation ratio,
    the square root of the share of variance between labels). A painter that knows only the mask reaches this
    correlation with the real lesion the mask came from at best; well above it, it knows the lesion itself.

    Args:
        images: ``(N, 1, H, W)`` images (e.g. the real lesions under their placement).
        labels: ``(N, 1, H, W)`` their label maps.
        mask: ``(N, 1, H, W)`` bool masks (e.g. the painted hole).

    Returns:
        ``(N,)`` float64 correlations in [0, 1].
    """
    images, labels, mask = _batch(images, "images").double(), _batch(labels, "labels"), _batch(mask, "mask").bool()
    means = torch.zeros_like(images)
    for value in torch.unique(labels[mask]).tolist():
        group = (mask & (labels == value)).double()
        mean = (images * group).sum((1, 2, 3), keepdim=True) / group.sum((1, 2, 3), keepdim=True).clamp_min(1)
        means = means + mean * group
    return masked_correlation(images, means, mask)

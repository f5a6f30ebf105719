"""The study's downstream tumour segmenter: a 2D MONAI ``UNet`` with early stopping, and its slice-level metrics.

A segmenter answers the study's question for a dense task: trained on real (and, in some regimes, synthetic)
tumour slices, does it outline tumours better on held-out subjects, and does it stay quiet on healthy slices?
:func:`train_segmenter` trains it reproducibly and keeps the weights that score best on the validation subjects;
:func:`segment` predicts masks and :func:`segmentation_metrics` scores them on the test subjects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

__all__ = ["segment", "segmentation_metrics", "train_segmenter"]


def _slices(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """A plain ``(N, 1, H, W)`` tensor, or ValueError naming the argument."""
    tensor = torch.as_tensor(tensor).as_subclass(torch.Tensor)
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"{name} must be (N, 1, H, W), got {tuple(tensor.shape)}.")
    return tensor


def train_segmenter(
    images: torch.Tensor,
    masks: torch.Tensor,
    val_images: torch.Tensor,
    val_masks: torch.Tensor,
    *,
    max_steps: int = 600,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    eval_every: int = 50,
    patience: int = 4,
    min_steps: int = 0,
    seed: int = 0,
    channels: Sequence[int] = (16, 32, 64, 128),
    augment: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    sample_weights: torch.Tensor | None = None,
    amp: bool = True,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, list[dict]]:
    """Train a 2D MONAI ``UNet`` to segment tumour (every tumour label as one class), stopping early on validation.

    The network has two output channels (background, tumour), strides ``(2, 2, 2)`` and one residual unit per
    level; the loss is MONAI's ``DiceCELoss`` (softmax, one-hot targets), its Dice term on the tumour channel alone
    and pooled over the batch, the optimiser Adam. Tumour is a fraction of a percent of the pixels: with the
    background's Dice in the term, or each slice's own Dice (0 on a healthy slice unless every tumour probability is
    0), the loss falls fastest by predicting no tumour anywhere, and on the demo cohort every network did so within
    400 steps, training slices included. Every ``eval_every``
    steps (and at the last step) the validation slices are segmented with :func:`segment` and scored by their
    pooled Dice (over all of them, healthy ones included: see :func:`segmentation_metrics`); the weights with the
    best pooled Dice (the earliest on ties) are kept, and training stops once
    ``patience`` evaluations in a row have not improved on it. Initialisation and batch order come from a private
    random state seeded with ``seed``; the global random state is left exactly as it was.

    Args:
        images: ``(N, 1, H, W)`` training slices in [-1, 1]; ``H`` and ``W`` multiples of 8.
        masks: ``(N, 1, H, W)`` integer label maps: 0 background, any positive label tumour.
        val_images: ``(M, 1, H, W)`` validation slices.
        val_masks: ``(M, 1, H, W)`` their label maps; at least one must hold tumour.
        max_steps: optimiser steps at most.
        batch_size: slices per step.
        learning_rate: Adam learning rate.
        eval_every: steps between two validations.
        patience: validations in a row without improvement after which training stops.
        min_steps: steps before which no validation counts towards ``patience``: a segmenter of a small, rare class
            first learns to predict background everywhere (validation Dice near 0) before it finds the tumours.
        seed: seed of initialisation and batch order.
        channels: the ``UNet``'s channels, four levels.
        augment: called on every training batch ``(images, masks)`` (``(B, 1, H, W)`` float images and float 0/1
            tumour masks, on the CPU) and returns the augmented pair; a spatial transform must move both alike,
            with nearest interpolation for the masks. It draws its own randomness (torch's random state here is
            the private one).
        sample_weights: ``(N,)`` non-negative weights; when given, batches are drawn with replacement in
            proportion to them (oversampling), otherwise every slice is visited once per shuffled pass.
        amp: run the forward passes of training and validation under bf16 autocast (the loss is computed in
            float32).
        device: device to train on.

    Selecting on the per-slice Dice of tumour slices alone would reward a network that paints tumour everywhere
    (it loses nothing on those slices); the pooled Dice counts every pixel predicted on a healthy slice against it.

    Returns:
        the network with the best validation pooled Dice, in eval mode, on ``device``; and the learning curve, one
        ``{"step", "val_pooled_dice", "train_loss"}`` dict per validation (``train_loss``: mean loss of the steps since
        the previous validation).

    Raises:
        ValueError: on mismatched shapes, no validation tumour slice, bad ``sample_weights``, or a non-positive
            ``max_steps``, ``batch_size``, ``eval_every`` or ``patience``.
    """
    images, val_images = _slices(images, "images").float(), _slices(val_images, "val_images").float()
    targets, val_masks = (_slices(masks, "masks") > 0).float(), _slices(val_masks, "val_masks")
    if images.shape != targets.shape or val_images.shape != val_masks.shape or images.shape[0] == 0:
        raise ValueError(f"images and masks must share one non-empty (N, 1, H, W) shape; got {tuple(images.shape)}, "
                         f"{tuple(targets.shape)}, {tuple(val_images.shape)} and {tuple(val_masks.shape)}.")
    if not (val_masks > 0).any():
        raise ValueError("the validation slices hold no tumour: nothing to select the segmenter on.")
    if min(int(max_steps), int(batch_size), int(eval_every), int(patience)) < 1:
        raise ValueError(f"max_steps, batch_size, eval_every and patience must be positive, got {max_steps}, "
                         f"{batch_size}, {eval_every} and {patience}.")
    if sample_weights is not None:
        sample_weights = torch.as_tensor(sample_weights, dtype=torch.float64).reshape(-1)
        if sample_weights.shape[0] != images.shape[0] or (sample_weights < 0).any() or sample_weights.sum() <= 0:
            raise ValueError(f"sample_weights must hold {images.shape[0]} non-negative weights, not all zero.")
    device = torch.device(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=tuple(channels), strides=(2, 2, 2),
                       num_res_units=1).to(device)
        optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
        order_rng = torch.Generator().manual_seed(int(seed))

        def batches() -> Iterator[torch.Tensor]:
            while True:
                if sample_weights is None:
                    yield from torch.randperm(images.shape[0], generator=order_rng).split(batch_size)
                else:
                    yield torch.multinomial(sample_weights, batch_size, replacement=True, generator=order_rng)

        curve: list[dict] = []
        best_dice, best_state, stale = -math.inf, None, 0
        loss_sum, loss_steps = torch.zeros((), device=device), 0
        network.train()
        for step, index in zip(range(1, int(max_steps) + 1), batches(), strict=False):
            batch, target = images[index], targets[index]
            if augment is not None:
                batch, target = augment(batch, target)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = network(batch.to(device))
            loss = loss_fn(logits.float(), target.to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            loss_sum, loss_steps = loss_sum + loss.detach(), loss_steps + 1
            if step % int(eval_every) == 0 or step == int(max_steps):
                val_dice = segmentation_metrics(segment(network, val_images, amp=amp), val_masks)["pooled_dice"]
                network.train()
                curve.append({"step": step, "val_pooled_dice": val_dice, "train_loss": float(loss_sum) / loss_steps})
                loss_sum, loss_steps = torch.zeros((), device=device), 0
                if val_dice > best_dice:
                    best_dice, stale = val_dice, 0
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                elif step >= int(min_steps):
                    stale += 1
                    if stale >= int(patience):
                        break
        network.load_state_dict(best_state)
    return network.eval(), curve


@torch.no_grad()
def segment(network: nn.Module, images: torch.Tensor, batch_size: int = 64, amp: bool = False) -> torch.Tensor:
    """Predicted tumour mask of every slice: the arg-max class of a two-class segmenter, in eval mode.

    Args:
        network: returns ``(B, 2, H, W)`` background and tumour logits for ``(B, 1, H, W)`` slices; it is put in
            eval mode, and its inputs go to its parameters' device.
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.
        amp: bfloat16 autocast instead of float32 (3x faster on this project's CPU): for validation during
            training, where a pixel on a knife edge may flip; test scores use float32.

    Returns:
        ``(N, H, W)`` bool masks on the CPU.
    """
    images = _slices(images, "images").float()
    device = next(network.parameters()).device
    network.eval()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        masks = [network(images[start: start + batch_size].to(device)).argmax(1).cpu() == 1
                 for start in range(0, images.shape[0], batch_size)]
    return torch.cat(masks) if masks else torch.zeros(0, *images.shape[2:], dtype=torch.bool)


def segmentation_metrics(predicted: torch.Tensor, masks: torch.Tensor, min_pixels: int = 10) -> dict[str, float]:
    """Dice on the slices that hold tumour, the false-positive rate on the healthy ones, and the pooled Dice of all.

    ``dice`` is the mean over tumour slices (any positive label) of each slice's Dice,
    ``2 |P & T| / (|P| + |T|)`` of the predicted against the true tumour mask (0 for an empty prediction);
    ``pooled_dice`` is ``2 sum|P & T| / (sum|P| + sum|T|)`` over every slice, healthy ones included, so that tumour
    predicted on a healthy slice counts against it (1 when nothing is true and nothing predicted);
    ``false_positive_rate`` is the share of healthy slices (no tumour pixel) on which at least ``min_pixels``
    pixels are predicted tumour. A metric whose slices are absent is NaN.

    Args:
        predicted: ``(N, H, W)`` (or ``(N, 1, H, W)``) predicted tumour masks, as :func:`segment` returns.
        masks: ``(N, 1, H, W)`` (or ``(N, H, W)``) true label maps: 0 background, any positive label tumour.
        min_pixels: predicted tumour pixels that make a healthy slice a false positive.

    Returns:
        ``{"dice", "pooled_dice", "false_positive_rate", "n_tumour_slices", "n_healthy_slices"}``.

    Raises:
        ValueError: when the shapes differ.
    """
    predicted = torch.as_tensor(predicted).as_subclass(torch.Tensor).cpu()
    masks = torch.as_tensor(masks).as_subclass(torch.Tensor).cpu()
    predicted = predicted[:, 0] if predicted.ndim == 4 else predicted
    masks = masks[:, 0] if masks.ndim == 4 else masks
    if predicted.ndim != 3 or predicted.shape != masks.shape:
        raise ValueError(f"predicted and masks must be (N, H, W) of one shape, got {tuple(predicted.shape)} and "
                         f"{tuple(masks.shape)}.")
    prediction, truth = predicted.bool().flatten(1), (masks > 0).flatten(1)
    tumour = truth.any(1)
    overlap = (prediction & truth).sum(1).double()
    sizes = (prediction.sum(1) + truth.sum(1)).double()
    dice = 2 * overlap[tumour] / sizes[tumour]
    flagged = prediction[~tumour].sum(1) >= int(min_pixels)
    total = float(sizes.sum())
    return {
        "dice": float(dice.mean()) if dice.numel() else math.nan,
        "pooled_dice": 2 * float(overlap.sum()) / total if total else 1.0,
        "false_positive_rate": float(flagged.double().mean()) if flagged.numel() else math.nan,
        "n_tumour_slices": int(tumour.sum()),
        "n_healthy_slices": int((~tumour).sum()),
    }

"""Class fidelity of generated slices, judged by a small tumour / no-tumour classifier trained on the real slices.

The same classifier gives the project its own feature space: :func:`classifier_feature_extractor` reads its
penultimate (globally pooled) layer, for FID, KID and precision/recall without any downloaded weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from ..utils import replace_atomically
from .features import EncoderFeatureExtractor

__all__ = [
    "CLASSIFIER_FEATURE_LAYER",
    "build_slice_classifier",
    "class_fidelity",
    "classifier_feature_extractor",
    "classifier_logits",
    "load_slice_classifier",
    "predict_classes",
    "save_slice_classifier",
    "train_slice_classifier",
]

#: Layer of :func:`build_slice_classifier` whose (pooled) output is the encoder feature: the penultimate one.
CLASSIFIER_FEATURE_LAYER = "avgpool"


def build_slice_classifier(num_classes: int = 2, widths: Sequence[int] = (8, 16, 32, 64)) -> ResNet:
    """A compact 2D MONAI ResNet (one basic block per stage) that classifies ``(B, 1, H, W)`` slices.

    The stem is MONAI's default (7x7 stride-2 convolution and max pooling) and the head a global average pool
    and a linear layer, so any slice side from 32 px up works. With the default widths it has about 78k
    parameters and trains in seconds on a CPU.

    Args:
        num_classes: number of classes (2: no tumour, tumour).
        widths: channels of the four stages.

    Returns:
        the network, freshly initialised (from the global random state; see :func:`train_slice_classifier`).

    Raises:
        ValueError: when ``num_classes < 2`` or ``widths`` does not hold four positive values.
    """
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}.")
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"widths must be four positive channel counts, got {widths}.")
    return ResNet(
        "basic", [1, 1, 1, 1], [int(w) for w in widths], spatial_dims=2, n_input_channels=1, num_classes=num_classes
    )


def train_slice_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int | None = None,
    widths: Sequence[int] = (8, 16, 32, 64),
    epochs: int = 8,
    batch_size: int = 32,
    learning_rate: float = 2e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    class_weighted: bool = True,
    balance: float = 0.0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    steps: int | None = None,
    select: Callable[[nn.Module], float] | None = None,
    select_every: int | None = None,
    patience: int | None = None,
    amp: bool = False,
    history: list[dict[str, float]] | None = None,
) -> ResNet:
    """Train :func:`build_slice_classifier` on real slices, with a class-weighted loss, reproducibly.

    By default the cross-entropy weights each class by the inverse of its frequency, so a rare class (tumour slices
    are a minority) counts as much as a common one. Initialisation, shuffling and sampling draw from a private
    random state seeded with ``seed``; the global random state is left exactly as it was (a run that trains a
    classifier mid-way resumes identically).

    The keyword-only options give the standard remedies for class imbalance and a fixed budget, so that regimes
    can be compared at equal cost (see :mod:`monai_mri_gan.study`): a plain loss (``class_weighted=False``),
    oversampling of the rare class (``balance``), a batch augmentation (``augment``), a budget in optimiser steps
    rather than epochs (``steps``), and keeping the weights that score best on held-out data (``select``).

    Args:
        images: ``(N, 1, H, W)`` real slices in [-1, 1].
        labels: ``(N,)`` class indices.
        num_classes: number of classes; None for ``labels.max() + 1`` (at least 2).
        widths: channels of the four stages.
        epochs: passes over the slices.
        batch_size: slices per step.
        learning_rate: Adam learning rate.
        seed: seed of initialisation and shuffling.
        device: device to train on.
        class_weighted: weight the cross-entropy by inverse class frequency; False for a plain cross-entropy.
        balance: 0 visits every slice once per epoch in a shuffled order; above 0 draws each epoch's slices with
            replacement, class ``c`` with weight ``n_c ** -balance`` (1 draws every class equally often, as
            :func:`~monai_mri_gan.data.class_balanced_sampler`).
        augment: applied to every training batch ``(B, 1, H, W)`` on the CPU before the forward pass; it draws its
            own randomness (seed it for a reproducible run; torch's random state is the private one here).
        steps: optimiser steps in all (batches of fewer than two slices are skipped but count); None for
            ``epochs`` passes over the slices.
        select: scores the network (in eval mode) on held-out data, higher is better; the weights with the best
            score (the earliest on ties) are returned instead of the last ones. None returns the last weights.
        select_every: steps between two scorings (and the last step); None for once per epoch.
        patience: with ``select``, stop after this many scorings in a row without a better score (early
            stopping); None trains for the whole budget.
        amp: run the forward pass under bfloat16 autocast (about 2x on CPUs with bf16 instructions); the loss and
            the optimiser stay in float32.
        history: a list that receives one ``{"step", "score", "loss"}`` per scoring (``loss``: the mean training
            loss since the previous scoring), to show whether the budget was enough.

    Returns:
        the trained network, in eval mode, on ``device``.

    Raises:
        ValueError: on mismatched inputs, when a class has no slice, or on a negative ``balance`` or a
            non-positive ``steps`` or ``select_every``.
    """
    images = torch.as_tensor(images).as_subclass(torch.Tensor).float()
    labels = torch.as_tensor(labels).as_subclass(torch.Tensor).long().reshape(-1)
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"need (N, 1, H, W) images and (N,) labels, got {tuple(images.shape)}, {tuple(labels.shape)}.")
    num_classes = max(int(labels.max()) + 1, 2) if num_classes is None else int(num_classes)
    counts = torch.bincount(labels, minlength=num_classes).double()
    if (counts == 0).any():
        raise ValueError(f"every class needs at least one slice to train a classifier; counts are {counts.tolist()}.")
    if float(balance) < 0:
        raise ValueError(f"balance must be non-negative, got {balance}.")
    steps_per_epoch = math.ceil(images.shape[0] / batch_size)
    total_steps = int(epochs) * steps_per_epoch if steps is None else int(steps)
    select_every = steps_per_epoch if select_every is None else int(select_every)
    if total_steps < 1 or select_every < 1:
        raise ValueError(f"steps and select_every must be positive, got {steps} and {select_every}.")
    weights = (counts.sum() / (num_classes * counts)).float().to(device) if class_weighted else None
    draw_weights = counts.pow(-float(balance))[labels] if balance > 0 else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_slice_classifier(num_classes, widths).to(device)
        order_rng = torch.Generator().manual_seed(seed)
        optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)

        def batches() -> Iterator[torch.Tensor]:
            while True:
                if draw_weights is None:
                    order = torch.randperm(images.shape[0], generator=order_rng)
                else:
                    order = torch.multinomial(draw_weights, images.shape[0], replacement=True, generator=order_rng)
                yield from order.split(batch_size)

        best_score, best_state, stale = -math.inf, None, 0
        losses: list[torch.Tensor] = []
        network.train()
        for step, index in zip(range(total_steps), batches(), strict=False):
            if index.numel() >= 2:  # batch norm needs two samples
                batch = images[index] if augment is None else augment(images[index])
                with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
                    logits = network(batch.to(device))
                loss = F.cross_entropy(logits.float(), labels[index].to(device), weight=weights)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(loss.detach())
            if select is not None and ((step + 1) % select_every == 0 or step + 1 == total_steps):
                network.eval()
                score = float(select(network))
                network.train()
                if history is not None:
                    mean_loss = float(torch.stack(losses).mean()) if losses else math.nan
                    history.append({"step": step + 1, "score": score, "loss": mean_loss})
                losses.clear()
                if best_state is None or score > best_score:
                    best_score, stale = score, 0
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                else:
                    stale += 1
                    if patience is not None and stale >= int(patience):
                        break
        if best_state is not None:
            network.load_state_dict(best_state)
    return network.eval()


def save_slice_classifier(
    network: ResNet, path: str | os.PathLike, widths: Sequence[int] = (8, 16, 32, 64),
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a classifier's weights and architecture to one file, atomically.

    Args:
        network: a network made by :func:`build_slice_classifier` (or trained by :func:`train_slice_classifier`).
        path: destination.
        widths: the network's stage widths.
        class_names: optional names of the classes, kept for reports.

    Returns:
        the path written.
    """
    num_classes = int(network.fc.out_features)
    config: dict[str, Any] = {"num_classes": num_classes, "widths": [int(w) for w in widths]}
    if class_names is not None:
        config["class_names"] = [str(n) for n in class_names]
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    return replace_atomically(path, lambda handle: torch.save({"state_dict": state, "config": config}, handle))


def load_slice_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> ResNet:
    """Rebuild a classifier saved by :func:`save_slice_classifier` (``weights_only`` load, nothing downloaded).

    Args:
        path: the file.
        device: device to put the network on.

    Returns:
        the network in eval mode.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is not a saved slice classifier.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"slice classifier not found at '{path}'.")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, Mapping) or "state_dict" not in saved or "config" not in saved:
        raise ValueError(f"{path}: not a slice classifier file (expected 'state_dict' and 'config' entries).")
    config = saved["config"]
    network = build_slice_classifier(int(config["num_classes"]), config["widths"])
    network.load_state_dict(saved["state_dict"])
    return network.to(device).eval()


@torch.no_grad()
def classifier_logits(classifier: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                      batch_size: int = 256) -> torch.Tensor:
    """The logits of a classifier for every slice, computed in batches without gradients.

    Args:
        classifier: returns ``(B, K)`` logits for ``(B, 1, H, W)`` slices (a module is put in eval mode for the
            call and restored afterwards, and its inputs go to its parameters' device).
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.

    Returns:
        ``(N, K)`` float32 logits on the CPU.
    """
    images = torch.as_tensor(images).as_subclass(torch.Tensor).float()
    was_training = isinstance(classifier, nn.Module) and classifier.training
    if isinstance(classifier, nn.Module):
        classifier.eval()
        device = next(iter(classifier.parameters()), torch.empty(0)).device
    else:
        device = torch.device("cpu")
    try:
        logits = [
            classifier(images[start : start + batch_size].to(device)).float().cpu()
            for start in range(0, images.shape[0], batch_size)
        ]
    finally:
        if was_training:
            classifier.train()
    return torch.cat(logits)


def predict_classes(classifier: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    batch_size: int = 256) -> torch.Tensor:
    """Arg-max class of every slice under a classifier that returns ``(B, K)`` logits (see :func:`classifier_logits`).

    Args:
        classifier: the classifier.
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.

    Returns:
        ``(N,)`` predicted classes on the CPU.
    """
    return classifier_logits(classifier, images, batch_size).argmax(dim=1)


def class_fidelity(
    classifier: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
    num_classes: int | None = None, batch_size: int = 256,
) -> dict[str, Any]:
    """How often the classifier recognises the class a slice was generated (or labelled) with.

    Args:
        classifier: returns ``(B, K)`` logits for ``(B, 1, H, W)`` slices.
        images: ``(N, 1, H, W)`` slices.
        labels: ``(N,)`` classes the slices were generated with.
        num_classes: number of classes; None for ``labels.max() + 1``.
        batch_size: slices per forward pass.

    Returns:
        ``{"overall": accuracy over all slices, "per_class": [accuracy of each class, or None for a class with no
        slice], "counts": [slices per class]}``.

    Raises:
        ValueError: when ``images`` and ``labels`` differ in length or are empty.
    """
    labels = torch.as_tensor(labels).as_subclass(torch.Tensor).long().reshape(-1).cpu()
    if labels.numel() == 0 or labels.shape[0] != len(images):
        raise ValueError(f"need one label per image and at least one image; got {len(images)} and {labels.numel()}.")
    num_classes = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    correct = predict_classes(classifier, images, batch_size) == labels
    per_class = []
    counts = []
    for c in range(num_classes):
        members = labels == c
        counts.append(int(members.sum()))
        per_class.append(float(correct[members].double().mean()) if members.any() else None)
    return {"overall": float(correct.double().mean()), "per_class": per_class, "counts": counts}


def classifier_feature_extractor(classifier: ResNet, batch_size: int = 128,
                                 device: str | torch.device = "cpu") -> EncoderFeatureExtractor:
    """The project's encoder feature space: the pooled penultimate layer of a slice classifier.

    Values of FID, KID or precision/recall in this space compare only with values computed with the same
    classifier file.

    Args:
        classifier: a network from :func:`build_slice_classifier` (trained).
        batch_size: slices per forward pass.
        device: device to run on.

    Returns:
        an extractor named ``"encoder:slice_classifier"`` with ``widths[-1]``-dimensional features.
    """
    return EncoderFeatureExtractor(
        classifier, layer=CLASSIFIER_FEATURE_LAYER, batch_size=batch_size, device=device,
        name="encoder:slice_classifier",
    )

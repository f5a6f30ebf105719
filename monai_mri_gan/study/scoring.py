"""Scoring the downstream classifier: tumour probabilities, the validation threshold and the study's metrics."""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from torch import nn

from ..metrics.classifier import classifier_logits

__all__ = ["CLASSIFICATION_METRICS", "auroc", "classification_metrics", "no_lesion_floor", "tumour_probabilities"]

CLASSIFICATION_METRICS = ("auroc", "sensitivity_at_90_specificity", "balanced_accuracy")
"""The classification metrics the study reports."""


def auroc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve of the tumour class (MONAI's ``compute_roc_auc``); NaN without both classes."""
    labels = torch.as_tensor(labels).reshape(-1).long()
    scores = torch.as_tensor(scores).reshape(-1).double()
    if labels.min() == labels.max():
        return math.nan
    return float(compute_roc_auc(scores, labels))


def classification_metrics(val_labels: torch.Tensor, val_scores: torch.Tensor, test_labels: torch.Tensor,
                           test_scores: torch.Tensor, specificity: float = 0.9) -> dict[str, float]:
    """The study's classification metrics on test slices, at a threshold chosen on validation slices.

    The threshold is the least score that at least ``specificity`` of the validation healthy slices do not exceed
    (a slice is called tumour when its score is strictly above it), so the test specificity is near that level
    without the test set choosing anything.

    Args:
        val_labels: ``(N,)`` validation classes (1 tumour).
        val_scores: ``(N,)`` validation tumour scores.
        test_labels: ``(M,)`` test classes.
        test_scores: ``(M,)`` test tumour scores.
        specificity: the validation specificity to reach.

    Returns:
        ``auroc`` (test), ``sensitivity_at_90_specificity`` and ``balanced_accuracy`` (test, at the threshold),
        ``test_specificity`` and ``threshold``.

    Raises:
        ValueError: when the validation slices hold no healthy slice.
    """
    val_labels, test_labels = (torch.as_tensor(x).reshape(-1).long() for x in (val_labels, test_labels))
    val_scores, test_scores = (torch.as_tensor(x).reshape(-1).double() for x in (val_scores, test_scores))
    healthy = val_scores[val_labels == 0].numpy()
    if healthy.size == 0:
        raise ValueError("the validation slices hold no healthy slice to set the threshold on.")
    threshold = float(np.sort(healthy)[max(math.ceil(specificity * healthy.size) - 1, 0)])
    called = test_scores > threshold
    tumour = test_labels == 1
    sensitivity = float(called[tumour].double().mean()) if tumour.any() else math.nan
    test_specificity = float((~called[~tumour]).double().mean()) if (~tumour).any() else math.nan
    return {"auroc": auroc(test_labels, test_scores), "sensitivity_at_90_specificity": sensitivity,
            "balanced_accuracy": (sensitivity + test_specificity) / 2, "test_specificity": test_specificity,
            "threshold": threshold}


@torch.no_grad()
def tumour_probabilities(network: nn.Module, images: torch.Tensor, batch_size: int = 256,
                         amp: bool = False) -> torch.Tensor:
    """Softmax probability of class 1 (tumour) for every slice, in eval mode, on the CPU.

    Args:
        network: a classifier returning ``(B, K)`` logits.
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.
        amp: run the forward passes under bfloat16 autocast (1.6x faster here; for validation during training,
            where only the ranking of checkpoints matters; test scores are computed in float32).

    Returns:
        ``(N,)`` probabilities on the CPU.
    """
    device = next(iter(network.parameters()), torch.empty(0)).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        logits = classifier_logits(network, images, batch_size)
    return torch.softmax(logits.float(), dim=1)[:, 1]


def no_lesion_floor(train_features: torch.Tensor, train_labels: torch.Tensor, features: torch.Tensor,
                    steps: int = 200) -> torch.Tensor:
    """Tumour scores from features that never look at a lesion: a logistic regression on them.

    Tumour slices sit at mid-brain levels with large head sections, so slice position and head area alone
    separate them from many healthy slices. Reported beside the regimes, this floor shows what a model can reach
    without learning tumours at all.

    Args:
        train_features: ``(N, F)`` features of the training slices (e.g. relative slice position, its square,
            head area).
        train_labels: ``(N,)`` classes.
        features: ``(M, F)`` features of the slices to score.
        steps: L-BFGS iterations.

    Returns:
        ``(M,)`` scores (logits).
    """
    x = torch.as_tensor(train_features).double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-9)
    x = (x - mean) / std
    y = torch.as_tensor(train_labels).double().reshape(-1)
    weight = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    positive = float(y.mean())
    balance = torch.where(y == 1, 0.5 / max(positive, 1e-9), 0.5 / max(1 - positive, 1e-9))
    optimiser = torch.optim.LBFGS([weight], max_iter=int(steps), line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ weight[:-1] + weight[-1]
        value = (balance * nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")).mean()
        value = value + 1e-4 * weight[:-1].pow(2).sum()
        value.backward()
        return value

    optimiser.step(loss)
    z = (torch.as_tensor(features).double() - mean) / std
    return (z @ weight[:-1] + weight[-1]).detach()

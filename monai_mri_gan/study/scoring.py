"""Scoring a downstream classifier on held-out slices: tumour probabilities and the study's metrics."""

from __future__ import annotations

import math

import torch
from monai.metrics import compute_roc_auc
from torch import nn

from ..metrics.classifier import classifier_logits

__all__ = ["METRICS", "binary_classification_metrics", "tumour_probabilities"]

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auroc")
"""Metrics of the tumour class that the study reports, in this order."""


def binary_classification_metrics(labels: torch.Tensor, scores: torch.Tensor,
                                  threshold: float = 0.5) -> dict[str, float]:
    """Balanced accuracy, sensitivity and specificity of the positive (tumour) class, and AUROC.

    A slice is predicted positive when its score is at least ``threshold``. Sensitivity is the share of positive
    slices predicted positive, specificity the share of negative slices predicted negative, balanced accuracy their
    mean; AUROC is ``monai.metrics.compute_roc_auc`` of the scores. A metric that needs a class the labels lack is
    NaN.

    Args:
        labels: ``(N,)`` true classes, 1 positive and 0 negative.
        scores: ``(N,)`` positive-class probabilities (or any score that grows with it).
        threshold: decision threshold on the scores.

    Returns:
        ``{"balanced_accuracy", "sensitivity", "specificity", "auroc"}`` as floats.

    Raises:
        ValueError: when the lengths differ or there is no slice.
    """
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    scores = torch.as_tensor(scores).reshape(-1).double().cpu()
    if labels.numel() == 0 or labels.shape != scores.shape:
        raise ValueError(f"need one score per label and at least one label; got {labels.numel()} and "
                         f"{scores.numel()}.")
    positive = labels == 1
    predicted = scores >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    sensitivity = float((predicted & positive).sum()) / n_pos if n_pos else math.nan
    specificity = float((~predicted & ~positive).sum()) / n_neg if n_neg else math.nan
    auroc = float(compute_roc_auc(scores, positive.long())) if n_pos and n_neg else math.nan
    return {"balanced_accuracy": (sensitivity + specificity) / 2, "sensitivity": sensitivity,
            "specificity": specificity, "auroc": auroc}


@torch.no_grad()
def tumour_probabilities(network: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probability of class 1 (tumour) for every slice, in eval mode, on the CPU.

    Args:
        network: a classifier returning ``(B, K)`` logits.
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.

    Returns:
        ``(N,)`` probabilities on the CPU.
    """
    return torch.softmax(classifier_logits(network, images, batch_size), dim=1)[:, 1]



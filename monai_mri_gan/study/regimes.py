"""The regimes of the study: how the downstream classifier is trained, classic augmentation, and each training set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.transforms import Compose, RandAdjustContrast, RandFlip, RandRotate, RandScaleIntensity
from torch import nn

from ..synthesis.augmentation import synthetic_quota
from .gan import sample_synthetic

__all__ = ["STUDY_REGIMES", "ClassicAugmentation", "Regime", "regime_training_set"]


@dataclass(frozen=True)
class Regime:
    """One way of training the downstream classifier.

    Args:
        name: short name used in tables.
        description: one line for reports.
        class_weighted: inverse-frequency class weights in the cross-entropy.
        balance: oversampling of the rare class (see :func:`~monai_mri_gan.metrics.train_slice_classifier`).
        classic_augmentation: MONAI random flips, rotations and intensity changes (:class:`ClassicAugmentation`).
        synthetic: ``"none"``; ``"balance"`` adds GAN tumour slices until the classes are equal; ``"only"`` trains
            on GAN slices of both classes alone (as many per class as the real majority class).

    Raises:
        ValueError: when ``synthetic`` is none of the three.
    """

    name: str
    description: str
    class_weighted: bool = False
    balance: float = 0.0
    classic_augmentation: bool = False
    synthetic: str = "none"

    def __post_init__(self) -> None:
        if self.synthetic not in ("none", "balance", "only"):
            raise ValueError(f"synthetic must be 'none', 'balance' or 'only', got {self.synthetic!r}.")


STUDY_REGIMES: tuple[Regime, ...] = (
    Regime("real", "real slices, imbalanced, plain cross-entropy"),
    Regime("real_weighted", "real slices, inverse-frequency class-weighted cross-entropy", class_weighted=True),
    Regime("real_oversampled", "real slices, tumour slices oversampled to equal draws", balance=1.0),
    Regime("real_classic_aug", "real slices, class-weighted loss + MONAI random flips, rotations, intensity",
           class_weighted=True, classic_augmentation=True),
    Regime("real_gan", "real slices + GAN tumour slices up to balance, plain cross-entropy", synthetic="balance"),
    Regime("synthetic_only", "GAN slices only (both classes, balanced), tested on real", synthetic="only"),
)
"""The regimes of the study, from the baseline through the standard fixes to GAN augmentation."""


class ClassicAugmentation:
    """The classic augmentation users try first: MONAI random flips, rotations and intensity changes per slice.

    Each slice of a batch draws its own left-right flip (p 0.5), in-plane rotation (up to ``max_rotation``
    radians, p 0.5, border padding so the background stays background), contrast gamma in [0.8, 1.25] (p 0.5) and
    intensity scaling by up to 10 % (p 0.5), from a random state seeded with ``seed``.

    Args:
        seed: seed of the transforms' random state.
        max_rotation: largest rotation in radians.
    """

    def __init__(self, seed: int = 0, max_rotation: float = 0.26) -> None:
        self.transform = Compose([
            RandFlip(prob=0.5, spatial_axis=0),
            RandRotate(range_x=max_rotation, prob=0.5, padding_mode="border"),
            RandAdjustContrast(prob=0.5, gamma=(0.8, 1.25)),
            RandScaleIntensity(factors=0.1, prob=0.5),
        ]).set_random_state(seed=seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a ``(B, C, H, W)`` batch, each slice independently; values stay in [-1, 1]."""
        out = [torch.as_tensor(self.transform(x)).as_subclass(torch.Tensor) for x in images]
        return torch.stack(out).float().clamp(-1.0, 1.0)


def regime_training_set(regime: Regime, images: torch.Tensor, classes: torch.Tensor,
                        generator: nn.Module | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slices and classes a regime trains on, with its synthetic slices drawn with ``seed``.

    Args:
        regime: the regime (its ``synthetic`` setting decides the mix).
        images: ``(N, 1, S, S)`` real training slices of the condition.
        classes: ``(N,)`` class of each real slice (1 = tumour).
        generator: the condition's conditional generator; None when the regime uses no synthetic slice.
        seed: seed of the synthetic slices' latents.

    Returns:
        the training images and their classes.

    Raises:
        ValueError: when the regime needs synthetic slices and ``generator`` is None.
    """
    if regime.synthetic == "none":
        return images, classes
    if generator is None:
        raise ValueError(f"regime {regime.name!r} needs a generator.")
    counts = {c: int((classes == c).sum()) for c in (0, 1)}
    if regime.synthetic == "balance":
        extra = synthetic_quota(counts, 2, 1.0)[1]
        fake = sample_synthetic(generator, 1, extra, seed=seed)
        return torch.cat([images, fake]), torch.cat([classes, torch.ones(extra, dtype=torch.long)])
    n = max(counts.values())
    fake = torch.cat([sample_synthetic(generator, 0, n, seed=seed), sample_synthetic(generator, 1, n, seed=seed)])
    return fake, torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])



"""The regimes of the study: the remedies a team with few tumour patients can try, and classic augmentation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.data import get_track_meta, set_track_meta
from monai.transforms import Compose, RandAdjustContrastd, RandFlipd, RandRotated, RandScaleIntensityd

__all__ = ["DEFAULT_REGIMES", "DEFAULT_SEGMENTATION_REGIMES", "STUDY_REGIMES", "SYNTHETIC_SOURCES",
           "ClassicAugmentation", "Regime", "regimes_named"]

SYNTHETIC_SOURCES = ("none", "copy_paste", "painted", "whole_slice")
"""Where a regime's synthetic tumour slices come from: none, real lesions pasted (TumorCP-style), lesions painted by
the lesion painter, or whole slices drawn by the class-conditional GAN."""


@dataclass(frozen=True)
class Regime:
    """One way of training the downstream models, all at the same budget.

    Args:
        name: short name used in tables.
        description: one line for reports.
        class_weighted: inverse-frequency class weights in the classifier's cross-entropy (no segmentation run).
        oversample: draw tumour slices as often as healthy ones.
        classic_augmentation: MONAI random flips, rotations and intensity changes (:class:`ClassicAugmentation`).
        synthetic: one of :data:`SYNTHETIC_SOURCES`; synthetic tumour slices are added until the classes are equal,
            as the augmented datalist of :mod:`monai_mri_gan.synthesis` gives them.

    Raises:
        ValueError: for an unknown ``synthetic``.
    """

    name: str
    description: str
    class_weighted: bool = False
    oversample: bool = False
    classic_augmentation: bool = False
    synthetic: str = "none"

    def __post_init__(self) -> None:
        if self.synthetic not in SYNTHETIC_SOURCES:
            raise ValueError(f"synthetic must be one of {SYNTHETIC_SOURCES}, got {self.synthetic!r}.")

    @property
    def segments(self) -> bool:
        """Whether the regime also trains a segmenter: class weights are a classifier's remedy, and whole-slice GAN
        samples come without masks."""
        return not self.class_weighted and self.synthetic != "whole_slice"


STUDY_REGIMES: tuple[Regime, ...] = (
    Regime("real", "real slices as they come, plain loss"),
    Regime("class_weighted", "real slices, inverse-frequency class-weighted cross-entropy", class_weighted=True),
    Regime("oversampling", "real slices, tumour slices drawn as often as healthy ones", oversample=True),
    Regime("classic_augmentation", "real slices oversampled, with MONAI random flips, rotations and intensity",
           oversample=True, classic_augmentation=True),
    Regime("copy_paste", "real slices + real lesions pasted into healthy slices up to balance",
           synthetic="copy_paste"),
    Regime("whole_slice_gan", "real slices + whole-slice GAN tumour slices up to balance", synthetic="whole_slice"),
    Regime("painted", "real slices + lesions painted into healthy slices up to balance", synthetic="painted"),
    Regime("painted_classic", "painted lesions up to balance, with classic augmentation", synthetic="painted",
           classic_augmentation=True),
)
"""Every regime, from the baseline through the standard fixes to synthetic data."""

DEFAULT_REGIMES: tuple[str, ...] = ("oversampling", "classic_augmentation", "copy_paste", "painted")
"""The regimes of the default run: two standard fixes, copy-paste and painted lesions, the ones the question
compares. To fit five splits into the hour, ``real`` (no remedy), ``class_weighted`` (the expected loss of
oversampling, without its variance; it scored within 0.05 AUROC of oversampling at both levels of the first full
run), ``painted_classic`` and the whole-slice GAN (one GAN per split and level costs more than every other regime
together, and it lost to the standard fixes before) are left to the full grid: more splits before more regimes."""

DEFAULT_SEGMENTATION_REGIMES: tuple[str, ...] = ("classic_augmentation", "copy_paste", "painted")
"""The regimes that also train a segmenter in the default run: the strongest standard fix for segmentation (plain
oversampling lost to it by a wide margin in the pilot), copy-paste and painted lesions."""


def regimes_named(names: Sequence[str]) -> tuple[Regime, ...]:
    """The regimes of ``names``, in the order of :data:`STUDY_REGIMES`.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    known = {r.name: r for r in STUDY_REGIMES}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(f"unknown regime(s) {unknown}; known: {list(known)}.")
    return tuple(r for r in STUDY_REGIMES if r.name in set(names))


class ClassicAugmentation:
    """The classic augmentation users try first: MONAI random flips, rotations and intensity changes per slice.

    Each slice of a batch draws its own left-right flip (p 0.5), in-plane rotation (up to ``max_rotation``
    radians, p 0.5), contrast gamma in [0.8, 1.25] (p 0.5) and intensity scaling by up to 10 % (p 0.5), from a
    random state seeded with ``seed``. A mask, when given, moves with its slice (nearest neighbour).

    Args:
        seed: seed of the transforms' random state.
        max_rotation: largest rotation in radians.
    """

    def __init__(self, seed: int = 0, max_rotation: float = 0.26) -> None:
        keys = ["image", "label"]
        self.transform = Compose([
            RandFlipd(keys, prob=0.5, spatial_axis=0, allow_missing_keys=True),
            RandRotated(keys, range_x=max_rotation, prob=0.5, padding_mode="border", mode=["bilinear", "nearest"],
                        allow_missing_keys=True),
            RandAdjustContrastd("image", prob=0.5, gamma=(0.8, 1.25)),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
        ]).set_random_state(seed=seed)

    def __call__(self, images: torch.Tensor,
                 masks: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Augment a ``(B, 1, H, W)`` batch (and its masks), each slice independently; values stay in [-1, 1].

        Returns:
            the images, or the images and masks when masks are given.
        """
        items = [{"image": x} if masks is None else {"image": x, "label": m}
                 for x, m in zip(images, masks if masks is not None else images, strict=True)]
        tracking = get_track_meta()
        set_track_meta(False)  # plain tensors: the same draws and values, a third of the time (no metadata per slice)
        try:
            out = [self.transform(item) for item in items]
        finally:
            set_track_meta(tracking)
        augmented = torch.stack([torch.as_tensor(o["image"]).as_subclass(torch.Tensor) for o in out])
        augmented = augmented.float().clamp(-1.0, 1.0)
        if masks is None:
            return augmented
        labels = torch.stack([torch.as_tensor(o["label"]).as_subclass(torch.Tensor) for o in out])
        return augmented, labels.round().to(masks.dtype)

"""Differentiable augmentation for GAN training on small data sets (DiffAugment, Zhao et al. 2020).

The same random augmentation is applied to real and generated slices before the discriminator sees them,
and gradients flow through it to the generator, so the discriminator cannot memorise the few real
slices while the generator is not taught to produce augmented ones. Images are in the training range
[-1, 1], where -1 is background; augmented values are not clipped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["DiffAugment"]


class DiffAugment(nn.Module):
    """Random translation, cutout, brightness and contrast, differentiable with respect to the input.

    The operations in ``policy`` run in the given order. Each one is applied to each sample independently
    with probability ``p`` (``p=1`` is the original DiffAugment; a smaller ``p``, which may be changed
    between iterations, gives adaptive control as in StyleGAN2-ADA). Per sample:

    - "translation": an integer shift, drawn uniformly in ``[-t, t]`` pixels per axis with
      ``t = int(side * translation_ratio + 0.5)``; content moves by the shift and the exposed border is
      filled with ``background``.
    - "cutout": a square of side ``int(side * cutout_ratio + 0.5)`` centred uniformly on the image (clipped
      at the border) is set to ``background`` (the original sets it to 0, i.e. mid-grey in [-1, 1]; here it
      reads as missing tissue).
    - "brightness": adds a constant drawn uniformly in ``[-brightness, brightness)``.
    - "contrast": scales around the sample's mean (over channels and pixels) by a factor drawn uniformly in
      ``[1 - contrast, 1 + contrast)``.

    Random numbers come from ``generator`` when one is passed to :meth:`forward`, else from the global
    torch generator, so results are reproducible with either.

    Args:
        policy: operations to apply, among "translation", "cutout", "brightness", "contrast".
        p: per-sample probability of each operation, in [0, 1]; 0 (or an empty policy) is the identity.
        translation_ratio: largest shift as a fraction of the image side.
        cutout_ratio: side of the cut-out square as a fraction of the image side.
        brightness: largest absolute brightness shift, in training units.
        contrast: largest relative change of contrast.
        background: value of empty space, for translation padding and cutout.

    Raises:
        ValueError: for an unknown operation or a parameter out of range.
    """

    operations = ("translation", "cutout", "brightness", "contrast")

    def __init__(
        self,
        policy: Sequence[str] = ("translation", "cutout", "brightness", "contrast"),
        p: float = 1.0,
        translation_ratio: float = 0.125,
        cutout_ratio: float = 0.5,
        brightness: float = 0.5,
        contrast: float = 0.5,
        background: float = -1.0,
    ) -> None:
        super().__init__()
        if isinstance(policy, str):
            policy = [name for name in policy.split(",") if name]
        unknown = [name for name in policy if name not in self.operations]
        if unknown:
            raise ValueError(f"unknown augmentation(s) {unknown}; choose among {self.operations}.")
        for name, value, upper in (
            ("translation_ratio", translation_ratio, 1.0),
            ("cutout_ratio", cutout_ratio, 1.0),
            ("contrast", contrast, 1.0),
        ):
            if not 0.0 <= value <= upper:
                raise ValueError(f"{name} must be in [0, {upper}], got {value}.")
        if brightness < 0:
            raise ValueError(f"brightness must be non-negative, got {brightness}.")
        self.policy = tuple(policy)
        self.p = p
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio
        self.brightness = brightness
        self.contrast = contrast
        self.background = background

    @property
    def p(self) -> float:
        """Per-sample probability of each operation."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {value}.")
        self._p = float(value)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch of slices.

        Args:
            x: slices, shape (B, C, H, W).
            generator: source of randomness; None uses the global torch generator.

        Returns:
            The augmented batch, same shape as ``x``; ``x`` itself when nothing is to be applied.
        """
        if not self.policy or self.p == 0.0:
            return x
        for name in self.policy:
            augmented = getattr(self, f"_{name}")(x, generator)
            if self.p < 1.0:
                apply = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < self.p
                augmented = torch.where(apply, augmented, x)
            x = augmented
        return x

    def _uniform(self, x: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
        """Per-sample values, shape (B, 1, 1, 1), uniform in [low, high)."""
        u = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)
        return low + (high - low) * u

    def _brightness(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return x + self._uniform(x, -self.brightness, self.brightness, generator)

    def _contrast(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * self._uniform(x, 1.0 - self.contrast, 1.0 + self.contrast, generator) + mean

    def _translation(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        batch, _, height, width = x.shape
        max_y, max_x = int(height * self.translation_ratio + 0.5), int(width * self.translation_ratio + 0.5)
        shift_y = torch.randint(-max_y, max_y + 1, (batch, 1, 1), device=x.device, generator=generator)
        shift_x = torch.randint(-max_x, max_x + 1, (batch, 1, 1), device=x.device, generator=generator)
        # Gather from a copy padded by one background pixel; sources outside the image land on that padding.
        rows = torch.arange(height, device=x.device)[None, :, None] - shift_y + 1
        cols = torch.arange(width, device=x.device)[None, None, :] - shift_x + 1
        rows = rows.clamp(0, height + 1).expand(batch, height, width)
        cols = cols.clamp(0, width + 1).expand(batch, height, width)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=self.background)
        index = torch.arange(batch, device=x.device)[:, None, None].expand(batch, height, width)
        return padded.permute(0, 2, 3, 1)[index, rows, cols].permute(0, 3, 1, 2)

    def _cutout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        batch, _, height, width = x.shape
        size_y, size_x = int(height * self.cutout_ratio + 0.5), int(width * self.cutout_ratio + 0.5)
        # Centres range over the whole image (as in DiffAugment), so every pixel is equally likely to be cut.
        top = torch.randint(0, height + 1 - size_y % 2, (batch, 1, 1), device=x.device, generator=generator)
        left = torch.randint(0, width + 1 - size_x % 2, (batch, 1, 1), device=x.device, generator=generator)
        top, left = top - size_y // 2, left - size_x // 2
        rows = torch.arange(height, device=x.device)[None, :, None]
        cols = torch.arange(width, device=x.device)[None, None, :]
        inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
        return torch.where(inside[:, None], torch.full_like(x, self.background), x)

    def extra_repr(self) -> str:
        return f"policy={self.policy}, p={self.p}, background={self.background}"

"""The whole-slice GAN's networks: a generator and a discriminator built as a matching pair."""

from __future__ import annotations

from .discriminator import SliceDiscriminator
from .generator import SliceGenerator

__all__ = ["build_networks"]


def build_networks(
    image_size: int = 128,
    latent_dim: int = 128,
    num_classes: int = 0,
    base_channels: int | None = None,
    spectral_norm: bool = True,
    channels: int = 1,
    max_channels: int = 256,
    auxiliary_classifier: bool = False,
) -> tuple[SliceGenerator, SliceDiscriminator]:
    """A matching generator and discriminator for slices of side ``image_size``.

    Args:
        image_size: side S of the square slices; one of 32, 64, 128, 256, 512.
        latent_dim: length of the generator's latent vector.
        num_classes: number of classes for conditioning (conditional batch norm in the generator, projection
            in the discriminator); 0 for unconditional networks.
        base_channels: channels at the finest level of both networks; None for the size-dependent default.
        spectral_norm: spectrally normalise the discriminator (the generator is left without it, as in DCGAN
            and StyleGAN2; build :class:`SliceGenerator` directly to normalise it too).
        channels: image channels.
        max_channels: cap on the channels at coarse levels.
        auxiliary_classifier: give the discriminator an AC-GAN class head (see :class:`SliceDiscriminator`).

    Returns:
        ``(generator, discriminator)``.
    """
    generator = SliceGenerator(
        latent_dim=latent_dim, image_size=image_size, channels=channels, base_channels=base_channels,
        max_channels=max_channels, num_classes=num_classes,
    )
    discriminator = SliceDiscriminator(
        image_size=image_size, channels=channels, base_channels=base_channels, max_channels=max_channels,
        num_classes=num_classes, spectral_norm=spectral_norm, auxiliary_classifier=auxiliary_classifier,
    )
    return generator, discriminator

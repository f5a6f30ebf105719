"""The lesion painter's networks: a U-Net that fills a hole around a lesion mask, and a patch discriminator of pairs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import BasicUNet, PatchDiscriminator
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from .recorded import RecordsArguments

__all__ = ["LesionPainterDiscriminator", "LesionPainterGenerator"]


class LesionPainterGenerator(RecordsArguments, nn.Module):
    """Paint a lesion into a hole: MONAI's ``BasicUNet`` on the blanked image, its condition and a latent vector.

    Input channels: the image with the hole blanked (1), the condition (``1 + num_labels``: the hole's blend weights,
    then one map per tumour label), and ``latent_dim`` channels holding the latent vector ``z`` (constant over the
    image), so one mask can give different lesions. The output is a full image in [-1, 1]; the caller composites it
    into the base inside the hole only (:func:`~monai_mri_gan.transforms.composite`). Sides must be multiples of
    16 (the U-Net halves them four times).

    Args:
        num_labels: tumour labels the mask can hold (e.g. 3 for BraTS necrotic core, oedema, enhancing tumour).
        latent_dim: length of ``z``; 0 for a deterministic painter.
        features: the ``BasicUNet`` widths (six values); the default has 0.5 M parameters.

    Raises:
        ValueError: when ``num_labels`` is not positive or ``latent_dim`` negative.
    """

    def __init__(self, num_labels: int = 3, latent_dim: int = 8,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16)) -> None:
        super().__init__()
        if num_labels < 1 or latent_dim < 0:
            raise ValueError(f"num_labels must be positive and latent_dim >= 0, got {num_labels}, {latent_dim}.")
        self.num_labels = num_labels
        self.latent_dim = latent_dim
        self.unet = BasicUNet(spatial_dims=2, in_channels=2 + num_labels + latent_dim, out_channels=1,
                              features=tuple(features))

    def forward(self, image: torch.Tensor, condition: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Paint.

        Args:
            image: ``(B, 1, H, W)`` base crops with the hole blanked.
            condition: ``(B, 1 + num_labels, H, W)``: blend weights, then one map per label.
            z: ``(B, latent_dim)`` latent vectors (None only when ``latent_dim`` is 0).

        Returns:
            ``(B, 1, H, W)`` images in [-1, 1].

        Raises:
            ValueError: when the condition's channels or ``z`` do not match the network.
        """
        if condition.shape[1] != 1 + self.num_labels:
            raise ValueError(f"the condition has {condition.shape[1]} channels; expected {1 + self.num_labels}.")
        inputs = [image, condition]
        if self.latent_dim:
            if z is None or z.shape[-1] != self.latent_dim:
                raise ValueError(f"expected latent vectors of length {self.latent_dim}.")
            inputs.append(z[:, :, None, None].expand(-1, -1, image.shape[2], image.shape[3]).to(image.dtype))
        return torch.tanh(self.unet(torch.cat(inputs, dim=1)))


class LesionPainterDiscriminator(RecordsArguments, nn.Module):
    """Judge (image, condition) pairs on patches: MONAI's ``PatchDiscriminator``, spectrally normalised.

    Args:
        num_labels: tumour labels of the condition (its channels are ``1 + num_labels``).
        channels: width of the first layer (doubling per layer).
        num_layers: strided layers.
        spectral_norm: spectrally normalise every convolution (and use no batch statistics), as the whole-slice
            discriminator does.

    Returns from ``forward``:
        the ``PatchDiscriminator`` list: the features of every layer, the patch logits ``(B, 1, h, w)`` last.
    """

    def __init__(self, num_labels: int = 3, channels: int = 32, num_layers: int = 3,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.net = PatchDiscriminator(spatial_dims=2, channels=channels, in_channels=2 + num_labels,
                                      num_layers_d=num_layers, norm="INSTANCE", bias=True)
        if spectral_norm:
            for module in self.net.modules():
                if isinstance(module, nn.Conv2d):
                    apply_spectral_norm(module)

    def forward(self, images: torch.Tensor, condition: torch.Tensor) -> list[torch.Tensor]:
        """Features of every layer and the patch logits (last) of ``(images, condition)`` pairs."""
        return self.net(torch.cat([images, condition], dim=1))

"""DCGAN-style generator of 2D MRI slices, unconditional or class-conditional."""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from ..utils import as_flag
from .recorded import RecordsArguments

__all__ = [
    "ConditionalBatchNorm2d",
    "SkipLayerExcitation",
    "SliceGenerator",
    "feature_channels",
    "init_dcgan_weights",
    "seeded_latents",
]

SUPPORTED_SIZES = (32, 64, 128, 256, 512)


def feature_channels(image_size: int, resolution: int, base_channels: int, max_channels: int) -> int:
    """Channels of the feature map at ``resolution``: ``base_channels`` at ``image_size``, doubling per halving.

    Args:
        image_size: side of the finest feature map, which has ``base_channels`` channels.
        resolution: side of the feature map asked about (a power-of-two fraction of ``image_size``).
        base_channels: channels at ``image_size``.
        max_channels: cap on the channel count at coarse resolutions.

    Returns:
        ``min(base_channels * image_size // resolution, max_channels)``.
    """
    return min(base_channels * image_size // resolution, max_channels)


def check_image_size(image_size: int) -> int:
    """Number of 2x resampling steps between 4x4 and ``image_size``.

    Args:
        image_size: side of the square slice.

    Raises:
        ValueError: when ``image_size`` is not one of :data:`SUPPORTED_SIZES`.
    """
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}.")
    return int(math.log2(image_size // 4))


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv, linear and embedding weights N(0, 0.02), biases 0, batch-norm scales N(1, 0.02).

    Apply with ``network.apply(init_dcgan_weights)`` before any spectral-norm parametrization is registered.

    Args:
        module: a single module; others than those named above are left as they are.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d) and module.affine:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, ConditionalBatchNorm2d):
        # ``apply`` visits children first: the class scales were just drawn as embeddings, N(0, 0.02), which would
        # scale every normalised feature to about zero and leave the generator nothing but class constants
        module.reset_parameters()


def seeded_latents(count: int, latent_dim: int, seed: int | torch.Generator) -> torch.Tensor:
    """Latent vectors of a generator, drawn reproducibly: ``(count, latent_dim)`` standard normal values on the CPU.

    The draw is ``torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed))``, so the global
    random state is never consumed, and equal arguments always give equal vectors.

    Args:
        count: number of vectors.
        latent_dim: length of each vector (the generator's ``latent_dim``).
        seed: seed of a fresh CPU generator, or a ``torch.Generator`` to continue drawing from.
    """
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    return torch.randn(int(count), int(latent_dim), generator=generator)


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift depend on the class label (plain batch norm when ``num_classes`` is 0).

    Args:
        num_features: channels of the input.
        num_classes: number of classes; 0 for an ordinary, unconditional :class:`torch.nn.BatchNorm2d`.
    """

    def __init__(self, num_features: int, num_classes: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        self.bn = nn.BatchNorm2d(num_features, affine=num_classes == 0)
        self.scale: nn.Embedding | None = None
        self.shift: nn.Embedding | None = None
        if num_classes > 0:
            self.scale = nn.Embedding(num_classes, num_features)
            self.shift = nn.Embedding(num_classes, num_features)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Class scales N(1, 0.02) and shifts 0, so that training starts from plain batch norm."""
        if self.scale is not None and self.shift is not None:
            nn.init.normal_(self.scale.weight, 1.0, 0.02)
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Normalise ``x`` (B, C, H, W); with classes, scale and shift each sample by its label's parameters."""
        out = self.bn(x)
        scale = self.scale
        shift = self.shift
        if scale is not None and shift is not None and labels is not None:
            out = out * scale(labels)[:, :, None, None] + shift(labels)[:, :, None, None]
        return out


class GeneratorBlock(nn.Module):
    """Nearest-neighbour 2x upsampling, 3x3 convolution, (conditional) batch norm and ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        num_classes: classes for the conditional batch norm; 0 for plain batch norm.
    """

    def __init__(self, in_channels: int, out_channels: int, num_classes: int = 0) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.conv = Convolution(2, in_channels, out_channels, kernel_size=3, bias=False, conv_only=True)
        self.norm = ConditionalBatchNorm2d(out_channels, num_classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Double the spatial size of ``x``."""
        return self.act(self.norm(self.conv(self.upsample(x)), labels))


class SkipLayerExcitation(nn.Module):
    """FastGAN's skip-layer excitation (Liu et al. 2021): channel gates for a fine feature map from a coarse one.

    ``fine * sigmoid(conv1x1(silu(conv4x4(avgpool4(coarse)))))``: the coarse map is pooled to 4x4, a valid 4x4
    convolution reduces it to one value per channel of the fine map, and after a SiLU and a 1x1 convolution a
    sigmoid gives the gate. Written here because MONAI's squeeze-and-excitation blocks
    (``monai.networks.blocks.ChannelSELayer``) gate a map by itself, not by another map at another resolution.

    Args:
        coarse_channels: channels of the coarse (gating) map.
        fine_channels: channels of the fine (gated) map.
    """

    def __init__(self, coarse_channels: int, fine_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.reduce = nn.Conv2d(coarse_channels, fine_channels, kernel_size=4, bias=False)
        self.act = nn.SiLU()
        self.mix = nn.Conv2d(fine_channels, fine_channels, kernel_size=1, bias=False)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Scale each channel of ``fine`` (B, C_f, H, W) by a gate in (0, 1) computed from ``coarse``."""
        return fine * torch.sigmoid(self.mix(self.act(self.reduce(self.pool(coarse)))))


class _NoExcitation(nn.Module):
    """The levels without a skip-layer excitation (same call as :class:`SkipLayerExcitation`, for TorchScript)."""

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return fine


SKIP_EXCITATION_SPAN = 3
"""Levels between a skip-layer excitation's coarse and fine maps: 8x in resolution (4x4 gates 32x32, 8x8 gates
64x64, and so on). FastGAN spans 16x at 1024 px (8 -> 128); at 64 px a 16x span leaves one pair."""


class SliceGenerator(RecordsArguments, nn.Module):
    """DCGAN-style generator: a latent vector to a (B, ``channels``, S, S) slice in [-1, 1].

    ``z`` is projected to a 4x4 feature map, then doubled in size by upsample + 3x3 conv + batch norm + ReLU
    blocks until ``image_size``; a last 3x3 conv and ``tanh`` give the image. Channels are ``base_channels``
    at full resolution and double at each coarser level up to ``max_channels``, so every level costs about
    the same. With ``num_classes > 0`` the generator is class-conditional twice over: a label embedding is
    concatenated to ``z``, and every batch norm takes a class-dependent scale and shift.

    The module is scriptable with :func:`torch.jit.script` when ``spectral_norm`` is False (parametrizations
    are not scriptable); :func:`torch.jit.trace` works in both cases.

    Args:
        latent_dim: length of the latent vector ``z``.
        image_size: side S of the square output; one of 32, 64, 128, 256, 512.
        channels: image channels (1 for a single MRI contrast).
        base_channels: feature channels at full resolution. Defaults to ``max(1024 // image_size, 8)``
            (16 at 64 px, 8 at 128 px and above): half the discriminator's, because upsampling blocks cost more
            than strided ones (a 3x3 convolution at the output size against a 4x4 one at half of it). Twice as
            wide, the generator costed about ten times the discriminator's arithmetic and a training step 2.7
            times more on this project's 2-core CPU, for no better samples in a fixed time.
        max_channels: cap on the feature channels at coarse resolutions.
        num_classes: number of classes for conditioning; 0 for an unconditional generator.
        embedding_dim: length of the label embedding concatenated to ``z`` (conditional only).
        spectral_norm: spectrally normalise the linear and convolutional layers (as in SAGAN/BigGAN).
        skip_excitation: FastGAN's skip-layer excitation: every feature map at 32 px and finer is gated channel by
            channel from the map :data:`SKIP_EXCITATION_SPAN` levels coarser (:class:`SkipLayerExcitation`), a
            shortcut for gradients and for global structure to reach the fine levels.

    Raises:
        ValueError: when ``image_size`` is not supported or a size argument is not positive.
    """

    def __init__(
        self,
        latent_dim: int = 128,
        image_size: int = 128,
        channels: int = 1,
        base_channels: int | None = None,
        max_channels: int = 256,
        num_classes: int = 0,
        embedding_dim: int = 32,
        spectral_norm: bool = False,
        skip_excitation: bool = False,
    ) -> None:
        super().__init__()
        num_blocks = check_image_size(image_size)
        spectral_norm = as_flag(spectral_norm, "spectral_norm")
        skip_excitation = as_flag(skip_excitation, "skip_excitation")  # "false" from a command line is no True
        self.init_args.update(spectral_norm=spectral_norm, skip_excitation=skip_excitation)
        if base_channels is None:
            base_channels = max(1024 // image_size, 8)
        self.init_args["base_channels"] = base_channels
        for name, value in (("latent_dim", latent_dim), ("channels", channels), ("base_channels", base_channels),
                            ("max_channels", max_channels), ("embedding_dim", embedding_dim)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be 0 (unconditional) or positive, got {num_classes}.")
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.channels = channels
        self.num_classes = num_classes

        self.label_embedding: nn.Embedding | None = None
        input_dim = latent_dim
        if num_classes > 0:
            self.label_embedding = nn.Embedding(num_classes, embedding_dim)
            input_dim += embedding_dim
        widths = [feature_channels(image_size, 4 * 2**i, base_channels, max_channels) for i in range(num_blocks + 1)]
        self.initial_channels = widths[0]
        self.project = nn.Linear(input_dim, widths[0] * 16, bias=False)
        self.initial_norm = ConditionalBatchNorm2d(widths[0], num_classes)
        self.blocks = nn.ModuleList(
            [GeneratorBlock(widths[i], widths[i + 1], num_classes) for i in range(num_blocks)]
        )
        # one per block: the excitation of the block's output, or nothing
        self.skip_span = SKIP_EXCITATION_SPAN
        self.excitations = nn.ModuleList([
            SkipLayerExcitation(widths[level - SKIP_EXCITATION_SPAN], widths[level])
            if skip_excitation and level >= SKIP_EXCITATION_SPAN else _NoExcitation()
            for level in range(1, num_blocks + 1)
        ])
        self.to_image = Convolution(2, widths[-1], channels, kernel_size=3, conv_only=True)
        self.apply(init_dcgan_weights)
        if spectral_norm:
            gates = [conv for e in self.excitations if isinstance(e, SkipLayerExcitation) for conv in (e.reduce, e.mix)]
            for module in [self.project, self.to_image.conv, *[block.conv.conv for block in self.blocks], *gates]:
                apply_spectral_norm(module)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Generate slices from latent vectors.

        Args:
            z: latent vectors, shape (B, ``latent_dim``).
            labels: integer class labels, shape (B,); required when conditional, must be None otherwise.

        Returns:
            Slices of shape (B, ``channels``, ``image_size``, ``image_size``) in [-1, 1].

        Raises:
            ValueError: when ``labels`` is missing for a conditional generator or given to an unconditional one.
        """
        embedding = self.label_embedding
        if embedding is not None:
            if labels is None:
                raise ValueError("labels are required: this generator is class-conditional.")
            z = torch.cat([z, embedding(labels)], dim=1)
        elif labels is not None:
            raise ValueError("labels must be None: this generator is unconditional (num_classes=0).")
        x = self.project(z).reshape(z.shape[0], self.initial_channels, 4, 4)
        x = torch.relu(self.initial_norm(x, labels))
        levels = [x]
        for level, (block, excitation) in enumerate(zip(self.blocks, self.excitations), start=1):  # noqa: B905 (TorchScript)
            x = excitation(block(x, labels), levels[max(level - self.skip_span, 0)])
            levels.append(x)
        return torch.tanh(self.to_image(x))

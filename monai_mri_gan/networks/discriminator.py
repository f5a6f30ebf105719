"""DCGAN-style discriminator of 2D MRI slices, with an optional projection head for class conditioning."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as apply_spectral_norm

from ..utils import as_flag
from .generator import check_image_size, feature_channels, init_dcgan_weights
from .recorded import RecordsArguments

__all__ = ["SliceDiscriminator", "minibatch_stddev"]


def minibatch_stddev(h: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """One extra feature channel: the batch's standard deviation of ``h``, averaged over features and positions.

    The layer of Karras et al. (2018): a discriminator that sees how varied a batch is can tell a collapsed
    generator (near-identical samples) from real data, which pushes the generator to use its latent space.

    Args:
        h: features (B, C, H, W).
        eps: added to the variance before the square root.

    Returns:
        a (B, 1, H, W) tensor holding that one value.
    """
    std = torch.sqrt(h.float().var(dim=0, unbiased=False) + eps).mean()
    return std.to(h.dtype).expand(h.shape[0], 1, h.shape[2], h.shape[3])


class SliceDiscriminator(RecordsArguments, nn.Module):
    """Strided-convolution discriminator: a (B, ``channels``, S, S) slice to one real/fake logit per sample.

    Each block is a 4x4 stride-2 convolution followed by LeakyReLU(0.2), halving the size down to 4x4.
    Channels are ``base_channels`` after the first block and double per block up to ``max_channels``. The
    flattened 4x4 map is the feature vector ``h``; the logit is ``linear(h)``, plus, when conditional, the
    projection term ``<embed(y), h>`` of Miyato & Koyama (2018). With ``spectral_norm`` (the default) every
    layer, the class embedding included, is spectrally normalised and there is no batch norm; without it
    the inner blocks use batch norm as in DCGAN. With ``minibatch_std`` (the default) the 4x4 map gains one
    channel holding the batch's feature standard deviation (:func:`minibatch_stddev`), so the logit of a slice
    depends on the batch it is scored in (as with batch norm).

    Args:
        image_size: side S of the square input; one of 32, 64, 128, 256, 512.
        channels: image channels.
        base_channels: channels after the first (finest) block. Defaults to ``max(2048 // image_size, 8)``.
        max_channels: cap on the channels at coarse resolutions.
        num_classes: number of classes for the projection head; 0 for an unconditional discriminator.
        spectral_norm: spectrally normalise all layers (``torch.nn.utils.parametrizations.spectral_norm``).
        minibatch_std: append the minibatch standard-deviation channel before the head.
        auxiliary_classifier: add an AC-GAN head (Odena et al. 2017), a linear classifier of the same features
            (conditional only). The output then has ``1 + num_classes`` columns: the real/fake logit, then the
            class logits, which the trainer's ``class_loss_weight`` trains on reals and asks the generator to
            satisfy. It gives the generator a direct signal to draw what tells the classes apart (the lesion),
            which the projection term alone gives weakly when a class has few slices.

    Raises:
        ValueError: when ``image_size`` is not supported or a size argument is not positive.
    """

    def __init__(
        self,
        image_size: int = 128,
        channels: int = 1,
        base_channels: int | None = None,
        max_channels: int = 256,
        num_classes: int = 0,
        spectral_norm: bool = True,
        minibatch_std: bool = True,
        auxiliary_classifier: bool = False,
    ) -> None:
        super().__init__()
        num_blocks = check_image_size(image_size)
        spectral_norm = as_flag(spectral_norm, "spectral_norm")
        minibatch_std = as_flag(minibatch_std, "minibatch_std")
        auxiliary_classifier = as_flag(auxiliary_classifier, "auxiliary_classifier")
        self.init_args.update(spectral_norm=spectral_norm, minibatch_std=minibatch_std,
                              auxiliary_classifier=auxiliary_classifier)
        if base_channels is None:
            base_channels = max(2048 // image_size, 8)
        self.init_args["base_channels"] = base_channels
        for name, value in (("channels", channels), ("base_channels", base_channels), ("max_channels", max_channels)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be 0 (unconditional) or positive, got {num_classes}.")
        if auxiliary_classifier and num_classes == 0:
            raise ValueError("auxiliary_classifier needs classes (num_classes > 0).")
        self.image_size = image_size
        self.channels = channels
        self.num_classes = num_classes

        half = image_size // 2
        widths = [channels]
        widths += [feature_channels(half, half // 2**i, base_channels, max_channels) for i in range(num_blocks)]
        blocks = []
        for i in range(num_blocks):
            # DCGAN leaves the first block without batch norm; spectral norm replaces batch norm everywhere.
            norm = "batch" if (not spectral_norm and i > 0) else None
            blocks.append(
                Convolution(
                    2, widths[i], widths[i + 1], strides=2, kernel_size=4, padding=1,
                    act=("leakyrelu", {"negative_slope": 0.2}), norm=norm, bias=norm is None,
                )
            )
        self.blocks = nn.Sequential(*blocks)
        self.minibatch_std = minibatch_std
        self.feature_dim = (widths[-1] + int(minibatch_std)) * 16
        self.linear = nn.Linear(self.feature_dim, 1)
        self.embedding: nn.Embedding | None = None
        if num_classes > 0:
            self.embedding = nn.Embedding(num_classes, self.feature_dim)
        self.classifier: nn.Linear | None = None
        if auxiliary_classifier:
            self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.apply(init_dcgan_weights)
        if spectral_norm:
            layers = [block.conv for block in self.blocks] + [self.linear]
            layers += [layer for layer in (self.embedding, self.classifier) if layer is not None]
            for layer in layers:
                apply_spectral_norm(layer)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened 4x4 feature map ``h``, shape (B, ``feature_dim``), of slices ``x`` (B, C, S, S)."""
        h = self.blocks(x)
        if self.minibatch_std:
            h = torch.cat([h, minibatch_stddev(h)], dim=1)
        return h.flatten(1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Real/fake logits of slices.

        Args:
            x: slices, shape (B, ``channels``, ``image_size``, ``image_size``), in the training range [-1, 1].
            labels: integer class labels, shape (B,); required when conditional, must be None otherwise.

        Returns:
            Logits, shape (B,); larger means "more likely real". With the auxiliary classifier, shape
            (B, 1 + ``num_classes``): that logit, then the class logits.

        Raises:
            ValueError: when ``labels`` is missing for a conditional discriminator or given to an unconditional one.
        """
        embedding = self.embedding
        if embedding is not None and labels is None:
            raise ValueError("labels are required: this discriminator is class-conditional.")
        if embedding is None and labels is not None:
            raise ValueError("labels must be None: this discriminator is unconditional (num_classes=0).")
        h = self.features(x)
        logits = self.linear(h).squeeze(1)
        if embedding is not None and labels is not None:
            logits = logits + (embedding(labels) * h).sum(dim=1)
        if self.classifier is not None:
            return torch.cat([logits[:, None], self.classifier(h)], dim=1)
        return logits

    def probability(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Probability that each slice is real, the sigmoid of the real/fake logit, shape (B,)."""
        logits = self.forward(x, labels)
        return torch.sigmoid(logits[:, 0] if self.classifier is not None else logits)

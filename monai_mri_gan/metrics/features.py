"""Feature extractors for distribution metrics (FID, KID, precision/recall) that run offline.

Every extractor is a callable ``extractor(images) -> features``: ``images`` is a ``(N, 1, H, W)`` batch of slices in
[-1, 1] and ``features`` a ``(N, D)`` float64 tensor. Extractors run in batches, without gradients, and carry a
``name`` that reports can quote. :func:`build_feature_extractor` makes one from its registry name:

- ``"radiomics"`` (default): hand-written intensity and texture features, no weights at all.
- ``"encoder"``: any torch module, e.g. a classifier or discriminator trained by the project, read at a named layer.
- ``"local_weights"``: an ImageNet-style ResNet or DenseNet (MONAI's networks, no torchvision) whose weights the
  user has put in a local file. Nothing is ever downloaded.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, DenseNet169, DenseNet201, ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck, get_inplanes
from torch import nn

__all__ = [
    "EncoderFeatureExtractor",
    "FeatureExtractor",
    "LocalWeightsFeatureExtractor",
    "RadiomicsFeatureExtractor",
    "build_backbone",
    "build_feature_extractor",
    "feature_extractor_names",
    "register_feature_extractor",
]


class FeatureExtractor(ABC):
    """Base of the feature extractors: checks the batch, splits it into chunks and stacks float64 features.

    Subclasses implement :meth:`extract` for one chunk.

    Args:
        batch_size: number of images processed at once.
    """

    name: str = "features"

    def __init__(self, batch_size: int = 128) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size

    @abstractmethod
    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Features of one chunk of images, ``(B, 1, H, W)`` -> ``(B, D)``."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch of slices.

        Args:
            images: ``(N, 1, H, W)`` slices with values in [-1, 1].

        Returns:
            ``(N, D)`` float64 features on the CPU.

        Raises:
            ValueError: when ``images`` is not a non-empty ``(N, 1, H, W)`` tensor.
        """
        images = torch.as_tensor(images).as_subclass(torch.Tensor)  # MetaTensor -> plain, features carry no meta
        if images.ndim != 4 or images.shape[1] != 1 or images.shape[0] == 0:
            raise ValueError(f"images must have shape (N, 1, H, W) with N > 0, got {tuple(images.shape)}.")
        with torch.inference_mode():
            chunks = [
                self.extract(images[start : start + self.batch_size].float()).double().cpu()
                for start in range(0, images.shape[0], self.batch_size)
            ]
        return torch.cat(chunks)


def _masked_quantiles(
    values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, qs: Sequence[float]
) -> torch.Tensor:
    """Linearly interpolated quantiles of each row's masked values; 0 for rows with an empty mask."""
    ordered = torch.where(mask, values, torch.inf).sort(dim=1).values
    last = (count - 1).clamp_min(0).unsqueeze(1)
    position = last * torch.tensor(qs, dtype=values.dtype, device=values.device).unsqueeze(0)
    low = position.floor().long()
    high = torch.minimum(low + 1, last.long())
    frac = position - low
    below, above = ordered.gather(1, low), ordered.gather(1, high)
    result = below + frac * (above - below)
    return torch.where(count.unsqueeze(1) > 0, result, torch.zeros_like(result))


def _glcm_offsets(distance: int) -> list[tuple[int, int]]:
    """Row and column offsets of the angles 0, 45, 90 and 135 degrees at one distance."""
    return [(0, distance), (distance, distance), (distance, 0), (distance, -distance)]


def _glcm_features(quantised: torch.Tensor, mask: torch.Tensor, dy: int, dx: int, levels: int) -> torch.Tensor:
    """Contrast, homogeneity, correlation, energy and entropy of the symmetric GLCM at one offset (``dy >= 0``)."""
    batch, height, width = quantised.shape
    if dy >= height or abs(dx) >= width:
        return torch.zeros(batch, 5)
    xa, xb = (slice(0, width - dx), slice(dx, width)) if dx >= 0 else (slice(-dx, width), slice(0, width + dx))
    a, b = quantised[:, : height - dy, xa], quantised[:, dy:, xb]
    weight = (mask[:, : height - dy, xa] & mask[:, dy:, xb]).float().reshape(batch, -1)
    codes = (a * levels + b).reshape(batch, -1)
    counts = torch.zeros(batch, levels * levels).scatter_add_(1, codes, weight).view(batch, levels, levels)
    counts = counts + counts.transpose(1, 2)
    total = counts.sum((1, 2))
    p = counts / total.clamp_min(1).view(-1, 1, 1)
    grid = torch.arange(levels, dtype=p.dtype)
    i, j = grid.view(1, levels, 1), grid.view(1, 1, levels)
    diff2 = (i - j).square()
    contrast = (p * diff2).sum((1, 2))
    homogeneity = (p / (1 + diff2)).sum((1, 2))
    energy = p.square().sum((1, 2))
    entropy = -(p * torch.log2(p.clamp_min(1e-30))).sum((1, 2))
    mu = (p * i).sum((1, 2)).view(-1, 1, 1)
    var = (p * (i - mu).square()).sum((1, 2))
    cov = (p * (i - mu) * (j - mu)).sum((1, 2))
    # a single grey level has no spread: call it perfectly correlated, as scikit-image does
    correlation = torch.where(var > 1e-12, cov / var.clamp_min(1e-12), (total > 0).float())
    return torch.stack([contrast, homogeneity, correlation, energy, entropy], dim=1)


class RadiomicsFeatureExtractor(FeatureExtractor):
    """Radiomics-style intensity, texture and shape features of brain slices, computed in torch, needing no weights.

    At each scale of a small pyramid (full resolution, then average-pooled by 2 and by 4) and on the foreground
    (pixels above ``foreground_threshold``), in this order:

    - first order (11): mean, standard deviation, skewness, kurtosis (not excess), the 10/25/50/75/90th
      percentiles, entropy (bits) of a ``histogram_bins``-bin histogram over [-1, 1], and energy (sum of squared
      intensities divided by the number of pixels in the image, so that it does not depend on the image size);
    - grey-level co-occurrence (5 per distance): contrast, homogeneity (``1 / (1 + (i - j)^2)``), correlation,
      energy (angular second moment) and entropy (bits) of the symmetric, normalised GLCM of intensities quantised
      to ``grey_levels`` levels over the fixed range [-1, 1] (the same bins for every image, so that the features
      compare across images). Only pairs with both pixels in the foreground count. Each feature is computed at
      the angles 0, 45, 90 and 135 degrees and averaged over them. A GLCM with a single grey level has
      correlation 1;
    - gradient magnitude (3): mean, standard deviation and 90th percentile of the Sobel gradient magnitude
      (intensity units per pixel) on the foreground;
    - foreground area fraction (1).

    With the defaults that is 25 features per scale, 75 in all (:attr:`feature_names`). Features of an empty
    foreground are 0. The features are left in their raw units, not standardised: FID and KID are computed in this
    space, so features of large spread (GLCM contrast, in squared grey levels) weigh more than others.

    Args:
        scales: pooling factors of the pyramid.
        foreground_threshold: pixels above this value are foreground.
        histogram_bins: bins of the first-order entropy histogram.
        grey_levels: quantisation levels of the GLCM.
        distances: GLCM pixel distances (at each scale).
        batch_size: images processed at once.
    """

    name = "radiomics"

    def __init__(
        self,
        scales: Sequence[int] = (1, 2, 4),
        foreground_threshold: float = -0.9,
        histogram_bins: int = 32,
        grey_levels: int = 16,
        distances: Sequence[int] = (1, 2),
        batch_size: int = 256,
    ) -> None:
        super().__init__(batch_size=batch_size)
        if not scales or min(scales) < 1:
            raise ValueError(f"scales must be positive pooling factors, got {scales}.")
        if not distances or min(distances) < 1:
            raise ValueError(f"distances must be positive, got {distances}.")
        self.scales = tuple(int(s) for s in scales)
        self.foreground_threshold = float(foreground_threshold)
        self.histogram_bins = int(histogram_bins)
        self.grey_levels = int(grey_levels)
        self.distances = tuple(int(d) for d in distances)

    @property
    def feature_names(self) -> list[str]:
        """Names of the feature columns, in order."""
        per_scale = ["mean", "std", "skewness", "kurtosis", "p10", "p25", "p50", "p75", "p90", "entropy", "energy"]
        for d in self.distances:
            per_scale += [f"glcm_d{d}_{f}" for f in ("contrast", "homogeneity", "correlation", "energy", "entropy")]
        per_scale += ["gradient_mean", "gradient_std", "gradient_p90", "area_fraction"]
        return [f"s{s}_{name}" for s in self.scales for name in per_scale]

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Radiomics features of one chunk, ``(B, 1, H, W)`` -> ``(B, D)``."""
        features = []
        for scale in self.scales:
            x = F.avg_pool2d(images, scale) if scale > 1 else images
            mask = x > self.foreground_threshold
            count = mask.flatten(1).sum(1).to(x.dtype)
            features += [self._first_order(x, mask, count), self._glcm(x[:, 0], mask[:, 0])]
            features += [self._gradient(x, mask, count), (count / mask[0].numel()).unsqueeze(1)]
        return torch.cat(features, dim=1)

    def _first_order(self, x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        values, mask = x.flatten(1), mask.flatten(1)
        weight = mask.to(x.dtype)
        n = count.clamp_min(1)
        mean = (values * weight).sum(1) / n
        centred = (values - mean.unsqueeze(1)) * weight
        var = centred.square().sum(1) / n
        std = var.sqrt()
        flat = var <= 1e-12
        skewness = torch.where(flat, 0.0, centred.pow(3).sum(1) / n / std.pow(3).clamp_min(1e-18))
        kurtosis = torch.where(flat, 0.0, centred.pow(4).sum(1) / n / var.square().clamp_min(1e-24))
        percentiles = _masked_quantiles(values, mask, count, (0.10, 0.25, 0.50, 0.75, 0.90))
        bins = ((values + 1) / 2 * self.histogram_bins).floor().clamp(0, self.histogram_bins - 1).long()
        hist = torch.zeros(values.shape[0], self.histogram_bins, dtype=x.dtype).scatter_add_(1, bins, weight)
        p = hist / n.unsqueeze(1)
        entropy = -(p * torch.log2(p.clamp_min(1e-30))).sum(1)
        energy = (values.square() * weight).sum(1) / values.shape[1]
        first = torch.stack([mean, std, skewness, kurtosis], dim=1)
        return torch.cat([first, percentiles, entropy.unsqueeze(1), energy.unsqueeze(1)], dim=1)

    def _glcm(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        levels = self.grey_levels
        quantised = ((x + 1) / 2 * levels).floor().clamp(0, levels - 1).long()
        per_distance = []
        for distance in self.distances:
            angles = [_glcm_features(quantised, mask, dy, dx, levels) for dy, dx in _glcm_offsets(distance)]
            per_distance.append(torch.stack(angles).mean(0))
        return torch.cat(per_distance, dim=1).to(x.dtype)

    def _gradient(self, x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        padded = F.pad(x, (1, 1, 1, 1), mode="replicate")[:, 0]
        # separable Sobel: differences along one axis, [1, 2, 1] smoothing along the other
        across = padded[:, :, 2:] - padded[:, :, :-2]
        down = padded[:, 2:, :] - padded[:, :-2, :]
        grad_x = (across[:, :-2] + 2 * across[:, 1:-1] + across[:, 2:]) / 8
        grad_y = (down[:, :, :-2] + 2 * down[:, :, 1:-1] + down[:, :, 2:]) / 8
        magnitude = torch.hypot(grad_x, grad_y).flatten(1)
        mask = mask.flatten(1)
        weight = mask.to(x.dtype)
        n = count.clamp_min(1)
        mean = (magnitude * weight).sum(1) / n
        std = (((magnitude - mean.unsqueeze(1)) * weight).square().sum(1) / n).sqrt()
        p90 = _masked_quantiles(magnitude, mask, count, (0.90,))
        return torch.cat([mean.unsqueeze(1), std.unsqueeze(1), p90], dim=1)


class EncoderFeatureExtractor(FeatureExtractor):
    """Features of a torch network: its output, or the output of one named layer, globally average-pooled.

    Typical use is the penultimate layer of a classifier (or the discriminator) trained by the project on the
    training split. The network is put in eval mode. Images are fed in [-1, 1] unless a subclass changes
    :meth:`preprocess`.

    Args:
        network: the feature network.
        layer: name (as in ``network.named_modules()``) of the layer whose output is the feature; None for the
            network's output.
        input_size: side (or ``(H, W)``) the images are resized to (bilinear, antialiased); None to leave them.
        in_channels: channels the network expects; grey images are replicated to match.
        batch_size: images processed at once.
        device: device the network runs on.
        name: name of the extractor in reports.

    Raises:
        ValueError: when ``layer`` is not a module of ``network``.
    """

    name = "encoder"

    def __init__(
        self,
        network: nn.Module,
        layer: str | None = None,
        input_size: int | Sequence[int] | None = None,
        in_channels: int = 1,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        name: str | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size)
        self.device = torch.device(device)
        self.network = network.to(self.device).eval()
        self.layer = layer
        self.input_size = (input_size, input_size) if isinstance(input_size, int) else input_size
        self.in_channels = int(in_channels)
        if name is not None:
            self.name = name
        self._captured: torch.Tensor | None = None
        if layer is not None:
            modules = dict(network.named_modules())
            if layer not in modules:
                options = ", ".join(n for n in modules if n) or "none"
                raise ValueError(f"layer {layer!r} is not a module of the network; its modules are: {options}.")
            modules[layer].register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: Any, output: Any) -> None:
        # pool now: later in-place operations (ReLU(inplace=True), residual +=) may overwrite the layer's output
        self._captured = _pooled(output)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, build_fn: Callable[[], nn.Module], key: str | None = None, **kwargs: Any
    ) -> EncoderFeatureExtractor:
        """An extractor on a network built by ``build_fn`` with weights from a local file (``weights_only`` load).

        Args:
            path: file saved with ``torch.save``: a state dict, or a mapping that holds one under ``key``
                (e.g. ``"discriminator"`` in a project checkpoint).
            build_fn: builds the network with freshly initialised weights.
            key: entry of the saved mapping that holds the state dict; None when the file is the state dict.
            kwargs: the other arguments of :class:`EncoderFeatureExtractor` (``layer``, ``input_size``, ...).

        Returns:
            the extractor.

        Raises:
            FileNotFoundError: when ``path`` does not exist (nothing is downloaded).
            KeyError: when ``key`` is not in the file.
        """
        state = _load_local_state(path, "the encoder")
        if key is not None:
            if key not in state:
                raise KeyError(f"{path}: no entry {key!r}; entries are {sorted(state)}.")
            state = state[key]
        network = build_fn()
        network.load_state_dict(state)
        return cls(network, **kwargs)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and replicate grey channels as the network expects."""
        if self.input_size is not None and tuple(images.shape[-2:]) != tuple(self.input_size):
            images = F.interpolate(images, size=tuple(self.input_size), mode="bilinear", antialias=True)
        if self.in_channels != images.shape[1]:
            images = images.expand(-1, self.in_channels, -1, -1)
        return images

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Network features of one chunk, ``(B, 1, H, W)`` -> ``(B, D)``."""
        self._captured = None
        output = self.network(self.preprocess(images.to(self.device)))
        return _pooled(output) if self.layer is None else self._captured


def _pooled(output: Any) -> torch.Tensor:
    """A network output (or the first of several) as ``(B, D)``: spatial maps are averaged."""
    features = output[0] if isinstance(output, (tuple, list)) else output
    return features.flatten(2).mean(2) if features.ndim > 2 else features.flatten(1)


def _load_local_state(path: str | os.PathLike, what: str) -> Mapping[str, Any]:
    """``torch.load(weights_only=True)`` of a local file, with an error that says nothing will be downloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Weights for {what} not found at '{path}'. monai-mri-gan never downloads weights: copy the file "
            "there, or use the 'radiomics' feature extractor, which needs no weights."
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping), got {type(state).__name__}.")
    return state


# architecture -> (family, ResNet block or DenseNet class, ResNet layers)
_BACKBONES: dict[str, tuple[str, Any, Any]] = {
    "resnet18": ("resnet", ResNetBlock, [2, 2, 2, 2]),
    "resnet34": ("resnet", ResNetBlock, [3, 4, 6, 3]),
    "resnet50": ("resnet", ResNetBottleneck, [3, 4, 6, 3]),
    "resnet101": ("resnet", ResNetBottleneck, [3, 4, 23, 3]),
    "densenet121": ("densenet", DenseNet121, None),
    "densenet169": ("densenet", DenseNet169, None),
    "densenet201": ("densenet", DenseNet201, None),
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def build_backbone(architecture: str, in_channels: int = 3, bias_downsample: bool = False) -> nn.Module:
    """An ImageNet-layout 2D backbone from MONAI's networks, without its classification layer.

    The layouts match torchvision's (ResNet: 7x7 stride-2 stem, no bias in the shortcut convolutions), so that
    torchvision state dicts load into them (see :class:`LocalWeightsFeatureExtractor`). The output is the
    globally pooled feature vector (512 for resnet18/34, 2048 for resnet50/101, 1024/1664/1920 for densenets).

    Args:
        architecture: one of ``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, ``densenet121``,
            ``densenet169``, ``densenet201``.
        in_channels: input channels (3 for ImageNet weights).
        bias_downsample: whether the ResNet shortcut convolutions have a bias (False for torchvision weights).

    Returns:
        the network, with freshly initialised weights.

    Raises:
        ValueError: when ``architecture`` is unknown.
    """
    if architecture not in _BACKBONES:
        raise ValueError(f"Unknown architecture {architecture!r}; available offline: {sorted(_BACKBONES)}.")
    family, block, layers = _BACKBONES[architecture]
    if family == "resnet":
        return ResNet(
            block, layers, get_inplanes(), spatial_dims=2, n_input_channels=in_channels, conv1_t_size=7,
            conv1_t_stride=2, feed_forward=False, bias_downsample=bias_downsample,
        )
    network = block(spatial_dims=2, in_channels=in_channels, out_channels=1)
    network.class_layers.out = nn.Identity()
    return network


def _to_monai_keys(state: Mapping[str, Any], family: str) -> dict[str, Any]:
    """Strip wrappers and heads, and rename torchvision DenseNet keys to MONAI's."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    renamed = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if family == "resnet" and key.startswith("fc."):
            continue
        if family == "densenet":
            if key.startswith(("classifier.", "class_layers.out.")):
                continue
            parts = key.split(".")
            # torchvision: denselayerN.norm1.weight; MONAI: denselayerN.layers.norm1.weight
            if len(parts) > 2 and parts[-3].startswith("denselayer") and parts[-2][-1] in "12":
                key = ".".join(parts[:-2] + ["layers", parts[-2], parts[-1]])
        renamed[key] = value
    return renamed


class LocalWeightsFeatureExtractor(EncoderFeatureExtractor):
    """Pooled features of an ImageNet-style ResNet or DenseNet whose weights are in a local file.

    The network is MONAI's (:func:`build_backbone`; torchvision is not needed). The file may hold a MONAI state
    dict of that backbone or a torchvision one (DenseNet keys are renamed, classification heads dropped,
    ``module.`` prefixes and a ``state_dict`` wrapper removed); every backbone weight must be present. The input
    channels (1 or 3) and the ResNet shortcut bias are read from the weights. Images are resized to
    ``input_size``; for a 3-channel network they are replicated to 3 channels, mapped to [0, 1] and, with
    ``imagenet_normalise``, normalised with the ImageNet mean and standard deviation; a 1-channel network gets them
    in [-1, 1].

    Args:
        weights_path: local file with the weights.
        architecture: see :func:`build_backbone`.
        input_size: side the images are resized to; None to keep their size.
        imagenet_normalise: normalise 3-channel inputs with the ImageNet statistics.
        batch_size: images processed at once.
        device: device the network runs on.

    Raises:
        FileNotFoundError: when ``weights_path`` does not exist (nothing is downloaded).
        ValueError: when ``architecture`` is unknown or the weights do not fit it.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike,
        architecture: str = "resnet50",
        input_size: int | Sequence[int] | None = 224,
        imagenet_normalise: bool = True,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        if architecture not in _BACKBONES:
            raise ValueError(f"Unknown architecture {architecture!r}; available offline: {sorted(_BACKBONES)}.")
        family = _BACKBONES[architecture][0]
        state = _to_monai_keys(_load_local_state(weights_path, architecture), family)
        stem = "conv1.weight" if family == "resnet" else "features.conv0.weight"
        if stem not in state:
            raise ValueError(f"{weights_path}: no {stem!r} in the weights; are they a {architecture}?")
        in_channels = int(state[stem].shape[1])
        bias_downsample = any(k.endswith("downsample.0.bias") for k in state)
        network = build_backbone(architecture, in_channels=in_channels, bias_downsample=bias_downsample)
        result = network.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"{weights_path}: weights do not fit {architecture}; missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]} (first 5 of each)."
            )
        super().__init__(
            network, input_size=input_size, in_channels=in_channels, batch_size=batch_size, device=device,
            name=f"local_weights:{architecture}",
        )
        self.imagenet_normalise = imagenet_normalise and in_channels == 3
        self._mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize, replicate to the network's channels and, for ImageNet weights, normalise."""
        images = super().preprocess(images)
        if self.in_channels == 3:
            images = (images + 1) / 2
            if self.imagenet_normalise:
                images = (images - self._mean.to(images.device)) / self._std.to(images.device)
        return images


_REGISTRY: dict[str, Callable[..., FeatureExtractor]] = {
    "radiomics": RadiomicsFeatureExtractor,
    "encoder": EncoderFeatureExtractor,
    "local_weights": LocalWeightsFeatureExtractor,
}


def register_feature_extractor(name: str, factory: Callable[..., FeatureExtractor]) -> None:
    """Make ``build_feature_extractor(name, ...)`` call ``factory(...)``.

    Args:
        name: registry name.
        factory: returns a callable ``(N, 1, H, W) -> (N, D)`` extractor with a ``name`` attribute.

    Raises:
        ValueError: when ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(f"A feature extractor named {name!r} is already registered.")
    _REGISTRY[name] = factory


def feature_extractor_names() -> list[str]:
    """Names accepted by :func:`build_feature_extractor`."""
    return sorted(_REGISTRY)


def build_feature_extractor(name: str = "radiomics", **kwargs: Any) -> FeatureExtractor:
    """A feature extractor by registry name.

    Args:
        name: ``"radiomics"`` (default, no weights), ``"encoder"`` (``network=``, ``layer=``) or
            ``"local_weights"`` (``weights_path=``, ``architecture=``), or a name added with
            :func:`register_feature_extractor`.
        kwargs: arguments of the extractor's class.

    Returns:
        the extractor.

    Raises:
        ValueError: when ``name`` is not registered.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown feature extractor {name!r}; available: {feature_extractor_names()}.")
    return _REGISTRY[name](**kwargs)

"""An Ignite evaluator of slice generators, built on ``monai.engines.Evaluator``.

Each run of :class:`GanEvaluator` draws the same generated sample (fixed latents and classes), compares it with a
fixed sample of real slices in one feature space and puts FID, KID, precision/recall, MS-SSIM diversity,
memorisation and class fidelity into ``engine.state.metrics``; the real-vs-real floor of each is computed once.
Values compare only within one feature space (and, for FID, at equal sample sizes).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from torch import nn

from ..metrics import (
    build_feature_extractor,
    disjoint_halves,
    distribution_metrics,
    feature_standardisation,
    memorisation_report,
    metric_cmp_fn_for,
    ms_ssim_diversity,
)
from ..metrics.classifier import (
    class_fidelity,
    classifier_feature_extractor,
    load_slice_classifier,
    save_slice_classifier,
    train_slice_classifier,
)
from ..networks import seeded_latents

__all__ = [
    "FEATURE_SPACES",
    "GanEvaluator",
    "class_allocation",
]

#: Feature spaces of :class:`GanEvaluator`.
FEATURE_SPACES = ("radiomics", "encoder", "local_weights")
#: File name of the classifier that :class:`GanEvaluator` trains when it needs one and none is given.
CLASSIFIER_FILE = "slice_classifier.pt"


def class_allocation(real_labels: torch.Tensor | None, num_samples: int, num_classes: int,
                     mode: str = "proportional") -> torch.Tensor | None:
    """Classes of a generated sample: in the real class proportions, or balanced; sorted by class.

    ``"proportional"`` rounds ``num_samples * p_c`` by the largest-remainder method, so the counts add up to
    ``num_samples`` exactly; ``"balanced"`` gives every class ``num_samples // num_classes`` slices, the first
    classes one more each until the total is reached.

    Args:
        real_labels: classes of the real slices (needed for ``"proportional"``).
        num_samples: size of the generated sample.
        num_classes: classes of the generator; 0 for an unconditional one (returns None).
        mode: ``"proportional"`` or ``"balanced"``.

    Returns:
        ``(num_samples,)`` long tensor, or None for an unconditional generator.

    Raises:
        ValueError: on an unknown mode, or proportional mode without real labels.
    """
    if num_classes <= 0:
        return None
    if mode == "balanced":
        share = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    elif mode == "proportional":
        if real_labels is None:
            raise ValueError("class_mode 'proportional' needs the real slices' classes.")
        counts = torch.bincount(torch.as_tensor(real_labels).long().reshape(-1), minlength=num_classes)[:num_classes]
        share = counts.double() / counts.sum().clamp_min(1)
    else:
        raise ValueError(f"class_mode must be 'proportional' or 'balanced', got {mode!r}.")
    exact = share * num_samples
    counts = exact.floor().long()
    remainder = num_samples - int(counts.sum())
    # stable order: largest fractional part first, ties to the lower class
    order = sorted(range(num_classes), key=lambda c: (-(float(exact[c]) - int(counts[c])), c))
    for c in order[:remainder]:
        counts[c] += 1
    return torch.arange(num_classes).repeat_interleave(counts)


def _plain_images(images: torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images).as_subclass(torch.Tensor).float()
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"real images must be (N, 1, H, W) slices, got {tuple(images.shape)}.")
    return images


class GanEvaluator(Evaluator):
    """Ignite evaluator of a slice generator against real slices, on ``monai.engines.Evaluator``.

    Every run generates the same sample: ``num_samples`` latents (and classes) drawn once, at construction,
    from a private generator seeded with ``seed``. Its iterations generate the sample in batches with the
    generator in eval mode and without gradients; when the epoch completes the metrics go to
    ``engine.state.metrics`` (all plain floats, so MONAI's stats handlers log them):

    - ``fid``; ``kid_mean``, ``kid_std``; ``precision``, ``recall`` (k-NN manifolds): in the feature space;
    - ``ms_ssim``: mean MS-SSIM of random generated pairs (lower is more diverse);
    - ``memorisation_fraction``, ``memorisation_max``: fraction of generated slices whose nearest real slice
      has a pixel correlation of at least ``memorisation_threshold``, and the largest such correlation;
    - ``class_fidelity`` and ``class_fidelity_<class name>`` (conditional generators with a classifier): how often
      the classifier recognises the class a slice was generated with.

    What a report needs besides the metrics is published in the state too: ``engine.state.generated``, the
    ``(num_samples, 1, H, W)`` generated slices, and ``engine.state.report``, a dict with ``feature_space`` (its
    name), ``num_generated``, ``num_real``, ``class_mode`` (None for an unconditional generator), ``seed``,
    ``real_vs_real`` (the floors), ``generated_labels`` (the generated slices' classes, or None), ``real_images``
    (the real sample) and ``memorisation`` (the generated sample's
    :func:`~monai_mri_gan.metrics.memorisation_report` against the real sample).

    The real-vs-real floor of each metric (:attr:`floors`) is computed once on the real sample and cached: the
    distribution metrics and memorisation between two disjoint random halves
    (:func:`~monai_mri_gan.metrics.disjoint_halves`), MS-SSIM on all real slices, class fidelity as the classifier's
    accuracy on the real slices (optimistic when it was trained on them). FID is biased by sample size: the floor is
    at ``N_real // 2`` per side, the generated value at ``num_samples`` vs ``N_real``; KID is unbiased and compares
    directly.

    Feature spaces (``feature_space``), whose values never compare with each other:

    - ``"radiomics"`` (default): hand-made intensity/texture features, no weights;
    - ``"encoder"``: the pooled penultimate layer of the tumour / no-tumour slice classifier (``classifier``);
    - ``"local_weights"``: an ImageNet-style backbone with weights from the local file ``weights_path``
      (``feature_kwargs`` e.g. ``{"architecture": "resnet18"}``); nothing is ever downloaded.

    In every space the features are standardised with the real sample's per-feature mean and standard deviation
    before FID, KID and precision/recall, so that no feature weighs more for its units alone.

    The classifier (for ``"encoder"`` and class fidelity) is ``classifier`` (a module, or the path of a file
    written by :func:`~monai_mri_gan.metrics.classifier.save_slice_classifier`); when it is None and one is
    needed, ``work_dir/slice_classifier.pt`` is loaded if it exists, else a classifier is trained on the real
    sample (seeded) and saved there, so that later runs share one feature space. The key metric (default
    ``kid_mean``) drives ``state.best_metric`` with :func:`~monai_mri_gan.metrics.metric_cmp_fn_for` unless
    ``metric_cmp_fn`` is given; MONAI's ``CheckpointSaver(save_key_metric=True, key_metric_negative_sign=True)`` or
    :class:`~monai_mri_gan.handlers.BestCheckpointSaver` can keep the best checkpoint. The global random state is
    never consumed, so a training run with periodic evaluation resumes exactly.

    Args:
        device: device of the generator's forward passes.
        generator: maps ``(z, labels)`` to ``(B, 1, H, W)`` slices in [-1, 1] (usually the EMA generator).
        real_images: ``(N, 1, H, W)`` real slices, or a dataset with ``images`` and ``classes`` tensors
            (:class:`~monai_mri_gan.data.SliceTensorDataset`), whose classes are then used.
        real_labels: ``(N,)`` classes of the real slices (needed for proportional classes and the classifier).
        num_samples: generated slices per run.
        num_real: size of the fixed random subset of real slices used; None for all.
        latent_dim: latent size; None for ``generator.latent_dim``.
        num_classes: classes of the generator; None for ``generator.num_classes`` (0 if absent).
        class_names: names used in the ``class_fidelity_<name>`` keys; None for the class indices.
        class_mode: ``"proportional"`` (the real class mix) or ``"balanced"``; see :func:`class_allocation`.
        feature_space: ``"radiomics"``, ``"encoder"`` or ``"local_weights"``.
        feature_extractor: a ready extractor (callable ``(N, 1, H, W) -> (N, D)`` with a ``name``); overrides
            ``feature_space``.
        feature_kwargs: extra arguments of the feature extractor.
        classifier: slice classifier (module or file path), see above.
        weights_path: local weights file of the ``"local_weights"`` space.
        class_fidelity: True to report class fidelity (training a classifier if needed), False never; None
            when a classifier is at hand anyway (given, or used as the feature space).
        work_dir: folder of a classifier trained by the evaluator.
        seed: seed of latents, real subset, KID subsets, MS-SSIM pairs, floors and classifier.
        batch_size: generated slices per iteration.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (clipped to the set sizes).
        pr_k: neighbour of the precision/recall radii.
        ms_ssim_pairs: random pairs of the diversity estimate.
        memorisation_threshold: pixel correlation from which a generated slice counts as a copy.
        key_metric: name of the key metric.
        metric_cmp_fn: ``(current, best) -> bool``; None for :func:`~monai_mri_gan.metrics.metric_cmp_fn_for` of
            ``key_metric``.
        val_handlers: handlers to attach (after the metric computation, so they see this run's metrics).

    Raises:
        ValueError: on an unknown feature space or class mode, or a key metric the evaluator does not compute.
    """

    def __init__(
        self,
        device: str | torch.device,
        generator: nn.Module,
        real_images: Any,
        real_labels: torch.Tensor | None = None,
        num_samples: int = 1000,
        num_real: int | None = None,
        latent_dim: int | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        class_mode: str = "proportional",
        feature_space: str = "radiomics",
        feature_extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        feature_kwargs: Mapping[str, Any] | None = None,
        classifier: nn.Module | str | os.PathLike | None = None,
        weights_path: str | os.PathLike | None = None,
        class_fidelity: bool | None = None,
        work_dir: str | os.PathLike | None = None,
        seed: int = 0,
        batch_size: int = 100,
        kid_subsets: int = 10,
        kid_subset_size: int = 1000,
        pr_k: int = 3,
        ms_ssim_pairs: int = 1000,
        memorisation_threshold: float = 0.95,
        key_metric: str = "kid_mean",
        metric_cmp_fn: Callable[[float, float], bool] | None = None,
        val_handlers: Sequence | None = None,
    ) -> None:
        if feature_extractor is None and feature_space not in FEATURE_SPACES:
            raise ValueError(f"feature_space must be one of {FEATURE_SPACES}, got {feature_space!r}.")
        if int(num_samples) < 8:
            raise ValueError(f"num_samples must be at least 8, got {num_samples}.")
        if hasattr(real_images, "images") and hasattr(real_images, "classes"):
            real_images, real_labels = real_images.images, real_images.classes
        reals = _plain_images(real_images)
        labels = None if real_labels is None else torch.as_tensor(real_labels).long().reshape(-1).cpu()
        if labels is not None and labels.shape[0] != reals.shape[0]:
            raise ValueError(f"{reals.shape[0]} real images but {labels.shape[0]} real labels.")
        rng = torch.Generator().manual_seed(int(seed))
        if num_real is not None and int(num_real) < reals.shape[0]:
            keep = torch.randperm(reals.shape[0], generator=rng)[: int(num_real)].sort().values
            reals = reals[keep]
            labels = None if labels is None else labels[keep]
        self.num_samples = int(num_samples)
        self.batch_size = int(batch_size)
        chunks = [(s, min(s + self.batch_size, self.num_samples)) for s in range(0, self.num_samples, self.batch_size)]
        super().__init__(device=device, val_data_loader=chunks, epoch_length=len(chunks), decollate=False)
        self.generator = generator
        self.real_images = reals
        self.real_labels = labels
        self.latent_dim = int(latent_dim if latent_dim is not None else generator.latent_dim)
        self.num_classes = int(num_classes if num_classes is not None else getattr(generator, "num_classes", 0))
        self.class_names = list(class_names) if class_names else [str(c) for c in range(self.num_classes)]
        self.class_mode = class_mode
        self.latents = seeded_latents(self.num_samples, self.latent_dim, rng)
        self.labels = class_allocation(labels, self.num_samples, self.num_classes, class_mode)
        self.feature_space = feature_space
        self.feature_kwargs = dict(feature_kwargs or {})
        self.weights_path = weights_path
        self.classifier_source = classifier
        self.want_class_fidelity = class_fidelity
        self.work_dir = None if work_dir is None else Path(work_dir)
        self.seed = int(seed)
        self.kid_subsets, self.kid_subset_size = int(kid_subsets), int(kid_subset_size)
        self.pr_k, self.ms_ssim_pairs = int(pr_k), int(ms_ssim_pairs)
        self.memorisation_threshold = float(memorisation_threshold)
        self.feature_extractor = feature_extractor
        self.classifier: nn.Module | None = None
        self._real_features: torch.Tensor | None = None
        self._floors: dict[str, float] | None = None
        self._chunks: list[torch.Tensor] = []
        self.state.key_metric_name = key_metric
        self.metric_cmp_fn = metric_cmp_fn or metric_cmp_fn_for(key_metric)
        self.logger = logging.getLogger(__name__)
        self.add_event_handler(Events.EPOCH_STARTED, self._clear)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._complete)
        if val_handlers:
            self._register_handlers(val_handlers)

    @property
    def feature_space_name(self) -> str:
        """Name of the feature space in reports (the extractor's ``name``)."""
        self._setup()
        return str(getattr(self.feature_extractor, "name", self.feature_space))

    def _needs_classifier(self) -> bool:
        if self.feature_extractor is None and self.feature_space == "encoder":
            return True
        if self.num_classes == 0 or self.want_class_fidelity is False:
            return False
        missing = self._missing_classes() if self.classifier_source is None else []
        if self.want_class_fidelity is True and missing:
            self.logger.warning("no class fidelity: the real slices have no slice of class %s to train a "
                                "classifier on (pass classifier=... to use one trained elsewhere).", ", ".join(missing))
            return False
        return self.want_class_fidelity is True or self.classifier_source is not None

    def _missing_classes(self) -> list[str]:
        if self.real_labels is None:
            return []
        counts = torch.bincount(torch.as_tensor(self.real_labels).long().reshape(-1), minlength=self.num_classes)
        names = list(self.class_names or [])
        return [repr(names[c]) if c < len(names) else str(c) for c in range(self.num_classes) if counts[c] == 0]

    def _resolve_classifier(self) -> nn.Module:
        source = self.classifier_source
        if isinstance(source, nn.Module):
            return source.eval()
        if source is not None:
            return load_slice_classifier(source)
        path = None if self.work_dir is None else self.work_dir / CLASSIFIER_FILE
        if path is not None and path.is_file():
            self.logger.info("using the slice classifier %s", path)
            return load_slice_classifier(path)
        if self.real_labels is None:
            raise ValueError("training a slice classifier needs the real slices' classes (real_labels).")
        self.logger.info("training a slice classifier on %d real slices", len(self.real_images))
        network = train_slice_classifier(self.real_images, self.real_labels, seed=self.seed)
        if path is not None:
            save_slice_classifier(network, path, class_names=self.class_names or None)
        return network

    def _setup(self) -> None:
        """Build the classifier and feature extractor on first use (construction stays cheap)."""
        if self.classifier is None and self._needs_classifier():
            self.classifier = self._resolve_classifier()
        if self.feature_extractor is not None:
            return
        if self.feature_space == "encoder":
            self.feature_extractor = classifier_feature_extractor(self.classifier, **self.feature_kwargs)
        elif self.feature_space == "local_weights":
            if self.weights_path is None:
                raise ValueError("feature_space 'local_weights' needs weights_path, a local weights file; "
                                 "monai-mri-gan never downloads weights.")
            self.feature_extractor = build_feature_extractor(
                "local_weights", weights_path=self.weights_path, **self.feature_kwargs
            )
        else:
            self.feature_extractor = build_feature_extractor("radiomics", **self.feature_kwargs)

    @property
    def real_features(self) -> torch.Tensor:
        """Standardised features of the real sample (computed once); see :meth:`features`."""
        if self._real_features is None:
            self._setup()
            raw = self.feature_extractor(self.real_images)
            self._feature_mean, self._feature_std = feature_standardisation(raw)
            self._real_features = (raw - self._feature_mean) / self._feature_std
        return self._real_features

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ``images``, standardised with the real sample's per-feature mean and standard deviation."""
        real = self.real_features
        return ((self.feature_extractor(images) - self._feature_mean) / self._feature_std).to(real.dtype)

    def _distribution_metrics(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        return distribution_metrics(real, fake, self.kid_subsets, self.kid_subset_size, self.pr_k, self.seed)

    def _fidelity(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        result = class_fidelity(self.classifier, images, labels, num_classes=self.num_classes)
        metrics = {"class_fidelity": result["overall"]}
        for name, value in zip(self.class_names, result["per_class"], strict=False):
            if value is not None:
                metrics[f"class_fidelity_{name}"] = value
        return metrics

    @property
    def floors(self) -> dict[str, float]:
        """Real-vs-real floor of every metric, computed once on the real sample (see the class docstring)."""
        if self._floors is None:
            first, second = disjoint_halves(len(self.real_images), self.seed)
            feats = self.real_features
            floors = self._distribution_metrics(feats[first], feats[second])
            floors["ms_ssim"] = ms_ssim_diversity(self.real_images, num_pairs=self.ms_ssim_pairs, seed=self.seed)
            report = memorisation_report(self.real_images[second], self.real_images[first],
                                         threshold=self.memorisation_threshold, top_k_pairs=0)
            floors["memorisation_fraction"] = report["fraction_above_threshold"]
            floors["memorisation_max"] = float(report["pixel_similarity"].max())
            if self.classifier is not None and self.num_classes > 0 and self.real_labels is not None:
                floors.update(self._fidelity(self.real_images, self.real_labels))
            self._floors = floors
        return self._floors

    def _generator_device(self, generator: nn.Module) -> torch.device:
        parameter = next(iter(generator.parameters()), None)
        return self.state.device if parameter is None else parameter.device

    def _generate(self, generator: nn.Module, start: int, stop: int) -> torch.Tensor:
        device = self._generator_device(generator)
        z = self.latents[start:stop].to(device)
        labels = None if self.labels is None else self.labels[start:stop].to(device)
        with self.mode(generator):
            return generator(z, labels).float().cpu()

    def _iteration(self, engine: GanEvaluator, batchdata: tuple[int, int]) -> dict[str, int]:  # type: ignore[override]
        start, stop = batchdata
        engine._chunks.append(engine._generate(engine.generator, start, stop))
        return {"generated": stop - start}

    def _clear(self, engine: Engine) -> None:
        self._chunks = []

    def compute_metrics(self, fakes: torch.Tensor) -> tuple[dict[str, float], dict[str, Any]]:
        """All metrics of a generated sample (made with this evaluator's latents and classes) against the reals.

        Args:
            fakes: ``(num_samples, 1, H, W)`` generated slices in [-1, 1].

        Returns:
            the metrics, and the memorisation report (see :func:`~monai_mri_gan.metrics.memorisation_report`).
        """
        fakes = _plain_images(fakes)
        metrics = self._distribution_metrics(self.real_features, self.features(fakes))
        metrics["ms_ssim"] = ms_ssim_diversity(fakes, num_pairs=self.ms_ssim_pairs, seed=self.seed)
        report = memorisation_report(fakes, self.real_images, threshold=self.memorisation_threshold)
        metrics["memorisation_fraction"] = report["fraction_above_threshold"]
        metrics["memorisation_max"] = float(report["pixel_similarity"].max())
        if self.classifier is not None and self.labels is not None:
            metrics.update(self._fidelity(fakes, self.labels))
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            self.logger.warning("non-finite metrics: %s", bad)
        return metrics, report

    def evaluate(self, generator: nn.Module) -> dict[str, float]:
        """The metrics of another generator on the same latents and classes, without touching the engine state.

        Used for baselines, e.g. an untrained generator of the same architecture.

        Args:
            generator: the generator to evaluate.

        Returns:
            the metrics, keyed as in ``state.metrics``.
        """
        self._setup()
        chunks = [self._generate(generator, s, min(s + self.batch_size, self.num_samples))
                  for s in range(0, self.num_samples, self.batch_size)]
        return self.compute_metrics(torch.cat(chunks))[0]

    def _complete(self, engine: Engine) -> None:
        self._setup()
        fakes = torch.cat(self._chunks)
        self._chunks = []
        metrics, report = self.compute_metrics(fakes)
        if self.state.key_metric_name not in metrics:
            raise ValueError(f"key metric {self.state.key_metric_name!r} is not computed; metrics: {sorted(metrics)}.")
        self.state.metrics.update(metrics)
        self.state.generated = fakes
        self.state.report = {
            "feature_space": self.feature_space_name,
            "num_generated": self.num_samples,
            "num_real": len(self.real_images),
            "class_mode": self.class_mode if self.num_classes > 0 else None,
            "seed": self.seed,
            "real_vs_real": dict(self.floors),
            "generated_labels": self.labels,
            "real_images": self.real_images,
            "memorisation": report,
        }
        current = metrics[self.state.key_metric_name]
        if self.state.best_metric_epoch == -1 or self.metric_cmp_fn(current, self.state.best_metric):
            self.logger.info("new best %s: %.6g", self.state.key_metric_name, current)
            self.state.best_metric = current
            self.state.best_metric_epoch = self.state.epoch

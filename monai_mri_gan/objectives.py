"""GAN objectives: every loss term of a family, named, for the trainer to sum and step.

The model is StyleGAN2-ADA's ``training/loss.py``: the training loop prepares a batch, asks the objective for the
discriminator's and then the generator's terms, sums each set, steps the optimisers and logs; it knows no loss term.
A family (the whole-slice GAN, the lesion painter) is a set of networks, a batch function and an objective.

An objective reaches the networks only through a :class:`GanRunner` (the trainer): ``generate`` and
``discriminate`` apply the trainer's inferer, memory format and distributed wrappers, and ``autocast`` its mixed
precision, so that loss terms that must run in full precision (the R1 penalty's double backward) can stay outside.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .losses import AdversarialLoss, R1Regulariser, feature_matching_loss, masked_l1_loss, mode_seeking_loss
from .transforms.lesions import blend_weights, composite

__all__ = ["GanObjective", "GanRunner", "LesionPainterObjective", "StepTerms", "Terms", "WholeSliceObjective",
           "painter_condition"]


class Terms:
    """Names of the terms and statistics objectives report (keys of the trainer's ``loss`` output)."""

    ADVERSARIAL = "adversarial"
    CLASS = "class"
    R1 = "r1"
    MODE_SEEKING = "mode_seeking"
    RECONSTRUCTION = "l1"
    FEATURE_MATCHING = "feature_matching"
    D_REAL = "d_real"
    D_REAL_SIGN = "d_real_sign"
    D_FAKE = "d_fake"
    CLASS_REAL = "class_real"
    CLASS_FAKE = "class_fake"


class GanRunner(Protocol):
    """What an objective needs of the trainer that calls it."""

    device: torch.device

    def generate(self, *inputs: Any) -> torch.Tensor:
        """The generator's output for ``inputs``, in the trainer's memory format."""

    def discriminate(self, images: torch.Tensor, condition: Any) -> Any:
        """The discriminator's raw output for ``images`` under ``condition``."""

    def autocast(self) -> contextlib.AbstractContextManager:
        """The trainer's mixed-precision context (a null context without it)."""


@dataclass
class StepTerms:
    """The terms of one network's update.

    Attributes:
        losses: weighted loss terms, in the order the trainer sums them (the sum is the update's loss).
        logs: detached statistics to log (unweighted terms, discriminator outputs); never summed.
        fakes: the generator's output of the step (generator updates), for the trainer's output.
    """

    losses: dict[str, torch.Tensor]
    logs: dict[str, torch.Tensor] = field(default_factory=dict)
    fakes: torch.Tensor | None = None

    def total(self) -> torch.Tensor:
        """The sum of the loss terms, in their order."""
        return functools.reduce(operator.add, self.losses.values())


class GanObjective(ABC):
    """What a GAN family optimises: the discriminator's and the generator's loss terms for one batch."""

    @abstractmethod
    def discriminator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: Any,
                            iteration: int) -> StepTerms:
        """Terms of one discriminator update (fakes are made without gradient).

        Args:
            runner: the trainer, which runs the networks.
            reals: the real images of the batch.
            condition: the batch's conditioning (classes, label maps; None for an unconditional family).
            iteration: the trainer's iteration, for lazy regularisation.
        """

    @abstractmethod
    def generator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: Any) -> StepTerms:
        """Terms of one generator update (the discriminator is frozen by the trainer); ``fakes`` set."""


class WholeSliceObjective(GanObjective):
    """The whole-slice GAN's objective: ``z ~ N(0, I)`` (and a class) to a slice.

    Discriminator terms: the adversarial loss on (DiffAugmented) reals and fakes; with ``class_loss_weight``, the
    AC-GAN cross-entropy of the real slices' classes; with a regulariser, lazy R1 on the unaugmented reals (in full
    precision). Generator terms: the adversarial loss on its fakes; with ``class_loss_weight``
    the cross-entropy of its fakes' classes; with ``mode_seeking_weight``, the mode-seeking term of MSGAN
    (:func:`~monai_mri_gan.losses.mode_seeking_loss`) over pairs of one class in the step's own batch, which
    counters mode collapse. Fakes of a conditional model take the classes of the real batch.

    Logged: ``r1`` (the penalty, 0 when not due), ``d_real`` and ``d_fake`` (mean sigmoid of the logits),
    ``d_real_sign`` (the mean sign of the real logits, ADA's overfitting measure), and with the terms on,
    ``class_real``, ``class_fake`` and ``mode_seeking`` unweighted.

    Args:
        latent_dim: length of the generator's latent vector.
        num_classes: classes of a conditional model; 0 for an unconditional one.
        loss: the adversarial loss (an :class:`~monai_mri_gan.losses.AdversarialLoss` or its kind: "bce", "hinge",
            "lsgan").
        regulariser: optional lazy R1 regulariser.
        diffaugment: optional differentiable augmentation applied to every image the discriminator sees.
        class_loss_weight: weight of the AC-GAN terms; needs a discriminator with an auxiliary classifier
            (``SliceDiscriminator(auxiliary_classifier=True)``) and classes. 0 turns them off.
        mode_seeking_weight: weight of the mode-seeking term; 0 turns it off.

    Raises:
        ValueError: on a non-positive latent size, negative weights, or class terms without classes.
    """

    def __init__(self, latent_dim: int, num_classes: int = 0, loss: AdversarialLoss | str = "bce",
                 regulariser: R1Regulariser | None = None, diffaugment: Callable | None = None,
                 class_loss_weight: float = 0.0, mode_seeking_weight: float = 0.0) -> None:
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        if float(class_loss_weight) < 0 or (float(class_loss_weight) > 0 and int(num_classes) < 1):
            raise ValueError(f"class_loss_weight must be 0, or positive for a conditional GAN; got {class_loss_weight} "
                             f"with {num_classes} classes.")
        if not float(mode_seeking_weight) >= 0:
            raise ValueError(f"mode_seeking_weight must be >= 0, got {mode_seeking_weight}.")
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.loss = AdversarialLoss(loss) if isinstance(loss, str) else loss
        self.regulariser = regulariser
        self.diffaugment = diffaugment
        self.class_loss_weight = float(class_loss_weight)
        self.mode_seeking_weight = float(mode_seeking_weight)

    def latents(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """Draw ``z ~ N(0, I)`` of shape ``(batch_size, latent_dim)`` from the global random state."""
        return torch.randn(batch_size, self.latent_dim, device=device)

    def _labels(self, condition: torch.Tensor | None) -> torch.Tensor | None:
        if self.num_classes == 0:
            return None
        if condition is None:
            raise ValueError("a conditional GAN needs a class for every slice; the batch has none.")
        return condition

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.diffaugment is None else self.diffaugment(images)

    @staticmethod
    def _split(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real/fake logits (B,) and, from a discriminator with an auxiliary classifier, class logits (B, K)."""
        output = output.float()
        if output.ndim == 2 and output.shape[1] > 1:
            return output[:, 0], output[:, 1:]
        return output.reshape(-1), None

    def _class_loss(self, class_logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.class_loss_weight == 0 or labels is None:
            return None
        if class_logits is None:
            raise ValueError("class_loss_weight > 0 needs a discriminator with an auxiliary classifier "
                             "(SliceDiscriminator(auxiliary_classifier=True)).")
        return torch.nn.functional.cross_entropy(class_logits, labels)

    def discriminator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: torch.Tensor | None,
                            iteration: int) -> StepTerms:
        """Adversarial, AC-GAN and R1 terms of one discriminator update (see the class description)."""
        labels = self._labels(condition)
        with torch.no_grad(), runner.autocast():
            fakes = runner.generate(self.latents(reals.shape[0], runner.device), labels)
        with runner.autocast():
            real_logits, real_classes = self._split(runner.discriminate(self._augment(reals), labels))
            fake_logits, _ = self._split(runner.discriminate(self._augment(fakes.detach()), labels))
        losses = {Terms.ADVERSARIAL: self.loss.discriminator_loss(real_logits, fake_logits)}
        logs = {}
        class_real = self._class_loss(real_classes, labels)
        if class_real is not None:
            losses[Terms.CLASS] = self.class_loss_weight * class_real
            logs[Terms.CLASS_REAL] = class_real.detach()
        penalty = reals.new_zeros(())
        if self.regulariser is not None:
            # on the reals as they are, and in full precision (outside autocast) for its double backward
            penalty = self.regulariser(lambda x, y=None: self._split(runner.discriminate(x, y))[0], reals, labels,
                                       iteration)
            losses[Terms.R1] = penalty
        logs[Terms.R1] = penalty.detach()
        logs[Terms.D_REAL] = torch.sigmoid(real_logits.detach()).mean()
        logs[Terms.D_REAL_SIGN] = torch.sign(real_logits.detach()).mean()
        logs[Terms.D_FAKE] = torch.sigmoid(fake_logits.detach()).mean()
        return StepTerms(losses, logs)

    def generator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: torch.Tensor | None) -> StepTerms:
        """Adversarial, AC-GAN and mode-seeking terms of one generator update (see the class description)."""
        labels = self._labels(condition)
        latents = self.latents(reals.shape[0], runner.device)
        with runner.autocast():
            fakes = runner.generate(latents, labels)
            logits, fake_classes = self._split(runner.discriminate(self._augment(fakes), labels))
        losses = {Terms.ADVERSARIAL: self.loss.generator_loss(logits)}
        logs = {}
        class_fake = self._class_loss(fake_classes, labels)
        if class_fake is not None:
            losses[Terms.CLASS] = self.class_loss_weight * class_fake
            logs[Terms.CLASS_FAKE] = class_fake.detach()
        if self.mode_seeking_weight > 0:
            mode_seeking = mode_seeking_loss(fakes, latents, labels)
            losses[Terms.MODE_SEEKING] = self.mode_seeking_weight * mode_seeking
            logs[Terms.MODE_SEEKING] = mode_seeking.detach()
        return StepTerms(losses, logs, fakes)


def painter_condition(labels: torch.Tensor, label_values: Sequence[int], dilate_px: int = 2,
                      band_px: int = 4) -> torch.Tensor:
    """The lesion painter's condition: the hole's blend weights, then one map per tumour label.

    Args:
        labels: ``(B, 1, H, W)`` integer label maps (0 = no lesion).
        label_values: the tumour labels, in channel order (e.g. ``(1, 2, 4)`` for BraTS).
        dilate_px: the hole covers the lesion dilated by this many pixels (weight 1).
        band_px: width of the band over which the weights fall to 0 (see
            :func:`~monai_mri_gan.transforms.blend_weights`).

    Returns:
        ``(B, 1 + len(label_values), H, W)`` float maps on ``labels``' device.
    """
    weights = blend_weights(labels, dilate_px=dilate_px, band_px=band_px)
    maps = [(labels == int(value)).to(weights.dtype) for value in label_values]
    return torch.cat([weights, *maps], dim=1)


class LesionPainterObjective(GanObjective):
    """The lesion painter's objective: paint the region around a lesion mask back, realistically.

    A batch is real crops centred on lesions and their label maps (:class:`~monai_mri_gan.data.LesionCrops`). The
    region around each lesion (its mask dilated, plus a blend band) is blanked to 0 and the generator asked to fill
    it, given the condition (:func:`painter_condition`) and a latent vector; its output is composited into the crop
    inside the hole only, so everything outside the band is the real crop. The discriminator judges (image,
    condition) pairs on patches.

    Discriminator terms: the adversarial loss on the patch logits of real and painted pairs; with a regulariser,
    lazy R1 on the real pairs (the mean patch logit). Generator terms: the adversarial loss of its painted pairs;
    ``l1_weight`` times the reconstruction error inside the hole (:func:`~monai_mri_gan.losses.masked_l1_loss`,
    weighted by the blend weights); ``feature_matching_weight`` times the L1 distance between the discriminator's
    features of the real and the painted pair (:func:`~monai_mri_gan.losses.feature_matching_loss`); and with
    ``mode_seeking_weight``, the mode-seeking term over pairs of the batch, against a painter that ignores ``z``.
    DiffAugment, when given, transforms a real pair and its painted twin identically (one call on the channels
    stacked), so images and label maps stay aligned; only spatial policies are allowed.

    Logged, unweighted: ``l1``, ``feature_matching``, ``mode_seeking`` (when on), ``r1``, and ``d_real`` and
    ``d_fake`` (mean sigmoid of the patch logits), and ``d_real_sign`` (the mean sign of the real patch logits).

    Args:
        label_values: the tumour labels the masks hold, in the condition's channel order.
        latent_dim: length of the painter's latent vector (0: none).
        loss: the adversarial loss or its kind ("hinge" by default, as in pix2pixHD and SPADE).
        l1_weight: weight of the reconstruction term.
        feature_matching_weight: weight of the feature-matching term.
        mode_seeking_weight: weight of the mode-seeking term; 0 turns it off.
        regulariser: optional lazy R1 regulariser.
        diffaugment: optional :class:`~monai_mri_gan.diffaugment.DiffAugment` with spatial policies only.
        dilate_px: the hole covers each lesion dilated by this many pixels.
        band_px: width of the blend band around the hole.

    Raises:
        ValueError: on no labels, negative weights or a colour augmentation policy.
    """

    def __init__(self, label_values: Sequence[int], latent_dim: int = 8, loss: AdversarialLoss | str = "hinge",
                 l1_weight: float = 20.0, feature_matching_weight: float = 5.0, mode_seeking_weight: float = 0.0,
                 regulariser: R1Regulariser | None = None, diffaugment: Callable | None = None, dilate_px: int = 2,
                 band_px: int = 4) -> None:
        if not len(label_values):
            raise ValueError("label_values must name at least one tumour label.")
        if min(l1_weight, feature_matching_weight, mode_seeking_weight) < 0:
            raise ValueError("loss weights must be >= 0.")
        colour = set(getattr(diffaugment, "policy", ())) - {"translation", "cutout"}
        if colour:
            raise ValueError(f"the painter's DiffAugment may only move pixels (translation, cutout); got {colour}: "
                             "a colour change would also change the label maps.")
        self.label_values = tuple(int(v) for v in label_values)
        self.latent_dim = int(latent_dim)
        self.loss = AdversarialLoss(loss) if isinstance(loss, str) else loss
        self.l1_weight = float(l1_weight)
        self.feature_matching_weight = float(feature_matching_weight)
        self.mode_seeking_weight = float(mode_seeking_weight)
        self.regulariser = regulariser
        self.diffaugment = diffaugment
        self.dilate_px = int(dilate_px)
        self.band_px = int(band_px)

    def condition(self, labels: torch.Tensor) -> torch.Tensor:
        """The generator's and discriminator's condition for label maps (see :func:`painter_condition`)."""
        return painter_condition(labels, self.label_values, self.dilate_px, self.band_px)

    @staticmethod
    def paint(generate: Callable[..., torch.Tensor], base: torch.Tensor, condition: torch.Tensor,
              z: torch.Tensor | None) -> torch.Tensor:
        """Blank the hole of ``base``, paint it and composite the painting inside the hole only.

        Args:
            generate: the painter, ``generate(blanked, condition, z)`` (a network or a trainer's ``generate``).
            base: ``(B, 1, H, W)`` crops.
            condition: their condition (:meth:`condition`); its first channel is the blend weights.
            z: latent vectors, or None.

        Returns:
            the crops with the painting inside the hole; pixels of weight 0 are exactly ``base``.
        """
        weights = condition[:, :1]
        blanked = base * (weights == 0)
        return composite(base, generate(blanked, condition, z).to(base.dtype), weights)

    def latents(self, batch_size: int, device: torch.device) -> torch.Tensor | None:
        """Draw ``z ~ N(0, I)`` of shape ``(batch_size, latent_dim)``, or None without a latent vector."""
        return torch.randn(batch_size, self.latent_dim, device=device) if self.latent_dim else None

    def _pairs(self, runner: GanRunner, images: Sequence[torch.Tensor],
               condition: torch.Tensor) -> list[list[torch.Tensor]]:
        """The discriminator's outputs for (image, condition) pairs, every pair augmented identically."""
        stacked = torch.cat([torch.cat([image, condition], dim=1) for image in images], dim=1)
        if self.diffaugment is not None:
            stacked = self.diffaugment(stacked)
        width = 1 + condition.shape[1]
        return [runner.discriminate(stacked[:, i * width: i * width + 1], stacked[:, i * width + 1: (i + 1) * width])
                for i in range(len(images))]

    def discriminator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: torch.Tensor,
                            iteration: int) -> StepTerms:
        """Adversarial and R1 terms of one discriminator update (see the class description)."""
        cond = self.condition(condition)
        with torch.no_grad(), runner.autocast():
            fakes = self.paint(runner.generate, reals, cond, self.latents(reals.shape[0], runner.device))
        with runner.autocast():
            real_out, fake_out = self._pairs(runner, [reals, fakes.detach()], cond)
        real_logits, fake_logits = real_out[-1].float().flatten(), fake_out[-1].float().flatten()
        losses = {Terms.ADVERSARIAL: self.loss.discriminator_loss(real_logits, fake_logits)}
        penalty = reals.new_zeros(())
        if self.regulariser is not None:
            penalty = self.regulariser(lambda x, y: runner.discriminate(x, y)[-1].float().flatten(1).mean(1),
                                       reals, cond, iteration)
            losses[Terms.R1] = penalty
        logs = {Terms.R1: penalty.detach(), Terms.D_REAL: torch.sigmoid(real_logits.detach()).mean(),
                Terms.D_REAL_SIGN: torch.sign(real_logits.detach()).mean(),
                Terms.D_FAKE: torch.sigmoid(fake_logits.detach()).mean()}
        return StepTerms(losses, logs)

    def generator_terms(self, runner: GanRunner, reals: torch.Tensor, condition: torch.Tensor) -> StepTerms:
        """Adversarial, reconstruction, feature-matching and mode-seeking terms of one generator update."""
        cond = self.condition(condition)
        z = self.latents(reals.shape[0], runner.device)
        with runner.autocast():
            fakes = self.paint(runner.generate, reals, cond, z)
            real_out, fake_out = self._pairs(runner, [reals, fakes], cond)
        losses = {Terms.ADVERSARIAL: self.loss.generator_loss(fake_out[-1].float().flatten())}
        l1 = masked_l1_loss(fakes.float(), reals.float(), cond[:, :1])
        matching = feature_matching_loss([f.float() for f in fake_out[:-1]],
                                         [r.detach().float() for r in real_out[:-1]])
        losses[Terms.RECONSTRUCTION] = self.l1_weight * l1
        losses[Terms.FEATURE_MATCHING] = self.feature_matching_weight * matching
        logs = {Terms.RECONSTRUCTION: l1.detach(), Terms.FEATURE_MATCHING: matching.detach()}
        if self.mode_seeking_weight > 0 and z is not None:
            mode_seeking = mode_seeking_loss(fakes, z)
            losses[Terms.MODE_SEEKING] = self.mode_seeking_weight * mode_seeking
            logs[Terms.MODE_SEEKING] = mode_seeking.detach()
        return StepTerms(losses, logs, fakes)

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from .losses import AdversarialLoss, R1Regulariser, mode_seeking_loss

__all__ = ["GanObjective", "GanRunner", "StepTerms", "Terms", "WholeSliceObjective"]


class Terms:
    """Names of the terms and statistics objectives report (keys of the trainer's ``loss`` output)."""

    ADVERSARIAL = "adversarial"
    CLASS = "class"
    R1 = "r1"
    MODE_SEEKING = "mode_seeking"
    D_REAL = "d_real"
    D_FAKE = "d_fake"
    CLASS_REAL = "class_real"
    CLASS_FAKE = "class_fake"


class GanRunner(Protocol):
    """What an objective needs of the trainer that calls it."""

    device: torch.device

    def generate(self, *inputs: Any) -> torch.Tensor:
        """The generator's output for ``inputs``, in the trainer's memory format."""

    def discriminate(self, images: torch.Tensor, condition: Any) -> torch.Tensor:
        """The discriminator's raw output (float) for ``images`` under ``condition``."""

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

    Logged: ``r1`` (the penalty, 0 when not due), ``d_real`` and ``d_fake`` (mean sigmoid of the logits), and with
    the terms on, ``class_real``, ``class_fake`` and ``mode_seeking`` unweighted.

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

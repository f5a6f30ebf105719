"""Adversarial losses on discriminator logits, and the R1 gradient penalty with lazy regularisation.

All losses take raw logits (before any sigmoid) and reduce each term to its mean over the batch, so real
and fake batches of different sizes (a ragged last batch) are weighted equally.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AdversarialLoss",
    "R1Regulariser",
    "bce_discriminator_loss",
    "bce_generator_loss",
    "feature_matching_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "masked_l1_loss",
    "mode_seeking_loss",
    "r1_penalty",
    "same_class_pairs",
]


def bce_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy discriminator loss: ``mean(softplus(-real)) + mean(softplus(fake))``.

    Equal to ``-log sigmoid(real) - log(1 - sigmoid(fake))`` averaged, computed stably.

    Args:
        real_logits: discriminator logits of real slices.
        fake_logits: discriminator logits of generated slices.

    Returns:
        Scalar loss.
    """
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def bce_generator_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """Binary cross-entropy generator loss: non-saturating ``mean(softplus(-fake))`` by default.

    Args:
        fake_logits: discriminator logits of generated slices.
        saturating: use the original minimax loss ``mean(log(1 - sigmoid(fake))) = mean(-softplus(fake))``
            instead, whose gradient vanishes when the discriminator wins (kept for comparison).

    Returns:
        Scalar loss.
    """
    if saturating:
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


def hinge_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge discriminator loss: ``mean(relu(1 - real)) + mean(relu(1 + fake))``.

    Args:
        real_logits: discriminator logits of real slices.
        fake_logits: discriminator logits of generated slices.

    Returns:
        Scalar loss.
    """
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge generator loss: ``-mean(fake)``.

    Args:
        fake_logits: discriminator logits of generated slices.

    Returns:
        Scalar loss.
    """
    return -fake_logits.mean()


def lsgan_discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares discriminator loss: ``0.5 * (mean((real - 1)^2) + mean(fake^2))``.

    Args:
        real_logits: discriminator outputs for real slices (targets 1).
        fake_logits: discriminator outputs for generated slices (targets 0).

    Returns:
        Scalar loss.
    """
    return 0.5 * ((real_logits - 1.0).square().mean() + fake_logits.square().mean())


def lsgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Least-squares generator loss: ``0.5 * mean((fake - 1)^2)``.

    Args:
        fake_logits: discriminator outputs for generated slices.

    Returns:
        Scalar loss.
    """
    return 0.5 * (fake_logits - 1.0).square().mean()


class AdversarialLoss(nn.Module):
    """Discriminator and generator losses of one GAN formulation, chosen by name.

    ``forward(fake_logits)`` is the generator loss and ``forward(fake_logits, real_logits)`` the discriminator
    loss; :meth:`generator_loss` and :meth:`discriminator_loss` say the same thing explicitly.

    Args:
        kind: "bce" (non-saturating logistic loss of Goodfellow et al., the default), "hinge" or "lsgan".
        saturating: with "bce", use the original minimax generator loss (see :func:`bce_generator_loss`).

    Raises:
        ValueError: for an unknown ``kind``, or ``saturating`` with a kind other than "bce".
    """

    kinds = ("bce", "hinge", "lsgan")

    def __init__(self, kind: str = "bce", saturating: bool = False) -> None:
        super().__init__()
        if kind not in self.kinds:
            raise ValueError(f"kind must be one of {self.kinds}, got {kind!r}.")
        if saturating and kind != "bce":
            raise ValueError(f"saturating applies to kind='bce' only, got kind={kind!r}.")
        self.kind = kind
        self.saturating = saturating

    def discriminator_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Discriminator loss of this kind (fake logits should come from detached generator output).

        Args:
            real_logits: discriminator logits of real slices.
            fake_logits: discriminator logits of generated slices.

        Returns:
            Scalar loss.
        """
        if self.kind == "hinge":
            return hinge_discriminator_loss(real_logits, fake_logits)
        if self.kind == "lsgan":
            return lsgan_discriminator_loss(real_logits, fake_logits)
        return bce_discriminator_loss(real_logits, fake_logits)

    def generator_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Generator loss of this kind.

        Args:
            fake_logits: discriminator logits of generated slices.

        Returns:
            Scalar loss.
        """
        if self.kind == "hinge":
            return hinge_generator_loss(fake_logits)
        if self.kind == "lsgan":
            return lsgan_generator_loss(fake_logits)
        return bce_generator_loss(fake_logits, saturating=self.saturating)

    def forward(self, fake_logits: torch.Tensor, real_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Generator loss of ``fake_logits``, or discriminator loss when ``real_logits`` are given too."""
        if real_logits is None:
            return self.generator_loss(fake_logits)
        return self.discriminator_loss(real_logits, fake_logits)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, saturating={self.saturating}"


def same_class_pairs(labels: torch.Tensor | None, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Disjoint pairs of batch indices whose samples share a class: consecutive members of each class.

    Without labels, the batch is paired in order: (0, 1), (2, 3), ...

    Args:
        labels: (B,) integer classes, or None.
        batch_size: B.

    Returns:
        two (P,) index tensors, the first and second member of each pair.
    """
    if labels is None:
        return torch.arange(0, batch_size - 1, 2), torch.arange(1, batch_size, 2)
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    firsts, seconds = [], []
    for value in torch.unique(sorted_labels):
        members = order[sorted_labels == value]
        count = members.shape[0] // 2 * 2
        firsts.append(members[0:count:2])
        seconds.append(members[1:count:2])
    return torch.cat(firsts), torch.cat(seconds)


def mode_seeking_loss(
    images: torch.Tensor, latents: torch.Tensor, labels: torch.Tensor | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Mode-seeking regulariser of the generator (MSGAN, Mao et al. 2019): ``1 / (eps + d_images / d_latents)``.

    Over disjoint pairs of generated samples of the same class (:func:`same_class_pairs`), ``d_images`` is the
    mean absolute difference between the two images and ``d_latents`` that between their latent vectors. Adding
    this to the generator loss makes it pay for mapping different latents to the same image: the remedy the paper
    gives for mode collapse in conditional GANs, at the cost of no extra network evaluation (the pairs come from
    the batch the generator step already made).

    Args:
        images: (B, ...) generated images.
        latents: (B, latent_dim) latent vectors they were made from.
        labels: (B,) their classes; None for an unconditional generator.
        eps: keeps the loss finite when the images of every pair are equal.

    Returns:
        scalar loss; 0 (with a gradient path) when the batch has no pair of one class.
    """
    if images.shape[0] != latents.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {latents.shape[0]} latent vectors.")
    first, second = same_class_pairs(labels, images.shape[0])
    first, second = first.to(images.device), second.to(images.device)
    if first.numel() == 0:
        return images.sum() * 0.0
    image_distance = (images[first].float() - images[second].float()).abs().mean()
    latent_distance = (latents[first].float() - latents[second].float()).abs().mean()
    return 1.0 / (eps + image_distance / latent_distance)


def masked_l1_loss(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                   eps: float = 1e-8) -> torch.Tensor:
    """Weighted mean absolute error: ``sum(w * |prediction - target|) / sum(w)`` over the whole batch.

    The lesion painter's reconstruction term: with ``w`` the blend weights of the hole, it asks for the real content
    back where the painter may paint and ignores the rest.

    Args:
        prediction: ``(B, C, H, W)`` images.
        target: images of the same shape.
        weights: non-negative weights broadcastable to them (e.g. ``(B, 1, H, W)``).
        eps: keeps the loss finite when every weight is 0.

    Returns:
        scalar loss.
    """
    weights = weights.expand_as(prediction).to(prediction.dtype)
    return (weights * (prediction - target).abs()).sum() / (weights.sum() + eps)


def feature_matching_loss(fake_features: Sequence[torch.Tensor], real_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Discriminator feature matching (pix2pixHD): the mean over layers of the L1 distance of their features.

    Args:
        fake_features: the discriminator's intermediate features of generated inputs, one tensor per layer.
        real_features: the same layers' features of the real inputs (detach them: they are targets).

    Returns:
        scalar loss.

    Raises:
        ValueError: when the lists differ in length or are empty.
    """
    if len(fake_features) != len(real_features) or not len(fake_features):
        raise ValueError(f"feature lists of {len(fake_features)} and {len(real_features)} layers.")
    return torch.stack([(f - r).abs().mean() for f, r in zip(fake_features, real_features, strict=True)]).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): batch mean of ``||grad_x D(x)||^2`` over real slices.

    The gradient is taken with ``create_graph=True`` so that the penalty can be back-propagated into the
    discriminator's weights. The caller scales it by ``gamma / 2`` (see :class:`R1Regulariser`).

    Args:
        real_logits: discriminator logits of ``real_images``, shape (B,) or (B, 1).
        real_images: the real slices, shape (B, ...), which must require grad and be in the logits' graph.

    Returns:
        Scalar penalty.

    Raises:
        ValueError: when ``real_images`` does not require grad.
    """
    if not real_images.requires_grad:
        raise ValueError("real_images must require grad: call real_images.requires_grad_(True) before D(x).")
    (grad,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_images, create_graph=True)
    return grad.square().flatten(1).sum(dim=1).mean()


class R1Regulariser:
    """Lazy R1 regularisation (StyleGAN2): ``gamma / 2 * every * r1`` every ``every`` iterations, else 0.

    Running the penalty only one iteration in ``every``, and multiplying it by ``every``, keeps its average
    strength while saving most of its cost (a second discriminator pass with double back-propagation).
    To penalise the discriminator as it sees the data during training, pass a callable that applies the
    same differentiable augmentation first, e.g. ``lambda x, y: discriminator(augment(x), y)``.

    Args:
        gamma: weight of the penalty; the loss term is ``gamma / 2 * r1``.
        every: regularise on iterations where ``iteration % every == 0``; 1 regularises every iteration.

    Raises:
        ValueError: when ``gamma`` is negative or ``every`` is not positive.
    """

    def __init__(self, gamma: float = 10.0, every: int = 16) -> None:
        if gamma < 0:
            raise ValueError(f"gamma must be non-negative, got {gamma}.")
        if every < 1:
            raise ValueError(f"every must be a positive number of iterations, got {every}.")
        self.gamma = gamma
        self.every = every

    def is_due(self, iteration: int) -> bool:
        """Whether the penalty is computed at ``iteration``."""
        return self.gamma > 0 and iteration % self.every == 0

    def __call__(
        self,
        discriminator: Callable[..., torch.Tensor],
        real_images: torch.Tensor,
        labels: torch.Tensor | None,
        iteration: int,
    ) -> torch.Tensor:
        """The regularisation term to add to the discriminator loss at ``iteration``.

        Args:
            discriminator: the discriminator, or a callable ``(x, labels) -> logits`` wrapping it.
            real_images: a batch of real slices; it is detached and made to require grad here.
            labels: class labels for a conditional discriminator; None calls ``discriminator(x)`` alone.
            iteration: the training iteration (0-based), which decides whether the penalty is due.

        Returns:
            ``gamma / 2 * every * r1_penalty`` when due, otherwise a zero scalar on ``real_images``' device.
        """
        if not self.is_due(iteration):
            return real_images.new_zeros(())
        x = real_images.detach().requires_grad_(True)
        logits = discriminator(x) if labels is None else discriminator(x, labels)
        return 0.5 * self.gamma * self.every * r1_penalty(logits, x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gamma={self.gamma}, every={self.every})"

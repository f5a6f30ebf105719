"""Adaptive discriminator augmentation: DiffAugment's probability driven by the discriminator's overfitting."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import from_engine

from ..diffaugment import DiffAugment
from ..objectives import Terms

__all__ = ["AdaptiveAugmentation"]


class AdaptiveAugmentation:
    """Ignite handler that steers a :class:`~monai_mri_gan.diffaugment.DiffAugment`'s ``p`` as StyleGAN2-ADA does.

    Karras et al. 2020 (StyleGAN2-ADA) measure the discriminator's overfitting by ``r_t = E[sign(D(real))]``: near
    0 while real and fake overlap, near 1 when the discriminator is sure of every real image, i.e. has memorised
    them. Every ``interval`` iterations the handler reads the mean of the objective's ``d_real_sign`` over those
    iterations (one host read per interval) and moves ``p`` by ``sign(r_t - target) * images / speed_images``,
    where ``images`` is the number of real slices seen since the last adjustment; ``p`` stays in
    ``[0, max_p]``. So ``p`` rises while the discriminator overfits and falls while it does not, reaching 1 from
    0 in ``speed_images`` real slices at the fastest. ADA's own speed (500k images) is longer than a CPU run here
    (the whole-slice default sees about 130k), hence a faster default.

    ``engine.state.metrics`` gets ``augment_p`` and ``augment_rt`` after each adjustment, for loggers. The state
    (``p``) is saved and restored with the run's checkpoints (:meth:`state_dict`).

    Args:
        diffaugment: the augmentation whose ``p`` is controlled (the objective's own).
        target: the target of ``r_t`` (ADA: 0.6); None turns the control off and leaves ``p`` as configured.
        interval: iterations between adjustments (ADA: 4).
        speed_images: real slices over which ``p`` can go from 0 to 1.
        initial_p: ``p`` at the start of a run (ADA: 0).
        max_p: the largest ``p``.
        output_transform: maps ``engine.state.output`` to the step's losses; the default reads the ``loss``
            mapping of a decollated output.

    Raises:
        ValueError: for a target outside [-1, 1], a non-positive interval or speed, or probabilities outside
            [0, 1].
    """

    def __init__(self, diffaugment: DiffAugment, target: float | None = 0.6, interval: int = 4,
                 speed_images: int = 20_000, initial_p: float = 0.0, max_p: float = 1.0,
                 output_transform: Callable[[Any], Mapping[str, Any]] | None = None) -> None:
        if target is not None and not -1.0 <= float(target) <= 1.0:
            raise ValueError(f"target is a value of E[sign(D(real))], in [-1, 1]; got {target}.")
        if int(interval) < 1 or int(speed_images) < 1:
            raise ValueError(f"interval and speed_images must be positive, got {interval} and {speed_images}.")
        if not 0.0 <= float(initial_p) <= float(max_p) <= 1.0:
            raise ValueError(f"need 0 <= initial_p <= max_p <= 1, got {initial_p} and {max_p}.")
        self.diffaugment = diffaugment
        self.target = None if target is None else float(target)
        self.interval, self.speed_images = int(interval), int(speed_images)
        self.max_p = float(max_p)
        self.output_transform = from_engine(["loss"], first=True) if output_transform is None else output_transform
        self.logger = logging.getLogger(__name__)
        if self.target is not None:
            self.diffaugment.p = float(initial_p)
        self._sum: torch.Tensor | None = None
        self._images = 0

    @property
    def p(self) -> float:
        """The augmentation's current probability."""
        return float(self.diffaugment.p)

    def attach(self, engine: Engine) -> None:
        """Accumulate every iteration's ``r_t`` term and adjust every ``interval`` iterations; nothing when off."""
        if self.target is None:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def record(self, engine: Engine) -> None:
        """Add this iteration's ``E[sign(D(real))]`` (kept on the device) and count its real slices."""
        losses = self.output_transform(engine.state.output)
        tensors = getattr(losses, "tensors", losses)
        if Terms.D_REAL_SIGN not in tensors:
            raise KeyError(f"the trainer's losses hold no {Terms.D_REAL_SIGN!r}; adaptive augmentation needs an "
                           "objective that logs it.")
        value = torch.as_tensor(tensors[Terms.D_REAL_SIGN]).detach().double()
        self._sum = value if self._sum is None else self._sum + value
        output = engine.state.output
        self._images += len(output) if isinstance(output, list) else 1

    def __call__(self, engine: Engine) -> None:
        """Move ``p`` towards the target by the images seen since the last adjustment."""
        if self._sum is None or self.target is None:
            return
        r_t = float(self._sum) / self.interval
        step = self._images / self.speed_images
        p = min(max(self.p + (step if r_t > self.target else -step), 0.0), self.max_p)
        self.diffaugment.p = p
        self._sum, self._images = None, 0
        engine.state.metrics["augment_p"], engine.state.metrics["augment_rt"] = p, r_t

    def state_dict(self) -> dict[str, float]:
        """``{"p": p}``, for the run's checkpoint."""
        return {"p": self.p}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Restore ``p`` from a checkpoint."""
        self.diffaugment.p = float(state["p"])

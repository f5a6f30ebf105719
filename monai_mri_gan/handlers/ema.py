"""Exponential moving average of generator weights, kept in a separate network used for sampling."""

from __future__ import annotations

import copy

import torch
from ignite.engine import Engine, Events

__all__ = ["ema_copy", "GeneratorEMA"]


def ema_copy(network: torch.nn.Module) -> torch.nn.Module:
    """Return a frozen deep copy of ``network`` in eval mode, to hold its moving average.

    Args:
        network: the network to copy (e.g. the generator).

    Returns:
        a copy whose parameters do not require gradients.
    """
    ema = copy.deepcopy(network).eval()
    ema.requires_grad_(False)
    return ema


class GeneratorEMA:
    """Ignite handler: after every iteration, ``ema = decay * ema + (1 - decay) * network`` (buffers copied).

    During the first ``warmup_iterations`` the effective decay ramps up as ``min(decay, (1 + t) / (10 + t))``
    so that early samples are not dominated by the random initialisation.

    Args:
        network: the trained network.
        ema_network: its moving average (see :func:`ema_copy`); same architecture.
        decay: decay per iteration, in [0, 1).
        warmup: use the ramped decay described above.

    Raises:
        ValueError: when ``decay`` is outside [0, 1) or the networks' parameters do not match.
    """

    def __init__(self, network: torch.nn.Module, ema_network: torch.nn.Module, decay: float = 0.999,
                 warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}.")
        names = [n for n, _ in network.named_parameters()]
        if names != [n for n, _ in ema_network.named_parameters()]:
            raise ValueError("network and ema_network must have the same parameters.")
        self.network = network
        self.ema_network = ema_network
        self.decay = float(decay)
        self.warmup = warmup

    def attach(self, engine: Engine) -> None:
        """Update the average at every ``ITERATION_COMPLETED`` of ``engine``."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def current_decay(self, iteration: int) -> float:
        """The decay used at 1-based ``iteration``."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + iteration) / (10.0 + iteration))

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        decay = self.current_decay(engine.state.iteration)
        for ema_p, p in zip(self.ema_network.parameters(), self.network.parameters(), strict=True):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.ema_network.buffers(), self.network.buffers(), strict=True):
            ema_b.copy_(b)

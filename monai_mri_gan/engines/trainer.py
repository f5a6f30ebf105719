"""An Ignite GAN trainer built on ``monai.engines.Trainer`` that avoids the traps of ``monai.engines.GanTrainer``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import Trainer
from monai.inferers import Inferer, SimpleInferer
from torch.optim import Optimizer
from torch.utils.data import DataLoader

from ..objectives import GanObjective, StepTerms, Terms
from ..utils import resolve_amp

__all__ = ["GanOutput", "SliceGanTrainer", "StepLosses", "prepare_lesion_batch", "prepare_slice_batch"]


class GanOutput:
    """Keys of ``engine.state.output`` after one :class:`SliceGanTrainer` iteration.

    The output follows MONAI's decollated convention: a list with one dictionary per real slice of the batch,
    holding the real slice (``IMAGE``), its conditioning (``LABEL``: the class of a conditional model), a fake of
    the same condition (``PRED``) and, replicated in every item as MONAI replicates ``loss``, a ``LOSS`` mapping
    (:class:`StepLosses`) of the step's scalars: ``G_LOSS`` and ``D_LOSS`` (the sums the optimisers stepped on) and
    every statistic the objective logs (:class:`~monai_mri_gan.objectives.Terms`: ``r1``, ``d_real``,
    ``d_real_sign``, ``d_fake``, and with their terms on ``class_real``, ``class_fake``, ``mode_seeking``).
    So ``from_engine(["loss"], first=True)``, the output transform of MONAI's default trackers, returns every
    loss of the step by name.
    """

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    LOSS = "loss"
    G_LOSS = "g_loss"
    D_LOSS = "d_loss"
    R1 = Terms.R1
    D_REAL = Terms.D_REAL
    D_REAL_SIGN = Terms.D_REAL_SIGN
    D_FAKE = Terms.D_FAKE
    CLASS_REAL = Terms.CLASS_REAL
    CLASS_FAKE = Terms.CLASS_FAKE
    MODE_SEEKING = Terms.MODE_SEEKING


class StepLosses(dict):
    """A step's scalars, kept on the training device and read (one host synchronisation each) only when asked.

    A training step never calls ``.item()``: on a GPU every read stalls the stream. Handlers that log read values
    by name (``losses["g_loss"]`` is a Python float) on the iterations they log; :attr:`tensors` gives the device
    tensors themselves, for checks that stay on the device (:class:`~monai_mri_gan.handlers.DivergenceGuard`).
    """

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The scalars as 0-d device tensors."""
        return dict(super().items())

    def __getitem__(self, key: str) -> float:
        return float(super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def items(self) -> Any:
        return [(key, self[key]) for key in self]

    def values(self) -> Any:
        return [self[key] for key in self]


def prepare_slice_batch(
    batchdata: dict, device: torch.device | str, non_blocking: bool = False, image_key: str = "image",
    class_key: str = "class", **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Turn a batch of slice items into ``(images (B, C, H, W), classes (B,) or None)`` on ``device``.

    Slices travel as ``(B, C, H, W, 1)`` so that each keeps a full 4x4 affine (see GUIDE.md, Geometry); the
    networks are 2D, so the through-plane axis is dropped here, on the plain tensor, never on the metadata.

    Args:
        batchdata: a collated batch with ``image_key`` and optionally ``class_key``.
        device: target device.
        non_blocking: passed to ``Tensor.to``.
        image_key: key of the images.
        class_key: key of the integer class labels; absent keys give ``None``.
        kwargs: further arguments of ``Tensor.to`` (e.g. ``memory_format``).

    Returns:
        the images as a float tensor and the classes as a long tensor (or None).

    Raises:
        ValueError: when the images are neither 4D nor 5D with a singleton last axis.
    """
    images = torch.as_tensor(batchdata[image_key])
    if images.ndim == 5:
        if images.shape[-1] != 1:
            raise ValueError(f"expected 2D slices shaped (B, C, H, W, 1), got {tuple(images.shape)}.")
        images = images[..., 0]
    if images.ndim != 4:
        raise ValueError(f"expected 2D slices shaped (B, C, H, W), got {tuple(images.shape)}.")
    images = images.as_subclass(torch.Tensor).float().to(device, non_blocking=non_blocking, **kwargs)
    classes = batchdata.get(class_key)
    if classes is not None:
        classes = torch.as_tensor(classes).as_subclass(torch.Tensor).long().reshape(-1).to(device)
    return images, classes


def prepare_lesion_batch(
    batchdata: dict, device: torch.device | str, non_blocking: bool = False, image_key: str = "image",
    label_key: str = "label", **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn a batch of lesion crops into ``(images (B, 1, H, W), label maps (B, 1, H, W))`` on ``device``.

    The lesion painter's batch function (:class:`~monai_mri_gan.data.LesionCrops` items); the label maps are its
    condition.

    Args:
        batchdata: a collated batch with ``image_key`` and ``label_key``.
        device: target device.
        non_blocking: passed to ``Tensor.to``.
        image_key: key of the crops.
        label_key: key of the integer label maps.
        kwargs: further arguments of ``Tensor.to`` for the images (e.g. ``memory_format``).

    Raises:
        ValueError: when the crops and label maps are not both ``(B, 1, H, W)`` of one shape.
    """
    images = torch.as_tensor(batchdata[image_key]).as_subclass(torch.Tensor)
    labels = torch.as_tensor(batchdata[label_key]).as_subclass(torch.Tensor)
    if images.ndim != 4 or images.shape != labels.shape:
        raise ValueError(f"expected crops and label maps shaped (B, 1, H, W) alike, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)}.")
    images = images.float().to(device, non_blocking=non_blocking, **kwargs)
    return images, labels.long().to(device, non_blocking=non_blocking)


class SliceGanTrainer(Trainer):
    """Adversarial training of a 2D generator and discriminator, as an Ignite engine, for any GAN family.

    A family is networks, a batch function (``prepare_batch``) and an objective
    (:class:`~monai_mri_gan.objectives.GanObjective`) that owns every loss term; this loop only prepares the batch,
    asks the objective for the terms, sums them, steps the optimisers and hands the step's scalars to the handlers.
    Unlike ``monai.engines.GanTrainer`` it sets train/eval modes, sizes the fake batch to the real one (a ragged last
    batch stays paired), really applies mixed precision (bf16 autocast on CPU, fp16 autocast with a gradient scaler
    on CUDA), can run in channels-last memory format, and never synchronises with the device inside a step (the
    scalars stay on the device, see :class:`StepLosses`).

    One iteration:

    1. ``d_steps`` times: the objective's discriminator terms (it makes fakes without gradient); their sum is one
       ``d_optimizer`` step.
    2. With the discriminator's parameters frozen, the objective's generator terms; their sum is one
       ``g_optimizer`` step.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: a ``DataLoader`` of training items (see ``prepare_batch``).
        generator: the generator; the objective decides its inputs.
        discriminator: the discriminator, ``discriminator(images, condition)``.
        g_optimizer: optimiser of the generator.
        d_optimizer: optimiser of the discriminator.
        objective: the family's objective, e.g. :class:`~monai_mri_gan.objectives.WholeSliceObjective`.
        d_steps: discriminator updates per generator update.
        amp: mixed precision (bf16 on CPU, fp16 with gradient scaling on CUDA): true, false, or ``"auto"`` (on
            CUDA and on CPUs with bf16 instructions; see :func:`~monai_mri_gan.utils.resolve_amp`).
        channels_last: run networks and images in channels-last memory format.
        epoch_length: iterations per epoch, default ``len(train_data_loader)``.
        g_inferer: inferer for generator forward passes (``SimpleInferer`` by default).
        prepare_batch: function ``(batch, device, non_blocking) -> (images, condition)``.
        train_handlers: Ignite handlers to attach (each with ``attach(engine)``).
        non_blocking: non-blocking host-to-device copies.

    Raises:
        ValueError: on a data loader that is not a ``DataLoader`` or on bad argument values.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: DataLoader,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        g_optimizer: Optimizer,
        d_optimizer: Optimizer,
        objective: GanObjective,
        d_steps: int = 1,
        amp: bool | str = False,
        channels_last: bool = False,
        epoch_length: int | None = None,
        g_inferer: Inferer | None = None,
        prepare_batch: Callable = prepare_slice_batch,
        train_handlers: Sequence | None = None,
        non_blocking: bool = False,
    ) -> None:
        if not isinstance(train_data_loader, DataLoader):
            raise ValueError("train_data_loader must be a torch DataLoader.")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}.")
        if int(d_steps) < 1:
            raise ValueError(f"d_steps must be >= 1, got {d_steps}.")
        device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        generator.to(device=device, memory_format=self.memory_format)
        discriminator.to(device=device, memory_format=self.memory_format)
        super().__init__(
            device=device,
            max_epochs=int(max_epochs),
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            handlers=train_handlers,
            amp=False,  # mixed precision is handled here, device-aware; Trainer.run's CUDA-only scaler is not used
            decollate=False,
        )
        self.device = device
        self.generator = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.objective = objective
        self.d_steps = int(d_steps)
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        self.use_amp = resolve_amp(amp, device)
        self.amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        scale = self.use_amp and device.type == "cuda"
        # one scaler per optimiser: the two losses have unrelated magnitudes
        self.d_scaler = torch.amp.GradScaler(device.type, enabled=scale)
        self.g_scaler = torch.amp.GradScaler(device.type, enabled=scale)

    def attach_handlers(self, handlers: Sequence) -> None:
        """Attach Ignite handlers (objects with ``attach(engine)``) in order.

        Bundle configs attach handlers after the trainer exists, because checkpoint handlers refer to the trainer.

        Args:
            handlers: the handlers.
        """
        for handler in handlers:
            handler.attach(self)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The mixed-precision context of a step (a null context when ``amp`` is off)."""
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def generate(self, *inputs: Any) -> torch.Tensor:
        """The generator's output for ``inputs`` (through ``g_inferer``), in the training memory format."""
        return self.g_inferer(inputs[0], self.generator, *inputs[1:]).contiguous(memory_format=self.memory_format)

    def discriminate(self, images: torch.Tensor, condition: Any) -> Any:
        """The discriminator's raw output for ``images`` under ``condition`` (its objective reads it)."""
        return self._discriminator_for_step()(images, condition)

    def _discriminator_for_step(self) -> torch.nn.Module:
        return self.discriminator

    def _iteration(self, engine: SliceGanTrainer, batchdata: dict) -> list[dict]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        reals, condition = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        losses, fakes = engine._train_step(reals, condition)
        reals, fakes = reals.detach().contiguous(), fakes.detach().float().contiguous()
        step_losses = StepLosses(losses)
        items = []
        for i in range(reals.shape[0]):
            item = {GanOutput.IMAGE: reals[i], GanOutput.PRED: fakes[i], GanOutput.LOSS: step_losses}
            if condition is not None:
                item[GanOutput.LABEL] = condition[i]
            items.append(item)
        return items

    def _train_step(self, reals: torch.Tensor, condition: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One discriminator phase and one generator step; returns the step's scalars (on the device) and fakes."""
        reals = reals.contiguous(memory_format=self.memory_format)
        self.generator.train()
        self.discriminator.train()

        d_totals, d_logs = [], []
        self.discriminator.requires_grad_(True)
        for _ in range(self.d_steps):
            terms = self.objective.discriminator_terms(self, reals, condition, self.state.iteration)
            d_loss = terms.total()
            self.d_optimizer.zero_grad(set_to_none=True)
            self.d_scaler.scale(d_loss).backward()
            self.d_scaler.step(self.d_optimizer)
            self.d_scaler.update()
            d_totals.append(d_loss.detach())
            d_logs.append(terms.logs)

        self.discriminator.requires_grad_(False)
        terms: StepTerms = self.objective.generator_terms(self, reals, condition)
        g_loss = terms.total()
        self.g_optimizer.zero_grad(set_to_none=True)
        self.g_scaler.scale(g_loss).backward()
        self.g_scaler.step(self.g_optimizer)
        self.g_scaler.update()
        self.discriminator.requires_grad_(True)

        losses = {GanOutput.G_LOSS: g_loss.detach(), GanOutput.D_LOSS: _mean(d_totals)}
        losses.update({name: _mean([logs[name] for logs in d_logs]) for name in d_logs[0]})
        losses.update(terms.logs)
        return losses, terms.fakes


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return values[0] if len(values) == 1 else torch.stack(values).mean()

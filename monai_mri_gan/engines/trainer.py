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

from monai_mri_gan.losses import mode_seeking_loss

__all__ = ["SliceGanTrainer", "prepare_slice_batch", "GanOutput"]


class GanOutput:
    """Keys of ``engine.state.output`` after one :class:`SliceGanTrainer` iteration.

    The output follows MONAI's decollated convention: a list with one dictionary per real slice of the batch,
    holding the real slice (``IMAGE``), its class (``LABEL``, conditional models), a fake of the same class
    (``PRED``) and, replicated in every item as MONAI replicates ``loss``, a ``LOSS`` dictionary of the step's
    scalars (``G_LOSS``, ``D_LOSS``, ``R1``, ``D_REAL``, ``D_FAKE``, and with an auxiliary classifier
    ``CLASS_REAL`` and ``CLASS_FAKE``, its cross-entropy on reals and on fakes; with a mode-seeking weight,
    ``MODE_SEEKING``, the unweighted :func:`~monai_mri_gan.losses.mode_seeking_loss`).
    So ``from_engine(["loss"], first=True)``, the output transform of MONAI's default trackers, returns every
    loss of the step by name.
    """

    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    LOSS = "loss"
    G_LOSS = "g_loss"
    D_LOSS = "d_loss"
    R1 = "r1"
    D_REAL = "d_real"
    D_FAKE = "d_fake"
    CLASS_REAL = "class_real"
    CLASS_FAKE = "class_fake"
    MODE_SEEKING = "mode_seeking"


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


class SliceGanTrainer(Trainer):
    """Adversarial training of a 2D slice generator and discriminator, as an Ignite engine.

    Unlike ``monai.engines.GanTrainer`` it detaches fakes for the discriminator step (so several discriminator
    steps per generator step work), sets train/eval modes, sizes the fake batch to the real one (a ragged last
    batch stays paired), feeds class labels to both networks, really applies mixed precision (bf16 autocast on
    CPU, fp16 autocast with a gradient scaler on CUDA) and can run in channels-last memory format.

    One iteration:

    1. ``d_steps`` times: fakes ``G(z, y)`` without gradient; ``D`` on augmented reals and fakes; the
       discriminator loss, plus the lazy R1 penalty on reals when the regulariser says so; one ``d_optimizer`` step.
    2. Fresh latents, ``G(z, y)``; the generator loss on ``D(augment(fakes), y)``; one ``g_optimizer`` step, with
       the discriminator's parameters frozen.

    With ``class_loss_weight > 0`` and a discriminator with an auxiliary classifier (AC-GAN), the discriminator
    also learns to classify the real slices (cross-entropy), and the generator is asked for fakes it classifies as
    their class; both terms are added with that weight.

    With ``mode_seeking_weight > 0`` the generator loss adds that weight times
    :func:`~monai_mri_gan.losses.mode_seeking_loss` of the step's fakes against their latents (pairs of one class),
    which counters mode collapse: a small class (tumour slices) otherwise tends to one head with one lesion.

    Fakes for a conditional model use the classes of the real batch, so both networks see the data's class mix.

    Args:
        device: device to train on.
        max_epochs: number of epochs.
        train_data_loader: a ``DataLoader`` of slice items (see :func:`prepare_slice_batch`).
        generator: maps ``(z, labels)`` to images in the training intensity range (``labels`` is None for an
            unconditional model).
        discriminator: maps ``(images, labels)`` to logits of shape ``(B,)``.
        g_optimizer: optimiser of the generator.
        d_optimizer: optimiser of the discriminator.
        loss: an object with ``discriminator_loss(real_logits, fake_logits)`` and ``generator_loss(fake_logits)``.
        latent_dim: size of the latent vector ``z``.
        num_classes: number of classes of a conditional model; 0 for an unconditional one.
        d_steps: discriminator updates per generator update.
        regulariser: optional R1-style regulariser, ``regulariser(discriminator, reals, labels, iteration)``
            returning a (possibly zero) penalty to add to the discriminator loss.
        augment: optional differentiable augmentation applied to real and fake images alike before ``D``.
        class_loss_weight: weight of the auxiliary classification losses; needs a discriminator whose output has
            ``1 + num_classes`` columns (``SliceDiscriminator(auxiliary_classifier=True)``). 0 disables them.
        mode_seeking_weight: weight of the mode-seeking regulariser in the generator loss; 0 disables it.
        amp: enable mixed precision (bf16 on CPU, fp16 with gradient scaling on CUDA).
        channels_last: run networks and images in channels-last memory format.
        epoch_length: iterations per epoch, default ``len(train_data_loader)``.
        g_inferer: inferer for generator forward passes (``SimpleInferer`` by default).
        prepare_batch: function ``(batch, device, non_blocking) -> (images, classes)``.
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
        loss: Any,
        latent_dim: int,
        num_classes: int = 0,
        d_steps: int = 1,
        regulariser: Callable | None = None,
        augment: Callable | None = None,
        class_loss_weight: float = 0.0,
        mode_seeking_weight: float = 0.0,
        amp: bool = False,
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
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}.")
        if float(class_loss_weight) < 0 or (float(class_loss_weight) > 0 and int(num_classes) < 1):
            raise ValueError(f"class_loss_weight must be 0, or positive for a conditional GAN; got {class_loss_weight} "
                             f"with {num_classes} classes.")
        if not float(mode_seeking_weight) >= 0:
            raise ValueError(f"mode_seeking_weight must be >= 0, got {mode_seeking_weight}.")
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
        self.generator = generator
        self.discriminator = discriminator
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.loss = loss
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.d_steps = int(d_steps)
        self.regulariser = regulariser
        self.augment = augment
        self.class_loss_weight = float(class_loss_weight)
        self.mode_seeking_weight = float(mode_seeking_weight)
        self.g_inferer = SimpleInferer() if g_inferer is None else g_inferer
        self.use_amp = bool(amp)
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

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.use_amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.state.device.type, dtype=self.amp_dtype)

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.augment is None else self.augment(images)

    def sample_latents(self, batch_size: int) -> torch.Tensor:
        """Draw ``z ~ N(0, I)`` of shape ``(batch_size, latent_dim)`` on the training device."""
        return torch.randn(batch_size, self.latent_dim, device=self.state.device)

    def _generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.g_inferer(z, self.generator, labels).contiguous(memory_format=self.memory_format)

    def _discriminate(self, images: torch.Tensor,
                      labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Real/fake logits (B,) and, from a discriminator with an auxiliary classifier, class logits (B, K)."""
        out = self._discriminator_for_step()(images, labels).float()
        if out.ndim == 2 and out.shape[1] > 1:
            return out[:, 0], out[:, 1:]
        return out.reshape(-1), None

    def _discriminator_for_step(self) -> torch.nn.Module:
        return self.discriminator

    def _class_loss(self, class_logits: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor | None:
        if self.class_loss_weight == 0 or labels is None:
            return None
        if class_logits is None:
            raise ValueError("class_loss_weight > 0 needs a discriminator with an auxiliary classifier "
                             "(SliceDiscriminator(auxiliary_classifier=True)).")
        return torch.nn.functional.cross_entropy(class_logits, labels)

    def _iteration(self, engine: SliceGanTrainer, batchdata: dict) -> list[dict]:  # type: ignore[override]
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        reals, labels = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        losses, fakes = engine._train_step(reals, labels)
        reals, fakes = reals.detach().contiguous(), fakes.detach().float().contiguous()
        items = []
        for i in range(reals.shape[0]):
            item = {GanOutput.IMAGE: reals[i], GanOutput.PRED: fakes[i], GanOutput.LOSS: losses}
            if labels is not None:
                item[GanOutput.LABEL] = labels[i]
            items.append(item)
        return items

    def _train_step(self, reals: torch.Tensor, labels: torch.Tensor | None) -> tuple[dict[str, float], torch.Tensor]:
        """One discriminator phase and one generator step; returns the step's scalars and the generator's fakes."""
        reals = reals.contiguous(memory_format=self.memory_format)
        if self.num_classes > 0 and labels is None:
            raise ValueError("a conditional GAN needs a class for every slice; the batch has none.")
        if self.num_classes == 0:
            labels = None
        batch_size = reals.shape[0]
        self.generator.train()
        self.discriminator.train()

        d_loss_total, r1_total, class_real_total = 0.0, 0.0, 0.0
        self.discriminator.requires_grad_(True)
        for _ in range(self.d_steps):
            with torch.no_grad(), self._autocast():
                fakes = self._generate(self.sample_latents(batch_size), labels)
            with self._autocast():
                real_logits, real_classes = self._discriminate(self._augment(reals), labels)
                fake_logits, _ = self._discriminate(self._augment(fakes.detach()), labels)
            d_loss = self.loss.discriminator_loss(real_logits, fake_logits)
            class_real = self._class_loss(real_classes, labels)
            if class_real is not None:
                class_real_total += class_real.item()
                d_loss = d_loss + self.class_loss_weight * class_real
            if self.regulariser is not None:
                # the penalty's double backward runs in full precision
                penalty = self.regulariser(lambda x, y=None: self._discriminate(x, y)[0], reals, labels,
                                           self.state.iteration)
                r1_total += float(penalty.detach())
                d_loss = d_loss + penalty
            self.d_optimizer.zero_grad(set_to_none=True)
            self.d_scaler.scale(d_loss).backward()
            self.d_scaler.step(self.d_optimizer)
            self.d_scaler.update()
            d_loss_total += d_loss.item()

        self.discriminator.requires_grad_(False)
        latents = self.sample_latents(batch_size)
        with self._autocast():
            fakes = self._generate(latents, labels)
            g_logits, fake_classes = self._discriminate(self._augment(fakes), labels)
        g_loss = self.loss.generator_loss(g_logits)
        class_fake = self._class_loss(fake_classes, labels)
        if class_fake is not None:
            g_loss = g_loss + self.class_loss_weight * class_fake
        mode_seeking = None
        if self.mode_seeking_weight > 0:
            mode_seeking = mode_seeking_loss(fakes, latents, labels)
            g_loss = g_loss + self.mode_seeking_weight * mode_seeking
        self.g_optimizer.zero_grad(set_to_none=True)
        self.g_scaler.scale(g_loss).backward()
        self.g_scaler.step(self.g_optimizer)
        self.g_scaler.update()
        self.discriminator.requires_grad_(True)

        losses = {
            GanOutput.G_LOSS: g_loss.item(),
            GanOutput.D_LOSS: d_loss_total / self.d_steps,
            GanOutput.R1: r1_total / self.d_steps,
            GanOutput.D_REAL: torch.sigmoid(real_logits.detach()).mean().item(),
            GanOutput.D_FAKE: torch.sigmoid(fake_logits.detach()).mean().item(),
        }
        if class_fake is not None:
            losses[GanOutput.CLASS_REAL] = class_real_total / self.d_steps
            losses[GanOutput.CLASS_FAKE] = class_fake.item()
        if mode_seeking is not None:
            losses[GanOutput.MODE_SEEKING] = mode_seeking.item()
        return losses, fakes

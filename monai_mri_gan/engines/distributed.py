"""Data-parallel GAN training over processes and nodes with ``torch.distributed``, as launched by ``torchrun``.

Every process (rank) trains the same networks on its own share of the slices (a ``DistributedSampler``);
``DistributedDataParallel`` averages the gradients of both networks, so after every optimiser step all ranks hold
identical weights. The bundle's ``multi_gpu_train.json`` wires this in::

    CONFIGS=bundles/brain_mri_gan/configs
    torchrun --nproc_per_node=2 -m monai.bundle run training \\
        --config_file "['$CONFIGS/train.json','$CONFIGS/multi_gpu_train.json']"
"""

from __future__ import annotations

import datetime
import inspect
import os
import random
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch.nn.parallel import DistributedDataParallel

from .trainer import SliceGanTrainer

__all__ = [
    "DistributedSliceGanTrainer",
    "finalize_distributed",
    "init_distributed",
    "is_main_process",
    "local_device",
    "unwrap",
]


def local_device() -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU.

    ``LOCAL_RANK`` is set by ``torchrun`` (0 when absent, i.e. a single process).
    """
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout_minutes: float = 30.0) -> int:
    """Join the process group that ``torchrun`` describes in the environment, once; return this process's rank.

    Reads ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` (the ``env://`` rendezvous that
    ``torchrun`` sets up, on one node or many). On CUDA the current device is set to ``LOCAL_RANK`` first.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; None picks nccl when CUDA is available, gloo otherwise.
        timeout_minutes: how long a collective may wait for the other ranks (e.g. while rank 0 evaluates).

    Returns:
        the global rank of this process.

    Raises:
        RuntimeError: when the environment does not describe a process group (not started by ``torchrun``).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"distributed training needs {', '.join(missing)} in the environment: start it with "
                           "`torchrun --nproc_per_node=N -m monai.bundle run training ...`.")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return dist.get_rank()


def finalize_distributed() -> None:
    """Leave the process group (after a barrier, so no rank exits while another still writes); no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """True on rank 0 of a process group, and in a single-process run: the process that writes files and logs."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The network inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper, or ``network`` itself."""
    return getattr(network, "module", network) if isinstance(
        network, DistributedDataParallel | torch.nn.DataParallel) else network


def _no_forward_buffer_sync() -> dict[str, bool]:
    # buffers are broadcast once per iteration (DistributedSliceGanTrainer._broadcast_buffers), not at every forward;
    # torch >= 2.13 names this option forward_sync_buffers and deprecates broadcast_buffers
    name = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel.__init__).parameters else "broadcast_buffers"
    return {name: False}


class DistributedSliceGanTrainer(SliceGanTrainer):
    """:class:`SliceGanTrainer` for one rank of a ``torch.distributed`` process group (DDP on both networks).

    Give it the plain networks, as for a single process: it wraps them in ``DistributedDataParallel`` itself, for
    the duration of each run (from ``STARTED`` to ``COMPLETED``), so the objects the bundle checkpoints, averages
    (EMA) and samples stay the unwrapped modules, and a checkpoint written by rank 0 loads into a single-process run
    unchanged. What it adds:

    - gradients of both networks are averaged over ranks at every optimiser step, so weights stay identical;
    - while the generator trains, the discriminator is frozen and called without its DDP wrapper: it has no
      gradient to share, so DDP's bookkeeping for the backward pass is skipped;
    - after every iteration, rank 0's buffers (batch-norm running statistics, spectral-norm vectors) are broadcast,
      so every rank (and its EMA copy) holds the same state whenever a handler looks;
    - the losses and discriminator scores in ``engine.state.output`` are averaged over ranks, so stats, divergence
      checks and trackers agree everywhere (the slices in it are this rank's);
    - at the first epoch of a run (after a resume), it checks that all ranks are at the same iteration, then gives
      each rank its own random stream (seeded from the shared one plus the rank) so ranks draw different latents
      and augmentations.

    Handlers that write files or print (checkpoints, sample grids, TensorBoard, console stats) belong on rank 0
    only; handlers that change the training state (resume, EMA, divergence guard) on every rank.

    Args:
        device: this rank's device (see :func:`local_device`).
        generator: the (unwrapped) generator.
        sync_batchnorm: convert the generator's batch norms to ``torch.nn.SyncBatchNorm`` (statistics over the
            global batch instead of each rank's); CUDA only.
        kwargs: every other argument of :class:`SliceGanTrainer`; the data loader should hold a
            ``DistributedSampler`` (or MONAI's ``DistributedWeightedRandomSampler``) so each rank reads its own slices.

    Raises:
        RuntimeError: when no process group is initialised (see :func:`init_distributed`).
        ValueError: when ``sync_batchnorm`` is asked for off CUDA, or on the base class's bad arguments.
    """

    def __init__(self, device: str | torch.device, generator: torch.nn.Module, sync_batchnorm: bool = False,
                 **kwargs: Any) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("DistributedSliceGanTrainer needs an initialised process group: call "
                               "monai_mri_gan.engines.distributed.init_distributed() first (multi_gpu_train.json "
                               "does, in `initialize`).")
        device = torch.device(device)
        if sync_batchnorm:
            if device.type != "cuda":
                raise ValueError("sync_batchnorm needs CUDA devices (torch.nn.SyncBatchNorm does not run on CPU).")
            # converts the batch norms inside in place, keeping the parameter objects the optimiser holds
            generator = torch.nn.SyncBatchNorm.convert_sync_batchnorm(generator)
        super().__init__(device=device, generator=generator, **kwargs)
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._device_ids = [device.index] if device.type == "cuda" else None
        self._run_starting = False
        self.add_event_handler(Events.STARTED, self._wrap_networks)
        self.add_event_handler(Events.EPOCH_STARTED, self._start_ranks)
        self.add_event_handler(Events.COMPLETED, self._unwrap_networks)

    def _wrap_networks(self, engine: Engine) -> None:
        # DDP wrappers live for one run only: a wrapper (its gradient reducer) that outlives the process group
        # can abort the interpreter at exit, after finalize_distributed has destroyed the group
        for name in ("generator", "discriminator"):
            network = getattr(self, name)
            if not isinstance(network, DistributedDataParallel):
                setattr(self, name, DistributedDataParallel(network, device_ids=self._device_ids,
                                                            **_no_forward_buffer_sync()))
        self._run_starting = True

    def _unwrap_networks(self, engine: Engine) -> None:
        self.generator = unwrap(self.generator)
        self.discriminator = unwrap(self.discriminator)

    def _start_ranks(self, engine: Engine) -> None:
        # runs at the first EPOCH_STARTED of a run, i.e. after every STARTED handler (resume included)
        if not self._run_starting:
            return
        self._run_starting = False
        iteration = torch.tensor([engine.state.iteration, -engine.state.iteration], dtype=torch.float64)
        dist.all_reduce(iteration, op=dist.ReduceOp.MAX)
        if int(iteration[0]) != -int(iteration[1]):
            raise RuntimeError(
                f"ranks start at different iterations ({-int(iteration[1])} to {int(iteration[0])}): every rank must "
                "see the same checkpoint folder (output_dir on a shared file system) to resume.")
        seed = int(torch.randint(0, 2**31 - 1, (1,)))
        torch.manual_seed(seed + self.rank)
        random.seed(seed + self.rank)

    def _discriminator_for_step(self) -> torch.nn.Module:
        # a frozen discriminator (the generator's step) has no gradient to share: skip DDP's bookkeeping
        if not any(p.requires_grad for p in self.discriminator.parameters()):
            return unwrap(self.discriminator)
        return self.discriminator

    @torch.no_grad()
    def _broadcast_buffers(self) -> None:
        for network in (self.generator, self.discriminator):
            for buffer in unwrap(network).buffers():
                dist.broadcast(buffer, src=0)

    def _average_losses(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # one collective on the device, no host synchronisation: the scalars are read only when a handler logs
        keys = sorted(losses)
        values = torch.stack([losses[k].detach().to(torch.float64) for k in keys])
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return dict(zip(keys, values / self.world_size, strict=True))

    def _train_step(self, reals: torch.Tensor, condition: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        losses, fakes = super()._train_step(reals, condition)
        self._broadcast_buffers()
        return self._average_losses(losses), fakes

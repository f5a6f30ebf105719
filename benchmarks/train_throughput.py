"""Training throughput of the GAN trainer: slices/s and s/iteration by image size, memory format, precision, processes,
and against ``monai.engines.GanTrainer``.

Each measurement runs in a fresh process (two processes through ``torchrun`` on gloo for the data-parallel rows) on
slices held in RAM, so it measures the trainer (both networks, R1 every 16 iterations, DiffAugment, as in
``train.json``), not the data pipeline. Every process uses a batch of ``--batch_size`` slices: two processes train
a global batch twice as large, and slices/s counts the slices of all processes.

Scaling efficiency compares two processes with one thread each against twice one single-thread process (the
ideal of data parallelism) and against one process using both cores, which is what a user of a small machine
would run instead.

The comparison trains identical unconditional networks with the same BCE losses, batch and size (128x128, no R1, no
DiffAugment) in one run: ``monai.engines.GanTrainer`` as it comes (fp32, contiguous; its AMP is CUDA-only),
``SliceGanTrainer`` with the bundle's settings (bf16 autocast, channels-last), and a minimal hand-written PyTorch loop
with the same networks, losses, precision and memory format (the framework's overhead is the gap between the last
two). A last, untimed run of ``SliceGanTrainer`` with the bundle's per-iteration handlers (EMA, divergence guard,
stats every ``--log_every`` iterations) counts the host synchronisations the step makes: calls of ``.item()``,
``float()``, ``int()``, ``bool()``, ``.tolist()``, ``.numpy()`` and ``.cpu()`` on tensors from outside torch's
own code (Adam reads its CPU step counter that way, which is no device synchronisation), per logging and per
non-logging iteration. Each row also
gives the process's peak resident memory and the share of the machine's matmul FLOP/s (a 2048x2048 ``torch.mm`` in
the same precision and threads) that training reaches, from the FLOPs of one iteration counted by
``torch.utils.flop_counter.FlopCounterMode``.

Prints tables and writes ``benchmarks/results/train_throughput.json``. Run: ``python benchmarks/train_throughput.py``
(``--parts comparison`` or ``--parts grid`` for one part; the other part's rows already in the JSON are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Events
from monai.engines import GanTrainer
from monai.handlers import StatsHandler, from_engine
from torch.nn.functional import binary_cross_entropy_with_logits as bce
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from monai_mri_gan.data.datasets import SliceTensorDataset
from monai_mri_gan.diffaugment import DiffAugment
from monai_mri_gan.engines import SliceGanTrainer, prepare_slice_batch
from monai_mri_gan.handlers import DivergenceGuard, GeneratorEMA, ema_copy, every_n
from monai_mri_gan.losses import AdversarialLoss, R1Regulariser
from monai_mri_gan.networks import build_networks
from monai_mri_gan.objectives import WholeSliceObjective

LATENT_DIM, NUM_CLASSES = 128, 2


def random_slices(image_size: int, count: int, batch_size: int, num_classes: int = NUM_CLASSES) -> DataLoader:
    """Seeded random slices held in RAM (with classes when ``num_classes`` > 0), so that only training is timed."""
    images = torch.rand(count, 1, image_size, image_size, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
    classes = torch.arange(count) % num_classes if num_classes else torch.zeros(count, dtype=torch.long)
    return DataLoader(SliceTensorDataset(images, classes), batch_size=batch_size)


def measure(image_size: int, channels_last: bool, amp: bool, batch_size: int, warmup: int, iterations: int) -> dict:
    """Train ``warmup + iterations`` iterations in this process (one rank when under torchrun); time the last ones.

    Returns:
        on rank 0, seconds per iteration and slices per second over all ranks; an empty dict on other ranks.
    """
    distributed = "RANK" in os.environ
    world_size = 1
    trainer_class: type[SliceGanTrainer] = SliceGanTrainer
    if distributed:
        from monai_mri_gan.engines.distributed import DistributedSliceGanTrainer, init_distributed

        init_distributed()
        world_size = torch.distributed.get_world_size()
        trainer_class = DistributedSliceGanTrainer
    torch.manual_seed(0)
    generator, discriminator = build_networks(image_size=image_size, latent_dim=LATENT_DIM, num_classes=NUM_CLASSES)
    loader = random_slices(image_size, batch_size * (warmup + iterations), batch_size)
    trainer = trainer_class(
        device="cpu", max_epochs=1, train_data_loader=loader, generator=generator, discriminator=discriminator,
        g_optimizer=torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        objective=WholeSliceObjective(
            latent_dim=LATENT_DIM, num_classes=NUM_CLASSES, loss=AdversarialLoss("bce"),
            regulariser=R1Regulariser(gamma=0.1, every=16), diffaugment=DiffAugment(("translation", "cutout"))),
        amp=amp, channels_last=channels_last,
    )
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: stamps.append(time.perf_counter()))
    trainer.run()
    if distributed:
        from monai_mri_gan.engines.distributed import finalize_distributed

        rank = torch.distributed.get_rank()
        finalize_distributed()
        if rank != 0:
            return {}
    seconds = (stamps[-1] - stamps[warmup - 1]) / iterations
    return {"s_per_iteration": seconds, "slices_per_s": batch_size * world_size / seconds}


def matmul_flops_per_s(bf16: bool, n: int = 2048, repeats: int = 5) -> float:
    """The machine's measured matmul rate: ``2 n^3`` FLOPs per ``torch.mm`` of two ``n x n`` matrices."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def bare_loop(generator: torch.nn.Module, discriminator: torch.nn.Module, g_opt: torch.optim.Optimizer,
              d_opt: torch.optim.Optimizer, loader: DataLoader) -> list[float]:
    """The same training step written by hand (bf16 autocast, channels-last); returns a time stamp per iteration."""
    loss, fmt = AdversarialLoss("bce"), torch.channels_last
    generator.to(memory_format=fmt)
    discriminator.to(memory_format=fmt)
    generator.train()
    discriminator.train()
    stamps = []
    for batch in loader:
        reals = batch["image"][..., 0].float().contiguous(memory_format=fmt)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            fakes = generator(torch.randn(reals.shape[0], LATENT_DIM)).contiguous(memory_format=fmt)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            real_logits, fake_logits = discriminator(reals).float(), discriminator(fakes).float()
        d_loss = loss.discriminator_loss(real_logits.reshape(-1), fake_logits.reshape(-1))
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        discriminator.requires_grad_(False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fakes = generator(torch.randn(reals.shape[0], LATENT_DIM)).contiguous(memory_format=fmt)
            logits = discriminator(fakes).float()
        g_loss = loss.generator_loss(logits.reshape(-1))
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        discriminator.requires_grad_(True)
        stamps.append(time.perf_counter())
    return stamps


_SYNCING = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy", "cpu")


def count_host_syncs(image_size: int, batch_size: int, iterations: int, log_every: int) -> dict:
    """Host synchronisations per logging and per non-logging iteration of ``SliceGanTrainer`` with its handlers."""
    torch.manual_seed(0)
    generator, discriminator = build_networks(image_size=image_size, latent_dim=LATENT_DIM, num_classes=NUM_CLASSES)
    loader = random_slices(image_size, batch_size * iterations, batch_size)
    trainer = SliceGanTrainer(
        device="cpu", max_epochs=1, train_data_loader=loader, generator=generator, discriminator=discriminator,
        g_optimizer=torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        objective=WholeSliceObjective(
            latent_dim=LATENT_DIM, num_classes=NUM_CLASSES, regulariser=R1Regulariser(gamma=0.1, every=16),
            diffaugment=DiffAugment(("translation",)), mode_seeking_weight=0.3),
        amp=True, channels_last=True)
    count = [0]
    per_iteration: list[tuple[int, int]] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda engine: count.__setitem__(0, 0))
    trainer.attach_handlers([
        DivergenceGuard(check_every=log_every), GeneratorEMA(generator, ema_copy(generator)),
        StatsHandler(iteration_log=every_n(log_every), output_transform=from_engine(["loss"], first=True)),
    ])
    trainer.add_event_handler(Events.ITERATION_COMPLETED,
                              lambda engine: per_iteration.append((engine.state.iteration, count[0])))
    originals = {name: getattr(torch.Tensor, name) for name in _SYNCING}

    def counting(name: str):
        original = originals[name]

        def wrapper(self, *args, **kwargs):
            if "/torch/" not in sys._getframe(1).f_code.co_filename:
                count[0] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in _SYNCING:
        setattr(torch.Tensor, name, counting(name))
    try:
        trainer.run()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    logging = [c for i, c in per_iteration if i % log_every == 0]
    quiet = [c for i, c in per_iteration if i % log_every != 0]
    return {"iterations": iterations, "log_every": log_every,
            "per_non_logging_iteration": sum(quiet) / max(len(quiet), 1),
            "per_logging_iteration": sum(logging) / max(len(logging), 1)}


def compare(engine_name: str, image_size: int, batch_size: int, warmup: int, iterations: int) -> dict:
    """Train identical unconditional networks with ``monai.engines.GanTrainer``, ours or a bare loop; time, memory."""
    torch.manual_seed(0)
    generator, discriminator = build_networks(image_size=image_size, latent_dim=LATENT_DIM, num_classes=0)
    loader = random_slices(image_size, batch_size * (warmup + iterations), batch_size, num_classes=0)
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ours = engine_name != "GanTrainer"
    if engine_name == "bare loop":
        stamps = bare_loop(generator, discriminator, g_opt, d_opt, loader)
        seconds = (stamps[-1] - stamps[warmup - 1]) / iterations
        return {"engine": engine_name, "precision": "bf16", "memory_format": "channels_last",
                "s_per_iteration": seconds, "slices_per_s": batch_size / seconds,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if ours:
        trainer = SliceGanTrainer(
            device="cpu", max_epochs=1, train_data_loader=loader, generator=generator, discriminator=discriminator,
            g_optimizer=g_opt, d_optimizer=d_opt, objective=WholeSliceObjective(latent_dim=LATENT_DIM), amp=True,
            channels_last=True)
    else:
        # the losses MONAI's GAN tutorial writes for GanTrainer: D on detached fakes and on reals, G through D
        def d_loss(fakes: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
            real_logits, fake_logits = discriminator(reals), discriminator(fakes.detach())
            return bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))

        def g_loss(fakes: torch.Tensor) -> torch.Tensor:
            logits = discriminator(fakes)
            return bce(logits, torch.ones_like(logits))

        trainer = GanTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, g_network=generator,
            g_optimizer=g_opt, g_loss_function=g_loss, d_network=discriminator, d_optimizer=d_opt,
            d_loss_function=d_loss, latent_shape=LATENT_DIM, decollate=False,
            d_prepare_batch=lambda batch, device, non_blocking, **kwargs: prepare_slice_batch(batch, device)[0])
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: stamps.append(time.perf_counter()))
    trainer.run()
    seconds = (stamps[-1] - stamps[warmup - 1]) / iterations
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with FlopCounterMode(display=False) as counter:  # one more iteration, counted
        trainer._iteration(trainer, next(iter(loader)))
    flops = counter.get_total_flops()
    peak = matmul_flops_per_s(bf16=ours)
    return {"engine": engine_name, "precision": "bf16" if ours else "fp32",
            "memory_format": "channels_last" if ours else "contiguous", "s_per_iteration": seconds,
            "slices_per_s": batch_size / seconds, "peak_rss_mb": peak_mb, "gflop_per_iteration": flops / 1e9,
            "gflop_per_s": flops / seconds / 1e9, "matmul_gflop_per_s": peak / 1e9,
            "share_of_matmul_flop_per_s": flops / seconds / peak}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_case(image_size: int, channels_last: bool, amp: bool, processes: int, threads: int, args,
             engine: str = "") -> dict:
    """Measure one configuration in fresh processes; returns the measurement of rank 0."""
    worker = [str(Path(__file__).resolve()), "--measure", "--image_size", str(image_size),
              "--channels_last", str(int(channels_last)), "--amp", str(int(amp)), "--batch_size", str(args.batch_size),
              "--warmup", str(args.warmup), "--iterations", str(args.iterations), "--engine", engine]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    if processes == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               f"--master_port={_free_port()}", *worker]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr[-3000:]}")
    line = [x for x in result.stdout.splitlines() if x.startswith("{")][-1]
    return json.loads(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batch_size", type=int, default=32, help="slices per process and iteration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--image_size", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--channels_last", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--amp", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="", help=argparse.SUPPRESS)
    parser.add_argument("--parts", nargs="+", choices=("grid", "comparison"), default=["grid", "comparison"])
    parser.add_argument("--comparison_size", type=int, default=128)
    parser.add_argument("--comparison_iterations", type=int, default=30,
                        help="timed iterations of each comparison row")
    parser.add_argument("--log_every", type=int, default=20, help="logging interval of the host-sync count")
    args = parser.parse_args()
    if args.measure:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        if args.engine == "host syncs":
            result = count_host_syncs(args.image_size, args.batch_size, args.iterations, args.log_every)
        elif args.engine:
            result = compare(args.engine, args.image_size, args.batch_size, args.warmup, args.iterations)
        else:
            result = measure(args.image_size, bool(args.channels_last), bool(args.amp), args.batch_size, args.warmup,
                             args.iterations)
        if result:
            print(json.dumps(result), flush=True)
        return

    cores = os.cpu_count() or 1
    previous = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else {}
    record = {
        "benchmark": "train_throughput",
        "machine": {"cpu_count": cores, "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "torch": torch.__version__},
        "settings": {"batch_size_per_process": args.batch_size, "warmup": args.warmup, "iterations": args.iterations,
                     "latent_dim": LATENT_DIM, "num_classes": NUM_CLASSES, "r1_every": 16,
                     "diffaugment": ["translation", "cutout"], "backend": "gloo", "data": "random slices in RAM"},
        "rows": previous.get("rows", []),
        "gan_trainer_comparison": previous.get("gan_trainer_comparison", {}),
    }
    if "comparison" in args.parts:
        record["gan_trainer_comparison"] = run_comparison(args, cores)
    if "grid" in args.parts:
        record["rows"] = run_grid(args, cores)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


def run_comparison(args, cores: int) -> dict:
    """``monai.engines.GanTrainer``, ours and a bare loop, one after the other in fresh processes using every core."""
    timed = argparse.Namespace(**{**vars(args), "iterations": args.comparison_iterations})
    rows = [run_case(args.comparison_size, False, False, 1, cores, timed, engine=name)
            for name in ("GanTrainer", "SliceGanTrainer", "bare loop")]
    ratio = rows[1]["slices_per_s"] / rows[0]["slices_per_s"]
    overhead = rows[1]["slices_per_s"] / rows[2]["slices_per_s"]
    syncs = run_case(64, True, True, 1, cores, argparse.Namespace(**{**vars(args), "iterations": 4 * args.log_every}),
                     engine="host syncs")
    print(f"\n{args.comparison_size}x{args.comparison_size}, batch {args.batch_size}, {cores} threads, identical "
          "unconditional networks and BCE losses")
    header = f"{'engine':<16} {'prec':<5} {'format':<14} {'slices/s':>9} {'peak MB':>8} {'GFLOP/s':>8} {'of matmul':>9}"
    print(header)
    print("-" * len(header))
    for r in rows:
        flops = (f"{r['gflop_per_s']:>8.1f} {100 * r['share_of_matmul_flop_per_s']:>8.0f}%" if "gflop_per_s" in r
                 else f"{'':>8} {'':>9}")
        print(f"{r['engine']:<16} {r['precision']:<5} {r['memory_format']:<14} {r['slices_per_s']:>9.1f} "
              f"{r['peak_rss_mb']:>8.0f} {flops}")
    print(f"SliceGanTrainer / GanTrainer: {ratio:.2f}x; SliceGanTrainer / bare loop: {overhead:.3f}")
    print(f"host synchronisations per iteration (log every {args.log_every}): "
          f"{syncs['per_non_logging_iteration']:g} when not logging, {syncs['per_logging_iteration']:g} when logging\n")
    return {"image_size": args.comparison_size, "batch_size": args.batch_size, "threads": cores,
            "iterations": args.comparison_iterations, "rows": rows, "speedup": ratio,
            "share_of_bare_loop": overhead, "host_syncs": syncs}


def run_grid(args, cores: int) -> list[dict]:
    """Our trainer by image size, memory format, precision and process layout."""
    # (processes, threads per process): one process on one core, one on all cores, one process per core
    layouts = [(1, 1), (1, cores), (cores, 1)] if cores > 1 else [(1, 1)]
    rows = []
    for size in args.image_sizes:
        for channels_last in (False, True):
            for amp in (False, True):
                for processes, threads in layouts:
                    r = run_case(size, channels_last, amp, processes, threads, args)
                    layout = "channels_last" if channels_last else "contiguous"
                    rows.append({"image_size": size, "memory_format": layout, "precision": "bf16" if amp else "fp32",
                                 "processes": processes, "threads_per_process": threads, **r})
                    print(f"  measured {rows[-1]}", file=sys.stderr, flush=True)
    for row in rows:
        same = [r for r in rows if all(r[k] == row[k] for k in ("image_size", "memory_format", "precision"))]
        single = next(r for r in same if r["processes"] == 1 and r["threads_per_process"] == 1)
        whole = next((r for r in same if r["processes"] == 1 and r["threads_per_process"] == cores), single)
        if row["processes"] > 1:
            row["efficiency_vs_ideal"] = row["slices_per_s"] / (row["processes"] * single["slices_per_s"])
            row["speedup_vs_one_process_all_cores"] = row["slices_per_s"] / whole["slices_per_s"]

    header = f"{'size':>4} {'format':<14} {'prec':<5} {'procs x thr':>11} {'slices/s':>9} {'s/iter':>7}  scaling"
    print(header)
    print("-" * len(header))
    for r in rows:
        scaling = ""
        if "efficiency_vs_ideal" in r:
            scaling = (f"{100 * r['efficiency_vs_ideal']:.0f}% of ideal, {r['speedup_vs_one_process_all_cores']:.2f}x "
                       f"one {cores}-thread process")
        print(f"{r['image_size']:>4} {r['memory_format']:<14} {r['precision']:<5} "
              f"{r['processes']:>5} x {r['threads_per_process']:<3} {r['slices_per_s']:>9.1f} "
              f"{r['s_per_iteration']:>7.3f}  {scaling}")
    return rows


if __name__ == "__main__":
    main()

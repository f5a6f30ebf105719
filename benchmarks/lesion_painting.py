"""Benchmark the lesion painter: training crops/s, painted slices written/s (with mask and sidecar), evaluation time.

Three measurements on the embedded demo cohort, in one run:

1. **Training**: ``SliceGanTrainer`` with the painter's objective, networks and batch (the defaults of
   ``bundles/brain_tumour_painter/configs/train.json``: 80 px crops, batch 16) on the cohort's lesion crops, in
   fp32 and in bf16 autocast; crops per second and iterations per second after a warm-up.
2. **Synthesis**: ``LesionPainterSynthesiser`` paints ``--samples`` healthy slices (``gan`` and ``copy_paste``) and
   writes each with its mask and sidecar, uncompressed and gzipped; slices per second and where the time goes
   (placement, painting, reading the bases, compositing and writing).
3. **Evaluation**: ``LesionPainterEvaluator`` with its defaults (200 placements, the held-out demo cohort), seconds.

The painter is the checkpoint given with ``--ckpt_path`` (e.g. the default training run's folder) or, without one,
an untrained default painter (speed does not depend on the weights). Prints a table and writes
``benchmarks/results/lesion_painting.json``. Run: ``python benchmarks/lesion_painting.py [--ckpt_path runs/...]``;
``--synthesis_only`` measures the synthesis alone (about a minute).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from torch.utils.data import DataLoader

from monai_mri_gan.data import LesionCrops, SliceCohort, resolve_datalist
from monai_mri_gan.diffaugment import DiffAugment
from monai_mri_gan.engines import LesionPainterEvaluator, SliceGanTrainer, prepare_lesion_batch
from monai_mri_gan.networks import LesionPainterDiscriminator, LesionPainterGenerator
from monai_mri_gan.objectives import LesionPainterObjective
from monai_mri_gan.runs import RunRecord, generator_from_checkpoint, load_checkpoint, run_record, save_checkpoint
from monai_mri_gan.synthesis import LesionPainterSynthesiser

RESULTS = Path(__file__).resolve().parent / "results" / "lesion_painting.json"
SLICING = {"axis": 2, "spacing": None, "norm_mode": "percentile", "min_foreground": 0.05, "tumour_min_voxels": 20,
           "tumour_labels": None, "drop_ambiguous": True}
PAINTING = {"label_values": [1, 2, 4], "crop_size": 80, "dilate_px": 2, "band_px": 4}


def untrained_checkpoint(folder: Path) -> Path:
    """A default painter's checkpoint with its run record (weights untrained)."""
    torch.manual_seed(0)
    generator, discriminator = LesionPainterGenerator(), LesionPainterDiscriminator()
    record = RunRecord("lesion_painter", {"generator": generator, "discriminator": discriminator}, slicing=SLICING,
                       class_names=["no_tumour", "tumour"], painting=PAINTING)
    path = folder / "checkpoint_epoch0001.pt"
    save_checkpoint({"config": record.state_dict(), "generator": generator.state_dict(),
                     "ema_generator": generator.state_dict()}, path)
    return path


def training(crops: LesionCrops, amp: bool, warmup: int, iterations: int) -> dict:
    """Crops and iterations per second of the painter's training step."""
    torch.manual_seed(0)
    generator, discriminator = LesionPainterGenerator(), LesionPainterDiscriminator()
    objective = LesionPainterObjective(PAINTING["label_values"], mode_seeking_weight=1.0,
                                       diffaugment=DiffAugment(("translation",)))
    loader = DataLoader(crops, batch_size=16, shuffle=True, drop_last=True)
    trainer = SliceGanTrainer(
        device="cpu", max_epochs=1, train_data_loader=loader, generator=generator, discriminator=discriminator,
        g_optimizer=torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999)), objective=objective,
        prepare_batch=prepare_lesion_batch, amp=amp, epoch_length=warmup + iterations)
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: stamps.append(time.perf_counter()))
    trainer.run()
    seconds = (stamps[-1] - stamps[warmup - 1]) / iterations
    return {"precision": "bf16" if amp else "fp32", "iterations_per_s": 1 / seconds, "crops_per_s": 16 / seconds}


def synthesis(ckpt: Path, samples: int, method: str, compress: bool) -> dict:
    """Painted slices written per second, with mask and sidecar, and the time of each stage."""
    with tempfile.TemporaryDirectory() as out:
        synthesiser = LesionPainterSynthesiser(ckpt, Path(out) / "painted", num_samples=samples, method=method,
                                               compress=compress, device="cpu")
        _ = synthesiser.bank, synthesiser.healthy_positions  # cohorts and bank, built once per run
        start = time.perf_counter()
        synthesiser.run()
        seconds = time.perf_counter() - start
    return {"method": method, "compress": compress, "samples": samples, "seconds": seconds,
            "slices_per_s": samples / seconds, **{k: v for k, v in synthesiser.timings.items()}}


def evaluation(ckpt: Path) -> dict:
    """Seconds of a default painter evaluation (cohorts, crops, placements, segmenter, every metric)."""
    checkpoint = load_checkpoint(ckpt)
    start = time.perf_counter()
    evaluator = LesionPainterEvaluator(device="cpu", generator=generator_from_checkpoint(checkpoint),
                                       record=run_record(checkpoint))
    evaluator.run()
    return {"seconds": time.perf_counter() - start, "metrics": dict(evaluator.state.metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", default=None, help="a painter checkpoint or run folder (default: untrained)")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--synthesis_only", action="store_true", help="skip training and evaluation (a minute)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    crops, train_rows, evaluated = None, [], None
    if not args.synthesis_only:
        cohort = SliceCohort(resolve_datalist(), image_size=None, slicing=SLICING)
        crops = LesionCrops(cohort, crop_size=PAINTING["crop_size"])
        train_rows = [training(crops, amp, args.warmup, args.iterations) for amp in (False, True)]
    with tempfile.TemporaryDirectory() as folder:
        ckpt = Path(args.ckpt_path) if args.ckpt_path else untrained_checkpoint(Path(folder))
        synth_rows = [synthesis(ckpt, args.samples, method, compress)
                      for method in ("gan", "copy_paste") for compress in (False, True)]
        if not args.synthesis_only:
            evaluated = evaluation(ckpt)

    if crops is not None:
        print(f"\ntraining: {len(crops)} lesion crops of {PAINTING['crop_size']} px, batch 16, "
              f"{torch.get_num_threads()} threads")
        for r in train_rows:
            print(f"  {r['precision']:<5} {r['iterations_per_s']:6.2f} it/s  {r['crops_per_s']:7.1f} crops/s")
    print(f"\nsynthesis: {args.samples} painted slices, each with its mask and sidecar; seconds per stage (reading "
          "the bases and writing run in a thread beside placement, so stages overlap)")
    print(f"  {'method':<11} {'output':<8} {'slices/s':>9} {'total s':>8} {'read s':>7} {'place s':>8} {'paint s':>8} "
          f"{'write s':>8}")
    for r in synth_rows:
        stages = " ".join(f"{r[k]:>{w}.2f}" for k, w in (("load_s", 7), ("place_s", 8), ("paint_s", 8), ("write_s", 8)))
        print(f"  {r['method']:<11} {'.nii.gz' if r['compress'] else '.nii':<8} {r['slices_per_s']:>9.1f} "
              f"{r['seconds']:>8.2f} {stages}")
    if evaluated is not None:
        print(f"\nevaluation (defaults): {evaluated['seconds']:.0f} s")
    record = {"benchmark": "lesion_painting", "checkpoint": "given" if args.ckpt_path else "untrained default",
              "machine": {"processor": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                          "torch": torch.__version__},
              "synthesis": synth_rows}
    if crops is not None:
        record.update({"lesion_crops": len(crops), "training": train_rows,
                       "evaluation_seconds": evaluated["seconds"]})
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

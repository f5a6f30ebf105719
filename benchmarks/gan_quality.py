"""Whole-slice GAN quality per CPU-minute: each variant trained for the same wall time, then evaluated.

Each variant is a set of overrides of ``bundles/brain_mri_gan/configs/train.json`` (the switches users have). It is
trained on the demo cohort (or ``--dataset_dir``/``--datalist``) through ``monai.bundle.ConfigWorkflow`` for
``--minutes`` of wall time (Ignite's ``TimeLimit`` stops it; the in-training evaluation is off for all, so that the
budget goes to training), and its last checkpoint is evaluated by ``configs/evaluate.json`` with the bundle's
defaults (1,000 slices in the data's class proportions, radiomics features, real-vs-real floors; the untrained
baseline skipped). Prints one table (KID, FID, precision, recall, tumour class fidelity, each with its floor; the
epochs and iterations each variant reached) and writes ``benchmarks/results/gan_quality.json``.

Usage: ``python benchmarks/gan_quality.py`` (every variant, 7 minutes each, about 9 minutes per variant with its
evaluation), ``--variants default ada --minutes 4`` for fewer.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events
from ignite.handlers import TimeLimit
from monai.bundle import ConfigWorkflow

from monai_mri_gan.metrics import write_json_atomic

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_mri_gan"
RESULTS = Path(__file__).resolve().parent / "results" / "gan_quality.json"
METRICS = ("kid_mean", "fid", "precision", "recall", "class_fidelity_tumour")

VARIANTS: dict[str, dict] = {
    "default": {},
    "ada": {"diffaugment": ["translation", "cutout", "brightness", "contrast"], "ada_target": 0.6},
    "ada_translation": {"ada_target": 0.6},
    "ttur": {"g_learning_rate": 0.0001, "d_learning_rate": 0.0004},
    "batch_64": {"batch_size": 64, "learning_rate": 0.0003},
    "sle": {"g_skip_excitation": True},
}
"""The variants: bundle overrides. ``ada``: StyleGAN2-ADA's adaptive probability over all four DiffAugment
operations; ``ada_translation``: the default's translation, adaptive; ``ttur``: a slower generator and a faster
discriminator (Heusel et al. 2017); ``batch_64``: twice the batch, the learning rate scaled by its square root;
``sle``: FastGAN's skip-layer excitation in the generator (Liu et al. 2021)."""


def train_for(overrides: dict, minutes: float, output_dir: Path, data: dict) -> dict:
    """Train the bundle with ``overrides`` for ``minutes`` of wall time; return what it reached."""
    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "train.json"), workflow_type="train",
                              logging_file=False, bundle_root=str(BUNDLE), output_dir=str(output_dir),
                              max_epochs=100_000, evaluate_every=0, resume=False, log_every=10**9, **data,
                              **overrides)
    workflow.initialize()
    trainer = workflow.parser.get_parsed_content("train#trainer")
    start = time.perf_counter()
    trainer.add_event_handler(Events.ITERATION_COMPLETED, TimeLimit(limit_sec=int(minutes * 60)))
    workflow.run()
    seconds = time.perf_counter() - start
    reached = {"epochs": int(trainer.state.epoch), "iterations": int(trainer.state.iteration),
               "train_seconds": seconds, "augment_p": trainer.state.metrics.get("augment_p")}
    workflow.finalize()
    return reached


def evaluate(output_dir: Path, data: dict, num_samples: int) -> dict:
    """The bundle's evaluation of the run's last checkpoint (no untrained baseline)."""
    evaluation_dir = output_dir / "final_evaluation"
    workflow = ConfigWorkflow(config_file=str(BUNDLE / "configs" / "evaluate.json"), workflow_type="eval",
                              logging_file=False, bundle_root=str(BUNDLE), ckpt_path=str(output_dir),
                              output_dir=str(evaluation_dir), num_samples=num_samples, **data,
                              **{"evaluate#handlers#1#baselines": {}})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return json.loads((evaluation_dir / "metrics.json").read_text())


def _cells(values: dict) -> str:
    return " ".join(f"{'-':>10}" if values.get(k) is None else f"{values[k]:>10.3f}" for k in METRICS)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall time of every variant")
    parser.add_argument("--num_samples", type=int, default=1000, help="generated slices each evaluation scores")
    parser.add_argument("--dataset_dir", default=None)
    parser.add_argument("--datalist", default=None)
    parser.add_argument("--work_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    data = {key: value for key, value in (("dataset_dir", args.dataset_dir), ("datalist", args.datalist)) if value}
    rows = []
    with tempfile.TemporaryDirectory(prefix="gan-quality-") as scratch:
        work_dir = Path(args.work_dir or scratch)
        for name in args.variants:
            output_dir = work_dir / name
            reached = train_for(VARIANTS[name], args.minutes, output_dir, data)
            report = evaluate(output_dir, data, args.num_samples)
            rows.append({"variant": name, "overrides": VARIANTS[name], **reached,
                         "generated": {k: report["generated"].get(k) for k in METRICS},
                         "real_vs_real": {k: report["real_vs_real"].get(k) for k in METRICS}})
            print(f"{name}: {reached['epochs']} epochs, {_cells(rows[-1]['generated'])}", flush=True)

    print(f"\n{'variant':>16} " + " ".join(f"{k:>10}" for k in METRICS) + f" {'epochs':>7} {'iters':>6}")
    for row in rows:
        print(f"{row['variant']:>16} {_cells(row['generated'])} {row['epochs']:>7} {row['iterations']:>6}")
    print(f"{'real-vs-real':>16} {_cells(rows[0]['real_vs_real'])}")
    record = {"minutes": args.minutes, "num_samples": args.num_samples, "data": "user data" if data else "demo cohort",
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "runs": rows}
    write_json_atomic(record, args.output)
    print(f"wrote {args.output}")
    return record


if __name__ == "__main__":
    main()

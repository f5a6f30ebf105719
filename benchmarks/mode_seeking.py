"""Mode collapse against the mode-seeking weight: the bundle's training and evaluation, run as a user runs them.

For each ``--weights`` value and ``--seeds`` seed, ``configs/train.json`` runs with that ``mode_seeking_weight``
(everything else at its defaults, or ``--max_epochs``), then ``configs/evaluate.json`` on the run's checkpoint
(its defaults: 1,000 slices in the data's class proportions, radiomics features; the untrained baseline is
skipped). The table shows FID, KID, precision, recall and MS-SSIM of the EMA generator, with the real-vs-real
floor, and the training time. Writes ``benchmarks/results/mode_seeking.json``.
Run: ``python benchmarks/mode_seeking.py`` (about 8 minutes per run on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from monai.bundle import run

from monai_mri_gan.metrics import write_json_atomic

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "brain_mri_gan"
METRICS = ("fid", "kid_mean", "precision", "recall", "ms_ssim", "class_fidelity_tumour")


def train_and_evaluate(weight: float, seed: int, max_epochs: int | None, work_dir: Path) -> dict:
    """One training run with ``mode_seeking_weight=weight`` and its evaluation; returns the evaluation report."""
    output_dir = work_dir / f"ms{weight:g}_seed{seed}"
    overrides = {"output_dir": str(output_dir), "seed": seed, "mode_seeking_weight": weight}
    if max_epochs is not None:
        overrides["max_epochs"] = max_epochs
    start = time.perf_counter()
    run("training", config_file=str(BUNDLE / "configs" / "train.json"), bundle_root=str(BUNDLE),
        logging_file=str(BUNDLE / "configs" / "logging.conf"), **overrides)
    seconds = time.perf_counter() - start
    evaluation_dir = output_dir / "final_evaluation"
    run("evaluating", config_file=str(BUNDLE / "configs" / "evaluate.json"), bundle_root=str(BUNDLE),
        logging_file=str(BUNDLE / "configs" / "logging.conf"), ckpt_path=str(output_dir),
        output_dir=str(evaluation_dir), **{"evaluate#handlers#1#baselines": {}})
    report = json.loads((evaluation_dir / "metrics.json").read_text())
    report["train_seconds"] = seconds
    return report


def _cells(values: dict) -> str:
    return " ".join(f"{'-':>10}" if values[k] is None else f"{values[k]:>10.3f}" for k in METRICS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.1, 0.3, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max_epochs", type=int, default=None, help="default: the bundle's")
    parser.add_argument("--work_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "mode_seeking.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        work_dir = Path(args.work_dir or scratch)
        for weight in args.weights:
            for seed in args.seeds:
                report = train_and_evaluate(weight, seed, args.max_epochs, work_dir)
                rows.append({"mode_seeking_weight": weight, "seed": seed, "train_seconds": report["train_seconds"],
                             "generated": {k: report["generated"].get(k) for k in METRICS},
                             "real_vs_real": {k: report["real_vs_real"].get(k) for k in METRICS}})

    print(f"{'weight':>6} {'seed':>4} " + " ".join(f"{k:>10}" for k in METRICS) + f" {'train s':>8}")
    for row in rows:
        print(f"{row['mode_seeking_weight']:>6g} {row['seed']:>4} {_cells(row['generated'])} "
              f"{row['train_seconds']:>8.0f}")
    print(f"{'floor':>11} {_cells(rows[0]['real_vs_real'])}")
    write_json_atomic({"machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                       "max_epochs": args.max_epochs, "runs": rows}, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Downstream study: does GAN augmentation help an imbalanced tumour / no-tumour slice classifier?

Splits a cohort (a 96-subject demo cohort by default) by subject into training, validation and test subjects,
trains one conditional GAN per condition (share of training subjects x tumour share) on that condition's training
slices only, and trains a slice classifier under each regime of :data:`monai_mri_gan.study.STUDY_REGIMES` with the
same budget and several seeds (:func:`monai_mri_gan.study.run_study`). Prints a table and writes the JSON record, a
Markdown table and two PNG figures (metrics, and the GANs' samples).

Usage: ``python benchmarks/augmentation_study.py`` (about 20 minutes on one core of a 2-core machine; ``--quick``
for a 2-minute smoke run). Outputs: ``benchmarks/results/augmentation_study.json`` and ``.md``,
``docs/images/study_results.png`` and ``docs/images/study_gan_samples.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

from monai_mri_gan.study import STUDY_REGIMES, run_study, study_datalist, write_report

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = ROOT / "bundles" / "brain_mri_gan" / "configs" / "train.json"
RESULTS = ROOT / "benchmarks" / "results" / "augmentation_study.json"
FIGURE = ROOT / "docs" / "images" / "study_results.png"
SAMPLES = ROOT / "docs" / "images" / "study_gan_samples.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", help="MONAI/Decathlon datalist JSON (default: the embedded demo cohort)")
    parser.add_argument("--dataset_dir", help="folder of volumes and masks, or the base of the datalist's paths")
    parser.add_argument("--demo_subjects", type=int, default=96,
                        help="size of the demo cohort used when no data is given (32 is too few tumour subjects)")
    parser.add_argument("--output", default=str(RESULTS), help="the JSON record; the .md table goes beside it")
    parser.add_argument("--figure", default=str(FIGURE), help="the PNG figure of the metrics")
    parser.add_argument("--samples_figure", default=str(SAMPLES), help="the PNG of every GAN's final samples")
    parser.add_argument("--work_dir", help="GAN runs (default: a temporary folder, removed afterwards)")
    parser.add_argument("--train_config", default=str(TRAIN_CONFIG),
                        help="the training bundle's configs/train.json, which trains each condition's GAN")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subject_fractions", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--tumour_shares", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    parser.add_argument("--regimes", nargs="+", default=[r.name for r in STUDY_REGIMES],
                        choices=[r.name for r in STUDY_REGIMES])
    parser.add_argument("--classifier_steps", type=int, default=120)
    parser.add_argument("--gan_iterations", type=int, default=400)
    parser.add_argument("--gan_channels", type=int, default=16, help="base channels of the GAN's networks")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--split_seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 is fastest on a shared machine; 0 keeps torch's default)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed, 1 subject fraction, 1 tumour share, short budgets")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.subject_fractions, args.tumour_shares = [0], [1.0], [0.05]
        args.classifier_steps, args.gan_iterations = 48, 40
    return args


def main(argv: list[str] | None = None) -> dict:
    """Run the study and return the record written to ``--output``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ignite", "monai.bundle", "monai_mri_gan.handlers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    datalist = study_datalist(args.dataset_dir, args.datalist, demo_subjects=args.demo_subjects)
    regimes = [r for r in STUDY_REGIMES if r.name in args.regimes]
    with tempfile.TemporaryDirectory(prefix="augmentation-study-") as tmp:
        work_dir = Path(args.work_dir or tmp)
        record = run_study(
            datalist, work_dir, args.train_config, seeds=args.seeds, subject_fractions=args.subject_fractions,
            tumour_shares=args.tumour_shares, regimes=regimes, split_seed=args.split_seed,
            image_size=args.image_size, classifier_steps=args.classifier_steps, gan_iterations=args.gan_iterations,
            gan_channels=args.gan_channels,
        )
        record["timings"]["wall_seconds"] = round(time.perf_counter() - started, 1)
        record["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                             "torch": torch.__version__, "threads": torch.get_num_threads()}
        demo = args.datalist is None and args.dataset_dir is None
        record["data"] = f"demo cohort, {args.demo_subjects} subjects" if demo else "user data"
        table = write_report(record, args.output, args.figure, args.samples_figure, work_dir)
    print(table)
    print(f"split (slices and subjects): {json.dumps({k: v for k, v in record['split'].items() if k != 'subjects'})}")
    print(f"wall time {record['timings']['wall_seconds']:.0f} s; wrote {args.output}, "
          f"{Path(args.output).with_suffix('.md')}, {args.figure}, {args.samples_figure}")
    return record


if __name__ == "__main__":
    main()

"""A study that can tell: does synthetic data help a tumour detector when tumour patients are scarce?

Repeats subject-level splits of a cohort (a 96-subject demo cohort by default); at each scarcity level (every
healthy training subject and k tumour subjects) trains the lesion painter on those subjects only, writes the
augmented datalists of painted and copy-pasted lesions, and trains a tumour classifier and a segmenter under every
regime at the same budget with validation-based early stopping (:func:`monai_mri_gan.study.run_study`). Prints the
tables and writes ``benchmarks/results/augmentation_study.json`` (summary, paired differences, splits, every run),
a Markdown table and a PNG figure beside it.

Usage: ``python benchmarks/augmentation_study.py`` (the default run; its measured time is in docs/study.md),
``--quick`` for a smoke run of a few minutes, ``--regimes ...`` and ``--tumour_subjects 1 2 4 all`` for the full
grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from monai_mri_gan import __version__
from monai_mri_gan.study import (
    DEFAULT_REGIMES,
    DEFAULT_SEGMENTATION_REGIMES,
    STUDY_REGIMES,
    STUDY_SLICING,
    StudyJournal,
    StudySettings,
    markdown_tables,
    paired_differences,
    run_study,
    study_datalist,
    summarise,
    write_results,
)

ROOT = Path(__file__).resolve().parents[1]
PAINTER_CONFIG = ROOT / "bundles" / "brain_tumour_painter" / "configs" / "train.json"
WHOLE_SLICE_CONFIG = ROOT / "bundles" / "brain_mri_gan" / "configs" / "train.json"
RESULTS = ROOT / "benchmarks" / "results" / "augmentation_study.json"


def _level(value: str) -> int | None:
    if value == "all":
        return None
    k = int(value)
    if k < 1:
        raise argparse.ArgumentTypeError(f"tumour_subjects must be a positive number or 'all', got {value!r}.")
    return k


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", help="MONAI/Decathlon datalist JSON with subjects and masks (default: demo)")
    parser.add_argument("--dataset_dir", help="folder of volumes and masks, or the base of the datalist's paths")
    parser.add_argument("--demo_seed", type=int, default=0, help="seed of the demo cohort used when no data is given")
    parser.add_argument("--demo_subjects", type=int, default=96, help="size of that demo cohort")
    parser.add_argument("--split_seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="one subject split per seed (the paired comparisons are over these)")
    parser.add_argument("--tumour_subjects", type=_level, nargs="+", default=[2, None],
                        help="scarcity levels k: numbers of tumour training subjects, or 'all'")
    parser.add_argument("--regimes", nargs="+", default=list(DEFAULT_REGIMES), choices=[r.name for r in STUDY_REGIMES])
    parser.add_argument("--segmentation_regimes", nargs="+", default=None, choices=[r.name for r in STUDY_REGIMES],
                        help="the regimes that also train a segmenter (default: those of "
                        f"{' '.join(DEFAULT_SEGMENTATION_REGIMES)} that run)")
    parser.add_argument("--tasks", nargs="+", default=["classification", "segmentation"],
                        choices=["classification", "segmentation"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="model seeds, nested in every split")
    parser.add_argument("--tumour_labels", nargs="+", default=[str(v) for v in STUDY_SLICING["tumour_labels"]],
                        help="mask labels that make a tumour slice (default: the tumour core), or 'any'")
    parser.add_argument("--image_size", type=int, default=StudySettings.image_size)
    parser.add_argument("--classifier_steps", type=int, default=StudySettings.classifier_steps)
    parser.add_argument("--segmenter_steps", type=int, default=StudySettings.segmenter_steps)
    parser.add_argument("--painter_iterations", type=int, default=StudySettings.painter_iterations)
    parser.add_argument("--output", default=str(RESULTS), help="the JSON record; the .md and .png go beside it")
    parser.add_argument("--work_dir", help="generator runs and augmented sets (default: a temporary folder)")
    parser.add_argument("--painter_config", default=str(PAINTER_CONFIG))
    parser.add_argument("--whole_slice_config", default=str(WHOLE_SLICE_CONFIG))
    parser.add_argument("--threads", type=int, default=0,
                        help="torch intra-op threads in all (shared among the workers); 0 keeps torch's default")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes that run conditions side by side (the record does not depend on it)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted study journalled beside --output (same data, settings, code)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 splits of a 24-subject demo cohort, k = 2, four regimes, short budgets")
    args = parser.parse_args(argv)
    if args.quick:
        args.split_seeds, args.tumour_subjects, args.demo_subjects = args.split_seeds[:2], [2], 24
        args.regimes = ["class_weighted", "oversampling", "copy_paste", "painted"]
        args.classifier_steps = args.segmenter_steps = 20
        args.painter_iterations, args.image_size = 10, 32
    return args


def _sha256(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None


def _code_revision() -> str:
    """The commit this script runs from, with a digest of any uncommitted change to the code or the bundles."""
    def git(*command: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), *command], capture_output=True, text=True,
                              check=True).stdout
    try:
        head = git("rev-parse", "HEAD").strip()
        changes = git("diff", "HEAD", "--", "monai_mri_gan", "bundles", "benchmarks/augmentation_study.py")
    except (OSError, subprocess.CalledProcessError):
        return f"monai_mri_gan {__version__} (not a git checkout)"
    return head + (f" + uncommitted changes {hashlib.sha256(changes.encode()).hexdigest()[:16]}" if changes else "")


def fingerprint(args: argparse.Namespace, settings: StudySettings, slicing: dict, segmenting: list[str]) -> dict:
    """Whatever changes a condition's result: a journal resumes only a study with the same one."""
    data = ({"demo_seed": args.demo_seed, "demo_subjects": args.demo_subjects}
            if args.datalist is None and args.dataset_dir is None else
            {"datalist": args.datalist and str(Path(args.datalist).resolve()),
             "datalist_sha256": _sha256(args.datalist),
             "dataset_dir": args.dataset_dir and str(Path(args.dataset_dir).resolve())})
    return {"data": data, "settings": dataclasses.asdict(settings), "slicing": slicing, "regimes": args.regimes,
            "segmentation_regimes": segmenting, "tasks": args.tasks,
            "painter_config": _sha256(args.painter_config),
            "whole_slice_config": _sha256(args.whole_slice_config) if "whole_slice_gan" in args.regimes else None,
            "code": _code_revision()}


def main(argv: list[str] | None = None) -> dict:
    """Run the study and return the record written to ``--output``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ignite", "monai.bundle", "monai_mri_gan.handlers", "monai_mri_gan.synthesis",
                  "monai_mri_gan.engines"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)  # once per DICOM series read
    log = logging.getLogger("augmentation_study")
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    datalist = study_datalist(args.dataset_dir, args.datalist, demo_subjects=args.demo_subjects,
                              demo_seed=args.demo_seed)
    settings = StudySettings(image_size=args.image_size, classifier_steps=args.classifier_steps,
                             segmenter_steps=args.segmenter_steps, painter_iterations=args.painter_iterations,
                             seeds=tuple(args.seeds))

    segmenting = args.segmentation_regimes or [r for r in DEFAULT_SEGMENTATION_REGIMES if r in args.regimes]
    labels = None if args.tumour_labels == ["any"] else [int(v) for v in args.tumour_labels]
    slicing = {**STUDY_SLICING, "tumour_labels": labels}
    # every finished condition at once on disk: an interrupted study keeps what it did, and --resume goes on
    journal = StudyJournal(Path(args.output).with_suffix(".journal.jsonl"),
                           fingerprint(args, settings, slicing, segmenting), resume=args.resume)
    if journal.conditions:
        log.info("resuming: %d condition(s) finished earlier are taken from %s", len(journal.conditions),
                 journal.path)

    def progress(run: dict) -> None:
        shown = {k: round(v, 3) for k, v in run["metrics"].items() if k in (
            "auroc", "sensitivity_at_90_specificity", "dice", "false_positive_rate")}
        log.info("split %s, k %s, %s %s: %s (%.0f s)", run["split"], run["tumour_subjects"], run["regime"],
                 run["task"], shown, run["seconds"])

    with tempfile.TemporaryDirectory(prefix="augmentation-study-") as tmp:
        record = run_study(datalist, Path(args.work_dir or tmp), args.painter_config, split_seeds=args.split_seeds,
                           tumour_subjects=args.tumour_subjects, regimes=args.regimes, settings=settings,
                           tasks=args.tasks, whole_slice_config=args.whole_slice_config, slicing=slicing,
                           on_run=progress, workers=args.workers, segmentation_regimes=segmenting,
                           completed=journal.completed, on_condition=journal.add)
    demo = args.datalist is None and args.dataset_dir is None
    record["data"] = (f"demo cohort, {args.demo_subjects} subjects, seed {args.demo_seed}" if demo else "user data")
    record["quick"] = bool(args.quick)
    record["invocations"] = journal.timeline(time.perf_counter() - started)
    record["wall_seconds"] = round(sum(i["counted_seconds"] for i in record["invocations"]), 1)
    record["machine"] = {"platform": platform.platform(), "python": platform.python_version(),
                         "torch": torch.__version__, "threads": torch.get_num_threads()}
    record["summary"], record["paired"] = summarise(record["runs"]), paired_differences(record["runs"])
    paths = write_results(record, args.output)
    journal.remove()
    print(markdown_tables(record["summary"], record["paired"]))
    print(f"wall time {record['wall_seconds']:.0f} s; wrote {paths['json']}, {paths['markdown']}, {paths['figure']}")
    return record


if __name__ == "__main__":
    main()

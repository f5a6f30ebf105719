"""Slices per second of the data pipeline on the demo cohort: plain MONAI baseline, cold, cached.

Prints a table and writes ``benchmarks/results/data_pipeline.json``. Run: ``python benchmarks/data_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from monai.data import Dataset
from monai.transforms import Compose
from torch.utils.data import DataLoader

from monai_mri_gan.data import SliceCohort, demo_cohort, load_datalist, slice_transforms


def _timed(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def baseline_epoch(datalist: list[dict], image_size: int) -> int:
    """One epoch of plain MONAI: ``LoadImaged`` + the same slicing, no caching; returns the slice count."""
    dataset = Dataset(datalist, Compose(slice_transforms(image_size=image_size)))
    return sum(len(dataset[i]) for i in range(len(dataset)))


def cached_epoch(cohort: SliceCohort, batch_size: int) -> int:
    """One shuffled epoch of training batches from the in-memory slices; returns the slice count."""
    loader = DataLoader(cohort.training_dataset(), batch_size=batch_size, shuffle=True)
    return sum(len(batch["image"]) for batch in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5, help="cached epochs to average")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "data_pipeline.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    datalist = load_datalist(demo_cohort())
    n_base, t_base = _timed(lambda: baseline_epoch(datalist, args.image_size))
    cohort, t_cold = _timed(lambda: SliceCohort(datalist, image_size=args.image_size))
    with tempfile.TemporaryDirectory() as cache:
        _, t_disk_cold = _timed(lambda: SliceCohort(datalist, image_size=args.image_size, cache_dir=cache))
        _, t_disk_warm = _timed(lambda: SliceCohort(datalist, image_size=args.image_size, cache_dir=cache))
    n_cached, t_cached = _timed(lambda: sum(cached_epoch(cohort, args.batch_size) for _ in range(args.epochs)))
    n = len(cohort)
    rows = [
        ("plain MONAI (LoadImaged + slicing, no cache)", n_base / t_base),
        ("cold: SliceCohort first pass", n / t_cold),
        ("PersistentDataset first pass (writes disk cache)", n / t_disk_cold),
        ("PersistentDataset second run (reads disk cache)", n / t_disk_warm),
        ("cached: in-memory slices, shuffled batches", n_cached / t_cached),
    ]
    baseline = rows[0][1]
    print(f"demo cohort: {len(datalist)} volumes, {n} slices at {args.image_size}x{args.image_size}")
    print(f"{'pipeline':52s} {'slices/s':>10s} {'x baseline':>11s}")
    for name, rate in rows:
        print(f"{name:52s} {rate:10.1f} {rate / baseline:11.1f}")
    result = {
        "volumes": len(datalist),
        "slices": n,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "slices_per_second": {name: round(rate, 1) for name, rate in rows},
        "cached_over_baseline": round(rows[-1][1] / baseline, 1),
        "machine": {"cpus": torch.get_num_threads(), "platform": platform.platform(), "torch": torch.__version__},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Time of one evaluation, 2,000 generated vs 2,000 real slices at 128 x 128, per stage, default feature space.

The stages are those of :class:`monai_mri_gan.engines.GanEvaluator` with its defaults (radiomics features, KID on
10 subsets of 1,000, k = 3 precision/recall, 1,000 MS-SSIM pairs, pixel memorisation against every real slice);
the real-vs-real floors, computed once per evaluator, are timed apart. Real slices come from the embedded demo
cohort, drawn with replacement and mirrored at random; "generated" slices are other draws with noise and small
shifts (the timings do not depend on the content). Prints a table and writes ``benchmarks/results/metrics.json``.
Run: ``python benchmarks/metrics.py``.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from monai_mri_gan.data import SliceCohort, demo_cohort, load_datalist
from monai_mri_gan.engines import disjoint_halves
from monai_mri_gan.metrics import (
    build_feature_extractor,
    frechet_distance,
    kernel_inception_distance,
    memorisation_report,
    ms_ssim_diversity,
    precision_recall,
    write_json_atomic,
)


def _timed(func):
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


def sample_sets(images: torch.Tensor, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A "real" and a "generated" set of ``count`` slices each, made from the cohort's slices."""
    rng = torch.Generator().manual_seed(seed)
    real = images[torch.randint(len(images), (count,), generator=rng)].clone()
    flip = torch.rand(count, generator=rng) < 0.5
    real[flip] = real[flip].flip(-1)
    fake = images[torch.randint(len(images), (count,), generator=rng)].clone()
    fake = torch.roll(fake, shifts=(2, -1), dims=(-2, -1))
    fake = (fake + 0.05 * torch.randn(fake.shape, generator=rng)).clamp(-1, 1)
    return real, fake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num_samples", type=int, default=2000)
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1 is fastest on a shared box)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "metrics.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cohort = SliceCohort(load_datalist(demo_cohort()), image_size=args.image_size)
    images, _ = cohort.tensors()
    real, fake = sample_sets(images, args.num_samples, seed=0)
    extractor = build_feature_extractor("radiomics")

    times: dict[str, float] = {}
    (real_feats, fake_feats), times["features (radiomics, both sets)"] = _timed(
        lambda: (extractor(real), extractor(fake)))
    values: dict[str, float] = {}
    values["fid"], times["FID"] = _timed(lambda: frechet_distance(real_feats, fake_feats))
    (values["kid_mean"], values["kid_std"]), times["KID (10 x 1000)"] = _timed(
        lambda: kernel_inception_distance(real_feats, fake_feats))
    (values["precision"], values["recall"]), times["precision/recall (k=3)"] = _timed(
        lambda: precision_recall(real_feats, fake_feats))
    values["ms_ssim"], times["MS-SSIM diversity (1000 pairs)"] = _timed(lambda: ms_ssim_diversity(fake))
    report, times["memorisation (pixel NCC vs all reals)"] = _timed(lambda: memorisation_report(fake, real))
    values["memorisation_max"] = float(report["pixel_similarity"].max())
    total = sum(times.values())

    def floors() -> None:
        first, second = disjoint_halves(len(real))
        a, b = real_feats[first], real_feats[second]
        frechet_distance(a, b)
        kernel_inception_distance(a, b)
        precision_recall(a, b)
        ms_ssim_diversity(real)
        memorisation_report(real[second], real[first], top_k_pairs=0)

    _, floor_time = _timed(floors)

    width = max(len(k) for k in times) + 2
    print(f"{args.num_samples} generated vs {args.num_samples} real slices at {args.image_size} px, "
          f"{args.threads} thread(s), radiomics features")
    print(f"{'stage':<{width}}{'seconds':>9}")
    for name, seconds in times.items():
        print(f"{name:<{width}}{seconds:>9.2f}")
    print(f"{'total per evaluation':<{width}}{total:>9.2f}")
    print(f"{'real-vs-real floors (once)':<{width}}{floor_time:>9.2f}")

    result = {
        "num_generated": args.num_samples,
        "num_real": args.num_samples,
        "image_size": args.image_size,
        "feature_space": extractor.name,
        "threads": args.threads,
        "seconds": {**{k: round(v, 3) for k, v in times.items()}, "total per evaluation": round(total, 3),
                    "real-vs-real floors (once)": round(floor_time, 3)},
        "values": values,
        "machine": {"cpus": os.cpu_count(),
                    "platform": platform.platform(), "torch": torch.__version__},
    }
    write_json_atomic(result, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""The study's outputs: a summary over seeds, a Markdown table, figures, and the JSON record, written atomically."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import replace_atomically
from .scoring import METRICS

__all__ = ["gan_sample_figure", "markdown_report", "plot_study", "summarise_runs", "write_report"]


def summarise_runs(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean and spread over seeds of every test metric, per condition and regime.

    The spread is the sample standard deviation over seeds (0 for a single seed); NaN values (a metric undefined
    for a run) are left out of both.

    Args:
        record: the result of :func:`~monai_mri_gan.study.driver.run_study` (its ``conditions``).

    Returns:
        one entry per condition and regime, in run order: ``condition``, ``subject_fraction``, ``tumour_share``,
        ``regime``, ``seeds`` and per metric ``{"mean", "std"}``.
    """
    rows = []
    for condition in record["conditions"]:
        regimes = list(dict.fromkeys(run["regime"] for run in condition["runs"]))
        for regime in regimes:
            runs = [run for run in condition["runs"] if run["regime"] == regime]
            row: dict[str, Any] = {"condition": condition["name"], "subject_fraction": condition["subject_fraction"],
                                   "tumour_share": condition["tumour_share"], "regime": regime, "seeds": len(runs)}
            for metric in METRICS:
                values = np.array([run["test"][metric] for run in runs], dtype=float)
                values = values[np.isfinite(values)]
                row[metric] = {
                    "mean": float(values.mean()) if values.size else math.nan,
                    "std": float(values.std(ddof=1)) if values.size > 1 else 0.0 if values.size else math.nan,
                }
            rows.append(row)
    return rows


def markdown_report(record: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`summarise_runs`: one row per condition and regime, ``mean ± std`` over seeds.

    Args:
        record: the result of :func:`~monai_mri_gan.study.driver.run_study`.

    Returns:
        the table, with a header row and a final newline.
    """
    header = ("| training subjects | tumour share | real slices (tumour) | regime | balanced accuracy | sensitivity "
              "| specificity | AUROC |")
    lines = [header, "| " + " | ".join(["---"] * 8) + " |"]
    counts = {c["name"]: c["train"] for c in record["conditions"]}
    for row in record.get("summary") or summarise_runs(record):
        train = counts[row["condition"]]
        cells = [f"{round(100 * row['subject_fraction'])} % ({train['subjects']})",
                 f"{100 * row['tumour_share']:g} %", f"{train['no_tumour'] + train['tumour']} ({train['tumour']})",
                 f"`{row['regime']}`"]
        cells += [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_study(record: Mapping[str, Any], path: str | os.PathLike,
               metrics: Sequence[str] = ("balanced_accuracy", "sensitivity", "auroc")) -> Path:
    """A figure of the study: one row per amount of real data, one column per metric, one line per regime.

    Points are means over seeds against the training tumour share, bars one standard deviation.

    Args:
        record: the result of :func:`~monai_mri_gan.study.driver.run_study`.
        path: the PNG to write (atomically).
        metrics: the metrics to show, one column each.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = record.get("summary") or summarise_runs(record)
    fractions = list(dict.fromkeys(row["subject_fraction"] for row in summary))
    shares = sorted({row["tumour_share"] for row in summary}, reverse=True)
    regimes = list(dict.fromkeys(row["regime"] for row in summary))
    fig, axes = plt.subplots(len(fractions), len(metrics), figsize=(4.2 * len(metrics), 3.4 * len(fractions)),
                             squeeze=False)
    positions = np.arange(len(shares))
    for r, fraction in enumerate(fractions):
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            for k, regime in enumerate(regimes):
                rows = {row["tumour_share"]: row for row in summary
                        if row["subject_fraction"] == fraction and row["regime"] == regime}
                mean = [rows[s][metric]["mean"] if s in rows else math.nan for s in shares]
                std = [rows[s][metric]["std"] if s in rows else math.nan for s in shares]
                offset = (k - (len(regimes) - 1) / 2) * 0.06
                ax.errorbar(positions + offset, mean, yerr=std, marker="o", capsize=3, label=regime)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xticks(positions, [f"{100 * s:g} %" for s in shares])
            ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("tumour share of training slices")
            label = {"auroc": "AUROC"}.get(metric, metric.replace("_", " "))
            ax.set_title(f"{label}, {round(100 * fraction)} % of training subjects", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _write_png(fig, path, dpi=110)


def _write_png(figure: Any, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    return replace_atomically(path, lambda f: f.write(buffer.getvalue()))


def gan_sample_figure(grids: Mapping[str, str | os.PathLike], path: str | os.PathLike) -> Path:
    """Stack sample grids of several GAN runs (top row no tumour, bottom row tumour) into one PNG, one per row.

    Args:
        grids: a title (the condition) -> the run's sample grid PNG.
        path: the PNG to write (atomically).

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 2.3 * len(grids)), squeeze=False)
    for ax, (name, grid) in zip(axes[:, 0], grids.items(), strict=True):
        ax.imshow(Image.open(grid), cmap="gray")
        ax.set_title(f"{name}: top row no tumour, bottom row tumour", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _write_png(fig, path, dpi=100)


def write_report(record: Mapping[str, Any], output: str | os.PathLike, figure: str | os.PathLike,
                 samples_figure: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None) -> str:
    """Write a study's record as JSON, its table as Markdown beside it, its figure, and optionally the GAN samples.

    Args:
        record: the result of :func:`~monai_mri_gan.study.driver.run_study`.
        output: the JSON file; the Markdown table goes to the same name with ``.md``.
        figure: the PNG of :func:`plot_study`.
        samples_figure: the PNG of :func:`gan_sample_figure`, from the last sample grid of every condition's GAN
            run under ``work_dir``; None writes none.
        work_dir: the ``output_dir`` that :func:`~monai_mri_gan.study.driver.run_study` was given.

    Returns:
        the Markdown table.
    """
    table = markdown_report(record)
    output = Path(output)
    replace_atomically(output, lambda f: f.write(json.dumps(record, indent=2).encode()))
    replace_atomically(output.with_suffix(".md"), lambda f: f.write(table.encode()))
    plot_study(record, figure)
    if samples_figure is not None and work_dir is not None:
        grids = {c["name"]: sorted((Path(work_dir) / "gan" / c["name"] / "samples").glob("epoch_*.png"))
                 for c in record["conditions"] if "gan" in c}
        grids = {name: paths[-1] for name, paths in grids.items() if paths}
        if grids:
            gan_sample_figure(grids, samples_figure)
    return table

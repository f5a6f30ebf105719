"""The study's statistics over splits: summaries and paired differences with Student t intervals, tables, a figure.

A run is one downstream model trained for one (task, split, tumour subjects ``k``, regime, seed) and scored once:
``{"task", "split", "tumour_subjects", "regime", "seed", "metrics": {name: value}}``. Seeds are nested inside
splits, so the seeds of a split are averaged first and each split contributes one value per (task, ``k``, regime,
metric); the intervals are over splits, the unit that varies which subjects are trained and tested on. NaN metric
values (a metric undefined for a run; null in a record read back from JSON) are left out of every mean and of every
count.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..utils import replace_atomically

__all__ = [
    "CONFIDENCE",
    "Comparator",
    "DEFAULT_VERSUS",
    "LOWER_IS_BETTER",
    "STANDARD_FIXES",
    "best_standard_fix",
    "budget_rows",
    "markdown_tables",
    "paired_differences",
    "plot_study",
    "summarise",
    "t_interval",
    "t_quantile",
    "write_results",
]

CONFIDENCE = 0.95
"""The confidence level of every interval in the tables and the figure."""

LOWER_IS_BETTER = frozenset({"false_positive_rate"})
"""Metrics where a lower value is better; every other metric is better higher."""

STANDARD_FIXES = ("class_weighted", "oversampling", "classic_augmentation")
"""The standard fixes for class imbalance, the candidates of :func:`best_standard_fix`."""

_METRIC_NAMES = {"auroc": "AUROC", "sensitivity_at_90_specificity": "sensitivity at 90 % specificity",
                 "balanced_accuracy": "balanced accuracy", "dice": "Dice", "false_positive_rate": "false positive rate"}
_BISECTION_STEPS = 200
_FRACTION_STEPS = 300
_TINY = 1e-300

Comparator = str | Callable[[Mapping[str, float], str], "str | None"]
"""A comparator of :func:`paired_differences`: a regime name, or a callable choosing one from the regimes' means."""


def _regularised_incomplete_beta(a: float, b: float, x: float) -> float:
    """``I_x(a, b)``, by the continued fraction (modified Lentz) on the side of ``x`` where it converges fast."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _regularised_incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    fraction = d
    for m in range(1, _FRACTION_STEPS):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * fraction / a


def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t distribution with ``df`` degrees of freedom.

    Exact to about 1e-12: for ``t > 0``, ``P(T > t) = I_x(df / 2, 1 / 2) / 2`` with ``x = df / (df + t^2)``, and
    ``x`` is found by bisection of the regularised incomplete beta function (no SciPy needed).

    Args:
        probability: in (0, 1).
        df: degrees of freedom, positive.

    Returns:
        ``t`` with ``P(T <= t) = probability``.

    Raises:
        ValueError: when ``probability`` is not in (0, 1) or ``df`` is not positive.
    """
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must be in (0, 1), got {probability}.")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}.")
    if probability < 0.5:
        return -t_quantile(1.0 - probability, df)
    if probability == 0.5:
        return 0.0
    tail = 2.0 * (1.0 - probability)
    low, high = 0.0, 1.0  # I_x(df / 2, 1 / 2) rises with x, from 0 at low to 1 at high
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        if _regularised_incomplete_beta(0.5 * df, 0.5, middle) < tail:
            low = middle
        else:
            high = middle
    x = 0.5 * (low + high)
    return math.sqrt(df * (1.0 - x) / x)


def t_interval(values: Iterable[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean of ``values`` and its two-sided Student t interval; NaN values are left out.

    Args:
        values: the sample (here one value per split).
        confidence: the interval's confidence level.

    Returns:
        ``(mean, low, high)``; the interval is ``(nan, nan)`` for fewer than two values, and all three are NaN for
        none.
    """
    sample = np.asarray(list(values), dtype=float)
    sample = sample[~np.isnan(sample)]
    if sample.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(sample.mean())
    if sample.size == 1:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + 0.5 * confidence, sample.size - 1) * float(sample.std(ddof=1)) / math.sqrt(sample.size)
    return mean, mean - half, mean + half


def _k_order(k: Any) -> tuple[bool, Any]:
    """Numbers of tumour subjects ascending, then named ones (``"all"``)."""
    return isinstance(k, str), k


def _split_values(runs: Iterable[Mapping[str, Any]]) -> dict[tuple, dict[str, dict[Any, float]]]:
    """(task, k, metric) -> regime -> split -> the mean over that split's seeds (splits with no value left out).

    Regimes with runs but no finite value of the metric are kept, with no splits.
    """
    seeds: dict[tuple, dict[str, dict[Any, list[float]]]] = {}
    for run in runs:
        for metric, value in run["metrics"].items():
            per_regime = seeds.setdefault((run["task"], run["tumour_subjects"], metric), {})
            per_split = per_regime.setdefault(run["regime"], {})
            if value is not None and not math.isnan(value):
                per_split.setdefault(run["split"], []).append(float(value))
    tasks = list(dict.fromkeys(key[0] for key in seeds))
    ordered = sorted(seeds, key=lambda key: (tasks.index(key[0]), _k_order(key[1])))
    return {key: {regime: {split: float(np.mean(v)) for split, v in splits.items()}
                  for regime, splits in seeds[key].items()} for key in ordered}


def summarise(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and 95 % Student t interval over splits of every metric, per task, tumour subjects and regime.

    The seeds of a split are averaged first (NaN values left out), so each split counts once.

    Args:
        runs: the study's runs (see the module docstring); other keys are ignored.

    Returns:
        rows ``{task, tumour_subjects, regime, metric, mean, ci_low, ci_high, n_splits}`` ordered by task (as
        first seen), ``tumour_subjects`` (numbers ascending, then ``"all"``), regime and metric (as first seen);
        ``n_splits`` counts the splits with a value.
    """
    rows = []
    values = _split_values(runs)
    groups = list(dict.fromkeys(key[:2] for key in values))
    for task, k in groups:
        metrics = [key[2] for key in values if key[:2] == (task, k)]
        regimes = list(dict.fromkeys(r for m in metrics for r in values[task, k, m]))
        for regime in regimes:
            for metric in metrics:
                per_split = values[task, k, metric].get(regime)
                if per_split is None:
                    continue
                mean, low, high = t_interval(per_split.values())
                rows.append({"task": task, "tumour_subjects": k, "regime": regime, "metric": metric, "mean": mean,
                             "ci_low": low, "ci_high": high, "n_splits": len(per_split)})
    return rows


def best_standard_fix(means: Mapping[str, float], metric: str) -> str | None:
    """The standard fix with the best mean on ``metric``: a comparator for :func:`paired_differences`.

    The candidates are :data:`STANDARD_FIXES`. Best is highest, or lowest for :data:`LOWER_IS_BETTER` metrics; a
    tie goes to the first candidate.

    Args:
        means: regime -> its mean over splits on ``metric``, for one task and number of tumour subjects.
        metric: the metric.

    Returns:
        the regime, or None when no standard fix has a mean.
    """
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    candidates = [fix for fix in STANDARD_FIXES if fix in means and not math.isnan(means[fix])]
    return max(candidates, key=lambda fix: sign * means[fix], default=None)


DEFAULT_VERSUS: Mapping[str, Comparator] = MappingProxyType(
    {"best_standard_fix": best_standard_fix, "copy_paste": "copy_paste"})
"""The comparators of :func:`paired_differences`: the best standard fix, and copy-paste augmentation."""


def paired_differences(runs: Iterable[Mapping[str, Any]],
                       versus: Mapping[str, Comparator] = DEFAULT_VERSUS) -> list[dict[str, Any]]:
    """Each regime minus a comparator regime, split by split, with a 95 % Student t interval over the splits.

    For each (task, tumour subjects, metric) the per-split values (seeds averaged) of a regime and its comparator
    are subtracted on the splits where both have a value. The difference is always regime - comparator, also for
    :data:`LOWER_IS_BETTER` metrics, where a negative difference means the regime is better. A regime is not
    compared with itself, and a comparator absent from a (task, tumour subjects) gives no rows there.

    Args:
        runs: the study's runs (see the module docstring).
        versus: a name for the comparison -> the comparator: a regime name, or a callable given the regimes' means
            over splits on the metric and the metric, returning a regime name or None (no comparison), such as
            :func:`best_standard_fix`. The default compares with the best standard fix and with ``copy_paste``.

    Returns:
        rows ``{task, tumour_subjects, regime, versus, versus_regime, metric, mean_difference, ci_low, ci_high,
        n_splits}``, ``versus_regime`` being the comparator regime chosen and ``n_splits`` the splits paired.
    """
    rows = []
    values = _split_values(runs)
    for (task, k, metric), regimes in values.items():
        means = {regime: t_interval(splits.values())[0] for regime, splits in regimes.items()}
        for name, comparator in versus.items():
            other = comparator if isinstance(comparator, str) else comparator(means, metric)
            if other not in regimes:
                continue
            for regime, splits in regimes.items():
                if regime == other:
                    continue
                paired = [value - regimes[other][split] for split, value in splits.items() if split in regimes[other]]
                mean, low, high = t_interval(paired)
                rows.append({"task": task, "tumour_subjects": k, "regime": regime, "versus": name,
                             "versus_regime": other, "metric": metric, "mean_difference": mean, "ci_low": low,
                             "ci_high": high, "n_splits": len(paired)})
    return rows


def budget_rows(runs: Iterable[Mapping[str, Any]], budgets: Mapping[str, int]) -> list[dict[str, Any]]:
    """Whether the step budget was enough: per (task, ``k``, regime), where the runs' best validation scores fell.

    A run's curve is its validations ``{"step", <score>, ...}``, where the score is the one key besides ``step``
    whose name starts with ``score`` or ``val_`` (the classifier's validation AUROC, the segmenter's pooled Dice);
    its best step is the earliest of its best score. A run is *still improving at the budget* when it reached
    ``budgets[task]`` steps and its best score was its last: more steps might have helped it.

    Args:
        runs: run records with ``curve``; runs without one (the no-lesion floor) are left out.
        budgets: the step budget of each task.

    Returns:
        rows ``{task, tumour_subjects, regime, runs, median_best_step, max_best_step, improving_at_budget}``, the
        last a count of runs.
    """
    groups: dict[tuple, list[tuple[int, bool]]] = {}
    for run in runs:
        curve = run.get("curve") or []
        if not curve:
            continue
        key = next(k for k in curve[0] if k.startswith(("score", "val_")))
        best = max(range(len(curve)), key=lambda i: (curve[i][key], -i))
        improving = int(curve[-1]["step"]) >= int(budgets[run["task"]]) and best == len(curve) - 1
        groups.setdefault((run["task"], run["tumour_subjects"], run["regime"]), []).append(
            (int(curve[best]["step"]), improving))
    return [{"task": task, "tumour_subjects": k, "regime": regime, "runs": len(found),
             "median_best_step": float(np.median([step for step, _ in found])),
             "max_best_step": max(step for step, _ in found),
             "improving_at_budget": sum(improving for _, improving in found)}
            for (task, k, regime), found in groups.items()]


def _metric_name(metric: str) -> str:
    return _METRIC_NAMES.get(metric, metric.replace("_", " "))


def _k_name(k: Any) -> str:
    return f"{k} tumour subject{'' if k == 1 else 's'}" if not isinstance(k, str) else f"{k} tumour subjects"


def _cell(value: float | None, low: float | None, high: float | None, signed: bool = False) -> str:
    """``mean [low, high]`` to 3 decimals; ``n/a`` for no value, ``[n/a]`` for no interval (one split)."""
    number = "{:+.3f}" if signed else "{:.3f}"
    value, low, high = (math.nan if v is None else v for v in (value, low, high))  # null in a reloaded record
    if math.isnan(value):
        return "n/a"
    interval = "n/a" if math.isnan(low) else f"{number.format(low)}, {number.format(high)}"
    return f"{number.format(value)} [{interval}]"


def _table(rows: Sequence[Mapping[str, Any]], value: str, signed: bool, order: Sequence[str]) -> list[str]:
    """A Markdown table: regimes (rows, in ``order`` first) x metrics (columns), and the number of splits.

    A cell whose number of splits differs from the row's most says its own ``(n=...)``; a missing cell (the
    comparator itself) is a dash.
    """
    metrics = list(dict.fromkeys(row["metric"] for row in rows))
    present = {row["regime"] for row in rows}
    regimes = [r for r in dict.fromkeys([*order, *(row["regime"] for row in rows)]) if r in present]
    cells = {(row["regime"], row["metric"]): row for row in rows}
    lines = ["| regime | " + " | ".join(_metric_name(m) for m in metrics) + " | splits |",
             "| " + " | ".join(["---"] * (len(metrics) + 2)) + " |"]
    for regime in regimes:
        found = [cells[regime, m] for m in metrics if (regime, m) in cells]
        n = max(row["n_splits"] for row in found)
        texts = []
        for metric in metrics:
            row = cells.get((regime, metric))
            if row is None:
                texts.append("—")
                continue
            text = _cell(row[value], row["ci_low"], row["ci_high"], signed)
            texts.append(text if row["n_splits"] == n else f"{text} (n={row['n_splits']})")
        lines.append(f"| `{regime}` | " + " | ".join(texts) + f" | {n} |")
    return lines


def _direction(metrics: Iterable[str]) -> str:
    higher = [_metric_name(m) for m in metrics if m not in LOWER_IS_BETTER]
    lower = [_metric_name(m) for m in metrics if m in LOWER_IS_BETTER]
    parts = [f"a positive difference is better for {', '.join(higher)}"] if higher else []
    parts += [f"a negative difference is better for {', '.join(lower)}"] if lower else []
    return "; ".join(parts)


def _format_metadata(value: Any) -> str:
    return value if isinstance(value, str) else f"`{json.dumps(_json_safe(value), separators=(', ', ': '))}`"


def markdown_tables(summary: Sequence[Mapping[str, Any]], paired: Sequence[Mapping[str, Any]],
                    metadata: Mapping[str, Any] | None = None,
                    budget: Sequence[Mapping[str, Any]] | None = None) -> str:
    """The study's results as Markdown: per task, the summary and the paired differences, one table per ``k``.

    Summary cells are ``mean [ci_low, ci_high]`` over splits, paired cells the mean difference regime -
    comparator with its interval, all to 3 decimals.

    Args:
        summary: the rows of :func:`summarise`.
        paired: the rows of :func:`paired_differences`.
        metadata: listed at the top, one ``- **key**: value`` line each (non-text values as compact JSON).
        budget: the rows of :func:`budget_rows`, tabled at the end.

    Returns:
        the document, ending in a newline.
    """
    level = round(100 * CONFIDENCE)
    lines = ["# Downstream study: results over splits", ""]
    if metadata:
        lines += [*(f"- **{key}**: {_format_metadata(value)}" for key, value in metadata.items()), ""]
    tasks = list(dict.fromkeys([row["task"] for row in summary] + [row["task"] for row in paired]))
    for task in tasks:
        lines += [f"## {task.capitalize()}", "", f"Mean over splits [{level} % Student t interval]; the seeds of "
                  "a split are averaged first.", ""]
        rows = [row for row in summary if row["task"] == task]
        order = list(dict.fromkeys(row["regime"] for row in rows))
        for k in sorted(dict.fromkeys(row["tumour_subjects"] for row in rows), key=_k_order):
            lines += [f"### {_k_name(k)}", "", *_table([r for r in rows if r["tumour_subjects"] == k], "mean", False,
                                                            order), ""]
        rows = [row for row in paired if row["task"] == task]
        for name in dict.fromkeys(row["versus"] for row in rows):
            for k in sorted(dict.fromkeys(r["tumour_subjects"] for r in rows if r["versus"] == name), key=_k_order):
                chosen = [r for r in rows if r["versus"] == name and r["tumour_subjects"] == k]
                lines += [f"### Paired differences, regime - {name.replace('_', ' ')}, {_k_name(k)}", ""]
                comparators = dict.fromkeys((r["metric"], r["versus_regime"]) for r in chosen)
                if {other for _, other in comparators} != {name}:
                    lines += ["Compared with: " + ", ".join(f"{_metric_name(m)} `{other}`"
                                                            for m, other in comparators) + ".", ""]
                lines += _table(chosen, "mean_difference", True, order)
                metrics = dict.fromkeys(r["metric"] for r in chosen)
                lines += ["", f"Differences regime - comparator, split by split; intervals are {level} % Student t "
                          f"intervals over splits; {_direction(metrics)}.", ""]
    if budget:
        lines += ["## Was the budget enough?", "", "Step of each run's best validation score, and the runs still "
                  "improving at the step budget (best score at the last validation, at the budget).", "",
                  "| task | tumour subjects | regime | runs | median best step | latest best step | improving at "
                  "budget |", "| --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['task']} | {r['tumour_subjects']} | `{r['regime']}` | {r['runs']} | "
                  f"{r['median_best_step']:g} | {r['max_best_step']} | {r['improving_at_budget']} |" for r in budget]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _points(ax: Any, x: np.ndarray, rows: Sequence[Mapping[str, Any] | None], value: str, **kwargs: Any) -> None:
    """Plot ``rows[i][value]`` at ``x[i]`` with its interval as error bar; a missing row or interval is left out."""
    nan = {value: math.nan, "ci_low": math.nan, "ci_high": math.nan}
    means, lows, highs = (np.array([(row or nan)[key] for row in rows], dtype=float)
                          for key in (value, "ci_low", "ci_high"))
    ax.errorbar(x, means, yerr=np.nan_to_num([means - lows, highs - means]), fmt="o", capsize=3, **kwargs)


def plot_study(summary: Sequence[Mapping[str, Any]], paired: Sequence[Mapping[str, Any]], path: str | os.PathLike,
               task: str = "classification", metrics: Sequence[str] = ("sensitivity_at_90_specificity", "auroc"),
               painted: Sequence[str] | None = None) -> Path:
    """A figure of the study: each metric per regime for each ``k``, and the painted regimes' paired differences.

    One row per metric with one panel per number of tumour subjects (points: means over splits, bars: 95 % Student t
    intervals), then a row with one panel per metric of the painted regimes' differences against each comparator
    of :func:`paired_differences`, per ``k``, with a zero line.

    Args:
        summary: the rows of :func:`summarise`.
        paired: the rows of :func:`paired_differences`.
        path: the PNG to write (atomically).
        task: the task shown.
        metrics: the metrics shown.
        painted: the regimes whose paired differences are shown; None shows every regime whose name starts with
            ``painted``.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = [row for row in summary if row["task"] == task]
    paired = [row for row in paired if row["task"] == task]
    ks = sorted(dict.fromkeys(row["tumour_subjects"] for row in summary + paired), key=_k_order)
    regimes = list(dict.fromkeys(row["regime"] for row in summary))
    candidates = dict.fromkeys(row["regime"] for row in paired)
    shown = [r for r in candidates if r in painted] if painted is not None else [
        r for r in candidates if r.startswith("painted")]
    comparisons = list(dict.fromkeys(row["versus"] for row in paired))
    columns = max(len(ks), len(metrics), 1)
    fig, axes = plt.subplots(len(metrics) + 1, columns, figsize=(3.9 * columns, 3.3 * (len(metrics) + 1)),
                             squeeze=False)
    for r, metric in enumerate(metrics):
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(ks):
                ax.axis("off")
                continue
            cells = {row["regime"]: row for row in summary
                     if row["metric"] == metric and row["tumour_subjects"] == ks[c]}
            _points(ax, np.arange(len(regimes)), [cells.get(g) for g in regimes], "mean")
            ax.set_xticks(np.arange(len(regimes)), regimes, rotation=40, ha="right", fontsize=8)
            ax.set_title(f"{_metric_name(metric)}, {_k_name(ks[c])}", fontsize=9)
            ax.grid(alpha=0.3)
    for c in range(columns):
        ax = axes[-1][c]
        if c >= len(metrics):
            ax.axis("off")
            continue
        series = [(regime, name) for regime in shown for name in comparisons]
        for s, (regime, name) in enumerate(series):
            cells = {row["tumour_subjects"]: row for row in paired
                     if row["metric"] == metrics[c] and row["regime"] == regime and row["versus"] == name}
            offset = (s - (len(series) - 1) / 2) * 0.12
            _points(ax, np.arange(len(ks)) + offset, [cells.get(k) for k in ks], "mean_difference",
                    label=f"{regime} - {name.replace('_', ' ')}")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(np.arange(len(ks)), [str(k) for k in ks])
        ax.set_xlabel("tumour subjects")
        ax.set_title(f"paired difference, {_metric_name(metrics[c])}", fontsize=9)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return replace_atomically(path, lambda f: f.write(buffer.getvalue()))


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite numbers as None, tuples as lists and NumPy numbers as Python ones."""
    if isinstance(value, Mapping):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def write_results(record: Mapping[str, Any], output_json: str | os.PathLike) -> dict[str, Path]:
    """Write the study's JSON record, its Markdown tables beside it (``.md``) and its figure (``.png``), atomically.

    Args:
        record: ``runs``, ``splits`` (the split ids) and whatever else the study recorded (settings, timings);
            ``summary`` and ``paired`` are computed by :func:`summarise` and :func:`paired_differences` (default
            comparators) when absent, and ``budget`` by :func:`budget_rows` when the settings name the step
            budgets.
        output_json: the JSON file; NaN is written as null.

    Returns:
        ``{"json", "markdown", "figure"}`` -> the path written.
    """
    record = dict(record)
    if "summary" not in record:
        record["summary"] = summarise(record["runs"])
    if "paired" not in record:
        record["paired"] = paired_differences(record["runs"])
    settings = record.get("settings") or {}
    if "budget" not in record and {"classifier_steps", "segmenter_steps"} <= set(settings):
        record["budget"] = budget_rows(record["runs"], {"classification": settings["classifier_steps"],
                                                        "segmentation": settings["segmenter_steps"]})
    output = Path(output_json)
    metadata = {key: value for key, value in record.items() if key not in ("runs", "summary", "paired", "budget")}
    metadata["runs"] = len(record["runs"])
    text = markdown_tables(record["summary"], record["paired"], metadata, record.get("budget"))
    paths = {"markdown": replace_atomically(output.with_suffix(".md"), lambda f: f.write(text.encode())),
             "figure": plot_study(record["summary"], record["paired"], output.with_suffix(".png"))}
    content = json.dumps(_json_safe(record), indent=1, allow_nan=False)
    paths["json"] = replace_atomically(output, lambda f: f.write(content.encode()))
    return paths

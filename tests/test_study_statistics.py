"""The study's statistics over splits: t quantiles and intervals, summaries, paired differences, tables and outputs."""

import json
import math
import statistics

import numpy as np
import pytest
from PIL import Image

from monai_mri_gan.study.statistics import (
    best_standard_fix,
    budget_rows,
    markdown_tables,
    paired_differences,
    summarise,
    t_interval,
    t_quantile,
    write_results,
)

# Student t 0.975 quantiles from the tables, for 1, 2 and 4 degrees of freedom
T_975 = {1: 12.706205, 2: 4.302653, 4: 2.776445}
SPLITS = (0, 1, 2)
SEEDS = (0, 1)
REGIMES = ("real", "class_weighted", "oversampling", "classic_augmentation", "copy_paste", "painted")
# the level of each (regime, metric): the best standard fix is oversampling on AUROC, classic augmentation on
# sensitivity, class_weighted on the false positive rate (lowest), though oversampling's is the highest
LEVEL = {
    "auroc": dict(zip(REGIMES, (0.70, 0.72, 0.78, 0.74, 0.76, 0.80), strict=True)),
    "sensitivity_at_90_specificity": dict(zip(REGIMES, (0.30, 0.35, 0.36, 0.45, 0.40, 0.50), strict=True)),
    "dice": dict(zip(REGIMES, (0.50, 0.52, 0.51, 0.55, 0.56, 0.60), strict=True)),
    "false_positive_rate": dict(zip(REGIMES, (0.20, 0.08, 0.25, 0.15, 0.12, 0.10), strict=True)),
}
TASK_METRICS = {"classification": ("auroc", "sensitivity_at_90_specificity"),
                "segmentation": ("dice", "false_positive_rate")}


def _value(task, k, regime, metric, split, seed):
    """A made-up metric value: the regime's level, a split effect shared by all regimes, and noise."""
    rng = np.random.default_rng([len(task), 0 if k == "all" else k, REGIMES.index(regime), len(metric), split, seed])
    return LEVEL[metric][regime] + 0.03 * split + float(rng.normal(0.0, 0.02))


def _runs(ks=(2, "all"), skip=()):
    """Runs of both tasks for every split, seed and regime; ``skip`` holds (k, regime, split) left out."""
    runs = []
    for task, metrics in TASK_METRICS.items():
        for k in ks:
            for split in SPLITS:
                for regime in REGIMES:
                    if (k, regime, split) in skip:
                        continue
                    for seed in SEEDS:
                        runs.append({"task": task, "split": split, "tumour_subjects": k, "regime": regime,
                                     "seed": seed, "model": "ignored",
                                     "metrics": {m: _value(task, k, regime, m, split, seed) for m in metrics}})
    return runs


def _row(rows, **keys):
    (row,) = [r for r in rows if all(r[key] == value for key, value in keys.items())]
    return row


def _split_mean(runs, task, k, regime, metric, split):
    values = [r["metrics"][metric] for r in runs if (r["task"], r["tumour_subjects"], r["regime"], r["split"])
              == (task, k, regime, split) and not math.isnan(r["metrics"][metric])]
    return statistics.mean(values) if values else None


def _interval(values):
    """Mean and 95 % t interval by the textbook formula, with the tabled quantile."""
    mean = statistics.mean(values)
    half = T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


@pytest.mark.parametrize("probability, df, expected", [
    (0.975, 4, 2.776445), (0.975, 9, 2.262157), (0.975, 1, 12.7062), (0.975, 2, 4.302653), (0.995, 2, 9.924843),
    (0.95, 10, 1.812461), (0.975, 30, 2.042272), (0.975, 1e6, 1.959966), (0.025, 4, -2.776445), (0.5, 3, 0.0),
])
def test_t_quantile_matches_the_tables(probability, df, expected):
    assert t_quantile(probability, df) == pytest.approx(expected, abs=1e-4 if df == 1 else 2e-6)


@pytest.mark.parametrize("probability, df", [(0.0, 3), (1.0, 3), (0.9, 0)])
def test_t_quantile_refuses_what_has_no_quantile(probability, df):
    with pytest.raises(ValueError):
        t_quantile(probability, df)


def test_t_interval_by_hand_and_degenerate_samples():
    # mean 0.2, sample sd 0.1 (deviations -0.1, 0, 0.1), n 3: half width 4.302653 * 0.1 / sqrt(3)
    mean, low, high = t_interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert (high - mean, mean - low) == pytest.approx((0.248414, 0.248414), abs=1e-6)
    assert t_interval([0.1, math.nan, 0.3, 0.2]) == pytest.approx((mean, low, high))
    one = t_interval([0.4, math.nan])
    assert one[0] == 0.4 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in t_interval([math.nan]))
    assert t_interval([1.0, 3.0], confidence=0.9)[2] == pytest.approx(2.0 + 6.313752 * 1.0, abs=1e-5)


def test_summarise_averages_seeds_first_then_intervals_over_splits():
    runs = [{"task": "classification", "split": s, "tumour_subjects": 2, "regime": "painted", "seed": seed,
             "metrics": {"auroc": v}} for s, pair in enumerate([(0.7, 0.8), (0.8, 0.9), (0.6, 0.6)])
            for seed, v in enumerate(pair)]
    (row,) = summarise(runs)
    # split means 0.75, 0.85, 0.6: mean 0.733333, sample sd 0.125831, half width 4.302653 * 0.125831 / sqrt(3) =
    # 0.312581
    assert {key: row[key] for key in ("task", "tumour_subjects", "regime", "metric", "n_splits")} == {
        "task": "classification", "tumour_subjects": 2, "regime": "painted", "metric": "auroc", "n_splits": 3}
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx((0.733333, 0.420753, 1.045914), abs=1e-6)


def test_summarise_every_row_against_an_independent_computation():
    runs = _runs()
    rows = summarise(runs)
    assert len(rows) == 2 * 2 * len(REGIMES) * 2
    assert [(r["task"], r["tumour_subjects"]) for r in rows[:: 2 * len(REGIMES)]] == [
        ("classification", 2), ("classification", "all"), ("segmentation", 2), ("segmentation", "all")]
    for row in rows:
        per_split = [_split_mean(runs, row["task"], row["tumour_subjects"], row["regime"], row["metric"], s)
                     for s in SPLITS]
        assert row["n_splits"] == 3
        assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(_interval(per_split), abs=1e-5)


def test_best_standard_fix_is_highest_or_lowest_by_metric():
    means = {"real": 0.9, "class_weighted": 0.3, "oversampling": 0.5, "classic_augmentation": math.nan}
    assert best_standard_fix(means, "auroc") == "oversampling"
    assert best_standard_fix(means, "false_positive_rate") == "class_weighted"
    assert best_standard_fix({"real": 0.9, "copy_paste": 0.1}, "auroc") is None


def test_paired_differences_are_per_split_differences_against_the_right_comparator():
    runs = _runs()
    rows = paired_differences(runs)
    chosen = {"auroc": "oversampling", "sensitivity_at_90_specificity": "classic_augmentation",
              "dice": "classic_augmentation", "false_positive_rate": "class_weighted"}
    for task, metrics in TASK_METRICS.items():
        for k in (2, "all"):
            for metric in metrics:
                for versus, other in (("best_standard_fix", chosen[metric]), ("copy_paste", "copy_paste")):
                    compared = [r for r in rows if (r["task"], r["tumour_subjects"], r["metric"], r["versus"])
                                == (task, k, metric, versus)]
                    # every regime but the comparator itself
                    assert sorted(r["regime"] for r in compared) == sorted(set(REGIMES) - {other})
                    for row in compared:
                        assert row["versus_regime"] == other and row["n_splits"] == 3
                        differences = [_split_mean(runs, task, k, row["regime"], metric, s)
                                       - _split_mean(runs, task, k, other, metric, s) for s in SPLITS]
                        expected = _interval(differences)
                        assert (row["mean_difference"], row["ci_low"], row["ci_high"]) == pytest.approx(expected,
                                                                                                        abs=1e-5)
    # lower is better keeps the plain difference: painted (0.10) - class_weighted (0.08) is about +0.02
    row = _row(rows, task="segmentation", tumour_subjects=2, metric="false_positive_rate", regime="painted",
               versus="best_standard_fix")
    assert row["mean_difference"] == pytest.approx(0.02, abs=0.04)


def test_a_split_missing_a_regime_is_left_out_of_that_pair():
    runs = _runs(ks=(2,), skip={(2, "copy_paste", 2)})
    rows = paired_differences(runs)
    row = _row(rows, task="classification", tumour_subjects=2, metric="auroc", regime="painted", versus="copy_paste")
    differences = [_split_mean(runs, "classification", 2, "painted", "auroc", s)
                   - _split_mean(runs, "classification", 2, "copy_paste", "auroc", s) for s in (0, 1)]
    assert row["n_splits"] == 2
    assert (row["mean_difference"], row["ci_low"], row["ci_high"]) == pytest.approx(_interval(differences), abs=1e-5)
    # the other comparisons keep all three splits
    assert _row(rows, task="classification", tumour_subjects=2, metric="auroc", regime="painted",
                versus="best_standard_fix")["n_splits"] == 3
    assert _row(summarise(runs), task="classification", regime="copy_paste", metric="auroc")["n_splits"] == 2
    # no copy-paste at all: no comparison with it
    rows = paired_differences(_runs(ks=(2,), skip={(2, "copy_paste", s) for s in SPLITS}))
    assert rows and all(r["versus"] == "best_standard_fix" for r in rows)


def test_nan_values_are_left_out_of_means_and_counts():
    runs = _runs(ks=(2,))
    for run in runs:
        if run["task"] == "classification" and run["regime"] == "painted":
            if run["split"] == 0 and run["seed"] == 1:
                run["metrics"]["auroc"] = math.nan  # split 0 keeps its seed 0
            if run["split"] == 1:
                run["metrics"]["auroc"] = math.nan  # split 1 has no value at all
    row = _row(summarise(runs), task="classification", regime="painted", metric="auroc")
    kept = [_value("classification", 2, "painted", "auroc", 0, 0),
            statistics.mean(_value("classification", 2, "painted", "auroc", 2, seed) for seed in SEEDS)]
    assert row["n_splits"] == 2
    assert (row["mean"], row["ci_low"], row["ci_high"]) == pytest.approx(_interval(kept), abs=1e-6)
    row = _row(paired_differences(runs), task="classification", regime="painted", metric="auroc",
               versus="copy_paste")
    differences = [kept[0] - _split_mean(runs, "classification", 2, "copy_paste", "auroc", 0),
                   kept[1] - _split_mean(runs, "classification", 2, "copy_paste", "auroc", 2)]
    assert row["n_splits"] == 2
    assert row["mean_difference"] == pytest.approx(statistics.mean(differences), abs=1e-9)


def test_markdown_tables_show_intervals_and_which_direction_is_better():
    runs = _runs(ks=(2,))
    summary, paired = summarise(runs), paired_differences(runs)
    text = markdown_tables(summary, paired, {"splits": [0, 1, 2], "note": "made up"})
    assert "- **splits**: `[0, 1, 2]`" in text and "- **note**: made up" in text
    assert "## Classification" in text and "## Segmentation" in text and "\n\n\n" not in text
    row = _row(summary, task="classification", regime="painted", metric="auroc")
    assert f"{row['mean']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" in text
    row = _row(paired, task="segmentation", regime="painted", metric="false_positive_rate", versus="copy_paste")
    assert f"{row['mean_difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]" in text
    assert text.count("intervals are 95 % Student t intervals over splits") == 4  # 2 tasks x 2 comparators, one k
    assert "a positive difference is better for Dice; a negative difference is better for false positive rate" in text
    assert "false positive rate `class_weighted`" in text  # the best standard fix chosen, per metric


def test_write_results_writes_json_markdown_and_figure_whole(tmp_path):
    runs = _runs()
    runs[0]["metrics"]["auroc"] = math.nan
    runs += [{"task": "classification", "split": 0, "tumour_subjects": 2, "regime": "single_split", "seed": 0,
              "metrics": {"auroc": 0.5, "sensitivity_at_90_specificity": 0.2}}]
    record = {"runs": runs, "splits": [{"train": ["a"], "test": ["b"]}] * 3, "settings": {"steps": 10},
              "timings": {"total_s": 1.5}}
    paths = write_results(record, tmp_path / "out" / "study.json")
    assert paths == {"json": tmp_path / "out" / "study.json", "markdown": tmp_path / "out" / "study.md",
                     "figure": tmp_path / "out" / "study.png"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["study.json", "study.md", "study.png"]

    def refuse(constant):
        raise AssertionError(f"{constant} in the JSON")

    saved = json.loads(paths["json"].read_text(), parse_constant=refuse)
    assert set(saved) == {"runs", "splits", "settings", "timings", "summary", "paired"}
    assert saved["runs"][0]["metrics"]["auroc"] is None and saved["settings"] == {"steps": 10}
    single = _row(saved["summary"], regime="single_split", metric="auroc")
    assert single["mean"] == 0.5 and single["ci_low"] is None and single["n_splits"] == 1
    assert len(saved["summary"]) == len(summarise(runs)) and len(saved["paired"]) == len(paired_differences(runs))
    assert "0.500 [n/a]" in paths["markdown"].read_text()
    with Image.open(paths["figure"]) as image:
        assert image.format == "PNG" and image.width > 600 and image.height > 600
    # a reloaded record (nulls for NaN) writes again, replacing the files in place
    paths = write_results(saved, paths["json"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["study.json", "study.md", "study.png"]
    assert json.loads(paths["json"].read_text()) == saved


def test_budget_rows_find_each_runs_best_step_and_the_runs_still_improving():
    def run(task, regime, scores, key):
        return {"task": task, "tumour_subjects": 2, "regime": regime,
                "curve": [{"step": 50 * (i + 1), key: v} for i, v in enumerate(scores)]}

    runs = [run("classification", "painted", [0.5, 0.9, 0.9, 0.7], "score"),   # best at 100 (earliest of ties)
            run("classification", "painted", [0.5, 0.6, 0.7, 0.8], "score"),   # best at 200 = budget: improving
            run("classification", "painted", [0.5, 0.6, 0.8], "score"),        # best last, but stopped before budget
            run("segmentation", "painted", [0.1, 0.3, 0.2, 0.4], "val_pooled_dice"),
            {"task": "classification", "tumour_subjects": 2, "regime": "no_lesion_floor", "metrics": {}}]
    rows = budget_rows(runs, {"classification": 200, "segmentation": 400})
    assert rows == [
        {"task": "classification", "tumour_subjects": 2, "regime": "painted", "runs": 3, "median_best_step": 150.0,
         "max_best_step": 200, "improving_at_budget": 1},
        {"task": "segmentation", "tumour_subjects": 2, "regime": "painted", "runs": 1, "median_best_step": 200.0,
         "max_best_step": 200, "improving_at_budget": 0}]
    text = markdown_tables([], [], budget=rows)
    assert "## Was the budget enough?" in text and "| classification | 2 | `painted` | 3 | 150 | 200 | 1 |" in text

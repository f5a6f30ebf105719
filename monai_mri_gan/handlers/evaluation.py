"""Ignite handlers of GAN evaluators: the evaluation reports and the best checkpoint by a key metric."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from ..metrics import metric_cmp_fn_for, save_closest_pairs_png
from ..metrics.report import save_metric_bars_png, save_sample_grid_png, write_json_atomic
from ..runs import RunRecord, load_checkpoint, save_checkpoint
from .samples import hole_picture, save_grid_png, tile_rows

__all__ = ["BestCheckpointSaver", "EvaluationReportWriter", "PainterReportWriter"]


class EvaluationReportWriter:
    """Ignite handler of a :class:`~monai_mri_gan.engines.GanEvaluator`: after each run, write its report.

    It reads what the evaluator publishes (``state.metrics``, ``state.generated`` and ``state.report``, see
    :class:`~monai_mri_gan.engines.GanEvaluator`) and evaluates the baselines with its ``evaluate`` method:

    - ``metrics.json`` (atomic): feature space, epoch, sample sizes, class mode, key metric, and the sections
      ``generated`` (this run), ``real_vs_real`` (floors) and one per baseline generator (e.g. ``untrained``);
    - ``samples.png``: generated slices, one row per class;
    - ``closest_pairs.png``: the generated slices closest to a real slice (generated left, real right), in
      ``local_dir``: it shows real training slices, a local output that trackers do not upload unless asked;
    - ``metrics_vs_floor.png``: a bar per metric for the generated sample, the floor and the baselines.

    Args:
        output_dir: report folder (created).
        baselines: ``{name: generator}`` evaluated on the same latents after each run (at the first run only
            when ``baselines_once``).
        baselines_once: evaluate the baselines only once (they do not change while a model trains).
        images: write the PNG files.
        per_row: slices per row of the sample grid.
        closest_pairs: pairs shown in ``closest_pairs.png``.
        local_dir: folder of the pictures of real slices; None: ``output_dir``.
    """

    def __init__(self, output_dir: str | os.PathLike, baselines: Mapping[str, nn.Module] | None = None,
                 baselines_once: bool = True, images: bool = True, per_row: int = 8, closest_pairs: int = 8,
                 local_dir: str | os.PathLike | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.local_dir = Path(local_dir) if local_dir is not None else self.output_dir
        self.baselines = dict(baselines or {})
        self.baselines_once = baselines_once
        self.images = images
        self.per_row = int(per_row)
        self.closest_pairs = int(closest_pairs)
        self._baseline_metrics: dict[str, dict[str, float]] | None = None
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Write after every run of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self._baseline_metrics is None or not self.baselines_once:
            self._baseline_metrics = {name: engine.evaluate(g) for name, g in self.baselines.items()}
        generated = {k: float(v) for k, v in engine.state.metrics.items()}
        report = engine.state.report
        record: dict[str, Any] = {
            "feature_space": report["feature_space"],
            "note": "values compare only within one feature space; FID also only at equal sample sizes",
            "epoch": int(engine.state.epoch),
            "num_generated": report["num_generated"],
            "num_real": report["num_real"],
            "class_mode": report["class_mode"],
            "seed": report["seed"],
            "key_metric": engine.state.key_metric_name,
            "generated": generated,
            "real_vs_real": dict(report["real_vs_real"]),
            **self._baseline_metrics,
        }
        write_json_atomic(record, self.output_dir / "metrics.json")
        if self.images:
            save_sample_grid_png(engine.state.generated, report["generated_labels"],
                                 self.output_dir / "samples.png", per_row=self.per_row)
            save_closest_pairs_png(report["memorisation"], engine.state.generated, report["real_images"],
                                   self.local_dir / "closest_pairs.png", n=self.closest_pairs, overwrite=True)
            series = {"generated": generated, "real_vs_real": record["real_vs_real"], **self._baseline_metrics}
            save_metric_bars_png(series, self.output_dir / "metrics_vs_floor.png")
        self.logger.info("evaluation report in %s", self.output_dir)


class PainterReportWriter:
    """Ignite handler of a :class:`~monai_mri_gan.engines.LesionPainterEvaluator`: after each run, write its report.

    - ``metrics.json`` (atomic): the evaluator's ``settings``, the epoch and its flat ``metrics``;
    - ``painting_report.png``: the first ``per_row`` placements, one column each, in four rows: the healthy base
      window, the hole and the placed labels (:func:`~monai_mri_gan.handlers.hole_picture`), the painted window and
      the copy-paste window, in ``local_dir``. It shows real held-out anatomy: a local output, not a shareable one.

    Args:
        output_dir: report folder (created).
        images: write the PNG.
        per_row: placements shown.
        local_dir: folder of the picture; None: ``output_dir``.
    """

    def __init__(self, output_dir: str | os.PathLike, images: bool = True, per_row: int = 8,
                 local_dir: str | os.PathLike | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.local_dir = Path(local_dir) if local_dir is not None else self.output_dir
        self.images = images
        self.per_row = int(per_row)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Write after every run of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        report = engine.state.report
        record = {**report["settings"], "epoch": int(engine.state.epoch),
                  "metrics": {k: float(v) for k, v in engine.state.metrics.items()}}
        write_json_atomic(record, self.output_dir / "metrics.json")
        if self.images:
            crops = {k: v[: self.per_row] for k, v in report["crops"].items()}
            hole = hole_picture(crops["weights"], crops["labels"], report["label_values"])
            rows = torch.cat([crops["base"].float(), hole, crops["painted"].float(), crops["copy_paste"].float()])
            save_grid_png(tile_rows(rows[:, 0], rows=4), self.local_dir / "painting_report.png")
        self.logger.info("painter evaluation report in %s", self.output_dir)


class BestCheckpointSaver:
    """Ignite handler of an evaluator: write a checkpoint atomically whenever the key metric improves.

    The file holds ``{name: obj.state_dict()}`` for ``save_dict`` (at least the generator and its EMA), the run
    ``config`` and ``metric`` (``name``, ``value``, ``epoch``, ``feature_space``). With ``resume``, an existing
    file's recorded value (same metric and feature space) is the best to beat, so a resumed training run does not
    replace a better checkpoint with a worse one.

    Args:
        ckpt_path: the file (e.g. ``<output_dir>/best_checkpoint.pt``).
        save_dict: objects with ``state_dict()``.
        config: the run record (train.json's ``run_record``, or a plain mapping), stored under ``config``.
        metric_name: metric to track; None for the engine's key metric.
        metric_cmp_fn: ``(current, best) -> bool``; None for :func:`~monai_mri_gan.metrics.metric_cmp_fn_for` of
            the metric.
        resume: start from the value recorded in an existing file.
    """

    def __init__(self, ckpt_path: str | os.PathLike, save_dict: Mapping[str, Any],
                 config: Mapping[str, Any] | None = None, metric_name: str | None = None,
                 metric_cmp_fn: Callable[[float, float], bool] | None = None, resume: bool = True) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.save_dict = dict(save_dict)
        if config is not None:
            self.save_dict["config"] = RunRecord.from_state(config)
        self.metric_name = metric_name
        self.metric_cmp_fn = metric_cmp_fn
        self.resume = resume
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._checked_file = False
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Check the metric after every run of ``engine``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _recorded(self, name: str, space: str | None) -> float | None:
        if not (self.resume and self.ckpt_path.is_file()):
            return None
        saved = load_checkpoint(self.ckpt_path).get("metric", {})
        if saved.get("name") == name and saved.get("feature_space") == space:
            self.best_epoch = saved.get("epoch")
            return float(saved["value"])
        return None

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        space = getattr(engine.state, "report", {}).get("feature_space")
        if not self._checked_file:
            self._checked_file = True
            self.best = self._recorded(name, space)
        compare = self.metric_cmp_fn or metric_cmp_fn_for(name)
        if not math.isfinite(value) or (self.best is not None and not compare(value, self.best)):
            return
        state = {key: obj.state_dict() for key, obj in self.save_dict.items()}
        state["metric"] = {"name": name, "value": value, "epoch": int(engine.state.epoch), "feature_space": space}
        save_checkpoint(state, self.ckpt_path)
        self.best, self.best_epoch = value, int(engine.state.epoch)
        self.logger.info("best %s = %.6g at epoch %d: saved %s", name, value, self.best_epoch, self.ckpt_path)

"""Say at the start of a run what it found: volumes by format, subjects, slices per class, what was skipped and why."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from ..metrics.report import write_json_atomic

__all__ = ["CohortSummaryWriter"]


class CohortSummaryWriter:
    """Ignite handler: when training starts, log the cohort's summary and write it to ``output_dir/cohort.json``.

    The summary (:meth:`~monai_mri_gan.data.SliceCohort.summary`) names skipped inputs by their paths: the file is a
    local output, like the logs (see the privacy contract in the docs). A cohort in which a volume gave a single
    slice (a 2D input) is said so with a warning, since a one-slice volume is rarely what a user meant.

    Args:
        cohort: the run's :class:`~monai_mri_gan.data.SliceCohort`.
        output_dir: the run's output folder.
        class_names: names of the class indices.
    """

    def __init__(self, cohort: Any, output_dir: str | os.PathLike, class_names: Sequence[str] | None = None) -> None:
        self.cohort = cohort
        self.path = Path(output_dir) / "cohort.json"
        self.class_names = class_names
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        """Write the summary once, when the engine starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        summary = self.cohort.summary(self.class_names)
        write_json_atomic(summary, self.path)
        volumes, slices = summary["volumes"], summary["slices"]
        per_class = ", ".join(f"{k} {v}" for k, v in slices.items() if k != "total")
        formats = ", ".join(f"{n} {fmt}" for fmt, n in summary["formats"].items())
        self.logger.info("cohort: %d of %d volumes used (%s), %d subjects, %d slices (%s), %d skipped; see %s",
                         volumes["used"], volumes["read"], formats, summary["subjects"], slices["total"], per_class,
                         volumes["skipped"], self.path)
        for skipped in summary["skipped"]:
            self.logger.warning("skipped %s: %s", skipped["input"], skipped["reason"])
        if summary["single_slice_volumes"]:
            self.logger.warning("%d volume(s) gave a single slice (2D inputs?): each trains as a one-slice volume.",
                                summary["single_slice_volumes"])

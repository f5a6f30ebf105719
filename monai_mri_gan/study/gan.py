"""The generators of a study condition: trained by their own bundles on that condition's training subjects only."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import replace_atomically
from .splits import SubjectSplit, check_no_leakage

__all__ = ["bundle_config", "train_bundle", "write_training_datalist"]


def bundle_config(config: str | os.PathLike) -> Path:
    """A bundle's ``configs/train.json``, checked to exist.

    Args:
        config: the file (the package does not ship the bundles: pass ``<bundle_root>/configs/train.json``).

    Raises:
        FileNotFoundError: when there is no file there.
    """
    path = Path(config).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the training bundle's config file is not there; pass the train.json of "
                                "the bundle (e.g. bundles/brain_tumour_painter/configs/train.json).")
    return path


def write_training_datalist(items: Sequence[Mapping[str, Any]], split: SubjectSplit, path: str | os.PathLike) -> Path:
    """Write the datalist of one condition's training subjects, refusing any held-out subject.

    Args:
        items: datalist items with ``subject``.
        split: the study's split; an item of a validation or test subject is refused.
        path: the JSON to write (atomically; replaced if it exists).

    Raises:
        SubjectLeakageError: when an item belongs to a validation or test subject.
    """
    check_no_leakage([str(i["subject"]) for i in items], split)
    document = {"description": "training subjects of one study condition", "training": [dict(i) for i in items]}
    data = json.dumps(document, indent=1).encode("utf-8")
    return replace_atomically(path, lambda handle: handle.write(data), overwrite=True)


def train_bundle(config: str | os.PathLike, datalist: str | os.PathLike, output_dir: str | os.PathLike,
                 max_epochs: int, seed: int = 0, **overrides: Any) -> Path:
    """Train a bundle's GAN on a datalist, with evaluation off and one checkpoint and sample grid at the end.

    The bundle's ``train.json`` runs through ``monai.bundle.ConfigWorkflow`` as ``python -m monai.bundle run`` would
    run it, with ``datalist`` and ``output_dir`` set. Like any run of the bundle, it seeds the global random state;
    unlike one, it leaves the caller's logging as it is (the bundle's ``logging.conf`` would replace its handlers).

    Args:
        config: the bundle's ``configs/train.json`` (see :func:`bundle_config`).
        datalist: the training datalist (see :func:`write_training_datalist`).
        output_dir: the run's folder (a previous run there is not resumed).
        max_epochs: epochs to train.
        seed: the bundle's seed.
        overrides: further top-level bundle overrides (e.g. ``image_size``).

    Returns:
        the path of the final checkpoint.
    """
    from monai.bundle import ConfigWorkflow

    settings = {"datalist": str(datalist), "output_dir": str(output_dir), "max_epochs": int(max_epochs),
                "seed": int(seed), "resume": False, "checkpoint_every": int(max_epochs),
                "sample_every": int(max_epochs), "log_every": 10**9}
    workflow = ConfigWorkflow(config_file=str(bundle_config(config)), workflow_type="train",
                              logging_file=False,
                              **{**settings, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return Path(output_dir) / f"checkpoint_epoch{int(max_epochs):04d}.pt"

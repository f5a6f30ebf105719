"""The run record and its checkpoints: what a training run is, written into every checkpoint, and rebuilt from it.

This module is the one owner of the checkpoint contract (GUIDE.md, "Checkpoints and the run record"). Training writes
checkpoints through :func:`save_checkpoint` with a :class:`RunRecord` under ``"config"``; evaluation, synthesis,
export and the study find them with :func:`resolve_checkpoint`, load them with :func:`load_checkpoint`
(``weights_only=True``) and rebuild networks and slicing with :func:`build_network`,
:func:`generator_from_checkpoint` and :func:`cohort_from_record`. Nothing else reads a checkpoint's layout.

Training also leaves its EMA generator as a MONAI bundle's model file, ``models/model.pt`` (:func:`export_model`):
a plain state dict, as model-zoo tools load it, with the run record beside it in ``models/model_record.json``.
:func:`load_checkpoint` reads that pair as a checkpoint, so everything that takes a checkpoint takes a model file.

A record holds the GAN family, every network's class and full constructor arguments (taken from the objects, see
:class:`~monai_mri_gan.networks.RecordsArguments`), the slicing settings, the class names, the run's settings and
the versions of the software that wrote it. Its state is plain JSON-like values, so ``weights_only`` loading reads it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import torch

from .data import SliceCohort
from .errors import RunMismatchError
from .networks import LesionPainterDiscriminator, LesionPainterGenerator, SliceDiscriminator, SliceGenerator
from .utils import replace_atomically
from .version import __version__

__all__ = [
    "CHECKPOINT_PATTERN",
    "FAMILIES",
    "MODEL_FILE",
    "NETWORKS",
    "RandomState",
    "RunRecord",
    "build_network",
    "check_fingerprint",
    "check_network",
    "cohort_from_record",
    "export_model",
    "generator_from_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "model_record_path",
    "read_model_record",
    "resolve_checkpoint",
    "run_fingerprint",
    "run_folder",
    "run_record",
    "save_checkpoint",
]

CHECKPOINT_PATTERN = re.compile(r"^checkpoint_epoch(\d+)\.pt$")
FINGERPRINT_FILE = "run_fingerprint.json"
MODEL_FILE = "models/model.pt"
"""Where training leaves its generator's weights in its output folder, as a MONAI bundle holds them."""

logger = logging.getLogger(__name__)

FAMILIES = ("whole_slice", "lesion_painter")
"""The GAN families a run record may name."""

NETWORKS: dict[str, type[torch.nn.Module]] = {
    "monai_mri_gan.networks.SliceGenerator": SliceGenerator,
    "monai_mri_gan.networks.SliceDiscriminator": SliceDiscriminator,
    "monai_mri_gan.networks.LesionPainterGenerator": LesionPainterGenerator,
    "monai_mri_gan.networks.LesionPainterDiscriminator": LesionPainterDiscriminator,
}
"""Network classes a record may name; anything else is refused, never imported by name from a checkpoint."""


def _class_name(network: torch.nn.Module) -> str:
    for name, cls in NETWORKS.items():
        if type(network) is cls:
            return name
    raise ValueError(f"{type(network).__qualname__} is not a network a run record can rebuild; "
                     f"known: {sorted(NETWORKS)}.")


def _plain(value: Any) -> Any:
    """JSON-like copy of ``value`` (tuples become lists), so ``weights_only`` loading and trackers read it."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # a subclass such as torch's TorchVersion is refused by weights_only loading
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"a run record holds plain values only; got {type(value).__name__} ({value!r}).")


class RunRecord:
    """What a training run is, as a checkpoint entry (``state_dict``/``load_state_dict``).

    Args:
        family: the GAN family, one of :data:`FAMILIES`.
        networks: the run's networks by role (``"generator"``, ``"discriminator"``); each must record its
            constructor arguments (:class:`~monai_mri_gan.networks.RecordsArguments`) and be one of :data:`NETWORKS`.
        slicing: the slicing settings (:func:`~monai_mri_gan.data.slice_transforms` arguments but ``image_size``).
        class_names: names of the classes, in label order.
        settings: further plain settings worth keeping with the weights (seed, epochs, loss, learning rate...).
        painting: the lesion painter's conditioning (``label_values``, ``crop_size``, ``dilate_px``, ``band_px``),
            which synthesis must reproduce; None for other families.

    Raises:
        ValueError: on an unknown family, a network without recorded arguments or not in :data:`NETWORKS`.
    """

    def __init__(self, family: str = "whole_slice", networks: Mapping[str, torch.nn.Module] | None = None,
                 slicing: Mapping[str, Any] | None = None, class_names: Sequence[str] | None = None,
                 settings: Mapping[str, Any] | None = None, painting: Mapping[str, Any] | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown GAN family {family!r}; known: {FAMILIES}.")
        specs = {}
        for role, network in (networks or {}).items():
            if not hasattr(network, "init_args"):
                raise ValueError(f"the {role} ({type(network).__qualname__}) does not record its arguments.")
            specs[role] = {"_target_": _class_name(network), "args": _plain(network.init_args)}
        generator = specs.get("generator", {}).get("args", {})
        self.state = {
            "family": family,
            "networks": specs,
            # what evaluation and synthesis ask most often, read off the generator's own arguments
            "image_size": generator.get("image_size"),
            "latent_dim": generator.get("latent_dim"),
            "num_classes": generator.get("num_classes", 0),
            "class_names": _plain(list(class_names or [])),
            "slicing": _plain(dict(slicing or {})),
            "settings": _plain(dict(settings or {})),
            "painting": _plain(dict(painting)) if painting is not None else None,
            "versions": _plain({"monai_mri_gan": __version__, "monai": monai.__version__, "torch": torch.__version__}),
        }

    @classmethod
    def from_state(cls, state: RunRecord | Mapping[str, Any]) -> RunRecord:
        """A record holding ``state`` as it is (a saved record, or any plain mapping a caller wants kept)."""
        if isinstance(state, RunRecord):
            return state
        record = cls.__new__(cls)
        record.load_state_dict(state)
        return record

    def state_dict(self) -> dict:
        """The record, as plain values."""
        return dict(self.state)

    def load_state_dict(self, state: Mapping) -> None:
        """Replace the record with a saved one (a resumed run keeps the record it was started with)."""
        self.state = dict(state)

    def params(self) -> dict[str, Any]:
        """The record as flat parameters for experiment trackers (settings first, then the record's facts)."""
        facts = {k: self.state[k] for k in ("family", "image_size", "latent_dim", "num_classes", "class_names",
                                            "slicing")}
        networks = {f"{role}_args": spec["args"] for role, spec in self.state["networks"].items()}
        return {**self.state["settings"], **facts, **networks, "version": self.state["versions"]["monai_mri_gan"]}


def run_record(checkpoint: Mapping[str, Any]) -> dict:
    """The run record of a loaded checkpoint, as a plain mapping.

    Checkpoints written before the record existed (a flat ``config`` naming ``g_channels``, ``d_channels`` and
    friends) are read into the same form, so their generators rebuild with the widths they were trained with.

    Args:
        checkpoint: a loaded checkpoint (see :func:`load_checkpoint`).

    Raises:
        KeyError: when the checkpoint has no ``config`` entry (it was not written by a training bundle, or it is a
            model file without its record, see :func:`export_model`).
    """
    if "config" not in checkpoint:
        raise KeyError("the checkpoint has no 'config' entry (run record): it was not written by a training bundle "
                       "(a models/model.pt needs its model_record.json beside it).")
    config = dict(checkpoint["config"])
    if "networks" in config:
        return config
    # a checkpoint of version 0.1: the generator's arguments were partly implied by the class defaults
    generator = {"latent_dim": int(config["latent_dim"]), "image_size": int(config["image_size"]),
                 "channels": int(config.get("channels", 1)), "base_channels": config.get("g_channels"),
                 "max_channels": int(config.get("max_channels", 256)),
                 "num_classes": int(config.get("num_classes") or 0),
                 "embedding_dim": int(config.get("embedding_dim", 32))}
    return {**config, "family": "whole_slice", "num_classes": generator["num_classes"],
            "networks": {"generator": {"_target_": "monai_mri_gan.networks.SliceGenerator", "args": generator}}}


def build_network(record: Mapping[str, Any], role: str = "generator", seed: int | None = None) -> torch.nn.Module:
    """A freshly initialised network of a run record (class and constructor arguments as recorded).

    Args:
        record: a run record (:func:`run_record`).
        role: which network, e.g. ``"generator"`` or ``"discriminator"``.
        seed: seed of the initialisation, drawn from a private random state (the global one is untouched);
            None draws from the global random state.

    Raises:
        KeyError: when the record has no network of that role.
        ValueError: when the recorded class is not one of :data:`NETWORKS`.
    """
    networks = record["networks"]
    if role not in networks:
        raise KeyError(f"the run record has no {role!r}; it has {sorted(networks)}.")
    name = networks[role]["_target_"]
    if name not in NETWORKS:
        raise ValueError(f"the run record's {role} {name!r} is not one of {sorted(NETWORKS)}.")
    cls, kwargs = NETWORKS[name], dict(networks[role]["args"])
    if seed is None:
        return cls(**kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return cls(**kwargs)


def check_network(network: torch.nn.Module, record: Mapping[str, Any], role: str = "generator") -> None:
    """Refuse a network that is not the one a run record describes: another class or other constructor arguments.

    Args:
        network: the network built elsewhere, e.g. a bundle's ``network_def`` from its config's own arguments.
        record: a run record (:func:`run_record`).
        role: which of the record's networks it must be.

    Raises:
        KeyError: when the record has no network of that role.
        ValueError: when the class or any constructor argument differs, naming each with both values.
    """
    networks = record["networks"]
    if role not in networks:
        raise KeyError(f"the run record has no {role!r}; it has {sorted(networks)}.")
    recorded = networks[role]
    name = _class_name(network)
    if name != recorded["_target_"]:
        raise ValueError(f"the {role} given is a {name}; the run record's is a {recorded['_target_']}.")
    given, expected = _plain(network.init_args), dict(recorded["args"])
    differences = [f"{key}={given.get(key)!r} given, {expected.get(key)!r} in the run record"
                   for key in sorted(set(given) | set(expected)) if given.get(key) != expected.get(key)]
    if differences:
        raise ValueError(f"the {role} given ({name}) is not the run's: " + "; ".join(differences) + ". Build it "
                         "with the run's arguments (in a bundle: override the matching values of the config).")


def generator_from_checkpoint(ckpt_path: str | os.PathLike | Mapping[str, Any],
                              weights_key: str | None = "ema_generator", seed: int = 0,
                              device: str | torch.device = "cpu",
                              network: torch.nn.Module | None = None) -> torch.nn.Module:
    """The generator of a checkpoint, built from the checkpoint's own run record, in eval mode.

    Args:
        ckpt_path: a checkpoint file, a training output folder (its latest checkpoint), a model file
            (:func:`export_model`), or a loaded checkpoint.
        weights_key: the weights to load: ``"ema_generator"`` (the moving average, usually better) or
            ``"generator"``; None keeps the fresh initialisation (seeded with ``seed``), e.g. an untrained baseline.
        seed: seed of the fresh initialisation.
        device: device to put the generator on.
        network: the generator to load the weights into instead of building one from the record, e.g. a bundle's
            ``network_def`` built from its config's own arguments; it must be the record's (:func:`check_network`).
            The weights are loaded strictly.

    Raises:
        FileNotFoundError: when there is no checkpoint at the given path.
        KeyError: when the checkpoint has no run record or no ``weights_key`` entry.
        ValueError: when ``network`` is not the generator the record describes.
    """
    checkpoint = ckpt_path if isinstance(ckpt_path, Mapping) else load_checkpoint(ckpt_path)
    record = run_record(checkpoint)
    if network is None:
        generator = build_network(record, "generator", seed=seed)
    else:
        check_network(network, record, "generator")
        generator = network
    if weights_key is not None:
        if weights_key not in checkpoint:
            raise KeyError(f"the checkpoint has no {weights_key!r} entry; entries are {sorted(checkpoint)}.")
        generator.load_state_dict(checkpoint[weights_key])
    return generator.to(device).eval()


def cohort_from_record(record: Mapping[str, Any], datalist: Sequence[dict], cache_dir: str | os.PathLike | None = None,
                       on_error: str = "raise", **overrides: Any) -> SliceCohort:
    """A slice cohort cut exactly as the run's training data was (its slicing settings and image size).

    Args:
        record: a run record (:func:`run_record`).
        datalist: datalist items (``image``, optional ``label``, ``class``, ``subject``).
        cache_dir: optional on-disk cache of the cohort.
        on_error: "raise" or "skip" bad volumes.
        overrides: slicing arguments to change (e.g. ``min_foreground=0.0`` to keep every slice).
    """
    return SliceCohort(datalist, image_size=int(record["image_size"]), slicing=record.get("slicing"),
                       cache_dir=cache_dir, on_error=on_error, **overrides)


class RandomState:
    """The global random number generators' state, as a checkpoint entry, so resumed runs draw the same numbers."""

    def state_dict(self) -> dict:
        """Torch (CPU and CUDA) and Python RNG states."""
        state = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the states saved by :meth:`state_dict`."""
        torch.set_rng_state(state["torch"])
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` a checkpoint atomically: an interruption leaves the previous file and no partial one.

    Args:
        state: the checkpoint, ``{name: state_dict}``.
        path: destination.

    Returns:
        the destination path.
    """
    return replace_atomically(path, lambda handle: torch.save(dict(state), handle))


def latest_checkpoint(ckpt_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint with the highest epoch in ``ckpt_dir``, or None when there is none.

    Args:
        ckpt_dir: folder holding ``checkpoint_epochNNNN.pt`` files; a missing folder has none.
    """
    if ckpt_dir is None or not Path(ckpt_dir).is_dir():
        return None
    found = [(int(m.group(1)), p) for p in Path(ckpt_dir).iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return max(found)[1] if found else None


def resolve_checkpoint(ckpt_path: str | os.PathLike) -> Path:
    """The checkpoint file ``ckpt_path`` names: the file itself, or a training output folder's latest checkpoint.

    Args:
        ckpt_path: a checkpoint file or a folder of ``checkpoint_epochNNNN.pt`` files.

    Raises:
        FileNotFoundError: when there is no checkpoint there.
    """
    path = Path(ckpt_path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path}: no checkpoint_epochNNNN.pt in this folder.")
        return found
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found.")
    return path


def load_checkpoint(ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``); a folder means its latest checkpoint.

    A model file with its record beside it (:func:`export_model`) reads as the checkpoint
    ``{"config": <run record>, <weights key>: <weights>}``, e.g. ``{"config": ..., "ema_generator": ...}``.

    Args:
        ckpt_path: a checkpoint file, a folder of them, or a model file.
        map_location: device to map tensors to.

    Raises:
        FileNotFoundError: when there is no checkpoint there.
        ValueError: when a model file's record describes other weights (see :func:`read_model_record`).
    """
    path = resolve_checkpoint(ckpt_path)
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if "config" in checkpoint or not model_record_path(path).is_file():
        return checkpoint
    described = read_model_record(path)
    return {"config": described["record"], described["weights_key"]: checkpoint}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_record_path(model_path: str | os.PathLike) -> Path:
    """The run record file of a model file: ``models/model.pt`` -> ``models/model_record.json``."""
    path = Path(model_path)
    return path.with_name(f"{path.stem}_record.json")


def export_model(checkpoint: str | os.PathLike | Mapping[str, Any], model_path: str | os.PathLike,
                 weights_key: str = "ema_generator") -> Path:
    """Write a checkpoint's generator as a MONAI bundle's model file: its plain state dict, its run record beside it.

    ``model_path`` holds ``checkpoint[weights_key]`` and nothing else, so it loads as model-zoo tools load
    ``models/model.pt``: ``network.load_state_dict(torch.load(model_path, weights_only=True))``, MONAI's
    ``CheckpointLoader`` with ``load_dict={"model": network}`` and ``strict=True``, and ``python -m monai.bundle
    ckpt_export`` without ``--key_in_ckpt``. The run record (what the network is, how its data was sliced, the class
    names, the settings) would break strict loading inside it, so it goes beside it as JSON
    (:func:`model_record_path`): ``{"record", "weights_key", "iteration", "sha256"}``, where ``sha256`` is the model
    file's, so that a record never describes other weights. Both files are written atomically, the weights first.

    .. code-block:: python

        export_model("runs/brain_mri_gan", "bundles/brain_mri_gan/models/model.pt")  # the run's latest checkpoint

    Args:
        checkpoint: a loaded checkpoint, a checkpoint file, or a training output folder (its latest checkpoint).
        model_path: the model file to write (its folder is created); an existing one is replaced.
        weights_key: the checkpoint's entry to export, ``"ema_generator"`` or ``"generator"``.

    Returns:
        the model file's path.

    Raises:
        KeyError: when the checkpoint has no run record or no ``weights_key`` entry.
    """
    checkpoint = checkpoint if isinstance(checkpoint, Mapping) else load_checkpoint(checkpoint)
    record = run_record(checkpoint)
    if weights_key not in checkpoint:
        raise KeyError(f"the checkpoint has no {weights_key!r} entry; entries are {sorted(checkpoint)}.")
    buffer = io.BytesIO()
    torch.save(dict(checkpoint[weights_key]), buffer)
    weights = buffer.getvalue()
    path = replace_atomically(model_path, lambda handle: handle.write(weights))
    described = {"record": record, "weights_key": weights_key,
                 "iteration": dict(checkpoint.get("trainer") or {}).get("iteration"), "sha256": _sha256(weights)}
    replace_atomically(model_record_path(path),
                       lambda handle: handle.write((json.dumps(described, indent=1) + "\n").encode()))
    return path


def read_model_record(model_path: str | os.PathLike) -> dict:
    """The record beside a model file (:func:`export_model`), checked against the file.

    Args:
        model_path: the model file, e.g. ``models/model.pt``.

    Returns:
        ``{"record": <run record>, "weights_key": ..., "iteration": ..., "sha256": ...}``.

    Raises:
        FileNotFoundError: when the model file or its record is missing.
        ValueError: when the model file is not the one the record describes (its SHA-256 differs).
    """
    path, record_path = Path(model_path), model_record_path(model_path)
    if not record_path.is_file():
        raise FileNotFoundError(f"{record_path}: the run record of {path.name} is missing.")
    described = json.loads(record_path.read_text())
    found = _sha256(path.read_bytes())
    if found != described["sha256"]:
        raise ValueError(f"{record_path} describes other weights than {path} (SHA-256 {described['sha256']} "
                         f"recorded, {found} found): export the model again with its record "
                         "(monai_mri_gan.runs.export_model).")
    return described


def run_folder(ckpt_path: str | os.PathLike) -> Path:
    """The folder where the run of a checkpoint or model file keeps its local files (e.g. the provenance key).

    That is the file's own folder, or for a model file in a ``models`` folder (``<run>/models/model.pt``, or a
    bundle's ``models/model.pt``) the folder above it, so that local files never land beside weights that are
    shared, and a run's model file and its checkpoints share them.

    Args:
        ckpt_path: a checkpoint or model file.
    """
    folder = Path(ckpt_path).parent
    return folder.parent if folder.name == Path(MODEL_FILE).parent.name else folder


def _file_state(path: str | os.PathLike) -> list:
    stat = os.stat(path)
    return [os.fspath(path), stat.st_size, stat.st_mtime_ns]


def run_fingerprint(datalist: Sequence[Mapping[str, Any]], record: RunRecord | Mapping[str, Any]) -> dict:
    """What makes a training folder's run this run: its data (every file with its size and modification time) and
    its run record (without ``max_epochs``, so that ``--max_epochs N`` continues a run, and without versions).

    Args:
        datalist: the resolved datalist items the run trains on.
        record: the run record.

    Returns:
        a JSON-ready mapping with ``data`` and ``run`` entries. It names the user's files: it stays in the local run
        folder (see the docs' privacy contract).
    """
    items = []
    for item in datalist:
        files = []
        for key in ("image", "label"):
            paths = item.get(key)
            for path in paths if isinstance(paths, list | tuple) else [paths] if paths is not None else []:
                files.append(_file_state(path))
        items.append({"files": files, "class": item.get("class"), "subject": item.get("subject")})
    state = RunRecord.from_state(record).state_dict()
    run = {k: v for k, v in state.items() if k != "versions"}
    run["settings"] = {k: v for k, v in dict(state.get("settings") or {}).items() if k != "max_epochs"}
    return json.loads(json.dumps({"data": items, "run": run}))


def _differences(saved: Any, current: Any, where: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(saved) | set(current), key=str):
            found += _differences(saved.get(key), current.get(key), f"{where}.{key}" if where else str(key))
        return found
    if isinstance(saved, list) and isinstance(current, list) and where == "data":
        if len(saved) != len(current):
            return [f"data: {len(current)} volumes now, {len(saved)} in the folder's run"]
        changed = [i for i, (a, b) in enumerate(zip(saved, current, strict=True)) if a != b]
        return [f"data: {len(changed)} of {len(current)} volumes differ (files, sizes, dates or classes), "
                f"the first is item {changed[0]}"] if changed else []
    return [] if saved == current else [f"{where}: {saved!r} in the folder's run, {current!r} now"]


def check_fingerprint(ckpt_dir: str | os.PathLike, fingerprint: Mapping[str, Any], resuming: bool,
                      force: bool = False) -> None:
    """Refuse to resume a training folder that holds another run; record this run's fingerprint otherwise.

    Args:
        ckpt_dir: the training output folder.
        fingerprint: this run's :func:`run_fingerprint`.
        resuming: whether a checkpoint of the folder is about to be restored.
        force: resume even when the fingerprints differ (the differences are logged, the new fingerprint kept).

    Raises:
        RunMismatchError: when resuming a folder whose recorded fingerprint differs, naming what differs.
    """
    path = Path(ckpt_dir) / FINGERPRINT_FILE
    current = json.loads(json.dumps(fingerprint))
    if resuming and path.is_file():
        differences = _differences(json.loads(path.read_text()), current)
        if differences and not force:
            raise RunMismatchError(
                f"{ckpt_dir} holds the checkpoints of another run, so it will not be resumed: "
                + "; ".join(differences[:8]) + (f" (and {len(differences) - 8} more)" if len(differences) > 8 else "")
                + ". Train into a new --output_dir to start a new run, pass --resume false to start over in this "
                "folder (its checkpoints are replaced), or --force_resume true to continue it with the new data "
                "and settings.")
        if differences:
            logger.warning("resuming %s although its run differs: %s", ckpt_dir, "; ".join(differences))
    replace_atomically(path, lambda handle: handle.write((json.dumps(current, indent=1) + "\n").encode()))

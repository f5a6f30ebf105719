"""Find volumes (DICOM series, NIfTI, NRRD, MetaImage) and their masks, and build MONAI datalists.

Every item is ``{"image": ..., "label": ... (when a mask was found), "subject": "sub-<hash>"}``. The subject
id is a one-way hash: no patient name, ID or UID from a DICOM header ever appears in a datalist.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.config import PathLike
from pydicom.dataset import Dataset

from monai_mri_gan.data.demo import demo_cohort
from monai_mri_gan.data.readers import (
    VOLUME_SUFFIXES,
    is_dicom_file,
    list_series_files,
    read_dicom_header,
    read_dicom_series_geometry,
)
from monai_mri_gan.errors import DataError, ErrorPolicy

__all__ = [
    "MASK_SUFFIXES",
    "Datalist",
    "subject_id",
    "split_volume_name",
    "discover_volumes",
    "load_datalist",
    "build_datalist",
    "class_index",
    "resolve_datalist",
]

logger = logging.getLogger(__name__)

#: a volume whose name stem ends with one of these is a mask of the image named without it.
MASK_SUFFIXES = ("_seg", "_mask", "_label", "_labels", "-seg", "_tumor", "_tumour")
# data files that sit beside a .mhd or .nhdr header and are read through it
_COMPANION_SUFFIXES = (".raw", ".zraw", ".raw.gz")


def subject_id(*parts: str) -> str:
    """Pseudonymous subject id: ``"sub-"`` and the first 12 hex digits of the SHA-256 of the parts.

    Args:
        parts: strings that identify the subject (joined with a separator before hashing).

    Returns:
        the id, e.g. ``"sub-3f2a9c0d11be"``.
    """
    return "sub-" + hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]


def split_volume_name(path: PathLike) -> tuple[str, str] | None:
    """Split a volume file name into its stem and format, from the known volume suffixes.

    Args:
        path: a file path.

    Returns:
        (stem, format), e.g. ("BraTS_001_t1ce", "nifti"); None when the name is not a volume's.
    """
    name = Path(path).name
    for suffix, fmt in VOLUME_SUFFIXES.items():
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], fmt
    return None


def _mask_base(stem: str) -> str | None:
    """The image stem a mask stem refers to, or None when the stem is not a mask's."""
    for suffix in MASK_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return None


def _sort_key(item: dict) -> str:
    image = item["image"]
    return image if isinstance(image, str) else image[0]


def _relative(path: PathLike, root: PathLike) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _visible(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


class Datalist(list):
    """Datalist items (a plain ``list`` of dicts) that also remember the inputs discovery skipped, and why.

    :class:`~monai_mri_gan.data.SliceCohort` adds :attr:`skipped` to its own, so that a run's summary
    (``cohort.json``) lists what was left out at every stage.

    Args:
        items: the datalist items.
        skipped: the errors of the inputs left out with ``on_error="skip"``.
    """

    def __init__(self, items: Sequence[dict] = (), skipped: Sequence[DataError] = ()) -> None:
        super().__init__(items)
        self.skipped = list(skipped)


def discover_volumes(root: PathLike, on_error: str = "raise", modality: str | None = None) -> Datalist:
    """Walk a folder recursively and list its DICOM series and volume files, each paired with its mask.

    DICOM files are recognised by content (with or without the ``.dcm`` extension) and grouped by series.
    ``image`` is the folder when it holds exactly one series and nothing else; otherwise it is the sorted
    list of the series' files (``SimpleITKReader`` reads such a list as one series). NIfTI (.nii, .nii.gz),
    NRRD (.nrrd, .nhdr) and MetaImage (.mha, .mhd) files are volumes; one whose stem ends with a mask suffix
    (``_seg``, ``_mask``, ``_label``, ``_labels``, ``-seg``, ``_tumor``, ``_tumour``) is the ``label`` of the
    image of the same stem in the same folder, or else of the images whose stem starts with it
    (BraTS style: ``X_seg.nii.gz`` labels ``X_t1.nii.gz``, ``X_t1ce.nii.gz``, ...), or else of the DICOM series
    whose folder beside it has the same name (``T1 POST/`` + ``T1 POST_seg.nii.gz``). Masks are never items.
    Other files are skipped with a warning.

    Args:
        root: the folder to search.
        on_error: "raise" stops at the first bad series or ambiguous pairing; "skip" logs and leaves it out.
        modality: keep only volume files whose stem ends with ``_<modality>`` (e.g. "t1ce"); DICOM series
            are not filtered.

    Returns:
        a :class:`Datalist` (a list, with the skipped inputs in ``skipped``) of items ``{"image": str | list[str],
        "label": str (when a mask was found), "subject": str}`` sorted by image path; ``subject`` is a hash of
        PatientID and StudyInstanceUID for DICOM, or of the path relative to ``root`` (stem reduced to the mask's
        for paired files, so that a subject's modalities share it).

    Raises:
        DataError: when ``root`` is not a folder or holds no volume, and (with on_error="raise") on a bad
            DICOM file or series or an image with several masks.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise DataError(root, "is not a folder.")
    policy = ErrorPolicy(on_error)
    items: list[dict] = []
    unpaired: list[tuple[str, str]] = []
    for folder, dirnames, filenames in os.walk(root_path):
        dirnames[:] = _visible(dirnames)
        files = [os.path.join(folder, n) for n in _visible(filenames)]
        found, masks = _folder_items(folder, files, root_path, policy, modality)
        items += found
        unpaired += masks
    items = _pair_series_masks(items, unpaired, policy, warn=modality is None)
    if not items and policy.errors:
        raise DataError(root, "every image volume found was skipped; " + policy.summary())
    if not items:
        raise DataError(root, "no image volumes found (looked for DICOM series, NIfTI, NRRD and MetaImage files).")
    if policy.errors:
        logger.warning(policy.summary())
    return Datalist(sorted(items, key=_sort_key), skipped=policy.errors)


def _folder_items(
    folder: str, files: list[str], root: Path, policy: ErrorPolicy, modality: str | None
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Items of the files directly inside one folder, and its masks that name no volume file there."""
    volumes, dicom = [], []
    for f in files:
        if split_volume_name(f) is not None:
            volumes.append(f)
        elif is_dicom_file(f):
            dicom.append(f)
        elif not f.lower().endswith(_COMPANION_SUFFIXES):
            logger.warning("skipped %s: not a DICOM file nor a NIfTI, NRRD or MetaImage volume.", f)
    found, unpaired = _volume_items(volumes, root, policy, modality)
    return _dicom_items(folder, dicom, root, policy) + found, unpaired


def _dicom_items(folder: str, dicom: list[str], root: Path, policy: ErrorPolicy) -> list[dict]:
    """One item per DICOM image series found among a folder's DICOM files."""
    series: dict[str, list[tuple[str, Dataset]]] = {}
    for f in dicom:
        ds = policy(read_dicom_header, f)
        if ds is None:
            continue
        if "Rows" not in ds:
            logger.warning("skipped %s: a DICOM object without an image (e.g. DICOMDIR, report).", f)
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((f, ds))
    # the folder itself names the series only when the reader, given the folder, would read exactly these files
    only_series = len(series) == 1 and sorted(f for f, _ in next(iter(series.values()))) == list_series_files(folder)
    items = []
    for members in series.values():
        paths = sorted(f for f, _ in members)
        headers = [ds for _, ds in sorted(members, key=lambda m: m[0])]
        if policy(read_dicom_series_geometry, paths, headers, folder) is None:
            continue
        ref = headers[0]
        patient, study = str(ref.get("PatientID", "")), str(ref.get("StudyInstanceUID", ""))
        subject = subject_id(patient, study) if patient or study else subject_id(_relative(folder, root))
        items.append({"image": folder if only_series else paths, "subject": subject})
    return items


def _volume_items(volumes: list[str], root: Path, policy: ErrorPolicy,
                  modality: str | None) -> tuple[list[dict], list[tuple[str, str]]]:
    """Items of a folder's volume files, images paired with their masks; and the masks (with the stem they name)
    that name no volume file of the folder."""
    images, masks = [], []
    for f in volumes:
        stem = split_volume_name(f)[0]  # type: ignore[index]
        base = _mask_base(stem)
        (masks if base is not None else images).append((f, base if base is not None else stem))
    if modality is not None:
        images = [(f, stem) for f, stem in images if stem.lower().endswith(f"_{modality.lower()}")]
    labels: dict[str, list[tuple[str, str]]] = {f: [] for f, _ in images}
    unpaired = []
    for mask, base in masks:
        targets = [f for f, stem in images if stem.lower() == base.lower()] or [
            f for f, stem in images if stem.lower().startswith((base.lower() + "_", base.lower() + "-"))
        ]
        if not targets:
            unpaired.append((mask, base))
        for f in targets:
            labels[f].append((mask, base))
    items = []
    for f, stem in images:
        pair = policy(_single_mask, f, stem, labels[f])
        if pair is None:
            continue
        item: dict[str, Any] = {"image": f}
        if pair[0] is not None:
            item["label"] = pair[0]
        item["subject"] = subject_id(_relative(Path(f).parent / pair[1], root))
        items.append(item)
    return items, unpaired


def _pair_series_masks(items: list[dict], masks: list[tuple[str, str]], policy: ErrorPolicy,
                       warn: bool) -> list[dict]:
    """Give each mask that named no volume file to the DICOM series folder of its name beside it (hospital exports
    put ``T1 POST_seg.nii.gz`` next to the series folder ``T1 POST``); warn about the masks left over."""
    folders = {os.path.normcase(os.path.normpath(i["image"])).lower(): i for i in items
               if isinstance(i["image"], str) and os.path.isdir(i["image"])}
    refused: set[int] = set()
    for mask, base in masks:
        item = folders.get(os.path.normcase(os.path.normpath(os.path.join(os.path.dirname(mask), base))).lower())
        if item is None:
            if warn:
                logger.warning("ignored mask %s: no image named like it in its folder.", mask)
        elif "label" in item:
            policy(_refuse_second_mask, item["image"], item["label"], mask)  # raises, or records and skips
            refused.add(id(item))
        else:
            item["label"] = mask
    return [i for i in items if id(i) not in refused]


def _refuse_second_mask(image: str, first: str, second: str) -> None:
    raise DataError(image, f"has several masks ({first}, {second}); keep one.")


def _single_mask(image: str, stem: str, found: list[tuple[str, str]]) -> tuple[str | None, str]:
    """The one mask of an image (or None) and the stem that names its subject; several masks is an error."""
    if len(found) > 1:
        raise DataError(image, f"has several masks ({', '.join(m for m, _ in found)}); keep one.")
    return found[0] if found else (None, stem)


def _resolve(value: Any, base: Path, datalist: PathLike, index: int, key: str) -> str | list[str]:
    """Resolve one path (or list of paths) of a datalist item against ``base`` and check it exists."""
    if isinstance(value, (list, tuple)):
        return [_resolve(v, base, datalist, index, key) for v in value]  # type: ignore[misc]
    if not isinstance(value, str) or not value:
        raise DataError(datalist, f"item {index}: '{key}' must be a path or a list of paths, got {value!r}.")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise DataError(path, f"does not exist (item {index}, '{key}', of datalist {datalist}).")
    return str(path)


def _read_datalist_json(datalist: PathLike, key: str) -> list:
    try:
        with open(datalist, encoding="utf-8") as fh:
            content = json.load(fh)
    except FileNotFoundError as err:
        raise DataError(datalist, "datalist file does not exist.") from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(datalist, f"is not a readable JSON datalist: {err}") from err
    if isinstance(content, dict):
        if key not in content:
            raise DataError(datalist, f"has no '{key}' list (keys: {', '.join(map(str, content))}).")
        content = content[key]
    if not isinstance(content, list):
        raise DataError(datalist, f"'{key}' must be a list of items.")
    return content


def class_index(value: Any, class_names: Sequence[str] | None, where: str) -> int:
    """A datalist item's class as an index: an integer as it is, or a class name looked up in ``class_names``.

    Args:
        value: the item's ``class``: an int, or a name such as ``"tumour"``.
        class_names: the names in index order (a bundle's ``class_names``); None accepts integers only.
        where: the item, for the message (e.g. ``"list.json item 3"``).

    Raises:
        DataError: on a name that is not one of ``class_names`` (the message lists them) or a value of another type.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and class_names is not None:
        if value in class_names:
            return list(class_names).index(value)
        raise DataError(where, f"unknown class {value!r}; the classes are {list(class_names)} (or their indices "
                               f"0..{len(class_names) - 1}); rename them with --class_names.")
    raise DataError(where, f"'class' must be an integer{' or a class name' if class_names else ''}, got {value!r}.")


def load_datalist(datalist: PathLike, dataset_dir: PathLike | None = None, key: str = "training",
                  class_names: Sequence[str] | None = None) -> list[dict]:
    """Read a MONAI / Decathlon datalist JSON and check that every listed file exists.

    Args:
        datalist: the JSON file: a dict holding ``key`` -> list of items, or a bare list. Items have ``image``
            (a file, a DICOM series folder, or a list of files), optional ``label`` and optional ``class`` (an
            index, or a name of ``class_names``); bare strings are taken as ``{"image": ...}``.
        dataset_dir: base folder of relative paths; default: the folder of the JSON file.
        key: which list to read from a dict datalist, e.g. "training", "validation", "test".
        class_names: the class names, in index order, that ``class`` may give instead of an index.

    Returns:
        items with absolute paths and ``class`` as an index; ``subject`` is added when missing (hash of the image
        path relative to the base folder); a given ``subject`` and other keys are kept.

    Raises:
        DataError: unreadable JSON, missing ``key``, an item without ``image``, a ``class`` that is neither an index
            nor a known name, or a listed file that does not exist (the message names it and the datalist).
    """
    base = Path(dataset_dir) if dataset_dir is not None else Path(datalist).resolve().parent
    items = []
    for index, raw in enumerate(_read_datalist_json(datalist, key)):
        item = {"image": raw} if isinstance(raw, str) else raw
        if not isinstance(item, dict) or "image" not in item:
            raise DataError(datalist, f"item {index} has no 'image'.")
        item = dict(item)
        for field in ("image", "label"):
            if field in item:
                item[field] = _resolve(item[field], base, datalist, index, field)
        if "class" in item:
            item["class"] = class_index(item["class"], class_names, f"{datalist} item {index}")
        if "subject" not in item:
            images = item["image"] if isinstance(item["image"], list) else [item["image"]]
            item["subject"] = subject_id(*(_relative(p, base) for p in images))
        items.append(item)
    return items


def build_datalist(
    dataset_dir: PathLike | None = None,
    datalist: PathLike | None = None,
    key: str = "training",
    on_error: str = "raise",
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """Build the list of volumes to train on: from a datalist JSON when given, else by searching a folder.

    Args:
        dataset_dir: folder to search (:func:`discover_volumes`), or base folder of a datalist's relative paths.
        datalist: a datalist JSON (:func:`load_datalist`); takes precedence over searching ``dataset_dir``.
        key: which list of the datalist to read.
        on_error: "raise" or "skip", for :func:`discover_volumes`.
        class_names: class names a datalist's ``class`` may give (see :func:`load_datalist`).

    Returns:
        the datalist items.

    Raises:
        ValueError: when neither ``dataset_dir`` nor ``datalist`` is given (the demo cohort is chosen elsewhere).
        DataError: see :func:`load_datalist` and :func:`discover_volumes`.
    """
    if datalist is not None:
        return load_datalist(datalist, dataset_dir=dataset_dir, key=key, class_names=class_names)
    if dataset_dir is None:
        raise ValueError("build_datalist needs dataset_dir (a folder to search) or datalist (a JSON file).")
    return discover_volumes(dataset_dir, on_error=on_error)


def resolve_datalist(dataset_dir: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None,
                     key: str = "training", on_error: str = "raise", demo_seed: int = 0,
                     class_names: Sequence[str] | None = None) -> list[dict]:
    """The datalist a bundle runs on: the user's datalist or folder, or else the embedded demo cohort.

    Args:
        dataset_dir: folder of DICOM series and volumes (searched when ``datalist`` is None), or the base folder
            of a datalist's relative paths.
        datalist: a MONAI/Decathlon datalist JSON.
        key: the datalist section to read.
        on_error: "raise" or "skip" bad inputs found while searching a folder.
        demo_seed: seed of the demo cohort used when neither ``dataset_dir`` nor ``datalist`` is given.
        class_names: class names a datalist's ``class`` may give instead of an index (a bundle's ``class_names``).

    Returns:
        datalist items with ``image``, optional ``label`` and ``class``, and a pseudonymous ``subject``.
    """
    if dataset_dir is None and datalist is None:
        path = demo_cohort(seed=demo_seed)
        logger.info("no dataset_dir or datalist given: using the embedded demo cohort at %s", path.parent)
        return load_datalist(path)
    return build_datalist(dataset_dir=dataset_dir, datalist=datalist, key=key, on_error=on_error,
                          class_names=class_names)

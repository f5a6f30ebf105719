"""The acquisition attributes of a scan that are safe to keep: a short whitelist, in BIDS names and units.

Downstream pipelines stratify by sequence (field strength, TR, TE, flip angle, contrast), so a synthetic slice's
sidecar says how its reference scan was acquired. Nothing else of a source's header is kept: free-text fields
(series and study descriptions, protocol names) often hold names and MRNs, and DICOM PS3.15 Annex E's basic profile
removes them. Each value is checked to be what its field holds (a finite number, a modality code, a flag), so no
text can travel in a field that should hold a number.

Sources: the first file of a DICOM series (times in ms, turned into BIDS seconds), or the BIDS JSON sidecar that
``dcm2niix`` writes beside a NIfTI (``<stem>.json``). Other formats carry none.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai.config import PathLike
from pydicom.dataset import Dataset

__all__ = ["ACQUISITION_FIELDS", "acquisition_json", "bids_acquisition", "checked_acquisition", "dicom_acquisition"]

logger = logging.getLogger(__name__)

ACQUISITION_FIELDS = (
    "Modality",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "FlipAngle",
    "ContrastAgentGiven",
)
"""The whitelist (BIDS names; times in seconds, field strength in tesla, flip angle in degrees).
``ContrastAgentGiven`` is a flag derived from DICOM ContrastBolusAgent or BIDS ContrastBolusIngredient; the agent's
name is not copied."""

_NUMBERS = {"MagneticFieldStrength": (0.0, 30.0), "RepetitionTime": (0.0, 100.0), "EchoTime": (0.0, 10.0),
            "InversionTime": (0.0, 100.0), "FlipAngle": (0.0, 360.0)}
_MODALITY = re.compile(r"^[A-Z]{2,4}$")
# DICOM keyword -> (BIDS name, factor to BIDS units)
_DICOM = {"Modality": ("Modality", None), "MagneticFieldStrength": ("MagneticFieldStrength", 1.0),
          "RepetitionTime": ("RepetitionTime", 1e-3), "EchoTime": ("EchoTime", 1e-3),
          "InversionTime": ("InversionTime", 1e-3), "FlipAngle": ("FlipAngle", 1.0)}


def checked_acquisition(values: Mapping[str, Any]) -> dict[str, Any]:
    """Keep the whitelisted fields whose values are what the field holds; drop everything else.

    Args:
        values: candidate attributes, in BIDS names and units.

    Returns:
        the fields of :data:`ACQUISITION_FIELDS` that passed: numbers finite and in a physical range, ``Modality``
        a 2-4 letter code, ``ContrastAgentGiven`` a bool.
    """
    kept: dict[str, Any] = {}
    for name in ACQUISITION_FIELDS:
        value = values.get(name)
        if name in _NUMBERS:
            low, high = _NUMBERS[name]
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
                    and low < float(value) <= high:
                kept[name] = round(float(value), 9)
        elif name == "Modality":
            if isinstance(value, str) and _MODALITY.match(value):
                kept[name] = value
        elif isinstance(value, bool):
            kept[name] = value
    return kept


def dicom_acquisition(ds: Dataset) -> dict[str, Any]:
    """The whitelisted acquisition attributes of a DICOM header, in BIDS names and units.

    Args:
        ds: a header read with pydicom (e.g. the first file of a series).
    """
    values: dict[str, Any] = {}
    for keyword, (name, factor) in _DICOM.items():
        element = ds.get(keyword)
        if element in (None, ""):
            continue
        try:
            values[name] = str(element).strip().upper() if factor is None else float(element) * factor
        except (TypeError, ValueError):
            continue  # a malformed number is left out, not guessed
    if "ContrastBolusAgent" in ds:
        values["ContrastAgentGiven"] = bool(str(ds.ContrastBolusAgent or "").strip())
    return checked_acquisition(values)


def bids_acquisition(image_path: PathLike) -> dict[str, Any]:
    """The whitelisted acquisition attributes of a NIfTI's BIDS sidecar (``<stem>.json`` beside it), if any.

    A sidecar that is not valid JSON is ignored with a warning: it is optional metadata, not the image.

    Args:
        image_path: the ``.nii`` or ``.nii.gz`` file.
    """
    path = Path(image_path)
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    sidecar = path.with_name(stem + ".json")
    if not sidecar.is_file():
        return {}
    try:
        values = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        logger.warning("ignored the BIDS sidecar %s: it is not readable JSON (%s).", sidecar, err)
        return {}
    if not isinstance(values, dict):
        return {}
    values = dict(values)
    if "ContrastBolusIngredient" in values:
        values["ContrastAgentGiven"] = bool(str(values["ContrastBolusIngredient"] or "").strip())
    return checked_acquisition(values)


def acquisition_json(values: Mapping[str, Any]) -> str:
    """The attributes as compact, sorted JSON: one string per volume, which MONAI collates like any meta value."""
    return json.dumps(checked_acquisition(values), sort_keys=True, separators=(",", ":"))

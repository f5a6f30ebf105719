"""Provenance records and privacy checks for synthetic outputs.

Every synthetic NIfTI has a JSON sidecar beside it (``slice.nii.gz`` -> ``slice.json``) built by
:func:`provenance_record`: it says the file is synthetic, which generator, checkpoint, seed and sample made it,
the class (or mask) it was conditioned on, and whose geometry it borrows, as a one-way hash of the reference's
source identifier and never the identifier itself. :data:`PHI_KEYS` lists DICOM keywords that must never reach an
output: :func:`write_sidecar` refuses records that hold any of them, and :func:`scrub_check` audits written files
for known identifier values.

An unkeyed hash of a path or name can be linked back to it by anyone who can guess the name (hash the candidates and
compare). Where a sidecar names real data, :func:`keyed_id` gives a keyed id instead (HMAC-SHA256) under a random
key that :func:`provenance_key` keeps in the local training run folder: whoever holds the key can tell which real
slice an output came from; nobody else can.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import platform
import secrets
import zipfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import monai
import nibabel
import numpy as np
import torch

from ..data.acquisition import checked_acquisition
from ..utils import commit_file, replace_atomically, stage_file
from ..version import __version__

__all__ = [
    "NIFTI_SUFFIXES",
    "PHI_KEYS",
    "PROVENANCE_KEY",
    "find_forbidden",
    "find_phi_keys",
    "keyed_id",
    "provenance_key",
    "provenance_record",
    "scrub_check",
    "sha256_file",
    "sha256_text",
    "sidecar_path",
    "sidecar_bytes",
    "synthetic_descrip",
    "write_sidecar",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
"""File name endings of NIfTI outputs, longest first."""

PHI_KEYS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientComments",
    "IssuerOfPatientID",
    "MedicalRecordLocator",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "DeviceSerialNumber",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "StudyID",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "InstanceCreationDate",
    "StudyTime",
    "SeriesTime",
    "AcquisitionTime",
    "ContentTime",
    "AcquisitionDateTime",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "MediaStorageSOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "StorageMediaFileSetUID",
    "IrradiationEventUID",
)
"""DICOM keywords whose values identify a patient, a visit or a site; no output may carry them."""

PROVENANCE_KEY = "provenance_key"
"""File name of the keyed ids' secret key in a training run folder (see :func:`provenance_key`)."""

_PHI_KEY_SET = frozenset(PHI_KEYS)
_SHA256_HEX = frozenset("0123456789abcdef")
_DESCRIP_BYTES = 80
_KEY_BYTES = 32


def sha256_text(text: str) -> str:
    """The hex SHA-256 of ``text`` encoded as UTF-8 (a one-way stand-in for an identifier)."""
    return hashlib.sha256(str(text).encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """The hex SHA-256 of a file's bytes, read in chunks so that large checkpoints need little memory.

    Args:
        path: the file to hash.
        chunk_size: bytes read at a time.

    Returns:
        64 lower-case hex digits.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def provenance_key(path: str | os.PathLike) -> bytes:
    """The secret key of :func:`keyed_id`, read from ``path``, which is created the first time (never overwritten).

    The key is 32 random bytes, stored as 64 hex digits and a newline in a file of mode 0600, written to a private
    temporary file and linked into place, so two processes creating it at once end up using the same key. It
    belongs in the local run folder (``<run>/provenance_key``) and must never be shared with the outputs it keys.

    Args:
        path: the key file.

    Returns:
        the key.

    Raises:
        ValueError: when the file exists but does not hold a key.
    """
    path = Path(path)
    if not path.exists():
        text = f"{secrets.token_hex(_KEY_BYTES)}\n".encode("ascii")
        staged = stage_file(path, lambda handle: handle.write(text), mode=0o600)
        try:
            commit_file(staged, path, overwrite=False)
        except FileExistsError:
            pass  # created by another process in the meantime: its key is the one to use
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if len(text) != 2 * _KEY_BYTES or not set(text) <= _SHA256_HEX:
        raise ValueError(f"{path}: not a provenance key (expected {2 * _KEY_BYTES} lower-case hex digits).")
    return bytes.fromhex(text)


def run_provenance_key(key_path: str | os.PathLike, output_dir: str | os.PathLike) -> bytes:
    """The run folder's key (:func:`provenance_key`) for the keyed ids of outputs written to ``output_dir``.

    Args:
        key_path: the key file, in the training run folder.
        output_dir: where the shareable outputs go.

    Raises:
        ValueError: when the key would lie inside ``output_dir``: sharing the outputs would share the key.
    """
    if Path(output_dir).resolve() in Path(key_path).resolve().parents:
        raise ValueError(f"the provenance key {key_path} lies inside the output folder {output_dir}: sharing the "
                         "outputs would share the key.")
    return provenance_key(key_path)


def keyed_id(key: bytes, *parts: str) -> str:
    """A non-reversible id of real data (a slice, a lesion's source) that only the key's holder can link back.

    Args:
        key: the secret key (see :func:`provenance_key`).
        parts: strings that identify the data (joined with a separator before hashing); a first part naming the
            kind of data (e.g. ``"base_slice"``) keeps ids of different kinds apart.

    Returns:
        64 hex digits: the HMAC-SHA256 of the joined parts under ``key``.
    """
    return hmac.new(key, "\x1f".join(str(p) for p in parts).encode("utf-8"), hashlib.sha256).hexdigest()


def _software_versions() -> dict[str, str]:
    """Versions of the software that wrote a synthetic file."""
    return {
        "monai_mri_gan": __version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "nibabel": nibabel.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _affine_list(affine: Any) -> list[list[float]]:
    """A 4x4 affine as nested lists of floats; raises ValueError for any other shape or a non-finite value."""
    array = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    if array.shape != (4, 4) or not np.isfinite(array).all():
        raise ValueError(f"the reference affine must be a finite 4x4 matrix, got shape {array.shape}.")
    return array.tolist()


def provenance_record(
    generator_name: str,
    generator_version: str,
    checkpoint_sha256: str,
    seed: int,
    sample_index: int,
    class_name: str | None,
    class_index: int | None,
    reference_id: str,
    reference_slice_index: int,
    reference_affine: Any,
    reference_axis: int = 2,
    mask_id: str | None = None,
    created: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    reference_acquisition: Mapping[str, Any] | str | None = None,
) -> dict[str, Any]:
    """The provenance of one synthetic slice, as a JSON-ready dict for its sidecar.

    Identifiers of real data (the reference's and the mask's source path or name) enter the record only as
    SHA-256 hashes, so the sidecar can be matched against a known source without revealing it.

    Args:
        generator_name: name of the generator network, e.g. ``"ConditionalDCGANGenerator"``.
        generator_version: version of the generator code or bundle.
        checkpoint_sha256: SHA-256 of the checkpoint file (see :func:`sha256_file`).
        seed: seed of the random generator the latent vector was drawn from.
        sample_index: index of this sample among those drawn with ``seed``.
        class_name: class the sample was conditioned on (e.g. ``"tumour"``), or None for an unconditional one.
        class_index: index of that class, or None.
        reference_id: a keyed id (:func:`keyed_id`) of the slice whose geometry the sample borrows; never a path or
            a plain hash of one, which anyone holding a list of candidate paths could match.
        reference_slice_index: index of the reference slice along ``reference_axis`` in that volume.
        reference_affine: the 4x4 RAS affine of the reference slice (numpy or torch).
        reference_axis: the slicing axis of the reference volume.
        mask_id: a keyed id of the mask the sample was conditioned on, if any.
        created: creation time (timezone-aware); defaults to now. Stored in UTC, ISO 8601.
        extra: further JSON-serialisable entries, checked like the rest (see :data:`PHI_KEYS`).
        reference_acquisition: how the reference scan was acquired: the reader's ``acquisition`` meta (a JSON
            string) or a mapping; only the whitelist of :func:`~monai_mri_gan.data.acquisition.checked_acquisition`
            is kept, under ``reference_acquisition``.

    Returns:
        the record, with ``"synthetic": True``.

    Raises:
        ValueError: when ``checkpoint_sha256`` is not 64 hex digits, the affine is not a finite 4x4 matrix,
            ``created`` has no timezone, or ``extra`` holds a key in :data:`PHI_KEYS` or overrides a field.
    """
    checkpoint_sha256 = str(checkpoint_sha256).lower()
    if len(checkpoint_sha256) != 64 or not set(checkpoint_sha256) <= _SHA256_HEX:
        raise ValueError(f"checkpoint_sha256 must be 64 hex digits, got {checkpoint_sha256!r}.")
    created = created or datetime.now(timezone.utc)
    if created.tzinfo is None:
        raise ValueError("created must be timezone-aware, so that it can be stored in UTC.")
    record: dict[str, Any] = {
        "synthetic": True,
        "created": created.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "generator_name": str(generator_name),
        "generator_version": str(generator_version),
        "checkpoint_sha256": checkpoint_sha256,
        "seed": int(seed),
        "sample_index": int(sample_index),
        "class_name": None if class_name is None else str(class_name),
        "class_index": None if class_index is None else int(class_index),
        "mask_id": None if mask_id is None else str(mask_id),
        "reference_geometry": {
            "reference_id": str(reference_id),
            "axis": int(reference_axis),
            "slice_index": int(reference_slice_index),
            "affine": _affine_list(reference_affine),
            "space": "RAS",
        },
        "software": _software_versions(),
    }
    if reference_acquisition is not None:
        values = json.loads(reference_acquisition) if isinstance(reference_acquisition, str) else reference_acquisition
        record["reference_acquisition"] = checked_acquisition(values)
    if extra:
        clash = sorted(set(extra) & set(record))
        if clash:
            raise ValueError(f"extra may not override provenance fields: {clash}.")
        record.update(extra)
    phi = find_phi_keys(record)
    if phi:
        raise ValueError(f"provenance record holds patient-identifying keys: {phi}.")
    return record


def synthetic_descrip(record: Mapping[str, Any]) -> str:
    """The NIfTI ``descrip`` (at most 80 ASCII bytes) for a provenance record; always starts with ``SYNTHETIC``.

    Args:
        record: a record from :func:`provenance_record`.
    """
    parts = ["SYNTHETIC", "monai-mri-gan", __version__]
    if record.get("class_name") is not None:
        parts.append(f"class={record['class_name']}")
    if record.get("seed") is not None:
        parts.append(f"seed={record['seed']}")
    if record.get("sample_index") is not None:
        parts.append(f"sample={record['sample_index']}")
    text = " ".join(parts).encode("ascii", errors="replace").decode("ascii")
    return text[:_DESCRIP_BYTES]


def find_phi_keys(obj: Any, prefix: str = "") -> list[str]:
    """Where ``obj`` (nested mappings and sequences) holds a key listed in :data:`PHI_KEYS`.

    Args:
        obj: a record or any JSON-like value.
        prefix: path of ``obj`` inside an enclosing record, used in the result.

    Returns:
        dotted paths of the offending keys (names only, never their values); empty when there are none.
    """
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if str(key) in _PHI_KEY_SET:
                found.append(path)
            if isinstance(value, Mapping | list | tuple):
                found.extend(find_phi_keys(value, path))
    elif isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            if isinstance(value, Mapping | list | tuple):
                found.extend(find_phi_keys(value, f"{prefix}[{i}]"))
    return found


def _patterns(value: str | bytes) -> list[bytes]:
    """The byte forms in which ``value`` may appear in an output: raw UTF-8 and JSON-escaped."""
    if isinstance(value, bytes):
        return [value]
    forms = [value.encode("utf-8"), json.dumps(value)[1:-1].encode("ascii")]
    return list(dict.fromkeys(forms))


def find_forbidden(data: bytes, forbidden_values: Iterable[str | bytes]) -> list[str | bytes]:
    """The values of ``forbidden_values`` found in ``data`` (case-sensitive; UTF-8 and JSON-escaped forms).

    Empty values are skipped: they identify nothing and would match everywhere.

    Args:
        data: bytes to search.
        forbidden_values: identifiers (str or bytes) that must not occur.
    """
    return [value for value in forbidden_values if value and any(p in data for p in _patterns(value))]


def scrub_check(
    paths: str | os.PathLike | Iterable[str | os.PathLike], forbidden_values: Iterable[str | bytes]
) -> list[tuple[Path, str | bytes]]:
    """Search files as bytes for identifier values that must not be there, inside compressed containers too.

    ``.gz`` files are also searched decompressed, and zip archives (PyTorch checkpoints are zip archives) member by
    member, decompressed.

    Args:
        paths: a file or folder, or several; folders are searched recursively.
        forbidden_values: identifiers (str or bytes) that must not occur, e.g. the DICOM values of
            :data:`PHI_KEYS` in the source data.

    Returns:
        one ``(path, value)`` per value found in a file; empty when the files are clean.
    """
    forbidden = list(forbidden_values)
    roots = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    files: list[Path] = []
    for root in map(Path, roots):
        files.extend(sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root])
    hits: list[tuple[Path, str | bytes]] = []
    for path in files:
        contents = [path.read_bytes()]
        if path.suffix == ".gz":
            contents.append(gzip.decompress(contents[0]))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                contents.extend(archive.read(name) for name in archive.namelist())
                contents.append("\n".join(archive.namelist()).encode("utf-8"))
        hits.extend((path, value) for value in forbidden if any(find_forbidden(c, [value]) for c in contents))
    return hits


def sidecar_path(nifti_path: str | os.PathLike) -> Path:
    """The JSON sidecar beside a NIfTI file: ``a/b.nii.gz`` and ``a/b.nii`` -> ``a/b.json``.

    Raises:
        ValueError: when ``nifti_path`` does not end in ``.nii`` or ``.nii.gz``.
    """
    path = Path(nifti_path)
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.with_name(path.name[: -len(suffix)] + ".json")
    raise ValueError(f"{path}: not a NIfTI file name (expected .nii or .nii.gz).")


def sidecar_bytes(record: Mapping[str, Any]) -> bytes:
    """A provenance record serialised as the sidecar's JSON bytes, after the privacy checks.

    Raises:
        ValueError: when the record is not marked ``"synthetic": true``, holds a key in :data:`PHI_KEYS`, or a
            value that JSON cannot hold (NaN, infinity, objects).
    """
    if record.get("synthetic") is not True:
        raise ValueError('a sidecar record must say "synthetic": true.')
    phi = find_phi_keys(record)
    if phi:
        raise ValueError(f"sidecar record holds patient-identifying keys: {phi}.")
    # One line: the indenting encoder is pure Python and would cost more than writing the NIfTI.
    return (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def write_sidecar(
    record: Mapping[str, Any], nifti_path: str | os.PathLike, overwrite: bool = False, fsync: bool = False
) -> Path:
    """Write a provenance record as the JSON sidecar of ``nifti_path``, atomically.

    Args:
        record: a record from :func:`provenance_record`.
        nifti_path: the NIfTI file the sidecar describes (it need not exist yet).
        overwrite: replace an existing sidecar.
        fsync: flush to disk before the rename.

    Returns:
        the sidecar's path.

    Raises:
        ValueError: see :func:`sidecar_bytes`.
        FileExistsError: when the sidecar exists and ``overwrite`` is False.
    """
    data = sidecar_bytes(record)
    return replace_atomically(sidecar_path(nifti_path), lambda handle: handle.write(data), overwrite=overwrite,
                              fsync=fsync)

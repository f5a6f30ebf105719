"""Synthesis: write generated slices to NIfTI with their reference's geometry and a provenance sidecar."""

from .provenance import (
    PHI_KEYS,
    atomic_write_bytes,
    find_forbidden,
    find_phi_keys,
    provenance_record,
    scrub_check,
    sha256_file,
    sha256_text,
    sidecar_path,
    synthetic_descrip,
    write_sidecar,
)
from .writer import SyntheticSliceWriter, cast_to_dtype, write_synthetic_slice

__all__ = [
    "PHI_KEYS",
    "SyntheticSliceWriter",
    "atomic_write_bytes",
    "cast_to_dtype",
    "find_forbidden",
    "find_phi_keys",
    "provenance_record",
    "scrub_check",
    "sha256_file",
    "sha256_text",
    "sidecar_path",
    "synthetic_descrip",
    "write_sidecar",
    "write_synthetic_slice",
]

"""Synthesis: write generated slices to NIfTI with their reference's geometry and a provenance sidecar."""

from .augmentation import AUGMENTED_DATALIST, build_balanced_set, synthetic_quota
from .provenance import (
    PHI_KEYS,
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
from .sampler import (
    SliceSynthesiser,
    as_flag,
)
from .writer import SyntheticSliceWriter, cast_to_dtype, write_synthetic_slice

__all__ = [
    "AUGMENTED_DATALIST",
    "PHI_KEYS",
    "SliceSynthesiser",
    "SyntheticSliceWriter",
    "as_flag",
    "build_balanced_set",
    "cast_to_dtype",
    "find_forbidden",
    "find_phi_keys",
    "provenance_record",
    "scrub_check",
    "sha256_file",
    "sha256_text",
    "sidecar_path",
    "synthetic_descrip",
    "synthetic_quota",
    "write_sidecar",
    "write_synthetic_slice",
]

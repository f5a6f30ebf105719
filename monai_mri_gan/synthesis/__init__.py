"""Synthesis: write generated and painted slices to NIfTI with their reference's geometry and a provenance sidecar."""

from ..utils import as_flag
from .augmentation import AUGMENTED_DATALIST, build_balanced_set, build_painted_set, synthetic_quota
from .painter import PAINT_METHODS, LesionPainterSynthesiser
from .provenance import (
    PHI_KEYS,
    PROVENANCE_KEY,
    find_forbidden,
    find_phi_keys,
    keyed_id,
    provenance_key,
    provenance_record,
    scrub_check,
    sha256_file,
    sha256_text,
    sidecar_path,
    synthetic_descrip,
    write_sidecar,
)
from .sampler import SliceSynthesiser, check_destinations, intensity_record
from .writer import SliceWriter, SyntheticSliceWriter, cast_to_dtype, write_synthetic_slice

__all__ = [
    "AUGMENTED_DATALIST",
    "PAINT_METHODS",
    "PHI_KEYS",
    "PROVENANCE_KEY",
    "LesionPainterSynthesiser",
    "SliceSynthesiser",
    "SliceWriter",
    "SyntheticSliceWriter",
    "as_flag",
    "build_balanced_set",
    "build_painted_set",
    "cast_to_dtype",
    "check_destinations",
    "find_forbidden",
    "find_phi_keys",
    "intensity_record",
    "keyed_id",
    "provenance_key",
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

"""The study's cohort: its datalist, and the subject each slice belongs to."""

from __future__ import annotations

import os

from ..data import SliceCohort, demo_cohort, load_datalist, resolve_datalist

__all__ = ["slice_subjects", "study_datalist"]


def study_datalist(dataset_dir: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None,
                   demo_subjects: int = 96, on_error: str = "raise", demo_seed: int = 0) -> list[dict]:
    """The study's cohort: the user's datalist or folder, or else a demo cohort of ``demo_subjects`` subjects.

    The study's default demo cohort is larger than the training bundle's (32 subjects, 8 with a tumour): with only
    4 tumour subjects to train on, a classifier learns the subjects, not the tumours, and every regime stays at
    chance on unseen subjects.

    Args:
        dataset_dir: folder of volumes and masks, or the base folder of a datalist's relative paths.
        datalist: a MONAI/Decathlon datalist JSON.
        demo_subjects: size of the demo cohort used when neither is given.
        on_error: "raise" or "skip" bad inputs found while searching a folder.
        demo_seed: seed of the demo cohort.

    Returns:
        datalist items with ``image``, optional ``label`` and ``class``, and ``subject``.
    """
    if dataset_dir is None and datalist is None:
        return load_datalist(demo_cohort(seed=int(demo_seed), num_subjects=int(demo_subjects)))
    return resolve_datalist(dataset_dir=dataset_dir, datalist=datalist, on_error=on_error)


def slice_subjects(cohort: SliceCohort) -> list[str]:
    """The subject id of every slice of a cohort (its ``subject``, else its source image path).

    Args:
        cohort: the sliced cohort.

    Returns:
        one subject id per slice, in the cohort's order.

    Raises:
        ValueError: when a slice has neither a subject id nor a source file name.
    """
    subjects = []
    for item in cohort.slices:
        subject = item.get("subject")
        if subject is None:
            subject = str(getattr(item["image"], "meta", {}).get("filename_or_obj", ""))
        if not subject:
            raise ValueError("a slice has neither a subject id nor a source file name to group it by.")
        subjects.append(str(subject))
    return subjects

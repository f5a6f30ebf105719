"""Subject-level splits of the study, the leakage guard, and the training subset of each condition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SubjectLeakageError

__all__ = ["SubjectSplit", "check_no_leakage", "split_subjects", "subject_classes", "training_subset"]


@dataclass(frozen=True)
class SubjectSplit:
    """Disjoint training, validation and test subject ids.

    Args:
        train: training subjects (the only ones a GAN or a classifier is trained on).
        validation: subjects that select a classifier's weights.
        test: subjects that score the classifiers, once.

    Raises:
        ValueError: when a subject is in two of the sets.
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        sets = {"train": set(self.train), "validation": set(self.validation), "test": set(self.test)}
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = sorted(sets[a] & sets[b])
                if shared:
                    raise ValueError(f"subjects {shared} are in both the {a} and the {b} split.")

    @property
    def held_out(self) -> frozenset[str]:
        """Validation and test subjects: what no model may be trained on."""
        return frozenset(self.validation) | frozenset(self.test)


def subject_classes(subjects: Sequence[str], classes: torch.Tensor) -> dict[str, int]:
    """The class of each subject: the largest class of its slices (1 for a subject with any tumour slice).

    Args:
        subjects: subject id of each slice.
        classes: ``(N,)`` class of each slice.

    Returns:
        subject id -> subject class, sorted by subject id.
    """
    result: dict[str, int] = {}
    for subject, c in zip(subjects, torch.as_tensor(classes).tolist(), strict=True):
        result[subject] = max(result.get(subject, 0), int(c))
    return dict(sorted(result.items()))


def split_subjects(classes: Mapping[str, int], fractions: Sequence[float] = (0.5, 0.2, 0.3),
                   seed: int = 0) -> SubjectSplit:
    """Split subjects into training, validation and test sets, stratified by subject class, never by slice.

    Within each class the subjects are shuffled with ``seed``; validation and test each get
    ``max(1, round(fraction * n))`` of them and training the rest, so every split holds every class.

    Args:
        classes: subject id -> subject class (see :func:`subject_classes`).
        fractions: shares of training, validation and test subjects (normalised to sum 1).
        seed: seed of the shuffle.

    Returns:
        the split, each part sorted.

    Raises:
        ValueError: when ``fractions`` is not three positive numbers, or a class has too few subjects to give
            each split one.
    """
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive shares (train, validation, test), got {fractions}.")
    total = float(sum(fractions))
    f_val, f_test = fractions[1] / total, fractions[2] / total
    rng = np.random.default_rng(seed)
    train: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    for c in sorted(set(classes.values())):
        members = sorted(s for s, k in classes.items() if k == c)
        order = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = max(1, round(f_val * len(order))), max(1, round(f_test * len(order)))
        if len(order) - n_val - n_test < 1:
            raise ValueError(f"class {c} has {len(order)} subject(s): too few for a training, a validation and a "
                             "test subject.")
        validation += order[:n_val]
        test += order[n_val : n_val + n_test]
        train += order[n_val + n_test :]
    return SubjectSplit(tuple(sorted(train)), tuple(sorted(validation)), tuple(sorted(test)))


def check_no_leakage(training_subjects: Iterable[str], split: SubjectSplit) -> None:
    """Refuse a training set that holds a validation or test subject.

    Args:
        training_subjects: subject ids a model is about to be trained on.
        split: the study's subject split.

    Raises:
        SubjectLeakageError: naming the held-out subjects found among ``training_subjects``.
    """
    leaked = sorted(set(training_subjects) & split.held_out)
    if leaked:
        raise SubjectLeakageError(f"{len(leaked)} validation/test subject(s) in a training set: {leaked}.")


def training_subset(subjects: Sequence[str], classes: torch.Tensor, train_subjects: Sequence[str],
                    subject_fraction: float = 1.0, tumour_share: float | None = None, seed: int = 0) -> torch.Tensor:
    """Indices of the training slices of one condition: a share of the training subjects and a tumour share.

    Subjects are kept per subject class (``max(1, round(subject_fraction * n))`` of each, from a seeded shuffle).
    Tumour slices are then dropped to reach ``tumour_share`` of the kept slices, whole subjects first (in a seeded
    order) and the last subject's slices at random; when the share asked for is above the data's, no-tumour slices
    are dropped at random instead. The same seed gives nested subsets: a smaller fraction or share keeps a subset
    of what a larger one keeps.

    Args:
        subjects: subject id of each slice of the cohort.
        classes: ``(N,)`` class of each slice (1 = tumour).
        train_subjects: the training subjects; no other subject's slice is ever returned.
        subject_fraction: share of training subjects to keep, in (0, 1].
        tumour_share: tumour share of the returned slices, in (0, 1); None keeps the data's own.
        seed: seed of the choices.

    Returns:
        sorted ``(M,)`` slice indices.

    Raises:
        ValueError: on a fraction or share out of range, or when no tumour slice is left to keep.
    """
    if not 0.0 < float(subject_fraction) <= 1.0:
        raise ValueError(f"subject_fraction must be in (0, 1], got {subject_fraction}.")
    if tumour_share is not None and not 0.0 < float(tumour_share) < 1.0:
        raise ValueError(f"tumour_share must be in (0, 1), got {tumour_share}.")
    classes = torch.as_tensor(classes).reshape(-1)
    rng = np.random.default_rng([seed, 1])
    allowed = set(train_subjects)
    per_subject = subject_classes([s for s in subjects if s in allowed],
                                  classes[[i for i, s in enumerate(subjects) if s in allowed]])
    kept_subjects: list[str] = []
    for c in sorted(set(per_subject.values())):
        members = sorted(s for s, k in per_subject.items() if k == c)
        order = [members[i] for i in rng.permutation(len(members))]
        kept_subjects += order[: max(1, round(float(subject_fraction) * len(order)))]
    kept = set(kept_subjects)
    tumour = [i for i, s in enumerate(subjects) if s in kept and int(classes[i]) == 1]
    normal = [i for i, s in enumerate(subjects) if s in kept and int(classes[i]) != 1]
    if not tumour:
        raise ValueError("the kept training subjects have no tumour slice.")
    if tumour_share is None:
        return torch.tensor(sorted(tumour + normal), dtype=torch.long)
    share = float(tumour_share)
    wanted = max(1, round(share * len(normal) / (1.0 - share)))
    if wanted <= len(tumour):
        by_subject: dict[str, list[int]] = {}
        for i in tumour:
            by_subject.setdefault(subjects[i], []).append(i)
        names = sorted(by_subject)
        chosen: list[int] = []
        for name in (names[i] for i in rng.permutation(len(names))):
            slices = by_subject[name]
            room = wanted - len(chosen)
            if len(slices) > room:
                slices = [slices[i] for i in sorted(rng.permutation(len(slices))[:room])]
            chosen += slices
            if len(chosen) == wanted:
                break
        tumour = chosen
    else:
        keep_normal = max(1, round(len(tumour) * (1.0 - share) / share))
        normal = [normal[i] for i in rng.permutation(len(normal))[:keep_normal]]
    return torch.tensor(sorted(tumour + normal), dtype=torch.long)



"""Subject-level splits of the study, the leakage guard, and the training subjects of each scarcity level."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SubjectLeakageError

__all__ = ["SubjectSplit", "check_no_leakage", "scarce_training_subjects", "split_subjects", "subject_classes"]


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


def scarce_training_subjects(split: SubjectSplit, classes: Mapping[str, int], tumour_subjects: int | None,
                             seed: int = 0) -> tuple[str, ...]:
    """The training subjects of one scarcity level: every healthy training subject and ``k`` tumour subjects.

    Scarcity is in tumour patients, not slices: the ``k`` tumour subjects keep all their slices. They are the
    first ``k`` of a seeded order of the split's tumour training subjects, so the levels of one split are nested
    (the two subjects of ``k = 2`` are among the four of ``k = 4``).

    Args:
        split: the study's split.
        classes: subject id -> subject class (1: the subject has a tumour slice).
        tumour_subjects: ``k``; None for all of them.
        seed: seed of the order.

    Returns:
        the subject ids, sorted.

    Raises:
        ValueError: when ``k`` is below 1 or above the number of tumour training subjects.
    """
    tumour = sorted(s for s in split.train if classes[s] == 1)
    healthy = [s for s in split.train if classes[s] != 1]
    k = len(tumour) if tumour_subjects is None else int(tumour_subjects)
    if not 1 <= k <= len(tumour):
        raise ValueError(f"tumour_subjects must be between 1 and the split's {len(tumour)} tumour training "
                         f"subjects, got {tumour_subjects}.")
    order = [tumour[i] for i in np.random.default_rng([seed, 7]).permutation(len(tumour))]
    return tuple(sorted(healthy + order[:k]))

"""Where placed lesions go: the healthy base slices of a cohort, and one lesion tried in base slices until it fits.

One owner for the sampling that the painter's evaluator and synthesiser share, so that both place lesions alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from ..transforms import PlaceLesiond

__all__ = ["healthy_positions", "place_in_bases"]

_SEED_RANGE = 2**31 - 1


def healthy_positions(cohort: Sequence[dict[str, Any]]) -> list[int]:
    """Positions of a slice cohort's candidate base slices: class 0 and no mask pixel at all.

    Raises:
        ValueError: when the cohort has none.
    """
    found = [i for i, s in enumerate(cohort) if int(s.get("class", 0)) == 0
             and (s.get("label") is None or not bool(torch.as_tensor(s["label"]).any()))]
    if not found:
        raise ValueError("the base cohort has no healthy slice (class 0 without any mask pixel) to paint into.")
    return found


def place_in_bases(placer: PlaceLesiond, cohort: Sequence[dict[str, Any]], positions: Sequence[int],
                   rng: np.random.Generator, base_tries: int) -> tuple[dict[str, Any], int, int]:
    """Place one bank lesion, drawn once, into base slices drawn from ``positions`` until it fits.

    ``rng`` draws the lesion's bank index, then for each try a base slice among ``positions`` of ``cohort`` and the
    seed of ``placer``. The lesion stays the same while the base slice changes: drawing another lesion when one does
    not fit would favour small lesions (a large tumour fits only the larger sections of a head), so that placed
    lesions would no longer be distributed as the bank's.

    Args:
        placer: the placement transform (reseeded at each try).
        cohort: slice items.
        positions: candidate base slices, positions in ``cohort`` (see :func:`healthy_positions`).
        rng: the sample's random generator.
        base_tries: base slices tried before giving up.

    Returns:
        the placed item (``placement`` holds ``base_tries``, the slices tried), the base slice's position and the
        placer's seed.

    Raises:
        DataError: when the lesion fits into none of the base slices tried, naming the last and why.
    """
    bank = placer.placer.bank
    index = int(rng.integers(len(bank)))
    for tries in range(1, int(base_tries) + 1):
        position = positions[int(rng.integers(len(positions)))]
        seed = int(rng.integers(_SEED_RANGE))
        placer.set_random_state(seed=seed)
        try:
            placed = placer({**cohort[position], placer.lesion_index_key: index})
        except DataError as err:
            failure = err
            continue
        placed.pop(placer.lesion_index_key)
        placed["placement"]["base_tries"] = tries
        return placed, position, seed
    raise DataError(failure.path, f"lesion {index} ({bank[index].source}) fits into none of the {base_tries} base "
                                  f"slices drawn; the last: {failure.problem}") from failure

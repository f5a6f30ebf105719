"""Which way each evaluation metric improves, for best-checkpoint selection and MONAI's ``metric_cmp_fn``."""

from __future__ import annotations

from collections.abc import Callable

from monai.engines.utils import default_metric_cmp_fn

__all__ = ["LOWER_IS_BETTER", "lower_is_better", "metric_cmp_fn_for"]

#: Metrics of :class:`~monai_mri_gan.engines.GanEvaluator` where smaller values are better.
LOWER_IS_BETTER = frozenset({"fid", "kid_mean", "kid_std", "ms_ssim", "memorisation_fraction", "memorisation_max"})


def lower_is_better(current: float, previous_best: float) -> bool:
    """``metric_cmp_fn`` for metrics where smaller is better (FID, KID, ...): True when ``current`` improves."""
    return current < previous_best


def metric_cmp_fn_for(name: str) -> Callable[[float, float], bool]:
    """The comparison of an evaluator metric: :func:`lower_is_better` or MONAI's greater-is-better.

    Args:
        name: a metric key (``fid``, ``kid_mean``, ``precision``, ``class_fidelity``, ...).
    """
    return lower_is_better if name in LOWER_IS_BETTER else default_metric_cmp_fn

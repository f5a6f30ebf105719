"""Distances between sets of image features: Fréchet distance (FID), kernel distance (KID) and precision/recall.

All functions take ``(N, D)`` feature matrices (torch tensors or anything ``torch.as_tensor`` accepts, e.g. from
:mod:`monai_mri_gan.metrics.features`), compute in float64 and return Python floats. They need neither scipy nor
any network weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = [
    "disjoint_halves",
    "distribution_metrics",
    "feature_standardisation",
    "frechet_distance",
    "kernel_inception_distance",
    "polynomial_mmd2_unbiased",
    "precision_recall",
    "real_vs_real_baseline",
]


def _as_features(feats: Any, what: str, min_rows: int = 2) -> torch.Tensor:
    feats = torch.as_tensor(feats).double()
    if feats.ndim != 2 or feats.shape[0] < min_rows:
        raise ValueError(f"{what} must be an (N, D) feature matrix with N >= {min_rows}, got {tuple(feats.shape)}.")
    if not torch.isfinite(feats).all():
        raise ValueError(f"{what} holds NaN or infinite values.")
    return feats


def _check_pair(feats_a: Any, feats_b: Any, min_rows: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _as_features(feats_a, "feats_a", min_rows), _as_features(feats_b, "feats_b", min_rows)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature dimensions differ: {a.shape[1]} and {b.shape[1]}.")
    return a, b


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` with unbiased covariances. The trace of the matrix
    square root is computed as the sum of the square roots of the eigenvalues of the symmetric matrix
    ``S_a^(1/2) S_b S_a^(1/2)`` (which has the same eigenvalues as ``S_a S_b``), in float64 and by symmetric
    eigen-decompositions only, so rank-deficient covariances (fewer samples than features, constant features)
    need no regularisation and give no complex values. Unlike ``monai.metrics.FIDMetric`` it needs no scipy and
    prints nothing; the two agree to round-off on well-conditioned covariances. Round-off below zero is clipped.

    FID is biased upwards for small sets: compare only values computed from sets of the same sizes.

    Args:
        feats_a: ``(N_a, D)`` features.
        feats_b: ``(N_b, D)`` features.

    Returns:
        the distance (>= 0), in squared feature units.

    Raises:
        ValueError: when the inputs are not finite ``(N, D)`` matrices of equal ``D`` with ``N >= 2``.
    """
    a, b = _check_pair(feats_a, feats_b)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    sqrt_a = _psd_sqrt(cov_a)
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_covmean = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_covmean
    return max(float(distance), 0.0)


def polynomial_mmd2_unbiased(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
) -> float:
    """Unbiased estimate of the squared MMD between two samples with the kernel ``(gamma x.y + coef0)^degree``.

    ``sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n)`` (Gretton et al. 2012, eq. 3).
    It can be negative when the samples come from one distribution.

    Args:
        x: ``(m, D)`` sample.
        y: ``(n, D)`` sample.
        degree: polynomial degree.
        gamma: scale of the dot product; None for ``1 / D``.
        coef0: constant term.

    Returns:
        the estimate.
    """
    x, y = _check_pair(x, y)
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (gamma * x @ x.T + coef0).pow(degree)
    k_yy = (gamma * y @ y.T + coef0).pow(degree)
    k_xy = (gamma * x @ y.T + coef0).pow(degree)
    m, n = x.shape[0], y.shape[0]
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(term_xx + term_yy - 2 * k_xy.mean())


def kernel_inception_distance(
    feats_a: Any,
    feats_b: Any,
    num_subsets: int = 10,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = 0,
) -> tuple[float, float]:
    """Kernel distance (KID, Bińkowski et al. 2018): unbiased polynomial-kernel MMD^2 averaged over random subsets.

    Each subset draws ``subset_size`` rows of each set without replacement (independently per subset), as the
    reference implementations do. The default kernel is ``(x.y / D + 1)^3``. Unlike FID the estimator is unbiased,
    so values from sets of different sizes compare, and a value within a few standard deviations of 0 means no
    detectable difference.

    Args:
        feats_a: ``(N_a, D)`` features.
        feats_b: ``(N_b, D)`` features.
        num_subsets: number of subsets.
        subset_size: rows per subset and set; clipped to ``min(N_a, N_b)``.
        degree: polynomial degree.
        gamma: scale of the dot product; None for ``1 / D``.
        coef0: constant term.
        seed: seed of the subset draws.

    Returns:
        ``(mean, std)`` of the estimates over the subsets (population standard deviation; 0 for one subset).

    Raises:
        ValueError: on malformed features, ``num_subsets < 1`` or ``subset_size < 2``.
    """
    a, b = _check_pair(feats_a, feats_b)
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be at least 1, got {num_subsets}.")
    size = min(subset_size, a.shape[0], b.shape[0])
    if size < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}.")
    generator = torch.Generator().manual_seed(seed)
    estimates = torch.tensor(
        [
            polynomial_mmd2_unbiased(
                a[torch.randperm(a.shape[0], generator=generator)[:size]],
                b[torch.randperm(b.shape[0], generator=generator)[:size]],
                degree=degree, gamma=gamma, coef0=coef0,
            )
            for _ in range(num_subsets)
        ],
        dtype=torch.float64,
    )
    return float(estimates.mean()), float(estimates.std(unbiased=False))


def _knn_radii(feats: torch.Tensor, k: int, batch_size: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    radii = []
    for start in range(0, feats.shape[0], batch_size):
        distances = torch.cdist(feats[start : start + batch_size], feats)
        # the smallest distance is the row to itself
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _coverage(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, batch_size: int) -> float:
    """Fraction of queries inside at least one ball (support row, radius)."""
    inside = [
        (torch.cdist(queries[start : start + batch_size], support) <= radii.unsqueeze(0)).any(dim=1)
        for start in range(0, queries.shape[0], batch_size)
    ]
    return float(torch.cat(inside).double().mean())


def precision_recall(real_feats: Any, fake_feats: Any, k: int = 3, batch_size: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

    Each set's manifold is the union of balls around its samples, of radius the distance to the sample's k-th
    nearest neighbour in the same set. Precision is the fraction of fakes inside the real manifold (fidelity),
    recall the fraction of reals inside the fake manifold (coverage). Distances are Euclidean, in float64, and
    computed ``batch_size`` rows at a time so that memory stays ``O(batch_size * N)``.

    Args:
        real_feats: ``(N_r, D)`` features of real images.
        fake_feats: ``(N_f, D)`` features of generated images.
        k: neighbour that sets the radii (the paper uses 3).
        batch_size: rows per distance block.

    Returns:
        ``(precision, recall)``, each in [0, 1].

    Raises:
        ValueError: on malformed features, or when a set has no more than ``k`` rows.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    real, fake = _check_pair(real_feats, fake_feats, min_rows=k + 1)
    real_radii = _knn_radii(real, k, batch_size)
    fake_radii = _knn_radii(fake, k, batch_size)
    precision = _coverage(fake, real, real_radii, batch_size)
    recall = _coverage(real, fake, fake_radii, batch_size)
    return precision, recall


def disjoint_halves(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random halves of ``range(n)`` (``n // 2`` indices each): the split of the real-vs-real floors.

    Args:
        n: number of items (>= 4).
        seed: seed of the split.

    Raises:
        ValueError: when ``n < 4``.
    """
    if n < 4:
        raise ValueError(f"need at least 4 real slices for real-vs-real floors, got {n}.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    return order[:half], order[half : 2 * half]


def real_vs_real_baseline(
    real_feats: Any, metric_fn: Callable[[torch.Tensor, torch.Tensor], Any], seed: int = 0
) -> Any:
    """A metric between two disjoint random halves of the real features: the floor a generator can reach.

    Compare a generator's figure with this floor computed at the same set size (``N // 2`` fakes), since FID
    depends on the number of samples.

    Args:
        real_feats: ``(N, D)`` features of real images, ``N >= 4``.
        metric_fn: e.g. :func:`frechet_distance`, ``functools.partial(kernel_inception_distance, ...)`` or
            :func:`precision_recall`; called as ``metric_fn(first_half, second_half)``.
        seed: seed of the split.

    Returns:
        what ``metric_fn`` returns.

    Raises:
        ValueError: when there are fewer than 4 rows.
    """
    real = _as_features(real_feats, "real_feats", min_rows=4)
    first, second = disjoint_halves(real.shape[0], seed)
    return metric_fn(real[first], real[second])


def feature_standardisation(reference: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and scale that put every feature of a reference set on one footing.

    Features of unrelated units (grey levels, squared grey levels, fractions) would otherwise let a few large ones
    dominate FID, KID and the k-NN radii; standardising every set with the real (reference) set's statistics gives
    each feature the same weight. A feature (nearly) constant over the reference keeps its own units (scale 1)
    rather than exploding.

    Args:
        reference: ``(N, D)`` features of the reference (real) set.

    Returns:
        ``(mean, scale)``, each ``(D,)``: use ``(features - mean) / scale`` for the reference and every other set.
    """
    reference = _as_features(reference, "reference")
    mean, std = reference.mean(0), reference.std(0)
    return mean, torch.where(std > 1e-6 * (reference.abs().mean(0) + 1e-12), std, torch.ones_like(std))


def distribution_metrics(real_feats: Any, fake_feats: Any, kid_subsets: int = 10, kid_subset_size: int = 1000,
                         pr_k: int = 3, seed: int = 0) -> dict[str, float]:
    """FID, KID and precision/recall of one set of features against the real set's.

    Args:
        real_feats: ``(N_r, D)`` features of real images.
        fake_feats: ``(N_f, D)`` features of the images judged.
        kid_subsets: see :func:`kernel_inception_distance`.
        kid_subset_size: see :func:`kernel_inception_distance`.
        pr_k: see :func:`precision_recall`.
        seed: seed of the KID subsets.

    Returns:
        ``fid`` (:func:`frechet_distance`), ``kid_mean`` and ``kid_std`` (:func:`kernel_inception_distance`),
        ``precision`` and ``recall`` (:func:`precision_recall`).
    """
    kid_mean, kid_std = kernel_inception_distance(real_feats, fake_feats, num_subsets=kid_subsets,
                                                  subset_size=kid_subset_size, seed=seed)
    precision, recall = precision_recall(real_feats, fake_feats, k=pr_k)
    return {"fid": frechet_distance(real_feats, fake_feats), "kid_mean": kid_mean, "kid_std": kid_std,
            "precision": precision, "recall": recall}

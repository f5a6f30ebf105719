"""Shared fixtures: small volumes with oblique, anisotropic, non-identity geometry."""

import numpy as np
import pytest
import torch

from monai_mri_gan.utils import rotation_matrix


def oblique_affine(spacing=(0.9, 1.1, 2.5), angles=(0.15, -0.1, 0.2), origin=(-60.5, 40.25, -33.0)) -> np.ndarray:
    """A RAS affine with rotation about all three axes, anisotropic spacing and an off-centre origin."""
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(angles) @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: the machine's two cores are shared, and oversubscribed threads stall."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def gan(tmp_path_factory):
    """The tiny bundle-trained checkpoint shared by the synthesis, augmentation and export tests (``tiny_gan``)."""
    from test_synthesis import tiny_gan

    return tiny_gan(tmp_path_factory)

"""Shared fixtures: small volumes with oblique, anisotropic, non-identity geometry."""

import numpy as np
import pytest
import torch


def oblique_affine(spacing=(0.9, 1.1, 2.5), angles=(0.15, -0.1, 0.2), origin=(-60.5, 40.25, -33.0)) -> np.ndarray:
    """A RAS affine with rotation about all three axes, anisotropic spacing and an off-centre origin."""
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
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

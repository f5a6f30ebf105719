"""Handlers: EMA formula, atomic checkpoints, resume lookup, divergence guard, sample grid layout."""

import math
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from monai_mri_gan.errors import TrainingDiverged
from monai_mri_gan.handlers import DivergenceGuard, GanCheckpointSaver, GeneratorEMA, ema_copy, every_n, sample_grid
from monai_mri_gan.runs import RandomState, latest_checkpoint, load_checkpoint, save_checkpoint


def _engine(outputs):
    engine = Engine(lambda e, b: outputs[e.state.iteration - 1])
    return engine


def test_ema_follows_formula():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    ema = ema_copy(net)
    assert not any(p.requires_grad for p in ema.parameters())
    start = [p.detach().clone() for p in ema.parameters()]
    handler = GeneratorEMA(net, ema, decay=0.9, warmup=False)
    engine = Engine(lambda e, b: None)
    handler.attach(engine)

    @engine.on(Events.ITERATION_STARTED)
    def move(e):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)

    engine.run([0, 1], max_epochs=1)
    for s, p, e in zip(start, net.parameters(), ema.parameters(), strict=True):
        # p_t = s + t; ema_1 = .9 s + .1 (s + 1); ema_2 = .9 ema_1 + .1 (s + 2)
        ema1 = 0.9 * s + 0.1 * (s + 1)
        expected = 0.9 * ema1 + 0.1 * (s + 2)
        torch.testing.assert_close(e, expected)
        torch.testing.assert_close(p, s + 2)


def test_ema_warmup_decay():
    net = torch.nn.Linear(1, 1)
    h = GeneratorEMA(net, ema_copy(net), decay=0.999)
    assert h.current_decay(1) == pytest.approx(2 / 11)
    assert h.current_decay(10**6) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="decay"):
        GeneratorEMA(net, ema_copy(net), decay=1.0)


def test_every_n():
    f = every_n(3)
    assert [f(None, i) for i in range(1, 7)] == [False, False, True, False, False, True]
    with pytest.raises(ValueError):
        every_n(0)


def test_save_checkpoint_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint({"a": Unpicklable()}, path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]
    torch.testing.assert_close(torch.load(path, weights_only=True)["a"], torch.ones(2))


def test_checkpoint_saver_rotation_and_refuses_nan(tmp_path):
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    saver = GanCheckpointSaver(tmp_path, {"net": net, "rng": RandomState()}, keep_last=2)
    saver.attach(engine)
    engine.run([0], max_epochs=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch0002.pt", "checkpoint_epoch0003.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch0003.pt"
    state = load_checkpoint(tmp_path)
    torch.testing.assert_close(state["net"]["weight"], net.weight)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    engine2 = Engine(lambda e, b: None)
    engine2.state.epoch = 3
    with pytest.raises(RuntimeError, match="non-finite values in net.weight"):
        saver(engine2)
    torch.testing.assert_close(load_checkpoint(tmp_path)["net"]["bias"], net.bias)


def test_load_checkpoint_missing(tmp_path):
    assert latest_checkpoint(tmp_path / "nope") is None
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_random_state_roundtrip():
    rs = RandomState()
    state = rs.state_dict()
    a = torch.rand(3)
    rs.load_state_dict(state)
    torch.testing.assert_close(torch.rand(3), a)


def test_divergence_guard_message(tmp_path):
    save_checkpoint({}, tmp_path / "checkpoint_epoch0001.pt")
    outputs = [[{"loss": {"g_loss": 1.0, "d_loss": 0.5}}], [{"loss": {"g_loss": float("nan"), "d_loss": 0.5}}]]
    engine = Engine(lambda e, b: outputs[e.state.iteration - 1])
    DivergenceGuard(ckpt_dir=str(tmp_path)).attach(engine)
    with pytest.raises(TrainingDiverged, match=r"iteration 2: g_loss=nan.*checkpoint_epoch0001\.pt"):
        engine.run([0, 1], max_epochs=1)


class _Fixed(torch.nn.Module):
    """Returns a fixed (N, 1, H, W) stack whatever the latent."""

    def __init__(self, images):
        super().__init__()
        self.images = images
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z, labels=None):
        return self.images[: len(z)]


def test_sample_grid_layout_is_radiological():
    # 4 images of 2x3 (i = R axis, j = A axis); value encodes (n, i, j)
    n, h, w = 4, 2, 3
    vals = torch.arange(n * h * w, dtype=torch.float32).reshape(n, 1, h, w)
    images = vals / vals.max() * 2 - 1
    grid = sample_grid(_Fixed(images), torch.zeros(n, 5), None, rows=2)
    assert grid.shape == (2 * w, 2 * h)
    u8 = np.round((images[:, 0].numpy() + 1) / 2 * 255).astype(np.uint8)
    # row 1 of the grid, column 0 holds image 2; its top-left pixel is the most anterior (j = w-1) and most
    # right (i = h-1) voxel
    assert grid[w, 0] == u8[2, h - 1, w - 1]
    assert grid[w + w - 1, h - 1] == u8[2, 0, 0]
    assert grid[0, h] == u8[1, h - 1, w - 1]
    assert math.isclose(grid.max(), 255) and grid.min() == 0


def test_fingerprint_refuses_another_run_and_allows_more_epochs(tmp_path):
    from monai_mri_gan.errors import RunMismatchError
    from monai_mri_gan.networks import build_networks
    from monai_mri_gan.runs import RunRecord, check_fingerprint, run_fingerprint

    volume = tmp_path / "a.nii"
    volume.write_bytes(b"0" * 10)
    g, d = build_networks(image_size=32, latent_dim=8)
    record = RunRecord("whole_slice", {"generator": g, "discriminator": d}, settings={"max_epochs": 2, "seed": 0})
    datalist = [{"image": str(volume), "class": 0, "subject": "s1"}]
    check_fingerprint(tmp_path, run_fingerprint(datalist, record), resuming=False)
    more_epochs = RunRecord("whole_slice", {"generator": g, "discriminator": d}, settings={"max_epochs": 9, "seed": 0})
    check_fingerprint(tmp_path, run_fingerprint(datalist, more_epochs), resuming=True)
    other_seed = RunRecord("whole_slice", {"generator": g, "discriminator": d}, settings={"max_epochs": 2, "seed": 1})
    with pytest.raises(RunMismatchError, match="settings.seed: 0 in the folder's run, 1 now"):
        check_fingerprint(tmp_path, run_fingerprint(datalist, other_seed), resuming=True)
    volume.write_bytes(b"0" * 11)  # the data changed on disk
    with pytest.raises(RunMismatchError, match="1 of 1 volumes differ"):
        check_fingerprint(tmp_path, run_fingerprint(datalist, record), resuming=True)
    check_fingerprint(tmp_path, run_fingerprint(datalist, record), resuming=True, force=True)
    check_fingerprint(tmp_path, run_fingerprint(datalist, record), resuming=True)  # the forced run is now the folder's

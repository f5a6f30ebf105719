"""Shared helpers: atomic writes (replace or refuse, one temporary-name pattern, cleanup), rotation matrices and
where mixed precision pays."""

import os
import warnings

import numpy as np
import pytest
import torch

from monai_mri_gan.utils import (
    commit_file,
    cpu_has_bf16,
    remove_staged,
    replace_atomically,
    resolve_amp,
    rotation_matrix,
    stage_file,
)


def test_replace_atomically_replaces_or_refuses(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    assert replace_atomically(path, lambda handle: handle.write(b"one")) == path
    replace_atomically(path, lambda handle: handle.write(b"two"))
    assert path.read_bytes() == b"two"
    with pytest.raises(FileExistsError, match="out.bin: exists"):
        replace_atomically(path, lambda handle: handle.write(b"three"), overwrite=False)
    assert path.read_bytes() == b"two" and os.listdir(path.parent) == ["out.bin"]
    # the written file has the permissions of a file written directly, not a private temporary file's
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")

    def fail(handle):
        handle.write(b"partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        replace_atomically(path, fail)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["out.bin"]


def test_commit_without_overwrite_loses_a_race_safely(tmp_path):
    path = tmp_path / "out.bin"
    staged = stage_file(path, lambda handle: handle.write(b"mine"))
    assert staged.parent == tmp_path and staged.name.startswith(".out.bin.") and staged.name.endswith(".tmp")
    path.write_bytes(b"theirs")  # another writer claims the name between the check and the move
    with pytest.raises(FileExistsError):
        commit_file(staged, path, overwrite=False)
    assert path.read_bytes() == b"theirs" and not staged.exists()


def test_remove_staged_removes_only_the_temporary_files_of_its_destination(tmp_path):
    path = tmp_path / "a.nii"
    staged = [stage_file(path, lambda handle: handle.write(b"x")) for _ in range(2)]
    other = stage_file(tmp_path / "a.nii.gz", lambda handle: handle.write(b"y"))
    (tmp_path / ".a.nii.notes.tmp").write_text("not staged")
    remove_staged(path)
    assert not any(s.exists() for s in staged)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, ".a.nii.notes.tmp"])


def test_rotation_matrix():
    quarter = rotation_matrix([0.0, 0.0, np.pi / 2])
    np.testing.assert_allclose(quarter @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
    angles = (0.15, -0.1, 0.2)
    rotation = rotation_matrix(angles)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    # the order is Rz @ Ry @ Rx: x first, then y, then z
    np.testing.assert_allclose(
        rotation,
        rotation_matrix([0, 0, angles[2]]) @ rotation_matrix([0, angles[1], 0]) @ rotation_matrix([angles[0], 0, 0]),
        atol=1e-12,
    )


@pytest.mark.parametrize("capabilities, native", [
    ({"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": False, "amx_bf16": False}, False),
    ({"architecture": "x86_64", "avx2": True, "avx512_bf16": True}, True),
    ({"architecture": "x86_64", "amx_bf16": True}, True),
    ({"architecture": "aarch64", "neon": True, "bf16": True}, True),
    ({"architecture": "aarch64", "neon": True}, False),
])
def test_amp_auto_follows_the_cpus_bf16_instructions(monkeypatch, capabilities, native):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: capabilities)
    assert cpu_has_bf16() is native
    assert resolve_amp("auto", "cpu") is native and resolve_amp(" AUTO ", torch.device("cpu")) is native
    assert resolve_amp("auto", "cuda:0") is True  # fp16 with gradient scaling: no CPU instruction involved
    assert resolve_amp(False, "cpu") is False and resolve_amp("false", "cuda") is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_amp("true", "cpu") is True  # an explicit choice is obeyed, on any CPU
    assert [str(w.message) for w in caught if "no bfloat16 instructions" in str(w.message)] == ([] if native else [
        "amp is on, but this CPU has no bfloat16 instructions: autocast will be emulated and is likely several times "
        "slower than float32 (amp 'auto' leaves it off here)."])
    with pytest.raises(ValueError, match=r"amp \(true, false or auto\) must be true or false, got 'fast'"):
        resolve_amp("fast", "cpu")

"""Shared helpers: atomic writes (replace or refuse, one temporary-name pattern, cleanup) and rotation matrices."""

import os

import numpy as np
import pytest

from monai_mri_gan.utils import commit_file, remove_staged, replace_atomically, rotation_matrix, stage_file


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

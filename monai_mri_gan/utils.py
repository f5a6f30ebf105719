"""Small helpers shared by every layer: atomic file writing (outputs appear whole or not at all) and rotations.

Every file the package writes goes through :func:`replace_atomically`, or, for files that must appear together
(a synthetic NIfTI and its sidecar), through :func:`stage_file` and :func:`commit_file`: the content is written
completely to a hidden temporary file beside the destination, ``.<name>.<12 hex digits>.tmp``, and then moved into
place in one step. :func:`remove_staged` removes what an interrupted process left under that name.

:func:`resolve_amp` decides where mixed precision pays: every layer that runs networks asks it.
"""

from __future__ import annotations

import glob
import os
import secrets
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = ["as_flag", "commit_file", "cpu_has_bf16", "remove_staged", "replace_atomically", "resolve_amp",
           "rotation_matrix", "stage_file"]

# bfloat16 arithmetic in hardware: x86 AVX512-BF16 or AMX, ARM BF16 or SVE-BF16 (keys of torch.cpu.get_capabilities)
_BF16_CAPABILITIES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")

_TOKEN_BYTES = 6


def _exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f"{path}: exists; pass overwrite=True to replace it.")


def stage_file(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], fsync: bool = True,
               mode: int = 0o666) -> Path:
    """Write a file's complete content to a new hidden temporary file beside ``path``: ``.<name>.<random>.tmp``.

    The temporary file is created exclusively (never an existing file) with ``mode`` less the umask's bits, so by
    default the destination gets the same permissions as a file written directly, and a secret written with
    ``mode=0o600`` is never readable by others, not even while it is being written.

    Args:
        path: the final destination; its folder is created if needed.
        write: writes the content to a binary file handle.
        fsync: flush the file to disk (survives power loss; slower for many small files).
        mode: permission bits of the new file (the umask applies).

    Returns:
        the temporary file, to be moved into place by :func:`commit_file`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.{secrets.token_hex(_TOKEN_BYTES)}.tmp")
    try:
        with os.fdopen(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as handle:
            write(handle)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def commit_file(staged: Path, path: str | os.PathLike, overwrite: bool = True) -> Path:
    """Move a staged temporary file into place in one step; the temporary file is gone afterwards, whatever happens.

    Without ``overwrite`` the move is a hard link that fails if the destination exists, so two writers racing for
    one name cannot clobber each other (a plain existence check is used where the file system has no hard links).

    Args:
        staged: a file from :func:`stage_file`.
        path: destination.
        overwrite: replace an existing file.

    Returns:
        the destination path.

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    try:
        if overwrite:
            os.replace(staged, path)
            return path
        try:
            os.link(staged, path)
        except FileExistsError:
            raise _exists_error(path) from None
        except OSError:
            if path.exists():
                raise _exists_error(path) from None
            os.replace(staged, path)
    finally:
        staged.unlink(missing_ok=True)
    return path


def replace_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], overwrite: bool = True,
                       fsync: bool = True) -> Path:
    """Call ``write(handle)`` on a temporary file in ``path``'s folder, then move it to ``path`` in one step.

    An exception (or an interruption) leaves any previous ``path`` untouched and no temporary file behind.

    Args:
        path: the destination; its folder is created.
        write: writes the content to a binary file handle.
        overwrite: replace an existing file; when False an existing ``path`` is refused, before anything is
            written and again, race-free, when the file is moved into place (see :func:`commit_file`).
        fsync: flush the file to disk before the move.

    Returns:
        the destination path.

    Raises:
        FileExistsError: when ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise _exists_error(path)
    return commit_file(stage_file(path, write, fsync=fsync), path, overwrite=overwrite)


def remove_staged(path: str | os.PathLike) -> None:
    """Remove the temporary files that writes to ``path`` left behind (an interrupted :func:`stage_file`).

    Args:
        path: the destination whose staged files to remove.
    """
    path = Path(path)
    pattern = f".{glob.escape(path.name)}.{'[0-9a-f]' * (2 * _TOKEN_BYTES)}.tmp"
    for staged in path.parent.glob(pattern):
        staged.unlink(missing_ok=True)


def rotation_matrix(angles: Sequence[float] | np.ndarray) -> np.ndarray:
    """The 3x3 rotation ``Rz @ Ry @ Rx`` for angles (radians) about the x, y and z axes.

    Args:
        angles: the three angles, in radians.
    """
    ax, ay, az = (float(a) for a in angles)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def as_flag(value: bool | str, name: str = "flag") -> bool:
    """A boolean option from a bool or, as command lines pass them, the strings ``"true"``/``"false"`` (any case).

    Args:
        value: the option's value.
        name: the option's name, for the error message.

    Raises:
        ValueError: for any other value (``bool("false")`` would be True).
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be true or false, got {value!r}.")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 in hardware (AVX512-BF16 or AMX on x86, BF16 or SVE-BF16 on ARM)."""
    capabilities = torch.cpu.get_capabilities()
    return any(bool(capabilities.get(name, False)) for name in _BF16_CAPABILITIES)


def resolve_amp(amp: bool | str, device: str | torch.device) -> bool:
    """Whether to run under mixed precision on ``device``: ``amp`` as given, or decided for ``"auto"``.

    ``"auto"`` turns it on on CUDA (fp16 with gradient scaling in the trainer) and on a CPU with bfloat16 instructions
    (:func:`cpu_has_bf16`), and leaves it off on other CPUs: there oneDNN emulates bf16, and autocast made a MONAI
    ``BasicUNet`` step 9.6x *slower* than float32 (AMD EPYC with AVX2 only, 2 threads), where CPUs with AMX or
    AVX512-BF16 ran 1.3-2x faster. ``True`` on such a CPU is obeyed, with a warning.

    Args:
        amp: ``True``/``False``, ``"auto"``, or the strings ``"true"``/``"false"`` (any case) command lines pass.
        device: the device the networks run on.

    Raises:
        ValueError: for any other ``amp``.
    """
    device = torch.device(device)
    if isinstance(amp, str) and amp.strip().lower() == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
    on = as_flag(amp, "amp (true, false or auto)")
    if on and device.type == "cpu" and not cpu_has_bf16():
        warnings.warn("amp is on, but this CPU has no bfloat16 instructions: autocast will be emulated and is likely "
                      "several times slower than float32 (amp 'auto' leaves it off here).", stacklevel=2)
    return on

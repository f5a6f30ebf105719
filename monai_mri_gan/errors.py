"""Errors raised on bad input, and the policy that decides whether they stop a run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["DataError", "ErrorPolicy", "SubjectLeakageError", "RunMismatchError", "TrainingDiverged"]

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A problem with one input file or folder; the message always names it.

    Args:
        path: the file or folder that is at fault.
        problem: what is wrong with it, in words a user can act on.
    """

    def __init__(self, path: Any, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SubjectLeakageError(ValueError):
    """A model that must see training subjects only was given a validation or test subject."""


class ErrorPolicy:
    """Apply ``on_error`` ("raise" or "skip") to work that may fail with :class:`DataError`.

    With "skip", each failure is logged as a warning and kept in :attr:`errors`, so that a run can
    summarise what it left out at the end (:meth:`summary`).

    Args:
        on_error: "raise" (default) stops at the first bad input; "skip" logs it and carries on.

    Raises:
        ValueError: when ``on_error`` is neither "raise" nor "skip".
    """

    def __init__(self, on_error: str = "raise") -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
        self.on_error = on_error
        self.errors: list[DataError] = []

    def __call__(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Run ``func``; on :class:`DataError` raise or record it, by policy, and return None."""
        try:
            return func(*args, **kwargs)
        except DataError as err:
            self.handle(err)
            return None

    def handle(self, err: DataError) -> None:
        """Raise ``err`` (policy "raise"), or log and record it (policy "skip")."""
        if self.on_error == "raise":
            raise err
        logger.warning("skipped %s", err)
        self.errors.append(err)

    def summary(self) -> str:
        """One line per skipped input, or an empty string when nothing was skipped."""
        if not self.errors:
            return ""
        lines = [f"{len(self.errors)} input(s) skipped:"] + [f"  - {err}" for err in self.errors]
        return "\n".join(lines)


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the message names the iteration and the last good checkpoint."""


class RunMismatchError(RuntimeError):
    """A training folder holds a run of other data or settings than the one asked to resume it."""

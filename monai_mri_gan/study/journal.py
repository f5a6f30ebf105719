"""A study's journal: every finished condition on disk at once, so that an interrupted study resumes where it stopped.

The full grid of the study takes hours; a machine that is needed back, a session that ends or a power cut must not
cost the conditions already finished. The journal is a JSON-lines file: a header with the study's fingerprint
(data, settings, regimes, code: whatever changes a result), then one line per invocation start and one per finished
condition (its whole result, as :func:`~monai_mri_gan.study.driver.run_study` passes it to ``on_condition``).
Resuming with another fingerprint is refused, naming what differs: results of different studies must not mix.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["StudyJournal"]

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists, keys strings), so fingerprints compare as read."""
    return json.loads(json.dumps(value, default=float))


class StudyJournal:
    """The finished conditions of one study, appended to ``path`` as they finish.

    Args:
        path: the journal file (JSON lines).
        fingerprint: what makes two runs the same study (JSON-serialisable).
        resume: continue the study a journal at ``path`` holds; without it an existing journal with finished
            conditions is refused (hours of work are not overwritten unasked).

    Raises:
        FileExistsError: ``path`` holds finished conditions and ``resume`` is False.
        ValueError: ``resume`` is True and the journal's fingerprint differs (each differing key is named with both
            values), or the journal is not one (its first line is not a header).
    """

    def __init__(self, path: str | os.PathLike, fingerprint: Mapping[str, Any], resume: bool = False) -> None:
        self.path = Path(path)
        self.fingerprint = _plain(dict(fingerprint))
        self.conditions: list[dict[str, Any]] = []
        self.invocations: list[dict[str, Any]] = []
        lines = self._read() if self.path.is_file() else []
        if lines and "fingerprint" not in lines[0]:
            raise ValueError(f"{self.path} is not a study journal (its first line has no fingerprint).")
        finished = [line for line in lines if "condition" in line]
        if finished and not resume:
            raise FileExistsError(
                f"{self.path} holds {len(finished)} finished condition(s) of an earlier, interrupted study: pass "
                "--resume to continue it, or delete the file to start again.")
        if lines and resume:
            differing = sorted(k for k in set(self.fingerprint) | set(lines[0]["fingerprint"])
                               if self.fingerprint.get(k) != lines[0]["fingerprint"].get(k))
            if differing:
                detail = "; ".join(f"{k}: journal {lines[0]['fingerprint'].get(k)!r}, now {self.fingerprint.get(k)!r}"
                                   for k in differing)
                raise ValueError(f"cannot resume the study journalled in {self.path}: it was another study ({detail}). "
                                 "Run it with the journal's settings and code, or delete the journal to start again.")
            self.invocations = [line["invocation"] for line in lines if "invocation" in line]
            self.conditions = finished
        else:
            self._write([{"fingerprint": self.fingerprint}], mode="w")
        self.started = time.time()
        self._write([{"invocation": {"started": self.started, "resumed": len(self.conditions)}}])

    def _read(self) -> list[dict[str, Any]]:
        lines = []
        text = self.path.read_text().splitlines()
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(text):  # the line being written when the study was killed: that condition reruns
                    logger.warning("%s: its last line was cut off (%s); that condition runs again", self.path, error)
                    continue
                raise ValueError(f"{self.path}, line {number}: not JSON ({error}); the journal is damaged.") from error
        return lines

    def _write(self, lines: list[dict[str, Any]], mode: str = "a") -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open(mode) as handle:
            for line in lines:
                handle.write(json.dumps(line, default=float) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def completed(self) -> list[dict[str, Any]]:
        """The finished conditions' results, as ``run_study(completed=...)`` takes them."""
        return [line["condition"] for line in self.conditions]

    def add(self, result: Mapping[str, Any]) -> None:
        """Journal one finished condition (``run_study(on_condition=...)``)."""
        line = {"condition": _plain(dict(result)), "finished": time.time(), "started_by": self.started}
        self.conditions.append(line)
        self._write([line])

    def timeline(self, current_seconds: float) -> list[dict[str, Any]]:
        """Per invocation: when it started, the conditions it finished and its counted wall seconds. An earlier one
        counts from its start to its last finished condition (what was under way when it stopped was lost and runs
        again, counted then); this one counts ``current_seconds``. Their sum is the study's wall time."""
        rows = []
        for invocation in [*self.invocations, {"started": self.started}]:
            ends = [line["finished"] for line in self.conditions if line["started_by"] == invocation["started"]]
            current = invocation["started"] == self.started
            counted = current_seconds if current else (max(ends) - invocation["started"] if ends else 0.0)
            rows.append({"started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(invocation["started"])),
                         "conditions": len(ends), "counted_seconds": round(counted, 1)})
        return rows

    def remove(self) -> None:
        """Delete the journal once the study's record is written."""
        self.path.unlink(missing_ok=True)

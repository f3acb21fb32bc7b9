"""Many processes on one folder: which images are this process's, and claims that keep two from doing one.

Work is split by image, deterministically: of the sorted inputs, image i belongs to shard i mod N — no
padding and no duplicates (torch's DistributedSampler pads by repeating items; not for inference) — and
every image keeps the index, hence the seeds, it has in a one-process run, so outputs and metrics do not
depend on the number of processes. The shard comes from ``--shard i/N`` (a SLURM array, independent jobs)
or from torchrun's RANK and WORLD_SIZE.

Within a folder, an image is claimed before it is restored: ``.records/NAME.claim``, created exclusively
(O_EXCL) with the claimer's host and pid, removed when its record is written. A second process — another
shard, or a second command started on the same folder — skips a claimed image; a claim whose process is
gone (same host: the pid is not alive; elsewhere: older than CLAIM_STALE_SECONDS) is taken over, so a
killed process loses only the image it was on.

    from restore.shard import Shard
    mine = Shard.from_environment().items(files)      # [(index, file), ...] of this process
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from restore.errors import RestoreError

T = TypeVar("T")
#: a claim from another machine older than this is taken to be a dead process's
CLAIM_STALE_SECONDS = float(os.environ.get("RESTORE_CLAIM_STALE_SECONDS", 3600))


@dataclass(frozen=True)
class Shard:
    """This process's part of the work: image i is its own when i mod count == index."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1 and 0 <= self.index < self.count):
            raise RestoreError(f"--shard must be I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"I/N"`` (0-based I, e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
        index, sep, count = text.partition("/")
        try:
            if not sep:
                raise ValueError
            return cls(int(index), int(count))
        except ValueError:
            raise RestoreError(f"--shard must be I/N with whole numbers, e.g. 0/4; got '{text}'") from None

    @classmethod
    def from_environment(cls) -> Shard:
        """torchrun's RANK / WORLD_SIZE when set, else the whole job."""
        if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
            return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        return cls()

    def owns(self, index: int) -> bool:
        return index % self.count == self.index

    def items(self, items: Sequence[T]) -> list[tuple[int, T]]:
        """(global index, item) of this shard's items, in order."""
        return [(i, item) for i, item in enumerate(items) if self.owns(i)]


def claim(record_path: Path) -> Path | None:
    """Claim the image whose record is ``record_path``; its claim file, or None when another live process has it."""
    path = record_path.with_suffix(".claim")
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):  # a second try after taking over a stale claim
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not stale(path):
                return None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as handle:
            json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, handle)
        return path
    return None


def stale(path: Path) -> bool:
    """Whether the claim at ``path`` belongs to a process that is gone."""
    try:
        holder = json.loads(path.read_text())
        host, pid, since = holder["host"], int(holder["pid"]), float(holder["time"])
    except (OSError, ValueError, KeyError, TypeError):
        return time.time() - path.stat().st_mtime > 5 if path.exists() else True  # half-written: give it a moment
    if host == socket.gethostname():
        if pid == os.getpid():
            return True  # our own, left by an earlier run in this process
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, someone else's
        return False
    return time.time() - since > CLAIM_STALE_SECONDS


def release(claim_path: Path | None) -> None:
    if claim_path is not None:
        claim_path.unlink(missing_ok=True)

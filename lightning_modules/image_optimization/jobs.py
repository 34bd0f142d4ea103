"""Jobs: how a run's images are split into chunks, across processes, and into size groups.

A *job* is one picture to make (a content and style pair, a class to draw, an image and its
target class). A run's jobs are optimized in *chunks*, one after another, so memory stays bounded
(at most ``batch_size`` jobs per process at once), and within a chunk across processes
(``--trainer.devices N``: each process optimizes only its own share). Within a process, jobs of
one image size share one ``[B, 3, H, W]`` parameter: a *group*; an :class:`ImageSlot` says where
each job's image lives.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Hashable, Optional, Sequence

import torch

from lightning_modules.errors import UserInputError


@dataclass
class ImageSlot:
    """Where one job's image lives: row ``row`` of image group ``group``."""

    name: str
    group: int
    row: int


def plan_chunks(sizes: Sequence[Hashable], batch_size: Optional[int],
                world_size: int) -> list[list[int]]:
    """Split a run's jobs into chunks that are optimized one after another.

    Process ``r`` of ``world_size`` optimizes items ``r, r + world_size, ...`` of each chunk, so a
    chunk holds at most ``batch_size`` jobs per process.

    Args:
        sizes: One key per job, its image size: with a ``batch_size``, a chunk holds one size.
        batch_size: The most jobs one process optimizes at once; None puts every job in one
            chunk (of any sizes).
        world_size: The number of processes.

    Returns:
        The job indices of each chunk, in order; each job is in exactly one chunk.
    """
    if batch_size is None:
        return [list(range(len(sizes)))] if len(sizes) else []
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserInputError(f"batch_size must be a positive number of jobs, got {batch_size!r}.")
    by_size: dict[Hashable, list[int]] = defaultdict(list)
    for index, size in enumerate(sizes):
        by_size[size].append(index)
    width = batch_size * world_size
    return [indices[start:start + width] for indices in by_size.values()
            for start in range(0, len(indices), width)]


def size_groups(names: Sequence[str], sizes: Sequence[Hashable]) -> tuple[list[ImageSlot],
                                                                          list[list[int]]]:
    """Group jobs of one size together, in order of first appearance.

    Args:
        names: Each job's output name.
        sizes: Each job's image size.

    Returns:
        One slot per job (in the jobs' order) and, per group, the positions of its jobs.
    """
    by_size: dict[Hashable, list[int]] = defaultdict(list)
    for position, size in enumerate(sizes):
        by_size[size].append(position)
    slots: list[Optional[ImageSlot]] = [None] * len(names)
    groups = list(by_size.values())
    for group, positions in enumerate(groups):
        for row, position in enumerate(positions):
            slots[position] = ImageSlot(names[position], group, row)
    return [slot for slot in slots if slot is not None], groups


class JobPlan:
    """A run's jobs, their chunks, and the share of the current chunk this process optimizes.

    Args:
        jobs: Every job of the run, in the same order in every process.
        sizes: Each job's image size (jobs of different sizes never share a chunk when
            ``batch_size`` is set); None: all the same.
        batch_size: The most jobs one process optimizes at once; None: all at once.
        world_size: The number of processes.
        rank: This process's rank.
    """

    def __init__(self, jobs: Sequence[Any], sizes: Optional[Sequence[Hashable]] = None,
                 batch_size: Optional[int] = None, world_size: int = 1, rank: int = 0) -> None:
        self.jobs = list(jobs)
        if not self.jobs:
            raise UserInputError("There is nothing to optimize: the data gives no job.")
        keys = list(sizes) if sizes is not None else [None] * len(self.jobs)
        self.chunks = plan_chunks(keys, batch_size, world_size)
        self.world_size, self.rank = world_size, rank
        self.chunk = 0

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def indices(self) -> list[int]:
        """The indices (in ``jobs``) this process optimizes in the current chunk.

        A process with no job in the chunk gets the chunk's first (see :attr:`idle`): it keeps
        in step with the others and writes nothing.
        """
        chunk = self.chunks[self.chunk]
        return chunk[self.rank::self.world_size] or chunk[:1]

    @property
    def idle(self) -> bool:
        """This process has no job of its own in the current chunk."""
        return not self.chunks[self.chunk][self.rank::self.world_size]

    @property
    def chunk_size(self) -> int:
        """The number of jobs in the current chunk, over all processes."""
        return len(self.chunks[self.chunk])

    def current(self) -> list[Any]:
        """The jobs this process optimizes now (see :attr:`indices`)."""
        return [self.jobs[index] for index in self.indices]


def gather_objects(value: Any, world_size: int) -> list[Any]:
    """Every process's ``value``, in rank order (``[value]`` in a one-process run).

    Every process must call it at the same point.
    """
    if world_size == 1:
        return [value]
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, value)
    return gathered

"""The base of the datamodules that feed the optimizing techniques.

Such a datamodule's product is its ``jobs``: a list, built in ``setup``, that the technique
reads once (``ImageOptimization.set_jobs``). Its training loader carries no data: each item is
one optimization step, and ``trainer.max_steps`` ends each chunk of jobs.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional

import pytorch_lightning as pl
from torch.utils.data import DataLoader, IterableDataset

from lightning_modules.errors import UserInputError


class StepIndices(IterableDataset):
    """Yields 0, 1, 2, ... forever: each item is one optimization step; ``max_steps`` ends it."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


class StepLoader(DataLoader):
    """The training loader of the optimizing techniques: :class:`StepIndices`, one at a time.

    Its state is empty and it says so (``state_dict``), which tells Lightning that a run
    resumed in the middle of an epoch loses nothing.
    """

    def __init__(self) -> None:
        super().__init__(StepIndices(), batch_size=None)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Nothing to restore: the step numbers carry no data."""


class JobData(pl.LightningDataModule):
    """A datamodule whose ``jobs`` a technique optimizes, ``batch_size`` of them at a time.

    Args:
        batch_size: The most jobs one process optimizes at once; the rest wait for the next
            chunk, each job getting ``trainer.max_steps`` steps. None: all at once.
    """

    def __init__(self, batch_size: Optional[int] = None) -> None:
        super().__init__()
        if batch_size is not None and not batch_size > 0:
            raise UserInputError(f"batch_size must be positive, got {batch_size}.")
        self.batch_size = batch_size
        self.jobs: list[Any] = []

    def train_dataloader(self) -> DataLoader:
        """One item per optimization step; ``trainer.max_steps`` ends each chunk."""
        return StepLoader()

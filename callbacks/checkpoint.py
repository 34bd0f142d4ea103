"""Checkpoints that a kill or a full disk cannot spoil, and the choice of the one to go on from.

* :class:`AtomicCheckpointIO` writes each checkpoint whole or not at all (a temporary file, then
  a rename) and keeps the one before it as ``<name>.previous.ckpt``.
* :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` for runs of chunks: it never saves
  at an epoch's end, from where Lightning would resume by repeating a step of a finished chunk.
* :func:`choose_checkpoint` picks, in a run's ``checkpoints/`` folder, the newest checkpoint
  that every process can read, falling back to the previous one when the newest is unusable.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from datamodules.files import TEMPORARY_MARK, write_file
from lightning_modules.errors import UserInputError
from lightning_modules.image_optimization.strategy import shard_path

PREVIOUS = "previous"


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint before ``path`` is kept: ``last.ckpt`` -> ``last.previous.ckpt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{PREVIOUS}{path.suffix}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file, then a rename; the replaced file is kept as previous.

    At every moment ``last.ckpt`` is a complete checkpoint: a kill or a full disk while saving
    leaves the one before. A failed write says so in one sentence.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        _keep_previous(path)
        write_file(path, lambda handle: torch.save(checkpoint, handle), replace=True,
                   what="checkpoint")

    def remove_checkpoint(self, path: Any) -> None:
        for file in (Path(path), previous_path(path)):
            file.unlink(missing_ok=True)


def _keep_previous(path: Path) -> None:
    """Link the current checkpoint as previous before it is replaced (no moment without one)."""
    if not path.is_file():
        return
    previous = previous_path(path)
    staged = previous.with_name(f".{previous.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        staged.unlink(missing_ok=True)
        os.link(path, staged)
        os.replace(staged, previous)
    except OSError:
        staged.unlink(missing_ok=True)  # no hard links here: go on without a previous copy


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that never saves at the end of an epoch (a chunk of jobs).

    Each chunk of jobs is one epoch (see ``lightning_modules.image_optimization``). The writers
    finish a chunk at its last step (``on_train_batch_end``), before this callback saves that
    step; Lightning resumes such a checkpoint at the next epoch's first batch, where the module
    begins the next chunk. ``ModelCheckpoint`` would save that step once more at the epoch's
    end, and Lightning resumes a checkpoint taken there by repeating a batch of the finished
    chunk.
    """

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: the chunk's last step was saved at its batch end (see the class docs)."""


@dataclass
class CheckpointChoice:
    """The checkpoint to go on from, and what was passed over on the way."""

    path: Path
    step: int
    skipped: list[str]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint for inspection (tensors memory-mapped, nothing executed).

    Raises:
        UserInputError: If it is not a readable checkpoint of an image-optimization run.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - whatever the reason, the file cannot be continued from
        raise UserInputError(
            f"{path} is not a readable checkpoint (truncated, corrupt or another kind of "
            "file).") from None
    if not isinstance(checkpoint, dict) or "image_jobs" not in checkpoint:
        raise UserInputError(f"{path} is not a checkpoint of an image-optimization run.")
    return checkpoint


def choose_checkpoint(path: Path, processes: int) -> CheckpointChoice:
    """The newest checkpoint at ``path`` (or its previous copy) that all processes can read.

    ``path`` names rank 0's file; the others are ``<stem>.rank<r><suffix>``. Every process must
    continue from the same step: when a kill came between two processes' saves, the process
    that saved last goes back to its previous copy (which is put in place of the newer one).

    Args:
        path: Rank 0's checkpoint, e.g. ``checkpoints/last.ckpt``.
        processes: How many processes wrote it.

    Returns:
        The choice; its ``skipped`` says in words what could not be used.

    Raises:
        UserInputError: If no step has a readable checkpoint for every process.
    """
    steps: list[dict[int, Path]] = []
    skipped: list[str] = []
    for rank in range(processes):
        found: dict[int, Path] = {}
        for candidate in (shard_path(path, rank), previous_path(shard_path(path, rank))):
            if not candidate.is_file():
                continue
            try:
                found.setdefault(int(read_checkpoint(candidate)["global_step"]), candidate)
            except (UserInputError, KeyError, TypeError, ValueError) as error:
                skipped.append(str(error).rstrip("."))
        steps.append(found)
    common = set.intersection(*(set(found) for found in steps)) if steps else set()
    if not common:
        reason = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserInputError(f"No usable checkpoint in {path.parent}{reason}.")
    step = max(common)
    for rank, found in enumerate(steps):
        chosen, newest = found[step], shard_path(path, rank)
        if chosen != newest:
            # The newer file (if any) has no partner in the other processes, or is unreadable.
            os.replace(chosen, newest)
    return CheckpointChoice(path, step, skipped)


def written_by(path: Path) -> int:
    """How many processes wrote the checkpoint ``path`` (rank files beside it, plus rank 0)."""
    pattern = re.compile(re.escape(path.stem) + r"\.rank(\d+)" + re.escape(path.suffix) + "$")
    return 1 + sum(1 for file in path.parent.iterdir() if pattern.match(file.name))

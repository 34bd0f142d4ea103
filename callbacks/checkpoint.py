"""Checkpoints that a kill or a full disk cannot spoil, and the choice of the one to go on from.

* :class:`AtomicCheckpointIO` writes each checkpoint whole or not at all (a temporary file, then
  a rename) and keeps the one before it as ``<name>.previous.ckpt``.
* :class:`RunCheckpoint` is Lightning's ``ModelCheckpoint`` for runs of chunks: it never saves
  at an epoch's end, from where Lightning would resume by repeating a step of a finished chunk,
  and saves the run's last step only after the files written when training ends.
* :func:`choose_checkpoint` picks, in a run's ``checkpoints/`` folder, the newest checkpoint
  that every process can read, falling back to the previous one when the newest is unusable.

No file found in a run's ``checkpoints/`` is deleted or overwritten unless it is one this code
wrote and can read: a file that is not a readable checkpoint is renamed to
``<name>.unusable.ckpt``, and one that cannot be read for its permissions stops the resume.
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
UNUSABLE = "unusable"


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the checkpoint before ``path`` is kept: ``last.ckpt`` -> ``last.previous.ckpt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{PREVIOUS}{path.suffix}")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file, then a rename; the replaced file is kept as previous.

    At every moment ``last.ckpt`` is a complete checkpoint: a kill or a full disk while saving
    leaves the one before. A failed write says so in one sentence.
    """

    def __init__(self) -> None:
        super().__init__()
        self._checked: set[Path] = set()  # the files this process has looked at before replacing

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        if path not in self._checked:
            # The file there before this process's first save may be none of the run's (a
            # refused one, see choose_checkpoint): kept under another name, never replaced.
            self._checked.add(path)
            if path.is_file() and not _is_readable_checkpoint(path):
                set_aside_unusable(path)
        _keep_previous(path)
        write_file(path, lambda handle: torch.save(checkpoint, handle), replace=True,
                   what="checkpoint")

    def remove_checkpoint(self, path: Any) -> None:
        for file in (Path(path), previous_path(path)):
            file.unlink(missing_ok=True)


def unusable_path(path: Path) -> Path:
    """A free name for an unusable ``last.ckpt``: ``last.unusable.ckpt``, ``last.unusable_2.ckpt``..."""
    number = 1
    while True:
        tag = UNUSABLE if number == 1 else f"{UNUSABLE}_{number}"
        candidate = path.with_name(f"{path.stem}.{tag}{path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
        number += 1


def set_aside_unusable(path: Path) -> Path:
    """Rename a file that is no usable checkpoint out of the way (see :func:`unusable_path`)."""
    target = unusable_path(path)
    os.rename(path, target)
    return target


def _is_readable_checkpoint(path: Path) -> bool:
    try:
        read_checkpoint(path)
    except UserInputError:
        return False
    return True


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

    _final_step_due = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: the chunk's last step was saved at its batch end (see the class docs)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save as ``ModelCheckpoint`` does, except the run's last step (saved at train end)."""
        if _is_final_step(trainer):
            # The loss history, the loss curve and the reports are written when training ends,
            # after this step: a checkpoint of it saved before them would let a resume after a
            # failed write (a full disk) find nothing to do and never write them.
            every = self._every_n_train_steps
            self._final_step_due = every >= 1 and trainer.global_step % every == 0
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the last step, after every other callback has written its files (Lightning
        calls checkpoint callbacks last)."""
        if self._final_step_due:
            self._final_step_due = False
            if not self._should_skip_saving_checkpoint(trainer):
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                self._save_last_checkpoint(trainer, candidates)
                return
        super().on_train_end(trainer, pl_module)


def _is_final_step(trainer: pl.Trainer) -> bool:
    """Whether the step just taken is the run's last (all chunks' steps; see
    ``lightning_modules.image_optimization``)."""
    limit = trainer.fit_loop.epoch_loop.max_steps
    return limit is not None and limit > 0 and trainer.global_step >= limit


@dataclass
class CheckpointChoice:
    """The checkpoint to go on from, and what was passed over on the way."""

    path: Path
    step: int
    skipped: list[str]


class CheckpointNotPermitted(UserInputError):
    """A checkpoint that this user may not read: neither corrupt nor to be replaced."""


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint for inspection (tensors memory-mapped, nothing executed).

    Raises:
        CheckpointNotPermitted: If its permissions do not let this user read it.
        UserInputError: If it is not a readable checkpoint of an image-optimization run.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except PermissionError:
        raise CheckpointNotPermitted(
            f"Cannot read checkpoint {path} (permission denied): make it readable (chmod u+r) "
            f"and continue again; nothing was changed.") from None
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
    One process loads the chosen file where it lies, so that nothing moves before it steps.
    A file that is no readable checkpoint is never deleted (see :func:`set_aside_unusable`).

    Args:
        path: Rank 0's checkpoint, e.g. ``checkpoints/last.ckpt``.
        processes: How many processes wrote it.

    Returns:
        The choice: the file to load (rank 0's, for several processes), its step, and in
        ``skipped`` what could not be used, in words.

    Raises:
        CheckpointNotPermitted: If a checkpoint cannot be read for its permissions.
        UserInputError: If no step has a readable checkpoint for every process.
    """
    steps: list[dict[int, Path]] = []
    skipped: list[str] = []
    unusable: set[Path] = set()
    for rank in range(processes):
        found: dict[int, Path] = {}
        for candidate in (shard_path(path, rank), previous_path(shard_path(path, rank))):
            if not candidate.is_file():
                continue
            try:
                found.setdefault(int(read_checkpoint(candidate)["global_step"]), candidate)
            except CheckpointNotPermitted:
                raise  # the user's to fix: going on without it would later replace it
            except (UserInputError, KeyError, TypeError, ValueError) as error:
                unusable.add(candidate)
                skipped.append(str(error).rstrip("."))
        steps.append(found)
    common = set.intersection(*(set(found) for found in steps)) if steps else set()
    if not common:
        reason = f" ({'; '.join(skipped)})" if skipped else ""
        raise UserInputError(f"No usable checkpoint in {path.parent}{reason}.")
    step = max(common)
    if unusable:
        kept = ", ".join(f"{file.name} as {unusable_path(file).name}" for file in sorted(unusable))
        when = ", once a new checkpoint is saved" if processes == 1 else ""
        skipped[-1] += f" (kept: {kept}{when})"
    if processes == 1:
        # Loaded where it lies: nothing is moved, so a resume that takes no step leaves the
        # folder as it was; the first save sets an unusable newer file aside.
        return CheckpointChoice(steps[0][step], step, skipped)
    for rank, found in enumerate(steps):
        chosen, newest = found[step], shard_path(path, rank)
        if chosen != newest:
            # Every process loads its own file of one name: the chosen one goes there. A newer
            # file there without partners in the other processes is the run's own, replaced;
            # an unusable one is kept under another name.
            if newest in unusable:
                set_aside_unusable(newest)
            os.replace(chosen, newest)
    return CheckpointChoice(path, step, skipped)


def written_by(path: Path) -> int:
    """How many processes wrote the checkpoint ``path`` (rank files beside it, plus rank 0)."""
    pattern = re.compile(re.escape(path.stem) + r"\.rank(\d+)" + re.escape(path.suffix) + "$")
    return 1 + sum(1 for file in path.parent.iterdir() if pattern.match(file.name))

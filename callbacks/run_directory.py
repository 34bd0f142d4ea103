"""Where a run's files go."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from datamodules.files import describe
from lightning_modules.errors import UserInputError


def run_directory(trainer: pl.Trainer) -> Path:
    """The run's directory: the first logger's version folder, else the trainer's root.

    Reading ``trainer.log_dir`` is a collective call under DDP, so call this from a hook that
    every process runs (``setup``), never from a rank-zero-only one.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def continues_run(trainer: pl.Trainer) -> bool:
    """Whether this run goes on from a checkpoint: then the files of its interrupted part are
    its own, and writers replace them (with the same pictures) instead of refusing.

    Lightning sets ``trainer.ckpt_path`` only after the ``setup`` hooks: ask when writing.
    """
    return trainer.ckpt_path is not None


def claim_run_directory(root: Path) -> int:
    """Create the next free ``root/version_<n>`` folder now, so that no other run takes it.

    Two runs started together would otherwise both pick the next free number and write into
    one folder: ``mkdir`` without ``exist_ok`` lets only one of them have it.

    Args:
        root: The folder of a technique's runs (``runs/style_transfer``); created if missing.

    Returns:
        ``n``, the number of the folder made.

    Raises:
        UserInputError: If the folder cannot be created (no permission, a file in the way).
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        number = 1 + max((int(p.name[8:]) for p in root.glob("version_*")
                          if p.name[8:].isdigit()), default=-1)
        while True:
            try:
                (root / f"version_{number}").mkdir()
                return number
            except FileExistsError:
                number += 1  # another run took it first
    except OSError as error:
        raise UserInputError(f"Cannot create a run folder in {root} ({describe(error)}).") from None

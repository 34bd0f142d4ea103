"""Where a run's files go."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl


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

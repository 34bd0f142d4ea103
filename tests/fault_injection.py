"""Callbacks that kill the process they run in, for fault tests in child processes.

    python tests/tiny_cli.py fit ... --trainer.callbacks '[{"class_path":
        "fault_injection.KillAtStep", "init_args": {"step": 7}}]'
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl


class KillAtStep(pl.Callback):
    """SIGKILLs this process after run step ``step``, or while it saves the checkpoint of
    that step (``during_checkpoint``): an interruption that no handler can see."""

    def __init__(self, step: int, during_checkpoint: bool = False) -> None:
        self.step = step
        self.during_checkpoint = during_checkpoint

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and not self.during_checkpoint:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_save_checkpoint(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step and self.during_checkpoint:
            os.kill(os.getpid(), signal.SIGKILL)


class TerminateAtStep(pl.Callback):
    """Sends this process SIGTERM after run step ``step``: a stop that ``SaveOnInterrupt``
    handles (it saves a checkpoint and raises ``SystemExit``), usable in the test process."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class SignalAtBatch(pl.Callback):
    """Sends this process ``signal`` (a name: ``SIGKILL``, ``SIGINT``) after prediction batch
    ``batch`` (counted from 0 in this run): a dataset run killed, or stopped by Ctrl+C, between
    two of its batches or in the middle of a shard."""

    def __init__(self, batch: int, signal: str = "SIGKILL") -> None:
        self.batch = batch
        self.signal = signal

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), getattr(signal, self.signal))

"""Stopping a run on SIGINT (Ctrl+C) or SIGTERM without losing it."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from callbacks.chunk_end import is_last_step_of_chunk
from callbacks.image_writer import ImageWriter
from callbacks.run_directory import run_directory
from lightning_modules.saliency.map_shards import MAPS_FOLDER as PARTS_FOLDER

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SaveOnInterrupt(pl.Callback):
    """On SIGINT or SIGTERM, finish the step, save the images and a checkpoint, then exit; in
    ``predict``, finish the batch and exit.

    Every process stops after the same step. At a chunk's last step the chunk's results are
    written as usual; at any other the run directory gets
    ``<job>_interrupted_step<k>.png`` (and its sheet) for each job being optimized, ``k``
    being its step, and ``checkpoints/last.ckpt`` (the checkpoint callback's folder), from
    which ``--ckpt_path last`` continues. One line on stderr says where they are; the exit
    status is 128 + the signal number (130 for SIGINT, 143 for SIGTERM). A second signal
    stops at once, saving nothing.
    """

    def __init__(self) -> None:
        self.signal_number: Optional[int] = None
        self.directory: Optional[Path] = None
        self._previous: dict[int, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)  # a collective call: every process is here

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.signal_number = None
        # Installed after Lightning's own SIGTERM handler, which would stop mid-step.
        if threading.current_thread() is threading.main_thread():
            for signum in _SIGNALS:
                self._previous[signum] = signal.signal(signum, self._request_stop)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """``predict`` stops between two batches too: what the finished batches wrote stays
        (a dataset saliency run's shards, from which ``--ckpt_path last`` goes on)."""
        self.on_train_start(trainer, pl_module)

    def on_predict_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                               batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # Checked before a batch, not after one: the writers have handled the batch before.
        if self.signal_number is None:
            return
        signum = self.signal_number
        resumable = (self.directory / PARTS_FOLDER).is_dir()
        if trainer.is_global_zero or resumable:
            print(f"{signal.Signals(signum).name}: stopped after {batch_idx} batches of this "
                  f"process; what they wrote is in {self.directory}"
                  + (" (continue with --ckpt_path last)" if resumable else ""),
                  file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    def _request_stop(self, signum: int, frame: Optional[FrameType]) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signum

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        # A signal may reach only some processes; all must stop after the same step.
        if not trainer.strategy.reduce_boolean_decision(self.signal_number is not None,
                                                        all=False):
            return
        self.signal_number = self.signal_number or signal.SIGTERM
        step = batch_idx + 1  # the step of the jobs being optimized (of this chunk)
        if is_last_step_of_chunk(trainer, batch_idx):
            # The writers (before this callback) have just written the chunk's results.
            self._stop(trainer, f"after the last step of the current jobs (step "
                                f"{trainer.global_step} of the run); their results are in "
                                f"{self.directory}")
        suffix = f"_interrupted_step{step:06d}"
        if not getattr(pl_module, "idle", False):
            for callback in trainer.callbacks:
                if isinstance(callback, ImageWriter):
                    callback.write_results(pl_module, suffix)
        self._stop(trainer, f"after step {step} of the current jobs (step {trainer.global_step} "
                            f"of the run); images *{suffix}.png in {self.directory}")

    def _stop(self, trainer: pl.Trainer, where: str) -> None:
        signum = self.signal_number or signal.SIGTERM
        checkpoint = self.checkpoint_path(trainer)
        trainer.save_checkpoint(checkpoint, weights_only=False)
        # This step's metrics are logged after the batch-end hooks, where we stop: log them
        # now (Lightning's own call, which logs only on logging steps), then write them out.
        connector = getattr(trainer, "_logger_connector", None)
        if connector is not None and hasattr(connector, "update_train_step_metrics"):
            connector.update_train_step_metrics()
        for logger in trainer.loggers:
            logger.save()  # metrics.csv of the part that ran (kept by a resumed run)
        if trainer.is_global_zero:
            print(f"{signal.Signals(signum).name}: stopped {where}; checkpoint {checkpoint} "
                  "(continue with --ckpt_path last)", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        """Where the checkpoint goes: the checkpoint callback's ``last.ckpt``."""
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
            name = callback.CHECKPOINT_NAME_LAST or "last"
            return Path(callback.dirpath) / f"{name}{callback.FILE_EXTENSION}"
        return self.directory / "checkpoints" / "last.ckpt"

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}

"""The end of a chunk of jobs, as the callbacks that write its results see it."""

from __future__ import annotations

from typing import Any, Optional

import pytorch_lightning as pl


def is_last_step_of_chunk(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether step ``batch_idx`` (counted in the chunk) is the chunk's last."""
    return batch_idx + 1 >= trainer.num_training_batches


class ChunkEndCallback(pl.Callback):
    """Calls :meth:`on_chunk_end` once per chunk (one epoch, see
    ``lightning_modules.image_optimization``).

    At the chunk's last step, in ``on_train_batch_end``: before the checkpoint of that step
    (``RunCheckpoint`` comes after every other callback), so that a run resumed from it finds
    the chunk's results written and begins the next chunk. A chunk that finishes early ends at
    its epoch's end.
    """

    _ended_epoch: Optional[int] = None

    def on_chunk_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write or record the chunk's results."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended_epoch = None  # a second fit with the same callback starts at epoch 0 again

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if is_last_step_of_chunk(trainer, batch_idx):
            self._end_chunk(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end_chunk(trainer, pl_module)

    def _end_chunk(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._ended_epoch != trainer.current_epoch:
            self._ended_epoch = trainer.current_epoch
            self.on_chunk_end(trainer, pl_module)

"""Running one technique in several processes: each optimizes only its own images.

``--trainer.devices N`` (with ``--trainer.num_nodes M`` across machines) starts N × M processes. The
module splits the jobs between them (:class:`~lightning_modules.image_optimization.jobs.JobPlan`);
this strategy keeps what plain DDP would break. Plain DDP broadcasts rank 0's parameters at the
start and averages gradients, so every process would end with the same, wrong, images. Here the
module is not wrapped: each process's images and optimizer are its own, while collectives
(``self.log(..., sync_dist=True)``, barriers) work as in DDP.

Checkpoints are sharded: each process saves and loads its own file, ``last.ckpt`` for rank 0
and ``last.rank<r>.ckpt`` next to it for rank ``r``, so no process gathers every image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

from lightning_modules.errors import UserInputError


def shard_path(filepath: _PATH, rank: int) -> Path:
    """The checkpoint file of process ``rank``: ``filepath`` itself for rank 0."""
    path = Path(filepath)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


class ImageDDPStrategy(DDPStrategy):
    """DDP without the DDP wrapper, and with one checkpoint file per process.

    Chosen by ``cli.py`` whenever a run has several processes; by name ``"image_ddp"``
    (``Trainer(strategy="image_ddp", devices=2)``); takes :class:`DDPStrategy`'s arguments.
    """

    def configure_ddp(self) -> None:
        """Leave the module unwrapped: no broadcast of rank 0's images, no averaged gradients."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH,
                        storage_options: Optional[Any] = None) -> None:
        self.checkpoint_io.save_checkpoint(checkpoint, shard_path(filepath, self.global_rank),
                                           storage_options=storage_options)

    def load_checkpoint(self, checkpoint_path: _PATH,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        path = shard_path(checkpoint_path, self.global_rank)
        if not path.is_file():
            raise UserInputError(f"{path} is missing: resume with as many processes as the run "
                                 "that wrote the checkpoint.")
        return super().load_checkpoint(path, weights_only)

    def remove_checkpoint(self, filepath: _PATH) -> None:
        self.checkpoint_io.remove_checkpoint(shard_path(filepath, self.global_rank))


StrategyRegistry.register("image_ddp", ImageDDPStrategy, description=ImageDDPStrategy.__doc__,
                          override=True)

"""Sheets of a whole run: every job's picture on one grid, however the jobs were split.

:class:`RunSheet` collects a record per job at the end of each chunk (from the records a
technique hands it), and at the end of the run process 0 reads back the PNGs that
:class:`~callbacks.ImageWriter` saved and lays them out with their titles. ``ClassReport``
(every class) and :class:`AtlasSheet` (every channel of a layer) are two of them; a technique
brings its own from ``configure_callbacks`` (see :meth:`RunSheet.reading`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import pytorch_lightning as pl
from PIL import Image

from callbacks.chunk_end import ChunkEndCallback, is_last_step_of_chunk
from callbacks.image_writer import ImageWriter, require_image_writer
from callbacks.logged_images import log_picture
from callbacks.run_directory import continues_run, run_directory
from callbacks.sheets import grid_sheet
from datamodules.images import image_to_tensor, load_image, save_png
from lightning_modules.image_optimization.jobs import gather_objects


Records = Callable[[], list[dict[str, Any]]]


class RunSheet(ChunkEndCallback):
    """Lays out every job's ``<name>.png`` with its title on ``file_name``, at the end of a run.

    A technique hands it its records (:meth:`reading`, from its ``configure_callbacks``): per
    job of this process's chunk, a record with the job's index in the run (``job``), its
    output ``name`` and its ``title``. Records travel in checkpoints, so a resumed run's sheet
    has every chunk. A sheet that was handed no records has nothing to lay out.

    Args:
        file_name: The sheet's file name in the run directory.
        columns: Pictures per row.
        height: Height of each picture on the sheet, in pixels.
        font_size: Size of the titles.
    """

    def __init__(self, file_name: str, columns: int = 5, height: int = 224,
                 font_size: int = 16) -> None:
        self.file_name = file_name
        self.columns = columns
        self.height = height
        self.font_size = font_size
        self.records_of: Optional[Records] = None
        self.records: list[dict[str, Any]] = []
        self.directory: Optional[Path] = None

    @classmethod
    def reading(cls, records: Records, trainer: pl.Trainer, **options: Any) -> list["RunSheet"]:
        """This sheet of a technique's ``records()``, for its ``configure_callbacks``: one in
        a run that saves pictures (an :class:`ImageWriter` among ``trainer``'s callbacks), none
        in a run that saves none (a Python call without a run folder).

        Args:
            records: Gives the records of this process's current chunk.
            trainer: The trainer the technique runs in.
            **options: The sheet's own options.
        """
        if not any(isinstance(callback, ImageWriter) for callback in trainer.callbacks):
            return []
        sheet = cls(**options)
        sheet.records_of = records
        return [sheet]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)  # a collective call: every process is here
        self.records = []  # a new fit's own (a resumed one gets them back from the checkpoint)
        require_image_writer(trainer, self, "lays out")

    def on_chunk_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.records_of is not None and not pl_module.idle:
            self.records += self.records_of()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.records_of is None:
            return
        # Every process takes part in the gather, even one with nothing to add.
        records = sorted((record for part in gather_objects(self.records, trainer.world_size)
                          for record in part), key=lambda record: record["job"])
        if not trainer.is_global_zero or not records:
            return
        panels = [(record["title"], image_to_tensor(load_image(self.directory /
                                                               f"{record['name']}.png")))
                  for record in records]
        sheet = save_png(self.draw(panels), self.directory / self.file_name,
                         overwrite=continues_run(trainer))
        log_picture(trainer, Path(self.file_name).stem, sheet)
        self.after_sheet(trainer, records)

    def draw(self, panels: list[tuple[str, Any]]) -> Image.Image:
        """The sheet of titled pictures."""
        return grid_sheet(panels, self.columns, self.height, self.font_size)

    def after_sheet(self, trainer: pl.Trainer, records: list[dict[str, Any]]) -> None:
        """What else the run's records make, on process 0 (default: nothing)."""

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # A technique's callbacks come after the trainer's: a checkpoint saved at a chunk's last
        # step before this sheet's turn (SaveOnInterrupt's) must still carry that chunk.
        if (self.records_of is not None and trainer.training and "callbacks" in checkpoint
                and is_last_step_of_chunk(trainer, trainer.fit_loop.epoch_loop.batch_idx)):
            self._end_chunk(trainer, pl_module)
            checkpoint["callbacks"][self.state_key] = self.state_dict()

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict["records"])


class AtlasSheet(RunSheet):
    """Writes ``atlas_sheet.png``: every channel of a channel atlas, titled with its number.

    A feature visualization whose data holds a channel atlas (``datamodules.ChannelAtlasData``)
    brings it, reading its ``atlas_records``; the pictures are small and many to a row, so a
    layer of a hundred channels fits one screen.

    Args:
        columns: Pictures per row.
        height: Height of each picture on the sheet, in pixels.
        font_size: Size of the channel numbers.
    """

    def __init__(self, columns: int = 16, height: int = 96, font_size: int = 12) -> None:
        super().__init__("atlas_sheet.png", columns, height, font_size)

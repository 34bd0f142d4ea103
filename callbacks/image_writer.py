"""Writes snapshots, the final images and a side-by-side sheet per job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image

from callbacks.chunk_end import ChunkEndCallback
from callbacks.run_directory import continues_run, run_directory
from callbacks.sheets import make_sheet
from callbacks.logged_images import log_picture
from datamodules.images import save_png
from lightning_modules.errors import UserInputError


class ImageWriter(ChunkEndCallback):
    """Saves each job's image every ``every_n_steps`` steps and at the end, plus a sheet.

    Files, in the run directory: ``snapshots/<job>_step<k>.png``, ``<job>.png`` (the result) and
    ``<job>_sheet.png`` (the inputs and the result side by side); a technique may put its
    results in a folder of the run (``result_stem``, e.g. a video's ``frames/``). Results are written when the job's
    chunk ends (see :class:`~callbacks.chunk_end.ChunkEndCallback`), by the
    process that optimized the job. Existing files are never overwritten, except by a resumed run:
    the files its interrupted part wrote are its own, and it writes them again (the same
    pictures). Every file is written whole or not at all (see ``datamodules.files``).

    Args:
        every_n_steps: Snapshot period in steps; 0 turns snapshots off.
        sheet_height: Height of the pictures in the sheet.
        sheets: Write each job's sheet (false: the results only, e.g. for a channel atlas,
            whose sheet holds every channel).
    """

    def __init__(self, every_n_steps: int = 0, sheet_height: int = 256,
                 sheets: bool = True) -> None:
        self.every_n_steps = every_n_steps
        self.sheet_height = sheet_height
        self.sheets = sheets
        self.directory: Path | None = None
        self.replace = False  # whether existing files are this run's own (a resumed run)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.replace = continues_run(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = batch_idx + 1  # steps the jobs of this chunk have taken
        if (self.every_n_steps and step % self.every_n_steps == 0
                and step < trainer.num_training_batches and not pl_module.idle):
            for index, slot in enumerate(pl_module.slots):
                path = self._save(pl_module.result_pixels(index),
                                  self.directory / "snapshots" / f"{slot.name}_step{step:06d}.png")
                log_picture(trainer, f"{slot.name}/snapshot", path)
        stage = pl_module.snapshot_name(step) if not pl_module.idle else None
        if stage is not None:
            for index, slot in enumerate(pl_module.slots):
                path = self._save(pl_module.result_pixels(index),
                                  self.directory / "snapshots" / f"{slot.name}_{stage}.png")
                log_picture(trainer, f"{slot.name}/snapshot", path)
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_chunk_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.idle:
            self.write_results(pl_module)

    def write_results(self, pl_module: pl.LightningModule, suffix: str = "") -> list[Path]:
        """Write every job's current image and sheet; returns the image paths."""
        written = []
        for index, slot in enumerate(pl_module.slots):
            stem = pl_module.result_stem(index)
            if suffix and stem != slot.name:
                # A picture of a stopped run is not a result: it stays out of the technique's
                # folder of results (a video's frames/), with the snapshots.
                stem = f"snapshots/{slot.name}"
            path = self.directory / f"{stem}{suffix}.png"
            written.append(self._save(pl_module.result_pixels(index), path))
            trainer = pl_module._trainer
            log_picture(trainer, f"{slot.name}/result", path)
            if self.sheets:
                sheet = make_sheet(pl_module.sheet_panels(index), self.sheet_height)
                sheet_path = self._save(sheet, self.directory / f"{stem}{suffix}_sheet.png")
                log_picture(trainer, f"{slot.name}/sheet", sheet_path)
        return written

    def _save(self, picture: torch.Tensor | Image.Image, path: Path) -> Path:
        return save_png(picture, path, overwrite=self.replace)


def require_image_writer(trainer: pl.Trainer, report: pl.Callback, uses: str) -> None:
    """Raise one sentence unless an :class:`ImageWriter` comes before ``report`` (which reads
    the PNGs it saves) in the trainer's callbacks."""
    writers = [i for i, c in enumerate(trainer.callbacks) if isinstance(c, ImageWriter)]
    if not writers or writers[0] > trainer.callbacks.index(report):
        raise UserInputError(f"{type(report).__name__} {uses} the PNGs that ImageWriter saves: "
                             "put an ImageWriter before it in the trainer's callbacks.")

"""Pictures a run writes, also shown in its loggers (TensorBoard, W&B), beside the curves.

A writer that saves a PNG calls :func:`log_picture` with the file it wrote: every logger that
can show images gets it, read back from the file, so that what ``tensorboard --logdir runs``
shows is exactly what is on disk. CSV loggers cannot show images and are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pytorch_lightning as pl


def log_picture(trainer: Optional[pl.Trainer], tag: str, path: Path,
                step: Optional[int] = None) -> None:
    """Show the PNG at ``path`` under ``tag`` in every logger of ``trainer`` that shows images.

    Args:
        trainer: The run's trainer (None, or one without loggers: nothing to do).
        tag: The picture's name in the logger, e.g. ``"result/chelsea"``.
        path: The PNG just written.
        step: The step to file it under (default: the trainer's global step).
    """
    loggers = [logger for logger in (trainer.loggers if trainer is not None else [])
               if _shows_images(logger)]
    # Lightning's loggers write from process 0 only: the other processes' pictures are in files.
    if not loggers or not trainer.is_global_zero:
        return
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    step = trainer.global_step if step is None else step
    for logger in loggers:
        experiment = logger.experiment
        if hasattr(experiment, "add_image"):  # TensorBoard's SummaryWriter
            experiment.add_image(tag, pixels, global_step=step, dataformats="HWC")
        else:  # W&B
            logger.log_image(key=tag, images=[pixels], step=step)


def _shows_images(logger: object) -> bool:
    name = type(logger).__name__
    return name in ("TensorBoardLogger", "WandbLogger")


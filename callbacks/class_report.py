"""The class-visualization report: every class on one sheet, and p(target) per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl

from callbacks.chunk_end import ChunkEndCallback
from callbacks.image_writer import require_image_writer
from callbacks.plots import line_plot
from callbacks.run_directory import continues_run, run_directory
from callbacks.sheets import grid_sheet
from callbacks.logged_images import log_picture
from datamodules.files import write_csv_rows
from datamodules.images import image_to_tensor, load_image, save_png
from lightning_modules.image_optimization.jobs import gather_objects


class ClassReport(ChunkEndCallback):
    """Writes ``classes_sheet.png``, ``class_probability.png`` and, when the module has a
    judge, ``recognition.csv`` for a class visualization.

    At the end of each chunk it keeps each class's record from the module's
    ``class_records()`` (title with the probability of its 8-bit picture, and its probability
    per step, and the judge's verdict); at the end of the run process 0 lays out every class's ``<class>.png`` (written
    by :class:`~callbacks.ImageWriter`, read back) with its title, and plots the curves. The
    records travel in checkpoints. Modules without ``class_records`` are left alone.
    """

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.directory: Optional[Path] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)  # a collective call: every process is here
        self.records = []  # a new fit's own (a resumed one gets them back from the checkpoint)
        if hasattr(pl_module, "class_records"):
            require_image_writer(trainer, self, "lays out")

    def on_chunk_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if hasattr(pl_module, "class_records") and not pl_module.idle:
            self.records += pl_module.class_records()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not hasattr(pl_module, "class_records"):
            return
        records = sorted((record for part in gather_objects(self.records, trainer.world_size)
                          for record in part), key=lambda record: record["job"])
        if not trainer.is_global_zero or not records:
            return
        panels = [(record["title"], image_to_tensor(load_image(self.directory /
                                                               f"{record['name']}.png")))
                  for record in records]
        replace = continues_run(trainer)
        sheet = save_png(grid_sheet(panels), self.directory / "classes_sheet.png",
                         overwrite=replace)
        log_picture(trainer, "classes_sheet", sheet)
        if "recognition" in records[0]:
            write_recognition_csv(self.directory / "recognition.csv", records, replace)
        if records[0]["curve"]:
            curves = {record["name"]: record["curve"] for record in records}
            steps = range(len(records[0]["curve"]))
            mean = [sum(values) / len(values) for values in zip(*curves.values())]
            line_plot(self.directory / "class_probability.png", steps, {**curves, "mean": mean},
                      "p(target class)", ylim=(0, 1), bold=("mean",), bold_color="black",
                      linewidth=1.2, legend=len(curves) <= 12,
                      legend_options={"fontsize": 7, "loc": "lower right"}, replace=replace)
            log_picture(trainer, "class_probability", self.directory / "class_probability.png")

    def state_dict(self) -> dict[str, Any]:
        return {"records": list(self.records)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict["records"])


def write_recognition_csv(path: Path, records: list[dict[str, Any]], replace: bool) -> None:
    """One row per class picture: its class, its own network's probability of the saved PNG,
    and the judge's verdict (see :mod:`lightning_modules.class_visualization.recognition`)."""
    rows = []
    for record in records:
        verdict = record["recognition"]
        rows.append({"name": record["name"], "class_index": record["class_index"],
                     "class_name": record["class_name"], "prob": f"{record['prob']:.4f}",
                     "judge": verdict["judge"],
                     **{key: (value if isinstance(value, int) else f"{value:.4f}")
                        for key, value in verdict.items() if key != "judge"}})
    write_csv_rows(path, list(rows[0]), rows, replace)

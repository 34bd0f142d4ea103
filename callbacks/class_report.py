"""The class-visualization report: every class on one sheet, and p(target) per step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from callbacks.logged_images import log_picture
from callbacks.plots import line_plot
from callbacks.run_directory import continues_run
from callbacks.run_sheet import RunSheet
from datamodules.files import write_csv_rows


class ClassReport(RunSheet):
    """Writes ``classes_sheet.png``, ``class_probability.png`` and, when the module has a
    judge, ``recognition.csv`` for a class visualization.

    ``ClassVisualization`` brings it (its ``configure_callbacks``), handing it its
    ``class_records``. At the end of each chunk it keeps each class's record (title with the
    probability of its 8-bit picture, its probability per step, and the judge's verdict); at
    the end of the run process 0 lays out every class's ``<class>.png`` (written by
    :class:`~callbacks.ImageWriter`, read back) with its title, and plots the curves. The
    records travel in checkpoints.
    """

    def __init__(self) -> None:
        super().__init__("classes_sheet.png")

    def after_sheet(self, trainer: pl.Trainer, records: list[dict[str, Any]]) -> None:
        if "recognition" in records[0]:
            write_recognition_csv(self.directory / "recognition.csv", records,
                                  continues_run(trainer))
        if not records[0]["curve"]:
            return
        curves = {record["name"]: record["curve"] for record in records}
        steps = range(len(records[0]["curve"]))
        mean = [sum(values) / len(values) for values in zip(*curves.values())]
        line_plot(self.directory / "class_probability.png", steps, {**curves, "mean": mean},
                  "p(target class)", ylim=(0, 1), bold=("mean",), bold_color="black",
                  linewidth=1.2, legend=len(curves) <= 12,
                  legend_options={"fontsize": 7, "loc": "lower right"},
                  replace=continues_run(trainer))
        log_picture(trainer, "class_probability", self.directory / "class_probability.png")


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

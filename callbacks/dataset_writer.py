"""Writes a dataset saliency run: map shards, the index, sheets of the first images, the report.

Files are those of :mod:`lightning_modules.saliency.map_shards`. Each process keeps only the
shard it is explaining (its rows and its maps as float16) and writes it whole when the shard's
last batch arrives, so memory stays flat over any number of images, and a run killed at any
moment loses at most one shard per process: continued (``--ckpt_path last``), it leaves out the
shards already written and explains the rest. The process that writes the last shard puts the
whole run's ``index.csv``, ``skipped.csv``, ``explanation.json`` and the report together
(under a file lock, should two finish at once).
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl

from callbacks.dataset_report import check_report_options, write_report
from callbacks.run_directory import run_directory
from callbacks.saliency_writer import cam_overlay, overlay, scale_map
from callbacks.sheets import grid_sheet
from datamodules.files import write_file
from lightning_modules.errors import UserInputError
from lightning_modules.naming import short_title
from lightning_modules.saliency.dataset import DatasetBatch, DatasetExplanation
from lightning_modules.saliency.map_shards import (EXPLANATION, INDEX, INDEX_COLUMNS, MANIFEST,
                                                   MAPS_FOLDER, SKIPPED, SKIPPED_COLUMN,
                                                   encode_maps, finished_shards, read_rows,
                                                   shard_stem)


def _number(value: float) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6g}"


class DatasetWriter(pl.Callback):
    """Writes the shards, the index and the report of a
    :class:`~lightning_modules.saliency.dataset.DatasetExplanation` run.

    Args:
        sheet_images: How many of the dataset's first images get sheets (each photo with every
            method's map over it); the rest only their maps and rows.
        colormap: Matplotlib colormap of the gradient maps on the sheets.
        cam_colormap: Colormap of class activation maps.
        report: Write the report (``report.html``, ``report.csv``, ...; see
            :mod:`callbacks.dataset_report`) when every shard is in.
        interval: The report's intervals: ``"t"`` (Student's t) or ``"bootstrap"``.
        ranking_metric: The metric that picks each method's best and worst images in the
            report (default: the first faithfulness metric).
        images_per_method: How many best and how many worst images per method the report shows.
    """

    def __init__(self, sheet_images: int = 16, colormap: str = "hot", cam_colormap: str = "jet",
                 report: bool = True, interval: str = "t", ranking_metric: Optional[str] = None,
                 images_per_method: int = 3) -> None:
        if isinstance(sheet_images, bool) or not isinstance(sheet_images, int) or sheet_images < 0:
            raise UserInputError(f"sheet_images must be 0 or more, got {sheet_images}.")
        check_report_options(interval, 0.95, images_per_method, 2000)
        self.report_options = {"interval": interval, "ranking_metric": ranking_metric,
                               "images_per_method": images_per_method}
        self.sheet_images = sheet_images
        self.colormap = colormap
        self.cam_colormap = cam_colormap
        self.report = report
        self.directory: Optional[Path] = None
        self._rows: list[dict[str, str]] = []
        self._maps: dict[str, list[np.ndarray]] = {}
        self._paths: list[str] = []
        self._index: list[int] = []

    # --- start: the manifest, and what is written already -----------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, DatasetExplanation):
            raise UserInputError(f"DatasetWriter writes DatasetExplanation runs, not "
                                 f"{type(pl_module).__name__}.")
        self.directory = run_directory(trainer)  # a collective call: every process is here
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "leave_out"):
            raise UserInputError("A dataset saliency run needs the data "
                                 "datamodules.image_dataset.DatasetImages.")
        manifest = self.manifest(pl_module, datamodule)
        path = self.directory / MAPS_FOLDER / MANIFEST
        if path.is_file():
            self.check_same_run(json.loads(path.read_text()), manifest)
        elif trainer.global_rank == 0:
            write_file(path, lambda handle: handle.write(json.dumps(manifest, indent=1).encode()),
                       what="manifest")
        datamodule.leave_out(finished_shards(self.directory))

    @staticmethod
    def manifest(module: DatasetExplanation, datamodule: Any) -> dict[str, Any]:
        """What the run explains and how: a continued run must match it, or its shards would
        mix two runs."""
        listing = hashlib.sha256()
        for item in datamodule.items:
            listing.update(f"{item.path}\t{item.label}\t{item.box}\n".encode())
        return {"images": len(datamodule.items), "image_list_sha256": listing.hexdigest(),
                "image_size": datamodule.image_size, "shard_size": datamodule.shard_size,
                "batch_size": datamodule.batch_size, "methods": module.method_names,
                "method_objects": [repr(method) for method in module.methods],
                "controls": module.control_names,
                "metrics": [repr(metric) for metric in module.metrics],
                "target": str(module.target), "seed": module.seed,
                "backbone": module.backbone.name}

    def check_same_run(self, written: dict[str, Any], now: dict[str, Any]) -> None:
        """Refuse to continue a run with other images or settings, naming the first that
        differs."""
        for key, value in now.items():
            if written.get(key) != value:
                shown = "the list of images" if key == "image_list_sha256" else key
                raise UserInputError(
                    f"The run in {self.directory} was made with another {shown} "
                    f"({written.get(key)!r} there, {value!r} now); continue it with its own "
                    f"options, or start a fresh run.")

    # --- each batch: into the open shard; a shard's last batch closes it ---------------------

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             outputs: Any, batch: Any, batch_idx: int,
                             dataloader_idx: int = 0) -> None:
        if not isinstance(outputs, DatasetBatch):
            raise TypeError(f"DatasetWriter expects DatasetBatch predictions, got "
                            f"{type(outputs).__name__}.")
        self._rows += self.rows(outputs)
        for name, maps in outputs.maps.items():
            self._maps.setdefault(name, []).append(maps.numpy())
        self._paths += outputs.paths
        self._index += outputs.index
        if outputs.index and outputs.index[0] < self.sheet_images:
            self.write_sheet(pl_module, outputs)
        if outputs.shard_end:
            self.close_shard(pl_module, outputs.shard or 0)

    def rows(self, result: DatasetBatch) -> list[dict[str, str]]:
        """The index rows of a batch: the explained images, then the skipped ones."""
        rows = []
        for i, path in enumerate(result.paths):
            row = {"path": path, "name": result.names[i],
                   "label": "" if result.labels[i] is None else str(result.labels[i]),
                   "true": "" if result.true[i] is None else str(result.true[i]),
                   "prediction": str(result.predicted[i]),
                   "prediction_name": result.categories[result.predicted[i]],
                   "probability": f"{result.probability[i]:.6f}",
                   "target": str(result.target[i]),
                   "target_name": result.categories[result.target[i]],
                   "target_probability": f"{result.target_probability[i]:.6f}",
                   "shard": str(result.shard or 0), "row": "", SKIPPED_COLUMN: ""}
            for method, scores in result.scores.items():
                for metric, values in scores.items():
                    row[f"{method}.{metric}"] = _number(float(values[i]))
            rows.append(row)
        for path, reason in result.skipped:
            rows.append({"path": path, "shard": str(result.shard or 0), SKIPPED_COLUMN: reason})
        return rows

    def close_shard(self, pl_module: DatasetExplanation, shard: int) -> None:
        """Write the open shard's maps, then its rows (the mark that it is complete)."""
        folder = self.directory / MAPS_FOLDER
        arrays: dict[str, np.ndarray] = {"paths": np.array(self._paths, dtype=str),
                                         "index": np.array(self._index, dtype=np.int64)}
        size = pl_module.trainer.datamodule.image_size  # a shard of unreadable images only
        for name in pl_module.method_names:
            stacked = (np.concatenate(self._maps[name]) if self._maps.get(name)
                       else np.zeros((0, size, size), np.float32))
            arrays[name], arrays[f"{name}.scale"] = encode_maps(stacked)

        def save(handle: Any) -> None:
            np.savez_compressed(handle, **arrays)

        # replace: a shard whose CSV a killed process never wrote is written again, whole.
        write_file(folder / f"{shard_stem(shard)}.npz", save, replace=True, what="map shard")
        explained = 0
        for row in self._rows:
            if not row.get(SKIPPED_COLUMN):
                row["row"] = str(explained)
                explained += 1
        columns = self.columns(pl_module)
        write_file(folder / f"{shard_stem(shard)}.csv", lambda handle: handle.write(
            _csv_text(columns, self._rows).encode()), replace=True, what="index part")
        self._rows, self._maps, self._paths, self._index = [], {}, [], []

    @staticmethod
    def columns(pl_module: DatasetExplanation) -> list[str]:
        """The index's columns: the image's, then ``<method>.<metric>`` for every method and
        control and metric."""
        scores = [f"{name}.{metric.name}" for name in pl_module.explainers
                  for metric in pl_module.metrics]
        return INDEX_COLUMNS + scores + [SKIPPED_COLUMN]

    # --- sheets of the first images --------------------------------------------------------

    def write_sheet(self, pl_module: DatasetExplanation, result: DatasetBatch) -> None:
        """A sheet of a batch among the first ``sheet_images``: each photo, titled with its
        prediction, and every method's map over it."""
        path = self.directory / f"sheet_{result.index[0]:05d}.png"
        if path.exists():
            return  # a continued run's: the same pictures
        panels = []
        for i in range(len(result.index)):
            if result.index[i] >= self.sheet_images:
                break
            title = (f"{short_title(result.categories[result.predicted[i]])}\n"
                     f"p={result.probability[i]:.2f}")
            panels.append((title, result.pixels[i]))
            for name, method in zip(pl_module.method_names, pl_module.methods):
                scaled = scale_map(result.maps[name][i])
                drawn = (cam_overlay(result.pixels[i], scaled, self.cam_colormap)
                         if method.class_activation_map
                         else overlay(result.pixels[i], scaled, self.colormap))
                panels.append((name, drawn))
        sheet = grid_sheet(panels, columns=1 + len(pl_module.methods), height=160, font_size=12)
        write_file(path, lambda handle: sheet.save(handle, format="PNG"), what="sheet")

    # --- the end: the whole run's files, once every shard is written -------------------------

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if finished_shards(self.directory) >= set(range(datamodule.shard_count)):
            self.finish(pl_module, datamodule.shard_count)

    def finish(self, pl_module: DatasetExplanation, shard_count: int) -> None:
        """Put ``index.csv``, ``skipped.csv`` and ``explanation.json`` together from the shards,
        then the report."""
        folder = self.directory / MAPS_FOLDER
        with open(folder / ".finish.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes may finish at once
            explained, skipped = [], []
            for shard in range(shard_count):
                for row in read_rows(folder / f"{shard_stem(shard)}.csv"):
                    (skipped if row.get(SKIPPED_COLUMN) else explained).append(row)
            columns = [c for c in self.columns(pl_module) if c != SKIPPED_COLUMN]
            write_file(self.directory / INDEX, lambda handle: handle.write(
                _csv_text(columns, explained).encode()), replace=True, what="index")
            write_file(self.directory / SKIPPED, lambda handle: handle.write(_csv_text(
                ["path", "reason"], [{"path": r["path"], "reason": r[SKIPPED_COLUMN]}
                                     for r in skipped]).encode()), replace=True, what="list")
            datamodule = pl_module.trainer.datamodule
            info = {"methods": pl_module.method_names, "controls": pl_module.control_names,
                    "metrics": pl_module.metric_info(), "image_size": datamodule.image_size,
                    "images": len(explained), "skipped": len(skipped),
                    "backbone": pl_module.backbone.name, "target": str(pl_module.target),
                    "seed": pl_module.seed,
                    # This process's time per image (all processes when there is one).
                    "seconds_per_image": {
                        key: round(value / max(1, pl_module.images_explained), 4)
                        for key, value in pl_module.seconds.items()}}
            write_file(self.directory / EXPLANATION, lambda handle: handle.write(
                json.dumps(info, indent=1).encode()), replace=True, what="run description")
            if self.report and explained and pl_module.metrics:  # no metric: nothing to report
                self.write_report()

    def write_report(self) -> None:
        """The report of the finished run (:mod:`callbacks.dataset_report`); a continued run
        writes it again, from every shard."""
        write_report(self.directory, replace=True, **self.report_options)


def _csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()

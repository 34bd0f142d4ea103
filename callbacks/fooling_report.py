"""The fooling report: each job's verdict on its 8-bit picture, in one CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info

from callbacks.chunk_end import ChunkEndCallback
from callbacks.image_writer import ImageWriter
from callbacks.run_directory import continues_run, run_directory
from datamodules.files import write_csv_rows
from lightning_modules.fooling.functional import RESULT_COLUMNS, summarize
from lightning_modules.image_optimization.jobs import gather_objects

RESULTS_FILE = "fooling_results.csv"


class FoolingReport(ChunkEndCallback):
    """Writes ``fooling_results.csv``: per job success, steps, ``||δ||``, SSIM, PSNR, p(target).

    ``FoolingImage`` brings it (``configure_callbacks``). At the end of each chunk it keeps the
    module's :meth:`~lightning_modules.fooling.FoolingImage.fooling_records`: every job judged on
    its picture rounded to 8 bits as its PNG stores it, so success means the saved file fools the
    network, whichever callback writes the file, and in whatever order. At the end of the run the
    loggers get the summary and each job's figures, and one line says how many were fooled; in a
    run that saves the pictures (an :class:`~callbacks.ImageWriter` among the Trainer's
    callbacks, wherever it is) process 0 writes the CSV beside them, never over an existing one.
    A run that saves nothing (the Python API without ``save_dir``) writes no file.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, Any]]] = []
        self.directory: Optional[Path] = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)  # a collective call: every process is here
        self.rows = []  # a new fit's own (a resumed one gets its rows back from the checkpoint)

    def on_chunk_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.idle:
            self.rows += list(zip(pl_module.job_indices, pl_module.fooling_records()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = [row for _, row in sorted((pair for part in gather_objects(self.rows,
                                                                          trainer.world_size)
                                          for pair in part), key=lambda pair: pair[0])]
        # The CSV describes the saved pictures: it goes where they go, and only there.
        saved = any(isinstance(callback, ImageWriter) for callback in trainer.callbacks)
        if saved and trainer.is_global_zero:
            self.write_csv(rows, self.directory / RESULTS_FILE, continues_run(trainer))
        metrics = summarize(rows)
        for row in rows:
            metrics.update({f"{row['name']}/{key}": float(row[key])
                            for key in ("success", "steps", "l2", "linf", "ssim", "psnr",
                                        "p_target")})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        after = "".join(f", {key[len('success_'):]} {sum(r[key] for r in rows)}"
                        for key in rows[0] if key.startswith("success_")) if rows else ""
        rank_zero_info(
            f"Fooled {sum(r['success'] for r in rows)} of {len(rows)} images (8-bit PNG"
            f"{'; still after ' + after[2:] if after else ''}); "
            f"mean ||δ||₂ {metrics['l2_mean']:.4g}, max ||δ||∞ {metrics['linf_max']:.4g} "
            f"(0-1 pixels)" + (f"; results in {self.directory / RESULTS_FILE}." if saved else ".")
        )

    @staticmethod
    def write_csv(rows: list[dict[str, Any]], path: Path, replace: bool = False) -> None:
        """One line per job (the fixed columns, then ``success_<check>`` and
        ``success_on_<judge>``); an existing file is replaced only with ``replace``."""
        columns = [*RESULT_COLUMNS, *(key for key in (rows[0] if rows else {})
                                      if key not in RESULT_COLUMNS)]
        write_csv_rows(path, columns, [
            {k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()}
            for row in rows], replace)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])

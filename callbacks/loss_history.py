"""Records every logged loss term per step, as CSV and as a loss-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn

from callbacks.logged_images import log_picture
from callbacks.plots import line_plot, term_panels
from callbacks.run_directory import continues_run, run_directory
from datamodules.files import write_csv_rows
from lightning_modules.image_optimization.module import ImageOptimization


class LossHistory(pl.Callback):
    """Writes ``losses.csv`` (one row per step, one column per term) and ``loss_curve.png``.

    An :class:`~lightning_modules.image_optimization.ImageOptimization` hands over its per-step rows (read from
    the device every ``log_every_n_steps`` steps, so no step is lost); for other modules every
    logged metric whose name ends in ``loss`` is recorded each step. ``step`` counts the
    steps of the whole run. The rows so far travel in checkpoints, so a resumed run writes the
    complete history; process 0 writes the files when training ends.

    A loss that stops moving is said, once per fit: an optimizer that stalls (L-BFGS at a point
    where its curvature pairs break down, say) otherwise leaves the picture frozen in silence.

    Args:
        stall_steps: Say so when the total loss has changed by less than ``stall_tolerance``
            (relative) over this many recorded steps; 0: never.
        stall_tolerance: The relative change below which the loss counts as not moving.
    """

    def __init__(self, stall_steps: int = 20, stall_tolerance: float = 1e-6) -> None:
        self.rows: list[dict[str, float]] = []
        self.directory: Path | None = None
        self.stall_steps = stall_steps
        self.stall_tolerance = stall_tolerance
        self.stalled_at: int | None = None  # the step from which the loss stood still

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)
        self.rows = []  # a new fit's own (a resumed one gets its rows back from the checkpoint)
        self.stalled_at = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if isinstance(pl_module, ImageOptimization):
            # The module reads its losses on the host every log_every_n_steps steps (reading
            # them here every step would wait for the GPU every step): take what it has read.
            self.rows.extend(pl_module.take_loss_rows())
            self._check_stall()
            return
        row = {"step": float(trainer.global_step)}
        row.update({name: float(value) for name, value in trainer.callback_metrics.items()
                    if name.endswith("loss")})
        self.rows.append(row)

    def _check_stall(self) -> None:
        if self.stalled_at is not None or not self.stall_steps:
            return
        recent = [row["loss"] for row in self.rows[-(self.stall_steps + 1):] if "loss" in row]
        if len(recent) <= self.stall_steps or not any(recent):
            return  # too few steps, or a loss of 0: the goal is reached, nothing stalled
        last = recent[-1]
        tolerance = self.stall_tolerance * abs(last)
        if all(abs(value - last) <= tolerance for value in recent):
            # Since when: the earliest step from which every loss stayed this close.
            since = len(self.rows) - 1
            while since > 0 and abs(self.rows[since - 1].get("loss", float("inf")) - last) \
                    <= tolerance:
                since -= 1
            self.stalled_at = int(self.rows[since]["step"])
            rank_zero_warn(
                f"The loss has not moved since step {self.stalled_at} (it stayed at "
                f"{recent[-1]:.6g} for {self.stall_steps} steps): the optimizer stalled. Try "
                "another learning rate or optimizer, or fewer steps.")

    def state_dict(self) -> dict[str, Any]:
        return {"rows": [dict(row) for row in self.rows]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = [dict(row) for row in state_dict["rows"]]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if isinstance(pl_module, ImageOptimization):
            self.rows.extend(pl_module.take_loss_rows())  # the last steps, read at the chunk's end
        if trainer.is_global_zero and self.rows:
            replace = continues_run(trainer)
            self.write_csv(self.directory / "losses.csv", replace)
            self.plot(self.directory / "loss_curve.png", replace)
            log_picture(trainer, "loss_curve", self.directory / "loss_curve.png")

    def write_csv(self, path: Path, replace: bool = False) -> None:
        """Write the recorded rows; an existing file is replaced only with ``replace``."""
        columns = list(self.rows[0])
        lines = [{k: (int(v) if k == "step" else f"{v:.6g}") for k, v in row.items()}
                 for row in self.rows]
        write_csv_rows(path, columns, lines, replace)

    def plot(self, path: Path, replace: bool = False) -> None:
        """Draw each loss term against the step: together on a log scale when every term is
        positive (style transfer's), else each in its own panel on an axis that shows it (a
        class visualization's score enters the loss negated and a log axis would hide it)."""
        steps = [row["step"] for row in self.rows]
        terms = {name: [row.get(name, float("nan")) for row in self.rows]
                 for name in self.rows[0] if name != "step"}
        if any(value < 0 for values in terms.values() for value in values):
            # A term that is 0 throughout (an L2 weight of 0) gets no panel, nor a total that
            # is the one term left.
            shown = {name: values for name, values in terms.items()
                     if name == "loss" or any(value != 0 for value in values)}
            if len(shown) == 2 and "loss" in shown and all(
                    abs(a - b) <= 1e-6 * max(1.0, abs(a))
                    for a, b in zip(*(values for name, values in shown.items()))):
                shown = {name: values for name, values in shown.items() if name != "loss"}
            term_panels(path, steps, {name.replace("_", " "): values
                                      for name, values in shown.items()}, replace)
            return
        # A log axis cannot show zeros (the content loss at step 1 of a run started from the
        # content image): leave those points out rather than the whole term.
        series = {}
        for name in self.rows[0]:
            values = [v if v > 0 else float("nan")
                      for v in (row.get(name, float("nan")) for row in self.rows)]
            if name != "step" and any(v > 0 for v in values):
                series[name.replace("_", " ")] = values
        line_plot(path, [row["step"] for row in self.rows], series, "loss (per job)",
                  log_scale=True, bold=("loss",), replace=replace)

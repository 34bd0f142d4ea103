"""A prototype of the proposed cheap step, to measure it before it is applied to the project.

Nothing here is used by the project: these subclasses show, on top of the current modules, what
the changes proposed in ``benchmarks/README.md`` ("Proposed changes") do to the time per step.
``python benchmarks/run.py --variants user,proposed`` compares them.

What changes against ``ImageOptimization.training_step`` and the callbacks:

* the loss terms of each step are stacked into one small tensor and kept on the device; the host
  reads them, checks them for NaN/inf, and hands them to ``self.log`` only every
  ``trainer.log_every_n_steps`` steps (and at the end of a chunk, without logging). A host read
  waits for the GPU, and every ``self.log`` call costs Lightning 0.2-0.5 ms of Python;
* ``ClassVisualization`` keeps each step's target probabilities on the device the same way
  (no ``.tolist()`` per step) and logs them only on those steps;
* ``LossHistory`` takes the per-step rows the module recorded instead of reading
  ``trainer.callback_metrics`` every step (``losses.csv`` still has every step);
* the run uses ``log_every_n_steps=10`` and (variant ``proposed``, not ``proposed_bar1``) a
  progress bar refreshed every 10 steps (the values it shows change only then).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from callbacks.loss_history import LossHistory
from lightning_modules.base import DivergedError
from lightning_modules.class_visualization import ClassVisualization
from lightning_modules.style_transfer import StyleTransfer


class DeferredLogging:
    """Mixin with the proposed ``ImageOptimization.training_step`` (put it first in the bases)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_names: list[str] = []
        self.loss_rows: list[dict[str, float]] = []
        self._pending_losses: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        sums: dict[str, torch.Tensor] = {}
        for group, images in enumerate(self.images):
            for name, values in self.loss_terms(group, images).items():
                sums[name] = sums[name] + values.sum() if name in sums else values.sum()
        total = torch.stack(list(sums.values())).sum()
        self.record_losses({**{f"{name}_loss": value for name, value in sums.items()},
                            "loss": total})
        return total

    def is_log_step(self) -> bool:
        """Whether Lightning writes the loggers after this step (its own rule)."""
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.global_step + 1) % every == 0

    def record_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Keep this step's losses (per job) on the device; flush them on logging steps."""
        values = torch.stack([value.detach().float() for value in losses.values()])
        values = values * (0.0 if self.idle else 1.0) / self.chunk_size
        self.loss_names = list(losses)
        self._pending_losses.append((self.global_step + 1, values))
        if self.is_log_step():
            self.flush_losses(log=True)

    def flush_losses(self, log: bool) -> None:
        """Read the pending steps on the host (one wait), check them, record rows, log the last."""
        if not self._pending_losses:
            return
        steps = [step for step, _ in self._pending_losses]
        values = torch.stack([value for _, value in self._pending_losses])
        self._pending_losses = []
        values = self.trainer.strategy.reduce(values, reduce_op="sum")  # per job, all processes
        host = values.cpu()
        finite = torch.isfinite(host).all(1)
        if not bool(finite.all()):
            index = int((~finite).nonzero()[0, 0])
            # As before: the value of the total and the step index the optimizer was at.
            raise DivergedError(
                f"The loss became {host[index, -1].item()} at step {steps[index] - 1}: the run "
                "diverged; lower the learning rate or the loss weights.")
        names = self.loss_names
        self.loss_rows.extend({"step": float(step), **dict(zip(names, row.tolist()))}
                              for step, row in zip(steps, host))
        if log:
            for name, value in zip(names, values[-1]):
                self.log(name, value, prog_bar=True, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        # self.log(on_step=True) is not allowed here: the rows are kept, the loggers wait.
        self.flush_losses(log=False)
        super().on_train_epoch_end()


class ProposedStyleTransfer(DeferredLogging, StyleTransfer):
    """``StyleTransfer`` with the proposed step."""


class ProposedClassVisualization(DeferredLogging, ClassVisualization):
    """``ClassVisualization`` with the proposed step and probability logging."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_probabilities: list[torch.Tensor] = []
        self._targets: torch.Tensor | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = DeferredLogging.training_step(self, batch, batch_idx)
        logits = self._last_logits.detach()
        if self._targets is None or self._targets.device != logits.device:
            # Built once: a host list to a GPU tensor is a blocking copy every step.
            self._targets = torch.as_tensor(self.class_indices, device=logits.device)
        probabilities = logits.float().softmax(1).gather(1, self._targets.view(-1, 1))[:, 0]
        self._pending_probabilities.append(probabilities)
        if self.is_log_step():
            self.flush_probabilities(log=True)
        return loss

    def flush_probabilities(self, log: bool) -> None:
        """Move the pending probabilities to the history (one host read); log the last step's."""
        if not self._pending_probabilities:
            return
        last = self._pending_probabilities[-1]
        self.probability_history.extend(torch.stack(self._pending_probabilities).cpu().tolist())
        self._pending_probabilities = []
        if log:
            self.log_job_mean("target_prob", last, prog_bar=True)
            for slot, value in zip(self.slots, last):
                self.log(f"target_prob/{slot.name}", value, on_step=True, on_epoch=False)

    def on_train_epoch_end(self) -> None:
        self.flush_probabilities(log=False)  # ClassVisualization's own hook reads the history
        super().on_train_epoch_end()


class ProposedLossHistory(LossHistory):
    """``LossHistory`` that takes the rows the module recorded (no per-step host reads)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        pass

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = [dict(row) for row in getattr(pl_module, "loss_rows", [])]
        super().on_train_end(trainer, pl_module)


PROPOSED_MODULES = {StyleTransfer: ProposedStyleTransfer,
                    ClassVisualization: ProposedClassVisualization}

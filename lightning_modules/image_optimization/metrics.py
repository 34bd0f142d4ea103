"""Per-step values kept on the device and read on the host in one copy every few steps.

Reading a value on the host waits for the GPU, so the losses and probabilities of each step stay
where they were computed until a logging step (Lightning's ``log_every_n_steps``) or the end of a
chunk, then travel together.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from lightning_modules.errors import DivergedError


class StepBuffer:
    """Values of several steps, each a tensor of one shape, waiting on the device."""

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._values: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._steps)

    def append(self, step: int, values: torch.Tensor) -> None:
        """Keep ``values`` of ``step`` (detached, float32), without reading them."""
        self._steps.append(step)
        self._values.append(values.detach().float())

    def last(self) -> Optional[torch.Tensor]:
        """The newest values still waiting (on the device), or None."""
        return self._values[-1] if self._values else None

    def take(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
             ) -> tuple[list[int], Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Empty the buffer.

        Args:
            reduce: Applied once to the stacked ``[steps, ...]`` values before they are read
                (e.g. a sum over processes: one collective for all the steps).

        Returns:
            The steps, the stacked values on the device and the same on the host (None and
            None when the buffer was empty).
        """
        if not self._steps:
            return [], None, None
        steps, values = self._steps, torch.stack(self._values)
        self._steps, self._values = [], []
        if reduce is not None:
            values = reduce(values)
        return steps, values, values.cpu()


class LossRecord:
    """A run's loss terms per step: waiting on the device, then checked and kept as rows.

    Attributes:
        names: The metric names of the terms, in order (the total last).
        rows: The rows read so far and not yet taken: ``{"step": k, name: value, ...}``.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.rows: list[dict[str, float]] = []
        self._pending = StepBuffer()

    def append(self, step: int, losses: dict[str, torch.Tensor], scale: float) -> None:
        """Keep step ``step``'s terms (each a scalar tensor), multiplied by ``scale``."""
        self.names = list(losses)
        self._pending.append(step, torch.stack([value.detach().float()
                                                for value in losses.values()]) * scale)

    def flush(self, reduce: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
              ) -> Optional[torch.Tensor]:
        """Read the waiting steps (after ``reduce``), stop on NaN or inf, keep them as rows.

        Returns:
            The newest step's values on the device, or None when nothing was waiting.

        Raises:
            DivergedError: A value is NaN or infinite.
        """
        steps, values, host = self._pending.take(reduce)
        if host is None:
            return None
        finite = torch.isfinite(host).all(1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0, 0])
            raise DivergedError(
                f"The loss became {host[first, -1].item()} at step {steps[first] - 1}: the run "
                "diverged; lower the learning rate or the loss weights."
            )
        self.rows.extend({"step": float(step), **dict(zip(self.names, row.tolist()))}
                         for step, row in zip(steps, host))
        return values[-1]

    def take_rows(self) -> list[dict[str, float]]:
        """The rows read since the last call."""
        rows, self.rows = self.rows, []
        return rows

"""Coarse-to-fine scales: which size a picture is optimized at, at which step.

A picture started at its full size takes on the style's fine texture but not its large forms:
the network's receptive fields are small against the picture. Optimized first small, then
upsampled and refined, it gets both (Gatys et al. 2017; crowsonkb's style-transfer-pytorch).
"""

from __future__ import annotations

import math
from typing import Literal, Optional, Sequence, Union

from lightning_modules.errors import UserInputError
# Its old home: DeepDream and notebooks import it from here.
from lightning_modules.image_optimization.resize import resize_pixels  # noqa: F401

#: The smallest side of the automatic ladder, and its growth from one scale to the next.
AUTO_START = 128
AUTO_GROWTH = math.sqrt(2)


class ScalePlan:
    """The scales of a run and the steps each one gets.

    Args:
        scales: The shorter sides, ascending; the image's own side is always the last (added
            if missing, and larger ones are refused). ``"auto"``: 128 px, then sides growing by
            ``sqrt(2)`` while below the image's side, then the image's side, and never more
            scales than the run has steps (the coarsest are left out). None: one scale.
        steps: Steps at each scale, summing to the run's ``max_steps``; None: equal parts, the
            remainder to the coarsest scales.
        steps_option: The option that gave ``steps``, as messages name it (DeepDream's
            ``octave_steps``).
        scale_word: What a scale is called in messages (DeepDream's ``octave``).
    """

    def __init__(self, scales: Union[Sequence[int], Literal["auto"], None] = None,
                 steps: Optional[Sequence[int]] = None, steps_option: str = "scale_steps",
                 scale_word: str = "scale") -> None:
        if isinstance(scales, str) and scales != "auto":
            raise UserInputError(f"scales must be a list of shorter sides or 'auto', got '{scales}'.")
        if scales is not None and not isinstance(scales, str):
            scales = list(scales)
            if not scales or any(not isinstance(side, int) or side < 8 for side in scales):
                raise UserInputError(f"scales must be whole numbers of pixels of at least 8, got "
                                     f"{scales}.")
            if any(b <= a for a, b in zip(scales, scales[1:])):
                raise UserInputError(f"scales must grow from coarse to fine, got {scales}.")
        if steps is not None:
            steps = list(steps)
            if not steps or any(not isinstance(n, int) or n < 1 for n in steps):
                raise UserInputError(f"{steps_option} must be whole numbers of at least 1, got "
                                     f"{steps}.")
        self.scales = scales
        self.steps = steps
        self.steps_option = steps_option
        self.scale_word = scale_word

    def sides(self, shorter: int, most: Optional[int] = None) -> list[int]:
        """The shorter side at each scale, for a picture whose shorter side is ``shorter``.

        Args:
            shorter: The picture's shorter side.
            most: The run's steps: at most this many automatic scales (a 2-step run of a
                256 px picture gets 181 and 256 px, not a refusal).
        """
        if self.scales is None:
            return [shorter]
        if self.scales == "auto":
            sides, side = [], float(AUTO_START)
            while round(side) < shorter:
                sides.append(round(side))
                side *= AUTO_GROWTH
            sides.append(shorter)
            return sides[-most:] if most else sides
        if self.scales[-1] > shorter:
            raise UserInputError(f"The scales {self.scales} go past the image's shorter side "
                                 f"({shorter} px); the last scale is the image size.")
        return [side for side in self.scales if side < shorter] + [shorter]

    def count(self, size: Optional[Sequence[int]], most: Optional[int] = None) -> int:
        """The number of scales for a picture of ``size = (H, W)`` (1 without a size)."""
        return len(self.sides(min(size), most)) if size else 1

    def factor(self, scale: int, size: Sequence[int], most: Optional[int] = None) -> float:
        """How much smaller than the full picture of ``size`` it is at scale ``scale``."""
        shorter = min(size)
        return self.sides(shorter, most)[scale] / shorter

    def size(self, size: Sequence[int], scale: int,
             most: Optional[int] = None) -> tuple[int, int]:
        """The picture's ``(H, W)`` at scale ``scale``: its aspect ratio kept."""
        height, width = size
        if scale == self.count(size, most) - 1:
            return int(height), int(width)
        factor = self.factor(scale, size, most)
        return max(1, round(height * factor)), max(1, round(width * factor))

    def step_counts(self, max_steps: int, count: int) -> list[int]:
        """The steps at each of ``count`` scales, out of ``max_steps``."""
        if self.steps is not None:
            if len(self.steps) != count or sum(self.steps) != max_steps:
                raise UserInputError(
                    f"{self.steps_option} {self.steps} must have one entry per "
                    f"{self.scale_word} ({count}) and sum to trainer.max_steps "
                    f"({max_steps}).")
            return list(self.steps)
        if max_steps < count:
            raise UserInputError(f"{count} {self.scale_word}s need at least {count} steps "
                                 f"(trainer.max_steps is {max_steps}).")
        base, extra = divmod(max_steps, count)
        return [base + (1 if k < extra else 0) for k in range(count)]

    def scale_at(self, step: int, max_steps: int, count: int) -> int:
        """The scale of step ``step`` (counted from 0 in the chunk)."""
        end = 0
        for scale, steps in enumerate(self.step_counts(max_steps, count)):
            end += steps
            if step < end:
                return scale
        return count - 1

    def is_scale_end(self, steps_taken: int, max_steps: int, count: int) -> bool:
        """Whether ``steps_taken`` steps end a scale that is not the last."""
        ends = [sum(self.step_counts(max_steps, count)[: k + 1]) for k in range(count - 1)]
        return steps_taken in ends

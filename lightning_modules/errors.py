"""Errors that reach the user as one sentence, and the option checks that raise them.

Every layer (backbones, techniques, data, callbacks, the CLI) may import this module; it imports
nothing of the project.
"""

from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

# Larger steps overflow the image's 32-bit floats (largest 3.4e38) within a step or two: Adam's
# first step is 10 * lr. The techniques' defaults are 0.05 to 25.
MAX_LEARNING_RATE = 1e30

# The least one pixel costs once it is an image tensor: 3 channels of float32.
BYTES_PER_PIXEL = 3 * 4


class UserInputError(ValueError):
    """Bad input from the user: reported as one sentence and a non-zero exit, no traceback."""


class DivergedError(RuntimeError):
    """The optimization produced NaN or infinite losses."""


def check_non_negative(name: str, values: float | Sequence[float]) -> None:
    """Raise a one-sentence error if a weight (or any of a list of weights) is negative or NaN."""
    listed = isinstance(values, (list, tuple)) or (isinstance(values, Sequence)
                                                   and not isinstance(values, str))
    for value in values if listed else [values]:
        # Also catches NaN, and what is no number at all (None, a word).
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise UserInputError(f"{name} must be zero or positive, got {value!r}.")


def check_positive(name: str, value: Optional[float], unit: str = "") -> None:
    """Raise a one-sentence error unless ``value`` is None or a positive number."""
    if value is not None and not value > 0:  # also catches NaN
        raise UserInputError(f"{name} must be positive{unit}, got {value}.")


def check_choice(name: str, value: Any, choices: Iterable[Any], what: str = "") -> None:
    """Unless ``value`` is a choice, raise ``Unknown <what> 'value'; choose 'a' or 'b'.``"""
    choices = list(choices)
    if value not in choices:
        quoted = [f"'{choice}'" for choice in choices]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
        raise UserInputError(f"Unknown {what or name} '{value}'; choose {listed}.")


def check_learning_rate(name: str, value: Optional[float]) -> None:
    """Raise a one-sentence error unless ``value`` is None or a positive, finite, sane step.

    A step of 1e38 overflows float32 inside the optimizer (a traceback, not a divergence), so it
    is refused before the first step.
    """
    if value is not None and not 0 < value <= MAX_LEARNING_RATE:  # also catches NaN and inf
        raise UserInputError(f"{name} must be positive and at most {MAX_LEARNING_RATE:g}, "
                             f"got {value:g}.")


def available_memory() -> Optional[int]:
    """The memory this process could still allocate, in bytes; None where nothing says.

    Linux's ``MemAvailable`` (free memory plus caches it can drop), else the machine's RAM. Past
    it, an allocation does not fail: the kernel's OOM killer ends the process, with no message.
    """
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(count: float) -> str:
    """``count`` bytes in the largest binary unit under 1024 of it, e.g. ``"4.0 GiB"``."""
    size, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if size < 1024:
            break
        size, unit = size / 1024, larger
    return f"{size:.1f} {unit}" if size < 1e6 else f"{size:.1e} {unit}"


def check_fits_in_memory(what: str, needed_bytes: float, advice: str,
                         available: Optional[float] = None) -> None:
    """Refuse, before allocating, what could not fit in the memory left, even alone.

    ``needed_bytes`` is a lower bound (images, not their features), so nothing a machine could
    hold is refused: a 4000 x 6000 print reads in 0.4 GiB, against its real 30 GiB or so.

    Args:
        what: What would be made, to start the sentence (``"c.png at 100000 px ..."``).
        needed_bytes: The least it needs.
        advice: What to do instead, to end the sentence.
        available: The memory to compare with; None: :func:`available_memory`.

    Raises:
        UserInputError: ``"<what> needs at least N GiB of memory, more than the M GiB
            available on this machine; <advice>."``
    """
    available = available_memory() if available is None else available
    if available is not None and needed_bytes > available:
        raise UserInputError(f"{what} needs at least {format_bytes(needed_bytes)} of memory, "
                             f"more than the {format_bytes(available)} available on this "
                             f"machine{'; ' + advice if advice else ''}.")


def check_image_side(name: str, side: Optional[int],
                     bytes_per_pixel: int = BYTES_PER_PIXEL) -> None:
    """Refuse an image side so large that even one square image of it could not fit in memory.

    Checked when the option is given, before any file is read or tensor allocated.

    Args:
        name: The option (``"image_size"``).
        side: Its value, in pixels; None: not given.
        bytes_per_pixel: What making one such image costs a pixel, at least.
    """
    if side is not None and side > 0:
        check_fits_in_memory(
            f"{name} {side} makes images of at least {side:,} x {side:,} pixels, and one "
            f"(before its features)", side * side * bytes_per_pixel, f"give a smaller {name}")

"""Errors that reach the user as one sentence, and the option checks that raise them.

Every layer (backbones, techniques, data, callbacks, the CLI) may import this module; it imports
nothing of the project.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence


class UserInputError(ValueError):
    """Bad input from the user: reported as one sentence and a non-zero exit, no traceback."""


class DivergedError(RuntimeError):
    """The optimization produced NaN or infinite losses."""


def check_non_negative(name: str, values: float | Sequence[float]) -> None:
    """Raise a one-sentence error if a weight (or any of a list of weights) is negative or NaN."""
    for value in [values] if isinstance(values, (int, float)) else values:
        if not value >= 0:  # also catches NaN
            raise UserInputError(f"{name} must be zero or positive, got {value}.")


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

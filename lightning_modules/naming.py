"""Output names: one rule for safe file names, one for class names, one for making them unique."""

from __future__ import annotations

import re
import textwrap
from typing import Iterable


def safe_name(text: str) -> str:
    """A file-name-safe stem: runs of characters other than ``A-Z a-z 0-9 . _ -`` become ``_``.

    Example: ``"my photo (1)"`` -> ``"my_photo_1"``; an empty result becomes ``"image"``.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def class_slug(category: str) -> str:
    """A class name in file names: lower case, runs of other characters as one ``_``.

    Example: ``"Granny Smith"`` -> ``"granny_smith"``, ``"black-footed ferret"`` ->
    ``"black_footed_ferret"``.
    """
    return re.sub(r"[^a-z0-9]+", "_", category.lower()).strip("_")


def class_file_name(index: int, category: str) -> str:
    """A class's file name, e.g. ``0130_flamingo``, ``0207_golden_retriever``."""
    return f"{index:04d}_{class_slug(category)}"


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, the second ``x`` as ``x_2``, the third as ``x_3``, and so on.

    A generated name never collides with a name given later either (``["a", "a", "a_2"]`` ->
    ``["a", "a_2", "a_2_2"]``).
    """
    taken: set[str] = set()
    result = []
    for name in names:
        candidate, copy = name, 1
        while candidate in taken:
            copy += 1
            candidate = f"{name}_{copy}"
        taken.add(candidate)
        result.append(candidate)
    return result


def short_title(text: str, width: int = 24) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, ending in ``...``."""
    return textwrap.shorten(text, width=width, placeholder="...")

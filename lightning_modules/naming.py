"""Output names: one rule for safe file names, one for class names, one for making them unique."""

from __future__ import annotations

import hashlib
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


# The files a run writes beside each job's <name>.png are <name><suffix>.png (callbacks): a job
# named like another's derived file would overwrite it (styles "x" and "x_sheet").
DERIVED_SUFFIX = re.compile(
    r"_(sheet|heatmap|overlay|saliency|attributions|interrupted_step\d+(_sheet)?)$")
# The run's own files (callbacks, loggers, folders), and the saliency writer's batch sheets.
RUN_FILES = frozenset({"loss_curve", "losses", "classes_sheet", "class_probability",
                       "fooling_results", "config", "hparams", "metrics", "checkpoints",
                       "snapshots"})
RUN_FILE_PATTERN = re.compile(r"(sheet_\d+|config_resumed(_\d+)?|\w+_before_resume(_\d+)?)$")


# The longest job name, in bytes. A job's files add up to about 40 bytes to it
# (``_interrupted_step000123_sheet.png``, and ``.<name>.partial-<pid>`` while being written),
# and most file systems allow 255 bytes per name.
MAX_NAME_BYTES = 120
# The hash that keeps shortened names apart: 10 hexadecimal digits of SHA-256.
NAME_HASH_LENGTH = 10


def shortened(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name``, or when longer than ``limit`` bytes its beginning and a short hash of it.

    Two long names that begin alike stay apart, and a name is shortened the same way on every
    run (a resumed run finds its files). Example: 300 ``a`` -> 109 ``a``, ``_`` and 10 hex
    digits.
    """
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return name
    digest = hashlib.sha256(encoded).hexdigest()[:NAME_HASH_LENGTH]
    # Cut at a character boundary: a multi-byte character is dropped whole.
    beginning = encoded[:limit - NAME_HASH_LENGTH - 1].decode("utf-8", "ignore").rstrip("._ ")
    return f"{beginning}_{digest}"


def unique_names(names: Iterable[str]) -> list[str]:
    """The names in order, the second ``x`` as ``x_2``, the third as ``x_3``, and so on.

    A name is also renamed when one of its files would be another job's or the run's own:
    ``["x", "x_sheet"]`` -> ``["x", "x_sheet_2"]`` (``x_sheet.png`` is ``x``'s sheet),
    ``["loss_curve"]`` -> ``["loss_curve_2"]``. Names differing only in case count as the same
    (they are on case-insensitive file systems). A generated name never collides with a name
    given later either (``["a", "a", "a_2"]`` -> ``["a", "a_2", "a_2_2"]``). A name longer than
    :data:`MAX_NAME_BYTES` is :func:`shortened` first, so that its files fit the file system.
    """
    taken: set[str] = set()
    derived: set[str] = set()  # the names that taken names' files were derived from
    result = []
    for name in map(shortened, names):
        candidate, copy = name, 1
        while _collides(candidate.casefold(), taken, derived):
            copy += 1
            candidate = f"{name}_{copy}"
        taken.add(candidate.casefold())
        base = _derived_from(candidate.casefold())
        if base is not None:
            derived.add(base)
        result.append(candidate)
    return result


def _derived_from(name: str) -> str | None:
    """The job name whose file ``name`` would be (``x_sheet`` -> ``x``), if any."""
    match = DERIVED_SUFFIX.search(name)
    return name[:match.start()] if match and match.start() > 0 else None


def _collides(name: str, taken: set[str], derived: set[str]) -> bool:
    return (name in taken or name in derived or name in RUN_FILES
            or RUN_FILE_PATTERN.fullmatch(name) is not None
            or _derived_from(name) in taken)


def short_title(text: str, width: int = 24) -> str:
    """``text`` cut at a word boundary to at most ``width`` characters, ending in ``...``."""
    return textwrap.shorten(text, width=width, placeholder="...")

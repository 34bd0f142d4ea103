"""Where images come from: paths, folders, globs and built-in samples, and names for them."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence, Union

from datamodules.images import MEMORY_PREFIX, SAMPLE_PREFIX, memory_name
from lightning_modules.errors import UserInputError
from lightning_modules.naming import safe_name, unique_names  # noqa: F401 - re-exported

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}

Sources = Union[str, Sequence[str], None]


def image_files(folder: Path) -> list[str]:
    """The image files directly in ``folder``, sorted."""
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def expand_sources(sources: Sources, option: str = "An image source") -> list[str]:
    """Turn a path, a list of paths, folders (their images, sorted) and globs into paths.

    An existing path is taken as it is, even when it reads as a glob (``photo[1].jpg``).

    Args:
        sources: A path, ``sample:NAME``, an in-memory ``memory:...`` source, a folder, a glob
            pattern, or a list of these.
        option: Where the sources were given (``"--data.content"``), for error messages.

    Returns:
        The image sources in order.

    Raises:
        UserInputError: If a source is empty, a folder holds no images or a glob matches
            nothing.
    """
    if sources is None:
        return []
    items = [sources] if isinstance(sources, (str, Path)) else list(sources)
    expanded: list[str] = []
    for item in map(str, items):
        if not item.strip():
            # Path("") is the current folder: it would take whatever images lie there.
            raise UserInputError(f"{option} is empty: give an image file, folder or glob.")
        if item.startswith((SAMPLE_PREFIX, MEMORY_PREFIX)):
            expanded.append(item)
        elif Path(item).is_dir():
            found = image_files(Path(item))
            if not found:
                raise UserInputError(f"Folder {item} holds no image files.")
            expanded += found
        elif glob.has_magic(item) and not Path(item).exists():
            # An existing file named like a pattern ("photo[1].jpg") is that file.
            found = sorted(glob.glob(item))
            if not found:
                raise UserInputError(f"No file matches {item}.")
            expanded += found
        else:
            expanded.append(item)
    return expanded


def is_missing_file(source: str) -> bool:
    """Whether ``source`` names a file that is not there (samples and memory are always)."""
    return not source.startswith((SAMPLE_PREFIX, MEMORY_PREFIX)) and not os.path.lexists(source)


def source_stem(source: str) -> str:
    """A short name for an image source, e.g. ``chelsea`` for ``sample:chelsea`` or a path
    (``content`` for an in-memory ``memory:3/content``)."""
    if source.startswith(SAMPLE_PREFIX):
        return source[len(SAMPLE_PREFIX):]
    if source.startswith(MEMORY_PREFIX):
        return memory_name(source)
    return Path(source).stem

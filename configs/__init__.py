"""The shipped run configs, installed with the package and found by name.

``python cli.py fit --config style_transfer`` (or ``image-opt fit --config style_transfer``) runs
``configs/style_transfer.yaml`` from any directory, in a checkout or after ``pip install .``;
``cs231n/the_scream`` names a preset in a sub-folder. A path to a YAML file of one's own works as
it is, and an existing path always wins over a shipped name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Optional

_SUFFIXES = (".yaml", ".yml")


def shipped_configs() -> list[str]:
    """The names of the shipped configs (``style_transfer``, ``cs231n/the_scream``, ...)."""
    root = resources.files(__name__)
    names = []
    for folder, prefix in ((root, ""), *((entry, f"{entry.name}/") for entry in root.iterdir()
                                          if entry.is_dir() and not entry.name.startswith("_"))):
        names += [prefix + entry.name.rsplit(".", 1)[0] for entry in folder.iterdir()
                  if entry.name.endswith(_SUFFIXES)]
    return sorted(names)


def shipped_config(name: str) -> Optional[Path]:
    """The file of a shipped config, by name, or None when no shipped config has that name.

    Args:
        name: ``style_transfer``, ``style_transfer.yaml``, ``cs231n/the_scream`` or the path a
            checkout's examples use, ``configs/style_transfer.yaml``.
    """
    text = str(name).replace("\\", "/").strip()
    if text.startswith("./"):
        text = text[2:]
    if text.startswith("configs/"):
        text = text[len("configs/"):]
    if not text.endswith(_SUFFIXES):
        text += ".yaml"
    parts = [part for part in text.split("/") if part]
    if not parts or any(part in ("..", ".") for part in parts):
        return None
    entry = resources.files(__name__).joinpath(*parts)
    if not entry.is_file():
        return None
    # Installed packages live on the file system (a regular wheel install or a checkout).
    return Path(str(entry))


def resolve_config(given: str) -> str:
    """``given`` itself when it is an existing file, else the shipped config of that name.

    A name that is neither is returned unchanged, so that the parser reports it as it reports
    any missing file.
    """
    if Path(given).exists():
        return given
    found = shipped_config(given)
    return str(found) if found is not None else given

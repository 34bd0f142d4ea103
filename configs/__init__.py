"""The shipped run configs, installed with the package and found by name.

``python cli.py fit --config style_transfer`` (or ``image-opt fit --config style_transfer``) runs
``configs/style_transfer.yaml`` from any directory, in a checkout or after ``pip install .``;
``cs231n/the_scream`` names a preset in a sub-folder. A path to a YAML file of one's own works as
it is, and an existing path always wins over a shipped name.
"""

from __future__ import annotations

import os
import stat
from importlib import resources
from pathlib import Path
from typing import Any, Optional

_SUFFIXES = (".yaml", ".yml")

#: A config is a page of options; anything larger is not one (and is not read into memory).
MOST_CONFIG_BYTES = 1 << 20

#: Values after YAML's anchors and aliases are expanded: a few hundred in a real config, while
#: a "billion laughs" file expands exponentially and would hang the parser.
MOST_CONFIG_VALUES = 100_000


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


def find_config(given: Any) -> Path:
    """The config file ``given`` names: an existing file (which always wins), else a shipped
    config of that name; checked to be a readable text file of YAML that stays small.

    Raises:
        UserInputError: If there is no such config, or it is no config at all (a binary file,
            a named pipe, a folder, YAML whose aliases expand beyond reason).
    """
    from lightning_modules.errors import UserInputError

    path = Path(os.fspath(given))
    if not os.path.lexists(path):
        found = shipped_config(str(given))
        if found is None:
            raise UserInputError(f"Config {given} not found: give a YAML file or a shipped "
                                 f"config's name ({', '.join(shipped_configs())}).")
        path = found
    check_config_file(path)
    return path


def check_config_file(path: Path) -> None:
    """Refuse what would hang or trace back in the YAML parser, in one sentence.

    Raises:
        UserInputError: If ``path`` is not a regular file, is too large, is not UTF-8 text or
            is YAML that expands beyond ``MOST_CONFIG_VALUES`` values.
    """
    import yaml

    from lightning_modules.errors import UserInputError

    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise UserInputError(f"Cannot read the config {path} ({error.strerror or error}).") \
            from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) \
            else "not a regular file"
        raise UserInputError(f"The config {path} is {kind}: give a YAML file.")
    if path.stat().st_size > MOST_CONFIG_BYTES:
        raise UserInputError(f"The config {path} is {path.stat().st_size:,} bytes: a config is "
                             f"a YAML file of options, at most {MOST_CONFIG_BYTES:,} bytes.")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise UserInputError(f"Cannot read the config {path} ({error.strerror or error}).") \
            from None
    except UnicodeDecodeError:
        raise UserInputError(f"The config {path} is not text (UTF-8): give a YAML file.") \
            from None
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError as error:
        raise UserInputError(f"The config {path} is not valid YAML "
                             f"({' '.join(str(error).split())}).") from None
    sizes: dict[int, int] = {}
    try:
        values = sum(_expanded_size(node, sizes) for node in nodes if node is not None)
    except RecursionError:
        values = MOST_CONFIG_VALUES + 1
    if values > MOST_CONFIG_VALUES:
        raise UserInputError(f"The config {path} expands to more than {MOST_CONFIG_VALUES:,} "
                             f"values (YAML anchors and aliases): not a config.")


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values ``node`` holds once every alias is expanded (each node counted once by
    identity, so the count itself takes linear time)."""
    import yaml

    key = id(node)
    if key in sizes:
        return sizes[key]
    sizes[key] = MOST_CONFIG_VALUES + 1  # an alias of an ancestor: a cycle
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key_node, sizes) + _expanded_size(value, sizes)
                       for key_node, value in node.value)
    else:
        size = 1
    sizes[key] = size
    return size

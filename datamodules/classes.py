"""Class lists in, one class visualization job per class out."""

from __future__ import annotations

from typing import Optional, Union

from datamodules.jobs import JobData
from lightning_modules.errors import UserInputError

# The ten classes of the acceptance test (tarantula ... Granny Smith).
DEFAULT_CLASSES = [76, 78, 113, 130, 207, 366, 417, 604, 683, 948]
NUM_IMAGENET_CLASSES = 1000

Classes = Union[list[Union[int, str]], str]


def parse_classes(classes: Classes) -> list[Union[int, str]]:
    """Check a class list and turn it into indices and names, in order.

    Names stay names: the technique resolves them against its backbone's class names
    (``Backbone.class_index``), which also rejects unknown and ambiguous names and indices out
    of range.

    Args:
        classes: A list of class indices and names, or a string: ``"all"`` (0 to 999), one
            index or name, or several separated by commas (``"76, flamingo, 948"``).

    Returns:
        The classes: non-negative ints and non-empty names.
    """
    if isinstance(classes, str):
        text = classes.strip()
        if text.lower() == "all":
            return list(range(NUM_IMAGENET_CLASSES))
        items: list[Union[int, str]] = [part.strip() for part in text.split(",")]
    elif isinstance(classes, (list, tuple)):
        items = list(classes)
    else:
        raise UserInputError(
            f"classes must be a list of class indices or names, or 'all', got {classes!r}."
        )
    parsed: list[Union[int, str]] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise UserInputError(f"A class must be an index or a name, got {item!r}.")
        if isinstance(item, str):
            item = item.strip()
            if item.lstrip("-").isdigit():
                item = int(item)
            elif not item:
                raise UserInputError("A class name is empty; give class indices or names.")
        if isinstance(item, int) and item < 0:
            raise UserInputError(f"Class index {item} is negative; class indices start at 0.")
        parsed.append(item)
    if not parsed:
        raise UserInputError("The class list is empty; give at least one class index or name.")
    return parsed


class ClassListData(JobData):
    """The classes to visualize: one image per class, optimized together (or in batches).

    Args:
        classes: Class indices and/or ImageNet names (case-insensitive; a unique part of a
            name is enough, e.g. ``"retriever"`` is ambiguous but ``"golden retriever"`` is
            not), ``"all"`` for 0 to 999, or a comma-separated string.
        batch_size: The most classes one process optimizes at once; the rest wait for the
            next chunk, each getting ``trainer.max_steps`` steps. None: all at once.
    """

    def __init__(self, classes: Classes = DEFAULT_CLASSES,
                 batch_size: Optional[int] = None) -> None:
        super().__init__(batch_size)
        self.classes = parse_classes(classes)
        self.jobs = list(self.classes)  # resolved against the backbone's names by the technique

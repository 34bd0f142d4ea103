"""A whole dataset of labeled photos, streamed in shards: what a dataset saliency run explains.

The images come from a folder tree (class subfolders give the labels, as torchvision's
``ImageFolder``), a CSV of ``path,label[,x0,y0,x1,y1]`` (an optional object box per image, in
the photo's pixels), a folder, a glob, a list, or the built-in samples with their classes and
hand-drawn boxes. Only the list of paths is held; pixels are read batch by batch (in
``num_workers`` loader processes) and let go.

The dataset's order is cut into **shards** of ``shard_size`` images, the unit of work and of
output: shard ``k`` belongs to process ``k mod world_size``, so each image is explained once by
a fixed process whatever the run did before, and a resumed run leaves out the shards whose
output is already written (:meth:`DatasetImages.leave_out`). Batches never cross a shard, so a
shard's last batch says so (``shard_end``) and the writer can close the shard.

An unreadable image (corrupt, truncated, not an image) is skipped and listed in the batch's
``skipped``, not fatal, unless ``strict``: then it stops the run in one sentence.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.images import (READ_BYTES_PER_PIXEL, SAMPLE_PREFIX, image_to_tensor, load_image,
                                resize_shorter_side)
from datamodules.labeled_images import SAMPLE_LABELS, center_square, folder_label
from datamodules.sources import IMAGE_SUFFIXES, expand_sources, is_missing_file, source_stem
from lightning_modules.errors import UserInputError, check_image_side
from lightning_modules.naming import safe_name, unique_names

Label = Union[int, str]
Box = tuple[float, float, float, float]

# Hand-drawn object boxes (x0, y0, x1, y1) of the built-in samples, in the photos' own pixels:
# the cat's head, the cup of espresso with its handle, the rocket on its pad.
SAMPLE_BOXES: dict[str, Box] = {
    "chelsea": (30, 0, 430, 300),
    "coffee": (170, 15, 425, 300),
    "rocket": (300, 125, 342, 410),
}
CSV_BOX_COLUMNS = ("x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class DatasetImage:
    """One image of the dataset, before it is read.

    Attributes:
        index: Position in the dataset's order.
        path: The file path or ``sample:NAME``, as the index CSV reports it.
        name: File-name-safe name, unique in the dataset.
        label: The true class as given (index or ImageNet name), or None.
        box: The object box in the photo's pixels, or None.
    """

    index: int
    path: str
    name: str
    label: Optional[Label] = None
    box: Optional[Box] = None


def square_input(image: Image.Image, size: int, box: Optional[Box] = None
                 ) -> tuple[torch.Tensor, Optional[Box]]:
    """The classifier's square input and the box in its pixels.

    The shorter side is resized to ``size``, then the centre square is cropped (the pixels of
    :func:`~datamodules.labeled_images.preprocess`); the box moves with the pixels and is
    clipped to the square, None where nothing of it is left.

    Returns:
        0-1 pixels ``[3, size, size]`` and the box ``(x0, y0, x1, y1)`` in them.
    """
    width, height = image.size
    shrunk = resize_shorter_side(image, size)
    resized = shrunk.size
    pixels = center_square(image_to_tensor(shrunk), size)
    if box is None:
        return pixels, None
    left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
    x0, y0, x1, y1 = box
    moved = (min(max(x0 * resized[0] / width - left, 0), size),
             min(max(y0 * resized[1] / height - top, 0), size),
             min(max(x1 * resized[0] / width - left, 0), size),
             min(max(y1 * resized[1] / height - top, 0), size))
    return pixels, (moved if moved[2] > moved[0] and moved[3] > moved[1] else None)


class ShardedImages(IterableDataset):
    """Batches of one process's shards, read as they are needed.

    Each item is a whole batch (the loader adds no batching): ``pixels`` ``[B, 3, S, S]``,
    ``index`` ``[B]``, ``boxes`` ``[B, 4]`` (NaN rows: no box), the lists ``paths``, ``names``
    and ``labels``, ``shard`` (its number), ``shard_end`` (the shard's last batch) and
    ``skipped`` (``(path, reason)`` of the images that could not be read). Loader processes
    take every ``num_workers``-th batch, which the loader yields back in order.
    """

    def __init__(self, images: Sequence[DatasetImage], shards: Sequence[int], shard_size: int,
                 batch_size: int, image_size: int) -> None:
        self.images = images
        self.image_size = image_size
        self.shard_size = shard_size
        self.batches = [(shard, start, min(start + batch_size, end))
                        for shard in shards
                        for end in [min((shard + 1) * shard_size, len(images))]
                        for start in range(shard * shard_size, end, batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        every, first = (1, 0) if worker is None else (worker.num_workers, worker.id)
        for shard, start, end in self.batches[first::every]:
            yield self.read(shard, start, end)

    def read(self, shard: int, start: int, end: int) -> dict[str, Any]:
        """Read images ``start:end`` of ``shard``; the unreadable ones go to ``skipped``."""
        read, pixels, boxes, skipped = [], [], [], []
        for image in self.images[start:end]:
            try:
                square, box = square_input(load_image(image.path), self.image_size, image.box)
            except UserInputError as error:
                skipped.append((image.path, str(error)))
                continue
            read.append(image)
            pixels.append(square)
            boxes.append(box or (math.nan,) * 4)
        size = self.image_size
        return {
            "pixels": torch.stack(pixels) if pixels else torch.zeros(0, 3, size, size),
            "index": torch.tensor([image.index for image in read], dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "paths": [image.path for image in read],
            "names": [image.name for image in read],
            "labels": [image.label for image in read],
            "shard": shard,
            "shard_end": end == min((shard + 1) * self.shard_size, len(self.images)),
            "skipped": skipped,
        }


class DatasetImages(pl.LightningDataModule):
    """A dataset of photos for a dataset saliency run, streamed shard by shard.

    Args:
        images: A folder whose subfolders are classes (``285/`` or ``Egyptian_cat/``; their
            images, at any depth, get that label), a CSV file (columns ``path``, optionally
            ``label`` and a box ``x0,y0,x1,y1`` in the photo's pixels; relative paths are read
            from the CSV's folder), a folder of images, a glob, an image, ``sample:NAME``, or a
            list of these; None: the built-in samples with their classes and hand-drawn boxes.
        labels: One label per image (ImageNet index or name), for images given without (not a
            folder tree or a CSV with a ``label`` column).
        image_size: Side of the square input: shorter side resized, centre cropped.
        batch_size: Images per batch.
        shard_size: Images per shard, the unit that is written whole and resumed.
        num_workers: Loader processes that read and resize the images beside the network.
        strict: Stop at the first unreadable image instead of skipping and listing it.
    """

    def __init__(
        self,
        images: Union[str, list[str], None] = None,
        labels: Optional[list[Label]] = None,
        image_size: int = 224,
        batch_size: int = 16,
        shard_size: int = 128,
        num_workers: int = 0,
        strict: bool = False,
    ) -> None:
        super().__init__()
        check_image_side("image_size", image_size, READ_BYTES_PER_PIXEL)
        for option, value in (("batch_size", batch_size), ("shard_size", shard_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{option} must be a positive integer, got {value}.")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise UserInputError(f"num_workers must be 0 or more, got {num_workers}.")
        self.images = images
        self.labels = labels
        self.image_size = image_size
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.num_workers = num_workers
        self.strict = strict
        self.items: list[DatasetImage] = []
        self.finished: set[int] = set()

    # --- the list of images ----------------------------------------------------------------

    def setup(self, stage: str) -> None:
        if not self.items:
            self.items = self.list_images()

    @property
    def shard_count(self) -> int:
        """How many shards the dataset has."""
        return math.ceil(len(self.items) / self.shard_size)

    def list_images(self) -> list[DatasetImage]:
        """Every image of the dataset with its label and box, in order; nothing is read."""
        if self.images is None:
            if self.labels is not None:
                raise UserInputError("labels need images: give --data.images too.")
            rows = [(SAMPLE_PREFIX + name, label, SAMPLE_BOXES.get(name))
                    for name, label in SAMPLE_LABELS.items()]
        else:
            rows = []
            for source in ([self.images] if isinstance(self.images, (str, Path))
                           else list(self.images)):
                rows += self._rows_of(str(source))
            given_labels = any(label is not None for _, label, _ in rows)
            if self.labels is not None:
                if given_labels:
                    raise UserInputError("The images carry labels already (a class folder tree "
                                         "or a CSV's label column): leave out --data.labels.")
                if len(self.labels) != len(rows):
                    raise UserInputError(f"Got {len(self.labels)} labels for {len(rows)} images; "
                                         f"give one label per image.")
                rows = [(path, label, box) for (path, _, box), label in zip(rows, self.labels)]
        if not rows:
            raise UserInputError("The dataset holds no images.")
        for path, label, _ in rows:
            if label is not None and (isinstance(label, bool)
                                      or not isinstance(label, (int, str))):
                raise UserInputError(f"The label of {path} must be a class index or name, "
                                     f"got {label!r}.")
        names = unique_names(safe_name(source_stem(path)) for path, _, _ in rows)
        return [DatasetImage(index, path, name, label, box)
                for index, ((path, label, box), name) in enumerate(zip(rows, names))]

    def distinct_labels(self) -> list[Label]:
        """Every label the dataset uses, once each (for the module to check against its
        classifier's classes before the first image)."""
        return list(dict.fromkeys(item.label for item in self.items if item.label is not None))

    def _rows_of(self, source: str) -> list[tuple[str, Optional[Label], Optional[Box]]]:
        path = Path(source)
        if source.lower().endswith(".csv") and path.is_file():
            return read_csv(path)
        if path.is_dir() and any(child.is_dir() for child in path.iterdir()):
            return class_tree(path)
        found = expand_sources(source, "--data.images")
        missing = next((item for item in found if is_missing_file(item)), None)
        if missing is not None:
            raise UserInputError(f"Image not found: {missing}.")
        return [(item, None, None) for item in found]

    # --- shards and loading ----------------------------------------------------------------

    def leave_out(self, shards: Sequence[int]) -> None:
        """Do not load these shards: their output is written already (a resumed run)."""
        self.finished |= set(shards)

    def shards_of(self, rank: int, world_size: int) -> list[int]:
        """The shards process ``rank`` of ``world_size`` explains: every ``world_size``-th,
        without those already written."""
        return [shard for shard in range(rank, self.shard_count, world_size)
                if shard not in self.finished]

    def predict_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world_size = (0, 1) if trainer is None else (trainer.global_rank,
                                                           trainer.world_size)
        batches = ShardedImages(self.items, self.shards_of(rank, world_size), self.shard_size,
                                self.batch_size, self.image_size)
        # batch_size=None: every item is a whole batch already.
        return DataLoader(batches, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """With ``strict``, an unreadable image stops the run here (in the main process, so the
        sentence is not wrapped in a loader process's traceback)."""
        if self.strict and batch["skipped"]:
            path, reason = batch["skipped"][0]
            raise UserInputError(f"{reason} (--data.strict true stops at an unreadable image; "
                                 f"false skips and lists it)")
        return batch


def read_csv(path: Path) -> list[tuple[str, Optional[Label], Optional[Box]]]:
    """The rows of a dataset CSV: ``path`` and optionally ``label`` and ``x0,y0,x1,y1``.

    Raises:
        UserInputError: No ``path`` column, a row whose file is missing, a box that is not
            four numbers with x0 < x1 and y0 < y1 inside the photo.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            table = list(csv.DictReader(handle))
            columns = set(table[0]) if table else set()
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"Cannot read the CSV {path}: {error}.") from None
    if "path" not in columns:
        raise UserInputError(f"{path} needs a header with a 'path' column (and optionally "
                             f"'label' and a box 'x0,y0,x1,y1'), got {sorted(columns)}.")
    has_box = all(name in columns for name in CSV_BOX_COLUMNS)
    rows = []
    for line, row in enumerate(table, start=2):  # line 1 is the header
        where = f"{path} line {line}"
        given = (row.get("path") or "").strip()
        if not given:
            raise UserInputError(f"{where} has no path.")
        source = given if given.startswith(SAMPLE_PREFIX) else str(path.parent / given)
        if not given.startswith(SAMPLE_PREFIX) and not os.path.isfile(source):
            raise UserInputError(f"{where}: image not found: {given}.")
        text = (row.get("label") or "").strip()
        label: Optional[Label] = (int(text) if text.isdigit() else text) or None
        box = _csv_box(row, source, where) if has_box else None
        rows.append((source, label, box))
    return rows


def _csv_box(row: dict[str, str], source: str, where: str) -> Optional[Box]:
    cells = [(row.get(name) or "").strip() for name in CSV_BOX_COLUMNS]
    if not any(cells):
        return None  # this image has no box
    try:
        x0, y0, x1, y1 = (float(cell) for cell in cells)
    except ValueError:
        raise UserInputError(f"{where}: the box x0,y0,x1,y1 must be four numbers, got "
                             f"{','.join(cells)}.") from None
    if not (x0 < x1 and y0 < y1) or min(x0, y0) < 0:
        raise UserInputError(f"{where}: the box {x0:g},{y0:g},{x1:g},{y1:g} needs 0 <= x0 < x1 "
                             f"and 0 <= y0 < y1.")
    width, height = photo_size(source)
    if x1 > width or y1 > height:
        raise UserInputError(f"{where}: the box {x0:g},{y0:g},{x1:g},{y1:g} lies outside the "
                             f"{width} x {height} photo.")
    return (x0, y0, x1, y1)


def photo_size(source: str) -> tuple[int, int]:
    """A photo's width and height from its header (no decoding); a sample's by loading it."""
    if source.startswith(SAMPLE_PREFIX):
        return load_image(source).size
    try:
        with Image.open(source) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserInputError(f"Cannot read the size of {source} ({error}).") from None


def class_tree(root: Path) -> list[tuple[str, Optional[Label], Optional[Box]]]:
    """The images of a folder of class subfolders, labelled by their subfolder, sorted."""
    rows = []
    for folder in sorted(child for child in root.iterdir() if child.is_dir()):
        label = folder_label(folder.name)
        rows += [(str(file), label, None) for file in sorted(folder.rglob("*"))
                 if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file()]
    if not rows:
        raise UserInputError(f"The class subfolders of {root} hold no images.")
    return rows

"""Photos with their true ImageNet classes, for saliency maps and fooling images.

Images come from a list of paths (with an optional list of labels), a folder, a folder of
class-named subfolders (``folder_labels=True``, the ImageNet layout), or the built-in
scikit-image samples with their ImageNet classes. Every image is preprocessed as the
classifiers expect: shorter side resized to ``image_size``, then a centre crop to a square.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.images import (READ_BYTES_PER_PIXEL, SAMPLE_PREFIX, image_to_tensor, load_image,
                                resize_shorter_side)
from datamodules.jobs import JobData
from datamodules.sources import expand_sources, image_files, source_stem
from lightning_modules.errors import UserInputError, check_image_side
from lightning_modules.naming import safe_name, unique_names

Label = Union[int, str]

# The built-in samples whose ImageNet class is sensible and which the default backbone
# (efficientnet_lite0, 224 px) puts top-1: chelsea p=0.36, coffee p=0.93, rocket p=0.22.
# The others (astronaut, hubble_deep_field, immunohistochemistry, retina) show no ImageNet
# class, and "cat" is the same picture as "chelsea".
SAMPLE_LABELS: dict[str, str] = {
    "chelsea": "Egyptian cat",
    "coffee": "espresso",
    "rocket": "missile",
}


@dataclass
class LabeledImage:
    """One photo and its true class; its pixels are read when asked for.

    A folder of thousands of photos would otherwise sit in memory whole (600 KB a 224 px photo):
    a saliency run's memory grew by 670 MiB from 100 to 1,000 photos. Each batch now reads its
    own photos and lets them go.

    Attributes:
        name: File-name-safe name, unique within the run (e.g. ``"chelsea"``).
        source: The file path or ``sample:NAME``.
        size: The side of the square input, ``image_size``.
        label: The true class as given (index or ImageNet name), or None if unknown.
    """

    name: str
    source: str
    size: int
    label: Optional[Label]

    @property
    def pixels(self) -> torch.Tensor:
        """0-1 pixels ``[3, S, S]``, resized and centre-cropped to ``size`` (read each time)."""
        return preprocess(self.source, self.size)


def center_square(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Crop the central ``size`` x ``size`` square of ``[3, H, W]`` pixels (H, W >= size)."""
    _, height, width = pixels.shape
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[:, top : top + size, left : left + size].contiguous()


def preprocess(source: str, size: int) -> torch.Tensor:
    """Load an image and turn it into the classifier's square input.

    Args:
        source: A file path or ``sample:NAME``.
        size: Side of the square, in pixels.

    Returns:
        0-1 pixels ``[3, size, size]``: shorter side resized to ``size``, centre-cropped.
    """
    return center_square(image_to_tensor(resize_shorter_side(load_image(source), size, source)),
                         size)


def folder_label(name: str) -> Label:
    """A class folder's name as a label: ``"285"`` -> 285, ``"Egyptian_cat"`` -> "Egyptian cat"."""
    if name.strip().isdigit():
        return int(name)
    # No ImageNet class name contains "_", so it can only stand for a space.
    return name.replace("_", " ")


class _Items(Dataset):
    def __init__(self, items: list[LabeledImage]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, LabeledImage]:
        return index, self.items[index]


def collate_images(batch: list[tuple[int, LabeledImage]]) -> dict[str, Any]:
    """A batch of labeled images: ``pixels`` ``[B, 3, S, S]``, ``index`` ``[B]`` (positions in
    the data's ``items``), and the lists ``names`` and ``labels`` (None where unknown)."""
    return {"pixels": torch.stack([item.pixels for _, item in batch]),
            "index": torch.tensor([index for index, _ in batch]),
            "names": [item.name for _, item in batch], "labels": [item.label for _, item in batch]}


class LabeledImageData(JobData):
    """Labeled photos at the classifier's input size.

    Args:
        images: Image paths, folders, globs or built-in samples (``sample:NAME``), or a list of
            these; None for the built-in samples that have an ImageNet class (``chelsea`` ->
            "Egyptian cat", ``coffee`` -> "espresso", ``rocket`` -> "missile"). With
            ``folder_labels`` a folder (or list of folders) whose subfolders are classes.
        labels: The true class of each image, by ImageNet index or name, in the order the
            images are listed (folders expand to their files, sorted); None leaves them unknown,
            except built-in samples, which keep their class.
        folder_labels: Read each image's class from the name of its subfolder: ``285/`` or
            ``Egyptian_cat/`` (underscores stand for spaces).
        image_size: Side of the square the images are resized and centre-cropped to.
        batch_size: Images per batch of ``predict_dataloader``.
    """

    def __init__(
        self,
        images: Union[str, list[str], None] = None,
        labels: Optional[list[Label]] = None,
        folder_labels: bool = False,
        image_size: int = 224,
        batch_size: int = 8,
    ) -> None:
        super().__init__(batch_size)
        if not image_size > 0:
            raise UserInputError(f"image_size must be a positive number of pixels, got "
                                 f"{image_size}.")
        check_image_side("image_size", image_size, READ_BYTES_PER_PIXEL)
        if folder_labels and labels is not None:
            raise UserInputError("Give labels or folder_labels=true, not both.")
        if folder_labels and images is None:
            raise UserInputError("folder_labels=true needs a folder of class subfolders in images.")
        self.images = images
        self.labels = labels
        self.folder_labels = folder_labels
        self.image_size = image_size
        self.items: list[LabeledImage] = []

    def sources_and_labels(self) -> tuple[list[str], list[Optional[Label]]]:
        """Every image source with its label, in order, before anything is loaded."""
        if self.folder_labels:
            return self._from_class_folders()
        if self.images is None:
            if self.labels is not None:
                raise UserInputError("labels need images: give --data.images too.")
            return [SAMPLE_PREFIX + name for name in SAMPLE_LABELS], list(SAMPLE_LABELS.values())
        sources = expand_sources(self.images, "--data.images")
        if not sources:
            raise UserInputError("No images given.")
        if self.labels is None:
            return sources, [SAMPLE_LABELS.get(self._sample_name(s)) for s in sources]
        if len(self.labels) != len(sources):
            raise UserInputError(
                f"Got {len(self.labels)} labels for {len(sources)} images; give one label per "
                f"image."
            )
        return sources, list(self.labels)

    @staticmethod
    def _sample_name(source: str) -> str:
        return source[len(SAMPLE_PREFIX):] if source.startswith(SAMPLE_PREFIX) else ""

    def _from_class_folders(self) -> tuple[list[str], list[Optional[Label]]]:
        roots = [self.images] if isinstance(self.images, (str, Path)) else list(self.images)
        if any(not str(root).strip() for root in roots):  # Path("") is the current folder
            raise UserInputError("--data.images is empty: give a folder of class subfolders.")
        sources: list[str] = []
        labels: list[Optional[Label]] = []
        for root in map(Path, roots):
            if not root.is_dir():
                raise UserInputError(
                    f"Folder not found (folder_labels needs class subfolders): {root}.")
            classes = sorted(p for p in root.iterdir() if p.is_dir())
            if not classes:
                raise UserInputError(f"Folder {root} has no class subfolders.")
            for folder in classes:
                files = image_files(folder)
                sources += files
                labels += [folder_label(folder.name)] * len(files)
        if not sources:
            shown = ", ".join(map(str, roots))
            raise UserInputError(f"The class subfolders of {shown} hold no images.")
        return sources, labels

    def setup(self, stage: str) -> None:
        if self.items:
            return
        sources, labels = self.sources_and_labels()
        for index, label in enumerate(labels):
            if label is not None and not isinstance(label, (int, str)):
                raise UserInputError(f"Label {index} must be a class index or name, got {label!r}.")
        # Two photos with one stem: keep both.
        names = unique_names(safe_name(source_stem(source)) for source in sources)
        for source in sources:
            # Every photo is read once now, so that a bad file stops the run before it starts;
            # the pixels are read again by the batch that needs them.
            preprocess(source, self.image_size)
        self.items = [LabeledImage(name, source, self.image_size, label)
                      for name, source, label in zip(names, sources, labels)]
        self.jobs = self.items  # what fooling optimizes: these images, with their classes

    def predict_dataloader(self) -> DataLoader:
        """Batches of :func:`collate_images` (what saliency maps explain), in order."""
        return DataLoader(_Items(self.items), batch_size=self.batch_size, shuffle=False,
                          collate_fn=collate_images)

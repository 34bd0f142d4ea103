"""A labeled dataset of thousands of distinct photos, made from the three built-in samples that
have ImageNet classes, for the dataset-run benchmarks (never shipped, never a test).

::

    python benchmarks/make_dataset.py /tmp/dataset --count 1200

Each image is one of ``sample:chelsea`` (Egyptian cat), ``sample:coffee`` (espresso) and
``sample:rocket`` (missile), in turn, through a random crop that keeps most of the object's
hand-drawn box (:data:`datamodules.image_dataset.SAMPLE_BOXES`; at least ``--keep`` of its
area), a horizontal flip half the time, a resize of the shorter side to 224-320 px and small
changes of brightness, contrast and saturation (each within 15 %). Every image is checked to be
distinct (its bytes' hash). Writes:

* ``OUT/tree/<class>/<sample>_<n>.jpg``: a class-folder tree (``Egyptian_cat/``, ``espresso/``,
  ``missile/``), as torchvision's ``ImageFolder`` reads it;
* ``OUT/dataset.csv``: ``path,label,x0,y0,x1,y1``, the same images (paths relative to ``OUT``)
  with the object's box moved by the crop, flip and resize and clipped to the image.

Seeded (``--seed``): the same command writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import sys
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.image_dataset import SAMPLE_BOXES  # noqa: E402
from datamodules.images import SAMPLE_PREFIX, load_image  # noqa: E402
from datamodules.labeled_images import SAMPLE_LABELS  # noqa: E402

Box = tuple[float, float, float, float]


def overlap(box: Box, crop: Box) -> float:
    """The fraction of ``box``'s area inside ``crop``."""
    width = min(box[2], crop[2]) - max(box[0], crop[0])
    height = min(box[3], crop[3]) - max(box[1], crop[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(width, 0) * max(height, 0) / area


def random_crop(rng: random.Random, size: tuple[int, int], box: Box, keep: float) -> Box:
    """A crop of 60-100 % of each side that holds at least ``keep`` of the box's area."""
    width, height = size
    while True:
        crop_width = round(width * rng.uniform(0.6, 1.0))
        crop_height = round(height * rng.uniform(0.6, 1.0))
        left = rng.randint(0, width - crop_width)
        top = rng.randint(0, height - crop_height)
        crop = (left, top, left + crop_width, top + crop_height)
        if overlap(box, crop) >= keep:
            return crop


def moved_box(box: Box, crop: Box, flipped: bool, scale: float) -> Box:
    """The box in the pixels of the cropped, flipped and resized image, clipped to it."""
    width, height = crop[2] - crop[0], crop[3] - crop[1]
    x0, x1 = (min(max(x - crop[0], 0), width) for x in (box[0], box[2]))
    y0, y1 = (min(max(y - crop[1], 0), height) for y in (box[1], box[3]))
    if flipped:
        x0, x1 = width - x1, width - x0
    return (x0 * scale, y0 * scale, x1 * scale, y1 * scale)


def variant(rng: random.Random, photo: Image.Image, box: Box, keep: float
            ) -> tuple[Image.Image, Box]:
    """One random variant of a photo and its object's box."""
    crop = random_crop(rng, photo.size, box, keep)
    image = photo.crop(crop)
    flipped = rng.random() < 0.5
    if flipped:
        image = ImageOps.mirror(image)
    shorter = rng.randint(224, 320)
    scale = shorter / min(image.size)
    image = image.resize((max(round(image.width * scale), shorter),
                          max(round(image.height * scale), shorter)), Image.BICUBIC)
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(0.85, 1.15))
    x0, y0, x1, y1 = moved_box(box, crop, flipped, scale)
    clipped = (min(x0, image.width), min(y0, image.height), min(x1, image.width),
               min(y1, image.height))
    return image, clipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (tree/ and dataset.csv)")
    parser.add_argument("--count", type=int, default=1200, help="number of images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=float, default=0.7,
                        help="least fraction of the object's box area a crop keeps")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    photos = {name: load_image(SAMPLE_PREFIX + name) for name in SAMPLE_LABELS}
    rows, seen = [], set()
    for number in range(args.count):
        name = list(SAMPLE_LABELS)[number % len(SAMPLE_LABELS)]
        label = SAMPLE_LABELS[name]
        while True:
            image, box = variant(rng, photos[name], SAMPLE_BOXES[name], args.keep)
            encoded = io.BytesIO()
            image.save(encoded, format="JPEG", quality=args.quality)
            digest = hashlib.sha256(encoded.getvalue()).hexdigest()
            if digest not in seen:  # distinct images only
                seen.add(digest)
                break
        relative = Path("tree") / label.replace(" ", "_") / f"{name}_{number:05d}.jpg"
        (args.out / relative).parent.mkdir(parents=True, exist_ok=True)
        (args.out / relative).write_bytes(encoded.getvalue())
        rows.append({"path": relative.as_posix(), "label": label,
                     **{key: f"{value:.1f}" for key, value in zip(("x0", "y0", "x1", "y1"), box)}})
    with open(args.out / "dataset.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} distinct images in {args.out / 'tree'} ({len(SAMPLE_LABELS)} classes) "
          f"and {args.out / 'dataset.csv'}")


if __name__ == "__main__":
    main()

"""Image loading, conversion and saving for the style-transfer pipeline.

Everything the user can get wrong (paths, file contents, sample names) is
reported as a one-sentence :class:`UserInputError` rather than a traceback.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import struct
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from datamodules.files import write_file
from lightning_modules.errors import UserInputError, check_fits_in_memory

SAMPLE_PREFIX = "sample:"

# In-memory pictures (a notebook's PIL images and tensors) as sources: "memory:<id>/<name>".
# The datamodules take sources as strings; this lets a picture reach them without a temporary
# file (see :func:`memory_images`).
MEMORY_PREFIX = "memory:"
_MEMORY_IMAGES: dict[str, Image.Image] = {}
_MEMORY_IDS = itertools.count()

# RGB photographs bundled inside scikit-image itself, so they load offline.
_SAMPLES = (
    "astronaut",
    "cat",
    "chelsea",
    "coffee",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "rocket",
)

_WHITE = (255, 255, 255, 255)

# Reading an image costs a pixel 19 bytes at the peak, all alive at once: Pillow's RGB (4 bytes),
# the uint8 array (3) and the float32 tensor (12) of image_to_tensor.
READ_BYTES_PER_PIXEL = 4 + 3 + 12
_UINT16_MAX = 65535.0


def list_samples() -> list[str]:
    """Return the names of the built-in sample images.

    Returns:
        Sorted sample names, without the ``"sample:"`` prefix.
    """
    return sorted(_SAMPLES)


def load_image(source: str | os.PathLike[str]) -> Image.Image:
    """Load an image as fully decoded 8-bit RGB.

    Alpha is composited over white, EXIF orientation is applied and
    16-bit / float images are scaled (not clipped) into the 8-bit range.

    Args:
        source: Path to an image file, ``"sample:NAME"`` for a built-in
            sample (see :func:`list_samples`), or an in-memory picture's
            ``"memory:..."`` source (see :func:`memory_images`).

    Returns:
        An RGB image.

    Raises:
        UserInputError: If the file is missing, a directory, not a regular file
            (a named pipe, a device), unreadable, not an image, truncated or
            corrupt, larger than Pillow's decompression-bomb limit, or the
            sample name is unknown.
    """
    if isinstance(source, str) and source.startswith(SAMPLE_PREFIX):
        return _load_sample(source)
    if isinstance(source, str) and source.startswith(MEMORY_PREFIX):
        return _load_memory_image(source)

    shown = os.fspath(source)
    path = Path(source)
    if path.is_dir():
        raise UserInputError(f"Expected an image file but got a directory: {shown}.")
    _check_regular_file(path, shown)
    try:
        with _strict_decoding(), Image.open(path) as image:
            # Decode now so truncated files fail here, not deep inside training.
            image.load()
            return _to_rgb(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise UserInputError(f"Image file not found: {shown}.") from None
    except PermissionError:
        raise UserInputError(f"Cannot read image file (permission denied): {shown}.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserInputError(_too_large_message(shown, exc)) from None
    except UnidentifiedImageError:
        raise UserInputError(f"Not a recognised image file: {shown}.") from None
    except (OSError, EOFError, SyntaxError, ValueError, struct.error) as exc:
        # Pillow signals broken data with any of these, depending on the codec.
        raise UserInputError(
            f"Image file is truncated, corrupt or unsupported: {shown} ({_one_line(exc)})."
        ) from None


def resize_shorter_side(image: Image.Image, size: int, name: str = "The image") -> Image.Image:
    """Resize so the shorter side is ``size`` pixels, keeping the aspect ratio.

    Args:
        image: The image to resize.
        size: Target length of the shorter side, in pixels.
        name: What the image is called in an error message (e.g. its path).

    Returns:
        The resized image (Lanczos filtering, which antialiases when shrinking).

    Raises:
        UserInputError: If ``size`` is not positive, the image has no pixels, or the resized
            image could not fit in this machine's memory (a long thin image grows with its
            shorter side).
    """
    if size <= 0:
        raise UserInputError(f"Image size must be a positive number of pixels, got {size}.")
    width, height = image.size
    if min(width, height) <= 0:
        raise UserInputError(f"{name} is empty ({width} x {height} pixels).")
    scale = size / min(width, height)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Before Pillow allocates it: past RAM, Pillow raises MemoryError or OverflowError.
    check_fits_in_memory(
        f"{name} resized to a shorter side of {size:,} px is {new_size[0]:,} x {new_size[1]:,} "
        f"pixels, and reading it (before its features)",
        new_size[0] * new_size[1] * READ_BYTES_PER_PIXEL, "give a smaller image size")
    return image.resize(new_size, Image.Resampling.LANCZOS)


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """Convert an image to a float tensor.

    Args:
        image: An RGB image (other modes are converted as in :func:`load_image`).

    Returns:
        A float32 tensor of shape ``[3, H, W]`` with values in ``[0, 1]``.
    """
    pixels = np.array(_to_rgb(image), dtype=np.uint8)
    # In place: a second float copy would be the largest allocation of reading a big image.
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Convert a ``[3, H, W]`` float tensor in ``[0, 1]`` to an 8-bit RGB image.

    Out-of-range values are clamped and values are rounded to the nearest
    8-bit level (truncating would darken every image by half a level).

    Args:
        tensor: Float tensor of shape ``[3, H, W]``.

    Returns:
        An RGB image.

    Raises:
        ValueError: If the tensor does not have shape ``[3, H, W]``.
    """
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"Expected a tensor of shape [3, H, W], got {list(tensor.shape)}.")
    levels = tensor.detach().float().cpu().nan_to_num(0.0).clamp(0.0, 1.0).mul(255.0).round()
    pixels = levels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(pixels)


def save_png(
    tensor_or_image: torch.Tensor | Image.Image,
    path: str | os.PathLike[str],
    overwrite: bool = False,
) -> Path:
    """Write an 8-bit RGB PNG, creating parent directories.

    Args:
        tensor_or_image: A ``[3, H, W]`` tensor in ``[0, 1]`` or a PIL image.
        path: Destination file.
        overwrite: Replace an existing file instead of refusing.

    Returns:
        The path written.

    Raises:
        UserInputError: If the file exists and ``overwrite`` is False, the
            path is a directory, or the file cannot be written.
    """
    if isinstance(tensor_or_image, torch.Tensor):
        image = tensor_to_image(tensor_or_image)
    else:
        image = _to_rgb(tensor_or_image)

    return write_file(path, lambda handle: image.save(handle, format="PNG"), replace=overwrite,
                      what="image file")


@contextmanager
def memory_images(pictures: Mapping[str, Image.Image]) -> Iterator[dict[str, str]]:
    """Make in-memory pictures readable as image sources while the block runs.

    Every reader of sources (:func:`load_image`, hence every datamodule) then takes
    ``"memory:<id>/<name>"`` like a path, and the output files and job names use ``<name>``.

    Args:
        pictures: Each picture by the name its outputs get (file-name safe, e.g. ``"content"``).

    Yields:
        The source of each picture, by the same names.
    """
    sources = {}
    for name, picture in pictures.items():
        # A copy: the caller may change the picture while the run reads it lazily.
        source = f"{MEMORY_PREFIX}{next(_MEMORY_IDS)}/{name}"
        _MEMORY_IMAGES[source] = picture.copy()
        sources[name] = source
    try:
        yield sources
    finally:
        for source in sources.values():
            _MEMORY_IMAGES.pop(source, None)


def memory_name(source: str) -> str:
    """The name of a ``memory:<id>/<name>`` source: ``<name>``."""
    return source[len(MEMORY_PREFIX):].partition("/")[2]


def _load_memory_image(source: str) -> Image.Image:
    picture = _MEMORY_IMAGES.get(source)
    if picture is None:
        raise UserInputError(f"The in-memory image {source} is gone: such sources live only "
                             f"while the call that made them runs; give a file instead.")
    return _to_rgb(picture.copy())


def _load_sample(source: str) -> Image.Image:
    name = source[len(SAMPLE_PREFIX) :]
    if name not in _SAMPLES:
        known = ", ".join(SAMPLE_PREFIX + sample for sample in list_samples())
        raise UserInputError(f"Unknown sample image: {source} (known samples: {known}).")
    # Imported lazily: scikit-image is slow to import and only samples need it.
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")


# What ``stat`` calls the kinds of file that are not regular files.
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular_file(path: Path, shown: str) -> None:
    """Refuse a named pipe, device or socket: reading one may never end (a FIFO with no writer
    blocks in ``open``; ``/dev/zero`` never runs out)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: opening it says which, in one sentence
    if not stat.S_ISREG(mode):
        kind = next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")
        raise UserInputError(f"Not a regular file ({kind}): {shown}; give an image file.")


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """Make truncated files and decompression-bomb warnings raise."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or black alpha."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _high_depth_to_rgb(image)
    if image.has_transparency_data:
        # Plain convert("RGB") would drop alpha and show hidden pixels (often black).
        background = Image.new("RGBA", image.size, _WHITE)
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit integer or float greyscale into 0..255.

    Pillow's own conversion clips at 255, turning most 16-bit images white.
    Integer images are read as 16-bit (Pillow opens 16-bit files as ``I`` or
    ``I;16*``); float images are taken as ``[0, 1]``. Values outside those
    ranges are stretched linearly from their minimum to their maximum.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    low, high = (0.0, 1.0) if image.mode == "F" else (0.0, _UINT16_MAX)
    if values.size and (values.min() < low or values.max() > high):
        low, high = float(values.min()), float(values.max())
    scaled = (values - low) / max(high - low, np.finfo(np.float64).tiny) * 255.0
    grey = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def _too_large_message(shown: str, exc: Exception) -> str:
    limit = Image.MAX_IMAGE_PIXELS
    match = re.search(r"\((\d+) pixels\)", str(exc))
    if match is None:
        return f"Image is too large to load safely: {shown} exceeds the limit of {limit:,} pixels."
    pixels = int(match.group(1))
    return (
        f"Image is too large to load safely: {shown} has {pixels:,} pixels, "
        f"over the limit of {limit:,} pixels."
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()).rstrip(".") or type(exc).__name__

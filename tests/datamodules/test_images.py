"""Tests for datamodules.images; every test image is made in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.images import (
    SAMPLE_PREFIX,
    image_to_tensor,
    list_samples,
    load_image,
    memory_images,
    resize_shorter_side,
    save_png,
    tensor_to_image,
)
from lightning_modules.errors import UserInputError


def _save(image: Image.Image, path: Path, **kwargs: object) -> Path:
    image.save(path, **kwargs)
    return path


def _pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    return image.getpixel(xy)


def _assert_one_line_error(excinfo: pytest.ExceptionInfo[UserInputError], path: object) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# --- mode conversion -------------------------------------------------------


def test_grey_becomes_rgb(tmp_path: Path) -> None:
    path = _save(Image.new("L", (4, 3), 100), tmp_path / "grey.png")
    assert _pixel(load_image(path)) == (100, 100, 100)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (2, 1), (255, 0, 0, 128))
    image.putpixel((1, 0), (0, 0, 0, 0))
    loaded = load_image(_save(image, tmp_path / "rgba.png"))
    red, green, blue = _pixel(loaded, (0, 0))
    assert red == 255 and abs(green - 127) <= 1 and abs(blue - 127) <= 1
    assert _pixel(loaded, (1, 0)) == (255, 255, 255)


def test_la_transparent_is_white(tmp_path: Path) -> None:
    path = _save(Image.new("LA", (2, 2), (0, 0)), tmp_path / "la.png")
    assert _pixel(load_image(path)) == (255, 255, 255)


def test_palette(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1), 1)
    image.putpalette([0, 0, 0, 255, 0, 0])
    assert _pixel(load_image(_save(image, tmp_path / "p.png"))) == (255, 0, 0)


def test_palette_with_transparency_is_white(tmp_path: Path) -> None:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([0, 0, 0, 255, 0, 0])
    image.putpixel((1, 0), 1)
    loaded = load_image(_save(image, tmp_path / "pt.png", transparency=0))
    assert _pixel(loaded, (0, 0)) == (255, 255, 255)
    assert _pixel(loaded, (1, 0)) == (255, 0, 0)


def test_cmyk(tmp_path: Path) -> None:
    path = _save(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), tmp_path / "cmyk.tiff")
    assert _pixel(load_image(path)) == (255, 0, 0)


def _ramp16() -> np.ndarray:
    # 0, 32768 and 65535 in one image: mid-grey must land on ~128, not white.
    return np.array([[0, 32768, 65535]], dtype=np.uint16)


@pytest.mark.parametrize(
    ("make", "suffix"),
    [
        (lambda a: Image.fromarray(a), "png"),  # I;16
        (lambda a: Image.frombytes("I;16B", (3, 1), a.astype(">u2").tobytes()), "tiff"),
        (lambda a: Image.fromarray(a.astype(np.int32)), "tiff"),  # I
        (lambda a: Image.fromarray((a / 65535).astype(np.float32)), "tiff"),  # F
    ],
    ids=["I;16", "I;16B", "I", "F"],
)
def test_high_bit_depth_is_scaled_not_clipped(make, suffix: str, tmp_path: Path) -> None:
    source = make(_ramp16())
    loaded = load_image(_save(source, tmp_path / f"deep.{suffix}"))
    assert Image.open(tmp_path / f"deep.{suffix}").mode == source.mode
    assert _pixel(loaded, (0, 0)) == (0, 0, 0)
    assert all(abs(channel - 128) <= 1 for channel in _pixel(loaded, (1, 0)))
    assert _pixel(loaded, (2, 0)) == (255, 255, 255)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation: int, tmp_path: Path) -> None:
    image = Image.new("RGB", (64, 32), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 16, 16))  # marks the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    loaded = load_image(_save(image, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert loaded.size == (32, 64)
    # 6 rotates the stored image clockwise, 8 anticlockwise.
    corner = (31 - 4, 4) if orientation == 6 else (4, 63 - 4)
    red, _, blue = _pixel(loaded, corner)
    assert red > 200 and blue < 50


# --- resizing and tensors --------------------------------------------------


@pytest.mark.parametrize(
    ("size", "target", "expected"),
    [((300, 200), 100, (150, 100)), ((200, 300), 100, (100, 150)), ((451, 300), 100, (150, 100))],
)
def test_resize_keeps_aspect_ratio(size, target: int, expected) -> None:
    assert resize_shorter_side(Image.new("RGB", size), target).size == expected


@pytest.mark.parametrize("size", [0, -5])
def test_resize_rejects_non_positive_size(size: int) -> None:
    with pytest.raises(UserInputError):
        resize_shorter_side(Image.new("RGB", (4, 4)), size)


def test_image_to_tensor_shape_and_range() -> None:
    tensor = image_to_tensor(Image.new("RGB", (5, 3), (255, 0, 51)))
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 3, 5)
    assert torch.allclose(tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))


def test_tensor_to_image_rounds_and_clamps() -> None:
    tensor = torch.tensor([254.6 / 255, 1.5, -0.2]).reshape(3, 1, 1)
    assert _pixel(tensor_to_image(tensor)) == (255, 255, 0)


def test_png_round_trip_within_one_level(tmp_path: Path) -> None:
    original = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(0))
    path = save_png(original, tmp_path / "nested" / "dir" / "out.png")
    restored = image_to_tensor(load_image(path))
    # Correct rounding keeps every value within half a level.
    assert (restored - original).abs().max() <= 0.5 / 255 + 1e-6


def test_save_png_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    path.write_bytes(b"keep me")
    with pytest.raises(UserInputError, match="Refusing to overwrite existing file") as excinfo:
        save_png(Image.new("RGB", (2, 2)), path)
    _assert_one_line_error(excinfo, path)
    assert path.read_bytes() == b"keep me"

    save_png(Image.new("RGB", (2, 2), (9, 9, 9)), path, overwrite=True)
    assert _pixel(load_image(path)) == (9, 9, 9)


def test_save_png_reports_unusable_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    path = blocker / "out.png"
    with pytest.raises(UserInputError, match="Cannot create the folder") as excinfo:
        save_png(Image.new("RGB", (2, 2)), path)
    _assert_one_line_error(excinfo, path)


# --- errors ---------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(UserInputError) as excinfo:
        load_image(path)
    assert _assert_one_line_error(excinfo, path) == f"Image file not found: {path}."


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as excinfo:
        load_image(tmp_path)
    assert "directory" in _assert_one_line_error(excinfo, tmp_path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")

    # Simulated, because chmod cannot lock out root (tests often run as root in CI).
    def deny(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(UserInputError) as excinfo:
        load_image(path)
    assert "permission" in _assert_one_line_error(excinfo, path)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text\n")
    with pytest.raises(UserInputError) as excinfo:
        load_image(path)
    assert "Not a recognised image" in _assert_one_line_error(excinfo, path)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated_image(fmt: str, tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = _save(Image.fromarray(noise), tmp_path / f"cut.{fmt}", format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserInputError) as excinfo:
        load_image(path)
    assert "truncated" in _assert_one_line_error(excinfo, path)


@pytest.mark.parametrize("side", [12, 30], ids=["warning", "error"])
def test_decompression_bomb(side: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 144 pixels trips Pillow's warning, 900 its hard error (above 2x the limit).
    path = _save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UserInputError) as excinfo:
        load_image(path)
    message = _assert_one_line_error(excinfo, path)
    assert f"{side * side:,} pixels" in message and "limit of 100 pixels" in message


def test_unknown_sample() -> None:
    with pytest.raises(UserInputError) as excinfo:
        load_image(SAMPLE_PREFIX + "unicorn")
    message = _assert_one_line_error(excinfo, "sample:unicorn")
    assert "sample:chelsea" in message


# --- samples --------------------------------------------------------------


def test_required_samples_are_listed() -> None:
    assert {"chelsea", "coffee", "astronaut", "rocket", "cat"} <= set(list_samples())


@pytest.mark.parametrize("name", list_samples())
def test_sample_loads_as_rgb(name: str) -> None:
    image = load_image(SAMPLE_PREFIX + name)
    assert image.mode == "RGB" and min(image.size) > 0


def test_memory_sources_read_like_files_while_the_block_runs() -> None:
    from datamodules.labeled_images import preprocess
    from datamodules.sources import expand_sources, source_stem

    picture = Image.new("RGBA", (6, 4), (255, 0, 0, 0))  # transparent: composited over white
    with memory_images({"photo": picture}) as sources:
        source = sources["photo"]
        assert source.startswith("memory:") and source_stem(source) == "photo"
        assert expand_sources([source]) == [source]  # neither a folder nor a glob
        picture.paste((0, 0, 255, 255), (0, 0, 6, 4))  # the caller's later changes do not leak
        assert _pixel(load_image(source)) == (255, 255, 255)
        assert preprocess(source, 4).shape == (3, 4, 4)
    with pytest.raises(UserInputError, match="is gone"):
        load_image(source)

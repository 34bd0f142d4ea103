"""Tests for datamodules.labeled_images; every test image is made in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules.labeled_images import (
    SAMPLE_LABELS,
    LabeledImage,
    LabeledImageData,
    center_square,
    folder_label,
    safe_name,
)
from lightning_modules.errors import UserInputError


def _photo(path: Path, size: tuple[int, int] = (30, 20), color=(255, 0, 0)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return str(path)


def _setup(**kwargs) -> LabeledImageData:
    data = LabeledImageData(**kwargs)
    data.setup("predict")
    return data


def test_built_in_samples_have_their_imagenet_classes() -> None:
    data = _setup(image_size=24)
    assert [(item.name, item.label) for item in data.items] == [
        ("chelsea", "Egyptian cat"), ("coffee", "espresso"), ("rocket", "missile")]
    for item in data.items:
        assert isinstance(item, LabeledImage)
        assert item.pixels.shape == (3, 24, 24) and item.pixels.dtype == torch.float32
        assert 0 <= item.pixels.min() and item.pixels.max() <= 1


def test_the_default_backbone_puts_every_labeled_sample_top_1() -> None:
    from lightning_modules.backbones import load_backbone

    backbone = load_backbone("efficientnet_lite0")
    data = _setup()  # 224 px, as the classifier was trained
    pixels = torch.stack([item.pixels for item in data.items])
    with torch.no_grad():
        probabilities = backbone(backbone.normalize(pixels)).softmax(dim=1)
    top1 = probabilities.argmax(dim=1).tolist()
    assert top1 == [backbone.class_index(item.label) for item in data.items]
    assert probabilities[0, 285] > 0.3 and probabilities[1, 967] > 0.9


def test_samples_named_explicitly_keep_their_class_unless_labels_are_given() -> None:
    data = _setup(images=["sample:coffee", "sample:astronaut"], image_size=16)
    assert [item.label for item in data.items] == ["espresso", None]
    data = _setup(images="sample:coffee", labels=[968], image_size=16)
    assert data.items[0].label == 968


def test_paths_with_labels_in_order(tmp_path: Path) -> None:
    first = _photo(tmp_path / "b.png")
    second = _photo(tmp_path / "a.jpg", color=(0, 0, 255))
    data = _setup(images=[first, second], labels=[285, "espresso"], image_size=8)
    assert [(i.name, i.label) for i in data.items] == [("b", 285), ("a", "espresso")]
    assert data.items[1].pixels[2].min() > 0.9  # blue


def test_a_folder_expands_to_its_sorted_images(tmp_path: Path) -> None:
    _photo(tmp_path / "photos" / "z.png")
    _photo(tmp_path / "photos" / "y.png")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    data = _setup(images=str(tmp_path / "photos"), labels=[1, 2], image_size=8)
    assert [(i.name, i.label) for i in data.items] == [("y", 1), ("z", 2)]


def test_folder_labels_read_classes_from_subfolder_names(tmp_path: Path) -> None:
    _photo(tmp_path / "train" / "285" / "one.png")
    _photo(tmp_path / "train" / "Egyptian_cat" / "two.png")
    _photo(tmp_path / "train" / "Egyptian_cat" / "one.png")
    data = _setup(images=str(tmp_path / "train"), folder_labels=True, image_size=8)
    assert [(i.name, i.label) for i in data.items] == [
        ("one", 285), ("one_2", "Egyptian cat"), ("two", "Egyptian cat")]


def test_resize_then_centre_crop(tmp_path: Path) -> None:
    image = Image.new("RGB", (60, 20), (0, 0, 0))
    image.paste((255, 255, 255), (20, 0, 40, 20))  # a white middle third
    path = tmp_path / "wide.png"
    image.save(path)
    item = _setup(images=str(path), image_size=10).items[0]
    assert item.pixels.shape == (3, 10, 10)
    assert item.pixels[:, :, 2:8].min() > 0.95  # only the white middle survives the crop
    pixels = torch.arange(2 * 5 * 3.0).view(2, 5, 3)
    assert torch.equal(center_square(pixels, 3), pixels[:, 1:4, :])


def test_names_are_file_name_safe_and_unique(tmp_path: Path) -> None:
    first = _photo(tmp_path / "one" / "my photo (1).png")
    second = _photo(tmp_path / "two" / "my photo (1).png")
    data = _setup(images=[first, second], image_size=8)
    assert [item.name for item in data.items] == ["my_photo_1", "my_photo_1_2"]
    assert safe_name("../..") == "image"
    assert folder_label("967") == 967 and folder_label("Granny_Smith") == "Granny Smith"


def test_predict_batches_carry_pixels_and_positions() -> None:
    data = LabeledImageData(image_size=12, batch_size=2)
    data.setup("predict")
    batches = list(data.predict_dataloader())
    assert [b["index"].tolist() for b in batches] == [[0, 1], [2]]
    assert batches[0]["pixels"].shape == (2, 3, 12, 12)
    assert torch.equal(batches[1]["pixels"][0], data.items[2].pixels)


def test_train_dataloader_yields_step_indices() -> None:
    steps = iter(_setup(image_size=8).train_dataloader())
    assert [int(next(steps)) for _ in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": 0}, "image_size must be a positive"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"labels": [1, 2], "images": "sample:coffee", "folder_labels": True}, "not both"),
    ({"folder_labels": True}, "needs a folder"),
])
def test_bad_options_fail_at_once(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        LabeledImageData(**kwargs)


def test_bad_inputs_fail_in_one_sentence(tmp_path: Path) -> None:
    photo = _photo(tmp_path / "a.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.png").write_bytes(b"not a png")
    (tmp_path / "flat").mkdir()
    _photo(tmp_path / "flat" / "x.png")
    cases = [
        ({"images": [photo, photo], "labels": [1]}, "Got 1 labels for 2 images"),
        ({"labels": [1, 2, 3]}, "labels need images"),
        ({"images": str(tmp_path / "nowhere"), "folder_labels": True}, "Folder not found"),
        ({"images": str(tmp_path / "flat"), "folder_labels": True}, "no class subfolders"),
        ({"images": str(tmp_path / "empty")}, "holds no image files"),
        ({"images": str(tmp_path / "missing.png")}, "Image file not found"),
        ({"images": str(tmp_path / "bad.png")}, "Not a recognised image file"),
        ({"images": "sample:nope"}, "Unknown sample image"),
        ({"images": [photo], "labels": [[1]]}, "must be a class index or name"),
        ({"images": []}, "No images given"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UserInputError, match=message) as info:
            _setup(image_size=8, **kwargs)
        assert "\n" not in str(info.value)


def test_sample_labels_name_real_imagenet_classes() -> None:
    from lightning_modules.backbones import imagenet_categories

    categories = imagenet_categories()
    assert {name: categories.index(label) for name, label in SAMPLE_LABELS.items()} == {
        "chelsea": 285, "coffee": 967, "rocket": 657}


def test_photos_are_read_by_their_batch_not_kept(tmp_path: Path) -> None:
    """A folder of thousands of photos must not sit in memory: the items keep no pixels, each
    batch reads its own, and a bad file still fails before the run."""
    folder = tmp_path / "photos"
    for index in range(5):
        _photo(folder / f"p{index}.png", color=(50 * index, 0, 0))
    data = _setup(images=str(folder), image_size=8, batch_size=2)
    assert not any(isinstance(value, torch.Tensor) for item in data.items
                   for value in vars(item).values())
    batches = list(data.predict_dataloader())
    assert [b["pixels"].shape[0] for b in batches] == [2, 2, 1]
    assert torch.allclose(batches[2]["pixels"][0, 0], torch.full((8, 8), 200 / 255))
    (folder / "p5.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError, match="Not a recognised image file"):
        _setup(images=str(folder), image_size=8)

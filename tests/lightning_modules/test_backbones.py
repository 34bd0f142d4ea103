"""Backbones: offline weights, known predictions, layer splits, weight files and their errors."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from datamodules.images import image_to_tensor, load_image, resize_shorter_side
from lightning_modules.backbones import available_backbones, load_backbone
from lightning_modules.errors import UserInputError


def centre_crop_224(source: str) -> torch.Tensor:
    image = resize_shorter_side(load_image(source), 224)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    return image_to_tensor(image.crop((left, top, left + 224, top + 224)))[None]


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0")


@pytest.mark.parametrize("sample, name, low, high", [("chelsea", "Egyptian cat", 0.3, 0.5),
                                                      ("coffee", "espresso", 0.9, 0.97)])
def test_efficientnet_lite0_offline_predictions(lite0, sample, name, low, high) -> None:
    probabilities = lite0(lite0.normalize(centre_crop_224(f"sample:{sample}"))).softmax(1)[0]
    top = int(probabilities.argmax())
    assert lite0.categories[top] == name
    assert low < float(probabilities[top]) < high


def test_backbone_stays_frozen_in_eval_mode(lite0) -> None:
    lite0.train()
    assert not lite0.training and not any(m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())


def test_features_then_head_equal_forward(lite0) -> None:
    x = torch.randn(2, 3, 64, 64)
    assert lite0.num_layers == 9
    assert torch.allclose(lite0.head(lite0.features(x)), lite0(x))
    shapes = [tuple(f.shape[1:]) for f in lite0.extract(x, [0, 2, 4, 8])]
    assert shapes == [(32, 32, 32), (24, 16, 16), (80, 4, 4), (1280, 2, 2)]


def test_pixel_range_and_normalization(lite0) -> None:
    assert torch.allclose(lite0.pixel_min, -torch.ones(1, 3, 1, 1))
    assert torch.allclose(lite0.pixel_max, torch.ones(1, 3, 1, 1))
    pixels = torch.rand(1, 3, 4, 4)
    assert torch.allclose(lite0.denormalize(lite0.normalize(pixels)), pixels, atol=1e-6)


@pytest.mark.parametrize("name, layers", [("squeezenet1_1", 13), ("vgg16", 31), ("vgg19", 37),
                                          ("resnet18", 8)])
def test_torchvision_backbones_with_random_weights(name, layers) -> None:
    backbone = load_backbone(name, "random")
    assert backbone.num_layers == layers and len(backbone.categories) == 1000
    x = torch.randn(1, 3, 64, 64)
    assert backbone(x).shape == (1, 1000)
    assert torch.allclose(backbone.head(backbone.features(x)), backbone(x))


def test_squeezenet_layer_i_is_features_i_as_in_the_homework() -> None:
    from torchvision.models import squeezenet1_1

    backbone = load_backbone("squeezenet1_1", "random")
    reference = squeezenet1_1(weights=None)
    assert [type(m) for m in backbone.features] == [type(m) for m in reference.features]


def test_unreachable_torchvision_weights_give_one_sentence(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(UserInputError) as error:
        load_backbone("squeezenet1_1")
    message = str(error.value)
    assert "squeezenet1_1" in message and "--model.weights" in message and "\n" not in message


def test_local_weights_file_is_loaded(tmp_path) -> None:
    from torchvision.models import squeezenet1_1

    torch.manual_seed(3)
    reference = squeezenet1_1(weights=None).eval()
    path = tmp_path / "squeezenet1_1.pth"
    torch.save(reference.state_dict(), path)
    backbone = load_backbone("squeezenet1_1", str(path))
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(backbone(x), reference(x), atol=1e-5)


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="Unknown backbone 'alexnet'.*efficientnet_lite0"):
        load_backbone("alexnet")
    assert {"efficientnet_lite0", "squeezenet1_1", "vgg16", "vgg19", "resnet18"} <= set(available_backbones())


def test_layer_check_and_class_names(lite0) -> None:
    with pytest.raises(UserInputError, match="Style layer 9 is out of range.*0 to 8"):
        lite0.check_layers([1, 9], "style layer")
    assert lite0.class_index("flamingo") == 130
    assert lite0.class_index("130") == 130
    with pytest.raises(UserInputError, match="ambiguous"):
        lite0.class_index("terrier")
    with pytest.raises(UserInputError, match="out of range"):
        lite0.class_index(1000)

"""classifier_backbone: the user's own nn.Module as a Backbone (issue 14, item 1)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_modules import classifier_backbone, compute_saliency_maps
from lightning_modules.backbones.custom import module_name
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import cam


def sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 5))


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = sequential()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


@pytest.mark.parametrize("build", [sequential, Plain])
def test_its_logits_are_the_models(build) -> None:
    model = build().eval()
    images = torch.randn(2, 3, 12, 12)
    expected = model(images)
    backbone = classifier_backbone(model, mean=(0.5,) * 3, std=(0.2,) * 3)
    assert torch.equal(backbone(images), expected)
    assert backbone.categories == ["0", "1", "2", "3", "4"]  # the last Linear's out_features
    assert not any(p.requires_grad for p in backbone.parameters()) and not backbone.training
    assert compute_saliency_maps(images, [1, 4], backbone).shape == (2, 12, 12)


def test_layers_keep_the_models_names_and_cam_finds_them() -> None:
    backbone = classifier_backbone(sequential(), categories=["a", "b", "c", "d", "e"])
    assert backbone.layer_names == ["0", "1", "2", "3", "4"]
    assert backbone.class_index("c") == 2
    images = torch.randn(1, 3, 8, 8)
    assert cam.default_cam_layer(backbone, images) == 2  # the pooled 2x2 map
    plain = classifier_backbone(Plain())
    assert module_name(plain, "body.0") == "features.0.body.0"
    assert module_name(backbone, "1") == "features.1"
    assert cam.grad_cam(images, [0], plain, module_name(plain, "body.0")).shape == (1, 8, 8)


@pytest.mark.parametrize("options, message", [
    ({"mean": (0.5,), "std": (0.2,)}, "mean must have 3 values"),
    ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
    ({"categories": 0}, "categories must be at least 1 class"),
])
def test_bad_options_are_one_sentence(options: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        classifier_backbone(sequential(), **options)


def test_a_model_without_a_linear_needs_categories() -> None:
    with pytest.raises(UserInputError, match="give categories"):
        classifier_backbone(nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1),
                                          nn.Flatten()))

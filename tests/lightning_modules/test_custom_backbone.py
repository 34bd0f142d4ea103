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


def test_a_technique_runs_on_your_own_network_with_its_layer_names(tmp_path) -> None:
    import pytorch_lightning as pl

    from datamodules.classes import ClassListData
    from lightning_modules import ClassVisualization, StyleTransfer

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    with torch.no_grad():
        net[-1].weight *= 20  # a random head barely tells inputs apart; a trained one would
    backbone = classifier_backbone(net, categories=["a", "b", "c", "d", "e"])
    style = StyleTransfer(backbone=backbone, content_layers=["2"], style_layers=["1", 3],
                          style_weights=[1, 1])
    assert style.backbone is backbone and style.term("style").layers == [1, 3]
    assert "backbone" not in style.hparams  # the network is in the checkpoint, not the hparams
    model = ClassVisualization(backbone=backbone, image_size=16, transforms=False, max_jitter=0)
    trainer = pl.Trainer(max_steps=20, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, ClassListData(classes=["c"]))
    curve = [step[0] for step in model.probability_history]
    assert model.saved_probabilities()[0] > 0.5 > 2 * curve[0]  # it drew class c

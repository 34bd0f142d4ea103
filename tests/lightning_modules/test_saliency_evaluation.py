"""Tests for lightning_modules.saliency.evaluation: deletion and insertion against the RISE
definition computed by hand, and the cascading randomization check telling a map that depends
on the weights from an edge detector."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from datamodules.labeled_images import preprocess
from lightning_modules.backbones import Backbone, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import SaliencyMap, compute_saliency_maps
from lightning_modules.saliency.evaluation import (
    area_under_curve,
    cascading_randomization,
    deletion_insertion,
    map_ssim,
    perturbation_curves,
    randomization_order,
    randomize_layer,
    rank_correlation,
    trust_report,
)

# Per-pixel weights of the linear test model's class-0 logit, and a map that orders the pixels
# (0,0), (1,0), (0,1), (1,1): weights 2, 0.5, -1, 1 in that order.
PIXEL_WEIGHTS = torch.tensor([[2.0, -1.0], [0.5, 1.0]])
ORDER_MAP = torch.tensor([[[3.0, 1.0], [2.0, 0.0]]])


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def linear_backbone() -> Backbone:
    """2x2 images, two classes: logit 0 = sum over pixels of weight * (channel mean), logit 1 = 0.

    With mean = std = 0.5 a white pixel is +1 and a black one -1 in normalized space, so
    p(class 0) = sigmoid(sum of +-weights) can be worked out by hand.
    """
    head = nn.Linear(12, 2, bias=False)
    with torch.no_grad():
        head.weight.zero_()
        head.weight[0] = (PIXEL_WEIGHTS.flatten() / 3).repeat(3)  # [3, 2, 2] flattened
    return Backbone("linear", [nn.Flatten(1)], head, (0.5,) * 3, (0.5,) * 3, ["a", "b"])


def edge_detector(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A "saliency method" that never looks at the model: the image's gradient magnitude."""
    gray = inputs.mean(dim=1)
    dy = torch.zeros_like(gray)
    dx = torch.zeros_like(gray)
    dy[:, 1:] = gray[:, 1:] - gray[:, :-1]
    dx[:, :, 1:] = gray[:, :, 1:] - gray[:, :, :-1]
    return (dx.square() + dy.square()).sqrt()


def vanilla(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return compute_saliency_maps(inputs, targets, model)


# --- deletion and insertion, by hand -----------------------------------------------------------


def test_deletion_curve_and_auc_match_the_definition_by_hand() -> None:
    backbone = linear_backbone()
    white = backbone.normalize(torch.ones(1, 3, 2, 2))
    result = deletion_insertion(backbone, white, ORDER_MAP, torch.tensor([0]), steps=4,
                                deletion_substrate="black", insertion_substrate="black")
    # Removing a pixel (white +1 -> black -1) takes 2 * its weight off the logit 2.5.
    logits = [2.5, 2.5 - 4.0, 2.5 - 4.0 - 1.0, 2.5 - 4.0 - 1.0 + 2.0, -2.5]
    expected = [sigmoid(value) for value in logits]
    assert result["fractions"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert result["deletion_curves"][0].tolist() == pytest.approx(expected, abs=1e-6)
    # RISE's AUC: the trapezoid rule, (sum - first / 2 - last / 2) / steps.
    auc = (sum(expected) - expected[0] / 2 - expected[-1] / 2) / 4
    assert result["deletion_auc"].item() == pytest.approx(auc, abs=1e-6)
    assert auc == pytest.approx(0.28396, abs=1e-5)  # the number itself, worked out once
    # Insertion from black puts the pixels back in the same order.
    inserted = [sigmoid(value) for value in (-2.5, 1.5, 2.5, 0.5, 2.5)]
    assert result["insertion_curves"][0].tolist() == pytest.approx(inserted, abs=1e-6)
    assert result["insertion_auc"].item() == pytest.approx(
        (sum(inserted) - inserted[0] / 2 - inserted[-1] / 2) / 4, abs=1e-6)


def test_uneven_steps_integrate_over_the_fraction_really_removed() -> None:
    # 4 pixels in 3 steps: 0, 1, 3, 4 pixels removed (rounded), at fractions 0, 1/4, 3/4, 1.
    backbone = linear_backbone()
    white = backbone.normalize(torch.ones(1, 3, 2, 2))
    source, black = white, backbone.pixel_min.expand_as(white)
    fractions, curves = perturbation_curves(backbone, source, black, ORDER_MAP,
                                            torch.tensor([0]), steps=3)
    assert fractions.tolist() == [0.0, 0.25, 0.75, 1.0]
    p = [sigmoid(value) for value in (2.5, -1.5, -0.5, -2.5)]
    assert curves[0].tolist() == pytest.approx(p, abs=1e-6)
    by_hand = 0.25 * (p[0] + p[1]) / 2 + 0.5 * (p[1] + p[2]) / 2 + 0.25 * (p[2] + p[3]) / 2
    assert area_under_curve(fractions, curves).item() == pytest.approx(by_hand, abs=1e-6)


def test_perturbed_images_go_through_the_network_in_bounded_batches(tiny_backbone) -> None:
    seen: list[int] = []
    hook = tiny_backbone.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    inputs = tiny_backbone.normalize(torch.rand(3, 3, 16, 16, generator=torch.Generator()
                                                .manual_seed(0)))
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([1, 2, 3])
    small = deletion_insertion(tiny_backbone, inputs, maps, targets, steps=10, batch_size=4)
    assert max(seen) == 4 and sum(seen) == 2 * 3 * 11
    hook.remove()
    large = deletion_insertion(tiny_backbone, inputs, maps, targets, steps=10, batch_size=1000)
    for key in small:
        assert torch.allclose(small[key], large[key], atol=1e-6), key
    # Deleting every pixel leaves the same black image for all three, whatever the map.
    assert torch.allclose(small["deletion_curves"][:, -1],
                          torch.softmax(tiny_backbone(tiny_backbone.pixel_min.expand(3, 3, 16, 16)),
                                        1)[torch.arange(3), targets], atol=1e-6)


# --- cascading randomization -------------------------------------------------------------------


def test_randomization_tells_a_gradient_from_an_edge_detector(tiny_backbone) -> None:
    before = {key: value.clone() for key, value in tiny_backbone.state_dict().items()}
    inputs = tiny_backbone.normalize(torch.rand(2, 3, 32, 32, generator=torch.Generator()
                                                .manual_seed(3)))
    targets = torch.tensor([5, 7])
    names, maps = cascading_randomization(tiny_backbone, vanilla, inputs, targets, seed=0)
    assert names == ["head", "features.3", "features.2", "features.1", "features.0"]
    assert maps.shape == (2, 5, 32, 32)
    original = vanilla(tiny_backbone, inputs, targets)
    rank = torch.stack([rank_correlation(original, maps[:, j]) for j in range(5)], 1)
    ssim = torch.stack([map_ssim(original, maps[:, j]) for j in range(5)], 1)
    assert (rank[:, -1] < 0.5).all(), rank  # the gradient follows the weights
    assert (ssim[:, -1] < 0.5).all(), ssim
    edges = trust_report(tiny_backbone, edge_detector, inputs, targets,
                         edge_detector(tiny_backbone, inputs, targets), "edges", steps=4)
    assert edges.rank_correlation.min().item() == pytest.approx(1.0, abs=1e-6)
    assert edges.ssim.min().item() == pytest.approx(1.0, abs=1e-5)
    # The run's backbone is never touched; the same seed repeats, another does not.
    for key, value in tiny_backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert torch.equal(cascading_randomization(tiny_backbone, vanilla, inputs, targets, 0)[1], maps)
    assert not torch.equal(cascading_randomization(tiny_backbone, vanilla, inputs, targets, 1)[1],
                           maps)


def test_randomize_layer_redraws_every_weight_and_leaves_the_global_seed_alone() -> None:
    layer = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    with torch.no_grad():
        layer[1].running_mean.fill_(3.0)
    before = [parameter.clone() for parameter in layer.parameters()]
    state = torch.random.get_rng_state()
    randomize_layer(layer, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(layer[0].weight, before[0])
    assert torch.equal(layer[1].running_mean, torch.zeros(4))  # nothing learned is left
    again = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    randomize_layer(again, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), again.parameters()))


def test_layers_without_weights_are_not_counted() -> None:
    backbone = Backbone("relu", [nn.Conv2d(3, 3, 1), nn.ReLU()],
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(3, 2)),
                        (0.5,) * 3, (0.5,) * 3, ["a", "b"])
    assert [name for name, _ in randomization_order(backbone)] == ["head", "features.0"]


def test_rank_correlation_is_spearmans_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    generator = torch.Generator().manual_seed(4)
    first = torch.randn(3, 6, 7, generator=generator)
    second = first + torch.randn(3, 6, 7, generator=generator)
    second[0, :3] = 0.0  # many tied zeros, as a ReLU network's gradient has
    first[1] = first[1].round()
    ours = rank_correlation(first, second)
    for index in range(3):
        theirs = stats.spearmanr(first[index].abs().flatten(), second[index].abs().flatten())[0]
        assert ours[index].item() == pytest.approx(theirs, abs=1e-6)


def test_a_constant_map_has_no_rank_correlation() -> None:
    assert math.isnan(rank_correlation(torch.rand(1, 4, 4), torch.ones(1, 4, 4)).item())


@pytest.mark.parametrize("image", ["chelsea"])
def test_randomization_changes_the_gradient_of_lite0(image: str) -> None:
    # Only a trained network shows the paper's result: the map of the trained weights is
    # structured, the random network's is not like it.
    backbone = load_backbone("efficientnet_lite0")
    inputs = backbone.normalize(preprocess(f"sample:{image}", 96)[None])
    targets = torch.tensor([285])
    original = vanilla(backbone, inputs, targets)
    names, maps = cascading_randomization(backbone, vanilla, inputs, targets)
    assert len(names) == 10
    rank = [rank_correlation(original, maps[:, j]).item() for j in range(len(names))]
    assert rank[-1] < 0.4 and rank[-1] < rank[0], rank


# --- the module ---------------------------------------------------------------------------------


def test_module_returns_the_report_only_when_asked(tiny_backbone) -> None:
    from datamodules.labeled_images import LabeledImageData

    data = LabeledImageData(images=["sample:chelsea", "sample:coffee"], image_size=24,
                            batch_size=2)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, accelerator="cpu", devices=1)
    plain = SaliencyMap(backbone="tiny", weights="random", method="vanilla")
    assert trainer.predict(plain, datamodule=data)[0].trust is None
    module = SaliencyMap(backbone="tiny", weights="random", method="smoothgrad", samples=2,
                         evaluate=True, evaluation_steps=6, evaluation_batch_size=5)
    result = trainer.predict(module, datamodule=data)[0]
    report = result.trust
    assert report.method == "smoothgrad" and report.deletion_curves.shape == (2, 7)
    assert report.randomized_maps.shape == (2, 5, 24, 24)
    assert report.rank_correlation.shape == report.ssim.shape == (2, 5)
    # The report explains the batch's own maps and classes: step 0 is the untouched image.
    with torch.no_grad():
        p = module.backbone(module.backbone.normalize(result.pixels)).softmax(1)
    assert torch.allclose(report.deletion_curves[:, 0], p[[0, 1], result.target], atol=1e-6)
    assert ((report.deletion_auc >= 0) & (report.deletion_auc <= 1)).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"evaluation_steps": 0}, "evaluation_steps must be an integer of at least 1"),
    ({"evaluation_steps": 2.5}, "evaluation_steps must be an integer"),
    ({"evaluation_batch_size": 0}, "evaluation_batch_size must be an integer of at least 1"),
    ({"deletion_baseline": "white"}, "Unknown deletion_baseline 'white'"),
    ({"insertion_start": "noise"}, "Unknown insertion_start 'noise'"),
    ({"randomization_seed": -1}, "randomization_seed must be an integer from 0"),
])
def test_module_rejects_bad_evaluation_options(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        SaliencyMap(backbone="tiny", weights="random", evaluate=True, **kwargs)

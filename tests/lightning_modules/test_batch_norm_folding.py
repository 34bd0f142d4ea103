"""Backbone.fold_batch_norm: the same logits and input gradients, the same module names, the
same values at a hooked normalization, idempotent; normalizations that cannot fold stay."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lightning_modules.backbones import Backbone, imagenet_categories, load_backbone
from lightning_modules.backbones.folding import FoldedNorm


def with_statistics(norm: nn.BatchNorm2d, generator: torch.Generator) -> nn.BatchNorm2d:
    """Non-trivial running statistics and affine parameters (a fresh BN would be identity)."""
    count = norm.num_features
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(count, generator=generator))
        norm.running_var.copy_(torch.rand(count, generator=generator) * 3 + 0.2)
        if norm.affine:
            norm.weight.copy_(torch.randn(count, generator=generator))
            norm.bias.copy_(torch.randn(count, generator=generator))
    return norm


def batch_norm_backbone() -> Backbone:
    """A tiny CNN with every kind of normalization: after a conv (Sequential, timm's
    Conv2dSame + BatchNormAct2d, torchvision's Conv2dNormActivation), after a ReLU (stays) and
    without running statistics (stays)."""
    from timm.layers import BatchNormAct2d, Conv2dSame
    from torchvision.ops import Conv2dNormActivation

    generator = torch.Generator().manual_seed(3)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        layers = [
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=True),
                          with_statistics(nn.BatchNorm2d(8), generator), nn.ReLU()),
            nn.Sequential(Conv2dSame(8, 16, 3, stride=2, bias=False),
                          with_statistics(BatchNormAct2d(16, act_layer=nn.ReLU6), generator)),
            Conv2dNormActivation(16, 16, 3),
            nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          with_statistics(nn.BatchNorm2d(16), generator)),  # after a ReLU
            nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1),
                          nn.BatchNorm2d(32, track_running_stats=False), nn.ReLU()),
        ]
        with_statistics(layers[2][1], generator)
        head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(32, 1000))
    return Backbone("bn", layers, head, (0.5,) * 3, (0.25,) * 3, imagenet_categories())


def logits_and_gradient(backbone: Backbone, inputs: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    image = inputs.clone().requires_grad_(True)
    logits = backbone(image)
    gradient, = torch.autograd.grad(logits[:, 7].sum(), image)
    return logits.detach(), gradient


def test_folding_keeps_the_logits_gradients_and_names_of_a_small_network() -> None:
    original = batch_norm_backbone()
    folded = copy.deepcopy(original).fold_batch_norm()
    assert folded.folded_norms == 3  # the three after a convolution
    norms = {name: type(module).__name__ for name, module in folded.named_modules()
             if isinstance(module, nn.BatchNorm2d)}
    assert norms == {"features.3.2": "BatchNorm2d", "features.4.1": "BatchNorm2d"}
    assert isinstance(folded.features[1][1], FoldedNorm)
    assert [name for name, _ in folded.features[1][1].named_children()] == ["drop", "act"]
    assert [name for name, _ in original.named_modules()] == [
        name for name, _ in folded.named_modules()]
    inputs = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    logits, gradient = logits_and_gradient(original, inputs)
    folded_logits, folded_gradient = logits_and_gradient(folded, inputs)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(folded_gradient, gradient, rtol=1e-4, atol=1e-6)
    # A hooked normalization gives what it gave unfolded (BN, then drop and ReLU6).
    seen = {}
    for key, network in (("original", original), ("folded", folded)):
        network.get_submodule("features.1.1").register_forward_hook(
            lambda _m, _i, output, key=key: seen.__setitem__(key, output))
        with torch.no_grad():
            network(inputs)
    torch.testing.assert_close(seen["folded"], seen["original"], rtol=1e-5, atol=1e-5)
    # Idempotent: a second call changes nothing.
    state = {key: value.clone() for key, value in folded.state_dict().items()}
    assert folded.fold_batch_norm() is folded
    assert all(torch.equal(state[key], value) for key, value in folded.state_dict().items())


def test_a_convolution_whose_output_is_also_used_elsewhere_is_not_folded() -> None:
    class Skip(nn.Module):  # conv -> bn, plus the conv's raw output added back
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = with_statistics(nn.BatchNorm2d(3), torch.Generator().manual_seed(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raw = self.conv(x)
            return self.bn(raw) + raw

    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(3, 1000))
    backbone = Backbone("skip", [Skip()], head, (0.5,) * 3, (0.25,) * 3, imagenet_categories())
    inputs = torch.randn(1, 3, 16, 16)
    expected = backbone(inputs)
    with pytest.warns(UserWarning, match="unfolded"):
        backbone.fold_batch_norm()
    assert backbone.folded_norms == 0
    assert isinstance(backbone.features[0].bn, nn.BatchNorm2d)
    torch.testing.assert_close(backbone(inputs), expected)


def test_folding_efficientnet_lite0_keeps_its_logits_and_input_gradients() -> None:
    original = load_backbone("efficientnet_lite0")
    folded = copy.deepcopy(original).fold_batch_norm()
    assert folded.folded_norms == 49
    assert not any(isinstance(module, nn.BatchNorm2d) for module in folded.modules())
    assert [name for name, _ in original.named_modules()] == [
        name for name, _ in folded.named_modules()]
    pixels = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    inputs = original.normalize(pixels)
    logits, gradient = logits_and_gradient(original, inputs)
    folded_logits, folded_gradient = logits_and_gradient(folded, inputs)
    torch.testing.assert_close(folded_logits, logits, rtol=1e-4, atol=1e-4)
    # Rounding can flip a ReLU6 gate now and then (a few units in millions), which moves the
    # gradient of the pixels that unit sees: nearly every value agrees to rounding, all to 3 %
    # of the largest.
    scale = gradient.abs().max()
    difference = (folded_gradient - gradient).abs() / scale
    assert difference.max() < 0.03
    assert (difference > 1e-4).float().mean() < 0.02
    assert (difference / (gradient.abs() / scale + 1e-6)).median() < 1e-4


def test_dataset_runs_fold_by_default_and_keep_the_unfolded_network_where_it_is_read() -> None:
    from lightning_modules.saliency import DatasetExplanation
    from lightning_modules.saliency.metrics.randomisation import ModelParameterRandomisation

    backbone = batch_norm_backbone()
    folded = DatasetExplanation(backbone, methods=["integrated_gradients", "smoothgrad",
                                                   "fullgrad"], controls=[])
    plain = DatasetExplanation(backbone, methods=["integrated_gradients", "smoothgrad"],
                               controls=[], fold_batch_norm=False, channels_last=False)
    assert folded.backbone.folded_norms == 3 and plain.backbone.folded_norms == 0
    assert not backbone.batch_norm_folded  # the caller's network is left as it was
    integrated, smooth, fullgrad = folded.methods
    assert folded.network_for(fullgrad) is folded.unfolded_backbone
    assert folded.network_for(integrated) is folded.backbone
    assert folded.network_for(integrated, ModelParameterRandomisation()) is (
        folded.unfolded_backbone)
    inputs = backbone.normalize(torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(2)))
    targets = torch.tensor([3, 7])
    for ours, theirs in zip(folded.methods[:2], plain.methods):
        maps = ours.attribute(folded.backbone, inputs, targets,
                              generator=torch.Generator().manual_seed(0)).maps
        expected = theirs.attribute(plain.backbone, inputs, targets,
                                    generator=torch.Generator().manual_seed(0)).maps
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-4 * expected.max().item())

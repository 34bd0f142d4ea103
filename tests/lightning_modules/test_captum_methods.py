"""Captum's methods through one adapter, and maps computed in bounded internal batches (issue 12)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import SaliencyMap
from lightning_modules.saliency.captum_methods import captum_attributions, patch_mask
from lightning_modules.saliency.functional import (compute_saliency_maps, integrated_gradients,
                                                   resolve_baseline, smoothgrad_saliency)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "saliency.yaml"


class BatchRecorder(torch.nn.Module):
    """The model, remembering the largest batch it was given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.largest = model, 0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, inputs.shape[0])
        return self.model(inputs)


@pytest.fixture
def images(tiny_backbone) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return tiny_backbone.normalize(torch.rand(3, 3, 16, 16, generator=generator)), \
        torch.tensor([1, 7, 42])


@pytest.mark.parametrize("internal_batch_size", [1, 2, 5, 100])
def test_internal_batches_give_the_same_maps_and_bound_the_batch(tiny_backbone, images,
                                                                 internal_batch_size) -> None:
    inputs, targets = images
    expected_smooth = smoothgrad_saliency(inputs, targets, tiny_backbone, 0.2, 4,
                                          torch.Generator().manual_seed(3))
    expected_ig = integrated_gradients(inputs, targets, tiny_backbone, "black", 6)
    recorder = BatchRecorder(tiny_backbone)
    smooth = smoothgrad_saliency(inputs, targets, recorder, 0.2, 4,
                                 torch.Generator().manual_seed(3), internal_batch_size)
    ig = integrated_gradients(inputs, targets, recorder, "black", 6,
                              mean=tiny_backbone.mean.flatten().tolist(),
                              std=tiny_backbone.std.flatten().tolist(),
                              internal_batch_size=internal_batch_size)
    torch.testing.assert_close(smooth, expected_smooth, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ig, expected_ig, rtol=1e-5, atol=1e-7)
    # 4 noisy copies and 6 path points of 3 images: never more rows than asked at once
    assert recorder.largest == min(internal_batch_size, 18)


def test_captum_integrated_gradients_and_saliency_are_ours(tiny_backbone, images) -> None:
    """The adapter calls Captum with our options: its IG and its Saliency are ours exactly."""
    inputs, targets = images
    black = resolve_baseline("black", inputs, tiny_backbone)
    baselines = torch.stack([black, torch.zeros_like(inputs)])
    captum_ig = captum_attributions("captum:IntegratedGradients", tiny_backbone, inputs, targets,
                                    baselines, steps=8, internal_batch_size=5)
    torch.testing.assert_close(captum_ig, integrated_gradients(inputs, targets, tiny_backbone,
                                                               "black", 8), rtol=1e-4, atol=1e-6)
    module = SaliencyMap(backbone="tiny", weights="random", method="captum:Saliency",
                         reduction="abs_max")
    maps, attributions = module.saliency(inputs, targets)
    torch.testing.assert_close(maps, compute_saliency_maps(inputs, targets, tiny_backbone))
    assert attributions.shape == inputs.shape


def test_perturbation_methods_take_patches_and_the_batch_bound(tiny_backbone, images) -> None:
    inputs, targets = images
    mask = patch_mask(16, 16, 8, inputs.device)
    assert mask.shape == (1, 1, 16, 16) and mask.unique().tolist() == [0, 1, 2, 3]
    assert mask[0, 0, 0, 7] == 0 and mask[0, 0, 0, 8] == 1 and mask[0, 0, 8, 0] == 2
    recorder = BatchRecorder(tiny_backbone)
    baselines = torch.stack([resolve_baseline("black", inputs, tiny_backbone)] * 2)
    ablation = captum_attributions("captum:FeatureAblation", recorder, inputs, targets, baselines,
                                   patch_size=8, internal_batch_size=6)
    # Constant over each patch (one feature), and Captum got 2 perturbed copies of 3 images.
    assert torch.equal(ablation[..., :8, :8], ablation[..., :1, :1].expand(-1, -1, 8, 8))
    assert recorder.largest == 6


NAMED = ["Occlusion", "GradientShap", "DeepLift", "InputXGradient", "GuidedBackprop",
         "FeatureAblation"]


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    return tmp_path


def _predict(*extra: str) -> int:
    return cli.main(["predict", "--config", str(CONFIG), "--model.backbone", "tiny",
                     "--model.weights", "random", "--data.image_size", "32",
                     "--data.images", "[sample:chelsea, sample:coffee]", "--data.labels",
                     "[285, 967]", "--trainer.enable_progress_bar", "false", *extra])


@pytest.mark.parametrize("name", NAMED)
def test_each_named_captum_method_runs_through_the_cli(in_tmp_path: Path, name: str) -> None:
    assert _predict("--model.method", f"captum:{name}", "--model.samples", "3",
                    "--model.patch_size", "8", "--model.internal_batch_size", "4") == 0
    run = in_tmp_path / "runs" / "saliency" / "version_0"
    for image in ("chelsea", "coffee"):
        saliency = np.load(run / f"{image}_saliency.npy")
        assert saliency.shape == (32, 32) and np.isfinite(saliency).all() and saliency.max() > 0
        assert np.load(run / f"{image}_attributions.npy").shape == (3, 32, 32)
    assert (run / "sheet_0000.png").is_file()


def test_method_options_reach_captum(in_tmp_path: Path) -> None:
    """A 32 px window sliding by 32 covers the whole 32 px image once: one value everywhere."""
    assert _predict("--model.method", "captum:Occlusion",
                    "--model.method_options",
                    "{sliding_window_shapes: [3, 32, 32], strides: [3, 32, 32]}") == 0
    saliency = np.load(in_tmp_path / "runs" / "saliency" / "version_0" / "chelsea_saliency.npy")
    assert np.allclose(saliency, saliency[0, 0])


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "captum:GradCam"}, "Unknown Captum method 'GradCam'; choose one of"),
    ({"method": "captum:Occlusion", "method_options": {"window": 3}},
     "takes no option 'window'"),
    ({"method": "captum:Occlusion", "method_options": {"target": 3}}, "takes no option 'target'"),
    ({"method": "smoothgrad", "method_options": {"stdevs": 0.1}}, "are for Captum methods"),
    ({"internal_batch_size": 0}, "internal_batch_size must be a whole number of at least 1"),
    ({"patch_size": 2.5}, "patch_size must be a whole number"),
])
def test_bad_captum_options_are_one_sentence(kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        SaliencyMap(backbone="tiny", weights="random", **kwargs)


def test_a_bad_captum_option_from_the_cli_is_one_line(in_tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert _predict("--model.method", "captum:Occlusion", "--model.method_options",
                    "{strides: [1, 2]}") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and "captum:Occlusion refused its arguments" in errors[0], errors


def _relu6_net() -> torch.nn.Module:
    """A small ReLU6 network (as EfficientNet-Lite) with activations past 6."""
    torch.manual_seed(5)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU6(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU6(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(1), torch.nn.Linear(8, 10)).eval()
    with torch.no_grad():
        net[0].weight.mul_(20)
    return net.requires_grad_(False)


def test_deeplift_on_relu6_adds_up_to_the_score_difference() -> None:
    """Captum's DeepLift takes ReLU6 for linear, and its attributions stop adding up to
    f(x) - f(x0); through the adapter ReLU6 gets the Rescale rule and they do."""
    import captum.attr

    net = _relu6_net()
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert (net[:2](inputs) >= 6).any() and (net[:2](inputs) <= 0).any()  # both kinks in use
    targets = torch.tensor([3, 8])
    baselines = torch.zeros(2, *inputs.shape)
    difference = net(inputs).gather(1, targets[:, None]) - net(baselines[0]).gather(
        1, targets[:, None])
    ours = captum_attributions("captum:DeepLift", net, inputs, targets, baselines)
    torch.testing.assert_close(ours.flatten(1).sum(1), difference[:, 0], rtol=1e-4, atol=1e-5)
    plain = captum.attr.DeepLift(net).attribute(inputs, baselines[0], target=targets)
    assert not torch.allclose(plain.flatten(1).sum(1), difference[:, 0], rtol=1e-2, atol=1e-3)


def test_guided_backprop_on_relu6_keeps_only_positive_gradients() -> None:
    """Guided backpropagation by hand (each ReLU6 passes the positive part of its gradient)
    against the adapter's; Captum alone gives the plain gradient on a ReLU6 network."""
    net = _relu6_net()
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    targets = torch.tensor([1, 4])
    baselines = torch.zeros(2, *inputs.shape)

    def guided(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),)

    hooks = [m.register_full_backward_hook(guided) for m in net if type(m) is torch.nn.ReLU6]
    x = inputs.clone().requires_grad_(True)
    net(x).gather(1, targets[:, None]).sum().backward()
    for hook in hooks:
        hook.remove()
    ours = captum_attributions("captum:GuidedBackprop", net, inputs, targets, baselines)
    torch.testing.assert_close(ours, x.grad, rtol=1e-5, atol=1e-7)
    x.grad = None
    net(x).gather(1, targets[:, None]).sum().backward()
    assert not torch.allclose(ours, x.grad)  # the plain gradient differs


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "vanilla", "patch_size": 8}, "Option 'patch_size' does not apply to method"),
    ({"method": "gradcam", "internal_batch_size": 8},
     "Option 'internal_batch_size' does not apply to method 'gradcam'"),
])
def test_options_of_other_methods_are_refused(kwargs, message) -> None:
    with pytest.raises(UserInputError, match=message):
        SaliencyMap(backbone="tiny", weights="random", **kwargs)
    SaliencyMap(backbone="tiny", weights="random", method="captum:Occlusion", patch_size=8,
                internal_batch_size=8)  # they belong to Captum's methods

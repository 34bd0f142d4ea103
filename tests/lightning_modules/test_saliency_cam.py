"""Tests for lightning_modules.saliency.cam: Grad-CAM, Grad-CAM++, Score-CAM and Guided Grad-CAM
against pytorch-grad-cam, their options in SaliencyMap, and the predict command end to end.

Agreement is measured as ``max |ours - theirs| <= 1e-4 * max |theirs|`` (the maps are scaled
to 0-1, so this is 1e-4 of the map's range).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, GuidedBackpropReLUModel, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import cli
from conftest import build_tiny_backbone
from datamodules.labeled_images import LabeledImageData
from lightning_modules.backbones import Backbone, imagenet_categories, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import SaliencyMap, cam, class_score_gradient
from lightning_modules.saliency.cam import (
    CAM_METHODS,
    default_cam_layer,
    find_layer,
    grad_cam,
    grad_cam_plusplus,
    guided_backprop,
    guided_grad_cam,
    score_cam,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency.yaml"
OURS = {"gradcam": grad_cam, "gradcam++": grad_cam_plusplus, "scorecam": score_cam}
THEIRS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM}
TARGETS = [1, 5, 999]


def assert_agrees(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert theirs.max() > 0 and theirs.std() > 0.01 * theirs.max()  # a map with structure
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def library_cam(method: str, model: nn.Module, module: nn.Module, X: torch.Tensor,
                targets: list[int]) -> torch.Tensor:
    """pytorch-grad-cam's map; its hooks need parameters that require grad, so on a copy."""
    trainable = copy.deepcopy(model).requires_grad_(True)
    path = next(name for name, found in model.named_modules() if found is module)
    with THEIRS[method](trainable, [trainable.get_submodule(path)]) as cam:
        return torch.from_numpy(cam(X.clone(), [ClassifierOutputTarget(c) for c in targets]))


def library_guided(model: nn.Module, X: torch.Tensor, targets: list[int]) -> torch.Tensor:
    """pytorch-grad-cam's guided backpropagation (one image per call), as [N, 3, H, W]."""
    guided = GuidedBackpropReLUModel(copy.deepcopy(model).requires_grad_(True), device="cpu")
    return torch.stack([torch.from_numpy(guided(X[i : i + 1].clone(), c)).permute(2, 0, 1)
                        for i, c in enumerate(targets)])


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return build_tiny_backbone()


@pytest.fixture(scope="module")
def images(tiny: Backbone) -> torch.Tensor:
    # Not square, so that height and width cannot be swapped.
    return tiny.normalize(torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(0)))


# --- against pytorch-grad-cam ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam"])
@pytest.mark.parametrize("layer", [1, 3, "features.2.0"])
def test_cam_matches_pytorch_grad_cam(tiny: Backbone, images, method: str, layer) -> None:
    ours = OURS[method](images, TARGETS, tiny, layer)
    assert_agrees(ours, library_cam(method, tiny, find_layer(tiny, layer), images, TARGETS))


def test_guided_grad_cam_matches_pytorch_grad_cam(tiny: Backbone, images) -> None:
    guided = library_guided(tiny, images, TARGETS)
    assert torch.allclose(guided_backprop(images, TARGETS, tiny), guided, atol=1e-6, rtol=1e-5)
    # The paper's product per colour channel; the map is its largest absolute channel.
    theirs = library_cam("gradcam", tiny, tiny.features[2], images, TARGETS)
    product = (theirs[:, None] * guided).abs().amax(dim=1)
    assert_agrees(guided_grad_cam(images, TARGETS, tiny, 2), product)
    # Guided, not plain: the gradient's negative parts were cut at the ReLUs.
    assert not torch.allclose(guided, class_score_gradient(images, TARGETS, tiny), atol=1e-6)


def test_guided_relu6_is_relu_then_clamp_for_the_library() -> None:
    # The libraries guide nn.ReLU only; we guide ReLU6 too. ReLU6 = ReLU followed by a clamp at
    # 6, and the library guides that pair exactly as we guide ReLU6.
    torch.manual_seed(0)
    relu6 = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU6(), nn.Conv2d(8, 8, 3), nn.ReLU6(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        relu6[0].weight *= 8  # inputs above 6, so that the clamp matters
    split = copy.deepcopy(relu6)
    for index in (1, 3):
        split[index] = nn.Sequential(nn.ReLU(), nn.Hardtanh(0, 6))
    X = torch.randn(2, 3, 12, 12)
    ours = guided_backprop(X, [3, 7], relu6)
    assert torch.allclose(ours, library_guided(split, X, [3, 7]), atol=1e-6)
    assert not torch.allclose(ours, library_guided(relu6, X, [3, 7]), atol=1e-6)


@pytest.fixture(scope="module")
def lite0() -> Backbone:
    return load_backbone("efficientnet_lite0")


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_matches_pytorch_grad_cam_on_efficientnet_lite0(lite0: Backbone, method: str) -> None:
    X = lite0.normalize(torch.rand(2, 3, 64, 80, generator=torch.Generator().manual_seed(3)))
    targets = [285, 967]
    ours = OURS[method](X, targets, lite0)  # the default layer: conv_head + bn2 (ReLU6)
    assert default_cam_layer(lite0, X) == lite0.num_layers - 1
    assert_agrees(ours, library_cam(method, lite0, lite0.features[-1], X, targets))


# --- what our implementation adds ----------------------------------------------------------------


@pytest.mark.parametrize("internal_batch_size", [1, 7, 1000])
def test_score_cam_internal_batches_do_not_change_the_map(tiny: Backbone, images,
                                                          internal_batch_size: int) -> None:
    reference = score_cam(images, TARGETS, tiny, 3, internal_batch_size=32)
    batched = score_cam(images, TARGETS, tiny, 3, internal_batch_size=internal_batch_size)
    assert torch.allclose(batched, reference, atol=1e-6)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_cam_batched_equals_per_image_and_depends_on_the_class(tiny: Backbone, images,
                                                               method: str) -> None:
    function = {**OURS, "guided_gradcam": guided_grad_cam}[method]
    batched = function(images, TARGETS, tiny, 2)
    assert batched.shape == (3, 20, 28) and (batched >= 0).all()
    assert torch.allclose(batched[1:2], function(images[1:2], TARGETS[1:2], tiny, 2), atol=1e-6)
    assert (batched - function(images, [7, 8, 9], tiny, 2)).abs().max() > 1e-4 * batched.max()


def test_default_layer_is_the_last_with_spatial_maps(images) -> None:
    torch.manual_seed(0)
    layers = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(nn.Conv2d(4, 6, 3),
              nn.ReLU()), nn.Flatten()]
    head = nn.Linear(6 * 16 * 24, 1000)  # 20 x 28 images, two unpadded 3 x 3 convolutions
    flat = Backbone("flat", layers, head, (0.5,) * 3, (0.25,) * 3, imagenet_categories())
    assert default_cam_layer(flat, images) == 1
    assert torch.equal(grad_cam(images, TARGETS, flat), grad_cam(images, TARGETS, flat, 1))


def test_cam_works_under_no_grad_and_leaves_input_alone(tiny: Backbone, images) -> None:
    before = images.clone()
    with torch.no_grad():
        maps = grad_cam(images, TARGETS, tiny, 3)
    assert torch.equal(images, before) and not images.requires_grad
    assert torch.equal(maps, grad_cam(images, TARGETS, tiny, 3))


@pytest.mark.parametrize("layer, message", [
    (4, "CAM layer 4 is out of range: the model has feature layers 0 to 3."),
    (-1, "CAM layer -1 is out of range"),
    ("features.9", "Unknown CAM layer 'features.9'"),
    ("classifier", "Unknown CAM layer 'classifier'"),
    ("head.1", "CAM layer 'head.1' outputs shape [3, 32], not spatial maps"),
])
@pytest.mark.parametrize("method", CAM_METHODS)
def test_bad_layers_are_one_sentence(tiny: Backbone, images, layer, message: str,
                                     method: str) -> None:
    function = {**OURS, "guided_gradcam": guided_grad_cam}[method]
    with pytest.raises(UserInputError) as info:
        function(images, TARGETS, tiny, layer)
    assert message in str(info.value) and "\n" not in str(info.value)


# --- SaliencyMap and the command line --------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "vanilla", "layer": 2}, "Option 'layer' does not apply to method 'vanilla'"),
    ({"method": "integrated_gradients", "layer": "features.1"}, "does not apply"),
    ({"method": "gradcam", "internal_batch_size": 8},
     "Option 'internal_batch_size' does not apply to method 'gradcam'; it belongs to "
     "smoothgrad, integrated_gradients, scorecam, ablationcam, captum:NAME."),
    ({"method": "scorecam", "internal_batch_size": 0}, "whole number of at least 1"),
    ({"method": "gradcam", "layer": 7}, "out of range"),
    ({"method": "gradcam++", "layer": "features.1.7"}, "Unknown CAM layer"),
    ({"method": "grad_cam"}, "Unknown saliency method 'grad_cam'"),
])
def test_module_rejects_bad_cam_options(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace("[", r"\[")):
        SaliencyMap(backbone="tiny", weights="random", **kwargs)


def test_module_defaults_are_not_flagged(monkeypatch) -> None:
    # The shipped config sets samples, steps, ...: only options the user gives are checked.
    SaliencyMap(backbone="tiny", weights="random", method="vanilla", layer=None,
                internal_batch_size=None)
    # Score-CAM's masked images go 32 at a time unless the user says otherwise.
    sizes = []
    monkeypatch.setattr(cam, "score_cam", lambda *args: sizes.append(args[-1]) or args[0][:, 0])
    SaliencyMap(backbone="tiny", weights="random", method="scorecam").saliency(
        torch.zeros(1, 3, 16, 16), torch.tensor([0]))
    assert sizes == [32]


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch) -> Path:
    """Run the command line in tmp_path (runs/ lands there), with pytest's own arguments hidden."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    return tmp_path


def _predict(*extra: str) -> int:
    return cli.main(["predict", "--config", str(CONFIG), "--model.backbone", "tiny",
                     "--model.weights", "random", "--data.image_size", "32",
                     "--trainer.enable_progress_bar", "false", *extra])


@pytest.mark.parametrize("method, extra", [
    ("gradcam", []), ("gradcam++", ["--model.layer", "features.2"]),
    ("scorecam", ["--model.layer", "2", "--model.internal_batch_size", "5"]),
    ("guided_gradcam", []),
])
def test_predict_command_runs_each_cam_method(in_tmp_path: Path, method: str, extra) -> None:
    assert _predict("--model.method", method, *extra) == 0
    run = in_tmp_path / "runs" / "saliency" / "version_0"
    data = LabeledImageData(image_size=32)  # the built-in samples, as the run read them
    data.setup("predict")
    saved = np.stack([np.load(run / f"{item.name}_saliency.npy") for item in data.items])
    assert saved.shape == (3, 32, 32) and saved.min() >= 0 and saved.max() > 0
    if method != "guided_gradcam":
        assert saved.max() <= 1
    if method == "gradcam":  # the default layer is the tiny net's last, features.3
        backbone = build_tiny_backbone()
        X = backbone.normalize(torch.stack([item.pixels for item in data.items]))
        targets = [backbone.class_index(item.label) for item in data.items]
        assert np.allclose(saved, grad_cam(X, targets, backbone, 3).numpy(), atol=1e-5)
    assert (run / "sheet_0000.png").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--model.method", "gradcam", "--model.layer", "9"], "CAM layer 9 is out of range"),
    (["--model.method", "scorecam", "--model.layer", "head.2"], "not spatial maps"),
    (["--model.method", "gradcam", "--model.layer", "features.x"], "Unknown CAM layer"),
    (["--model.method", "smoothgrad", "--model.layer", "2"], "does not apply to method"),
])
def test_predict_command_reports_bad_cam_input_in_one_line(in_tmp_path: Path, capsys, extra,
                                                           message: str) -> None:
    capsys.readouterr()
    assert _predict(*extra) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and message in err, err

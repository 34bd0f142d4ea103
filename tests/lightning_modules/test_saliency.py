"""Tests for lightning_modules.saliency: the seed's map, SmoothGrad, Integrated Gradients
(against Captum), the SaliencyMap module, and the predict command end to end."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from captum.attr import IntegratedGradients, Saliency
from PIL import Image
from torch import nn

import cli
from datamodules.labeled_images import LabeledImageData
from lightning_modules.backbones import Backbone, imagenet_categories, register_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import (
    INTEGRATION_METHODS,
    SaliencyBatch,
    SaliencyMap,
    attribution_map,
    compute_saliency_maps,
    integrated_gradients,
    integration_rule,
    resolve_baseline,
    smoothgrad_saliency,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency.yaml"
TINY = "saliency_test_tiny"
H, W = 10, 12  # small and not square, so that height and width cannot be swapped


def saliency_backbone(weights: str = "random") -> Backbone:
    """A small random CNN with 1000 ImageNet outputs: batch norm (eval), ReLU and tanh."""
    generator = torch.Generator().manual_seed(0)
    norm = nn.BatchNorm2d(6)
    with torch.no_grad():
        norm.running_mean.copy_(torch.randn(6, generator=generator) * 0.1)
        norm.running_var.copy_(torch.rand(6, generator=generator) + 0.5)
    layers = [nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), norm, nn.ReLU()),
              nn.Sequential(nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.Tanh())]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 1000))
    backbone = Backbone(TINY, layers, head, (0.5,) * 3, (0.5,) * 3, imagenet_categories())
    with torch.no_grad():  # deterministic weights, whatever the global seed
        for parameter in backbone.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return backbone


register_backbone(TINY, saliency_backbone, "tiny random CNN for tests")


@pytest.fixture(scope="module")
def model64() -> Backbone:
    return saliency_backbone().double()


@pytest.fixture
def images64(model64: Backbone) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.rand(4, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model64.normalize(pixels), torch.tensor([285, 967, 3, 999])


# --- vanilla gradient (the seed) ---------------------------------------------------------------


def test_saliency_matches_captum(model64: Backbone, images64) -> None:
    X, y = images64
    ours = compute_saliency_maps(X, y, model64)
    theirs = Saliency(model64).attribute(X.clone().requires_grad_(), target=y, abs=True).amax(dim=1)
    assert ours.shape == (4, H, W)
    assert ours.dtype == torch.float64
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    assert ours.abs().sum() > 0


def test_saliency_matches_captum_float32() -> None:
    model = saliency_backbone()
    X = model.normalize(torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
    y = torch.tensor([1, 2])
    theirs = Saliency(model).attribute(X.clone().requires_grad_(), target=y, abs=True).amax(dim=1)
    assert torch.allclose(compute_saliency_maps(X, y, model), theirs, atol=1e-5)


def test_saliency_batched_equals_per_image(model64: Backbone, images64) -> None:
    X, y = images64
    batched = compute_saliency_maps(X, y, model64)
    for i in range(len(X)):
        single = compute_saliency_maps(X[i : i + 1], y[i : i + 1], model64)
        assert torch.allclose(batched[i : i + 1], single, atol=1e-12)


def test_saliency_depends_on_the_class(model64: Backbone, images64) -> None:
    X, _ = images64
    first = compute_saliency_maps(X, torch.zeros(4, dtype=torch.long), model64)
    second = compute_saliency_maps(X, torch.ones(4, dtype=torch.long), model64)
    assert not torch.allclose(first, second)


def test_saliency_works_under_no_grad_and_leaves_input_alone(model64: Backbone, images64) -> None:
    X, y = images64
    before = X.clone()
    with torch.no_grad():
        maps = compute_saliency_maps(X, y.tolist(), model64)
    assert torch.equal(X, before) and not X.requires_grad
    assert torch.allclose(maps, compute_saliency_maps(X, y, model64))


def test_saliency_rejects_a_wrong_number_of_classes(model64: Backbone, images64) -> None:
    X, _ = images64
    with pytest.raises(UserInputError, match="3 classes for 4 images"):
        compute_saliency_maps(X, torch.tensor([1, 2, 3]), model64)


# --- SmoothGrad --------------------------------------------------------------------------------


def test_smoothgrad_without_noise_is_the_vanilla_map(model64: Backbone, images64) -> None:
    X, y = images64
    smooth = smoothgrad_saliency(X, y, model64, noise_level=0.0, samples=3)
    assert torch.allclose(smooth, compute_saliency_maps(X, y, model64), atol=1e-12)


def test_smoothgrad_is_the_documented_average(model64: Backbone, images64) -> None:
    X, y = images64
    X = X.clone()
    X[1] *= 3  # a wider value range must get proportionally wider noise
    smooth = smoothgrad_saliency(X, y, model64, noise_level=0.2, samples=4,
                                 generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    expected = torch.zeros_like(smooth)
    for _ in range(4):
        noise = torch.randn(X.shape, generator=generator, dtype=X.dtype)
        for i in range(len(X)):
            sigma = 0.2 * (X[i].max() - X[i].min())
            expected[i] += compute_saliency_maps(X[i : i + 1] + sigma * noise[i : i + 1],
                                                 y[i : i + 1], model64)[0]
    assert torch.allclose(smooth, expected / 4, atol=1e-12)
    assert not torch.allclose(smooth, compute_saliency_maps(X, y, model64))


@pytest.mark.parametrize("kwargs", [{"noise_level": -0.1}, {"samples": 0}])
def test_smoothgrad_rejects_bad_options(model64: Backbone, images64, kwargs) -> None:
    X, y = images64
    with pytest.raises(UserInputError):
        smoothgrad_saliency(X, y, model64, **kwargs)


# --- Integrated Gradients ----------------------------------------------------------------------


@pytest.mark.parametrize("method", INTEGRATION_METHODS)
def test_integrated_gradients_match_captum(model64: Backbone, images64, method: str) -> None:
    X, y = images64
    ours = integrated_gradients(X, y, model64, steps=12, method=method)
    theirs = IntegratedGradients(model64).attribute(X.clone(), target=y, n_steps=12, method=method)
    assert ours.shape == X.shape
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_integrated_gradients_defaults_match_captum_defaults(model64: Backbone, images64) -> None:
    X, y = images64
    theirs = IntegratedGradients(model64).attribute(X.clone(), target=y)
    assert torch.allclose(integrated_gradients(X, y, model64), theirs, atol=1e-5, rtol=0)


def test_integrated_gradients_match_captum_with_baselines(model64: Backbone, images64) -> None:
    X, y = images64
    black = -model64.mean / model64.std
    ig = IntegratedGradients(model64)
    ours = integrated_gradients(X, y, model64, baseline="black", steps=10)
    theirs = ig.attribute(X.clone(), baselines=black.expand_as(X).clone(), target=y, n_steps=10)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)
    custom = torch.rand(1, 3, H, W, dtype=torch.float64)
    ours = integrated_gradients(X, y, model64, baseline=custom, steps=10)
    theirs = ig.attribute(X.clone(), baselines=custom.expand_as(X).clone(), target=y, n_steps=10)
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_integrated_gradients_are_complete(images64) -> None:
    X, y = images64
    # A smooth network (no ReLU kinks), so that 20 Gauss-Legendre points integrate it exactly.
    torch.manual_seed(3)
    smooth = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                           nn.Linear(16, 1000)).double()
    start = torch.rand_like(X)
    attributions = integrated_gradients(X, y, smooth, baseline=start, steps=20)
    with torch.no_grad():
        gain = (smooth(X) - smooth(start)).gather(1, y[:, None])[:, 0]
    assert gain.abs().min() > 1e-3
    assert torch.allclose(attributions.sum(dim=(1, 2, 3)), gain, atol=1e-9, rtol=0)


def test_integrated_gradients_batched_equals_per_image(model64: Backbone, images64) -> None:
    X, y = images64
    batched = integrated_gradients(X, y, model64, steps=5)
    single = integrated_gradients(X[2:3], y[2:3], model64, steps=5)
    assert torch.allclose(batched[2:3], single, atol=1e-12)


def test_black_baseline_of_a_plain_model_needs_mean_and_std(images64) -> None:
    X, y = images64
    plain = nn.Sequential(nn.Flatten(), nn.Linear(3 * H * W, 5)).double()
    with pytest.raises(UserInputError, match="mean and std"):
        integrated_gradients(X, y % 5, plain, baseline="black", steps=2)
    start = resolve_baseline("black", X, plain, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert torch.allclose(start, torch.full_like(X, -2.0))


@pytest.mark.parametrize("call, message", [
    (lambda: integration_rule(10, "simpson"), "Unknown integration method"),
    (lambda: integration_rule(1, "riemann_left"), "at least 2"),
    (lambda: integration_rule(0), "at least 1"),
    (lambda: resolve_baseline("white", torch.zeros(1, 3, 2, 2)), "Unknown baseline"),
    (lambda: resolve_baseline(torch.zeros(5), torch.zeros(1, 3, 2, 2)), "does not fit"),
    (lambda: attribution_map(torch.zeros(1, 3, 2, 2), "median"), "Unknown reduction"),
])
def test_bad_options_are_one_sentence(call, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_integration_rules_integrate_polynomials() -> None:
    for method in INTEGRATION_METHODS:
        weights, alphas = integration_rule(200, method)
        # Captum's trapezoid rule weighs n points spaced 1/(n-1) by 1/n: its weights sum to 1 - 1/n.
        assert sum(weights) == pytest.approx(1.0, abs=1 / 200)
        assert sum(w * a * a for w, a in zip(weights, alphas)) == pytest.approx(1 / 3, abs=1e-2)
    weights, alphas = integration_rule(3)  # Gauss-Legendre with 3 points is exact up to degree 5
    assert sum(w * a**5 for w, a in zip(weights, alphas)) == pytest.approx(1 / 6, abs=1e-12)


def test_attribution_map_reductions() -> None:
    attributions = torch.tensor([1.0, -3.0, 1.0]).view(1, 3, 1, 1)
    assert attribution_map(attributions, "abs_sum").item() == 1.0
    assert attribution_map(attributions, "sum").item() == -1.0
    assert attribution_map(attributions, "positive").item() == 0.0
    assert attribution_map(attributions, "abs_max").item() == 3.0
    assert attribution_map(torch.zeros(2, 3, 4, 5)).shape == (2, 4, 5)


# --- SaliencyMap -------------------------------------------------------------------------------


def _data(tmp_path: Path, labels=None) -> LabeledImageData:
    paths = []
    for index, color in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        path = tmp_path / f"photo{index}.png"
        Image.new("RGB", (40, 32), color).save(path)
        paths.append(str(path))
    return LabeledImageData(images=paths, labels=labels, image_size=16, batch_size=2)


def _trainer(**kwargs) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", **kwargs)


@pytest.mark.parametrize("method", ["vanilla", "smoothgrad", "integrated_gradients"])
def test_module_predicts_every_method(tmp_path: Path, method: str) -> None:
    module = SaliencyMap(backbone=TINY, weights="random", method=method, target="true",
                         samples=2, steps=3)
    batches = _trainer(inference_mode=False).predict(module, datamodule=_data(tmp_path, [1, 2, 3]))
    assert [len(b.names) for b in batches] == [2, 1]
    result = batches[0]
    assert isinstance(result, SaliencyBatch)
    assert result.names == ["photo0", "photo1"]
    assert result.true == [1, 2] and result.target == [1, 2]
    assert result.maps.shape == (2, 16, 16) and (result.maps >= 0).all()
    assert result.pixels.shape == (2, 3, 16, 16)
    assert (result.attributions is not None) == (method == "integrated_gradients")
    assert 0 < result.probability[0] <= 1


def test_module_vanilla_is_the_seed_function(tmp_path: Path) -> None:
    module = SaliencyMap(backbone=TINY, weights="random", method="vanilla", target="predicted")
    data = _data(tmp_path)
    # The Trainer's default inference_mode=True must not break the gradient either.
    result = _trainer().predict(module, datamodule=data)[0]
    pixels = torch.stack([item.pixels for item in data.items[:2]])
    inputs = module.backbone.normalize(pixels)
    with torch.no_grad():
        predicted = module.backbone(inputs).argmax(dim=1)
    assert result.target == predicted.tolist() == result.predicted
    assert torch.allclose(result.maps, compute_saliency_maps(inputs, predicted, module.backbone))


def test_module_explains_a_class_given_by_name(tmp_path: Path) -> None:
    module = SaliencyMap(backbone=TINY, weights="random", target="espresso")
    result = _trainer().predict(module, datamodule=_data(tmp_path))[0]
    assert result.target == [967, 967] and result.true == [None, None]


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "lime"}, "Unknown saliency method"),
    ({"target": "no such class"}, "Unknown class name"),
    ({"target": 1000}, "out of range"),
    ({"target": True}, "quote 'true'"),
    ({"baseline": "white"}, "Unknown baseline"),
    ({"steps": 1, "integration": "riemann_trapezoid"}, "at least 2"),
    ({"noise_level": -1.0}, "noise_level"),
    ({"reduction": "sum"}, "Unknown reduction"),
])
def test_module_rejects_bad_options(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        SaliencyMap(backbone=TINY, weights="random", **kwargs)


def test_module_needs_labels_for_the_true_class(tmp_path: Path) -> None:
    module = SaliencyMap(backbone=TINY, weights="random", target="true")
    with pytest.raises(UserInputError, match="has no label"):
        _trainer().predict(module, datamodule=_data(tmp_path))


# --- the predict command, end to end -----------------------------------------------------------


def _predict(*extra: str) -> int:
    return cli.main(["predict", "--config", str(CONFIG), "--model.backbone", TINY,
                     "--model.weights", "random", "--data.image_size", "32",
                     "--trainer.enable_progress_bar", "false", *extra])


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch) -> Path:
    """Run the command line in tmp_path (runs/ lands there), with pytest's own arguments hidden."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    return tmp_path


def test_predict_command_writes_a_fresh_run_directory(in_tmp_path: Path) -> None:
    tmp_path = in_tmp_path
    assert _predict("--model.samples", "2") == 0
    run = tmp_path / "runs" / "saliency" / "version_0"
    for name in ("chelsea", "coffee", "rocket"):
        assert (run / f"{name}_heatmap.png").is_file()
        assert Image.open(run / f"{name}_overlay.png").size == (32, 32)
        assert np.load(run / f"{name}_saliency.npy").shape == (32, 32)
    assert (run / "sheet_0000.png").is_file() and (run / "config.yaml").is_file()
    rows = (run / "predictions.csv").read_text().splitlines()
    assert rows[1].startswith("chelsea,285,Egyptian cat,") and len(rows) == 4
    assert _predict("--model.method", "integrated_gradients", "--model.steps", "3") == 0
    second = tmp_path / "runs" / "saliency" / "version_1"
    assert np.load(second / "coffee_attributions.npy").shape == (3, 32, 32)
    assert not (run / "coffee_attributions.npy").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model.target", "no such class"], "Unknown class name"),
    (["--data.images", "[{bad}]"], "Not a recognised image file"),
    (["--data.images", "[sample:coffee, sample:rocket]", "--data.labels", "[espresso]"],
     "1 labels for 2 images"),
    (["--data.images", "[{bad}]", "--data.labels", "[seashore]"], "Not a recognised image file"),
])
def test_predict_command_reports_bad_input_in_one_line(in_tmp_path: Path, capsys, extra: list[str],
                                                        message: str) -> None:
    bad = in_tmp_path / "bad.png"
    bad.write_bytes(b"this is not a picture")
    capsys.readouterr()
    assert _predict(*[arg.format(bad=bad) for arg in extra]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]

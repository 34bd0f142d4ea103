"""Tests for lightning_modules.class_visualization: the homework's pieces, the seed function, the
ClassVisualization module and its CLI.

Most tests use a tiny random CNN with the 1000 ImageNet class names at 32 px; one test uses the
real offline EfficientNet-Lite0.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

import cli
from callbacks import ClassReport, ImageWriter
from conftest import two_layer_backbone
from datamodules.classes import ClassListData
from datamodules.images import image_to_tensor, load_image
from lightning_modules.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    imagenet_categories,
    load_backbone,
    register_backbone,
)
from lightning_modules.class_visualization import (
    ClassVisualization,
    GradientAscent,
    blur_image,
    class_file_name,
    create_class_visualization,
    fourier_to_pixels,
    jitter,
    pixel_range,
    random_transforms,
)
from lightning_modules.errors import UserInputError

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "class_visualization.yaml")
TINY = "tiny_class_visualization"


def tiny_backbone(weights: str = "random") -> Backbone:
    """A small random CNN with ImageNet's mean/std and class names (so names resolve)."""
    return two_layer_backbone(TINY, 16, 2, imagenet_categories(), IMAGENET_MEAN, IMAGENET_STD)


register_backbone(TINY, tiny_backbone, "test: tiny random CNN")


@pytest.fixture(scope="module")
def model() -> Backbone:
    return tiny_backbone()


class ZeroGradient(nn.Module):
    """Logits that do not depend on the image: every step leaves the image where it is."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(inputs.shape[0], 1000) + 0 * inputs.sum()


class Linear(nn.Module):
    """Class 0's score is ``sum(weight * image)``: its gradient is ``weight`` wherever it looks."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = torch.randn(3, size, size, generator=torch.Generator().manual_seed(1))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        score = (inputs * self.weight).flatten(1).sum(1, keepdim=True)
        return torch.cat([score, torch.zeros(inputs.shape[0], 999)], dim=1)


# --------------------------------------------------------------------------- the homework's pieces
def test_jitter_is_undone_exactly() -> None:
    images = torch.randn(2, 3, 9, 11)
    shifted = jitter(images, 4, 7)
    assert not torch.equal(shifted, images)
    assert torch.equal(shifted[:, :, 7:, 4:], images[:, :, :-7, :-4])  # right and down
    assert torch.equal(jitter(shifted, -4, -7), images)


def test_the_step_lands_on_the_unjittered_image() -> None:
    # With no gradient the image must come back where it started, not shifted by the jitter.
    start = create_class_visualization(0, ZeroGradient(), num_iterations=0, image_size=16,
                                       generator=torch.Generator().manual_seed(3))
    after = create_class_visualization(0, ZeroGradient(), num_iterations=3, image_size=16,
                                       blur_every=0, max_jitter=5, l2_reg=0,
                                       generator=torch.Generator().manual_seed(3))
    assert torch.equal(after, start)
    # A raw step on a linear score adds lr * weight, shifted back by the jitter the network saw.
    linear = Linear(16)
    low, high = pixel_range(IMAGENET_MEAN, IMAGENET_STD)
    moved = create_class_visualization(0, linear, num_iterations=1, image_size=16, blur_every=0,
                                       max_jitter=5, step="raw", learning_rate=1e-3, l2_reg=0,
                                       generator=torch.Generator().manual_seed(3))
    candidates = [torch.max(torch.min(start + 1e-3 * jitter(linear.weight[None], -ox, -oy),
                                      high), low)
                  for ox in range(6) for oy in range(6)]
    assert min((moved - c).abs().max().item() for c in candidates) < 1e-6


def test_blur_matches_the_homework_scipy_blur() -> None:
    images = torch.randn(2, 3, 10, 7, dtype=torch.float64)
    for sigma in (0.5, 1.7):
        expected = gaussian_filter1d(gaussian_filter1d(images.numpy(), sigma, axis=2),
                                     sigma, axis=3)
        assert np.abs(blur_image(images, sigma).numpy() - expected).max() < 1e-12
    flat = torch.full((1, 3, 6, 6), 0.3)
    assert torch.allclose(blur_image(flat, 0.5), flat)  # a blur keeps constants


def test_images_stay_in_the_valid_pixel_range(model: Backbone) -> None:
    shown: list[int] = []
    images = create_class_visualization([1, 2], model, num_iterations=4, image_size=32,
                                        step="raw", learning_rate=1e4, show_every=2,
                                        on_show=lambda step, images: shown.append(step),
                                        generator=torch.Generator().manual_seed(0))
    assert shown == [0, 1, 3]
    low, high = pixel_range(IMAGENET_MEAN, IMAGENET_STD)
    assert images.shape == (2, 3, 32, 32)
    assert torch.all(images >= low - 1e-6) and torch.all(images <= high + 1e-6)
    assert torch.isclose(images.amin(), low.min(), atol=1e-6)  # the huge step reached the edge
    pixels = model.denormalize(images)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6


def test_normalized_step_length_is_lr_per_image() -> None:
    parameter = torch.zeros(2, 3, 4, 4, requires_grad=True)
    parameter.grad = torch.stack([torch.full((3, 4, 4), 5.0), torch.full((3, 4, 4), -0.01)])
    GradientAscent([parameter], lr=2.0, normalize=True).step()
    assert torch.allclose(parameter.detach().flatten(1).norm(dim=1), torch.tensor([2.0, 2.0]))


def test_fourier_and_transforms_keep_pixels_valid() -> None:
    spectrum = torch.randn(2, 3, 16, 9, 2)
    pixels = fourier_to_pixels(spectrum)
    assert pixels.shape == (2, 3, 16, 16) and 0 <= pixels.min() and pixels.max() <= 1
    images = torch.randn(2, 3, 32, 32, requires_grad=True)
    out = random_transforms(images, torch.zeros(1, 3, 1, 1), torch.Generator().manual_seed(0))
    assert 0.8 * 32 < out.shape[-1] < 1.2 * 44
    out.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_class_file_names() -> None:
    assert class_file_name(130, "flamingo") == "0130_flamingo"
    assert class_file_name(207, "golden retriever") == "0207_golden_retriever"
    assert class_file_name(5, "African crocodile, Nile-ish") == "0005_african_crocodile_nile_ish"


# --------------------------------------------------------------------------- seed vs module
def _fit(tmp_path: Path, classes: list, steps: int, **options) -> ClassVisualization:
    pl.seed_everything(7)
    module = ClassVisualization(backbone=TINY, weights="random", image_size=32, **options)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), callbacks=[ImageWriter(), ClassReport()])
    trainer.fit(module, ClassListData(classes))
    return module


@pytest.mark.parametrize("options", [
    dict(max_jitter=4, blur_every=2, lr=3.0),
    dict(parameterization="fourier", transforms=True, step="adam", lr=0.05),
], ids=["pixel", "fourier"])
def test_seed_function_and_module_make_the_same_image(tmp_path: Path, options: dict) -> None:
    module = _fit(tmp_path, ["tarantula", 948], 5, **options)
    keywords = {"learning_rate" if k == "lr" else k: v for k, v in options.items()}
    expected = create_class_visualization([76, 948], module.backbone, num_iterations=5,
                                          image_size=32, generator=torch.Generator().manual_seed(7),
                                          **keywords)
    with torch.no_grad():
        assert torch.allclose(module.rendered_images(), expected, atol=1e-6)
    assert [slot.name for slot in module.slots] == ["0076_tarantula", "0948_granny_smith"]
    assert len(module.probability_history) == 5
    assert (tmp_path / "classes_sheet.png").is_file()
    assert (tmp_path / "class_probability.png").is_file()


def test_module_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    # The update rule is --model.step; there is no optimizer option to pick L-BFGS with.
    assert _cli("--model.optimizer", "lbfgs") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "optimizer" in errors[0]
    with pytest.raises(UserInputError, match="parameterization"):
        ClassVisualization(backbone=TINY, weights="random", parameterization="wavelet")
    with pytest.raises(UserInputError, match="l2_reg"):
        ClassVisualization(backbone=TINY, weights="random", l2_reg=-1)


# --------------------------------------------------------------------------- the CLI
def _cli(*extra: str) -> int:
    return cli.main(["fit", "--config", CONFIG, "--model.backbone", TINY, "--model.weights",
                     "random", "--model.image_size", "32", "--trainer.max_steps", "3",
                     # The judge (EfficientNet-Lite2) has its own test (test_maco.py).
                     "--model.judge", "null", "--trainer.enable_progress_bar", "false", *extra])


def test_cli_end_to_end_writes_a_fresh_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # metrics.csv gets a row every log_every_n_steps steps (10 by default): here every step.
    assert _cli("--data.classes", "[flamingo, 948]", "--trainer.log_every_n_steps", "1") == 0
    assert _cli("--data.classes", "130") == 0
    run = tmp_path / "runs" / "class_visualization" / "version_0"
    for name in ("0130_flamingo", "0948_granny_smith"):
        assert tensor_size(run / f"{name}.png") == (3, 32, 32)
        assert (run / f"{name}_sheet.png").is_file()
    for name in ("classes_sheet.png", "class_probability.png", "metrics.csv", "config.yaml"):
        assert (run / name).is_file()
    with open(run / "metrics.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("target_prob")]
    assert len(rows) == 3
    assert all(0 < float(row["target_prob/0130_flamingo"]) < 1 for row in rows)
    assert (tmp_path / "runs" / "class_visualization" / "version_1" / "0130_flamingo.png").is_file()


def test_cli_homework_preset_takes_raw_steps(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    preset = str(Path(CONFIG).parent / "cs231n" / "class_visualization.yaml")
    assert _cli("--config", preset, "--model.backbone", TINY, "--model.image_size", "32",
                "--trainer.max_steps", "2", "--data.classes", "[76]") == 0
    saved = (tmp_path / "runs" / "class_visualization" / "version_0" / "config.yaml").read_text()
    assert "step: raw" in saved and "lr: 25.0" in saved and "init_std: 1.0" in saved


def tensor_size(path: Path) -> tuple[int, ...]:
    return tuple(image_to_tensor(load_image(path)).shape)


@pytest.mark.parametrize("classes, message", [
    ("[1000]", "Class index 1000 is out of range"),
    ("[76, notaclassname]", "Unknown class name 'notaclassname'"),
    ("[retriever]", "ambiguous"),
    ("[-3]", "negative"),
])
def test_cli_bad_input_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    classes: str, message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert _cli("--data.classes", classes) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and errors[0].endswith(".")
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the real network
def test_real_network_recognises_its_class_pictures() -> None:
    # The default config's recipe (Fourier, Lucent's transforms, normalized step), short and small.
    efficientnet = load_backbone("efficientnet_lite0")
    targets = [78, 130]  # tick, flamingo
    images = create_class_visualization(targets, efficientnet, num_iterations=20, image_size=128,
                                        parameterization="fourier", transforms=True,
                                        generator=torch.Generator().manual_seed(0))
    pixels = efficientnet.denormalize(images).clamp(0, 1).mul(255).round().div(255)  # 8-bit
    with torch.no_grad():
        probabilities = efficientnet(efficientnet.normalize(pixels)).softmax(1)
    assert probabilities.argmax(1).tolist() == targets
    assert probabilities[[0, 1], targets].min() > 0.9


def test_cli_class_config_takes_short_names_and_class_paths_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The shipped config names MACO and its crops by class_path; the older flat options give
    # the same picture, and a short name replaces the config's object whole.
    monkeypatch.chdir(tmp_path)
    assert _cli("--data.classes", "[130]", "--model.judge", "null") == 0
    assert _cli("--data.classes", "[130]", "--model.judge", "null", "--model.parameterization",
                "maco", "--model.contrast", "2.0", "--model.transforms", "crops",
                "--model.crops", "4", "--model.crop_noise", "0.05") == 0
    assert _cli("--data.classes", "[130]", "--model.judge", "null", "--model.parameterization",
                "fourier", "--model.transforms", "lucent", "--model.step", "normalized",
                "--model.lr", "8") == 0
    runs = tmp_path / "runs" / "class_visualization"
    # The older flat options still set the config's objects (the README's --model.contrast).
    assert _cli("--data.classes", "[130]", "--model.judge", "null", "--model.contrast", "2.0",
                "--model.crops", "4") == 0
    pictures = [(runs / f"version_{n}" / "0130_flamingo.png").read_bytes() for n in range(4)]
    assert pictures[0] == pictures[1] == pictures[3] and pictures[2] != pictures[0]
    # An option the chosen variant lacks is refused, in one sentence (exit 1).
    assert _cli("--data.classes", "[130]", "--model.parameterization", "pixel",
                "--model.contrast", "2.0") == 1

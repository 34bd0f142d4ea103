"""Tests for MACO (phase-only optimization with a photo's amplitude), its random crops, and the
recognition report: a second network's verdict on class pictures, whole and in parts."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from callbacks import ClassReport, ImageWriter
from conftest import two_layer_backbone
from datamodules.classes import ClassListData
from datamodules.images import image_to_tensor, load_image, resize_shorter_side
from lightning_modules.backbones import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    imagenet_categories,
    load_backbone,
    register_backbone,
)
from lightning_modules.class_visualization import ClassVisualization, create_class_visualization
from lightning_modules.class_visualization.functional import CropViews
from lightning_modules.class_visualization.recognition import (
    half_area_crops,
    luminance_contrast,
    recognise,
)
from lightning_modules.errors import UserInputError
from lightning_modules.image_optimization.maco import (
    SPECTRUM_SIDE,
    MacoImage,
    natural_amplitude,
    resized_amplitude,
)
from lightning_modules.image_optimization.parameterizations import COLOR_CORRELATION
from lightning_modules.image_optimization.transforms import random_crops

TINY = "tiny_maco"
register_backbone(TINY, lambda weights="random": two_layer_backbone(
    TINY, 16, 2, imagenet_categories(), IMAGENET_MEAN, IMAGENET_STD), "test: tiny random CNN")
ZERO = torch.zeros(1, 3, 1, 1)
ONE = torch.ones(1, 3, 1, 1)


# --------------------------------------------------------------------------- the amplitude
def test_natural_amplitude_falls_with_frequency_like_a_photo() -> None:
    amplitude = natural_amplitude()
    assert amplitude.shape == (3, SPECTRUM_SIDE, SPECTRUM_SIDE // 2 + 1)
    low, high = amplitude[:, 1:8, 1:8].mean(), amplitude[:, 96:128, 96:128].mean()
    assert low > 20 * high  # photos put their energy in broad shapes (about 1/f)


def test_picture_keeps_the_fixed_amplitude_whatever_the_phase() -> None:
    maco = MacoImage(contrast=1.5)
    phase = maco.start(2, 64, 64, ZERO, ONE, torch.Generator().manual_seed(0))
    pixels = maco.to_pixels(phase * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1), ZERO, ONE)
    assert pixels.shape == (2, 3, 64, 64) and 0 < pixels.min() and pixels.max() < 1
    # Undo the sigmoid and the colour correlation: what is left has the photos' amplitude.
    decorrelated = torch.einsum("nchw,dc->ndhw", torch.logit(pixels.double()) / 1.5,
                                torch.linalg.inv(COLOR_CORRELATION.double()))
    spectrum = torch.fft.rfft2(decorrelated, norm="ortho").abs()
    expected = resized_amplitude(natural_amplitude(), 64, 64).double()
    for picture in spectrum:
        # Row and column 0 and the last column hold frequencies whose phase a real picture
        # cannot choose freely (they are their own mirror image): left out.
        ratio = (picture / expected)[:, 1:, 1:-1]
        assert ratio.std() / ratio.mean() < 1e-3
    assert not torch.allclose(pixels[0], pixels[1], atol=0.05)  # the phases differ


def test_encoding_a_photo_keeps_its_layout() -> None:
    photo = image_to_tensor(resize_shorter_side(load_image("sample:chelsea"), 64))[None, :, :, :64]
    maco = MacoImage()
    picture = maco.to_pixels(maco.encode(photo, ZERO, ONE), ZERO, ONE)
    other = maco.to_pixels(maco.start(1, 64, 64, ZERO, ONE, torch.Generator().manual_seed(1)),
                           ZERO, ONE)

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.mean(1).flatten() - a.mean(), b.mean(1).flatten() - b.mean()
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert correlation(picture, photo) > 0.5 > abs(correlation(other, photo)) + 0.3


def test_amplitude_from_a_file_and_from_photos(tmp_path: Path) -> None:
    torch.save(torch.ones(3, 32, 17), tmp_path / "flat.pt")
    assert torch.equal(natural_amplitude(str(tmp_path / "flat.pt")), torch.ones(3, 32, 17))
    photos = tmp_path / "photos"
    photos.mkdir()
    load_image("sample:coffee").save(photos / "coffee.png")
    assert natural_amplitude(str(photos)).shape == (3, SPECTRUM_SIDE, SPECTRUM_SIDE // 2 + 1)
    (tmp_path / "bad.pt").write_text("not a tensor")
    torch.save(torch.ones(4, 4), tmp_path / "flat2d.pt")
    for name, message in (("bad.pt", "not a tensor saved"), ("flat2d.pt", "must hold"),
                          ("missing.pt", "not found")):
        with pytest.raises(UserInputError, match=message):
            natural_amplitude(str(tmp_path / name))


# --------------------------------------------------------------------------- crops
def test_random_crops_are_crops_of_the_canvas_with_flips() -> None:
    canvas = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    views = random_crops(canvas, 5, 16, (1.0, 1.0), 0.0, torch.Generator().manual_seed(0))
    assert views.shape == (10, 3, 16, 16)
    whole = torch.nn.functional.avg_pool2d(canvas, 2)  # a full crop halved: 2x2 means
    for index, view in enumerate(views):
        owner = whole[index // 5]
        assert torch.allclose(view, owner, atol=1e-3) or torch.allclose(view, owner.flip(-1),
                                                                         atol=1e-3)
    flipped = [not torch.allclose(v, whole[i // 5], atol=1e-3) for i, v in enumerate(views)]
    assert 0 < sum(flipped) < 10


def test_a_pictures_crops_do_not_depend_on_its_batch() -> None:
    # Chunks and processes hold different batches: a picture must see the same crops in any.
    canvas = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    together = random_crops(canvas, 3, 16, (0.4, 1.0), 0.1, torch.Generator().manual_seed(0))
    alone = random_crops(canvas[2:3], 3, 16, (0.4, 1.0), 0.1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(together[6:9], alone)


def test_random_crops_reach_every_part_and_pass_gradients() -> None:
    canvas = torch.zeros(1, 3, 40, 40, requires_grad=True)
    random_crops(canvas, 64, 20, (0.3, 0.6), 0.1, torch.Generator().manual_seed(0)).sum().backward()
    assert canvas.grad.shape == canvas.shape
    covered = (canvas.grad[0, 0] > 0).float()
    assert covered.mean() > 0.9  # 64 crops of 30-60 % of the side cover nearly all of it


def test_crop_options_are_checked() -> None:
    for options, message in ((dict(count=0), "crops must be"), (dict(scale=(0.5, 1.2)),
                             "crop_scale"), (dict(noise=-1), "crop_noise"),
                             (dict(size=4), "crop_size")):
        with pytest.raises(UserInputError, match=message):
            CropViews(**options).check()


# --------------------------------------------------------------------------- recognition
def test_luminance_contrast_and_half_area_crops() -> None:
    halves = torch.zeros(1, 3, 10, 10)
    halves[..., 5:] = 1
    contrast = luminance_contrast(torch.cat([halves, torch.full((1, 3, 10, 10), 0.5)]))
    assert torch.allclose(contrast, torch.tensor([1.0, 0.0]), atol=1e-6)
    crops = half_area_crops(torch.rand(2, 3, 100, 100), 3, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 71, 71)  # half the area: sides / sqrt(2)


class LeftHalfBright(nn.Module):
    """Class 1 when the left half is brighter than the right, else class 2."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        half = inputs.shape[-1] // 2
        margin = inputs[..., :half].mean((1, 2, 3)) - inputs[..., half:].mean((1, 2, 3))
        logits = torch.zeros(len(inputs), 1000)
        logits[:, 1], logits[:, 2] = 10 * margin, -10 * margin
        return logits


def test_recognise_counts_crops_and_flips_as_the_judge_sees_them() -> None:
    picture = torch.zeros(1, 3, 64, 64)
    picture[..., :32] = 1  # bright left half: class 1 unless a crop is mirrored
    verdict, = recognise(picture, [1], LeftHalfBright(), lambda x: x, 64, crops=16, seed=0)
    assert verdict.judge_rank == 1 and verdict.judge_prob > 0.9
    generator = torch.Generator().manual_seed(0)
    crops = half_area_crops(picture, 16, generator)
    # The crops that keep the bright side left are the unmirrored ones.
    expected = (crops[..., :22].mean((1, 2, 3)) > crops[..., -22:].mean((1, 2, 3))).float().mean()
    assert 0 < verdict.crop_top1 < 1 and verdict.crop_top1 == pytest.approx(float(expected))
    assert verdict.contrast == pytest.approx(1.0)
    wrong, = recognise(picture, [2], LeftHalfBright(), lambda x: x, 64, crops=16, seed=0)
    # Class 2 scores below the 998 classes at 0: last.
    assert wrong.judge_rank == 1000 and wrong.crop_top1 == pytest.approx(1 - verdict.crop_top1)


# --------------------------------------------------------------------------- the module
def _fit(tmp_path: Path, steps: int, **options) -> ClassVisualization:
    pl.seed_everything(3)
    module = ClassVisualization(backbone=TINY, weights="random", image_size=32, **options)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path), callbacks=[ImageWriter(), ClassReport()])
    trainer.fit(module, ClassListData([76, 948]))
    return module


def test_module_with_maco_and_crops_matches_the_seed_function(tmp_path: Path) -> None:
    options = dict(parameterization="maco", transforms="crops", step="adam", lr=0.5,
                   max_jitter=32, contrast=2.0)
    module = _fit(tmp_path, 4, crops=3, crop_size=24, **options)
    expected = create_class_visualization(
        [76, 948], module.backbone, num_iterations=4, image_size=32, blur_every=0,
        generator=torch.Generator().manual_seed(3), crops=CropViews(3, 24),
        learning_rate=0.5, parameterization=MacoImage(contrast=2.0),
        **{k: v for k, v in options.items() if k not in ("lr", "contrast", "parameterization")})
    with torch.no_grad():
        assert torch.allclose(module.rendered_images(), expected, atol=1e-5)


def test_judge_writes_recognition_csv_and_titles(tmp_path: Path) -> None:
    module = _fit(tmp_path, 2, parameterization="maco", transforms="crops", step="adam", lr=0.5,
                  judge=TINY, judge_crops=4)
    with open(tmp_path / "recognition.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["0076_tarantula", "0948_granny_smith"]
    judge = module.judge()
    for row, index in zip(rows, (76, 948)):
        assert row["judge"] == TINY and int(row["class_index"]) == index
        assert 1 <= int(row["judge_rank"]) <= 1000 and 0 <= float(row["crop_top1"]) <= 1
        pixels = image_to_tensor(load_image(tmp_path / f"{row['name']}.png"))[None]
        again, = recognise(pixels, [index], judge, judge.normalize, 224, 4,
                           seed=0 if index == 76 else 1)
        assert float(row["judge_prob"]) == pytest.approx(again.judge_prob, abs=1e-3)
        assert float(row["contrast"]) == pytest.approx(again.contrast, abs=1e-3)
    assert "crops" in module.panel_title(0) and "contrast" in module.panel_title(0)
    # The judge is not part of the module: checkpoints neither carry it nor need it.
    assert not [key for key in module.state_dict() if "judge" in key]
    assert (tmp_path / "classes_sheet.png").is_file()


def test_judge_and_transform_options_are_checked() -> None:
    for options, message in ((dict(judge="nonet"), "Unknown judge 'nonet'"),
                             (dict(transforms="mirror"), "transforms"),
                             (dict(parameterization="maco", contrast=0), "contrast must be"),
                             (dict(judge_crops=0), "judge_crops"),
                             (dict(parameterization="maco", amplitude="no_such.pt"),
                              "Amplitude file not found")):
        with pytest.raises(UserInputError, match=message):
            ClassVisualization(backbone=TINY, weights="random", **options)


# --------------------------------------------------------------------------- a real network
def test_maco_pictures_have_a_photos_contrast_where_fourier_ones_are_grey() -> None:
    efficientnet = load_backbone("efficientnet_lite0")
    targets = [130, 113]  # flamingo, snail

    def draw(**options) -> torch.Tensor:
        images = create_class_visualization(targets, efficientnet, num_iterations=20,
                                            image_size=112, blur_every=0,
                                            generator=torch.Generator().manual_seed(0), **options)
        return efficientnet.denormalize(images).clamp(0, 1)

    # The default config's recipe, shorter and smaller.
    maco = draw(parameterization=MacoImage(contrast=2.0), transforms="crops", step="adam",
                learning_rate=0.25, crops=CropViews(3, 112), max_jitter=16, l2_reg=0.0)
    fourier = draw(parameterization="fourier", transforms=True)
    with torch.no_grad():
        probabilities = efficientnet(efficientnet.normalize(maco.mul(255).round().div(255)))
    # After 20 small steps its own network has each class among its top 5 in the 8-bit picture
    # (the default config's 64 steps at 224 px reach p >= 0.999: benchmarks/class_recognition.py).
    top5 = probabilities.topk(5, dim=1).indices.tolist()
    assert all(target in best for target, best in zip(targets, top5)), top5
    contrast, grey = luminance_contrast(maco), luminance_contrast(fourier)
    assert contrast.min() > 0.7 and contrast.mean() > grey.mean() + 0.05, (contrast, grey)

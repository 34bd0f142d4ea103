"""Tests for callbacks.saliency_writer: the files it writes and how it draws maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from callbacks.saliency_writer import SaliencyWriter, colorize, mass_area, overlay, scale_map
from lightning_modules.backbones import imagenet_categories
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import GradCAM, SaliencyBatch


def _batch(attributions: bool = False) -> SaliencyBatch:
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 8, 10, generator=generator)
    return SaliencyBatch(
        names=["chelsea", "photo"],
        pixels=torch.rand(2, 3, 8, 10, generator=generator),
        maps=maps,
        attributions=torch.randn(2, 3, 8, 10, generator=generator) if attributions else None,
        predicted=[285, 967],
        probability=[0.36, 0.5],
        target=[285, 967],
        true=[285, None],
        categories=imagenet_categories(),
        target_probability=[0.36, 0.05],
    )


def _writer(directory: Path) -> SaliencyWriter:
    writer = SaliencyWriter()
    writer.directory = directory
    return writer


def test_writes_every_file_of_a_batch(tmp_path: Path) -> None:
    batch = _batch(attributions=True)
    written = _writer(tmp_path).write_batch(batch, "sheet_0000.png")
    assert all(path.is_file() for path in written)
    for name in ("chelsea", "photo"):
        assert Image.open(tmp_path / f"{name}_heatmap.png").size == (10, 8)
        assert Image.open(tmp_path / f"{name}_overlay.png").size == (10, 8)
        assert np.load(tmp_path / f"{name}_attributions.npy").shape == (3, 8, 10)
    raw = np.load(tmp_path / "chelsea_saliency.npy")
    assert raw.shape == (8, 10) and raw.dtype == np.float32
    assert np.allclose(raw, batch.maps[0].numpy())  # unscaled
    sheet = Image.open(tmp_path / "sheet_0000.png")
    assert sheet.width > sheet.height / 3 * 1.5  # two columns side by side, three rows
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    areas = [f"{mass_area(m):.4f}" for m in batch.maps]
    assert rows[0].endswith(",target_probability,half_mass_area")
    assert rows[1:] == [
        f"chelsea,285,Egyptian cat,285,Egyptian cat,0.3600,285,Egyptian cat,0.3600,{areas[0]}",
        f"photo,,unknown,967,espresso,0.5000,967,espresso,0.0500,{areas[1]}"]


def test_mass_area_tells_a_spot_from_a_glow() -> None:
    spot = torch.zeros(10, 10)
    spot[4, 4], spot[4, 5] = 3.0, 1.0  # half the mass in the brightest pixel
    assert mass_area(spot) == 0.01
    assert mass_area(torch.ones(10, 10)) == 0.5
    assert mass_area(torch.zeros(4, 4)) == 1.0


def test_sheet_titles_say_where_the_mass_is_and_warn_of_an_unsure_class() -> None:
    batch, writer = _batch(), SaliencyWriter(low_probability=0.2)
    text, color = writer.map_title(batch, 0)
    assert text == f"map for: Egyptian cat\nhalf the mass in {100 * mass_area(batch.maps[0]):.0f} % of it"
    assert color == "black"
    text, color = writer.map_title(batch, 1)  # p = 0.05
    assert "p=0.05: the network is unsure" in text and color == "darkorange"


def test_class_activation_maps_are_blended_over_the_photo_in_jet(tmp_path: Path) -> None:
    batch = _batch()
    # As a Grad-CAM run labels its batches: the method says how its maps are drawn.
    batch.method, batch.class_activation_map = GradCAM.shorthand, GradCAM.class_activation_map
    _writer(tmp_path).write_batch(batch, "sheet_0000.png")
    scaled = scale_map(batch.maps[0])
    expected = 0.5 * batch.pixels[0] + 0.5 * colorize(scaled, "jet")
    written = torch.from_numpy(np.asarray(Image.open(tmp_path / "chelsea_overlay.png"))
                               .astype(np.float32) / 255).permute(2, 0, 1)[:3]
    assert torch.allclose(written, expected, atol=1 / 255 + 1e-6)
    heat = np.asarray(Image.open(tmp_path / "chelsea_heatmap.png"))[..., :3] / 255
    assert np.allclose(heat, colorize(scaled, "jet").permute(1, 2, 0).numpy(), atol=1 / 255 + 1e-6)


def test_never_overwrites(tmp_path: Path) -> None:
    _writer(tmp_path).write_batch(_batch(), "sheet_0000.png")
    before = (tmp_path / "chelsea_saliency.npy").read_bytes()
    with pytest.raises(UserInputError, match="Refusing to overwrite"):
        _writer(tmp_path).write_batch(_batch(), "sheet_0001.png")
    assert (tmp_path / "chelsea_saliency.npy").read_bytes() == before


def test_scale_map_clips_outliers_to_one() -> None:
    saliency = torch.ones(40, 40)
    saliency[0, 0] = 1000.0  # one huge gradient must not leave the rest black
    scaled = scale_map(saliency, clip_percentile=99.0)
    assert scaled.max() == 1 and scaled[5, 5] == 1
    assert scale_map(saliency, clip_percentile=100.0)[5, 5] == pytest.approx(0.001)
    assert torch.equal(scale_map(torch.zeros(3, 4)), torch.zeros(3, 4))


def test_colorize_and_overlay() -> None:
    scaled = torch.tensor([[0.0, 1.0]])
    heat = colorize(scaled, "gray")
    assert heat.shape == (3, 1, 2) and heat[:, 0, 0].max() == 0 and heat[:, 0, 1].min() == 1
    photo = torch.full((3, 1, 2), 0.5)
    mixed = overlay(photo, scaled, "gray", dim=0.4)
    assert torch.allclose(mixed[:, 0, 0], torch.full((3,), 0.3))  # dimmed photo where map is 0
    assert torch.allclose(mixed[:, 0, 1], torch.ones(3))  # the colormap where it is 1


@pytest.mark.parametrize("kwargs, message", [
    ({"colormap": "no_such_map"}, "Unknown colormap"),
    ({"clip_percentile": 0}, "clip_percentile"),
])
def test_bad_options(kwargs, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        SaliencyWriter(**kwargs)

"""The colour distance between a picture and a painting (sliced Wasserstein in CIELAB)."""

from __future__ import annotations

import torch

from lightning_modules.style_transfer.functional import (chroma_noise, color_distance, luma_noise,
                                                       rgb_to_lab)


def test_lab_of_known_colours() -> None:
    white, black, red = (torch.tensor(c, dtype=torch.float32)[:, None, None]
                         for c in ([1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]))
    torch.testing.assert_close(rgb_to_lab(white).flatten(), torch.tensor([100.0, 0.0, 0.0]),
                               atol=0.05, rtol=0)
    torch.testing.assert_close(rgb_to_lab(black).flatten(), torch.zeros(3), atol=0.05, rtol=0)
    # sRGB red is L 53.24, a 80.09, b 67.20 (the usual D65 tables).
    torch.testing.assert_close(rgb_to_lab(red).flatten(), torch.tensor([53.24, 80.09, 67.20]),
                               atol=0.1, rtol=0)


def test_a_picture_is_at_distance_zero_from_itself_and_its_pixels_shuffled() -> None:
    picture = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert color_distance(picture, picture) == 0
    shuffled = picture.flatten(1)[:, torch.randperm(64 * 64)].reshape(3, 64, 64)
    # Resizing mixes neighbours, so only nearly: far below any real difference of palettes.
    assert color_distance(picture, shuffled, size=64) < 0.5


def test_grey_against_red_is_far_and_closer_colours_are_closer() -> None:
    grey = torch.full((3, 32, 48), 0.5)
    red = torch.zeros(3, 40, 40)
    red[0] = 0.9
    pink = torch.full((3, 32, 48), 0.5)
    pink[0] = 0.7  # halfway from grey to the red
    far, near = color_distance(grey, red), color_distance(grey, pink)
    assert far > 30 and near < far
    assert abs(color_distance(red, grey) - far) < 1e-4


def test_luma_noise_counts_light_flecks_and_not_smooth_light_or_colour_confetti() -> None:
    ramp = torch.linspace(0, 1, 64)[None, None, :].expand(3, 64, 64).clone()
    flecked = ramp.clone()
    flecked[:, ::7, ::5] = 1.0  # single white pixels, as along the strong edges of a bad run
    # Colour confetti of one luminance: I and Q change, Y does not.
    confetti = torch.full((3, 64, 64), 0.5)
    confetti[:, ::2, ::2] += torch.tensor([0.1, -0.0510, 0.0])[:, None, None]
    assert luma_noise(ramp) < 1e-4 < 0.005 < luma_noise(flecked)
    assert luma_noise(confetti) < 1e-3 < chroma_noise(confetti)

"""The colour-detail term: no more fine colour detail than the painting has, as a limit after
each step (the default) or as a loss (one-sided quantiles of chroma_detail)."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.backbones import load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.style_transfer import StyleTransfer
from lightning_modules.style_transfer.functional import chroma_noise
from lightning_modules.style_transfer.style_losses import ExcessOverQuantiles
from lightning_modules.style_transfer.terms import ChromaDetailTerm
from lightning_modules.style_transfer.terms.color import chroma_detail


class _Job:
    def __init__(self, style: torch.Tensor) -> None:
        self.styles, self.style_blend_weights, self.size = [style], [1.0], tuple(style.shape[-2:])


def _term_and_target(style: torch.Tensor, **options):
    backbone = load_backbone("tiny", "random")
    term = ChromaDetailTerm(**{"weight": 1.0, **options})
    term.bind(backbone, wrap=False)
    return term, term.target([_Job(style)], [tuple(style.shape[-2:])], backbone,
                             torch.device("cpu")), backbone


def _smooth_picture(height: int = 24, width: int = 32) -> torch.Tensor:
    """A smooth colour ramp: red to blue across, darker down."""
    across = torch.linspace(0, 1, width)[None, None, :]
    down = torch.linspace(0.9, 0.5, height)[None, :, None]
    return torch.cat([(1 - across) * down, 0.3 * down.expand(1, height, width),
                      across * down]).expand(3, height, width).clone()


def _speckled(pixels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """``pixels`` with a ``fraction`` of them swapped for random colours (confetti)."""
    generator = torch.Generator().manual_seed(seed)
    specks = torch.rand(pixels.shape[-2:], generator=generator) < fraction
    colours = torch.rand(pixels.shape, generator=generator)
    return torch.where(specks, colours, pixels)


def test_the_excess_counts_only_values_above_the_styles_quantiles() -> None:
    criterion = ExcessOverQuantiles()
    style = torch.arange(8.0).reshape(1, 1, 2, 4)  # quantiles 0..7
    target = [[(1.0, criterion.target(style))]]
    below = style / 2
    above = style.clone()
    above[0, 0, 1, 3] = 11.0  # the largest value exceeds the style's largest by 4
    assert float(criterion.loss(style, target)) == 0.0
    assert float(criterion.loss(below, target)) == 0.0  # less detail than the style: free
    # The mean over the 8 sorted values of max(0, x - y)^2: only the last, 4^2 / 8.
    assert float(criterion.loss(above, target)) == pytest.approx(16 / 8)
    above.requires_grad_(True)
    criterion.loss(above, target).sum().backward()
    assert torch.count_nonzero(above.grad) == 1


def test_chroma_detail_sees_colour_specks_not_smooth_colour_or_grey_flecks() -> None:
    smooth = _smooth_picture()
    speck = smooth.clone()
    speck[:, 12, 16] = torch.tensor([0.1, 0.9, 0.1])  # one green pixel
    detail = {name: chroma_detail(p[None])[1] for name, p in
              (("smooth", smooth), ("speck", speck))}
    assert detail["smooth"].shape == (1, 1, 24, 32)
    # Inside, the ramp is its own local mean (the replicated edges are not quite).
    assert float(detail["smooth"][..., 1:-1, 1:-1].max()) < 1e-3
    assert float(detail["speck"][0, 0, 12, 16]) > 0.3
    gentle = torch.full((3, 24, 32), 0.5)
    gentle[:, 10, 10] = 0.9  # a white fleck on grey: no chrominance at all
    assert float(chroma_detail(gentle[None])[1].max()) < 1e-5


def test_against_a_smooth_painting_specks_cost_and_descending_removes_them() -> None:
    style = _smooth_picture()
    term, target, backbone = _term_and_target(style)
    smooth = term.loss(backbone.normalize(_smooth_picture()[None]), {}, target, step=0)
    speckled = _speckled(_smooth_picture(), 0.05, seed=1)
    assert float(smooth) < 1e-8 < float(term.loss(backbone.normalize(speckled[None]), {},
                                                      target, step=0))
    pixels = speckled[None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([pixels], lr=0.01)
    for step in range(100):
        optimizer.zero_grad()
        term.loss(backbone.normalize(pixels.clamp(0, 1)), {}, target, step).sum().backward()
        optimizer.step()
    assert chroma_noise(pixels[0].detach().clamp(0, 1)) < 0.3 * chroma_noise(speckled)


def test_against_a_painting_with_as_much_colour_detail_the_picture_pays_nothing() -> None:
    # A painting of colour strokes: the picture's own strokes, as fine, are free.
    painting = _speckled(_smooth_picture(48, 48), 0.2, seed=2)
    picture = _speckled(_smooth_picture(48, 48), 0.2, seed=3)
    term, target, backbone = _term_and_target(painting)
    finer = _speckled(_smooth_picture(48, 48), 0.05, seed=4)
    assert float(term.loss(backbone.normalize(finer[None]), {}, target, step=0)) == 0.0
    # Same kind of strokes, other places: next to nothing against the total variation's cost.
    as_much = float(term.loss(backbone.normalize(picture[None]), {}, target, step=0))
    more = _speckled(_speckled(_smooth_picture(48, 48), 0.2, seed=3), 0.3, seed=5)
    assert as_much < 0.1 * float(term.loss(backbone.normalize(more[None]), {}, target, step=0))


def test_the_limit_takes_the_specks_down_to_the_paintings_detail_and_keeps_the_luminance(
        ) -> None:
    smooth_painting = _smooth_picture()
    term, target, _ = _term_and_target(smooth_painting, weight=0.0)
    speckled = _speckled(_smooth_picture(), 0.05, seed=1)[None]
    once = term.project(speckled, target)
    # A speck's neighbourhood mean holds the speck too, so one pass takes part of it away; the
    # run applies the limit after every step.
    limited = once
    for _ in range(9):
        limited = term.project(limited, target)
    assert chroma_noise(once[0]) < 0.6 * chroma_noise(speckled[0])
    assert chroma_noise(limited[0]) < 0.2 * chroma_noise(speckled[0])
    luminance = torch.tensor([0.299, 0.587, 0.114])[:, None, None]
    assert torch.allclose((limited[0] * luminance).sum(0), (speckled[0] * luminance).sum(0),
                          atol=1e-5)
    # Against a painting with as much colour detail, a picture with less is left as it is.
    strokes = _speckled(_smooth_picture(), 0.2, seed=2)
    term, target, _ = _term_and_target(strokes, weight=0.0)
    assert torch.allclose(term.project(speckled, target), speckled, atol=1e-6)
    assert ChromaDetailTerm(weight=1.0, limit=False).project(speckled, target) is None


def test_style_transfer_limits_the_colour_detail_after_each_step_without_a_loss_column(
        content_image, tmp_path) -> None:
    from datamodules.images import image_to_tensor, tensor_to_image
    from lightning_modules.api import stylize

    # A smooth painting: the limit keeps the tiny random network's colour confetti out.
    smooth = tmp_path / "smooth.png"
    tensor_to_image(_smooth_picture(32, 32)).save(smooth)
    options = dict(image_size=32, save_dir=None, backbone="tiny", weights="random",
                   content_layers=[2], style_layers=[0, 1], style_weights=[1.0, 1.0],
                   max_steps=20, lr=0.1, color_weight=0.0, chroma_tv_weight=0.0,
                   scales=None, shift=0)
    free = stylize(content_image, smooth, chroma_detail_limit=False, **options)
    limited = stylize(content_image, smooth, chroma_detail_limit=True, **options)
    assert "chroma_detail_loss" not in limited.info["losses"][-1]
    assert chroma_noise(image_to_tensor(limited)) < 0.7 * chroma_noise(image_to_tensor(free))


def test_style_transfer_adds_the_term_by_its_weight_or_limit_unless_colours_are_preserved(
        ) -> None:
    options = dict(backbone="tiny", weights="random", content_layers=[2], style_layers=[0],
                   style_weights=[1.0])
    assert "chroma_detail" not in StyleTransfer(**options).term_names
    assert "chroma_detail" in StyleTransfer(chroma_detail_weight=1.0, **options).term_names
    assert "chroma_detail" in StyleTransfer(chroma_detail_limit=True, **options).term_names
    assert "chroma_detail" not in StyleTransfer(chroma_detail_limit=True, preserve_colors=True,
                                                **options).term_names
    with pytest.warns(UserWarning, match="pixel pictures only"):
        StyleTransfer(chroma_detail_limit=True, parameterization="fourier", **options)
    with pytest.raises(UserInputError, match="chroma_detail_weight"):
        StyleTransfer(chroma_detail_weight=-1.0, **options)
    # What is no number at all is one sentence too (it was a TypeError from Python).
    with pytest.raises(UserInputError, match="color_weight must be zero or positive, got None"):
        StyleTransfer(color_weight=None, **options)
    with pytest.raises(UserInputError, match="TextureSynthesis has no option chroma_detail_limit"):
        from lightning_modules.style_transfer import TextureSynthesis
        TextureSynthesis(chroma_detail_limit=True, **{k: v for k, v in options.items()
                                                       if k != "content_layers"})

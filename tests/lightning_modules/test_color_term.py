"""The colour term: the picture takes the style's palette and values; preserve_colors keeps the
photo's; L-BFGS gets its own learning rate."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from datamodules import StyleTransferData
from datamodules.images import image_to_tensor, load_image, tensor_to_image
from lightning_modules.backbones import load_backbone
from lightning_modules.style_transfer import StyleTransfer
from lightning_modules.image_optimization.resize import resize_pixels
from lightning_modules.style_transfer.functional import color_distance, keep_colors, rgb_to_lab
from lightning_modules.style_transfer.terms import ColorTerm


class _Job:
    def __init__(self, style: torch.Tensor) -> None:
        self.styles, self.style_blend_weights, self.size = [style], [1.0], tuple(style.shape[-2:])


def _term_and_target(style: torch.Tensor, **options):
    backbone = load_backbone("tiny", "random")
    term = ColorTerm(weight=1.0, **options)
    term.bind(backbone, wrap=False)
    return term, term.target([_Job(style)], [tuple(style.shape[-2:])], backbone,
                             torch.device("cpu")), backbone


def test_the_style_itself_scores_zero_and_another_palette_more() -> None:
    style = torch.rand(3, 24, 32, generator=torch.Generator().manual_seed(0))
    term, target, backbone = _term_and_target(style)
    itself = term.loss(backbone.normalize(style[None]), {}, target, step=0)
    grey = term.loss(backbone.normalize(torch.full((1, 3, 24, 32), 0.5)), {}, target, step=0)
    assert itself.shape == (1,) and float(itself) < 1e-10 < float(grey)


def test_descending_the_term_moves_a_grey_picture_to_the_styles_colours() -> None:
    style = torch.zeros(3, 16, 16)
    style[0, :8], style[2, 8:] = 0.9, 0.8  # half red, half blue
    term, target, backbone = _term_and_target(style)
    pixels = torch.full((1, 3, 16, 16), 0.5, requires_grad=True)
    optimizer = torch.optim.Adam([pixels], lr=0.02)
    start = color_distance(pixels[0].detach(), style, size=16)
    for step in range(150):
        optimizer.zero_grad()
        term.loss(backbone.normalize(pixels.clamp(0, 1)), {}, target, step).sum().backward()
        optimizer.step()
    assert color_distance(pixels[0].detach().clamp(0, 1), style, size=16) < 0.2 * start


def test_a_large_style_keeps_a_sample_of_its_pixels_and_lightness_apart_from_colour() -> None:
    style = torch.rand(3, 40, 50, generator=torch.Generator().manual_seed(0))
    term, (targets, regions), _ = _term_and_target(style, most_pixels=100)
    lightness, chroma = (target[0][0][1] for target in targets)  # each part's style cloud
    assert regions is None and term.block((40, 50)) == 5
    assert lightness.shape == (1, 8 * 10) and chroma.shape == (2, 8 * 10)


def test_against_a_painting_without_colour_every_pixels_colour_goes_to_grey() -> None:
    """A mismatch of lightness must not push colours: the chrominance is matched apart."""
    style = torch.linspace(0.1, 0.9, 16)[None, None, :].expand(3, 16, 16).contiguous()
    term, target, backbone = _term_and_target(style)
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    pixels = pixels.mul(0.3).add(0.05).requires_grad_()  # dark and colourful
    start_gap = abs(float(rgb_to_lab(pixels.detach())[0, 0].mean() - rgb_to_lab(style)[0].mean()))
    optimizer = torch.optim.Adam([pixels], lr=0.02)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 300)  # settle, not jitter
    for step in range(300):
        optimizer.zero_grad()
        term.loss(backbone.normalize(pixels.clamp(0, 1)), {}, target, step).sum().backward()
        optimizer.step()
        schedule.step()
    lab = rgb_to_lab(pixels.detach().clamp(0, 1))
    assert lab[0, 1:].abs().max() < 1.0  # a and b: under a just-noticeable difference
    gap = abs(float(lab[0, 0].mean() - rgb_to_lab(style)[0].mean()))
    assert gap < 0.2 * start_gap  # and the lightness on its way to the painting's


def _fit(content_image, style_image, **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 32 px run on the tiny random network; the result, the content and the style pixels."""
    pl.seed_everything(0)
    module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                           style_layers=[0, 1], style_weights=[1.0, 1.0], **options)
    trainer = pl.Trainer(max_steps=40, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(module, StyleTransferData(content=str(content_image), style=str(style_image),
                                          image_size=32))
    result = module.result_pixels(0)
    content, style = (image_to_tensor(load_image(path).convert("RGB"))
                      for path in (content_image, style_image))
    return result, content, style


def test_the_colour_weight_takes_the_styles_palette_and_preserve_colors_keeps_the_photos(
        content_image, tmp_path) -> None:
    # A style of two colours the photo does not have: how far the result moves toward it.
    style = torch.zeros(3, 32, 32)
    style[1, :, :16], style[2, :, 16:] = 0.2, 0.7
    style_path = tmp_path / "inputs" / "dark_blue.png"
    tensor_to_image(style).save(style_path)

    without, content, style = _fit(content_image, style_path, lr=0.05)
    with_color, _, _ = _fit(content_image, style_path, lr=0.05, color_weight=30000.0)
    # preserve_colors leaves the colour term out (below), so its run is the run without the
    # term, given the photo's chrominance at the end (as result_pixels does).
    kept = keep_colors(without, resize_pixels(content, without.shape[-2:]))
    photo_to_style = color_distance(content, style)
    # (On this random network the other terms hold the lightness: 40 steps move the colours.)
    assert color_distance(with_color, style) < 0.6 * photo_to_style
    assert color_distance(with_color, style) < 0.7 * color_distance(without, style)
    # preserve_colors: the photo's colours. The colour term is left out (it would pull the
    # values away from the photo's), and the result is far nearer the photo than the style.
    assert "color" not in StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                                        style_layers=[0], style_weights=[1.0], color_weight=1.0,
                                        preserve_colors=True).term_names
    assert color_distance(kept, content) < 0.5 * color_distance(kept, style)
    assert color_distance(kept, content) < 0.5 * color_distance(with_color, content)


def test_lbfgs_takes_its_own_learning_rate_unless_one_is_given() -> None:
    options = dict(backbone="tiny", weights="random", content_layers=[2], style_layers=[0],
                   style_weights=[1.0])
    assert StyleTransfer(**options).lr == 0.02
    assert StyleTransfer(optimizer="lbfgs", **options).lr == 1.0
    assert StyleTransfer(optimizer="lbfgs", lr=0.3, **options).lr == 0.3


def test_with_style_masks_each_styles_colours_belong_in_its_region() -> None:
    red, blue = torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)
    red[0], blue[2] = 0.9, 0.9
    left = torch.zeros(1, 16, 16)
    left[..., :8] = 1.0
    job = _Job(red)
    job.styles, job.style_blend_weights, job.style_masks = [red, blue], [0.5, 0.5], [left, 1 - left]
    backbone = load_backbone("tiny", "random")
    term = ColorTerm(weight=1.0)
    term.bind(backbone, wrap=False)
    target = term.target([job], [(16, 16)], backbone, torch.device("cpu"))
    right_way = torch.where(left.bool(), red, blue)[None]
    wrong_way = torch.where(left.bool(), blue, red)[None]
    assert float(term.loss(backbone.normalize(right_way), {}, target, 0)) < 1e-8
    assert float(term.loss(backbone.normalize(wrong_way), {}, target, 0)) > 0.1


def test_two_blended_styles_ask_for_their_barycenter() -> None:
    """Blended, the styles' quantiles are averaged (their Wasserstein barycenter, as the
    sliced-Wasserstein style loss blends): red and blue make a purple, not half of each."""
    red, blue = torch.zeros(3, 16, 16), torch.zeros(3, 16, 16)
    red[0], blue[2] = 0.9, 0.9
    job = _Job(red)
    job.styles, job.style_blend_weights = [red, blue], [0.5, 0.5]
    backbone = load_backbone("tiny", "random")
    term = ColorTerm(weight=1.0)
    term.bind(backbone, wrap=False)
    target = term.target([job], [(16, 16)], backbone, torch.device("cpu"))
    halves = torch.cat([red[:, :8], blue[:, 8:]], dim=1)
    purple = (red + blue) / 2
    losses = {name: float(term.loss(backbone.normalize(p[None]), {}, target, 0))
              for name, p in (("purple", purple), ("halves", halves), ("red", red),
                              ("blue", blue))}
    assert losses["purple"] < 0.5 * min(losses["halves"], losses["red"], losses["blue"])

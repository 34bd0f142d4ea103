"""The style losses of style_losses.py: hand-computed values, batching, masks, blends, seeds."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_modules.errors import UserInputError
from lightning_modules.style_transfer import (
    GramLoss,
    MeanStdLoss,
    SlicedWassersteinLoss,
    make_style_loss,
    style_loss,
)
from lightning_modules.style_transfer.style_losses import (
    blended_targets,
    layered_style_loss,
    masked_style_loss,
    projection_seed,
    resize_mask,
    style_regions,
)

LOSSES = [GramLoss, MeanStdLoss, SlicedWassersteinLoss]


def features(*channels: list[float]) -> torch.Tensor:
    """``[1, C, 1, L]`` features from one list of values per channel."""
    return torch.tensor(channels, dtype=torch.float32)[None, :, None, :]


def target_of(criterion, feats: torch.Tensor):
    """The batched target of one style image's features."""
    return criterion.stack([criterion.blend([criterion.target(feats)], [1.0])])


# ----------------------------------------------------------------- hand computations
def test_gram_by_hand() -> None:
    current = features([1, 2], [3, 4])  # C = 2, H * W = 2
    style = features([1, 0], [0, 1])
    # F F^T / (C * H * W) = [[5, 11], [11, 25]] / 4; the style's is I / 4.
    expected = ((5 - 1) ** 2 + 11 ** 2 + 11 ** 2 + (25 - 1) ** 2) / 16
    loss = GramLoss().loss(current, target_of(GramLoss(), style))
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(expected)
    # Mask [1, 0]: only the first position, divided by C * 1: [[1, 3], [3, 9]] / 2.
    mask = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    masked = GramLoss().loss(current, torch.zeros(1, 2, 2), mask)
    assert masked.item() == pytest.approx((1 + 9 + 9 + 81) / 4)
    # Weights [1/2, 1/4]: sum m f f^T = [[1.5, 3.5], [3.5, 8.5]], divided by C * 3/4.
    mask = torch.tensor([0.5, 0.25]).view(1, 1, 1, 2)
    masked = GramLoss().loss(current, torch.zeros(1, 2, 2), mask)
    assert masked.item() == pytest.approx(1 + 2 * (7 / 3) ** 2 + (17 / 3) ** 2)


def test_mean_std_by_hand() -> None:
    eps = 1e-5
    current = features([1, 3], [2, 2])  # means 2, 2; variances 1, 0
    style = features([0, 0], [1, 5])    # means 0, 3; variances 0, 4
    criterion = MeanStdLoss()
    std = lambda var: math.sqrt(var + eps)  # noqa: E731
    expected = (2 - 0) ** 2 + (2 - 3) ** 2 + (std(1) - std(0)) ** 2 + (std(0) - std(4)) ** 2
    assert criterion.loss(current, target_of(criterion, style)).item() == pytest.approx(expected)
    # Weights 3 : 1 on the two positions: mean 1.5, variance (3 * 0.25 + 2.25) / 4 = 0.75.
    mask = torch.tensor([0.6, 0.2]).view(1, 1, 1, 2)
    statistics = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    expected = 1.5 ** 2 + 2 ** 2 + std(0.75) ** 2 + std(0) ** 2
    assert criterion.loss(current, statistics, mask).item() == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sliced_wasserstein_by_hand_in_one_dimension(seed) -> None:
    """With one channel the direction is +1 or -1 and the loss is the same for both."""
    criterion = SlicedWassersteinLoss()
    current = features([3, 1, 2])
    # Same length: sorted [1, 2, 3] against [0, 10, 20].
    loss = criterion.loss(current, target_of(criterion, features([10, 0, 20])), seed=seed)
    assert loss.item() == pytest.approx((1 + 64 + 289) / 3)
    # Twice as many style pixels: at levels 1/6, 1/2, 5/6 the quantiles of [0, 6, ..., 30] are
    # 3, 15, 27.
    style = target_of(criterion, features([30, 0, 18, 6, 24, 12]))
    loss = criterion.loss(current, style, seed=seed)
    assert loss.item() == pytest.approx((4 + 169 + 576) / 3)


def test_sliced_wasserstein_by_hand_in_two_dimensions() -> None:
    criterion = SlicedWassersteinLoss()
    current = features([1, 0, 2], [0, 3, 1])
    style = features([2, 2, 0], [1, -1, 0])
    seed = 7
    directions = criterion.directions(2, seed, torch.device("cpu")).tolist()
    assert len(directions) == 2  # as many as channels
    total = 0.0
    for a, b in directions:
        mine = sorted(a * x + b * y for x, y in [(1, 0), (0, 3), (2, 1)])
        theirs = sorted(a * x + b * y for x, y in [(2, 1), (2, -1), (0, 0)])
        total += sum((m - t) ** 2 for m, t in zip(mine, theirs)) / 3
    loss = criterion.loss(current, target_of(criterion, style), seed=seed)
    # The mean over the 2 directions, times C = 2.
    assert loss.item() == pytest.approx(total / 2 * 2, rel=1e-5)


def test_sliced_wasserstein_of_a_shift_is_its_squared_length() -> None:
    """A style that is the image moved by ``v``: every projection's sorted values differ by
    ``d . v``, whose square averages ``|v|^2 / C``; the factor ``C`` gives ``|v|^2 = 9``."""
    current = torch.randn(1, 4, 5, 10, generator=torch.Generator().manual_seed(6))
    shift = torch.tensor([1.0, 2.0, 0.0, -2.0]).view(1, 4, 1, 1)
    criterion = SlicedWassersteinLoss(projections=20000)
    loss = criterion.loss(current, target_of(criterion, current + shift), seed=0)
    assert loss.item() == pytest.approx(9.0, rel=0.03)


def test_sliced_wasserstein_mask_drops_positions_and_blend_is_the_barycenter() -> None:
    criterion = SlicedWassersteinLoss()
    style = target_of(criterion, features([5, 0, 9], [1, 1, 4]))
    kept = criterion.loss(features([1, 2, 3], [0, 1, 0]), style, seed=3)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).view(1, 1, 1, 4)
    masked = criterion.loss(features([1, 2, 3, 100], [0, 1, 0, -50]), style, mask, seed=3)
    assert masked.item() == pytest.approx(kept.item(), rel=1e-5)
    # Quantiles [0, 0, 0] and [3, 6, 9] blended half and half: [1.5, 3, 4.5].
    styles = [criterion.target(features([0, 0, 0])), criterion.target(features([9, 3, 6]))]
    blend = criterion.stack([criterion.blend(styles, [0.5, 0.5])])
    barycenter = criterion.loss(features([3, 1.5, 4.5]), blend, seed=0)
    assert barycenter.item() == pytest.approx(0, abs=1e-10)
    assert criterion.loss(features([0, 0, 0]), blend, seed=0).item() > 1


def test_sliced_wasserstein_directions_are_seeded_and_renewed() -> None:
    criterion = SlicedWassersteinLoss()
    generator = torch.Generator().manual_seed(0)
    current = torch.randn(1, 8, 4, 4, generator=generator)
    style = target_of(criterion, torch.randn(1, 8, 5, 5, generator=generator))
    first = criterion.loss(current, style, seed=projection_seed(3, 1, base_seed=42))
    again = criterion.loss(current, style, seed=projection_seed(3, 1, base_seed=42))
    assert torch.equal(first, again)
    for other in (projection_seed(4, 1, 42), projection_seed(3, 2, 42), projection_seed(3, 1, 43)):
        assert not torch.equal(first, criterion.loss(current, style, seed=other))
    torch.manual_seed(42)
    assert projection_seed(3, 1) == projection_seed(3, 1, base_seed=42)


# ----------------------------------------------------------------- batching, masks, blends
@pytest.mark.parametrize("cls", LOSSES)
def test_each_image_of_a_batch_has_its_own_loss(cls) -> None:
    criterion = cls()
    generator = torch.Generator().manual_seed(1)
    current = torch.randn(3, 6, 5, 7, generator=generator)
    styles = [criterion.target(torch.randn(1, 6, 4 + k, 6, generator=generator)) for k in range(3)]
    masks = torch.rand(3, 1, 5, 7, generator=generator)
    batched = criterion.loss(current, criterion.stack(styles), seed=5)
    batched_masked = criterion.loss(current, criterion.stack(styles), masks, seed=5)
    for k in range(3):
        alone = criterion.loss(current[k:k + 1], criterion.stack(styles[k:k + 1]), seed=5)
        masked = criterion.loss(current[k:k + 1], criterion.stack(styles[k:k + 1]), masks[k:k + 1],
                                seed=5)
        assert torch.allclose(batched[k], alone[0], rtol=1e-5)
        assert torch.allclose(batched_masked[k], masked[0], rtol=1e-5)
    assert len(set(batched.tolist())) == 3


@pytest.mark.parametrize("cls", LOSSES)
def test_an_all_white_mask_is_no_mask_and_the_loss_falls_to_zero(cls) -> None:
    criterion = cls()
    generator = torch.Generator().manual_seed(2)
    current = torch.randn(2, 4, 3, 3, generator=generator)
    style = criterion.stack([criterion.target(torch.randn(1, 4, 3, 3, generator=generator))] * 2)
    plain = criterion.loss(current, style, seed=1)
    white = criterion.loss(current, style, torch.ones(2, 1, 3, 3), seed=1)
    assert torch.allclose(plain, white, rtol=1e-5)
    assert (plain > 0).all()
    same = criterion.loss(current, criterion.stack([criterion.target(current[k:k + 1])
                                                    for k in range(2)]), seed=1)
    assert torch.allclose(same, torch.zeros(2), atol=1e-5)


def test_gram_layers_are_the_homeworks_style_loss_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    feats = {0: torch.randn(2, 4, 6, 6, generator=generator),
             2: torch.randn(2, 8, 3, 3, generator=generator)}
    styles = [[torch.randn(1, 4, 5, 5, generator=generator),
               torch.randn(1, 8, 2, 3, generator=generator)] for _ in range(2)]

    class Job:
        style_blend_weights = [0.75, 0.25]

    criterion = GramLoss()
    statistics = [[[criterion.target(f) for f in style] for style in styles]] * 2
    targets = blended_targets(criterion, statistics, [Job(), Job()])
    from lightning_modules.style_transfer import gram_matrix

    for layer, target in enumerate(targets):
        expected = 0.75 * gram_matrix(styles[0][layer])[0] + 0.25 * gram_matrix(styles[1][layer])[0]
        assert torch.equal(target, torch.stack([expected, expected]))
    ours = layered_style_loss(criterion, feats, [0, 2], targets, [2.0, 0.5])
    assert torch.equal(ours, style_loss(feats, [0, 2], targets, [2.0, 0.5]))


@pytest.mark.parametrize("cls", LOSSES)
def test_masked_style_loss_with_one_white_region_is_the_plain_loss(cls) -> None:
    criterion = cls()
    generator = torch.Generator().manual_seed(4)
    feats = {1: torch.randn(2, 4, 6, 6, generator=generator),
             3: torch.randn(2, 8, 3, 3, generator=generator)}
    style = [torch.randn(1, 4, 5, 5, generator=generator),
             torch.randn(1, 8, 2, 3, generator=generator)]

    class Job:
        styles = [None]
        style_blend_weights = [1.0]
        style_masks = [torch.ones(1, 12, 12)]

    statistics = [[[criterion.target(f) for f in style]]] * 2
    regions = style_regions(criterion, statistics, [Job(), Job()])
    targets = blended_targets(criterion, statistics, [Job(), Job()])
    plain = layered_style_loss(criterion, feats, [1, 3], targets, [1.0, 3.0], step=2)
    masked = masked_style_loss(criterion, feats, [1, 3], [1.0, 3.0], *regions, step=2)
    assert torch.allclose(masked, plain, rtol=1e-5)


def test_regions_weigh_by_area_and_blend_weight() -> None:
    """Two half-image regions of blend 3 : 1: weights 2 * 0.75 and 2 * 0.25, areas 1/2 each."""
    criterion = MeanStdLoss()
    generator = torch.Generator().manual_seed(5)
    current = torch.randn(1, 3, 4, 4, generator=generator)
    left = torch.zeros(1, 4, 4)
    left[..., :2] = 1

    class Job:
        styles = [None, None]
        style_blend_weights = [0.75, 0.25]
        style_masks = [left, 1 - left]

    styles = [criterion.target(torch.randn(1, 3, 4, 4, generator=generator)) for _ in range(2)]
    regions = style_regions(criterion, [[[styles[0]], [styles[1]]]], [Job()])
    assert regions[1].shape == (2, 1, 1, 4, 4)
    assert regions[2].tolist() == [[1.5], [0.5]]
    loss = masked_style_loss(criterion, {0: current}, [0], [10.0], *regions)
    by_hand = sum(10.0 * weight * 0.5 * criterion.loss(current, style[None], mask[None])
                  for weight, style, mask in zip([1.5, 0.5], styles, [left, 1 - left]))
    assert torch.allclose(loss, by_hand)


def test_resize_mask_averages_areas() -> None:
    mask = torch.zeros(1, 1, 4, 6)
    mask[..., :3] = 1
    assert resize_mask(mask, (2, 2)).flatten().tolist() == [1, 0, 1, 0]
    assert resize_mask(mask, (2, 3)).flatten().tolist() == pytest.approx([1, 0.5, 0] * 2)
    assert resize_mask(mask, (4, 6)) is mask


def test_unknown_style_loss_is_one_sentence() -> None:
    with pytest.raises(UserInputError) as caught:
        make_style_loss("cosine")
    assert str(caught.value) == ("Unknown style_loss 'cosine'; choose 'gram', 'mean_std' or "
                                 "'sliced_wasserstein'.")
    assert isinstance(make_style_loss("mean_std"), MeanStdLoss)

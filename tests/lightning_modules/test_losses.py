"""The seed's losses against values computed by hand, element by element, in float64."""

from __future__ import annotations

import itertools

import pytest
import torch

from lightning_modules.losses import content_loss, extract_features, gram_matrix, style_loss, tv_loss

RTOL = 1e-5


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a.double() - b.double()).abs() / (a.double().abs() + b.double().abs()).clamp_min(1e-12)).max())


def hand_gram(f: torch.Tensor) -> torch.Tensor:
    """G[i, j] = sum over positions of F_i * F_j / (C*H*W), one loop per index."""
    c, h, w = f.shape
    g = torch.zeros(c, c, dtype=torch.float64)
    for i, j in itertools.product(range(c), range(c)):
        total = 0.0
        for y, x in itertools.product(range(h), range(w)):
            total += float(f[i, y, x]) * float(f[j, y, x])
        g[i, j] = total / (c * h * w)
    return g


@pytest.fixture
def feats() -> torch.Tensor:
    # float64, so that the elementwise relative error measures the formula, not float32 rounding.
    return torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_content_loss_matches_hand_sum_per_image(feats: torch.Tensor) -> None:
    original = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = content_loss(0.3, feats, original)
    expected = torch.tensor([0.3 * sum(float(v) ** 2 for v in (feats[n] - original[n]).flatten())
                             for n in range(3)])
    assert loss.shape == (3,)
    assert rel_error(loss, expected) < RTOL


def test_content_loss_broadcasts_one_target() -> None:
    current = torch.zeros(2, 1, 2, 2)
    current[1] += 1.0
    loss = content_loss(2.0, current, torch.zeros(1, 1, 2, 2))
    assert torch.equal(loss, torch.tensor([0.0, 8.0]))


def test_gram_matrix_matches_hand_loops_for_each_image(feats: torch.Tensor) -> None:
    gram = gram_matrix(feats)
    assert gram.shape == (3, 4, 4)
    for n in range(3):
        assert rel_error(gram[n], hand_gram(feats[n])) < RTOL


def test_gram_matrix_in_float32_is_close_to_hand_loops(feats: torch.Tensor) -> None:
    gram = gram_matrix(feats.float())
    assert gram.dtype == torch.float32
    for n in range(3):
        expected = hand_gram(feats[n])
        assert float((gram[n].double() - expected).abs().max() / expected.abs().max()) < RTOL


def test_gram_matrix_unnormalized_is_scaled(feats: torch.Tensor) -> None:
    assert rel_error(gram_matrix(feats, normalize=False), gram_matrix(feats) * 4 * 5 * 6) < RTOL


def test_style_loss_matches_hand_sum_and_keeps_images_apart(feats: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(2)
    all_feats = [feats] + [torch.randn(3, c, k, k, generator=generator, dtype=torch.float64) for c, k in ((2, 3), (5, 2))]
    layers, weights = [0, 2], [1.5, 0.25]
    targets = [torch.randn(1, 4, 4, generator=generator, dtype=torch.float64),
               torch.randn(3, 5, 5, generator=generator, dtype=torch.float64)]
    loss = style_loss(all_feats, layers, targets, weights)
    for n in range(3):
        expected = 0.0
        for layer, weight, target in zip(layers, weights, targets):
            difference = hand_gram(all_feats[layer][n]) - target[min(n, target.shape[0] - 1)].double()
            expected += weight * float((difference ** 2).sum())
        assert rel_error(loss[n], torch.tensor(expected)) < RTOL
    # Image 0's loss must not depend on image 1's features.
    changed = [f.clone() for f in all_feats]
    changed[0][1] += 10
    assert torch.equal(style_loss(changed, layers, targets, weights)[0], loss[0])


def test_style_loss_accepts_a_mapping_of_layers(feats: torch.Tensor) -> None:
    target = [gram_matrix(feats)]
    assert torch.equal(style_loss({7: feats}, [7], target, [1.0]), torch.zeros(3))


def test_tv_loss_matches_hand_sum() -> None:
    img = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = tv_loss(img, 0.7)
    for n in range(2):
        total = 0.0
        for c, y, x in itertools.product(range(3), range(4), range(5)):
            if y + 1 < 4:
                total += (float(img[n, c, y + 1, x]) - float(img[n, c, y, x])) ** 2
            if x + 1 < 5:
                total += (float(img[n, c, y, x + 1]) - float(img[n, c, y, x])) ** 2
        assert rel_error(loss[n], torch.tensor(0.7 * total)) < RTOL


def test_batched_losses_equal_one_image_at_a_time(feats: torch.Tensor) -> None:
    img = torch.randn(3, 3, 6, 6)
    batched = tv_loss(img, 1.0)
    single = torch.cat([tv_loss(img[n : n + 1], 1.0) for n in range(3)])
    assert rel_error(batched, single) < RTOL


def test_extract_features_returns_every_layer(tiny_backbone) -> None:
    x = torch.randn(2, 3, 16, 16)
    features = extract_features(x, tiny_backbone)
    assert len(features) == tiny_backbone.num_layers
    assert torch.equal(features[-1], tiny_backbone.features(x))
    chosen = tiny_backbone.extract(x, [2, 0])
    assert torch.equal(chosen[0], features[2]) and torch.equal(chosen[1], features[0])


def test_gram_matrix_accumulates_in_float32_under_autocast(feats: torch.Tensor) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(feats.bfloat16())
    assert gram.dtype == torch.float32

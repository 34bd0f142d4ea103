"""The robustness, localisation and complexity metrics (issue 25), checked against Quantus 0.6,
and the random, edge and centre controls every metric is read against.

Quantus is the oracle: each metric gives Quantus' numbers on the same maps, boxes (as masks) and,
for max-sensitivity, the same noise (Quantus' ``perturb_func`` is handed the noise our metric
draws). Where our definition differs on purpose, the test shows the difference.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from lightning_modules.backbones import Backbone, imagenet_categories
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import (
    SHORTHANDS,
    CenteredGaussianMap,
    EdgeMap,
    RandomMap,
    SaliencyMap,
    Vanilla,
)
from lightning_modules.saliency.metrics.base import MetricInputs
from lightning_modules.saliency.metrics.max_sensitivity import MaxSensitivity
from lightning_modules.saliency.metrics.pointing_game import PointingGame, box_masks
from lightning_modules.saliency.metrics.relevance_mass import RelevanceMassAccuracy
from lightning_modules.saliency.metrics.sparseness import Sparseness

quantus = pytest.importorskip("quantus")

NAN = float("nan")
SIDE = 24
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency.yaml"


def vanilla_explain(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return Vanilla().attribute(model, inputs, targets).maps


def quantus_explain(model, inputs: np.ndarray, targets: np.ndarray, **kwargs) -> np.ndarray:
    """Quantus' explain_func: the same method on numpy arrays."""
    return vanilla_explain(model, torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()


@pytest.fixture
def batch(tiny_backbone) -> MetricInputs:
    """Three 24 px images, their vanilla maps, and a box each (the last image has none)."""
    pixels = torch.rand(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    inputs = tiny_backbone.normalize(pixels)
    targets = torch.tensor([1, 7, 42])
    boxes = torch.tensor([[2.0, 3.0, 12.0, 14.0], [4.0, 2.0, 20.0, 20.0], [NAN] * 4])
    return MetricInputs(tiny_backbone.eval(), inputs, targets,
                        vanilla_explain(tiny_backbone, inputs, targets), vanilla_explain, boxes,
                        torch.Generator().manual_seed(0))


def with_maps(batch: MetricInputs, maps: torch.Tensor, boxes=None) -> MetricInputs:
    return MetricInputs(batch.model, batch.inputs[:len(maps)], batch.targets[:len(maps)], maps,
                        batch.explain, boxes, torch.Generator().manual_seed(0))


def quantus_masks(boxes: torch.Tensor) -> np.ndarray:
    """Boxes as Quantus' segmentation masks ``[B, 1, H, W]``."""
    return box_masks(boxes, SIDE, SIDE).numpy()[:, None].astype(np.float32)


def quantus_scores(metric, batch: MetricInputs, **kwargs) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Quantus' parameterisation notes
        return np.asarray(metric(model=batch.model, x_batch=batch.inputs.numpy(),
                                 y_batch=batch.targets.numpy(), a_batch=batch.maps.numpy(),
                                 **kwargs), dtype=np.float64)


# --- against Quantus ----------------------------------------------------------------------------


def test_max_sensitivity_is_quantus_given_the_same_noise(batch) -> None:
    """Quantus draws its noise from numpy's global generator; its ``perturb_func`` is handed the
    noise ours draws from the batch's generator (one copy of the batch per sample, in order)."""
    samples, radius = 4, 0.2
    noise = torch.Generator().manual_seed(0)

    def same_noise(arr: np.ndarray, indices: np.ndarray, **kwargs) -> np.ndarray:
        uniform = torch.rand(batch.inputs.shape, generator=noise)
        return arr + ((2 * uniform - 1) * radius).numpy().reshape(arr.shape)

    expected = quantus_scores(
        quantus.MaxSensitivity(nr_samples=samples, lower_bound=radius, perturb_func=same_noise,
                               disable_warnings=True),
        batch, explain_func=quantus_explain)
    got = MaxSensitivity(samples=samples, radius=radius).score(batch)
    assert got.shape == (3,) and (got > 0).all()
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_max_sensitivity_defaults_are_quantus_defaults() -> None:
    ours = MaxSensitivity()
    theirs = quantus.MaxSensitivity(disable_warnings=True)
    assert (ours.samples, ours.radius) == (theirs.nr_samples, theirs.perturb_func.keywords[
        "lower_bound"]) == (200, 0.2)
    assert theirs.perturb_func.keywords["upper_bound"] is None  # symmetric: [-0.2, 0.2]
    assert theirs.normalise is False and theirs.abs is False  # the maps as they are
    assert ours.higher_is_better is False and ours.explains_again


def test_pointing_game_is_quantus_where_a_box_is_given(batch) -> None:
    """An image without a box: NaN here; Quantus 0.6 writes NaN into a boolean array, so 1."""
    expected = quantus_scores(quantus.PointingGame(disable_warnings=True), batch,
                              s_batch=quantus_masks(batch.boxes))
    got = PointingGame().score(batch)
    np.testing.assert_array_equal(got[:2].numpy(), expected[:2])
    assert set(got[:2].tolist()) == {0.0, 1.0}  # a miss and a hit: the test can tell
    assert torch.isnan(got[2]) and expected[2] == 1.0


def test_relevance_mass_accuracy_is_quantus(batch) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Quantus' note on the empty mask
        expected = quantus_scores(quantus.RelevanceMassAccuracy(disable_warnings=True), batch,
                                  s_batch=quantus_masks(batch.boxes))
    got = RelevanceMassAccuracy().score(batch)
    np.testing.assert_allclose(got[:2].numpy(), expected[:2], rtol=1e-6)
    assert 0 < got[0] < got[1] < 1
    assert torch.isnan(got[2]) and np.isnan(expected[2])  # no box: NaN in both


def test_sparseness_is_quantus_per_map(batch) -> None:
    """Quantus divides by the whole batch's maximum (so a faint map's score depends on its
    batch, through the 1e-7); ours divides each map by its own: Quantus' number for the map
    scored alone, whatever shares its batch."""
    faint = batch.maps.clone()
    faint[1] *= 1e-6  # a map far fainter than the others
    faint_batch = with_maps(batch, faint)
    got = Sparseness().score(faint_batch)
    oracle = quantus.Sparseness(disable_warnings=True)
    alone = [quantus_scores(oracle, with_maps(batch, faint[i:i + 1]))[0] for i in range(3)]
    np.testing.assert_allclose(got.numpy(), alone, rtol=1e-5)
    together = quantus_scores(oracle, faint_batch)
    np.testing.assert_allclose(together[[0, 2]], alone[0:3:2], rtol=1e-5)
    assert together[1] < alone[1] - 0.05  # Quantus: the faint map looks flatter in this batch


# --- behaviour ----------------------------------------------------------------------------------


def peaked_maps(points: list[tuple[int, int]]) -> torch.Tensor:
    """Smooth maps whose maximum lies at ``(row, column)`` each."""
    rows = torch.arange(SIDE, dtype=torch.float32)[:, None]
    columns = torch.arange(SIDE, dtype=torch.float32)[None, :]
    return torch.stack([torch.exp(-((rows - r) ** 2 + (columns - c) ** 2) / 20)
                        for r, c in points])


def test_pointing_game_hits_a_peak_in_the_box_and_misses_one_outside(batch) -> None:
    box = torch.tensor([[4.0, 4.0, 10.0, 10.0]] * 3)
    maps = peaked_maps([(6, 6), (6, 10), (15, 15)])  # inside, just right of it (x1 exclusive), far
    assert PointingGame().score(with_maps(batch, maps, box)).tolist() == [1.0, 0.0, 0.0]
    # Zhang et al.'s tolerance, in pixels between centres: the pixel beside the box is 1 away,
    # the far one (6 rows and 6 columns off the box's corner pixel) 8.49.
    for tolerance, hits in ((1.0, [1, 1, 0]), (0.9, [1, 0, 0]), (8.4, [1, 1, 0]),
                            (8.5, [1, 1, 1])):
        assert PointingGame(tolerance).score(with_maps(batch, maps, box)).tolist() == hits
    with pytest.raises(UserInputError, match="tolerance"):
        PointingGame(tolerance=-1)


def test_localisation_without_boxes_is_nan(batch) -> None:
    outside = torch.tensor([[30.0, 30.0, 40.0, 40.0], [0.0, 0.0, 0.0, 5.0], [NAN] * 4])
    for metric in (PointingGame(), RelevanceMassAccuracy()):
        assert metric.needs_boxes
        assert torch.isnan(metric.score(with_maps(batch, batch.maps, None))).all()
        assert torch.isnan(metric.score(with_maps(batch, batch.maps, outside))).all()


def test_relevance_mass_is_the_share_inside_the_box(batch) -> None:
    maps = torch.zeros(2, SIDE, SIDE)
    maps[0, 5:8, 5:8] = 1.0  # all inside
    maps[1, 5, 5], maps[1, 20, 20] = 3.0, 1.0  # three quarters inside
    box = torch.tensor([[4.0, 4.0, 10.0, 10.0]] * 2)
    assert RelevanceMassAccuracy().score(with_maps(batch, maps, box)).tolist() == [1.0, 0.75]


def test_sparseness_of_a_one_hot_map_is_near_one_and_of_a_flat_map_zero(batch) -> None:
    one_hot = torch.zeros(SIDE, SIDE)
    one_hot[3, 4] = 5.0
    maps = torch.stack([one_hot, torch.full((SIDE, SIDE), 2.0), torch.zeros(SIDE, SIDE)])
    got = Sparseness().score(with_maps(batch, maps))
    assert got[0] > 0.99 and abs(got[1]) < 1e-6 and abs(got[2]) < 1e-6
    # The score ignores the map's scale and sign.
    assert torch.allclose(Sparseness().score(with_maps(batch, -7 * batch.maps)),
                          Sparseness().score(batch), atol=1e-6)


def explainer(method, generator=None):
    """``MetricInputs.explain`` for a method object."""
    def explain(model, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return method.attribute(model, inputs, targets, generator).maps
    return explain


def test_max_sensitivity_of_the_centre_control_is_zero(batch) -> None:
    centre = explainer(CenteredGaussianMap())
    scored = MetricInputs(batch.model, batch.inputs, batch.targets,
                          centre(batch.model, batch.inputs, batch.targets), centre,
                          generator=torch.Generator().manual_seed(0))
    assert MaxSensitivity(samples=3).score(scored).tolist() == [0.0, 0.0, 0.0]
    # The random control moves by about its own size (|u - v| / |u| for uniform maps: 0.71).
    random = explainer(RandomMap(), torch.Generator().manual_seed(5))
    noisy = MetricInputs(batch.model, batch.inputs, batch.targets,
                         random(batch.model, batch.inputs, batch.targets), random,
                         generator=torch.Generator().manual_seed(0))
    assert ((MaxSensitivity(samples=3).score(noisy) - 0.71).abs() < 0.1).all()


def test_max_sensitivity_is_reproducible_and_independent_of_its_internal_batches(batch) -> None:
    """Each image is scored with the noise of its own row (the Quantus test shows each image's
    number is the per-image definition); the internal batches only group the explain calls."""
    calls: list[int] = []

    def counting_explain(model, inputs, targets):
        calls.append(len(inputs))
        return vanilla_explain(model, inputs, targets)

    def scores(internal_batch_size, seed=0) -> torch.Tensor:
        counted = MetricInputs(batch.model, batch.inputs, batch.targets, batch.maps,
                               counting_explain, generator=torch.Generator().manual_seed(seed))
        return MaxSensitivity(samples=3, internal_batch_size=internal_batch_size).score(counted)

    reference = scores(None)
    assert calls == [3, 3, 3]
    calls.clear()
    # Windows of 4 rows cut through the samples (image 0 of sample 1 rides with sample 0).
    assert torch.allclose(scores(4), reference, rtol=1e-6) and calls == [4, 4, 1]
    assert not torch.allclose(scores(None, seed=1), reference)
    # No noise, no change.
    assert MaxSensitivity(samples=2, radius=0.0).score(batch).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(UserInputError, match="samples"):
        MaxSensitivity(samples=0)


@pytest.mark.parametrize("metric", [PointingGame(), PointingGame(tolerance=2.0),
                                    RelevanceMassAccuracy(), Sparseness()])
def test_a_batch_scores_as_its_images_one_by_one(batch, metric) -> None:
    together = metric.score(batch)
    alone = torch.cat([metric.score(MetricInputs(
        batch.model, batch.inputs[i:i + 1], batch.targets[i:i + 1], batch.maps[i:i + 1],
        batch.explain, batch.boxes[i:i + 1])) for i in range(3)])
    assert torch.equal(together.isnan(), alone.isnan())
    assert torch.allclose(together.nan_to_num(), alone.nan_to_num())


def test_each_metric_states_its_name_family_perturbation_and_normalisation() -> None:
    metrics = [MaxSensitivity(), PointingGame(), RelevanceMassAccuracy(), Sparseness()]
    assert [(m.name, m.family, m.higher_is_better) for m in metrics] == [
        ("max_sensitivity", "robustness", False), ("pointing_game", "localisation", True),
        ("relevance_mass_accuracy", "localisation", True), ("sparseness", "complexity", True)]
    assert "uniform noise in [-0.2, 0.2]" in metrics[0].perturbation
    assert "200" in metrics[0].perturbation
    assert all(m.perturbation == "none" for m in metrics[1:])
    assert all(m.normalisation for m in metrics)


# --- the controls -------------------------------------------------------------------------------


def test_the_controls_are_methods_with_short_names() -> None:
    assert {name: SHORTHANDS[name] for name in ("random", "edges", "center")} == {
        "random": RandomMap, "edges": EdgeMap, "center": CenteredGaussianMap}
    for name in ("random", "edges", "center"):
        assert SHORTHANDS[name]().shorthand == name
        assert type(SaliencyMap(backbone="tiny", weights="random", method=name).method) is \
            SHORTHANDS[name]


def test_the_random_control_draws_from_the_generator(batch) -> None:
    def draw(seed: int) -> torch.Tensor:
        return RandomMap().attribute(batch.model, batch.inputs, batch.targets,
                                     torch.Generator().manual_seed(seed)).maps

    maps = draw(3)
    assert maps.shape == (3, SIDE, SIDE) and 0 <= maps.min() and maps.max() < 1
    assert torch.equal(draw(3), maps) and not torch.equal(draw(4), maps)


def test_the_edge_control_follows_the_image_not_the_model(batch, tiny_backbone) -> None:
    pixels = torch.zeros(2, 3, SIDE, SIDE)
    pixels[0, :, :, 10:] = 1.0  # a vertical step between columns 9 and 10
    pixels[1] = 0.3  # flat
    other = Backbone("other", [torch.nn.Identity()], torch.nn.Flatten(), (0.1, 0.2, 0.3),
                     (0.9, 0.5, 0.2), imagenet_categories())
    maps = EdgeMap().attribute(tiny_backbone, tiny_backbone.normalize(pixels), batch.targets).maps
    again = EdgeMap().attribute(other, other.normalize(pixels), batch.targets).maps
    assert maps.shape == (2, SIDE, SIDE) and torch.allclose(maps, again, atol=1e-5)
    assert maps[1].abs().max() < 1e-5  # no edge, not even at the frame
    # Sobel's x kernel gives 4 for a unit step, on both columns beside it, in 3 channels.
    assert torch.allclose(maps[0, :, 9:11], torch.full((SIDE, 2), 12.0), atol=1e-4)
    assert maps[0, :, :9].abs().max() < 1e-5 and maps[0, :, 11:].abs().max() < 1e-5


def test_the_centre_control_is_a_centred_gaussian(batch) -> None:
    inputs = torch.zeros(2, 3, 16, 32)  # the shorter side sets sigma = 4
    maps = CenteredGaussianMap().attribute(batch.model, inputs, batch.targets[:2]).maps
    assert maps.shape == (2, 16, 32) and torch.equal(maps[0], maps[1])
    assert torch.equal(maps[0], maps[0].flip(0)) and torch.equal(maps[0], maps[0].flip(1))
    # Centre at (row 7.5, column 15.5), sigma 4: exp(-d^2 / 32) at distance d from it.
    assert torch.isclose(maps[0, 7, 15], torch.tensor(np.exp(-0.5 / 32), dtype=torch.float32))
    assert torch.isclose(maps[0, 7, 11], torch.tensor(np.exp(-(0.25 + 4.5 ** 2) / 32),
                                                      dtype=torch.float32))
    assert maps[0].max() == maps[0, 7:9, 15:17].min()  # the four central pixels hold the peak
    assert torch.equal(CenteredGaussianMap().attribute(batch.model, batch.inputs,
                                                        batch.targets).maps[0],
                       CenteredGaussianMap().attribute(batch.model, torch.rand_like(batch.inputs),
                                                       batch.targets).maps[0])


def test_a_control_runs_from_the_cli_by_short_name_and_by_class(workdir: Path,
                                                                monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # pytest's own arguments hidden
    tiny = ["--model.backbone", "tiny", "--model.weights", "random", "--data.image_size", "32",
            "--trainer.enable_progress_bar", "false"]
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method", "edges"]) == 0
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method",
                     "lightning_modules.saliency.EdgeMap"]) == 0
    runs = [workdir / "runs" / "saliency" / f"version_{n}" for n in range(2)]
    by_name, by_class = ([np.load(run / "chelsea_saliency.npy") for run in runs])
    assert by_name.shape == (32, 32) and by_name.max() > 0
    assert np.array_equal(by_name, by_class)

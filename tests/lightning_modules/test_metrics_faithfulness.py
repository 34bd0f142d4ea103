"""The faithfulness and randomisation metrics: each against Quantus 0.6.0 (the oracle) on a few
small images under equal settings, the explained differences exactly, and behaviours that a
wrong metric would fail."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from conftest import two_layer_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.evaluation import perturbation_curves, substrate
from lightning_modules.saliency.metrics.base import MetricInputs
from lightning_modules.saliency.metrics.deletion import Deletion, Insertion
from lightning_modules.saliency.metrics.faithfulness_correlation import FaithfulnessCorrelation
from lightning_modules.saliency.metrics.randomisation import (
    ModelParameterRandomisation,
    RandomLogit,
    max_normalised,
    uniform_ssim,
)
from lightning_modules.saliency.metrics.road import ROADLeRF, ROADMoRF, noisy_linear_imputation

SIZE = 16
CLASSES = [f"class {index}" for index in range(10)]


@pytest.fixture
def model() -> nn.Module:
    return two_layer_backbone("metrics", 8, 2, CLASSES, (0.5,) * 3, (0.25,) * 3).eval()


@pytest.fixture
def batch(model: nn.Module) -> MetricInputs:
    return make_batch(model, SIZE)


def make_batch(model: nn.Module, size: int) -> MetricInputs:
    """Three images, their predicted classes and maps of distinct values (no ties to order)."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(3, 3, size, size, generator=generator)
    with torch.no_grad():
        targets = model(inputs).argmax(dim=1)
    maps = torch.rand(3, size, size, generator=generator)
    return MetricInputs(model, inputs, targets, maps, gradient_map,
                        generator=torch.Generator().manual_seed(1))


def gradient_map(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Vanilla gradient: the largest absolute input gradient over the channels."""
    inputs = inputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        chosen = model(inputs).gather(1, targets.long()[:, None]).sum()
        gradient, = torch.autograd.grad(chosen, inputs)
    return gradient.abs().amax(dim=1)


def edge_map(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A Sobel edge map of the image: ignores the model and the class."""
    kernel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gray = inputs.mean(dim=1, keepdim=True)
    across = nn.functional.conv2d(gray, kernel.view(1, 1, 3, 3), padding=1)
    down = nn.functional.conv2d(gray, kernel.t().reshape(1, 1, 3, 3), padding=1)
    return (across ** 2 + down ** 2).sqrt()[:, 0]


def quantus_explainer(explain):
    """Quantus' ``explain_func`` of one of ours: numpy in, ``[B, 1, H, W]`` numpy out."""
    def explain_func(model, inputs, targets, **_):
        maps = explain(model, torch.as_tensor(inputs), torch.as_tensor(targets))
        return maps[:, None].detach().numpy()
    return explain_func


def numpy_batch(batch: MetricInputs) -> dict:
    return {"model": batch.model, "x_batch": batch.inputs.numpy(),
            "y_batch": batch.targets.numpy(), "a_batch": batch.maps[:, None].numpy(),
            "device": "cpu"}


# --- deletion and insertion ----------------------------------------------------------------------


# Quantus' step (channel values) must divide H * W: 12 x 12 images, steps a multiple of 3.
PIXEL_FLIPPING_SIZE = 12


def test_deletion_is_quantus_pixel_flipping_with_step_zero_and_unit_width(model) -> None:
    batch = make_batch(model, PIXEL_FLIPPING_SIZE)
    steps = 12  # 12 pixels (36 channel values) per step
    metric = Deletion(steps=steps, substrate="zero")
    quantus_curves = np.asarray(quantus.PixelFlipping(
        features_in_step=3 * PIXEL_FLIPPING_SIZE ** 2 // steps, perturb_baseline=0.0,
        normalise=False,
        disable_warnings=True)(**numpy_batch(batch), softmax=True))
    _, ours = perturbation_curves(batch.model, batch.inputs, torch.zeros_like(batch.inputs),
                                  batch.maps, batch.targets, steps)
    np.testing.assert_allclose(ours[:, 1:].numpy(), quantus_curves, atol=1e-6)
    # The AUCs: Quantus leaves out step 0 and integrates with dx = 1.
    first = ours[:, 0].numpy()
    expected = (np.trapezoid(quantus_curves, dx=1, axis=1)
                + (first + quantus_curves[:, 0]) / 2) / steps
    np.testing.assert_allclose(metric.score(batch).numpy(), expected, atol=1e-6)


def test_insertion_is_quantus_pixel_flipping_that_puts_pixels_back(model) -> None:
    batch = make_batch(model, PIXEL_FLIPPING_SIZE)
    steps = 6
    start = substrate("blur", batch.inputs, batch.model)
    original = batch.inputs.flatten(1).numpy()

    def put_back(arr, indices, **_):
        restored = arr.copy()
        rows = np.arange(len(arr))[:, None]
        restored[rows, indices] = original[rows, indices]
        return restored

    quantus_curves = np.asarray(quantus.PixelFlipping(
        features_in_step=3 * PIXEL_FLIPPING_SIZE ** 2 // steps, perturb_func=put_back,
        normalise=False,
        disable_warnings=True)(**{**numpy_batch(batch), "x_batch": start.numpy()}, softmax=True))
    with torch.no_grad():
        first = batch.model(start).softmax(1).gather(1, batch.targets[:, None])[:, 0].numpy()
    expected = (np.trapezoid(quantus_curves, dx=1, axis=1)
                + (first + quantus_curves[:, 0]) / 2) / steps
    np.testing.assert_allclose(Insertion(steps=steps).score(batch).numpy(), expected, atol=1e-6)
    # Every pixel back is the image itself.
    with torch.no_grad():
        final = batch.model(batch.inputs).softmax(1).gather(1, batch.targets[:, None])[:, 0]
    np.testing.assert_allclose(quantus_curves[:, -1], final.numpy(), atol=1e-6)


# --- ROAD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.05, 0.5, 0.99])
def test_road_imputation_is_quantus_noisy_linear_imputation(fraction: float) -> None:
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    generator = np.random.default_rng(3)
    images = generator.random((3, 3, SIZE, SIZE))
    removed = torch.zeros(3, SIZE * SIZE, dtype=torch.bool)
    expected = []
    for row in range(3):
        indices = generator.permutation(SIZE * SIZE)[:int(fraction * SIZE * SIZE)]
        removed[row, torch.from_numpy(indices)] = True
        expected.append(quantus_imputation(images[row], indices, noise=0.0))
    ours = noisy_linear_imputation(torch.from_numpy(images).float(),
                                   removed.view(3, SIZE, SIZE), noise=0.0)
    np.testing.assert_allclose(ours.numpy(), np.stack(expected), atol=1e-5)
    # The device solver (conjugate gradients, what a GPU runs) solves the same system.
    iterative = noisy_linear_imputation(torch.from_numpy(images).float(),
                                        removed.view(3, SIZE, SIZE), noise=0.0, tolerance=1e-6,
                                        max_iterations=4 * 2 * SIZE + 50)
    np.testing.assert_allclose(iterative.numpy(), np.stack(expected), atol=1e-5)
    # Kept pixels are untouched; removed ones are not copies of the image.
    kept = ~removed.view(3, 1, SIZE, SIZE).expand(-1, 3, -1, -1)
    assert torch.equal(ours[kept], torch.from_numpy(images).float()[kept])


def test_road_imputation_of_a_removed_region_in_a_wide_image_is_quantus() -> None:
    # One connected region (what a CAM removes; its solve is the costly one), in an image wider
    # than tall (the nested-dissection order cuts columns there), beside a scattered removal.
    from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation

    height, width = 24, 40
    rows, columns = np.mgrid[:height, :width]
    region = ((rows - 10) ** 2 / 80 + (columns - 25) ** 2 / 300 < 1).ravel()
    scattered = np.random.default_rng(1).random(height * width) < 0.7
    images = np.random.default_rng(2).random((2, 3, height, width))
    removed = torch.from_numpy(np.stack([region, scattered]))
    expected = [quantus_imputation(images[row], np.flatnonzero(removed[row].numpy()), noise=0.0)
                for row in range(2)]
    ours = noisy_linear_imputation(torch.from_numpy(images), removed.view(2, height, width),
                                   noise=0.0)
    np.testing.assert_allclose(ours.numpy(), np.stack(expected), atol=1e-10)


def test_road_imputation_on_two_solver_threads_is_the_one_thread_result(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The suite runs torch on one thread (conftest); a user's CPU solves images side by side.
    from lightning_modules.saliency.metrics import road

    images = torch.rand(3, 3, SIZE, SIZE, dtype=torch.float64)
    removed = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(4)) < 0.6
    serial = noisy_linear_imputation(images, removed, noise=0.0)
    threads = []
    real_pool = road.ThreadPoolExecutor

    def counting_pool(workers: int) -> Any:
        threads.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(road, "_solver_threads", lambda: 2)
    monkeypatch.setattr(road, "ThreadPoolExecutor", counting_pool)
    assert torch.equal(noisy_linear_imputation(images, removed, noise=0.0), serial)
    assert threads == [2]


@pytest.mark.parametrize("height, width", [(1, 200), (200, 1), (24, 40), (31, 9)])
def test_road_nested_dissection_order_is_a_permutation_with_cuts_last(height: int,
                                                                      width: int) -> None:
    # Any order gives the same solution, so only this test sees a broken one.
    from lightning_modules.saliency.metrics.road import _dissection_ranks

    ranks = _dissection_ranks(height, width)
    assert sorted(ranks.tolist()) == list(range(height * width))
    grid = ranks.reshape(height, width)
    if height * width > 64:  # cut once: the longer side's middle line comes after both halves
        if height >= width:
            middle = height // 2
            assert grid[middle].min() > max(grid[:middle].max(), grid[middle + 1:].max())
        else:
            middle = width // 2
            assert grid[:, middle].min() > max(grid[:, :middle].max(),
                                               grid[:, middle + 1:].max())


def test_road_imputation_with_every_pixel_removed_is_zero_on_both_solvers() -> None:
    # Nothing is left to impute from (the system is singular): both solvers give 0, not NaN.
    images = torch.rand(2, 3, SIZE, SIZE)
    removed = torch.ones(2, SIZE, SIZE, dtype=torch.bool)
    direct = noisy_linear_imputation(images, removed, noise=0.0)
    iterative = noisy_linear_imputation(images, removed, noise=0.0, max_iterations=10)
    assert torch.equal(direct, torch.zeros_like(images))
    assert torch.equal(iterative, torch.zeros_like(images))


def test_road_noise_is_the_generators_and_only_on_removed_pixels() -> None:
    images = torch.rand(2, 3, SIZE, SIZE)
    removed = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) < 0.3
    quiet = noisy_linear_imputation(images, removed, noise=0.0)
    noisy = [noisy_linear_imputation(images, removed, 0.01, torch.Generator().manual_seed(5))
             for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1])
    change = (noisy[0] - quiet).abs()
    assert change[~removed[:, None].expand_as(change)].max() == 0
    assert 0.004 < change[removed[:, None].expand_as(change)].std() < 0.02


def gray_model() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                             nn.Flatten(1), nn.Linear(16, 10)).eval()


def test_road_matches_quantus_on_one_channel_images() -> None:
    # Quantus' ROAD ranks the map broadcast over the channels, which fails for colour images:
    # one-channel images are where both are defined.
    model = gray_model()
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(4, 1, SIZE, SIZE, generator=generator)
    with torch.no_grad():
        targets = model(inputs).argmax(1)
    maps = torch.rand(4, SIZE, SIZE, generator=generator)
    batch = MetricInputs(model, inputs, targets, maps, gradient_map)
    percentages = [5, 20, 40, 60, 80, 95]
    for metric, quantus_maps in ((ROADMoRF(percentages, noise=0.0, tolerance=1e-6), maps),
                                 (ROADLeRF(percentages, noise=0.0, tolerance=1e-6), 1 - maps)):
        accuracy = quantus.ROAD(percentages=percentages, noise=0.0, normalise=False,
                                disable_warnings=True)(
            model=model, x_batch=inputs.numpy(), y_batch=targets.numpy(),
            a_batch=quantus_maps[:, None].numpy(), device="cpu")
        curves = metric.curves(batch)
        np.testing.assert_allclose(curves.mean(0).numpy(), [accuracy[p] for p in percentages])
        # The score is the mean over percentages (not an AUC).
        assert metric.score(batch).mean().item() == pytest.approx(np.mean(list(accuracy.values())))


def test_road_morf_and_lerf_prefer_the_map_of_what_the_model_uses() -> None:
    # The model reads only a bright centre patch; the perfect map marks the patch.
    class PatchReader(nn.Module):
        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            patch = inputs[:, :, 5:11, 5:11].mean(dim=(1, 2, 3))
            return torch.stack([4 * patch - 2, torch.zeros_like(patch)], dim=1)

    generator = torch.Generator().manual_seed(0)
    inputs = 0.1 * torch.randn(2, 3, SIZE, SIZE, generator=generator)
    inputs[:, :, 5:11, 5:11] += 3
    perfect = torch.zeros(2, SIZE, SIZE)
    perfect[:, 5:11, 5:11] = 1
    perfect += 1e-3 * torch.rand(2, SIZE, SIZE, generator=generator)
    scores = {}
    for name, maps in (("perfect", perfect), ("reversed", -perfect)):
        batch = MetricInputs(PatchReader(), inputs, torch.zeros(2, dtype=torch.long), maps,
                             gradient_map, generator=torch.Generator().manual_seed(0))
        scores[name] = (ROADMoRF().score(batch), ROADLeRF().score(batch))
    assert (scores["perfect"][0] < scores["reversed"][0] - 0.5).all()  # MoRF: lower is better
    assert (scores["perfect"][1] > scores["reversed"][1] + 0.5).all()  # LeRF: higher is better


# --- faithfulness correlation --------------------------------------------------------------------


def test_faithfulness_correlation_matches_quantus_on_the_same_subsets(batch, monkeypatch) -> None:
    metric = FaithfulnessCorrelation(runs=12, subset_size=40, batch_size=7)
    subsets = metric.subsets(MetricInputs(**{**vars(batch),
                                             "generator": torch.Generator().manual_seed(1)}))
    # Quantus draws run by run, image by image: hand it ours in that order.
    queue = iter([subsets[image, run].numpy() for run in range(12) for image in range(3)])
    monkeypatch.setattr(np.random, "choice", lambda *args, **kwargs: next(queue))
    expected = quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=40, disable_warnings=True,
                                               return_aggregate=False)(**numpy_batch(batch))
    np.testing.assert_allclose(metric.score(batch).numpy(), expected, atol=1e-5)


def test_faithfulness_correlation_repeats_and_ignores_its_batch_size(batch) -> None:
    def score(batch_size: int, seed: int) -> torch.Tensor:
        metric = FaithfulnessCorrelation(runs=10, subset_size=30, whole_pixels=True,
                                         batch_size=batch_size)
        return metric.score(MetricInputs(**{**vars(batch),
                                            "generator": torch.Generator().manual_seed(seed)}))

    assert torch.equal(score(4, 0), score(30, 0))
    assert not torch.equal(score(4, 0), score(4, 1))
    assert score(4, 0).abs().max() <= 1


# --- randomisation -------------------------------------------------------------------------------


class _LayerSeeds:
    """Stands in for ``torch`` inside Quantus' model wrapper: its one seed per layer becomes ours
    (layer ``j`` from ``seed + j``)."""

    def __init__(self, seed: int) -> None:
        self.seed, self.layer = seed, 0

    def manual_seed(self, seed: int):
        self.layer += 1
        return torch.manual_seed(self.seed + self.layer - 1)

    def __getattr__(self, name: str):
        return getattr(torch, name)


def test_model_parameter_randomisation_matches_quantus_mprt(batch, monkeypatch) -> None:
    import quantus.helpers.model.pytorch_model as quantus_model

    monkeypatch.setattr(quantus_model, "torch", _LayerSeeds(7))
    maps = gradient_map(batch.model, batch.inputs, batch.targets)
    batch = MetricInputs(**{**vars(batch), "maps": maps})
    quantus_inputs = {**numpy_batch(batch), "explain_func": quantus_explainer(gradient_map)}
    per_layer = quantus.MPRT(seed=0, disable_warnings=True)(**quantus_inputs)
    metric = ModelParameterRandomisation(granularity="modules", seed=7)
    names, ours = metric.layer_similarities(batch)
    assert names == [name for name in per_layer if name != "original"]
    np.testing.assert_allclose(ours.numpy(), np.stack([per_layer[name] for name in names], 1),
                               atol=1e-6)
    np.testing.assert_allclose(metric.score(batch).numpy(), ours.mean(1).numpy(), atol=1e-6)
    last = ModelParameterRandomisation(granularity="modules", seed=7, reduce="last")
    np.testing.assert_allclose(last.score(batch).numpy(), ours[:, -1].numpy(), atol=1e-6)
    # Quantus' average also counts its "original" entry (here 1: the same method's map).
    monkeypatch.setattr(quantus_model, "torch", _LayerSeeds(7))
    average = quantus.MPRT(seed=0, return_average_correlation=True, disable_warnings=True)(
        **quantus_inputs)
    original = np.asarray(per_layer["original"])
    np.testing.assert_allclose(original, 1.0, atol=1e-9)
    layers = len(names)
    np.testing.assert_allclose(average, (original + layers * ours.mean(1).numpy()) / (layers + 1),
                               atol=1e-6)


def test_randomisation_of_an_edge_map_that_ignores_the_model_is_one(batch) -> None:
    edges = MetricInputs(**{**vars(batch), "maps": edge_map(None, batch.inputs, batch.targets),
                            "explain": edge_map})
    for similarity in ("spearman", "ssim"):
        score = ModelParameterRandomisation(similarity=similarity).score(edges)
        np.testing.assert_allclose(score.numpy(), 1.0, atol=1e-6)
    gradients = MetricInputs(**{**vars(batch),
                                "maps": gradient_map(batch.model, batch.inputs, batch.targets)})
    assert (ModelParameterRandomisation().score(gradients) < 0.9).all()


def test_a_map_the_randomized_network_leaves_flat_counts_as_similarity_zero(batch) -> None:
    """Grad-CAM's map can go flat (all zero) once a block is random: its rank correlation is
    undefined, and NaN would void the image's whole score."""
    calls = []

    def flat_after_the_first(model, inputs, targets):
        calls.append(1)
        maps = gradient_map(model, inputs, targets)
        return maps if len(calls) == 1 else torch.zeros_like(maps)

    flattening = MetricInputs(**{**vars(batch), "explain": flat_after_the_first})
    names, values = ModelParameterRandomisation().layer_similarities(flattening)
    assert len(names) > 1 and not torch.isnan(values).any()
    assert (values[:, 1:] == 0).all() and (values[:, 0] != 0).all()


def _skimage_ssim_2d(a, b, batched=True, **_):
    from skimage.metrics import structural_similarity

    def one(first, second):
        both = np.concatenate([first, second])
        return structural_similarity(first.reshape(SIZE, SIZE), second.reshape(SIZE, SIZE),
                                     data_range=float(both.max() - both.min()))
    return [one(first, second) for first, second in zip(a, b)]


def test_random_logit_matches_quantus_on_the_same_classes(batch) -> None:
    maps = gradient_map(batch.model, batch.inputs, batch.targets)
    drawn = []

    def explain(model, inputs, targets):
        drawn.append(targets.clone())
        return max_normalised(gradient_map(model, inputs, targets))

    quantus_inputs = {**numpy_batch(batch), "a_batch": max_normalised(maps)[:, None].numpy(),
                      "explain_func": quantus_explainer(explain)}
    spearman = quantus.similarity_func.correlation_spearman
    for similarity, quantus_similarity in (("ssim", _skimage_ssim_2d), ("spearman", spearman)):
        drawn.clear()
        expected = quantus.RandomLogit(num_classes=10, similarity_func=quantus_similarity,
                                       normalise=False, disable_warnings=True)(**quantus_inputs)
        metric = RandomLogit(similarity=similarity)
        metric.other_classes = lambda _batch: drawn[-1]
        assert (drawn[-1] != batch.targets).all()
        ours = metric.score(MetricInputs(**{**vars(batch), "maps": maps}))
        np.testing.assert_allclose(ours.numpy(), expected, atol=1e-6)


def test_quantus_default_random_logit_is_the_ssim_of_flattened_maps(batch) -> None:
    # With one image per call, Quantus' batch normalisation is the map's own.
    for image in range(3):
        one = MetricInputs(**{key: (value[image:image + 1] if key in ("inputs", "targets", "maps")
                                    else value) for key, value in vars(batch).items()})
        drawn = []

        def explain(model, inputs, targets):
            drawn.append(targets.clone())
            return gradient_map(model, inputs, targets)

        expected = quantus.RandomLogit(num_classes=10, disable_warnings=True)(
            **numpy_batch(one), explain_func=quantus_explainer(explain))
        other = gradient_map(one.model, one.inputs, drawn[-1])
        flat = [max_normalised(maps).view(1, 1, -1) for maps in (one.maps, other)]
        np.testing.assert_allclose(uniform_ssim(*flat).numpy(), expected, atol=1e-6)


def test_random_logit_draws_every_other_class_and_repeats(model) -> None:
    targets = torch.arange(10).repeat(40)
    batch = MetricInputs(model, torch.zeros(400, 3, 4, 4), targets, torch.zeros(400, 4, 4),
                         gradient_map, generator=torch.Generator().manual_seed(0))
    others = RandomLogit().other_classes(batch)
    assert (others != targets).all() and set(others.tolist()) == set(range(10))
    batch.generator = torch.Generator().manual_seed(0)
    assert torch.equal(RandomLogit().other_classes(batch), others)


# --- every metric --------------------------------------------------------------------------------


METRICS = [Deletion(steps=8), Insertion(steps=8), ROADMoRF([10, 50, 90], noise=0.0),
           ROADLeRF([10, 50, 90], noise=0.0), ModelParameterRandomisation(),
           ModelParameterRandomisation(similarity="ssim", granularity="modules")]


@pytest.mark.parametrize("metric", METRICS, ids=lambda metric: metric.name)
def test_a_batch_scores_as_its_images_one_by_one(metric, batch) -> None:
    batch = MetricInputs(**{**vars(batch),
                            "maps": gradient_map(batch.model, batch.inputs, batch.targets)})
    together = metric.score(batch)
    alone = torch.cat([metric.score(MetricInputs(
        **{key: (value[image:image + 1] if key in ("inputs", "targets", "maps") else value)
           for key, value in vars(batch).items()})) for image in range(3)])
    assert together.shape == (3,) and together.dtype == torch.float32
    np.testing.assert_allclose(together.numpy(), alone.numpy(), atol=1e-6)


@pytest.mark.parametrize("metric", METRICS + [FaithfulnessCorrelation(), RandomLogit()],
                         ids=lambda metric: metric.name)
def test_metrics_state_name_family_perturbation_and_normalisation(metric) -> None:
    assert metric.name and metric.family in ("faithfulness", "randomisation")
    assert len(metric.perturbation) > 20 and metric.normalisation
    assert metric.name in repr(metric) or type(metric).__name__ in repr(metric)


@pytest.mark.parametrize("build", [
    lambda: Deletion(steps=0), lambda: Deletion(substrate="grey"), lambda: Insertion(batch_size=0),
    lambda: ROADMoRF(percentages=[0, 50]), lambda: ROADMoRF(percentages=[]),
    lambda: ROADLeRF(noise=-1), lambda: ROADMoRF(measure="auc"),
    lambda: FaithfulnessCorrelation(runs=1), lambda: FaithfulnessCorrelation(baseline="white"),
    lambda: FaithfulnessCorrelation(subset_size=2.5), lambda: FaithfulnessCorrelation(output="x"),
    lambda: ModelParameterRandomisation(granularity="layers"),
    lambda: ModelParameterRandomisation(reduce="max"), lambda: ModelParameterRandomisation(seed=-1),
    lambda: RandomLogit(similarity="pearson"), lambda: RandomLogit(classes=1),
])
def test_bad_options_are_one_sentence(build) -> None:
    with pytest.raises(UserInputError) as error:
        build()
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message


def test_a_subset_larger_than_the_image_is_one_sentence(batch) -> None:
    with pytest.raises(UserInputError, match="subset_size"):
        FaithfulnessCorrelation(subset_size=SIZE * SIZE * 3 + 1).score(batch)

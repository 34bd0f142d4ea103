"""Our targeted PGD against torchattacks' ``PGD`` as an oracle, on tiny random networks.

torchattacks (``torchattacks.PGD(model, eps, alpha, steps, random_start=False)`` in targeted
mode) is the reference implementation most users know. Its step is, on 0-1 pixels ``x`` with the
original ``x0``::

    cost = -CrossEntropyLoss()(model(x), target)       # batch mean; minus: targeted
    x = x + alpha * sign(grad of cost wrt x)
    x = clamp(x0 + clamp(x - x0, -eps, eps), 0, 1)      # the ball first, then [0, 1]

Ours (:class:`~lightning_modules.fooling.steps.ProjectedStep`) descends ``-log p(target)`` summed
over the batch, takes the gradient with respect to the *normalized* input, divides it by ``std``
to get the pixels' gradient, and projects in the same order (δ into the ball, then the image into
[0, 1]). The conventions that differ do not change the result:

* torchattacks ascends ``-CE``, we descend ``+CE``: the same direction;
* its loss is the batch mean, ours the sum: ``sign`` ignores the positive factor, and each image's
  loss depends only on its own pixels;
* it differentiates with respect to pixels through the wrapper's normalization, we with respect to
  the normalized input and divide by ``std > 0``: the same sign;
* our pixels make a round trip through the normalization each step, which costs a few float32
  ulps (measured: at most 4e-9 after 10 steps), far below the 1e-5 asserted here.

What differs by design is when the loop stops: torchattacks takes every step for every image,
ours checks each image before each step and stops it once it is fooled (its 8-bit version, with
``quantize``). So the first test picks a target that no image reaches within the steps, where
both take every step; the second lets ours stop early and checks each stopped image against
torchattacks run for exactly that image's number of steps.
"""

from __future__ import annotations

import pytest
import torch

from conftest import build_tiny_backbone, two_layer_backbone
from lightning_modules.backbones import Backbone, PixelInputs
from lightning_modules.fooling import FoolingAttack, pgd_attack, quantize_pixels

torchattacks = pytest.importorskip("torchattacks")

EPS, STEP = 8 / 255, 2 / 255


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these convolutions are tiny, and on a busy 2-core machine a second thread
    only waits for the other (measured: 3x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pixels(count: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(count, 3, size, size, generator=generator)
    pixels[:, :, :3] = 0.0  # pixels at the ends of the range exercise the [0, 1] clamp
    pixels[:, :, -3:] = 1.0
    return pixels


def _torchattacks_pgd(backbone: Backbone, pixels: torch.Tensor, target: torch.Tensor,
                      steps: int, step_size: float = STEP) -> torch.Tensor:
    attack = torchattacks.PGD(PixelInputs(backbone), eps=EPS, alpha=step_size, steps=steps,
                              random_start=False)
    attack.set_mode_targeted_by_label(quiet=True)
    return attack(pixels, target)


def test_every_step_taken_gives_torchattacks_pixels() -> None:
    # conftest's tiny net pools its features globally: its least likely class stays out of
    # reach for 10 steps, so no image stops early and both loops take every step.
    backbone = build_tiny_backbone()
    pixels = _pixels(4)
    inputs = backbone.normalize(pixels)
    with torch.no_grad():
        target = backbone(inputs).argmin(dim=1)
    steps = 10  # past eps / step = 4 steps, so the projection into the ball is exercised

    expected = _torchattacks_pgd(backbone, pixels, target, steps)
    attack = FoolingAttack("pgd", eps=EPS, step_size=STEP, mean=backbone.mean, std=backbone.std,
                           quantize=True)
    images, progress = attack.run(inputs, target, backbone, max_iter=steps)
    functional = pgd_attack(inputs, target, backbone, mean=backbone.mean, std=backbone.std,
                            eps=EPS, step_size=STEP, max_iter=steps)

    assert not progress.fooled.any()
    assert progress.steps.tolist() == [steps] * len(pixels)
    assert (expected - pixels).abs().max() == pytest.approx(EPS, abs=1e-6)  # the ball is reached
    for ours in (images, functional):
        assert torch.allclose(backbone.denormalize(ours), expected, atol=1e-5, rtol=0)


def test_images_stopped_early_are_fooled_and_match_torchattacks_at_their_step() -> None:
    # Eight classes and a 4x4 feature grid: most targets fall within a few steps.
    backbone = two_layer_backbone("oracle_tiny", 8, 4, [f"class {i}" for i in range(8)],
                                  (0.5,) * 3, (0.25,) * 3)
    pixels = _pixels(6)
    inputs = backbone.normalize(pixels)
    with torch.no_grad():
        target = (backbone(inputs).argmax(dim=1) + 1) % 8
    step_size, max_iter = 1 / 255, 30
    attack = FoolingAttack("pgd", eps=EPS, step_size=step_size, mean=backbone.mean,
                           std=backbone.std, quantize=True)
    images, progress = attack.run(inputs, target, backbone, max_iter=max_iter)

    assert progress.fooled.any()
    assert len(set(progress.steps[progress.fooled].tolist())) > 1  # images stopped apart
    assert (progress.steps[~progress.fooled] == max_iter).all()
    saved = quantize_pixels(backbone.denormalize(images))  # what a PNG would hold
    with torch.no_grad():
        predicted = backbone(backbone.normalize(saved)).argmax(dim=1)
    assert (predicted[progress.fooled] == target[progress.fooled]).all()
    # A stopped image is torchattacks' image after as many steps: stopping only froze it.
    for row in range(len(pixels)):
        steps = int(progress.steps[row])
        expected = _torchattacks_pgd(backbone, pixels[row : row + 1], target[row : row + 1],
                                     steps, step_size)
        assert torch.allclose(backbone.denormalize(images[row : row + 1]), expected, atol=1e-5,
                              rtol=0)

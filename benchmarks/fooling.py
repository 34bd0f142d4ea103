"""Targeted PGD: a plain PyTorch loop, torchattacks and our FoolingAttack, side by side.

    python benchmarks/fooling.py            # 3 photos x 5 targets, 224 px, up to 50 steps
    python benchmarks/fooling.py --quick    # 1 photo x 2 targets, 10 steps

The same attack for every method: EfficientNet-Lite0 (the offline ImageNet weights, inputs
normalized with mean = std = 0.5), the built-in sample photos at 224 px (shorter side resized,
centre crop, as ``LabeledImageData`` does), each paired with every target class, all jobs in one
batch; targeted PGD with an L∞ budget of 8/255 in 0-1 pixels, steps of 2/255, no random start,
at most 50 steps. The methods:

* ``plain loop``: the textbook loop, written below on 0-1 pixels: ``x -= step * sign(grad of
  CE(model(x), target))``, then ``x0 + clamp(x - x0, ±eps)`` clamped to [0, 1]; every step for
  every image;
* ``torchattacks``: ``torchattacks.PGD(..., random_start=False)`` in targeted mode, on the same
  pixel model; every step for every image (its images equal the plain loop's: printed);
* ``ours``: ``FoolingAttack(method="pgd", quantize=True)``: the same step, but each image is
  checked (its 8-bit version) before each step and stops at its first success;
* ``ours, robust_to jpeg75``: the same with expectation over JPEG 75 (4 draws a step, the real
  encoder forward, straight through backward), and an image stops only when its 8-bit version
  also fools after a real JPEG 75 round trip.

Success is judged the same way for all: the final pixels rounded to 8 bits (a PNG) classified as
the target, and that picture after a real Pillow JPEG 75 round trip classified as the target.
Timing: one torch thread unless ``--threads`` says otherwise; wall clock of the attack alone (not
the judging), after one untimed 1-step warm-up of each method; with ``--repeats`` > 1 the methods
alternate and the median is printed. Ratios are time / time of the plain loop and time / time of
torchattacks.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules.labeled_images import SAMPLE_LABELS, preprocess  # noqa: E402
from lightning_modules.backbones import Backbone, PixelInputs, load_backbone  # noqa: E402
from lightning_modules.fooling import FoolingAttack, quantize_pixels  # noqa: E402
from lightning_modules.fooling.robustness import fools, jpeg, transformation  # noqa: E402

TARGETS = ("stingray", "flamingo", "balloon", "Granny Smith", "snail")
EPS, STEP = 8 / 255, 2 / 255

# An attack: (0-1 pixels [N, 3, H, W], targets [N], steps) -> (0-1 pixels, mean steps taken).
Attack = Callable[[torch.Tensor, torch.Tensor, int], tuple[torch.Tensor, float]]


def plain_pgd(model: nn.Module, pixels: torch.Tensor, target: torch.Tensor, steps: int,
              eps: float = EPS, step_size: float = STEP) -> torch.Tensor:
    """Textbook targeted PGD (L∞, no random start): every step for every image.

    Args:
        model: Maps 0-1 pixels to logits.
        pixels: Original 0-1 pixels ``[N, 3, H, W]``.
        target: ``[N]`` target classes.
        steps: Steps to take.
        eps: The L∞ budget in 0-1 pixel units.
        step_size: The step in 0-1 pixel units.

    Returns:
        The attacked 0-1 pixels.
    """
    original = pixels.detach()
    attacked = original.clone()
    for _ in range(steps):
        attacked.requires_grad_(True)
        loss = F.cross_entropy(model(attacked), target)
        (gradient,) = torch.autograd.grad(loss, attacked)
        with torch.no_grad():
            attacked = attacked - step_size * gradient.sign()  # descend the CE to the target
            attacked = (original + (attacked - original).clamp(-eps, eps)).clamp(0, 1)
    return attacked.detach()


def attacks(backbone: Backbone) -> dict[str, Attack]:
    """Each method, as a function of pixels, targets and the most steps."""
    import torchattacks

    model = PixelInputs(backbone).eval()

    def plain(pixels: torch.Tensor, target: torch.Tensor, steps: int) -> tuple[torch.Tensor, float]:
        return plain_pgd(model, pixels, target, steps), float(steps)

    def theirs(pixels: torch.Tensor, target: torch.Tensor,
               steps: int) -> tuple[torch.Tensor, float]:
        attack = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=steps, random_start=False)
        attack.set_mode_targeted_by_label(quiet=True)
        return attack(pixels, target), float(steps)

    class RandomJpeg(nn.Module):
        """The network behind a JPEG 75 that happens half the time (straight-through), the
        random model torchattacks' EOT-PGD averages over: the same EOT as ours."""

        def __init__(self) -> None:
            super().__init__()
            self.jpeg = transformation("jpeg75")
            self.model = model  # a submodule, so that torchattacks finds the device

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            if bool(torch.rand(()) < 0.5):
                pixels = self.jpeg.sample(pixels, None)
            return self.model(pixels)

    def theirs_eot(pixels: torch.Tensor, target: torch.Tensor,
                   steps: int) -> tuple[torch.Tensor, float]:
        attack = torchattacks.EOTPGD(RandomJpeg().eval(), eps=EPS, alpha=STEP, steps=steps,
                                     eot_iter=4, random_start=False)
        attack.set_mode_targeted_by_label(quiet=True)
        return attack(pixels, target), float(steps)

    def ours(robust_to: tuple[str, ...]) -> Attack:
        def run(pixels: torch.Tensor, target: torch.Tensor,
                steps: int) -> tuple[torch.Tensor, float]:
            attack = FoolingAttack("pgd", eps=EPS, step_size=STEP, mean=backbone.mean,
                                   std=backbone.std, quantize=True, robust_to=robust_to)
            images, progress = attack.run(backbone.normalize(pixels), target, backbone, steps)
            return backbone.denormalize(images), float(progress.steps.float().mean())
        return run

    return {"plain loop": plain, "torchattacks": theirs, "ours": ours(()),
            "torchattacks EOT-PGD, jpeg75": theirs_eot,
            "ours, robust_to jpeg75": ours(("jpeg75",))}


@torch.no_grad()
def success(backbone: Backbone, pixels: torch.Tensor,
            target: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """Success rates on the 8-bit picture and after a real JPEG 75 round trip, and the picture."""
    saved = quantize_pixels(pixels)
    compressed = torch.stack([jpeg(75)(picture) for picture in saved]).to(saved)
    rates = []
    for picture in (saved, compressed):
        probabilities = backbone(backbone.normalize(picture)).softmax(dim=1)
        rates.append(float(fools(probabilities, target, 0.0).float().mean()))
    return rates[0], rates[1], saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 photo, 2 targets, 10 steps")
    parser.add_argument("--steps", type=int, default=None, help="most steps (default 50)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each method")
    # One thread: on a shared 2-core machine a second OpenMP thread waits for a core that another
    # process holds, and the same step took 0.2 s or 5 s (measured); one thread is steady.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's)")
    parser.add_argument("--image-size", type=int, default=224)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = args.steps or (10 if args.quick else 50)
    photos = list(SAMPLE_LABELS)[:1 if args.quick else None]
    target_names = TARGETS[:2 if args.quick else None]

    torch.manual_seed(0)
    backbone = load_backbone("efficientnet_lite0").eval()
    pictures = torch.stack([preprocess(f"sample:{name}", args.image_size) for name in photos])
    # Every photo with every target, as one batch: photo-major order.
    pixels = pictures.repeat_interleave(len(target_names), dim=0)
    target = torch.tensor([backbone.class_index(name) for name in target_names] * len(photos))
    methods = attacks(backbone)

    print(f"{len(pixels)} jobs ({', '.join(photos)} x {', '.join(target_names)}), "
          f"{args.image_size} px, eps 8/255, step 2/255, at most {steps} steps; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}",
          flush=True)
    for attack in methods.values():
        attack(pixels[:1], target[:1], 1)  # warm-up: first-call allocations, lazy imports
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, tuple[torch.Tensor, float]] = {}
    for repeat in range(args.repeats):
        for name, attack in methods.items():
            start = time.perf_counter()
            results[name] = attack(pixels, target, steps)
            seconds[name].append(time.perf_counter() - start)
            print(f"run {repeat + 1} {name:24s} {seconds[name][-1]:7.2f} s", flush=True)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    header = ("| method | seconds | images/s | steps/image | success 8-bit | "
              "success after JPEG 75 | time / plain loop | time / torchattacks |")
    print()
    print(header)
    print("|---|---|---|---|---|---|---|---|")
    for name, (attacked, mean_steps) in results.items():
        eight_bit, after_jpeg, _ = success(backbone, attacked, target)
        spread = (f" [{min(seconds[name]):.1f}-{max(seconds[name]):.1f}]"
                  if args.repeats > 1 else "")
        print(f"| {name} | {median[name]:.1f}{spread} | {len(pixels) / median[name]:.2f} | "
              f"{mean_steps:.1f} | {eight_bit:.0%} | {after_jpeg:.0%} | "
              f"{median[name] / median['plain loop']:.2f} | "
              f"{median[name] / median['torchattacks']:.2f} |")
    same = (results["plain loop"][0] - results["torchattacks"][0]).abs().max()
    print(f"\nplain loop vs torchattacks: largest pixel difference {float(same):.1e}")
    print("The plain loop and torchattacks take every step for every image; ours checks each "
          "image (8-bit; with robust_to also after a real JPEG 75) before each step and stops it "
          "at its first success, so its time depends on how soon the images fool "
          "(steps/image).")


if __name__ == "__main__":
    main()

"""Attribution speed and memory, side by side: our Grad-CAM against pytorch-grad-cam's, our
Integrated Gradients and SmoothGrad against Captum's, on the same network, inputs and work.

On CPU (about 3 minutes on a shared 2-core Xeon with the defaults)::

    python benchmarks/attribution.py --device cpu --size 160 --images 2 --steps 16 --repeats 3
    python benchmarks/attribution.py --device cpu --threads 1 --clock cpu   # busy machine
    python benchmarks/attribution.py --device cpu --scorecam-size 64 --only score  # Score-CAM (slow)

On a GPU::

    python benchmarks/attribution.py --device cuda --size 224 --images 8 --steps 32

The network is EfficientNet-Lite0 with its offline ImageNet weights; the inputs are random
images of ``--size`` px for random classes, the same for both sides. What "the same work" means:

* **Grad-CAM** at the last feature layer (conv_head + bn2, 1280 x 7 x 7 at 224 px): one forward
  pass and one backward pass for the batch. pytorch-grad-cam hooks a layer whose output
  requires grad, so it needs a model whose weights require grad (as its README uses it: the
  backward pass then also computes every weight's gradient); the second peer row gives it
  frozen weights and ``compute_input_gradient`` instead (the backward pass runs down to the
  input). Ours stops the backward pass at the layer. Both return the same 0-1 maps (the
  "max abs diff" column, relative to the largest value of ours).
* **Integrated Gradients**: ``--steps`` Gauss-Legendre points, zero baseline. Ours runs one
  batch of ``--images`` per point; Captum with ``internal_batch_size=--images`` does the same
  passes; Captum's default puts all ``images x steps`` inputs through in one pass.
* **SmoothGrad**: ``--steps`` noisy samples, the same sigma. Ours one batch per sample; Captum's
  ``NoiseTunnel(Saliency)`` with ``nt_samples_batch_size=1`` the same passes, and its default all
  samples at once. (Captum averages ``|gradient|`` per channel and we average the channel
  maximum of it: the same passes, a different last reduction, so no "max |diff|".)
* **Score-CAM** (with ``--scorecam-size``, one image): a forward pass per channel of the layer
  (1280), in batches of 32 (ours) and 16 (pytorch-grad-cam's default).

Time: wall clock (or with ``--clock cpu`` the process's CPU time, steadier on a shared
machine) of one call, warm-up first, the sides interleaved ``--repeats`` times; the
median. Memory: each call once more in a fresh child process (this script with a hidden flag),
after the network and inputs are built and one forward pass has warmed the kernels. On CPU the
figure is the growth of the process's peak resident memory over the call (Linux's VmHWM, reset
just before it through ``/proc/self/clear_refs``): what the call made the process hold,
allocator slack included, one-time set-up excluded. On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocated bytes before the call. The ratio
column is ours / peer: below 1 we are faster or leaner.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_modules.backbones import Backbone, load_backbone  # noqa: E402
from lightning_modules.saliency import (  # noqa: E402
    integrated_gradients,
    smoothgrad_saliency,
)
from lightning_modules.saliency.cam import grad_cam, score_cam  # noqa: E402

NOISE_LEVEL = 0.15


def setting(args: argparse.Namespace) -> tuple[Backbone, torch.Tensor, torch.Tensor]:
    backbone = load_backbone("efficientnet_lite0").to(args.device)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.images, 3, args.size, args.size, generator=generator)
    targets = torch.randint(0, 1000, (args.images,), generator=generator)
    return backbone, backbone.normalize(pixels.to(args.device)), targets.to(args.device)


def calls(args: argparse.Namespace, backbone: Backbone, X: torch.Tensor,
          y: torch.Tensor) -> dict[str, dict[str, Callable[[], torch.Tensor]]]:
    """Per comparison, its sides by name (ours first); each call returns a map or attribution."""
    from captum.attr import IntegratedGradients, NoiseTunnel, Saliency
    from pytorch_grad_cam import GradCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    targets = [ClassifierOutputTarget(int(c)) for c in y]
    # pytorch-grad-cam's hooks stay on a network and fire in every forward pass (keeping each
    # activation): each of its objects gets its own copy, so that no other side runs them.
    trainable = copy.deepcopy(backbone).requires_grad_(True)
    library_cam = GradCAM(trainable, [trainable.features[-1]])
    frozen = copy.deepcopy(backbone)
    frozen_cam = GradCAM(frozen, [frozen.features[-1]])
    frozen_cam.compute_input_gradient = True  # BaseCAM's option, which GradCAM does not pass on
    sigma = NOISE_LEVEL * (X.amax() - X.amin()).item()  # one sigma for the batch, both sides
    noise_level = sigma / (X.amax(dim=(1, 2, 3)) - X.amin(dim=(1, 2, 3)))
    assert torch.allclose(noise_level, noise_level[0], rtol=1e-3)  # random images: one range
    ig, tunnel = IntegratedGradients(backbone), NoiseTunnel(Saliency(backbone))
    steps, count = args.steps, args.images

    def numpy_map(cam) -> Callable[[], torch.Tensor]:
        return lambda: torch.from_numpy(cam(X, targets)).to(X.device)

    table = {
        "Grad-CAM": {
            "ours": lambda: grad_cam(X, y, backbone),
            "pytorch-grad-cam (trainable weights)": numpy_map(library_cam),
            "pytorch-grad-cam (frozen, input gradient)": numpy_map(frozen_cam),
        },
        f"Integrated Gradients, {steps} steps": {
            "ours": lambda: integrated_gradients(X, y, backbone, steps=steps),
            f"Captum, internal_batch_size={count}": lambda: ig.attribute(
                X, target=y, n_steps=steps, internal_batch_size=count),
            "Captum, default (one pass)": lambda: ig.attribute(X, target=y, n_steps=steps),
        },
        f"SmoothGrad, {steps} samples": {
            "ours": lambda: smoothgrad_saliency(X, y, backbone, noise_level[0].item(), steps),
            "Captum, nt_samples_batch_size=1": lambda: tunnel.attribute(
                X, nt_type="smoothgrad", nt_samples=steps, nt_samples_batch_size=1,
                stdevs=sigma, target=y, abs=True),
            "Captum, default (one pass)": lambda: tunnel.attribute(
                X, nt_type="smoothgrad", nt_samples=steps, stdevs=sigma, target=y, abs=True),
        },
    }
    if args.scorecam_size:
        small = torch.nn.functional.interpolate(X[:1], size=args.scorecam_size, mode="bilinear")
        scored = copy.deepcopy(backbone)
        library_score = ScoreCAM(scored, [scored.features[-1]])
        table[f"Score-CAM, 1 image at {args.scorecam_size} px"] = {
            "ours": lambda: score_cam(small, y[:1], backbone, internal_batch_size=32),
            "pytorch-grad-cam": lambda: torch.from_numpy(
                library_score(small, targets[:1])).to(X.device),
        }
    return table


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(call: Callable[[], torch.Tensor], device: str,
          clock: Callable[[], float] = time.perf_counter) -> tuple[float, torch.Tensor]:
    synchronize(device)
    start = clock()
    result = call()
    synchronize(device)
    return clock() - start, result


def _status_kib(key: str) -> int:
    return int(re.search(key + r":\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def measure_memory(args: argparse.Namespace) -> None:
    """The child: one call of one side, its memory growth as JSON on stdout."""
    torch.set_num_threads(args.threads)
    backbone, X, y = setting(args)
    group, side = args.measure_memory.split("::")
    call = calls(args, backbone, X, y)[group][side]
    with torch.no_grad():
        backbone(X)  # kernels and thread pools set up outside the figure
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        call()
        torch.cuda.synchronize()
        grown = torch.cuda.max_memory_allocated() - before
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak resident memory := current
        before = _status_kib("VmRSS")
        call()
        grown = (_status_kib("VmHWM") - before) * 1024
    print(json.dumps({"bytes": grown}))


def memory_in_child(args: argparse.Namespace, group: str, side: str) -> float:
    command = [sys.executable, __file__, "--measure-memory", f"{group}::{side}"]
    for name in ("device", "size", "images", "steps", "threads", "scorecam_size"):
        command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["bytes"]


def mib(count: float) -> str:
    return f"{count / 2**20:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=160, help="image side, px")
    parser.add_argument("--images", type=int, default=2, help="images per batch")
    parser.add_argument("--steps", type=int, default=16, help="IG points and SmoothGrad samples")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the process's CPU time (steadier on a shared machine)")
    parser.add_argument("--scorecam-size", type=int, default=0, help="0: no Score-CAM row")
    parser.add_argument("--only", nargs="*", help="comparisons whose name holds one of these")
    parser.add_argument("--no-memory", action="store_true", help="time only")
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.measure_memory:
        return measure_memory(args)
    torch.set_num_threads(args.threads)
    backbone, X, y = setting(args)
    table = {group: sides for group, sides in calls(args, backbone, X, y).items()
             if not args.only or any(word.lower() in group.lower() for word in args.only)}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.device}, {args.threads} threads; EfficientNet-Lite0, {args.images} images of "
          f"{args.size} px, {args.repeats} repeats, {args.clock} clock")
    times: dict[tuple[str, str], list[float]] = {}
    differences: dict[tuple[str, str], float] = {}
    for group, sides in table.items():  # warm-up, and the maps' agreement
        reference = None
        for side, call in sides.items():
            _, result = timed(call, args.device)
            if reference is None:
                reference = result
            elif group.startswith(("Grad-CAM", "Score-CAM", "Integrated")):
                differences[group, side] = ((result.to(reference) - reference).abs().max()
                                            / reference.abs().max()).item()
    for _ in range(args.repeats):
        for group, sides in table.items():
            for side, call in sides.items():
                times.setdefault((group, side), []).append(timed(call, args.device, clock)[0])
    print("| comparison | side | time [min-max] | ours / peer, time | peak memory growth | "
          "ours / peer, memory | max abs diff / max abs of ours |")
    print("|---|---|---|---|---|---|---|")
    for group, sides in table.items():
        ours_time = statistics.median(times[group, "ours"])
        memory = {} if args.no_memory else {
            side: memory_in_child(args, group, side) for side in sides}
        for side in sides:
            runs = times[group, side]
            median = statistics.median(runs)
            time_ratio = "" if side == "ours" else f"**{ours_time / median:.2f}**"
            shown_memory = mib(memory[side]) if memory else "n/m"
            memory_ratio = ("" if side == "ours" or not memory
                            else f"{memory['ours'] / max(memory[side], 1):.2f}")
            difference = f"{differences[group, side]:.1e}" if (group, side) in differences else ""
            print(f"| {group} | {side} | {median * 1000:.0f} ms [{min(runs) * 1000:.0f}-"
                  f"{max(runs) * 1000:.0f}] | {time_ratio} | {shown_memory} | {memory_ratio} | "
                  f"{difference} |", flush=True)


if __name__ == "__main__":
    main()

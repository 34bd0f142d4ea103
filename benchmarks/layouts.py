"""What channels-last and torch.compile do to one optimization step, without Lightning around it.

    python benchmarks/layouts.py                          # CPU, 192 px, 1 thread
    python benchmarks/layouts.py --device cuda --size 512 # GPU: compile uses CUDA graphs

A step is a style-transfer step on the default backbone (Gram-matrix loss on layers 1-4, a
content loss on layer 4, backward, Adam), run four ways through the project's own
:class:`~lightning_modules.backbones.Backbone`: eager, channels-last, compiled
(:meth:`Backbone.compile_network`: mode ``reduce-overhead`` on CUDA, ``default`` on a CPU), and
compiled in channels-last (the ``--model.fast`` path, which also fuses Adam). The ways take turns,
round by round, after an untimed warm-up that includes the compilation. Printed: each way's
median time per step [min-max over rounds], its speed relative to eager and how far its image
is from eager's after the same steps (rounding only), and the count of CUDA graph skips (a
compiled way that fell back to plain kernel launches). This is the measurement behind
``fast_path_compile_mode`` (CPU runs stay eager).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from lightning_modules.backbones import DEFAULT_BACKBONE, load_backbone  # noqa: E402
from lightning_modules.losses import content_loss, gram_matrix, style_loss  # noqa: E402

WAYS = ("eager", "channels_last", "compiled", "compiled_channels_last")
CONTENT_LAYER, STYLE_LAYERS = 4, (1, 2, 3, 4)


def make_step(way: str, device: torch.device, size: int, batch: int,
              precision: str) -> tuple[Callable[[], None], torch.Tensor]:
    """One way's step function, with its own backbone, image and optimizer.

    Args:
        way: One of :data:`WAYS`.
        device: Where to run.
        size: Image height; the width is 1.5 times it (a landscape photo).
        batch: Images per step.
        precision: ``"32-true"`` or ``"bf16-mixed"`` (autocast).

    Returns:
        The step, and the image it optimizes (every way starts from the same one).
    """
    backbone = load_backbone(DEFAULT_BACKBONE).to(device)
    fast = way.startswith("compiled")
    if way.endswith("channels_last"):
        backbone.use_channels_last()
    if fast:
        backbone.compile_network("reduce-overhead" if device.type == "cuda" else "default")
    generator = torch.Generator().manual_seed(0)
    shape = (batch, 3, size, size * 3 // 2)
    start = torch.randn(shape, generator=generator).to(device)
    if way.endswith("channels_last"):
        start = start.contiguous(memory_format=torch.channels_last)
    image = torch.nn.Parameter(start)
    with torch.no_grad():
        content = backbone.extract(start, [CONTENT_LAYER])[0].clone()
        style = [feature.clone() for feature in backbone.extract(
            torch.randn(shape, generator=generator).to(device), STYLE_LAYERS)]
    optimizer = torch.optim.Adam([image], lr=0.05, fused=fast or None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=precision == "bf16-mixed")
    style_targets = [gram_matrix(feature) for feature in style]

    def step() -> None:
        if fast and device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        with autocast:
            features = backbone.extract(image, [CONTENT_LAYER, *STYLE_LAYERS])
            loss = (content_loss(1.0, features[0], content)
                    + style_loss(features[1:], list(range(len(STYLE_LAYERS))), style_targets,
                                 [1e4] * len(STYLE_LAYERS))).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=None, help="default: 192 (CPU), 512 (GPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.size or (512 if device.type == "cuda" else 192)
    steps = args.steps or (100 if device.type == "cuda" else 10)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    ways = [way for way in args.ways.split(",") if way]
    print(f"torch {torch.__version__}, {device.type}"
          + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
             f", {torch.get_num_threads()} threads")
          + f", {DEFAULT_BACKBONE}, {size} x {size * 3 // 2} px, batch {args.batch}, "
          f"{args.precision}", flush=True)
    steps_of, images = {}, {}
    for way in ways:
        started = now()
        steps_of[way], images[way] = make_step(way, device, size, args.batch, args.precision)
        for _ in range(args.warmup):
            steps_of[way]()
        print(f"   {way}: set-up and {args.warmup} warm-up steps {now() - started:.1f} s",
              flush=True)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for round_index in range(args.rounds):
        for way in ways if round_index % 2 == 0 else ways[::-1]:
            started = now()
            for _ in range(steps):
                steps_of[way]()
            times[way].append((now() - started) / steps)
    eager = statistics.median(times[ways[0]])
    for way in ways:
        median = statistics.median(times[way])
        # Every way took the same steps from the same start: the images must agree.
        difference = float((images[way].detach().float() - images[ways[0]].detach().float())
                           .abs().max())
        print(f"   {way:<24s} {median * 1e3:8.2f} ms/step [{min(times[way]) * 1e3:.2f}-"
              f"{max(times[way]) * 1e3:.2f}], {args.batch / median:7.1f} image-steps/s, "
              f"speed vs {ways[0]} x{eager / median:.2f}, max |image - {ways[0]}'s| "
              f"{difference:.2g}")
    # A compiled way that silently fell back to plain CUDA launches would show here.
    skips = counters["inductor"]["cudagraph_skips"]
    print(f"   CUDA graph skips: {skips}" + (" (CUDA graphs are only used on a GPU)"
                                             if device.type != "cuda" else ""))


if __name__ == "__main__":
    main()

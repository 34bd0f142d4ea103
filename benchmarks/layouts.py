"""What channels-last and torch.compile do to one optimization step, without Lightning around it.

    python benchmarks/layouts.py                          # CPU, 192 px, 1 thread
    python benchmarks/layouts.py --device cuda --size 512 # GPU: compile uses CUDA graphs

The step is ``run.py``'s plain style-transfer loop (``plain_loop.style_transfer_steps``, the
shipped config's options and images), run four ways through the project's own
:class:`~lightning_modules.backbones.Backbone`: eager, channels-last, compiled
(:meth:`Backbone.compile_network`: mode ``reduce-overhead`` on CUDA, ``default`` on a CPU), and
compiled in channels-last with a fused Adam (what ``--model.fast`` does). The ways take turns,
round by round, after an untimed warm-up that includes the compilation. Printed: each way's
median time per step [min-max over rounds], its speed relative to eager, how far its image is
from eager's after the first step, and the count of CUDA graph skips (a compiled way that fell
back to plain kernel launches). The first step is compared, not the last: Adam's first step
moves every pixel by about ``lr * sign(gradient)``, so rounding flips only the pixels whose
gradient is near zero (max 2 lr, mean near 0), while over tens of steps the optimization
amplifies any rounding (eager from content changed by 1e-6 drifts as far: mean 0.09 after 35
steps at 192 px). This is the measurement behind
``fast_path_compile_mode`` (CPU runs stay eager).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch._dynamo.utils import counters  # noqa: E402

from benchmarks.run import Config, PlainRunner  # noqa: E402

WAYS = ("eager", "channels_last", "compiled", "compiled_channels_last")


def make_loop(way: str, config: Config) -> Iterator[Optional[torch.Tensor]]:
    """One way's plain style-transfer loop, with its own backbone, set up and ready to step.

    Args:
        way: One of :data:`WAYS`.
        config: Device, image size (shorter side), batch and precision.
    """
    runner = PlainRunner(config)
    compiled = way.startswith("compiled")
    if way.endswith("channels_last"):
        runner.backbone.use_channels_last()
    if compiled:
        runner.backbone.compile_network("reduce-overhead" if config.device == "cuda"
                                        else "default")
    loop = runner.steps(fused=way == "compiled_channels_last")
    next(loop)  # the set-up: targets, starting image, optimizer
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=None,
                        help="shorter side in px; default: 192 (CPU), 512 (GPU)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], default="32-true")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (at least 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    device = torch.device(args.device)
    size = args.size or (512 if device.type == "cuda" else 192)
    steps = args.steps or (100 if device.type == "cuda" else 10)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    config = Config("style_transfer", device.type, size, args.batch, args.precision)

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    ways = [way for way in args.ways.split(",") if way]
    loops, first = {}, {}
    for way in ways:
        started = now()
        loops[way] = make_loop(way, config)
        first[way] = next(loops[way]).clone()
        for _ in range(args.warmup - 1):
            next(loops[way])
        if way == ways[0]:
            print(f"torch {torch.__version__}, {device.type}"
                  + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
                     f", {torch.get_num_threads()} threads")
                  + f", style transfer (configs/style_transfer.yaml), image "
                  f"{' x '.join(map(str, first[way].shape[-2:]))} px, batch {args.batch}, "
                  f"{args.precision}", flush=True)
        print(f"   {way}: set-up and {args.warmup} warm-up steps {now() - started:.1f} s",
              flush=True)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for round_index in range(args.rounds):
        for way in ways if round_index % 2 == 0 else ways[::-1]:
            started = now()
            for _ in range(steps):
                next(loops[way])
            times[way].append((now() - started) / steps)
    eager = statistics.median(times[ways[0]])
    for way in ways:
        median = statistics.median(times[way])
        # Every way starts from the same image: after one step they must agree (see above).
        difference = (first[way].float() - first[ways[0]].float()).abs()
        print(f"   {way:<24s} {median * 1e3:8.2f} ms/step [{min(times[way]) * 1e3:.2f}-"
              f"{max(times[way]) * 1e3:.2f}], {args.batch / median:7.1f} image-steps/s, "
              f"speed vs {ways[0]} x{eager / median:.2f}; step 1 vs {ways[0]}: mean |diff| "
              f"{float(difference.mean()):.2g}, max {float(difference.max()):.2g}")
    # A compiled way that silently fell back to plain CUDA launches would show here.
    skips = counters["inductor"]["cudagraph_skips"]
    print(f"   CUDA graph skips: {skips}" + (" (CUDA graphs are only used on a GPU)"
                                             if device.type != "cuda" else ""))


if __name__ == "__main__":
    main()

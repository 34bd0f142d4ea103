"""Peak memory of a saliency run over a folder of N images: it must not grow with N.

Makes N distinct photos (the built-in samples, each shifted and flipped a different way) in a
temporary folder, runs ``cli.py predict --config configs/saliency.yaml`` on them in a child
process per N (one process, or ``--devices`` CPU processes), and reports the run's peak
resident memory (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` in a fresh wrapper process around
it: the largest of the run's processes) and its time::

    python benchmarks/saliency_memory.py                      # 100 and 1000 images, vanilla
    python benchmarks/saliency_memory.py --counts 100 1000 --method smoothgrad --samples 8 \
        --internal-batch-size 16 --devices 2
    # memory against the number of path points instead (IG, 16 inputs per pass):
    python benchmarks/saliency_memory.py --counts 8 --method integrated_gradients \
        --steps 16 256 --internal-batch-size 16

Every file the run writes (two PNGs and a .npy per image, a sheet per batch, the CSV) is
written, as in a user's run, into a temporary run folder that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SAMPLES = ("chelsea", "coffee", "rocket", "astronaut")


def make_photos(folder: Path, count: int) -> None:
    """``count`` distinct 256 px photos: sample ``i % 4``, rolled by ``i`` pixels, flipped."""
    import torch

    from datamodules.images import image_to_tensor, load_image, resize_shorter_side, save_png

    photos = [image_to_tensor(resize_shorter_side(load_image(f"sample:{name}"), 256))
              for name in SAMPLES]
    for index in range(count):
        photo = torch.roll(photos[index % len(photos)], shifts=index // len(photos), dims=2)
        if index % 2:
            photo = photo.flip(2)
        save_png(photo, folder / f"photo_{index:05d}.png")


def measure(count: int, steps: int, args: argparse.Namespace,
            work: Path) -> tuple[float, float]:
    """Peak resident MiB and seconds of one ``predict`` over ``count`` photos."""
    photos = work / f"photos_{count}"
    if not photos.exists():
        photos.mkdir()
        make_photos(photos, count)
    command = [sys.executable, str(REPO / "cli.py"), "predict",
               "--config", str(REPO / "configs" / "saliency.yaml"),
               "--data.images", str(photos), "--model.target", "predicted",
               "--model.method", args.method, "--model.samples", str(args.samples),
               "--model.steps", str(steps),
               "--data.batch_size", str(args.batch_size),
               "--trainer.logger.init_args.save_dir", str(work / f"runs_{count}_{steps}"),
               "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu",
               "--trainer.devices", str(args.devices)]
    if args.internal_batch_size:
        command += ["--model.internal_batch_size", str(args.internal_batch_size)]
    if args.devices > 1:
        command += ["--trainer.strategy", "ddp"]
    # A fresh wrapper per run: its children's peak is this run's alone (ru_maxrss of children
    # is a maximum over every child a process ever waited for).
    wrapper = [sys.executable, "-c", _WRAPPER, *command]
    start = time.perf_counter()
    completed = subprocess.run(wrapper, cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(completed.stderr[-3000:])
    peak_kib = int(completed.stdout.strip().splitlines()[-1])
    return peak_kib / 1024, seconds


_WRAPPER = """import resource, subprocess, sys
completed = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
if completed.returncode:
    sys.exit(completed.returncode)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--method", default="vanilla")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--steps", type=int, nargs="+", default=[50],
                        help="Integrated Gradients' path points (several: one run each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--internal-batch-size", type=int, default=None)
    parser.add_argument("--devices", type=int, default=1)
    args = parser.parse_args()
    print(f"| images | steps | peak RSS (MiB) | time (s) | s/image |  method {args.method}, "
          f"batch {args.batch_size}, internal batch {args.internal_batch_size}, "
          f"{args.devices} process(es)")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for count in sorted(args.counts):
            for steps in args.steps:
                peak, seconds = measure(count, steps, args, Path(work))
                print(f"| {count} | {steps} | {peak:.0f} | {seconds:.0f} | "
                      f"{seconds / count:.3f} |", flush=True)


if __name__ == "__main__":
    main()

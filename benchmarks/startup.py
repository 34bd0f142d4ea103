"""Start-up time: ``cli.py`` against neural-style-pt, from process launch to the first step.

    python benchmarks/startup.py                      # 3 runs each, 256 px, 1 thread
    python benchmarks/startup.py --repeats 5 --image-size 128

Both tools do the same work: VGG-19 (one random-weights torchvision ``vgg19`` state dict,
written once into a temporary folder as ``vgg19-random.pth``; neural-style-pt's VGG class has
torchvision's key layout, so the one file serves both, through ``-model_file`` and
``--model.weights``), the same 256 x 256 content and style PNG files, content layer relu4_2,
style layers relu1_1 ... relu5_1 (neural-style-pt's defaults; ``features`` indices 22 and
1, 6, 11, 20, 29 for ``cli.py``), the content image as the starting image, Adam, on the CPU with
one thread (``OMP_NUM_THREADS=1`` and ``MKL_NUM_THREADS=1`` for both). Each tool otherwise runs
with its own defaults (``cli.py``: progress bar, model summary, CSV logger, checkpointing).

How "first step" is detected: each tool is started in a fresh interpreter through this file's
``--child`` mode, which imports torch, registers torch's global optimizer step post-hook
(``torch.optim.optimizer.register_optimizer_step_post_hook``) and then runs the tool's own entry
point (``cli.py`` as ``__main__``; neural-style-pt's console-script function
``neural_style.neural_style:main``) with the tool's command line. Both tools step a
``torch.optim.Adam``, so the hook fires when the first optimization step (its forward, backward
and update, after the network, images and targets are ready) has finished; it writes the seconds
since launch (the parent's clock read just before ``subprocess.Popen``) and ends the process at
once, so neither tool's tear-down (checkpoints, images) is counted. Importing torch first does
not change the work: both tools import it before anything else that costs. The runs alternate
(ours, theirs, ours, ...) after one untimed warm-up run of each (page cache, ``.pyc`` files).

Printed: every measurement, each tool's median, and as the last line the ratio of the medians,
ours / neural-style-pt.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAUNCH_ENV = "STARTUP_BENCH_LAUNCH"
RESULT_ENV = "STARTUP_BENCH_RESULT"


def child(tool: str, argv: list[str]) -> None:
    """Run ``tool`` with ``argv`` in this process; end it after the first optimizer step."""
    launched = float(os.environ[LAUNCH_ENV])
    result = os.environ[RESULT_ENV]
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def first_step(optimizer, args, kwargs) -> None:
        elapsed = time.time() - launched
        Path(result).write_text(f"{elapsed:.3f}\n")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    register_optimizer_step_post_hook(first_step)
    torch.set_num_threads(1)
    if tool == "ours":
        import runpy

        sys.argv = [str(REPO / "cli.py"), *argv]
        sys.path.insert(0, str(REPO))
        runpy.run_path(str(REPO / "cli.py"), run_name="__main__")
    else:
        sys.argv = ["neural-style", *argv]
        from neural_style.neural_style import main  # parses sys.argv when imported

        main()
    raise SystemExit(f"{tool} ended without an optimizer step")


def write_inputs(folder: Path, image_size: int) -> tuple[Path, Path, Path]:
    """The weights file and the content and style images both tools read."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    torch.manual_seed(0)
    weights = folder / "vgg19-random.pth"  # neural-style-pt picks its VGG-19 by the name
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), weights)
    side = np.linspace(0, 1, image_size)
    paths = []
    for name, seed in (("content", 0), ("style", 1)):
        noise = np.random.default_rng(seed).random((image_size, image_size, 3))
        smooth = np.stack([side[None, :].repeat(image_size, 0), side[:, None].repeat(image_size, 1),
                           noise[..., 2]], axis=-1)
        pixels = (255 * (0.6 * smooth + 0.4 * noise)).astype(np.uint8)
        path = folder / f"{name}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return weights, paths[0], paths[1]


def commands(folder: Path, weights: Path, content: Path, style: Path,
             image_size: int) -> dict[str, list[str]]:
    """Each tool's command line for the same style transfer."""
    ours = [
        "fit", "--config", str(REPO / "configs" / "style_transfer.yaml"),
        "--model.backbone", "vgg19", "--model.weights", str(weights),
        "--model.content_layers", "[22]", "--model.style_layers", "[1, 6, 11, 20, 29]",
        "--model.style_weights", "[100, 100, 100, 100, 100]", "--model.content_weight", "5",
        "--model.tv_weight", "0.001", "--model.init", "content", "--model.optimizer", "adam",
        "--model.lr", "1.0",
        "--data.content", str(content), "--data.style", str(style),
        "--data.image_size", str(image_size), "--trainer.max_steps", "1000",
        "--trainer.default_root_dir", str(folder / "runs"),
    ]
    theirs = [
        "-content_image", str(content), "-style_image", str(style),
        "-image_size", str(image_size), "-gpu", "c", "-backend", "nn",
        "-model_file", str(weights), "-optimizer", "adam", "-learning_rate", "1.0",
        "-init", "image", "-num_iterations", "1000", "-print_iter", "0", "-save_iter", "0",
        "-seed", "0", "-output_image", str(folder / "neural_style_out.png"),
    ]
    return {"ours": ours, "neural-style-pt": theirs}


def time_once(tool: str, argv: list[str], folder: Path) -> float:
    """Seconds from launch to the end of the first optimizer step."""
    result = folder / "first_step.txt"
    result.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           RESULT_ENV: str(result), "PYTHONWARNINGS": "ignore"}
    name = "ours" if tool == "ours" else "neural-style"
    env[LAUNCH_ENV] = repr(time.time())
    completed = subprocess.run([sys.executable, __file__, "--child", name, "--", *argv],
                               env=env, cwd=folder, capture_output=True, text=True, check=False)
    if not result.is_file():
        raise RuntimeError(f"{tool} failed (exit {completed.returncode}):\n"
                           f"{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    return float(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each tool")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--tools", default="ours,neural-style-pt",
                        help="comma-separated subset, e.g. 'ours' to profile ours alone")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child, rest[1:] if rest[:1] == ["--"] else rest)
        return
    tools = args.tools.split(",")
    with tempfile.TemporaryDirectory(prefix="startup_bench_") as temp:
        folder = Path(temp)
        lines = commands(folder, *write_inputs(folder, args.image_size), args.image_size)
        for tool in tools:
            time_once(tool, lines[tool], folder)  # warm-up, not counted
        times: dict[str, list[float]] = {tool: [] for tool in tools}
        for repeat in range(args.repeats):
            for tool in tools:
                seconds = time_once(tool, lines[tool], folder)
                times[tool].append(seconds)
                print(f"run {repeat + 1} {tool:16s} {seconds:7.2f} s to the first step", flush=True)
        medians = {tool: statistics.median(values) for tool, values in times.items()}
        for tool, values in times.items():
            print(f"{tool:16s} median {medians[tool]:.2f} s  [{min(values):.2f}-{max(values):.2f}]")
        if len(tools) == 2:
            print(f"ratio ours / neural-style-pt: {medians['ours'] / medians['neural-style-pt']:.3f}")


if __name__ == "__main__":
    main()

"""Flicker, measured: our video against the same frames stylized independently.

Each variant is ``cli.py fit --config video_style_transfer`` in its own process, on one clip
(default: the built-in pan with a zoom over a sample photo), with the same style and steps:

- ``temporal``: the shipped config (warm start from the warped previous result, temporal loss);
- ``independent``: ``--model.warm_start false``: every frame a style transfer of its own, at
  every scale and ``max_steps`` steps (what a frame-by-frame loop does).

For each it reads the run's ``temporal.csv`` (the warping error of Lai et al. 2018 per frame,
computed on the input's flow), measures every output frame's style loss with the same network
and terms, and times each frame (the gaps between the frames' files). It writes a figure of the
error per frame, a strip of stills and a Markdown table::

    python benchmarks/video_flicker.py --out /tmp/flicker --frames 0:72 --image-size 256
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {"temporal": [], "independent": ["--model.warm_start", "false"],
            # Two processes, a segment each, cross-faded where they meet: the seam's error.
            "two_processes": ["--trainer.devices", "2", "--trainer.strategy", "image_ddp"],
            "two_processes_overlap_4": ["--trainer.devices", "2", "--trainer.strategy",
                                        "image_ddp", "--data.overlap", "4"],
            "two_processes_overlap_12": ["--trainer.devices", "2", "--trainer.strategy",
                                         "image_ddp", "--data.overlap", "12"],
            # Candidates weighed when choosing the defaults (docs/video.md).
            "warm_start_only": ["--model.temporal_weight", "0"],
            "temporal_500": ["--model.temporal_weight", "500"],
            "temporal_5000": ["--model.temporal_weight", "5000"],
            "temporal_20000": ["--model.temporal_weight", "20000"],
            "temporal_100000": ["--model.temporal_weight", "100000"],
            "long_term": ["--model.long_term", "[1, 2, 4]"],
            "two_passes": ["--data.passes", "2"],
            "warm_lr_0.005": ["--model.warm_lr", "0.005"],
            "warm_lr_0.01": ["--model.warm_lr", "0.01"],
            "long_term_20000": ["--model.long_term", "[1, 2, 4]", "--model.temporal_weight",
                                "20000"]}


def run_variant(name: str, extra: list[str], args: argparse.Namespace) -> Path:
    """One ``cli.py fit`` run; returns its run folder."""
    root = args.out / name
    finished = [run for run in (root / "video_style_transfer").glob("version_*")
                if (run / "temporal.csv").is_file()]
    if finished:  # measured before with these options: read it again
        return finished[0]
    command = [sys.executable, str(REPO / "cli.py"), "fit", "--config", "video_style_transfer",
               "--data.content", args.content, "--data.style", args.style,
               "--data.image_size", str(args.image_size), "--data.frames", args.frames,
               "--trainer.max_steps", str(args.steps), "--model.warm_steps", str(args.warm_steps),
               "--trainer.logger.init_args.save_dir", str(root),
               "--trainer.enable_progress_bar", "false", *args.option, *extra]
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    print(f"{name}: {time.time() - started:.0f} s", flush=True)
    return max((root / "video_style_transfer").glob("version_*"), key=lambda p: p.stat().st_mtime)


def frame_seconds(run: Path) -> list[float]:
    """Seconds each frame took: the gaps between the frames' files in the order they were
    written (a backward pass's too; the first from the run's start, its config file)."""
    frames = sorted((run / "frames").rglob("frame_*.png"), key=lambda p: p.stat().st_mtime)
    times = [(run / "config.yaml").stat().st_mtime] + [p.stat().st_mtime for p in frames]
    return [after - before for before, after in zip(times, times[1:])]


def style_losses(run: Path, args: argparse.Namespace) -> list[float]:
    """Each output frame's style loss, as the run's style term computes it."""
    import torch
    import yaml

    from datamodules.images import image_to_tensor, load_image, resize_shorter_side
    from lightning_modules.backbones import load_backbone
    from lightning_modules.style_transfer.terms.style import StyleTerm

    config = yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]
    backbone = load_backbone(config["backbone"], "default")
    term = StyleTerm(config["style_layers"], config["style_weights"], config["style_loss"])
    term.bind(backbone, wrap=False)
    style = image_to_tensor(resize_shorter_side(load_image(args.style), args.image_size,
                                                args.style))

    class Job:  # what the style term reads of a job
        styles, style_blend_weights, style_masks = [style], [1.0], []

    losses = []
    with torch.no_grad():
        for path in sorted((run / "frames").glob("frame_*.png")):
            pixels = image_to_tensor(load_image(path))[None]
            job = Job()
            job.size = tuple(pixels.shape[-2:])
            target = term.target([job], [job.size], backbone, torch.device("cpu"))
            pictures = backbone.normalize(pixels)
            features = dict(zip(term.layers, backbone.extract(pictures, term.layers)))
            losses.append(float(term.loss(pictures, features, target, 0)[0]))
    return losses


def warping_errors(run: Path) -> list[float]:
    with open(run / "temporal.csv") as handle:
        return [float(row["warping_error"]) for row in csv.DictReader(handle)]


def figure(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(8, 3), dpi=120)
    for name, result in results.items():
        errors = result["errors"]
        axis.plot(range(1, len(errors) + 1), errors,
                  label=f"{name} (mean {statistics.mean(errors):.4f})")
    axis.set_xlabel("frame")
    axis.set_ylabel("warping error")
    axis.set_yscale("log")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    axis.set_title("Flicker per frame (Lai et al. 2018), lower is steadier")
    fig.tight_layout()
    fig.savefig(path)


def strip(results: dict[str, dict], path: Path, args: argparse.Namespace, picks: int = 4
          ) -> None:
    """Rows: the input, then each variant; columns: evenly spaced frames."""
    from PIL import Image, ImageDraw

    from datamodules.images import resize_shorter_side
    from datamodules.video_io import select_frames
    from datamodules.video_style_transfer import open_clip

    first = next(iter(results.values()))
    count = len(sorted((first["run"] / "frames").glob("frame_*.png")))
    chosen = [round(i * (count - 1) / (picks - 1)) for i in range(picks)]
    clip = open_clip(args.content, None)
    indices = select_frames(clip.frame_count, args.frames, 1)
    rows = [("input", [resize_shorter_side(clip.frame(indices[i]).convert("RGB"),
                                           args.image_size) for i in chosen])]
    for name, result in results.items():
        rows.append((name, [Image.open(result["run"] / "frames" / f"frame_{i:06d}.png")
                            .convert("RGB") for i in chosen]))
    width, height = rows[0][1][0].size
    sheet = Image.new("RGB", (width * picks, (height + 18) * len(rows)), "white")
    for row, (name, pictures) in enumerate(rows):
        top = row * (height + 18)
        for column, picture in enumerate(pictures):
            sheet.paste(picture, (column * width, top + 18))
        ImageDraw.Draw(sheet).text((4, top + 3), name, fill="black")
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--content", default="sample:chelsea")
    parser.add_argument("--style", default="sample:immunohistochemistry")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--frames", default="0:72")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warm-steps", type=int, default=30)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--option", action="append", default=[],
                        help="an extra cli.py argument for every variant (repeat)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.variants:
        run = run_variant(name, VARIANTS[name], args)
        seconds = frame_seconds(run)
        results[name] = {"run": run, "errors": warping_errors(run),
                         "style": style_losses(run, args), "seconds": seconds}
    print("| variant | mean warping error | max | mean style loss | first frame s | "
          "later frames s (median) |")
    print("|---|---|---|---|---|---|")
    for name, result in results.items():
        errors, seconds = result["errors"], result["seconds"]
        print(f"| {name} | {statistics.mean(errors):.5f} | {max(errors):.5f} | "
              f"{statistics.mean(result['style']):.2f} | {seconds[0]:.1f} | "
              f"{statistics.median(seconds[1:]):.1f} |")
    for name in [name for name in results if name.startswith("two_processes")]:
        run = results[name]["run"]
        errors = results[name]["errors"]
        shared = sorted(int(p.stem.split("_")[1]) for p in (run / "frames" / "overlap").glob(
            "*_chain1.png"))
        seam = [errors[position - 1] for position in range(shared[0], shared[-1] + 2)]
        others = [e for position, e in enumerate(errors, start=1)
                  if not shared[0] <= position <= shared[-1] + 1]
        print(f"{name}: frames {shared[0]}-{shared[-1]} shared; warping error there "
              f"max {max(seam):.5f}, elsewhere median {statistics.median(others):.5f}, "
              f"max {max(others):.5f}")
    if {"temporal", "independent"} <= results.keys():
        ratio = (statistics.mean(results["temporal"]["errors"])
                 / statistics.mean(results["independent"]["errors"]))
        print(f"warping error ratio temporal / independent: {ratio:.3f}")
    figure(results, args.out / "flicker.png")
    strip(results, args.out / "strip.png", args)
    print(f"figures: {args.out / 'flicker.png'}, {args.out / 'strip.png'}")


if __name__ == "__main__":
    main()

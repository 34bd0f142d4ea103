"""Do people's and another network's eyes see the class? The default class-visualization config,
judged by EfficientNet-Lite2 from its PNGs, on the config's classes and on classes never tuned on.

    python benchmarks/class_recognition.py                  # both sets of 10 classes
    python benchmarks/class_recognition.py --set untuned    # one set
    python benchmarks/class_recognition.py --steps 20       # a shorter run (not the figure)

Each set is one ``cli.py fit --config configs/class_visualization.yaml`` run (the config as
committed: its parameterization, transforms, steps and step size) into a fresh folder. Then every
saved ``<class>.png`` is read back and judged here, apart from the run's own report: the
probability and rank EfficientNet-Lite2 gives the class on the whole picture, the share of 8
random half-area crops (mirrored half the time) it puts at top-1, and the picture's contrast (the
luminance's 1st-99th percentile range). The marks of issue 11: crops top-1 >= 60 % and mean
contrast >= 0.7 on both sets. The run's ``recognition.csv`` must agree with the figures read back
(printed as the largest difference).
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import cli  # noqa: E402
from datamodules.images import image_to_tensor, load_image  # noqa: E402
from lightning_modules.backbones import load_backbone, native_input_size  # noqa: E402
from lightning_modules.class_visualization.recognition import recognise, summary  # noqa: E402

CONFIG = ROOT / "configs" / "class_visualization.yaml"
SETS = {
    # The config's own ten (tuned on).
    "config": [76, 78, 113, 130, 207, 366, 417, 604, 683, 948],
    # Ten chosen before any tuning and never looked at while tuning: goldfish, hummingbird, lion,
    # monarch, zebra, coffee mug, school bus, broccoli, banana, pizza.
    "untuned": [1, 94, 291, 323, 340, 504, 779, 937, 954, 963],
}
JUDGE = "efficientnet_lite2"


def run_set(name: str, classes: list[int], folder: Path, steps: int | None) -> dict:
    extra = ["--trainer.max_steps", str(steps)] if steps else []
    start = time.perf_counter()
    code = cli.main(["fit", "--config", str(CONFIG), "--data.classes", str(classes),
                     "--trainer.logger.init_args.save_dir", str(folder),
                     "--trainer.enable_progress_bar", "false", *extra])
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"The {name} run failed (exit {code}).")
    run = next((folder / "class_visualization").glob("version_*"))
    judge = load_backbone(JUDGE).eval().requires_grad_(False)
    own = load_backbone("efficientnet_lite0").eval().requires_grad_(False)
    with open(run / "recognition.csv", newline="") as handle:
        reported = list(csv.DictReader(handle))
    verdicts, gaps = [], []
    print(f"\n{name}: {len(classes)} classes, {seconds:.0f} s for the run ({run})")
    print(f"{'class':<28} {'own p':>6} {'lite2 p':>8} {'rank':>5} {'crops':>6} {'contrast':>9}")
    for index, row in enumerate(reported):
        pixels = image_to_tensor(load_image(run / f"{row['name']}.png"))[None]
        target = int(row["class_index"])
        verdict, = recognise(pixels, [target], judge, judge.normalize, native_input_size(JUDGE),
                             seed=index)
        with torch.no_grad():
            own_p = float(own(own.normalize(pixels)).softmax(1)[0, target])
        verdicts.append(verdict)
        gaps.append(max(abs(verdict.crop_top1 - float(row["crop_top1"])),
                        abs(verdict.contrast - float(row["contrast"])),
                        abs(verdict.judge_prob - float(row["judge_prob"]))))
        print(f"{row['name']:<28} {own_p:>6.2f} {verdict.judge_prob:>8.2f} "
              f"{verdict.judge_rank:>5} {verdict.crop_top1:>6.0%} {verdict.contrast:>9.2f}")
    means = summary(verdicts)
    print(f"{'mean':<28} {'':>6} {means['judge_prob']:>8.2f} {means['judge_top1']:>5.0%} "
          f"{means['crop_top1']:>6.0%} {means['contrast']:>9.2f}   "
          f"(recognition.csv differs by at most {max(gaps):.4f})")
    return {"set": name, "seconds": seconds, **means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=[*SETS, "both"], default="both")
    parser.add_argument("--steps", type=int, default=None, help="override trainer.max_steps")
    parser.add_argument("--keep", type=Path, default=None,
                        help="write the runs under this new folder and keep them")
    args = parser.parse_args()
    names = list(SETS) if args.set == "both" else [args.set]
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        for name in names:
            results.append(run_set(name, SETS[name], folder / name, args.steps))
    print("\nset       seconds  lite2 top-1  crops top-1  contrast   (marks: crops >= 60 %, "
          "contrast >= 0.70)")
    for result in results:
        print(f"{result['set']:<9} {result['seconds']:>7.0f}  {result['judge_top1']:>11.0%}  "
              f"{result['crop_top1']:>11.0%}  {result['contrast']:>8.2f}")


if __name__ == "__main__":
    main()

"""The dataset run's promises on 1,000+ images, measured: the same maps on 2 processes as on 1,
the same result after two SIGKILLs and ``--ckpt_path last``, and flat resident memory.

Make the images first (``benchmarks/make_dataset.py``), then::

    python benchmarks/make_dataset.py /tmp/ds1200 --count 1200
    python benchmarks/make_dataset.py /tmp/ds2100 --count 2100 --seed 1
    python benchmarks/dataset_run.py --images /tmp/ds1200/tree --memory-images /tmp/ds2100/dataset.csv \\
        --work /tmp/dataset_run

Every run is ``cli.py predict --config saliency_dataset`` in a child process (its own process
group, its own folder under ``--work``), with the options printed beside the figures:

* **(a) processes**: one run on 1 process, one with ``--trainer.devices 2``; their
  ``index.csv`` (every row and column) and ``load_maps`` (every map of every image) compared.
* **(b) kills**: a run is SIGKILLed from outside (``kill -9`` of its process group) at a random
  moment (after a random number of shards is written, plus a random 0-``--kill-jitter`` s),
  continued with ``--ckpt_path last`` and SIGKILLed again the same way, then continued to the
  end; compared with the 1-process run of (a).
* **(c) memory**: one run over ``--memory-images`` (2,000+), Grad-CAM alone; every
  ``--interval`` s the resident memory of its processes (the sum of ``VmRSS`` in ``/proc`` over
  the process group) and the images finished (rows of the shard CSVs written so far). Reported:
  the peak over the samples while the first 500 images were being explained and over those of
  the last 500, their ratio (target <= 1.05), and the time per image.

Figures go to stdout as Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = dict(os.environ)  # with --threads: OMP_NUM_THREADS for every run
sys.path.insert(0, str(REPO))

from lightning_modules.saliency import load_maps  # noqa: E402


def run_folder(work: Path) -> Path:
    return work / "runs" / "saliency_dataset" / "version_0"


def shard_rows(run: Path) -> int:
    """Images explained so far: the rows of every shard CSV written (a CSV is written after its
    maps, whole, so a present CSV is a finished shard)."""
    count = 0
    for path in (run / "maps").glob("shard_*.csv"):
        try:
            with open(path, newline="") as handle:
                count += sum(1 for _ in csv.DictReader(handle))
        except OSError:
            pass
    return count


def group_rss(group: int) -> int:
    """Resident bytes of every process in a process group (``/proc/<pid>/status`` VmRSS)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:  # field 5 of stat: the process group
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue  # a process that ended between the listing and the read
    return total


class Child:
    """``cli.py predict --config saliency_dataset`` in its own process group and folder."""

    def __init__(self, work: Path, options: list[str]) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.command = [sys.executable, str(REPO / "cli.py"), "predict", "--config",
                        "saliency_dataset", "--trainer.enable_progress_bar", "false", *options]
        self.log = open(work / "log.txt", "a")
        self.log.write("$ " + " ".join(self.command) + "\n")
        self.log.flush()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, cwd=work, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env=CHILD_ENV)

    def wait(self) -> int:
        code = self.process.wait()
        self.seconds = time.perf_counter() - self.started
        self.log.close()
        return code

    def kill_group(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)  # kill -9 of the whole group


def run_to_end(work: Path, options: list[str]) -> float:
    child = Child(work, options)
    code = child.wait()
    if code != 0:
        sys.exit(f"{child.command} failed ({code}); see {work / 'log.txt'}")
    return child.seconds


def kill_midway(work: Path, options: list[str], rng: random.Random, shards: int,
                jitter: float) -> tuple[int, int, float]:
    """Start a run, SIGKILL its process group after a random number of newly written shards
    plus a random delay; returns (shards written before, after, seconds at the kill)."""
    run = run_folder(work)
    before = len(list((run / "maps").glob("shard_*.csv")))
    left = shards - before
    # The first kill in the first half of what is left, the second before the last two shards:
    # a kill always lands mid-run, and a run's last shard is never the one killed.
    most = max(1, left // 2) if before == 0 else max(1, left - 2)
    target = before + rng.randint(1, most)
    delay = rng.uniform(0, jitter)
    child = Child(work, options)
    while len(list((run / "maps").glob("shard_*.csv"))) < target:
        if child.process.poll() is not None:
            sys.exit(f"the run ended before it could be killed; see {work / 'log.txt'}")
        time.sleep(0.2)
    time.sleep(delay)
    child.kill_group()
    code = child.wait()
    if code != -signal.SIGKILL:
        sys.exit(f"expected a SIGKILLed run, got exit code {code}")
    after = len(list((run / "maps").glob("shard_*.csv")))
    return before, after, child.seconds


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def compare(run: Path, reference: Path) -> dict[str, object]:
    """How two finished runs differ: index rows and every map."""
    ours, theirs = rows(run / "index.csv"), rows(reference / "index.csv")
    unequal_rows = sum(a != b for a, b in zip(ours, theirs)) + abs(len(ours) - len(theirs))
    maps, expected = load_maps(run), load_maps(reference)
    largest, unequal_maps, count = 0.0, 0, 0
    for path, by_method in expected.items():
        for method, values in by_method.items():
            found = maps.get(path, {}).get(method)
            count += 1
            if found is None or found.shape != values.shape:
                unequal_maps += 1
                largest = float("inf")
                continue
            difference = float(np.abs(found - values).max())
            unequal_maps += difference > 0
            largest = max(largest, difference)
    return {"rows": len(ours), "reference_rows": len(theirs), "unequal_rows": unequal_rows,
            "maps": count, "unequal_maps": unequal_maps, "max_abs_difference": largest,
            "same_paths": list(maps) == list(expected)}


def equality_options(args: argparse.Namespace) -> list[str]:
    methods = ("[gradcam, {class_path: lightning_modules.saliency.IntegratedGradients, "
               f"init_args: {{steps: {args.ig_steps}, internal_batch_size: 64}}}}]")
    return ["--data.images", str(Path(args.images).resolve()), "--data.image_size",
            str(args.size), "--data.shard_size", str(args.shard_size), "--model.methods", methods,
            "--model.metrics", args.metrics]


def part_equality(args: argparse.Namespace, work: Path) -> None:
    options = equality_options(args)
    print(f"\n## (a) 1 process vs 2, (b) two SIGKILLs then `--ckpt_path last`\n\n"
          f"Options of every run: `{' '.join(options)}` (config defaults otherwise: batch 16, "
          f"controls random/edges/center, seed 0)\n", flush=True)
    one = run_to_end(work / "one_process", options)
    reference = run_folder(work / "one_process")
    images = len(rows(reference / "index.csv"))
    shards = len(list((reference / "maps").glob("shard_*.csv")))
    two = run_to_end(work / "two_processes", options + ["--trainer.devices", "2"])
    rng = random.Random(args.seed)
    killed = work / "killed"
    kills = [kill_midway(killed, options, rng, shards, args.kill_jitter),
             kill_midway(killed, options + ["--ckpt_path", "last"], rng, shards,
                         args.kill_jitter)]
    finished = run_to_end(killed, options + ["--ckpt_path", "last"])
    print("| run | wall s | images | index rows unequal | maps unequal / compared | "
          "max abs map difference | same paths in order |")
    print("|---|---|---|---|---|---|---|")
    print(f"| 1 process (reference) | {one:.0f} | {images} | | | | |")
    for name, run, seconds in (("2 processes", work / "two_processes", f"{two:.0f}"),
                               ("killed twice, then `--ckpt_path last`", killed,
                                f"{sum(k[2] for k in kills) + finished:.0f} (in all)")):
        result = compare(run_folder(run), reference)
        print(f"| {name} | {seconds} | {result['rows']} | {result['unequal_rows']} | "
              f"{result['unequal_maps']} / {result['maps']} | "
              f"{result['max_abs_difference']:.3g} | {result['same_paths']} |", flush=True)
    for number, (before, after, seconds) in enumerate(kills, start=1):
        print(f"\nKill {number}: SIGKILL after {seconds:.0f} s, with {before} shard(s) of "
              f"{shards} written at the start and {after} at the kill.", end="")
    print(flush=True)


def part_memory(args: argparse.Namespace, work: Path) -> None:
    options = ["--data.images", str(Path(args.memory_images).resolve()), "--data.image_size",
               "224", "--data.shard_size", str(args.memory_shard), "--model.methods",
               "[gradcam]", "--model.metrics", "[sparseness]"]
    print(f"\n## (c) resident memory over the run\n\nOptions: `{' '.join(options)}` (Grad-CAM "
          f"alone, scored by sparseness; controls random/edges/center as configured; 1 process)\n", flush=True)
    child = Child(work / "memory", options)
    run = run_folder(work / "memory")
    samples: list[tuple[float, int, int]] = []  # (seconds, images finished, resident bytes)
    while child.process.poll() is None:
        samples.append((time.perf_counter() - child.started, shard_rows(run),
                        group_rss(child.process.pid)))
        time.sleep(args.interval)
    if child.wait() != 0:
        sys.exit(f"the memory run failed; see {work / 'memory' / 'log.txt'}")
    total = len(rows(run / "index.csv"))
    samples = [sample for sample in samples if sample[2] > 0]
    with open(work / "memory" / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seconds", "images_finished", "rss_bytes"])
        writer.writerows(samples)
    # While the first images were explained: fewer than the window finished (the shard holding
    # the window's last image included). The last: from the last count at or before
    # total - window finished (so the shard that crosses into the window counts too).
    window = args.window
    first = [s for s in samples if s[1] < window]
    last_start = max(s[1] for s in samples if s[1] <= total - window)
    last = [s for s in samples if s[1] >= last_start]
    first_peak, last_peak = max(s[2] for s in first), max(s[2] for s in last)
    first_done = min(s[0] for s in samples if s[1] > 0)
    steady = (samples[-1][0] - first_done) / max(samples[-1][1] - min(
        s[1] for s in samples if s[1] > 0), 1)
    print(f"| images | wall s (start to end) | s / image (whole run) | s / image (after the "
          f"first shard) | peak RSS, first {window} | peak RSS, last {window} | last / first | samples |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {total} | {child.seconds:.0f} | {child.seconds / total:.3f} | {steady:.3f} | "
          f"{first_peak / 2**20:.0f} MiB | {last_peak / 2**20:.0f} MiB | "
          f"**{last_peak / first_peak:.3f}** | {len(first)} / {len(last)} |", flush=True)
    print(f"\n(The last {window}: samples from {last_start} images finished on; the samples are in "
          f"{work / 'memory' / 'samples.csv'}.)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", help="dataset for (a) and (b): a class tree or a CSV")
    parser.add_argument("--memory-images", help="dataset of 2,000+ images for (c)")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs (fresh)")
    parser.add_argument("--size", type=int, default=224, help="image size of (a) and (b)")
    parser.add_argument("--ig-steps", type=int, default=32, help="IG's points in (a) and (b)")
    parser.add_argument("--metrics", default="[sparseness]", help="metrics of (a) and (b)")
    parser.add_argument("--shard-size", type=int, default=128, help="shard size of (a), (b)")
    parser.add_argument("--window", type=int, default=500,
                        help="(c): the first and the last this many images are compared")
    parser.add_argument("--memory-shard", type=int, default=100, help="shard size of (c)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--kill-jitter", type=float, default=5.0,
                        help="most random seconds after the chosen shard before a kill")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS of every run (0: unset, as a user runs it; then "
                             "Lightning gives each of 2 processes half the CPUs)")
    args = parser.parse_args()
    if args.threads:
        CHILD_ENV["OMP_NUM_THREADS"] = str(args.threads)
    if args.work.exists() and any(args.work.iterdir()):
        sys.exit(f"{args.work} is not empty: give a fresh folder")
    load = os.getloadavg()
    threads = f"OMP_NUM_THREADS={args.threads}" if args.threads else "OMP_NUM_THREADS unset"
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the start; {threads}",
          flush=True)
    if args.images:
        part_equality(args, args.work)
    if args.memory_images:
        part_memory(args, args.work)
    load = os.getloadavg()
    print(f"\nLoad average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()

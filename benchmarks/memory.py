"""How much memory a run needs, as a function of image size: "how large an image fits in how much".

On CPU (peak resident memory of the process; the default sizes of both techniques took about
3 minutes with one thread on a 2-core Xeon, 2048 px class visualization about 1 minute alone)::

    OMP_NUM_THREADS=1 python benchmarks/memory.py --device cpu --threads 1
    python benchmarks/memory.py --device cpu --sizes 256 512 --techniques style_transfer --batch 4

On a GPU (peak memory of PyTorch's CUDA allocator)::

    python benchmarks/memory.py --device cuda
    python benchmarks/memory.py --device cuda --sizes 1024 2048 4096 --precision bf16-mixed
    python benchmarks/memory.py --device cuda --channels-last --fast   # the speed options

Every measurement is one real ``pl.Trainer.fit`` of the technique's LightningModule and
DataModule (classes and options from ``configs/<technique>.yaml``, settings of a ``cli.py fit``
run without logger, checkpoints or progress bar), for ``--steps`` steps, in a fresh child
process (this script run with a hidden flag), so that nothing left over from an earlier run
counts. Sizes are the *long* side of the image in pixels: style transfer keeps the content
photo's aspect ratio (``sample:chelsea`` is 451 x 300, so 1024 px is 681 x 1024, and the long
side can be a pixel off: 512 px is 341 x 513; the style image gets the same shorter side, as the
config does), class visualization draws squares. The table shows the size actually used.

What the child measures:

* **baseline**: after the module (the frozen backbone) and the datamodule are built, before
  ``fit``: on CPU the process's resident memory (``/proc/self/statm``; Python, torch, Lightning
  and the weights), on CUDA the bytes the allocator holds with the module on the GPU.
* **peak**: the highest memory during ``fit``. On CPU the process's peak resident memory
  (``getrusage(RUSAGE_SELF).ru_maxrss``), reset to the current value just before ``fit``
  (``/proc/self/clear_refs``, Linux 4.0+) so that a transient peak of the start-up is not taken
  for the run's; on CUDA ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``, what
  the caching allocator took from the driver; the CUDA context, a few hundred MiB, is in
  neither).
* **peak - baseline**: what the optimization itself needs (input images, targets, the image
  parameter, the optimizer's state, activations and gradients of a step): the figure that grows
  with the image.
* **ms/step**: wall-clock time per step from the start of the second step to the start of the
  last (so at least 3 steps), a rough figure.

A run that does not fit (CUDA: ``torch.OutOfMemoryError``; CPU: the child killed, e.g. by the
kernel's out-of-memory killer, or an allocation refused) is reported as "does not fit" and the
larger sizes of that technique are skipped. Nothing is written into the repository: each child
runs in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.run import (  # noqa: E402
    TECHNIQUES, ClockCallback, Config, StepClock, build_project, technique_config,
)
from datamodules.images import load_image  # noqa: E402

PRECISIONS = ("32-true", "bf16-mixed")
DEFAULT_SIZES = {"cpu": [256, 512, 1024, 2048], "cuda": [512, 1024, 2048, 4096, 8192]}
CHILD_FLAG = "--_child"
RESULT_PREFIX = "MEMORY_RESULT "
MIB = 2 ** 20


@dataclass
class Measurement:
    """One configuration to measure (what the parent hands a child)."""

    technique: str
    size: int  # long side in pixels
    batch: int
    precision: str
    device: str
    steps: int
    threads: Optional[int]
    channels_last: bool
    fast: bool
    options: Optional[dict[str, Any]] = None  # more init args of the module (--option)


# ============================================================================ the child
def module_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line: the value read as YAML (``true``, ``null``, ``[1]``)."""
    name, _, value = text.partition("=")
    if not name or not _:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, yaml.safe_load(value)


def child_main(measurement: Measurement) -> dict[str, Any]:
    """Build, measure and fit one configuration in this (fresh) process.

    Args:
        measurement: What to run.

    Returns:
        The result: ``status`` (``"ok"``, ``"oom"`` or ``"error"``), ``height``, ``width``,
        ``baseline_bytes``, ``peak_bytes``, ``ms_per_step`` and, on CUDA,
        ``peak_reserved_bytes``; ``error`` holds the error line when it failed.
    """
    if measurement.threads:
        torch.set_num_threads(measurement.threads)
    quiet_lightning()
    result: dict[str, Any] = {"status": "ok", "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="memory_bench_") as run_dir:
        os.chdir(run_dir)  # whatever a library writes by default lands here, not in the repo
        try:
            model, data = build_measured_project(measurement)
            trainer, clock = build_trainer(measurement, run_dir)
            result["baseline_bytes"] = baseline_memory(model, measurement.device)
            result["peak_reset"] = reset_peak_memory(measurement.device)
            fit_quietly(trainer, model, data)
            result.update(peak_memory(measurement.device))
            # From the start of step 1 to the start of the last step (None: too few steps).
            result["ms_per_step"] = (clock.per_step() * 1e3 if measurement.steps >= 3
                                     else None)
            result["height"], result["width"] = (int(n) for n in model.result_pixels(0).shape[-2:])
        except Exception as error:  # noqa: BLE001 - reported to the parent, one line
            result["status"] = "oom" if is_out_of_memory(error) else "error"
            result["error"] = error_line(error)
            if measurement.device == "cuda":
                result.update(peak_memory("cuda"))
    return result


def quiet_lightning() -> None:
    """Silence Lightning's start-up lines and warnings (the child prints one JSON line)."""
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def shorter_side_for(source: str, long_side: int) -> int:
    """The shorter side (``StyleTransferData.image_size``) that makes ``source``'s long side
    ``long_side`` pixels, keeping its aspect ratio."""
    width, height = load_image(source).size
    return max(1, round(long_side * min(width, height) / max(width, height)))


def build_measured_project(measurement: Measurement) -> tuple[Any, Any]:
    """The technique's module and datamodule from its shipped config, sized and batched.

    As ``benchmarks/run.py`` builds them, with the size given as the long side.
    ``--channels-last`` and ``--fast`` add ``channels_last=True`` / ``fast=True`` to the
    module's init args.

    Args:
        measurement: The technique, size, batch and options.

    Returns:
        ``(module, datamodule)``.
    """
    image_size = measurement.size
    if measurement.technique == "style_transfer":
        content = technique_config("style_transfer")["data"]["init_args"]["content"]
        image_size = shorter_side_for(content, measurement.size)
    options = [(name, True) for name in ("channels_last", "fast") if getattr(measurement, name)]
    options += list((measurement.options or {}).items())
    torch.manual_seed(0)  # cli.py's seed_everything_default; ClassVisualization draws from it
    return build_project(Config(measurement.technique, measurement.device, image_size,
                                measurement.batch, measurement.precision), options)


def build_trainer(measurement: Measurement, run_dir: str) -> tuple[pl.Trainer, StepClock]:
    """A Trainer with ``cli.py fit``'s settings, minus logger, checkpoints and progress bar.

    Its clock times the steps from the second to the last (``run.py``'s :class:`StepClock`).
    """
    clock = StepClock(1, measurement.steps, measurement.device)
    trainer = pl.Trainer(
        max_steps=measurement.steps, accelerator="gpu" if measurement.device == "cuda" else "cpu",
        devices=1, precision=measurement.precision, callbacks=[ClockCallback(clock)], logger=False,
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0, log_every_n_steps=10, default_root_dir=run_dir)
    return trainer, clock


def fit_quietly(trainer: Any, model: Any, data: Any) -> None:
    """``trainer.fit`` with its prints sent to /dev/null (stdout carries the result line)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        trainer.fit(model, datamodule=data)


def current_rss_bytes() -> int:
    """This process's resident memory now (``/proc/self/statm``, Linux)."""
    resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``ru_maxrss`` is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def baseline_memory(model: Any, device: str) -> int:
    """Memory in use before ``fit``: RSS on CPU; on CUDA, allocated with the module moved there."""
    if device == "cuda":
        model.to("cuda")  # what fit does first; the weights then count in the baseline
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    return current_rss_bytes()


def reset_peak_memory(device: str) -> bool:
    """Start the peak counters from the current use; False where that is not possible."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return True
    try:  # "5" resets the peak RSS (VmHWM, and with it ru_maxrss) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False  # the peak then also covers the start-up (imports, loading the weights)
    return True


def peak_memory(device: str) -> dict[str, int]:
    """The peak since :func:`reset_peak_memory` (``peak_bytes``; CUDA adds the reserved peak)."""
    if device == "cuda":
        return {"peak_bytes": torch.cuda.max_memory_allocated(),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
    return {"peak_bytes": peak_rss_bytes()}


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) means memory ran out."""
    seen: Optional[BaseException] = error
    while seen is not None:
        if isinstance(seen, (torch.OutOfMemoryError, MemoryError)):
            return True
        text = str(seen).lower()
        if "out of memory" in text or "can't allocate memory" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def error_line(error: BaseException) -> str:
    """The error as one line: ``Type: first line of the message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


# ============================================================================ the parent
def run_child(measurement: Measurement, timeout: float) -> dict[str, Any]:
    """Run one measurement in a fresh process of this script; returns its result.

    Args:
        measurement: What to run.
        timeout: Seconds before the child is killed (reported as ``"timeout"``).

    Returns:
        The child's result (see :func:`child_main`); a child killed by SIGKILL (what the
        out-of-memory killer sends) gives ``status`` ``"killed"``.
    """
    command = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG,
               json.dumps(measurement.__dict__)]
    env = dict(os.environ)
    if measurement.threads:
        env["OMP_NUM_THREADS"] = str(measurement.threads)  # before torch starts its thread pool
    started = time.perf_counter()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                 env=env, cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "error": f"killed after {timeout:.0f} s"}
    for line in reversed(process.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX):])
            result["wall_s"] = time.perf_counter() - started
            return result
    if process.returncode == -signal.SIGKILL:  # what the kernel's out-of-memory killer sends
        return {"status": "killed", "error": "child killed by SIGKILL (out of memory?)"}
    if process.returncode < 0:
        return {"status": "error", "error": f"child killed by signal {-process.returncode}"}
    stderr = [line for line in process.stderr.splitlines() if line.strip()]
    return {"status": "error",
            "error": stderr[-1] if stderr else f"child exited with {process.returncode}"}


def run_technique(technique: str, args: argparse.Namespace) -> list[tuple[Measurement, dict]]:
    """Measure every size of one technique, smallest first, until one does not fit."""
    results = []
    for size in sorted(args.sizes):
        measurement = Measurement(technique, size, args.batch, args.precision, args.device,
                                  args.steps, args.threads, args.channels_last, args.fast,
                                  dict(args.option))
        result = run_child(measurement, args.timeout)
        results.append((measurement, result))
        print(f"# {technique} {size}px: " + json.dumps(result), flush=True)
        if result["status"] != "ok":
            skipped = [s for s in sorted(args.sizes) if s > size]
            if skipped:
                print(f"# {technique}: skipping {skipped} after {result['status']}", flush=True)
            break
    return results


def machine_line(device: str) -> str:
    """The machine in one line: CPU model (or GPU name), memory, torch and Lightning versions."""
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        where = f"GPU {properties.name}, {properties.total_memory / 2 ** 30:.1f} GiB"
    else:
        where = f"CPU {cpu_model()}, {os.cpu_count()} cores, {total_ram_gib():.1f} GiB RAM"
    return (f"{where}; torch {torch.__version__}, pytorch_lightning {version('pytorch_lightning')},"
            f" Python {platform.python_version()}")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_gib() -> float:
    """Total memory of the machine in GiB (``/proc/meminfo``; 0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2 ** 20
    except OSError:
        pass
    return 0.0


def mib(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / MIB:.0f}"


def table_header(device: str) -> list[str]:
    """The table's columns (CUDA adds the caching allocator's peak)."""
    header = ["technique", "size (H x W)", "batch", "precision", "baseline MiB", "peak MiB",
              "peak-baseline MiB"]
    return header + (["peak reserved MiB"] if device == "cuda" else []) + ["ms/step"]


def table_row(measurement: Measurement, result: dict[str, Any], device: str) -> list[str]:
    """One measurement's cells; a failed run has its verdict and error line after the first
    four."""
    row = [measurement.technique, f"{measurement.size} (long side)", str(measurement.batch),
           measurement.precision]
    if result["status"] != "ok":
        verdict = "does not fit" if result["status"] in ("oom", "killed") else result["status"]
        return row + [verdict, result.get("error", "")]
    row[1] = f"{result['height']} x {result['width']}"
    baseline, peak = result["baseline_bytes"], result["peak_bytes"]
    row += [mib(baseline), mib(peak), mib(peak - baseline)]
    if device == "cuda":
        row.append(mib(result.get("peak_reserved_bytes")))
    ms = result.get("ms_per_step")
    return row + ["-" if ms is None else f"{ms:.0f}"]


def print_table(results: Sequence[tuple[Measurement, dict]], device: str) -> None:
    """Print the results as an aligned table (text left-aligned, numbers right-aligned)."""
    header = table_header(device)
    rows = [table_row(measurement, result, device) for measurement, result in results]
    # Every row's first four cells count; the numbers only of the rows that have them.
    widths = [max(len(row[i]) for row in [header] + rows if i < 4 or len(row) == len(header))
              for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(width) if i >= 2 and cells is not header
                         else cell.ljust(width)
                         for i, (cell, width) in enumerate(zip(cells, widths)))

    print(line(header))
    for row in rows:
        if len(row) == len(header):
            print(line(row))
        else:  # a failed run: its first four cells, then the verdict and the error line
            print(line(row[:4]) + "  " + "  ".join(row[4:]))


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when available, else cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="long sides in pixels (default: 256 512 1024 2048 on CPU, "
                             "512 1024 2048 4096 8192 on CUDA)")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES),
                        help=f"comma-separated, from {list(TECHNIQUES)}")
    parser.add_argument("--batch", type=int, default=1,
                        help="jobs optimized at once (style transfer: the content photo N times; "
                             "class visualization: N classes)")
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true")
    parser.add_argument("--steps", type=int, default=3,
                        help="optimization steps per run (at least 3 for ms/step)")
    parser.add_argument("--channels-last", action="store_true",
                        help="pass channels_last=True to the module")
    parser.add_argument("--fast", action="store_true", help="pass fast=True to the module")
    parser.add_argument("--option", action="append", default=[], type=module_option,
                        metavar="NAME=VALUE",
                        help="another init arg of the module, a YAML value (repeatable), e.g. "
                             "--option recompute_features=true --option scales=null")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of each run (torch.set_num_threads and "
                             "OMP_NUM_THREADS); default: torch's choice")
    parser.add_argument("--timeout", type=float, default=3600,
                        help="seconds before one run is killed (and larger sizes skipped)")
    args = parser.parse_args(argv)
    techniques = [t for t in args.techniques.split(",") if t]
    if not techniques or any(t not in TECHNIQUES for t in techniques):
        parser.error(f"--techniques must name some of {list(TECHNIQUES)}")
    args.techniques = techniques
    if args.batch < 1 or args.steps < 1:
        parser.error("--batch and --steps must be positive")
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    args.sizes = args.sizes or DEFAULT_SIZES[args.device]
    if any(size < 8 for size in args.sizes):
        parser.error("--sizes must be at least 8 pixels")
    return args


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        result = child_main(Measurement(**json.loads(argv[1])))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    args = parse_args(argv)
    machine = machine_line(args.device)
    print(f"# {machine}", flush=True)
    options = ", ".join(name for name, on in (("channels_last", args.channels_last),
                                              ("fast", args.fast)) if on) or "none"
    print(f"# device {args.device}, sizes {args.sizes} (long side), steps {args.steps}, "
          f"threads {args.threads or 'default'}, extra module options: {options}", flush=True)
    results = []
    for technique in args.techniques:
        results += run_technique(technique, args)
    print()
    print(f"Memory of a run by image size ({args.device}; peak during fit, {args.steps} steps; "
          f"ms/step from the second step on)")
    print(f"machine: {machine}")
    print_table(results, args.device)


if __name__ == "__main__":
    main()

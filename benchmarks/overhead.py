"""Where the project's extra time per step goes: each per-step hook and call, timed in place.

    python benchmarks/overhead.py                     # CPU, 192 px, both techniques
    python benchmarks/overhead.py --image-size 64 --steps 80 --threads 1

Runs the plain loop and the project's ``user`` run (see ``benchmarks/run.py``) alternately; in
the project run, the functions below are wrapped with a clock (a wrapper costs about a
microsecond) and their time is reported in milliseconds per step, next to the whole step's
time and the plain loop's. Nested entries (``self.log`` runs inside ``training_step``) are
indented; "rest of Lightning's loop" is what is left of the difference after the listed
overheads. CUDA is synchronized only at the two clock readings of ``run.py``'s
:class:`~benchmarks.run.StepClock`, so on a GPU these figures are host times.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import timeit
import warnings
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from pytorch_lightning.callbacks.progress.tqdm_progress import TQDMProgressBar  # noqa: E402
from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import (  # noqa: E402
    _LoggerConnector,
)

from benchmarks.run import (  # noqa: E402
    CLOCKS, VARIANTS, Config, PlainRunner, StepClock, build_project, run_project,
)
from callbacks.image_writer import ImageWriter  # noqa: E402
from callbacks.interrupt import SaveOnInterrupt  # noqa: E402
from callbacks.loss_history import LossHistory  # noqa: E402


def targets(model_class: type) -> list[tuple[str, Any, str]]:
    """``(label, owner, attribute)`` of every wrapped function; labels starting with two spaces
    run inside the entry above them."""
    found = [
        ("module.on_train_batch_start (clamp, lr drop)", model_class, "on_train_batch_start"),
        ("module.training_step (loss forward + the rest)", model_class, "training_step"),
        ("  module.loss_terms (the loss's arithmetic)", model_class, "loss_terms"),
        ("  LightningModule.log (every call)", pl.LightningModule, "log"),
        ("module.on_train_batch_end", model_class, "on_train_batch_end"),
        ("LossHistory.on_train_batch_end", LossHistory, "on_train_batch_end"),
        ("ImageWriter.on_train_batch_end (no snapshots)", ImageWriter, "on_train_batch_end"),
        ("TQDMProgressBar.on_train_batch_end", TQDMProgressBar, "on_train_batch_end"),
        ("loggers: _LoggerConnector.update_train_step_metrics", _LoggerConnector,
         "update_train_step_metrics"),
        ("_LoggerConnector.on_batch_end", _LoggerConnector, "on_batch_end"),
        ("ModelCheckpoint.on_train_batch_end (last.ckpt every 50)", ModelCheckpoint,
         "on_train_batch_end"),
        ("SaveOnInterrupt.on_train_batch_end", SaveOnInterrupt, "on_train_batch_end"),
    ]
    return [(label, owner, name) for label, owner, name in found if hasattr(owner, name)]


@contextlib.contextmanager
def instrumented(entries: list[tuple[str, Any, str]], totals: dict[str, float],
                 calls: dict[str, int], timer: Callable[[], float]) -> Iterator[None]:
    """Wrap each entry's function with a clock while the block runs."""
    originals = []
    for label, owner, name in entries:
        original = owner.__dict__.get(name)
        function = getattr(owner, name)

        def wrapper(*args: Any, __function: Callable = function, __label: str = label,
                    **kwargs: Any) -> Any:
            started = timer()
            try:
                return __function(*args, **kwargs)
            finally:
                totals[__label] += timer() - started
                calls[__label] += 1

        originals.append((owner, name, original))
        setattr(owner, name, wrapper)
    try:
        yield
    finally:
        for owner, name, original in reversed(originals):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


class WindowCollector(pl.Callback):
    """Clocks the steps and keeps what the wrappers counted during the timed steps only.

    Its ``on_train_batch_start`` runs first at every step: what the wrappers counted since the
    previous step start belongs to the previous step.
    """

    def __init__(self, clock: StepClock, totals: dict[str, float], calls: dict[str, int],
                 kept_totals: dict[str, float], kept_calls: dict[str, int]) -> None:
        self.clock, self.totals, self.calls = clock, totals, calls
        self.kept_totals, self.kept_calls = kept_totals, kept_calls

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.clock(batch_idx)
        if self.clock.warmup < batch_idx <= self.clock.steps - 1:
            for label, value in self.totals.items():
                self.kept_totals[label] += value
                self.kept_calls[label] += self.calls[label]
        self.totals.clear()
        self.calls.clear()


def breakdown(config: Config, steps: int, warmup: int, repeats: int, save_dir: str,
              clock_name: str = "wall", variant: str = "user") -> None:
    """Print the per-step breakdown of one configuration (the first round only warms up)."""
    timer = CLOCKS["wall" if config.device == "cuda" else clock_name]
    model_class = type(build_project(config)[0])
    plain = PlainRunner(config)
    entries = targets(model_class)
    plain_times, project_times = [], []
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    kept_totals: dict[str, float] = defaultdict(float)
    kept_calls: dict[str, int] = defaultdict(int)
    for repeat in range(repeats + 1):
        first = repeat == 0
        plain_clock = StepClock(warmup, steps, config.device, timer)
        plain.run(steps, plain_clock)
        project_clock = StepClock(warmup, steps, config.device, timer)
        collector = WindowCollector(project_clock, totals, calls,
                                    defaultdict(float) if first else kept_totals,
                                    defaultdict(int) if first else kept_calls)
        with instrumented(entries, totals, calls, timer):
            run_project(config, VARIANTS[variant], steps, None, save_dir,
                        extra_callbacks=[collector])
        if not first:
            plain_times.append(plain_clock.per_step())
            project_times.append(project_clock.per_step())
    timed = (steps - 1 - warmup) * repeats
    plain_ms = statistics.median(plain_times) * 1e3
    project_ms = statistics.median(project_times) * 1e3
    print(f"\n== {config.label}: {steps} steps per run, {steps - 1 - warmup} timed, {repeats} "
          f"repeats (plain and project alternate), threads {torch.get_num_threads()}, "
          f"{'wall' if config.device == 'cuda' else clock_name} clock")
    print(f"   plain loop step          {plain_ms:8.3f} ms  median "
          f"[{min(plain_times) * 1e3:.2f}-{max(plain_times) * 1e3:.2f}]")
    print(f"   project step ({variant:<8s})  {project_ms:8.3f} ms  median "
          f"[{min(project_times) * 1e3:.2f}-{max(project_times) * 1e3:.2f}]")
    print(f"   difference               {project_ms - plain_ms:8.3f} ms  "
          f"(ratio of medians {project_ms / plain_ms:.3f})")
    print("   inside the project run, ms per step (mean over timed steps) and calls per step:")
    listed = 0.0
    for label, _, _ in entries:
        per_step = kept_totals[label] / timed * 1e3
        print(f"     {label:<56s} {per_step:7.3f} ms  {kept_calls[label] / timed:4.0f}x")
        if label.startswith("  LightningModule.log") or not label.startswith(("  ", "module.")):
            listed += per_step
    step_label, loss_label = entries[1][0], entries[2][0]
    log_label = entries[3][0]
    rest = (kept_totals[step_label] - kept_totals[loss_label] - kept_totals[log_label]) / timed
    print(f"     {'  training_step minus loss_terms and log (stack, checks)':<56s} "
          f"{rest * 1e3:7.3f} ms")
    print(f"   not listed (Lightning's loop, closure, hooks; and noise): "
          f"{project_ms - plain_ms - listed:7.3f} ms")


def isfinite_check_cost() -> float:
    """Microseconds of ``if not torch.isfinite(total)`` on a CPU scalar (a sync on a GPU)."""
    total = torch.tensor(1.0)
    number = 20000
    return timeit.timeit(lambda: bool(torch.isfinite(total)), number=number) / number * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--image-size", type=int, default=None,
                        help="default: 192 on CPU, 512 on CUDA")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or this process's CPU time (see run.py)")
    parser.add_argument("--techniques", default="class_visualization,style_transfer")
    parser.add_argument("--variant", default="user", choices=list(VARIANTS),
                        help="the project run to take apart (see run.py)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    size = args.image_size or (192 if args.device == "cpu" else 512)
    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}; "
          f"bool(torch.isfinite(cpu scalar)) costs {isfinite_check_cost():.1f} us")
    with tempfile.TemporaryDirectory(prefix="bench_overhead_") as save_dir:
        for technique in args.techniques.split(","):
            breakdown(Config(technique, args.device, size, args.batch, args.precision),
                      args.steps, args.warmup, args.repeats, save_dir, args.clock,
                      args.variant)


if __name__ == "__main__":
    main()

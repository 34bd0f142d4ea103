"""Time the project's Lightning runs against plain PyTorch loops doing the same work.

    python benchmarks/run.py                       # CPU configs (and GPU ones when CUDA is there)
    python benchmarks/run.py --device cpu --steps 60 --repeats 5
    python benchmarks/run.py --device cpu --threads 1 --clock cpu --method interleaved  # busy box
    python benchmarks/run.py --device cuda --steps 300 --repeats 5 --variants user,user_log1
    python benchmarks/run.py --method diff         # cross-check: whole fits of N and 2N steps

Every configuration (technique, device, image size, batch, precision) is measured in one
process: an untimed warm-up run of each side, then ``--repeats`` rounds of ``plain, project
variants...`` with the order reversed every other round, so slow drift of the machine hits both
sides. "project" is a real ``pl.Trainer.fit`` of the technique's LightningModule and DataModule
(classes and options from ``configs/<technique>.yaml``), with the settings of a ``cli.py fit``
run. The plain loop (``benchmarks/plain_loop.py``) does the same arithmetic: before timing, a
few steps of both at 64 px are compared and give bit-identical images ("same work: ... = 0").
Project variants (``--variants``, the first one is the headline):

* ``user``: what ``cli.py fit`` runs: CSV logger (+ TensorBoard when installed, as ``cli.py``
  adds it), ``log_every_n_steps = 10`` and a progress bar refreshed every 10 steps,
  ``ImageWriter`` (no snapshots), ``LossHistory``, ``last.ckpt`` every 50 steps and the
  SIGINT/SIGTERM handler; the bar drawn into /dev/null (a terminal's drawing is not counted);
* ``fast``: ``user`` with ``--model.fast true`` (torch.compile of the backbone, CUDA graphs on a
  GPU, channels-last, fused Adam); ``channels_last``: ``user`` with channels-last alone;
* ``user_nockpt``: ``user`` without checkpoints and the signal handler;
* ``user_log1``: ``user`` logging and drawing every step (``--trainer.log_every_n_steps 1``);
* ``nobar``: the same without the progress bar; ``bare``: no logger, callbacks or bar;
* breakdown pieces: ``bare_nolog`` (``self.log`` a no-op), ``logger``, ``logger50``,
  ``callbacks``, ``bar``, ``user50`` (see ``VARIANTS``).

How per-step time leaves out start-up:

* ``--method hooks`` (default): a clock is read at the start of every step, in the plain loop
  at the top of its ``for`` body and in the project from a callback's ``on_train_batch_start``
  (the first hook of a step). Per-step time = (start of the last step - start of step
  ``warmup``) / the whole steps in between: everything the loop does per step (data fetching,
  hooks, logging, progress bar, optimizer) and nothing done once (model load, Trainer
  construction, setup, targets, writing results). CUDA is synchronized at those two readings.
* ``--method interleaved`` (CPU): one project run per measurement, running one plain step at the
  start of each project step (:class:`Interleave`); both sides are timed step by step on the
  same machine at the same moment, which cancels most of the noise of a shared machine.
* ``--method diff``: whole runs of N and 2N steps (start-up in both), difference over N.

``--clock cpu`` reads this process's CPU time instead of the wall clock (CPU configurations):
with ``--threads 1`` it leaves out the time spent waiting for a core that other jobs hold.

Printed per configuration: each side's per-step time (median [min-max] over the repeats),
image-steps per second (batch / time per step), and project / plain as the median [min-max] of
the paired ratios. The last line printed is the CPU style-transfer ratio of the first variant,
e.g. ``cpu style_transfer project/plain = 1.02``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.plain_loop import (  # noqa: E402
    class_visualization_steps, run_loop, style_transfer_steps,
)
from callbacks.image_writer import ImageWriter  # noqa: E402
from callbacks.interrupt import SaveOnInterrupt  # noqa: E402
from cli import CHECKPOINT_DEFAULTS  # noqa: E402
from callbacks.loss_history import LossHistory  # noqa: E402
from datamodules.images import image_to_tensor, load_image, resize_shorter_side  # noqa: E402
from lightning_modules.backbones import load_backbone  # noqa: E402

TECHNIQUES = ("style_transfer", "class_visualization")
# Sixteen distinct classes for batched class visualization: the config's ten, then six more.
MANY_CLASSES = [76, 78, 113, 130, 207, 366, 417, 604, 683, 948, 1, 9, 22, 291, 340, 980]


@dataclass
class Config:
    """One benchmarked configuration."""

    technique: str
    device: str
    image_size: int
    batch: int
    precision: str = "32-true"

    @property
    def label(self) -> str:
        precision = "fp32" if self.precision == "32-true" else "bf16-mixed"
        return (f"{self.device} {self.technique} {self.image_size}px b{self.batch} {precision}")


@dataclass(frozen=True)
class Variant:
    """How the project run is set up around the technique's module.

    Args:
        name: Short name printed in the results.
        logger: CSV logger, plus TensorBoard when installed (as ``cli.py`` adds it).
        callbacks: ``ImageWriter`` (no snapshots) and ``LossHistory``.
        progress_bar: Lightning's TQDM progress bar (its output goes to /dev/null).
        log_every_n_steps: The Trainer's setting (``cli.py`` uses 10).
        module_logging: False replaces the module's ``self.log`` by a no-op (to measure it).
        refresh_rate: The progress bar's refresh rate (None: Lightning's default, every step).
        checkpoints: ``cli.py``'s checkpoint callback (``last.ckpt`` every 50 steps) and its
            SIGINT/SIGTERM handler (``SaveOnInterrupt``).
        model_options: Extra init arguments of the technique, e.g. ``(("fast", True),)``.
    """

    name: str
    logger: bool = True
    callbacks: bool = True
    progress_bar: bool = True
    log_every_n_steps: int = 1
    module_logging: bool = True
    refresh_rate: Optional[int] = None
    checkpoints: bool = False
    model_options: tuple[tuple[str, Any], ...] = ()


VARIANTS = {
    "user": Variant("user", log_every_n_steps=10, refresh_rate=10, checkpoints=True),
    # The fast path (--model.fast true): torch.compile (CUDA graphs on a GPU), channels-last,
    # fused Adam; and channels-last alone.
    "fast": Variant("fast", log_every_n_steps=10, refresh_rate=10, checkpoints=True,
                    model_options=(("fast", True),)),
    "channels_last": Variant("channels_last", log_every_n_steps=10, refresh_rate=10,
                             checkpoints=True, model_options=(("channels_last", True),)),
    "user_nockpt": Variant("user_nockpt", log_every_n_steps=10, refresh_rate=10),
    "user_log1": Variant("user_log1", checkpoints=True),
    "nobar": Variant("nobar", progress_bar=False),
    "bare": Variant("bare", logger=False, callbacks=False, progress_bar=False),
    # For the overhead breakdown (--variants ...): one piece at a time on top of "bare".
    "bare_nolog": Variant("bare_nolog", logger=False, callbacks=False, progress_bar=False,
                          module_logging=False),
    "logger": Variant("logger", callbacks=False, progress_bar=False),
    "logger50": Variant("logger50", callbacks=False, progress_bar=False, log_every_n_steps=50),
    "callbacks": Variant("callbacks", logger=False, progress_bar=False),
    "bar": Variant("bar", logger=False, callbacks=False),
    "user50": Variant("user50", log_every_n_steps=50),
}
DEFAULT_VARIANTS = "user,nobar,bare"



def configs_for(device: str) -> list[Config]:
    """The configurations of the issue: CPU at 192 px batch 1; GPU at 512 px, batch 1 and 16,
    float32 and bf16-mixed. CPU style transfer comes last, so its line ends the output."""
    if device == "cuda":
        return [Config(t, "cuda", 512, b, p) for t in TECHNIQUES for b in (1, 16)
                for p in ("32-true", "bf16-mixed")]
    return [Config("class_visualization", "cpu", 192, 1), Config("style_transfer", "cpu", 192, 1)]


def technique_config(technique: str) -> dict[str, Any]:
    """The technique's shipped YAML config (``configs/<technique>.yaml``)."""
    return yaml.safe_load((ROOT / "configs" / f"{technique}.yaml").read_text())


def import_class(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


# ============================================================================ timing
# "wall": elapsed time. "cpu": CPU time of this process (all its threads): on a machine shared
# with other jobs it leaves out the time this process waits for a core, so it is much steadier;
# it means nothing for GPU work, so CUDA configurations always use the wall clock.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


class StepClock:
    """Reads the clock at the start of each step; per-step time from step ``warmup`` to the last.

    Args:
        warmup: Steps not timed (allocator, oneDNN/cuDNN set-up, first Adam step).
        steps: Total steps of the run.
        device: Synchronized at the first and last reading when it is CUDA.
        timer: ``time.perf_counter`` (wall) or ``time.process_time`` (CPU time).
    """

    def __init__(self, warmup: int, steps: int, device: str,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.warmup, self.steps, self.device, self.timer = warmup, steps, device, timer
        self.start: Optional[float] = None
        self.end: Optional[float] = None

    def __call__(self, step: int) -> None:
        if step == self.warmup or step == self.steps - 1:
            if self.device == "cuda":
                torch.cuda.synchronize()
            now = self.timer()
            if step == self.warmup:
                self.start = now
            else:
                self.end = now

    def per_step(self) -> float:
        """Seconds per step between the two readings."""
        assert self.start is not None and self.end is not None, "run too short for the clock"
        return (self.end - self.start) / (self.steps - 1 - self.warmup)


class Interleave(pl.Callback):
    """Runs one plain step at the start of every project step, and times both separately.

    The project's step ``k`` is timed from the end of the plain step run in hook ``k`` to the
    start of hook ``k + 1``: all of Lightning's work for step ``k`` and nothing else. Both sides
    thus see the same machine at the same moment (``--method interleaved``, CPU only: on CUDA
    the plain step would need syncs that change the project's timing).

    Args:
        plain_steps: A fresh plain loop generator (set up here, before the run starts).
        warmup: Steps of each side left out.
        timer: The clock.
    """

    def __init__(self, plain_steps: Iterator[Any], warmup: int, timer: Callable[[], float]) -> None:
        self.plain_steps, self.warmup, self.timer = plain_steps, warmup, timer
        next(plain_steps)
        self.plain_times: list[float] = []
        self.project_times: list[float] = []
        self.mark: Optional[float] = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        started = self.timer()
        if self.mark is not None and batch_idx - 1 >= self.warmup:
            self.project_times.append(started - self.mark)
        next(self.plain_steps)
        ended = self.timer()
        if batch_idx >= self.warmup:
            self.plain_times.append(ended - started)
        self.mark = self.timer()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.plain_steps.close()


class ClockCallback(pl.Callback):
    """Feeds the Trainer's steps to a :class:`StepClock` (first hook of a training step)."""

    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.clock(batch_idx)


# ============================================================================ the plain side
class PlainRunner:
    """Holds the backbone and inputs of one configuration and runs the plain loop.

    The loop's settings are the technique's own: the defaults of its ``__init__`` overridden by
    its shipped YAML config, as a ``cli.py fit --config configs/<technique>.yaml`` run has them.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.device = torch.device(config.device)
        yaml_config = technique_config(config.technique)
        model_class = import_class(yaml_config["model"]["class_path"])
        self.args = init_defaults(model_class)
        self.args.update(yaml_config["model"]["init_args"])
        self.backbone = load_backbone(self.args["backbone"], self.args["weights"]).to(self.device)
        if config.technique == "style_transfer":
            data_class = import_class(yaml_config["data"]["class_path"])
            data = init_defaults(data_class)
            data.update(yaml_config["data"]["init_args"])
            content = image_to_tensor(resize_shorter_side(load_image(data["content"]),
                                                          config.image_size))
            self.content = content[None].expand(config.batch, -1, -1, -1).contiguous().to(
                self.device)
            self.style = image_to_tensor(resize_shorter_side(load_image(data["style"]),
                                                             config.image_size)).to(self.device)
            if self.args.get("lr") is None:  # the config's null: the optimizer's own
                self.args["lr"] = model_class.default_lr[self.args["optimizer"]]
        else:
            from lightning_modules.class_visualization import default_learning_rate
            from lightning_modules.image_optimization import make_parameterization

            if self.args.get("lr") is None:
                self.args["lr"] = default_learning_rate(
                    self.args["step"], make_parameterization(self.args["parameterization"]))

    def steps(self, seed: int = 0, fused: bool = False) -> Iterator[Optional[torch.Tensor]]:
        """A fresh plain loop, as a generator of steps (see ``benchmarks/plain_loop.py``).

        ``fused`` (style transfer only): Adam as one fused kernel.
        """
        config, args = self.config, self.args
        if config.technique == "style_transfer":
            layers = list(args["content_layers"])
            weight = args["content_weight"]
            weights = [weight] * len(layers) if isinstance(weight, (int, float)) else weight
            return style_transfer_steps(
                self.backbone, self.content, self.style, content_layers=layers,
                content_weights=weights, style_layers=args["style_layers"],
                style_weights=args["style_weights"], tv_weight=args["tv_weight"], lr=args["lr"],
                precision=config.precision, fused=fused)
        return class_visualization_steps(
            self.backbone, batch_classes(config.batch), image_size=config.image_size,
            parameterization=args["parameterization"], transforms=args["transforms"],
            decay_power=args["decay_power"], step_rule=args["step"], lr=args["lr"],
            l2_reg=args["l2_reg"], blur_every=args["blur_every"], blur_sigma=args["blur_sigma"],
            max_jitter=args["max_jitter"], init_std=args["init_std"], seed=seed,
            precision=config.precision)

    def run(self, steps: int, on_step: Callable[[int], None] | None, seed: int = 0) -> torch.Tensor:
        """Run the plain loop for ``steps`` steps; returns the final parameter."""
        return run_loop(self.steps(seed), steps, on_step)


def init_defaults(cls: type) -> dict[str, Any]:
    """The default arguments of ``cls.__init__`` and of its base classes' (``**kwargs``)."""
    defaults: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for name, parameter in inspect.signature(init).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    return defaults


# ============================================================================ the project side
#: The plain loop's arithmetic, which the shipped style-transfer config goes beyond: one scale,
#: no random shifts (they change the work's random numbers), no chroma TV, no colour term,
#: summed losses. The project runs with these so that both sides do the same work (``--check``
#: verifies it).
PLAIN_STYLE_TRANSFER = {"scales": None, "shift": 0, "chroma_tv_weight": 0.0,
                        "color_weight": 0.0, "loss_reduction": "sum"}


def build_project(config: Config, model_options: Sequence[tuple[str, Any]] = ()
                  ) -> tuple[pl.LightningModule, pl.LightningDataModule]:
    """The technique's module and datamodule from its shipped config, resized and batched."""
    yaml_config = technique_config(config.technique)
    model_class = import_class(yaml_config["model"]["class_path"])
    data_class = import_class(yaml_config["data"]["class_path"])
    model_args = {**yaml_config["model"]["init_args"], **dict(model_options)}
    data_args = dict(yaml_config["data"]["init_args"])
    if config.technique == "style_transfer":
        data_args["content"] = [data_args["content"]] * config.batch
        data_args["image_size"] = config.image_size
    else:
        model_args["image_size"] = config.image_size
        data_args["classes"] = batch_classes(config.batch)
    return model_class(**model_args), data_class(**data_args)


def batch_classes(batch: int) -> list[int]:
    """``batch`` classes to draw: :data:`MANY_CLASSES`, repeated beyond 16 (other noise)."""
    return (MANY_CLASSES * (batch // len(MANY_CLASSES) + 1))[:batch]


def project_loggers(save_dir: str, name: str) -> list[Any]:
    """The loggers of a ``cli.py fit`` run: CSV, and TensorBoard in the same folder if installed."""
    from pytorch_lightning.loggers import CSVLogger

    csv_logger = CSVLogger(save_dir=save_dir, name=name)
    loggers = [csv_logger]
    try:
        import tensorboard  # noqa: F401
        from pytorch_lightning.loggers import TensorBoardLogger
    except ImportError:
        return loggers
    loggers.append(TensorBoardLogger(save_dir=save_dir, name=name, version=csv_logger.version,
                                     default_hp_metric=False))
    return loggers


def run_project(config: Config, variant: Variant, steps: int, clock: Optional[StepClock],
                save_dir: str, seed: int = 0,
                extra_callbacks: Sequence[pl.Callback] = ()) -> pl.LightningModule:
    """One ``Trainer.fit`` of the project; returns the fitted module.

    ``extra_callbacks`` come first, before the clock's (``benchmarks/overhead.py`` uses one).
    """
    save_dir = tempfile.mkdtemp(dir=save_dir)  # a fresh run folder: results never overwrite
    torch.manual_seed(seed)  # ClassVisualization seeds its generator from torch.initial_seed()
    options = list(variant.model_options)
    if config.technique == "style_transfer":
        options = list(PLAIN_STYLE_TRANSFER.items()) + options
    model, data = build_project(config, options)
    if dict(variant.model_options).get("fast"):
        # Each run compiles afresh (in its untimed first steps), as a cli.py run would, rather
        # than pile up recompilations of earlier runs' modules until torch.compile gives up.
        torch._dynamo.reset()
    if not variant.module_logging:
        model.log = lambda *args, **kwargs: None
    callbacks = list(extra_callbacks) + ([ClockCallback(clock)] if clock is not None else [])
    if variant.callbacks:
        callbacks += [ImageWriter(every_n_steps=0), LossHistory()]
    if variant.refresh_rate is not None and variant.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=variant.refresh_rate))
    if variant.checkpoints:
        callbacks += [ModelCheckpoint(**{key.split(".", 1)[1]: value
                                         for key, value in CHECKPOINT_DEFAULTS.items()}),
                      SaveOnInterrupt()]
    trainer = pl.Trainer(
        max_steps=steps, accelerator="gpu" if config.device == "cuda" else "cpu", devices=1,
        precision=config.precision, callbacks=callbacks,
        logger=project_loggers(save_dir, config.technique) if variant.logger else False,
        enable_progress_bar=variant.progress_bar, log_every_n_steps=variant.log_every_n_steps,
        enable_checkpointing=variant.checkpoints, num_sanity_val_steps=0, enable_model_summary=False,
        default_root_dir=save_dir)
    # Lightning's progress bar writes to stdout: drop it (terminal drawing is not ours to time).
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), \
            contextlib.redirect_stderr(devnull):
        trainer.fit(model, datamodule=data)
    return model


# ============================================================================ measurements
def measure(config: Config, side: str | Variant, steps: int, warmup: int, method: str,
            plain: PlainRunner, save_dir: str, clock_name: str = "wall") -> float:
    """Seconds per step of one run of ``side`` (``"plain"`` or a project :class:`Variant`)."""
    timer = CLOCKS["wall" if config.device == "cuda" else clock_name]

    def once(n: int, clock: Optional[StepClock]) -> float:
        started = timer()
        if isinstance(side, str):
            plain.run(n, clock)
        else:
            run_project(config, side, n, clock, save_dir)
        if config.device == "cuda":
            torch.cuda.synchronize()
        return timer() - started

    if method == "hooks":
        clock = StepClock(warmup, steps, config.device, timer)
        once(steps, clock)
        return clock.per_step()
    return (once(2 * steps, None) - once(steps, None)) / steps


def measure_interleaved(config: Config, variant: Variant, steps: int, warmup: int,
                        plain: PlainRunner, save_dir: str, clock_name: str) -> tuple[float, float]:
    """Seconds per step of (plain, project) from one project run with :class:`Interleave`."""
    interleave = Interleave(plain.steps(), warmup, CLOCKS[clock_name])
    run_project(config, variant, steps, None, save_dir, extra_callbacks=[interleave])
    return (statistics.fmean(interleave.plain_times), statistics.fmean(interleave.project_times))


def check_same_work(config: Config, save_dir: str, steps: int = 4, size: int = 64) -> float:
    """Largest difference between the plain loop's and the project's images after a few steps."""
    small = Config(config.technique, config.device, min(size, config.image_size), config.batch,
                   config.precision)
    plain_image = PlainRunner(small).run(steps, None, seed=0)
    model = run_project(small, VARIANTS["bare"], steps, None, save_dir, seed=0)
    return float((model.images[0].detach().cpu() - plain_image.cpu()).abs().max())


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def spread(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    """``median [min-max]``."""
    return (f"{statistics.median(values) * scale:.{digits}f} "
            f"[{min(values) * scale:.{digits}f}-{max(values) * scale:.{digits}f}]")


def benchmark(config: Config, args: argparse.Namespace, save_dir: str) -> dict[str, float]:
    """Warm up, alternate plain and project runs, print the figures; returns each ratio."""
    steps = args.steps or (60 if config.device == "cpu" else 300)
    clock = "wall" if config.device == "cuda" else args.clock
    # Interleaving needs a sync per plain step on CUDA, which would change the project's timing.
    method = "hooks" if config.device == "cuda" and args.method == "interleaved" else args.method
    print(f"\n== {config.label}: {steps} steps per run, first {args.warmup} untimed, "
          f"{args.repeats} repeats, method {method}, {clock} clock, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    plain = PlainRunner(config)
    if args.check:
        difference = check_same_work(config, save_dir)
        verdict = ("identical" if difference == 0 else
                   "differs: has the technique changed? update benchmarks/plain_loop.py"
                   if config.device == "cpu" else "GPU kernels need not be bit-exact")
        print(f"   same work: max |project - plain| image difference after 4 steps at "
              f"{min(64, config.image_size)} px = {difference:.3g} ({verdict})", flush=True)
    variants = [VARIANTS[v] for v in args.variants]
    # (plain, project) seconds per step of each variant's runs, paired as they were measured.
    pairs: dict[str, list[tuple[float, float]]] = {v.name: [] for v in variants}
    if method == "interleaved":
        measure_interleaved(config, variants[0], args.warmup + 3, 0, plain, save_dir, clock)
        for repeat in range(args.repeats):
            order = variants if repeat % 2 == 0 else variants[::-1]
            for variant in order:
                pairs[variant.name].append(measure_interleaved(
                    config, variant, steps, args.warmup, plain, save_dir, clock))
    else:
        sides: list[str | Variant] = ["plain", *variants]
        for side in sides:  # untimed warm-up of every side
            measure(config, side, args.warmup + 3, 0, "hooks", plain, save_dir)
        plain_times: list[float] = []
        project_times: dict[str, list[float]] = {v.name: [] for v in variants}
        for repeat in range(args.repeats):
            order = sides if repeat % 2 == 0 else sides[::-1]  # ABBA: drift hits both sides
            for side in order:
                seconds = measure(config, side, steps, args.warmup, method, plain, save_dir,
                                  clock)
                if isinstance(side, str):
                    plain_times.append(seconds)
                else:
                    project_times[side.name].append(seconds)
        for name, values in project_times.items():
            pairs[name] = list(zip(plain_times, values))
    print(f"   (load average now {os.getloadavg()[0]:.1f})")
    all_plain = [plain_s for runs in pairs.values() for plain_s, _ in runs]
    if method != "interleaved":
        all_plain = [plain_s for plain_s, _ in pairs[variants[0].name]]
    plain_median = statistics.median(all_plain)
    print(f"   plain              {fmt_ms(plain_median)}/step, per-step ms median [min-max] "
          f"{spread(all_plain, 1e3)}, {config.batch / plain_median:.1f} image-steps/s",
          flush=True)
    ratios = {}
    for name, runs in pairs.items():
        values = [project_s for _, project_s in runs]
        paired = [project_s / plain_s for plain_s, project_s in runs]
        extra = [project_s - plain_s for plain_s, project_s in runs]
        ratios[name] = statistics.median(paired)
        median = statistics.median(values)
        print(f"   project {name:<10s} {fmt_ms(median)}/step, "
              f"per-step ms median [min-max] {spread(values, 1e3)}, "
              f"{config.batch / median:.1f} image-steps/s, project/plain paired "
              f"{spread(paired, digits=3)}, of medians {median / plain_median:.3f}, "
              f"extra ms/step paired {spread(extra, 1e3)}", flush=True)
    return ratios


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default=None,
                        help="default: all when CUDA is available, else cpu")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed run (default 60 on CPU, 300 on CUDA)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps at a run's start")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (torch.set_num_threads); default: torch's choice. "
                             "On a loaded machine 1 avoids OpenMP threads waiting on each other")
    parser.add_argument("--method", choices=["hooks", "interleaved", "diff"], default="hooks",
                        help="hooks: alternate whole runs, time steps inside each; interleaved "
                             "(CPU): one plain step inside every project step; diff: whole runs "
                             "of N and 2N steps")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="CPU configurations: wall time, or this process's CPU time (steadier "
                             "when other jobs share the cores; use with --threads 1)")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help=f"project variants, comma-separated, from {list(VARIANTS)}; the "
                             "first is the one the last line reports")
    parser.add_argument("--techniques", default=",".join(TECHNIQUES))
    parser.add_argument("--batches", default=None,
                        help="only these batch sizes of the configurations, e.g. 1 or 1,16")
    parser.add_argument("--precisions", default=None,
                        help="only these precisions, e.g. 32-true or bf16-mixed")
    parser.add_argument("--image-size", type=int, default=None,
                        help="override every configuration's image size (e.g. 32 to measure "
                             "the per-step overhead in ms, where the arithmetic is small)")
    parser.add_argument("--no-check", dest="check", action="store_false",
                        help="skip the check that both sides compute the same images")
    args = parser.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        parser.error(f"--variants must name some of {list(VARIANTS)}")
    if args.steps is not None and args.steps < args.warmup + 2:
        parser.error("--steps must be at least --warmup + 2")
    device = args.device or ("all" if torch.cuda.is_available() else "cpu")
    if device in ("cuda", "all") and not torch.cuda.is_available():
        parser.error("CUDA is not available")
    techniques = [t for t in args.techniques.split(",") if t]
    if args.threads:
        torch.set_num_threads(args.threads)

    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"torch {torch.__version__}, pytorch_lightning {pl.__version__}, "
          f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    configs = [c for d in (["cuda", "cpu"] if device == "all" else [device])
               for c in configs_for(d) if c.technique in techniques]
    if args.batches:
        configs = [c for c in configs if str(c.batch) in args.batches.split(",")]
    if args.precisions:
        configs = [c for c in configs if c.precision in args.precisions.split(",")]
    if args.image_size:
        configs = [Config(c.technique, c.device, args.image_size, c.batch, c.precision)
                   for c in configs]
    headline = args.variants[0]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_runs_") as save_dir:
        for config in configs:
            results.append((config, benchmark(config, args, save_dir)))
    print(f"\nproject/plain time per step (median of paired runs; variants {args.variants}):")
    for config, ratios in results:
        print(f"   {config.label}: " + ", ".join(f"{v} {r:.3f}" for v, r in ratios.items()))
    last = [(c, r) for c, r in results if c.device == "cpu" and c.technique == "style_transfer"]
    if last:
        config, ratios = last[-1]
        print(f"{config.device} {config.technique} project/plain = {ratios[headline]:.2f}")
    elif results:
        config, ratios = results[-1]
        print(f"{config.label} project/plain = {ratios[headline]:.2f}")


if __name__ == "__main__":
    main()

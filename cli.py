"""One command line for every technique.

    python cli.py fit --config configs/style_transfer.yaml [--model.tv_weight 1e-3 ...]
    python cli.py fit --config configs/style_transfer.yaml --print_config
    python cli.py layers --model.backbone timm:convnext_atto   # layer names and output shapes

Every run writes into a fresh directory (``runs/<technique>/version_<n>/``): the config, the
images, ``losses.csv``, ``loss_curve.png`` and ``checkpoints/last.ckpt``; ``--trainer.default_root_dir
DIR`` puts it in ``DIR/<technique>/version_<n>/`` instead, unless the logger's ``save_dir`` is set.
Bad input ends with one sentence on stderr and a non-zero exit, never a traceback.

    python cli.py fit --config ... --trainer.devices 2 --trainer.accelerator cpu   # 2 processes
    python cli.py fit --config ... --ckpt_path last    # continue the latest interrupted run

Several processes get ``ImageDDPStrategy`` unless a strategy is given. ``--ckpt_path last``
continues the most recently checkpointed run of the config's logger name *in its own run
directory*: the config is saved as ``config_resumed.yaml``, the interrupted part's ``metrics.csv``
and ``hparams.yaml`` become ``*_before_resume.*``, and the run writes again the images its
interrupted part wrote. Options come from the command line, never from the checkpoint. A run
(or a resume) that fails before its first step leaves the runs folder as it was.
"""

from __future__ import annotations

import difflib
import errno
import importlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


def _stopped_while_starting(signal_number: int, frame: Any) -> None:
    """Ctrl+C while the libraries load: nothing exists yet, so stop without a traceback."""
    sys.stderr.write("error: stopped (Ctrl+C) while starting; nothing was written.\n")
    os._exit(128 + signal_number)


# Run as a command, Ctrl+C during the imports below (seconds) ends quietly; main() takes over
# from there. Imported from Python (a notebook, the API), the handler is left alone.
if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "image-opt":
    signal.signal(signal.SIGINT, _stopped_while_starting)

import torch
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.model_helpers import is_overridden

from callbacks import ImageWriter, LossHistory, SaveOnInterrupt
from callbacks.checkpoint import RunCheckpoint, choose_checkpoint, previous_path, written_by
from callbacks.run_directory import claim_run_directory
from datamodules.files import TEMPORARY_MARK, describe
from lightning_modules.errors import DivergedError, UserInputError, format_bytes
# The folder of a predict run that writes its results in parts, and so can be continued.
from lightning_modules.saliency.map_shards import MAPS_FOLDER as PARTS_FOLDER
from lightning_modules.run_defaults import (
    DEFAULT_SEED,
    IRRELEVANT_WARNINGS,
    LOG_EVERY_N_STEPS,
    check_seed,
    is_start_up_chatter,
    log_period,
)



def import_techniques() -> None:
    """Import every technique package's ``module``: ``--model FoolingImage`` finds the class
    among the imported LightningModule subclasses, and the package exports are lazy.

    A package is found by being there: a new technique needs no line here.
    """
    import pkgutil

    import lightning_modules

    for package in pkgutil.iter_modules(lightning_modules.__path__):
        name = f"lightning_modules.{package.name}.module"
        if package.ispkg and importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


import_techniques()

# Checkpoints: checkpoints/last.ckpt in the run directory, renewed every 50 steps and at the end
# of each chunk of jobs; --checkpoint.every_n_train_steps changes the period.
# One last.ckpt, always the newest: no last-v1.ckpt beside an older last.ckpt after a resume.
CHECKPOINT_DEFAULTS = {"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                       "checkpoint.every_n_train_steps": 50,
                       "checkpoint.enable_version_counter": False}

# Where run directories go when neither the logger's save_dir nor --trainer.default_root_dir
# says (see ImageCLI._runs_under_default_root_dir).
DEFAULT_SAVE_DIR = "runs"

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": "run"},
    },
    # Losses are kept on the device and read every 10 steps (ImageOptimization.record_losses);
    # losses.csv still gets every step, metrics.csv and the progress bar every 10th.
    "log_every_n_steps": LOG_EVERY_N_STEPS,
    "enable_checkpointing": True,
    "num_sanity_val_steps": 0,
    "accelerator": "auto",
    "devices": 1,
}


# validate and test would need a validation or test step, which no technique has.
SUBCOMMANDS = ("fit", "predict")

#: How every run is built, from the command line (``main``) and from Python (``PythonRun``).
CLI_SETTINGS = {
    "subclass_mode_model": True,
    "subclass_mode_data": True,
    "trainer_defaults": TRAINER_DEFAULTS,
    "seed_everything_default": DEFAULT_SEED,
    "auto_configure_optimizers": False,
    "parser_kwargs": {"exit_on_error": False,
                      "epilog": "Also: cli.py layers --model.backbone NAME lists a network's "
                                "layers (index, name, output shape), which options such as "
                                "--model.style_layers name."},
}


class ImageCLI(LightningCLI):
    """LightningCLI with the image, checkpoint and signal callbacks always on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        argv = kwargs.get("args")
        argv = sys.argv[1:] if argv is None else argv
        self._asked = argv[0] if isinstance(argv, (list, tuple)) and argv else None
        # What this invocation did to the runs folder, undone if the run never takes a step.
        self._undo: list[Callable[[], None]] = []
        self._start_step: Optional[int] = None
        self._run_lock: Optional[int] = None  # held on the run folder while this run is on
        try:
            try:
                super().__init__(*args, **kwargs)
            except BaseException:
                if not self._took_a_step():
                    self._undo_unstarted_run()
                raise
            if self.subcommand == "fit" and self._start_step and not self._took_a_step():
                # A resumed run that had already taken all its steps: leave its folder as it was.
                self._undo_unstarted_run()
                print(f"The run had already taken its {self._start_step} steps: nothing to do, "
                      "and its folder is as it was.", file=sys.stderr)
        finally:
            if self._run_lock is not None:
                os.close(self._run_lock)  # the run is over (the lock ends with the process too)
                self._run_lock = None

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """``fit`` and ``predict``; only the one asked for when the command line names it.

        Each subcommand's parser (the Trainer's, model's and data's signatures) took about
        0.1 s of start-up to build, so ``cli.py fit ...`` builds only ``fit``'s;
        ``cli.py --help`` still lists both.
        """
        offered = {name: skip for name, skip in LightningCLI.subcommands().items()
                   if name in SUBCOMMANDS}
        return {self._asked: offered[self._asked]} if self._asked in offered else offered

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ImageWriter, "images")
        parser.add_lightning_class_args(LossHistory, "losses")
        # A technique's own reports come from its configure_callbacks(), not from here.
        parser.add_lightning_class_args(RunCheckpoint, "checkpoint")
        parser.add_lightning_class_args(SaveOnInterrupt, "interrupt")
        parser.set_defaults(CHECKPOINT_DEFAULTS)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Lightning seeds right after parsing, before any hook, and says so with a traceback.
        subcommand = self.config.get("subcommand")
        check_seed((self.config[subcommand] if subcommand else self.config).get("seed_everything"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        trainer = config.trainer
        check_run_options(config)
        for part in ("model", "data"):
            check_no_null_values(part, config.get(part))
        check_hardware(trainer.accelerator, trainer.devices)
        processes = process_count(trainer.devices, trainer.num_nodes)
        check_process_count(processes, trainer.accelerator)
        if trainer.strategy == "auto" and processes != 1:
            trainer.strategy = "image_ddp"
        trainer.log_every_n_steps = log_period(trainer.max_steps, trainer.log_every_n_steps)
        if trainer.enable_progress_bar is not False and not trainer.callbacks:
            # Its figures change every log_every_n_steps steps; drawing it every step costs
            # about 0.4 ms a step.
            trainer.callbacks = [Namespace(
                class_path="pytorch_lightning.callbacks.TQDMProgressBar",
                init_args=Namespace(refresh_rate=max(1, trainer.log_every_n_steps)))]
        self._runs_under_default_root_dir(trainer)
        if not trainer.get("plugins"):
            # Checkpoints written whole or not at all, the one before kept (callbacks.checkpoint).
            trainer.plugins = [Namespace(class_path="callbacks.checkpoint.AtomicCheckpointIO")]
        if self.subcommand == "fit" and config.get("ckpt_path"):
            self._resume_in_place(config, processes)
        elif self.subcommand == "predict" and config.get("ckpt_path"):
            self._continue_predict_run(config)
        else:
            self._start_step = 0
            self._claim_run_directory(trainer.logger)

    @staticmethod
    def _runs_under_default_root_dir(trainer: Namespace) -> None:
        """``--trainer.default_root_dir DIR`` puts the run directory under DIR.

        Lightning lets a logger's ``save_dir`` override ``default_root_dir``, and our default
        logger has one (``runs``), so without this ``default_root_dir`` would move nothing. The
        configs leave ``save_dir`` out; a ``save_dir`` other than the default ``runs`` was chosen
        by the user and wins. (A ``save_dir`` of ``runs`` given explicitly cannot be told from
        the default: with ``default_root_dir`` it also moves to DIR.)
        """
        root = trainer.get("default_root_dir")
        logger = trainer.get("logger")
        if not root or not isinstance(logger, Namespace):
            return
        init_args = logger.get("init_args")
        if isinstance(init_args, Namespace) and init_args.get("save_dir") == DEFAULT_SAVE_DIR:
            init_args.save_dir = str(root)

    def _claim_run_directory(self, logger: Any) -> None:
        """Create the fresh run's ``version_<n>`` folder now, so that no other run takes it.

        Two runs started together would otherwise both pick the next free number and write
        into one folder. An explicit version that already holds files is refused: its run is
        never mixed with this one or cleared.
        """
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if (init_args is None or is_launched_process()
                or not all(key in init_args for key in ("save_dir", "name", "version"))):
            return
        root = Path(init_args.save_dir or ".") / str(init_args.name or "")
        if init_args.version is not None:
            version = init_args.version
            run = root / (f"version_{version}" if isinstance(version, int) else str(version))
            if run.exists() and not run.is_dir():
                raise UserInputError(f"{run} is a file, not a run folder: move it or choose "
                                     f"another version.")
            if run.is_dir() and any(run.iterdir()):
                raise UserInputError(
                    f"{run} already holds a run: leave out --trainer.logger.init_args.version "
                    f"for a fresh run folder, or continue it with --ckpt_path "
                    f"{run / 'checkpoints' / 'last.ckpt'}.")
            return
        created = _missing_folders(root)  # runs/ and runs/<name>/, if this run makes them
        number = claim_run_directory(root)
        run = root / f"version_{number}"
        init_args.version = number

        def remove_run() -> None:
            shutil.rmtree(run, ignore_errors=True)
            for folder in created:  # innermost first, and only while empty
                try:
                    folder.rmdir()
                except OSError:
                    break
        self._undo.append(remove_run)
        self._run_lock = lock_run(run)

    def _set_aside(self, path: Path) -> None:
        """Rename a file of the run being continued to ``<stem>_before_resume<suffix>``."""
        target = path.parent / free_name(path.parent, f"{path.stem}_before_resume{path.suffix}")
        try:
            path.rename(target)
        except FileNotFoundError:
            return
        except OSError as error:
            raise UserInputError(f"Cannot continue the run in {path.parent}: renaming "
                                 f"{path.name} failed ({describe(error)}); make the folder "
                                 f"writable or resume a copy of it.") from None
        self._undo.append(lambda: target.replace(path))

    def _forget_new_files(self, run: Path) -> None:
        """On undo, delete the files that appeared in ``run`` since now (a failed resume's
        config_resumed.yaml, metrics.csv, hparams.yaml, TensorBoard events)."""
        before = {path for path in run.rglob("*")}

        def delete_new_files() -> None:
            for path in sorted(set(run.rglob("*")) - before, reverse=True):
                if path.is_file() or path.is_symlink():
                    path.unlink()
                elif path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        self._undo.append(delete_new_files)

    def _took_a_step(self) -> bool:
        """Whether the run optimized (fit) or explained (predict) anything: then it keeps all."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self._start_step is None:
            return False
        return (trainer.global_step > self._start_step
                or trainer.predict_loop.batch_progress.total.ready > 0)

    def _undo_unstarted_run(self) -> None:
        """Leave the runs folder as it was: a run that failed before its first step leaves no
        empty ``version_<n>``, and a resume that failed no new files in the run it would have
        continued (its set-aside files go back)."""
        if is_launched_process():
            return
        for undo in reversed(self._undo):
            try:
                undo()
            except OSError:
                pass  # best effort: the error that stopped the run is the one to report
        self._undo = []

    def _parse_ckpt_path(self) -> None:
        """Options come from the config and the command line, never from a checkpoint.

        LightningCLI would load an explicit ``--ckpt_path FILE`` here (any file, before anything
        checks it), let the model options stored in it override the command line's, and
        instantiate whatever class it names; with ``last`` it would not. One rule instead: the
        command line gives the options, the checkpoint the state (images, optimizer, step); a
        checkpoint that does not fit the options is refused when it is loaded.
        """

    def _resume_in_place(self, config: Namespace, processes: Optional[int]) -> None:
        """Choose the checkpoint to go on from, and point the logger at its run.

        ``last`` means the newest run under the logger's ``save_dir/name`` that has a
        checkpoint. A checkpoint inside a run's ``checkpoints/`` folder is continued in that
        run's directory; any other checkpoint starts a fresh directory. Of a run's checkpoint
        the newest readable step of every process is taken (see ``choose_checkpoint``).
        """
        logger = config.trainer.logger
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        has_layout = init_args is not None and all(
            key in init_args for key in ("save_dir", "name", "version"))
        given = str(config.ckpt_path)
        if "://" in given:
            raise UserInputError(f"--ckpt_path takes a local checkpoint file or 'last', not a "
                                 f"URL: {given}.")
        if given == "last":
            if not has_layout:
                return  # Lightning's own search
            root = Path(init_args.save_dir or ".") / str(init_args.name)
            path = newest_run_checkpoint(root)
        else:
            path = Path(given)
            if path.is_dir():
                raise UserInputError(f"--ckpt_path {given} is a folder: give a checkpoint file "
                                     f"(such as {path / 'checkpoints' / 'last.ckpt'}) or 'last'.")
            if not path.is_file() and not previous_path(path).is_file():
                raise UserInputError(f"Checkpoint {given} does not exist.")
        # One file per process (see ImageDDPStrategy): resume with as many processes.
        writers = written_by(path)
        if processes is not None and processes != writers:
            raise UserInputError(
                f"{path} was written by {writers} processes; resume it with as many "
                f"(--trainer.devices, --trainer.num_nodes), not {processes}.")
        if is_launched_process():
            config.ckpt_path = str(path)  # the first process chose, and put the files in place
        else:
            choice = choose_checkpoint(path, writers)
            for reason in choice.skipped:
                print(f"warning: {reason}; going on from step {choice.step}.", file=sys.stderr)
            config.ckpt_path = str(choice.path)
            self._start_step = choice.step
        if has_layout and path.parent.name != "checkpoints":
            self._claim_run_directory(logger)  # a checkpoint from elsewhere: a fresh folder
        if has_layout and path.parent.name == "checkpoints":
            self._continue_in(path.parent.parent, init_args)

    def _continue_in(self, run: Path, init_args: Namespace) -> None:
        """Point the logger at ``run`` and make it ready to go on (a resumed fit, a continued
        predict run)."""
        init_args.save_dir, init_args.name, init_args.version = (
            str(run.parent.parent), run.parent.name, run.name)
        if not is_launched_process():
            # Before anything in the run changes: a second resume (or the run itself, still
            # going) must not mix its files with this one's, nor clean them up.
            self._run_lock = lock_run(run)
            for partial in run.rglob(f".*{TEMPORARY_MARK}*"):
                partial.unlink()  # what a killed process was writing when it died
        self._forget_new_files(run)
        self.save_config_kwargs = {**self.save_config_kwargs,
                                   "config_filename": free_name(run, "config_resumed.yaml")}
        if not is_launched_process():
            # CSVLogger deletes the metrics.csv it finds and rewrites hparams.yaml: keep the
            # interrupted part's (see _undo_unstarted_run for a resume that never starts).
            for name in ("metrics.csv", "hparams.yaml"):
                self._set_aside(run / name)

    def _continue_predict_run(self, config: Namespace) -> None:
        """Go on with a ``predict`` run that writes its results in parts (a dataset saliency
        run's shards): ``--ckpt_path last`` is the newest run under the logger's
        ``save_dir/name``, or give the run's folder. Its writer leaves out what is written.

        A prediction has no checkpoint: the run's own files are its state, so Lightning is
        given none to load.
        """
        logger = config.trainer.logger
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if init_args is None or not all(key in init_args for key in ("save_dir", "name",
                                                                      "version")):
            raise UserInputError("--ckpt_path with predict continues a run in its folder, which "
                                 "needs a logger with a save_dir and a name.")
        given = str(config.ckpt_path)
        root = Path(init_args.save_dir or ".") / str(init_args.name)
        run = newest_run(root) if given == "last" else Path(given)
        if run.is_file() and run.parent.name == "checkpoints":
            run = run.parent.parent
        if not (run / PARTS_FOLDER).is_dir():
            raise UserInputError(
                f"{run} holds no run that predict can continue (only a dataset saliency run, "
                f"which writes {PARTS_FOLDER}/, goes on where it stopped); leave out "
                f"--ckpt_path for a fresh run.")
        config.ckpt_path = None
        self._start_step = 0
        self._continue_in(run, init_args)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        if config.get("enable_checkpointing") is False:
            # Lightning refuses a checkpoint callback then; ours is always added.
            callbacks = [c for c in callbacks if not isinstance(c, RunCheckpoint)]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        """The Trainer; the option combinations Lightning refuses become one sentence."""
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as error:
            raise UserInputError(" ".join(str(error).split())) from None
        except ModuleNotFoundError as error:  # e.g. --trainer.accelerator tpu without torch_xla
            raise UserInputError(f"The Trainer's options need a package that is not installed: "
                                 f"{' '.join(str(error).split())}") from None

    def _check_subcommand(self, needs: str, runs_with: str) -> None:
        """Refuse a technique that the subcommand cannot run (``predict`` on style transfer).

        Args:
            needs: The step the subcommand runs (``training_step``, ``predict_step``).
            runs_with: The subcommand that runs the technique instead.
        """
        if is_overridden(needs, self.model):
            return
        configs = self.config[self.subcommand].get("config") or []
        again = f" --config {configs[-1]}" if configs else " with the same options"
        raise UserInputError(f"{type(self.model).__name__} is run with {runs_with}, not "
                             f"{self.subcommand}: python cli.py {runs_with}{again}.")

    def before_predict(self) -> None:
        self._check_subcommand("predict_step", "fit")
        self._add_tensorboard()

    def before_fit(self) -> None:
        self._check_subcommand("training_step", "predict")
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps <= 0:
            raise UserInputError(
                f"--trainer.max_steps must be a positive number of steps, got {trainer.max_steps}."
            )
        self._add_tensorboard()

    def after_fit(self) -> None:
        self._say_where_results_went()

    def after_predict(self) -> None:
        self._say_where_results_went()

    def _say_where_results_went(self) -> None:
        """One line on stderr naming the run folder, once, by the first process."""
        logger = self.trainer.logger
        if logger is None or not self.trainer.is_global_zero:
            return
        print(f"Results in {logger.log_dir}", file=sys.stderr)

    def _add_tensorboard(self) -> None:
        """Log to TensorBoard too, into the same run directory, when it is installed."""
        loggers = self.trainer.loggers
        if len(loggers) != 1 or not isinstance(loggers[0], CSVLogger):
            return
        try:
            from pytorch_lightning.loggers import TensorBoardLogger
            import tensorboard  # noqa: F401
        except ImportError:
            return
        csv_logger = loggers[0]
        self.trainer.loggers = [csv_logger, TensorBoardLogger(
            save_dir=csv_logger.save_dir, name=csv_logger.name, version=csv_logger.version,
            default_hp_metric=False)]


class PythonRun(ImageCLI):
    """A run built from Python (:mod:`lightning_modules.api`) the way the command line builds it.

    The config is read as ``--config`` reads it, the caller's options go on top as Python values
    and are checked by the same parser (types, names), and the run is seeded, claims its folder,
    translates its errors and cleans up after a failed start as a command-line run does.
    Without ``save_dir`` the Trainer is quiet: no logger, progress bar, checkpoint or config
    file, and no callback that writes files (the technique's own reports included).

    Args:
        subcommand: ``fit`` or ``predict``.
        config: The config file.
        options: Arguments of the config's model and datamodule, by name; each goes where the
            parser finds it. Values the parser cannot hold (a ``Backbone`` object) reach the
            class as they are.
        function: The calling function's name, for messages.
        expected: The module class the config must run (or a subclass of it).
        inputs: The names of ``options`` that the calling function's own arguments give.
        run_options: The names of the run's own options, for the unknown-option message.
        trainer: Trainer options to set (``max_steps``, ``accelerator``, ``precision``).
        seed: The seed (None: unseeded), when ``seeded``.
        seeded: Whether ``seed`` replaces the config's (``seed_everything``, default 0).
        save_dir: A folder for the command line's run directory, or None for a quiet run.
        callbacks: Callbacks that collect the results, added to the Trainer's.
        keep_predictions: Keep what ``predict`` returns (a dataset run's writer saves every
            batch instead: kept, thousands of batches would fill the memory).
    """

    def __init__(self, subcommand: str, config: str, options: dict[str, Any], *, function: str,
                 expected: type, inputs: Sequence[str] = (), run_options: Sequence[str] = (),
                 trainer: Optional[dict[str, Any]] = None, seed: Any = None,
                 seeded: bool = False, save_dir: Optional[str] = None, callbacks: Sequence[Any] = (),
                 keep_predictions: bool = True) -> None:
        self._request = dict(subcommand=subcommand, config=config, options=options,
                             function=function, expected=expected, inputs=tuple(inputs),
                             run_options=tuple(run_options), trainer=dict(trainer or {}),
                             seed=seed, seeded=seeded)
        self._objects: dict[str, dict[str, Any]] = {}
        self.quiet = save_dir is None
        self._collectors = list(callbacks)
        self.predictions: list[Any] = []
        self.keep_predictions = keep_predictions
        self.unattached: list[Any] = []  # the config's callbacks, in a quiet run
        settings = {**CLI_SETTINGS, "parser_kwargs": {"exit_on_error": False}}
        if self.quiet:
            settings["save_config_callback"] = None
        self._save_dir = save_dir
        super().__init__(args=[subcommand], **settings)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        request = self._request
        subcommand = request["subcommand"]
        base = parser.parse_args([subcommand, "--config", request["config"]])
        section = base[subcommand]
        self._check_technique(section.model.class_path, request)
        sorted_options = self._sort_options(section, request)
        trainer = dict(request["trainer"])
        if self.quiet:
            trainer.update(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)
        else:
            trainer.update(default_root_dir=str(self._save_dir), enable_checkpointing=False,
                           enable_progress_bar=False, enable_model_summary=False)
            if self._objects:  # a config.yaml could not hold them
                self.save_config_callback = None
        trainer.update(devices=1, num_nodes=1, strategy="auto")
        # The class paths again: jsonargparse would read bare init_args as the class's own keys.
        overrides = {part: {"class_path": section[part].class_path,
                            "init_args": sorted_options[part]} for part in ("model", "data")}
        overrides["trainer"] = trainer
        if request["seeded"]:
            overrides["seed_everything"] = False if request["seed"] is None else request["seed"]
        self.config = parser.parse_object({"subcommand": subcommand, subcommand: overrides},
                                          cfg_base=base)
        for part, values in self._objects.items():
            for key, value in values.items():
                self.config[subcommand][part].init_args[key] = value

    @staticmethod
    def _check_technique(class_path: str, request: dict[str, Any]) -> None:
        """Refuse a config that runs another technique than the calling function's."""
        module_name, _, name = str(class_path).rpartition(".")
        technique = getattr(importlib.import_module(module_name), name, None)
        expected = request["expected"]
        if not (isinstance(technique, type) and issubclass(technique, expected)):
            raise UserInputError(f"{request['function']}() runs {expected.__name__}, but "
                                 f"{request['config']} runs {name}.")

    def _sort_options(self, section: Namespace, request: dict[str, Any]
                      ) -> dict[str, dict[str, Any]]:
        """Each option under the model or the datamodule, whichever the parser gives it to."""
        accepted = {part: list(vars(section[part].init_args)) for part in ("model", "data")}
        sorted_options: dict[str, dict[str, Any]] = {"model": {}, "data": {}}
        for key, value in request["options"].items():
            part = next((part for part in ("model", "data") if key in accepted[part]), None)
            if part is None:
                known = accepted["model"] + accepted["data"] + list(request["run_options"])
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                model = section.model.class_path.rpartition(".")[2]
                data = section.data.class_path.rpartition(".")[2]
                raise UserInputError(
                    f"{request['function']}() has no option '{key}'{hint}; it takes the "
                    f"arguments of {model} and {data} and {', '.join(request['run_options'])}.")
            if _plain(value):
                sorted_options[part][key] = list(value) if isinstance(value, tuple) else value
            else:
                self._objects.setdefault(part, {})[key] = value
        return sorted_options

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        if self.quiet:
            # Writers would write into the working folder: the command line's are left out,
            # and the config's are kept unattached (saliency() draws with the config's colours).
            # A technique's own reports write only into a run folder, which a quiet run lacks.
            callbacks = []
            self.unattached = list(config.get("callbacks") or [])
            config = {**config, "callbacks": []}
        return super()._instantiate_trainer(config, [*callbacks, *self._collectors])

    def predict(self, **kwargs: Any) -> None:
        """``trainer.predict``, keeping what it returns (saliency batches) if asked to."""
        self.predictions = self.trainer.predict(
            **{**kwargs, "return_predictions": self.keep_predictions}) or []

    def _add_tensorboard(self) -> None:
        if not self.quiet:
            super()._add_tensorboard()

    def _say_where_results_went(self) -> None:
        """Python gets the run folder in its results (``run_directory``), not on stderr."""


def _plain(value: Any) -> bool:
    """Whether the parser can hold ``value`` (YAML's kinds of value), or it must go as it is."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain(item) for key, item in value.items())
    return False


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def lock_run(run: Path) -> Optional[int]:
    """Hold the run folder for this process's lifetime (an advisory lock on the folder itself,
    released by the system when the process ends, however it ends).

    Returns:
        The descriptor that holds the lock (kept open), or None where locks are unavailable.

    Raises:
        UserInputError: If another process holds the run: a resume of it, or the run itself.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks on folders
        return None
    descriptor = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        raise UserInputError(f"{run} is in use by another process (the run itself, or a "
                             f"resume of it): wait for it to end, then continue it with "
                             f"--ckpt_path last.") from None
    return descriptor


def newest_run(root: Path) -> Path:
    """The newest run folder under ``root`` (the highest ``version_<n>``).

    Raises:
        UserInputError: If there is none.
    """
    runs = [(int(p.name[8:]), p) for p in root.glob("version_*")
            if p.name[8:].isdigit() and p.is_dir()]
    if not runs:
        raise UserInputError(f"There is no run to continue in {root}.")
    return max(runs)[1]


def newest_run_checkpoint(root: Path) -> Path:
    """``checkpoints/last.ckpt`` of the newest run under ``root`` (the highest version).

    Never an older run's: continuing another run than the one last started would go on with
    the wrong options and leave the newest unfinished.

    Raises:
        UserInputError: If there is no run, or the newest has no checkpoint yet.
    """
    run = newest_run(root)
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file() and not previous_path(last).is_file():
        raise UserInputError(
            f"The newest run, {run}, stopped before its first checkpoint "
            f"(--checkpoint.every_n_train_steps): start it again without --ckpt_path, or "
            f"continue an earlier run with --ckpt_path <its folder>/checkpoints/last.ckpt.")
    return last


def is_launched_process() -> bool:
    """Whether this process was started by a launcher for a run of several processes (a
    process other than the first): it finds what the first one prepared, and leaves it."""
    return any(os.environ.get(name, "0") not in ("", "0")
               for name in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK"))


def process_count(devices: Any, num_nodes: int) -> Optional[int]:
    """How many processes ``--trainer.devices`` and ``--trainer.num_nodes`` ask for.

    Returns:
        The count, or None when Lightning decides (``"auto"``, ``-1``: every device).
    """
    if isinstance(devices, (list, tuple)):
        per_node: Optional[int] = len(devices)
    elif isinstance(devices, int):
        per_node = devices if devices > 0 else None
    else:
        text = str(devices).strip()
        per_node = (len([d for d in text.split(",") if d.strip()]) if "," in text
                    else int(text) if text.isdigit() and int(text) > 0 else None)
    return None if per_node is None else per_node * num_nodes


#: The most steps a run may ask for: Lightning's step counters and ours stay within int32.
MOST_STEPS = 2**31 - 1


def check_run_options(config: Namespace) -> None:
    """Refuse the Trainer and writer options that Lightning would accept and then fail on deep
    inside (a ZeroDivisionError, a dtype mismatch), or take and run as if they meant something.

    Args:
        config: The subcommand's parsed config.

    Raises:
        UserInputError: Naming the option, its value and what it takes.
    """
    trainer = config.trainer
    accelerator = trainer.accelerator
    if isinstance(accelerator, str):
        from lightning_fabric.accelerators import ACCELERATOR_REGISTRY

        known = sorted({"auto", "gpu", *ACCELERATOR_REGISTRY.available_accelerators()})
        if accelerator not in known:
            raise UserInputError(f"--trainer.accelerator must be one of {', '.join(known)}, "
                                 f"got {accelerator!r}.")
    _check_whole("--trainer.num_nodes", trainer.num_nodes, least=1)
    _check_whole("--trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, least=1)
    if str(trainer.precision) in ("64", "64-true", "double"):
        raise UserInputError("--trainer.precision 64 is not supported: the backbones' weights "
                             "are float32; use 32, 16-mixed or bf16-mixed.")
    if trainer.max_steps is not None and trainer.max_steps > MOST_STEPS:
        raise UserInputError(f"--trainer.max_steps must be at most {MOST_STEPS:,}, got "
                             f"{trainer.max_steps:,}.")
    for option in ("limit_train_batches", "limit_predict_batches"):
        value = trainer.get(option)
        if value is not None and not isinstance(value, bool) and value <= 0:
            raise UserInputError(f"--trainer.{option} must be above 0 (every job runs), got "
                                 f"{value}.")
    for option in ("checkpoint.every_n_train_steps", "images.every_n_steps"):
        if option in config and config[option] is not None:
            _check_whole(f"--{option}", config[option], least=0)


def check_no_null_values(part: str, spec: Any) -> None:
    """Refuse ``null`` (None) for an option whose class does not take None.

    jsonargparse lets ``--data.image_size null`` (and ``image_size=None`` from Python) through
    to the class, where it failed with a TypeError deep inside.

    Args:
        part: ``model`` or ``data``, for the message.
        spec: The parsed ``class_path`` and ``init_args``.
    """
    if not isinstance(spec, Namespace) or not isinstance(spec.get("init_args"), Namespace):
        return
    module_name, _, name = str(spec.get("class_path")).rpartition(".")
    technique = getattr(sys.modules.get(module_name), name, None)
    if not isinstance(technique, type):
        return
    for key, value in vars(spec.init_args).items():
        if value is None and not _takes_none(technique, key):
            raise UserInputError(f"--{part}.{key} needs a value; null (None) is not one.")


def _takes_none(technique: type, option: str) -> bool:
    """Whether ``option`` of ``technique`` (its ``__init__`` or, through ``**kwargs``, a base
    class's) admits None: typed Optional, defaulting to None, or untyped."""
    import inspect
    import typing

    for klass in technique.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters
        if option in parameters:
            parameter = parameters[option]
            if parameter.default is None or parameter.annotation is inspect.Parameter.empty:
                return True
            try:
                hint = typing.get_type_hints(klass.__init__).get(option, Any)
            except Exception:  # noqa: BLE001 - an annotation we cannot resolve: let it be
                return True
            return hint is Any or type(None) in typing.get_args(hint)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
            return True
    return True


def _check_whole(option: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserInputError(f"{option} must be a whole number of at least {least}, got "
                             f"{value!r}.")


def check_process_count(processes: Optional[int], accelerator: Any) -> None:
    """Refuse more processes on a CPU than it has cores: each loads the network and computes
    alone, so more only slow the run down (and ``--trainer.devices 99`` would start 99)."""
    cores = os.cpu_count() or 1
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                      and not torch.backends.mps.is_available())
    if on_cpu and processes is not None and processes > cores:
        raise UserInputError(f"--trainer.devices asks for {processes} processes, but this "
                             f"machine has {cores} CPU cores: use at most {cores}.")


def check_hardware(accelerator: Any, devices: Any) -> None:
    """Refuse an accelerator this machine lacks and device counts Lightning cannot read.

    Lightning refuses both deep inside the Trainer, with a traceback (``devices abc`` on a CPU
    is a TypeError).
    """
    if not isinstance(accelerator, str):
        return  # an Accelerator object: Lightning's to judge
    mps = torch.backends.mps.is_available()  # Apple's GPU: what "gpu" and "auto" pick there
    if accelerator in ("gpu", "cuda") and not (torch.cuda.is_available()
                                               or (accelerator == "gpu" and mps)):
        raise UserInputError(f"--trainer.accelerator {accelerator} needs a GPU, but no GPU is "
                             f"available on this machine; use --trainer.accelerator cpu or auto.")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not (torch.cuda.is_available()
                                                                       or mps))
    if not _devices_valid(devices, on_cpu):
        if on_cpu:
            raise UserInputError(f"--trainer.devices on a CPU is the number of processes (1 or "
                                 f"more) or auto, got {devices!r}.")
        raise UserInputError(f"--trainer.devices must be a positive number of devices, -1 (all) "
                             f"or auto, or GPU indices such as [0, 1], got {devices!r}.")


def _devices_valid(devices: Any, on_cpu: bool) -> bool:
    """Whether Lightning accepts ``devices``: a count, -1, ``auto``, or (GPU) indices."""
    if isinstance(devices, bool):
        return False
    if isinstance(devices, int):
        return devices > 0 or (devices == -1 and not on_cpu)
    if isinstance(devices, (list, tuple)):
        return not on_cpu and bool(devices) and all(
            isinstance(index, int) and not isinstance(index, bool) and index >= 0
            for index in devices)
    text = str(devices).strip()
    if text == "auto" or (text == "-1" and not on_cpu) or (text.isdigit() and int(text) > 0):
        return True
    # "0,1" or "0,": GPU indices
    indices = [part.strip() for part in text.split(",")]
    return (not on_cpu and "," in text and any(indices)
            and all(part.isdigit() for part in indices if part))


def free_name(directory: Path, name: str) -> str:
    """``name``, or ``<stem>_2<suffix>``, ``_3``, ... whichever does not exist in ``directory``."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidate, number = name, 1
    while (directory / candidate).exists():
        number += 1
        candidate = f"{stem}_{number}{suffix}"
    return candidate


def list_layers(args: Sequence[str]) -> int:
    """``cli.py layers --model.backbone NAME``: print each layer's index, name and output shape."""
    import argparse

    from lightning_modules.backbones import load_backbone

    parser = argparse.ArgumentParser(
        prog="cli.py layers", description="List a backbone's layers, by which techniques name "
        "them (index or name), with their output shapes [channels, height, width].")
    parser.add_argument("--model.backbone", dest="backbone", default="efficientnet_lite0",
                        help="a registered name, timm:<model> or torchvision:<model>")
    parser.add_argument("--model.weights", dest="weights", default="random",
                        help="default, random (enough for shapes; the default here) or a file")
    parser.add_argument("--size", type=int, default=224, help="side of the image (pixels)")
    options = parser.parse_args(list(args))
    if options.size < 8:
        raise UserInputError(f"--size must be at least 8 pixels, got {options.size}.")
    backbone = load_backbone(options.backbone, options.weights)
    rows = backbone.layer_shapes(options.size)
    width = max(len(name) for _, name, _ in rows)
    print(f"{backbone.name}: {len(rows)} layers for a {options.size} px image")
    for index, name, shape in rows:
        print(f"{index:>4}  {name:<{width}}  {list(shape)}")
    return 0


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    if signal.getsignal(signal.SIGINT) is _stopped_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if argv[:1] == ["layers"]:
        try:
            return list_layers(argv[1:])
        except UserInputError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    # The seed is recorded in the run's config.yaml; on stderr it would crowd out error messages.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_drop_start_up_chatter)
    # --model.fast on a machine without CUDA: torch.compile's C++ set-up says so, as expected.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    for message in IRRELEVANT_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # TensorBoard's writer thread prints its own traceback for a full disk; the same error
    # reaches translate_error when the logger closes.
    threading.excepthook = _quiet_about_full_disks
    # A resumed run's metrics.csv was set aside before the logger started (_resume_in_place).
    warnings.filterwarnings("ignore", message=r".*Previous log files in this directory will be "
                                              r"deleted.*")
    try:
        argv = with_shipped_configs(argv)
        if args is None:
            # Lightning warns when it is given both args and a command line.
            sys.argv[1:] = argv
        ImageCLI(args=None if args is None else argv, **CLI_SETTINGS)
    except KeyboardInterrupt:
        # Before the run's first step (SaveOnInterrupt handles Ctrl+C from then on): the
        # builder has removed the run folder it had claimed.
        print("error: stopped (Ctrl+C) before the run's first step; nothing was kept.",
              file=sys.stderr)
        return 128 + signal.SIGINT
    except Exception as error:  # noqa: BLE001 - only the user's own mistakes are caught below
        translated = translate_error(error, argv)
        if translated is None:
            raise
        status, message = translated
        print(f"error: {message}", file=sys.stderr)
        return status
    return 0


def translate_error(error: BaseException, argv: Sequence[str] = ()
                    ) -> Optional[tuple[int, str]]:
    """The exit status and one sentence for a user's mistake, or None for a bug.

    The one place where errors of a run become sentences, for the command line and for Python.

    Args:
        error: What the run raised.
        argv: The command line, to name the config in advice.
    """
    if type(error).__name__ == "ArgumentError":  # jsonargparse's, raised with exit_on_error off
        message = condensed_parse_error(str(error))
        if "'fit' does not accept option 'return_predictions'" in message:
            # A predict config (saliency) given to fit: its predict-only key says so.
            argv = list(argv)
            config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else "..."
            message += (f"; this config is run with predict: python cli.py predict "
                        f"--config {config}")
        return 2, message
    cause = (user_facing_cause(error) or out_of_memory(error) or config_kept(error)
             or disk_full(error))
    return None if cause is None else (1, str(cause))


#: What a write that fails for want of room (or of a writable disk) ends with.
_NO_ROOM = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


def disk_full(error: BaseException) -> Optional[str]:
    """One sentence for a write that found the disk full or read-only, or None.

    Lightning's own writers (the config, TensorBoard's events) raise the OSError as it is.
    """
    for link in _chain(error):
        if isinstance(link, OSError) and link.errno in _NO_ROOM:
            return (f"Cannot write {link.filename or 'a file'} ({describe(link)}): free some "
                    f"space or give the run another folder.")
    return None


def with_shipped_configs(argv: Sequence[str]) -> list[str]:
    """``argv`` with every ``--config NAME`` that is no file replaced by the shipped config's path,
    and every config file checked (``configs.find_config``).

    ``--config style_transfer`` and ``--config configs/style_transfer.yaml`` then work from any
    directory, in a checkout or after ``pip install .``; an existing file always wins. A value
    that is YAML itself (jsonargparse reads ``--config '{trainer: ...}'`` too) is left as it is.
    """
    from configs import find_config

    def resolve_config(given: str) -> str:
        if any(mark in given for mark in ("{", "\n", ": ")):
            return given
        return str(find_config(given))

    resolved = list(argv)
    for index, item in enumerate(resolved):
        if item == "--config" and index + 1 < len(resolved):
            resolved[index + 1] = resolve_config(resolved[index + 1])
        elif item.startswith("--config="):
            resolved[index] = "--config=" + resolve_config(item[len("--config="):])
    return resolved


def _quiet_about_full_disks(arguments: Any) -> None:
    """``threading.excepthook`` that leaves a full disk to ``translate_error``."""
    error = arguments.exc_value
    if isinstance(error, OSError) and error.errno in _NO_ROOM:
        return
    threading.__excepthook__(arguments)


def _drop_start_up_chatter(record: logging.LogRecord) -> bool:
    """Keep Lightning's hardware report and advertising off stderr, where errors should stand alone."""
    return not is_start_up_chatter(record)


def condensed_parse_error(message: str) -> str:
    """One line from jsonargparse's nested report: the option's dotted name and what is wrong.

    Example: ``Parser key "model": ... Parser key "optimizer": Expected a typing.Literal['adam',
    'lbfgs']. Got value: sgd`` becomes ``--model.optimizer: Expected a typing.Literal[...]...``.
    """
    keys, reasons = [], []
    for line in (raw.strip(" -") for raw in message.splitlines()):
        match = re.match(r'Parser key "([^"]+)":\s*(.*)', line)
        if match:
            keys.append(match.group(1))
            line = match.group(2)
        if line and not line.startswith(_PARSE_ERROR_BOILERPLATE):
            reasons.append(line)
    reason = reasons[0] if reasons else "invalid value"
    return f"--{'.'.join(keys)}: {reason}" if keys else reason


# Lines of jsonargparse's report that describe its search, not the user's mistake.
_PARSE_ERROR_BOILERPLATE = ("Does not validate against any of the Union subtypes", "Subtypes:",
                            "Errors:", "Problem with given class_path", "Given value",
                            "Expected a <class 'NoneType'>")


def user_facing_cause(error: BaseException) -> Optional[BaseException]:
    """The UserInputError or DivergedError behind ``error``, if any.

    jsonargparse wraps exceptions raised while it instantiates classes, so the user's mistake
    may sit several links down the ``__cause__`` / ``__context__`` chain.
    """
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (UserInputError, DivergedError)):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _chain(error: BaseException) -> list[BaseException]:
    """``error`` and the exceptions behind it (``__cause__`` / ``__context__``), in order."""
    chain: list[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def out_of_memory(error: BaseException) -> Optional[str]:
    """One sentence for running out of memory, or None for any other error.

    The checks before allocating count only the images, so a run can still exhaust memory in
    the backbone's features: Python's MemoryError, torch's OutOfMemoryError (CUDA) and the CPU
    allocator's RuntimeError all end here.
    """
    for link in _chain(error):
        text = str(link)
        if not (isinstance(link, (MemoryError, torch.OutOfMemoryError))
                or isinstance(link, RuntimeError) and ("can't allocate memory" in text
                                                       or "out of memory" in text)):
            continue
        cpu = re.search(r"tried to allocate (\d+) bytes", text)
        cuda = re.search(r"Tried to allocate ([\d.]+ [KMGTP]iB)", text)
        size = format_bytes(int(cpu.group(1))) if cpu else cuda.group(1) if cuda else None
        failed = f" (an allocation of {size} failed)" if size else ""
        return (f"Ran out of memory{failed}: try smaller images (--data.image_size) or fewer at "
                f"once (--data.batch_size).")
    return None


def config_kept(error: BaseException) -> Optional[str]:
    """One sentence for Lightning's SaveConfigCallback refusing to overwrite a config.yaml.

    Runs get fresh directories, except without a logger (``--trainer.logger false``): then
    they write into ``--trainer.default_root_dir``, the current folder by default.
    """
    for link in _chain(error):
        match = re.search(r"SaveConfigCallback expected (.+?) to NOT exist", str(link))
        if match:
            return (f"Refusing to overwrite {match.group(1)}, an earlier run's config: give this "
                    f"run another folder (--trainer.default_root_dir without a logger, else the "
                    f"logger's save_dir, name or version).")
    return None


def run() -> None:
    """Console-script entry point (``image-opt fit --config ...``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()

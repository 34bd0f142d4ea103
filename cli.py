"""One command line for every technique.

    python cli.py fit --config configs/style_transfer.yaml [--model.tv_weight 1e-3 ...]
    python cli.py fit --config configs/style_transfer.yaml --print_config

Every run writes into a fresh directory (``runs/<technique>/version_<n>/``): the config, the
images, ``losses.csv`` and ``loss_curve.png``. Bad input ends with one sentence on stderr and a
non-zero exit, never a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, Sequence

from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.loggers import CSVLogger

from callbacks import ImageWriter, LossHistory
from lightning_modules.base import DivergedError
from lightning_modules.errors import UserInputError

TRAINER_DEFAULTS = {
    "logger": {
        "class_path": "pytorch_lightning.loggers.CSVLogger",
        "init_args": {"save_dir": "runs", "name": "run"},
    },
    "log_every_n_steps": 1,
    "enable_checkpointing": False,
    "num_sanity_val_steps": 0,
    "accelerator": "auto",
    "devices": 1,
}


class ImageCLI(LightningCLI):
    """LightningCLI with the image callbacks always on and the step count checked."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ImageWriter, "images")
        parser.add_lightning_class_args(LossHistory, "losses")

    def before_fit(self) -> None:
        trainer = self.trainer
        if trainer.max_steps is None or trainer.max_steps <= 0:
            raise UserInputError(
                f"--trainer.max_steps must be a positive number of steps, got {trainer.max_steps}."
            )
        self._add_tensorboard()

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


def main(args: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    # The seed is recorded in the run's config.yaml; on stderr it would crowd out error messages.
    logging.getLogger("lightning_fabric.utilities.seed").setLevel(logging.WARNING)
    try:
        ImageCLI(
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            args=args,
            auto_configure_optimizers=False,
        )
    except Exception as error:  # noqa: BLE001 - only the user's own mistakes are caught below
        cause = user_facing_cause(error)
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        return 1
    return 0


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


def run() -> None:
    """Console-script entry point (``image-opt fit --config ...``)."""
    sys.exit(main())


if __name__ == "__main__":
    run()

"""What every run of a technique shares, started from the command line (``cli.py``) or from
Python (:mod:`lightning_modules.api`): the seed, the logging period and the noise left out.

One place, so that ``python cli.py fit --config configs/style_transfer.yaml`` and
``stylize(...)`` run the same way and print the same little.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

from lightning_modules.errors import UserInputError

#: The seed of a run that names none (saved in the run's ``config.yaml``).
DEFAULT_SEED = 0

#: Losses are kept on the device and read every this many steps
#: (``ImageOptimization.record_losses``); ``losses.csv`` still gets every step.
LOG_EVERY_N_STEPS = 10

#: Lightning's advice for training networks (frozen modules in eval mode, loader workers) and a
#: deprecation inside a dependency: none of it applies to an image parameter, and left on it
#: buries the useful lines.
IRRELEVANT_WARNINGS = (
    r".*module\(s\) in eval mode.*",
    r".*does not have many workers.*",
    r".*isinstance\(treespec, LeafSpec\)`? is deprecated.*",
    # A variant given from Python as an object (PGD(eps=...)): the parser keeps it as it is.
    r"(?s).*Unable to serialize instance.*",
    # The dataset run's shards: each loader process takes whole batches by their position
    # (datamodules/image_dataset.py), so the length it reports is exact.
    r".*`IterableDataset` has `__len__` defined.*",
)

# Lightning's hardware report and advertising, printed when a Trainer starts, and its line at the
# end of a fit, which names its own internal limits: the steps of every chunk of jobs together
# (max_steps=100 for a run of 50 steps a job), or max_epochs=2 for a run that stopped early
# because every image was fooled. The run says what it did itself ("Results in ...").
_START_UP_CHATTER = ("GPU available", "TPU available", "HPU available", "\U0001f4a1 Tip",
                     "`Trainer.fit` stopped:")


def log_period(max_steps: Optional[int], every: int = LOG_EVERY_N_STEPS) -> int:
    """``log_every_n_steps`` for a run of ``max_steps``: a run shorter than the period still
    logs (and checks for divergence) at its last step."""
    if max_steps and max_steps > 0 and every > 0:
        return min(every, max_steps)
    return every


def is_start_up_chatter(record: logging.LogRecord) -> bool:
    """Whether a log record is Lightning's start-up report (hardware, tips), not a result."""
    return str(record.msg).startswith(_START_UP_CHATTER)


def check_seed(seed: Any, option: str = "--seed_everything", random_one: str = "true") -> None:
    """Refuse a seed outside Lightning's range (numpy's: 0 to 2**32 - 1, no negatives).

    Lightning would warn and seed with another number. ``true`` (a random seed), ``false`` (no
    seeding) and None are left to Lightning.

    Args:
        seed: The seed given.
        option: What it was given as, for the message (``--seed_everything``, ``seed``).
        random_one: What asks for a random seed there, for the message.
    """
    from lightning_fabric.utilities.seed import max_seed_value, min_seed_value  # imports Lightning

    if seed is None or isinstance(seed, bool):
        return
    if not isinstance(seed, int) or not min_seed_value <= seed <= max_seed_value:
        raise UserInputError(f"{option} must be a whole number from {min_seed_value} to "
                             f"{max_seed_value} (or {random_one} for a random one), got {seed}.")

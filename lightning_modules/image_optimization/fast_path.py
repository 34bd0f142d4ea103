"""The GPU fast path (``--model.fast``): CUDA graphs, channels-last, fused Adam."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn

from lightning_modules.backbones import Backbone
from lightning_modules.errors import UserInputError


def fast_path_compile_mode(device: torch.device) -> Optional[str]:
    """``torch.compile``'s mode for the fast path on ``device``; None: stay eager.

    On a GPU, CUDA graphs (``reduce-overhead``): at batch 1 a small network's step is bound by
    kernel launches, which a graph replays at once. On a CPU nothing is gained: compiled steps
    of EfficientNet-Lite0 measured about 2x slower than eager ones (benchmarks/README.md).
    """
    return "reduce-overhead" if device.type == "cuda" else None


def fast_path_mode(trainer: pl.Trainer, backbone: Backbone) -> Optional[str]:
    """Check the run can take the fast path and put ``backbone`` in channels-last if it does.

    Returns:
        The compile mode for ``Backbone.compile_network`` (None: the run stays eager, and a
        warning says why).
    """
    if trainer.accumulate_grad_batches != 1:
        raise UserInputError("--model.fast cannot accumulate gradients over steps (CUDA graphs "
                             "reuse the gradient's memory); leave "
                             "--trainer.accumulate_grad_batches at 1.")
    device = trainer.strategy.root_device
    mode = fast_path_compile_mode(device)
    if mode is None:
        rank_zero_warn(f"--model.fast speeds up GPU runs; this run is on the {device.type}, "
                       "where compiled steps measured slower than eager ones, so it runs eager.")
        return None
    backbone.use_channels_last()
    return mode

"""Objective lists and channel atlases in, one feature-visualization job per picture out."""

from __future__ import annotations

from typing import Optional, Union

from datamodules.jobs import JobData
from lightning_modules.errors import UserInputError
from lightning_modules.feature_visualization.objectives import ChannelAtlas, parse_objective

# Two channels, a neuron, a layer, and a sum with a negated term, on EfficientNet-Lite0.
DEFAULT_OBJECTIVES = ["channel:blocks.4:12", "channel:blocks.5:40", "neuron:blocks.4:30",
                      "layer:blocks.3", "channel:blocks.4:12 - channel:blocks.4:30"]


class ObjectiveListData(JobData):
    """The objectives to visualize: ``images_per_objective`` pictures of each, optimized together.

    Each objective is a string in the grammar of
    :mod:`lightning_modules.feature_visualization.objectives`, checked here (its layers and
    channels are checked against the backbone by the technique). The pictures of one objective
    form its batch, which a ``diversity`` term sets apart; they share a chunk as long as
    ``batch_size`` holds them.

    Args:
        objectives: A list of objective strings, or one.
        images_per_objective: Pictures of each objective (``diversity`` needs two or more).
        batch_size: The most pictures one process optimizes at once; the rest wait for the
            next chunk, each getting ``trainer.max_steps`` steps. None: all at once.
    """

    def __init__(self, objectives: Union[list[str], str] = DEFAULT_OBJECTIVES,
                 images_per_objective: int = 1, batch_size: Optional[int] = None) -> None:
        super().__init__(batch_size)
        texts = [objectives] if isinstance(objectives, str) else list(objectives or [])
        if not texts:
            raise UserInputError("The objective list is empty; give at least one, e.g. "
                                 "channel:blocks.4:12.")
        for text in texts:
            parse_objective(text)  # malformed strings are refused before the backbone loads
        if (isinstance(images_per_objective, bool) or not isinstance(images_per_objective, int)
                or images_per_objective < 1):
            raise UserInputError(f"images_per_objective must be a whole number of at least 1, "
                                 f"got {images_per_objective!r}.")
        self.objectives = [text.strip() for text in texts]
        self.images_per_objective = images_per_objective
        self.jobs = [text for text in self.objectives for _ in range(images_per_objective)]


class ChannelAtlasData(JobData):
    """A channel atlas: one picture of every channel of a layer (or of the channels chosen).

    Its jobs are :class:`~lightning_modules.feature_visualization.objectives.ChannelAtlas`
    items, one per layer, which the technique expands into one ``channel:L:C`` job per channel
    (it knows the backbone, and so how many channels ``"all"`` is). Those jobs are chunked and
    shared between processes like any others; their pictures are ``channel_<L>_<C>.png`` and
    one ``atlas_sheet.png`` (``callbacks.AtlasSheet``).

    Args:
        layers: A layer (index or name, ``python cli.py layers`` lists them), or a list of them.
        channels: ``"all"``, or the channel numbers to draw (of every layer given).
        batch_size: The most pictures one process optimizes at once; the rest wait for the
            next chunk, each getting ``trainer.max_steps`` steps. None: all at once.
    """

    def __init__(self, layers: Union[int, str, list[Union[int, str]]] = "blocks.4",
                 channels: Union[str, list[int]] = "all",
                 batch_size: Optional[int] = None) -> None:
        super().__init__(batch_size)
        chosen = [layers] if isinstance(layers, (int, str)) else list(layers or [])
        if not chosen or any(isinstance(layer, bool) or not isinstance(layer, (int, str))
                             or not str(layer).strip() for layer in chosen):
            raise UserInputError(f"layers must be a layer (index or name, e.g. blocks.4) or a "
                                 f"list of them, got {layers!r}.")
        if isinstance(channels, str):
            if channels.strip().lower() != "all":
                raise UserInputError(f"channels must be 'all' or a list of channel numbers, "
                                     f"got '{channels}'.")
            picked: Union[str, tuple[int, ...]] = "all"
        else:
            numbers = list(channels or [])
            if not numbers or any(isinstance(c, bool) or not isinstance(c, int) or c < 0
                                  for c in numbers):
                raise UserInputError(f"channels must be 'all' or a list of channel numbers "
                                     f"(0 or more), got {channels!r}.")
            picked = tuple(dict.fromkeys(numbers))  # a channel asked twice is drawn once
        self.layers = [layer.strip() if isinstance(layer, str) else layer for layer in chosen]
        self.channels = picked
        self.jobs = [ChannelAtlas(layer, picked) for layer in self.layers]

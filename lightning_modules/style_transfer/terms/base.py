"""What a loss term of a picture made from features is: the parts a composition adds up.

A :class:`~lightning_modules.style_transfer.FeatureMatching` run (style transfer, feature
inversion, texture synthesis) minimizes the sum of its terms. Each term is one small object
with two halves, computed at different times (as a style loss or a Lucent objective):

- ``target(jobs, sizes, backbone, device)``: what the term compares against for one group of
  jobs at the current stage's picture size, computed once per chunk and stage (the content's
  features, the styles' statistics; None for a term that needs none);
- ``loss(pictures, features, target, step)``: one value per picture ``[N]``, weighted;
- ``project(pixels, target)`` (optional): a term that also sets a hard limit brings the
  pictures back within it after every step (pixel pictures only); a term that only limits
  adds no loss (:attr:`adds_loss` false, no column in ``losses.csv``).

A term names the backbone layers it reads (:attr:`LossTerm.layers`, after :meth:`bind`), and
the images it needs from each job (:attr:`reads_content`, :attr:`reads_styles`): the
composition refuses a job without them, and an image that no term reads.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from lightning_modules.backbones import Backbone


class LossTerm:
    """One weighted term of the loss.

    Subclasses set :attr:`name` (the term's column in ``losses.csv`` is ``<name>_loss``) and
    implement :meth:`loss`; they may implement :meth:`bind`, :meth:`target` and :meth:`panels`.
    """

    #: The term's name in the logs: ``content`` gives ``content_loss``.
    name = "term"
    #: Whether the term compares against each job's content image, or its style images.
    reads_content = False
    reads_styles = False
    #: Whether the term adds to the loss (a term that only limits the picture does not).
    adds_loss = True

    def __init__(self) -> None:
        self.layers: list[int] = []  # the backbone layers whose features the term compares

    def bind(self, backbone: Backbone, wrap: bool) -> None:
        """Resolve and check the term's layers on the run's ``backbone``.

        Args:
            backbone: The frozen network the picture is optimized against.
            wrap: The picture is a torus (tileable): its last row's neighbour is its first.
        """

    def target(self, jobs: Sequence[Any], sizes: Sequence[tuple[int, int]], backbone: Backbone,
               device: torch.device) -> Any:
        """What the term compares one group's pictures against (default: nothing).

        Args:
            jobs: The group's jobs (``StyleJob``: ``content``, ``styles``, ...).
            sizes: Each job's picture size ``(H, W)`` at the current stage.
            backbone: The frozen network.
            device: Where the run's tensors live.
        """
        return None

    def loss(self, pictures: torch.Tensor, features: Mapping[int, torch.Tensor], target: Any,
             step: int) -> torch.Tensor:
        """The weighted loss of each picture.

        Args:
            pictures: The normalized pictures ``[N, 3, H, W]``, as the backbone takes them.
            features: The backbone's features of the pictures (as it saw them: shifted, if the
                run shifts), by layer index.
            target: :meth:`target` of the group.
            step: The run's global step (seeds random draws).

        Returns:
            ``[N]`` losses.
        """
        raise NotImplementedError

    def project(self, pixels: torch.Tensor, target: Any) -> Optional[torch.Tensor]:
        """The pictures brought back within the term's limit, after an optimizer step.

        Args:
            pixels: The 0-1 pixels ``[N, 3, H, W]`` of one group's pictures.
            target: :meth:`target` of the group.

        Returns:
            The limited pixels, or None where the term sets no limit (the default).
        """
        return None

    def panels(self, job: Any) -> list[tuple[str, torch.Tensor]]:
        """Titled pictures of ``job`` that the term compares against, for the job's sheet."""
        return []


def per_layer(value: float | Sequence[float], count: int, name: str) -> list[float]:
    """One weight for each of ``count`` layers: a number for all of them, or a list of them.

    Raises:
        UserInputError: If a list has another count.
    """
    from lightning_modules.errors import UserInputError

    values = [float(value)] * count if isinstance(value, (int, float)) else list(value)
    if len(values) != count:
        raise UserInputError(f"{name} has {len(values)} values but there are {count} layers.")
    return values

"""Feature visualization's step: the scores of objectives, and the loss that raises them.

One network pass per step serves every objective of the batch: the layers all of them read are
extracted together (and the logits only when one reads them). The images reach the network
through :func:`~lightning_modules.class_visualization.functional.class_visualization_loss`
itself, which is handed a stand-in for the network (:class:`_Recorder`) that records the
activations: the view (rendering, jitter, transforms) and the L2 penalty have one
implementation, and a class logit and a channel are optimized the same way. No Lightning and
no files here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.class_visualization.functional import class_visualization_loss
from lightning_modules.feature_visualization.objectives import Activations, Objective
from lightning_modules.image_optimization.parameterizations import Parameterization


def activations(shown: torch.Tensor, backbone: Backbone,
                objectives: Sequence[Objective]) -> Activations:
    """What ``objectives`` read of images ``shown``, from one pass through ``backbone``.

    Args:
        shown: Normalized images ``[N, 3, H, W]``.
        backbone: The network.
        objectives: Bound objectives (their layers are indices).
    """
    layers = sorted({index for objective in objectives for index in objective.layer_specs()})
    if any(objective.needs_logits for objective in objectives):
        maps, logits = backbone.extract_with_logits(shown, layers)
    else:
        maps, logits = (backbone.extract(shown, layers) if layers else []), None
    return Activations(dict(zip(layers, maps)), logits)


def objective_scores(shown: torch.Tensor, backbone: Backbone, objectives: Sequence[Objective],
                     rows: Optional[Sequence[Sequence[int]]] = None) -> torch.Tensor:
    """Each image's score under its own objective, ``[N]``.

    Args:
        shown: Normalized images ``[N, 3, H, W]``.
        backbone: The network.
        objectives: Bound objectives.
        rows: The images (rows of ``shown``) each objective scores; a batch objective such as
            diversity compares the images of its own rows only. None: one objective, all rows.
    """
    return score_activations(activations(shown, backbone, objectives), objectives, rows)


def score_activations(seen: Activations, objectives: Sequence[Objective],
          rows: Optional[Sequence[Sequence[int]]] = None, images: Optional[int] = None
          ) -> torch.Tensor:
    """Each image's score from activations already computed (see :func:`objective_scores`).

    Args:
        seen: The activations of ``views`` rows.
        objectives: Bound objectives.
        rows: Per objective, the images it scores; None: one objective, every image.
        images: How many images the rows stand for; a view of several rows per image (random
            crops, image after image) scores their mean. None: one row per image.
    """
    views = next(iter(seen.features.values()), seen.logits).shape[0]
    images = views if images is None else images
    per_image = views // images
    if rows is None:
        (objective,) = objectives
        return objective.score(seen).float().view(images, per_image).mean(1)
    reference = next(iter(seen.features.values()), seen.logits)
    scores = reference.new_zeros(views, dtype=torch.float32)
    for objective, indices in zip(objectives, rows):
        index = torch.as_tensor([row * per_image + k for row in indices for k in range(per_image)],
                                device=reference.device)
        part = Activations({layer: values[index] for layer, values in seen.features.items()},
                           None if seen.logits is None else seen.logits[index])
        scores = scores.index_put((index,), objective.score(part).float())
    return scores.view(images, per_image).mean(1)


class _Recorder:
    """Stands in for the network in the class visualization's loss: runs the backbone once for
    every layer the objectives read, keeps those activations, and returns the logits (zeros of
    one class when no objective reads them, which the class loss's score then ignores)."""

    def __init__(self, backbone: Backbone, objectives: Sequence[Objective]) -> None:
        self.backbone = backbone
        self.objectives = objectives
        self.seen: Optional[Activations] = None

    def __call__(self, shown: torch.Tensor) -> torch.Tensor:
        self.seen = activations(shown, self.backbone, self.objectives)
        if self.seen.logits is not None:
            return self.seen.logits
        return shown.new_zeros(shown.shape[0], 1)


def objective_loss(
    parameter: torch.Tensor,
    backbone: Backbone,
    objectives: Sequence[Objective],
    rows: Optional[Sequence[Sequence[int]]] = None,
    *,
    parameterization: Parameterization,
    l2_reg: float = 0.0,
    max_jitter: int = 0,
    transforms: bool = False,
    generator: Optional[torch.Generator] = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One step's loss terms (to minimize) and the scores they came from.

    Args:
        parameter: The images' parameter (see ``parameterization``), batch first.
        backbone: The network.
        objectives: Bound objectives; see :func:`objective_scores` for ``rows``.
        rows: The rows each objective scores; None: one objective, every row.
        parameterization: What ``parameter`` is.
        l2_reg: Weight of ``||image||^2`` (normalized units).
        max_jitter: Largest random circular shift in pixels; 0 turns it off.
        transforms: Apply Lucent's random transforms too.
        generator: Random source of the jitter and transforms.

    Returns:
        ``({"objective": -score, "l2": l2_reg * ||image||^2}, score)``, each ``[N]`` (no
        ``l2`` term when ``l2_reg`` is 0).
    """
    recorder = _Recorder(backbone, objectives)
    count = parameter.shape[0]
    no_class = torch.zeros(count, dtype=torch.long, device=parameter.device)
    class_terms, _ = class_visualization_loss(
        parameter, no_class, recorder, parameterization=parameterization, mean=backbone.mean,
        std=backbone.std, l2_reg=l2_reg, max_jitter=max_jitter, transforms=transforms,
        generator=generator)
    scores = score_activations(recorder.seen, objectives, rows, count)
    terms = {"objective": -scores}
    if l2_reg:
        terms["l2"] = class_terms["l2"]
    return terms, scores

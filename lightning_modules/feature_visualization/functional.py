"""Feature visualization's step: the scores of objectives, and the loss that raises them.

One network pass per step serves every objective of the batch: the layers all of them read are
extracted together (and the logits only when one reads them). The images go through the class
visualization's view (:func:`~lightning_modules.class_visualization.functional.network_view`:
jitter, Lucent's transforms), so a class logit and a channel are optimized the same way. No
Lightning and no files here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from lightning_modules.backbones import Backbone
from lightning_modules.class_visualization.functional import network_view
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
    seen = activations(shown, backbone, objectives)
    if rows is None:
        (objective,) = objectives
        return objective.score(seen)
    scores = shown.new_zeros(shown.shape[0], dtype=torch.float32)
    for objective, indices in zip(objectives, rows):
        if len(indices) == shown.shape[0]:
            part = seen
        else:
            index = torch.as_tensor(list(indices), device=shown.device)
            part = Activations({layer: values[index] for layer, values in seen.features.items()},
                               None if seen.logits is None else seen.logits[index])
        scores = scores.index_put((torch.as_tensor(list(indices), device=shown.device),),
                                  objective.score(part).float())
    return scores


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
        parameter: The images' parameter (see ``parameterization``).
        backbone: The network.
        objectives: Bound objectives; see :func:`objective_scores` for ``rows``.
        rows: The rows each objective scores; None: one objective, every row.
        parameterization: What ``parameter`` is.
        l2_reg: Weight of ``||image||^2`` (normalized units).
        max_jitter: Largest random circular shift in pixels; 0 turns it off.
        transforms: Apply Lucent's random transforms too.
        generator: Random source of the jitter and transforms.

    Returns:
        ``({"objective": -score, "l2": l2_reg * ||image||^2}, score)``, each ``[N]``.
    """
    images, shown = network_view(parameter, parameterization, backbone.mean, backbone.std,
                                 max_jitter, transforms, generator)
    scores = objective_scores(shown, backbone, objectives, rows)
    terms = {"objective": -scores}
    if l2_reg:
        terms["l2"] = l2_reg * images.pow(2).flatten(1).sum(1)
    return terms, scores

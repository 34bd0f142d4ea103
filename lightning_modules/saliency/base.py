"""What every saliency method is: an object with its own options and one ``attribute`` call.

A method (``SmoothGrad`` in gradients.py, ``GradCAM`` in cam.py, ``CaptumMethod`` in
captum_methods.py, ...) holds its options and computes maps of any classifier;
:class:`~lightning_modules.saliency.SaliencyMap` and
:class:`~callbacks.training_pictures.TrainingPictures` both call it the same way, so neither
knows which method it runs. A config names one by ``class_path``::

    method:
      class_path: lightning_modules.saliency.SmoothGrad
      init_args: {noise_level: 0.1, samples: 25}

or by its short name (``method: smoothgrad``), resolved in
:mod:`~lightning_modules.saliency.registry`. A new method is one subclass in one file plus its
registry entry.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import nn


class Saliency(NamedTuple):
    """What a method gives for a batch.

    Attributes:
        maps: Non-negative maps ``[N, H, W]``, one per image.
        attributions: Signed per-channel attributions ``[N, 3, H, W]`` where the method has them
            (Integrated Gradients, Captum's methods), else None.
    """

    maps: torch.Tensor
    attributions: Optional[torch.Tensor] = None


class SaliencyMethod:
    """Base of the saliency methods: options in the constructor, maps from :meth:`attribute`.

    Class attributes:
        class_activation_map: Whether the maps are class activation maps (smooth regions, drawn
            blended over the photo in the writer's ``cam_colormap``).
        reads_batch_norm: Whether the method reads the network's normalization layers
            themselves (FullGrad's biases), so that it runs on the unfolded network where the
            others run with the normalizations folded into the convolutions
            (:meth:`~lightning_modules.backbones.backbone.Backbone.fold_batch_norm`).
    """

    class_activation_map: bool = False
    reads_batch_norm: bool = False

    @property
    def shorthand(self) -> str:
        """The method's short name (``"smoothgrad"``): what outputs call it (sheets,
        ``predictions.csv``, the trust report) and what a config may write instead of a
        ``class_path``. The built-in methods set it as a class attribute; a method of your own
        is called by its class name."""
        return type(self).__name__

    def attribute(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                  generator: Optional[torch.Generator] = None) -> Saliency:
        """The maps of ``model``'s class ``targets`` for ``inputs``.

        Args:
            model: Maps normalized images ``[N, 3, H, W]`` to logits ``[N, C]``, in eval mode
                (usually a :class:`~lightning_modules.backbones.backbone.Backbone`).
            inputs: Normalized images ``[N, 3, H, W]``.
            targets: The class to explain for each image, ``[N]``.
            generator: Random generator of a method that draws noise (SmoothGrad); None: torch's
                global one.

        Returns:
            The maps, and the signed attributions where the method has them.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement attribute().")

    def check(self, model: nn.Module) -> None:
        """Refuse, before any image, options that cannot work on ``model`` (a missing layer)."""

    def for_wrapped_model(self, backbone: nn.Module) -> SaliencyMethod:
        """This method with the names it holds read as a wrapped model names its modules.

        :class:`~callbacks.training_pictures.TrainingPictures` wraps the user's classifier in
        :func:`~lightning_modules.backbones.custom.classifier_backbone`; a CAM layer named as
        the user's model names it (``"conv2"``) becomes the wrapper's (``"features.0.conv2"``).
        Methods that name no modules are returned as they are.
        """
        return self

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in vars(self).items()
                            if not key.startswith("_"))
        return f"{type(self).__name__}({options})"

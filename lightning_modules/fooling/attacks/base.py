"""What every fooling attack is: a loss, an optimizer, a stopping rule and the image it returns.

An :class:`Attack` holds only its own options (PGD's budget, Carlini-Wagner's ``c``, ...). What all
attacks share (which images count as fooled: their 8-bit versions, ``confidence``, ``robust_to``;
the loop) is :class:`~lightning_modules.fooling.functional.FoolingAttack`'s, which hands the attack
its step and asks it the rest. A new attack is one subclass in one file, plus its shorthand in
:data:`~lightning_modules.fooling.attacks.ATTACKS` if it should have one.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

import torch

if TYPE_CHECKING:  # only for the annotations: functional imports this module
    from lightning_modules.fooling.functional import FoolingAttack, FoolingProgress

Model = Callable[[torch.Tensor], torch.Tensor]


class Attack:
    """A targeted attack on a batch of images in the network's normalized input space.

    Subclasses give :meth:`logit_loss` and :meth:`optimizer`, and keep each argument of their
    ``__init__`` as an attribute of the same name (:meth:`as_config` reads them); the other
    methods have the common behaviour: an image stops at its first success (:meth:`check`), and
    the run ends once every image is fooled (:meth:`finished`).

    Attributes:
        title: How messages name the attack.
        flat_options: ``FoolingImage``'s flat options (the ones a config gave beside
            ``method: <shorthand>`` before attacks were objects) that are this attack's, each
            with the name of this class's argument it sets.
        needs_normalization: Whether the attack works in 0-1 pixel units, which needs the
            normalization's ``mean`` and ``std``.
    """

    title: ClassVar[str] = "attack"
    flat_options: ClassVar[dict[str, str]] = {}
    needs_normalization: ClassVar[bool] = True

    def logit_loss(self, logits: torch.Tensor, target_y: torch.Tensor) -> torch.Tensor:
        """What the optimizer descends for these logits, summed over the images.

        Args:
            logits: ``[N, C]`` class scores.
            target_y: ``[N]`` target classes.

        Returns:
            A scalar.
        """
        raise NotImplementedError

    def optimizer(self, params: Any, mean: Any, std: Any) -> torch.optim.Optimizer:
        """The optimizer that takes this attack's step on ``params`` (normalized images).

        Args:
            params: The images, as ``torch.optim.Optimizer`` takes them.
            mean: Per-channel mean of the normalization (None where it is not known).
            std: Per-channel standard deviation.
        """
        raise NotImplementedError

    def check(self, runner: "FoolingAttack", images: torch.Tensor, target_y: torch.Tensor,
              model: Model, progress: "FoolingProgress",
              origin: Optional[torch.Tensor]) -> torch.Tensor:
        """Check the images and say which to step on; by default an image stops at its first
        success, so only the ones not fooled yet are checked and stepped.

        Args:
            runner: Judges images (:meth:`FoolingAttack.check_unfooled`) as every attack does.
            images: Current normalized images ``[N, 3, H, W]``.
            target_y: ``[N]`` target classes.
            model: Maps normalized images to logits.
            progress: Updated in place.
            origin: The unchanged images, where known.

        Returns:
            The rows to step on.
        """
        return runner.check_unfooled(images, target_y, model, progress)

    def finished(self, progress: "FoolingProgress") -> bool:
        """Whether the run can stop: by default once every image is fooled."""
        return bool(progress.fooled.all())

    def kept_image(self, progress: "FoolingProgress", index: int) -> Optional[torch.Tensor]:
        """Image ``index``'s result if it is not the current image (normalized ``[3, H, W]``);
        None by default: the current image is the result."""
        return None

    def result(self, images: torch.Tensor, progress: "FoolingProgress") -> torch.Tensor:
        """The results of a batch: each image, or the one :meth:`kept_image` says."""
        kept = [self.kept_image(progress, index) for index in range(len(images))]
        if all(image is None for image in kept):
            return images
        return torch.stack([images[index] if image is None else image
                            for index, image in enumerate(kept)])

    def conclude(self, runner: "FoolingAttack", images: torch.Tensor, target_y: torch.Tensor,
                 model: Model, progress: "FoolingProgress", origin: torch.Tensor) -> torch.Tensor:
        """The results of :meth:`FoolingAttack.run` after its last step: by default the images
        as they are (each stopped at its first success, the last step's checked already)."""
        return images

    def as_config(self) -> dict[str, Any]:
        """The attack as a config names it, ``{class_path: ..., init_args: {...}}``, in plain
        values (a checkpoint's hyperparameters, which are read without unpickling objects)."""
        arguments = [name for name in inspect.signature(type(self).__init__).parameters
                     if name != "self"]
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "init_args": {name: getattr(self, name) for name in arguments}}

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}"
                            for name, value in self.as_config()["init_args"].items())
        return f"{type(self).__name__}({options})"

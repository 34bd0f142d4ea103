"""Judges: other networks that score a technique's results, kept out of its checkpoints.

A judge is a frozen backbone that did not make the picture (a class picture's second opinion,
a fooling image's held-out target). Built as an ``nn.Module`` attribute it would join the
module's state dict: every checkpoint would carry its weights, and a resume would refuse them
as unexpected keys. :class:`Judges` holds them in a plain object instead, built on first use on
the module's device: the one place this is solved.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from lightning_modules.errors import UserInputError


class Judges:
    """Frozen backbones by name, built on first use, never part of a module's state.

    Args:
        names: The judges' backbone names (``lightning_modules.available_backbones()``); a
            name given twice is one judge.
        kind: What they are called in messages (``"judge"``).

    Raises:
        UserInputError: An unknown backbone name.
    """

    def __init__(self, names: Sequence[str], kind: str = "judge") -> None:
        from lightning_modules.backbones import available_backbones

        self.names = list(dict.fromkeys(names))
        self.kind = kind
        unknown = [name for name in self.names if name not in available_backbones()]
        if unknown:
            raise UserInputError(f"Unknown {kind} '{unknown[0]}'; choose one of "
                                 f"{', '.join(available_backbones())}.")
        self._built: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return bool(self.names)

    def get(self, name: str, like: Any,
            build: Optional[Callable[[str], Any]] = None) -> Any:
        """Judge ``name``, frozen, on the device of backbone ``like`` and with its classes.

        Args:
            name: One of :attr:`names`.
            like: The technique's own backbone: the judge must name the same classes.
            build: Makes the network from its name (default: its ImageNet weights).

        Raises:
            UserInputError: The judge has other classes than ``like``.
        """
        if name not in self._built:
            from lightning_modules.backbones import load_backbone

            judge = (build or (lambda n: load_backbone(n, "default")))(name)
            judge = judge.to(like.mean.device).eval()
            if judge.categories != like.categories:
                raise UserInputError(f"The {self.kind} '{name}' has other classes than the "
                                     f"backbone '{like.name}'; pick one with the same.")
            self._built[name] = judge.requires_grad_(False)
        return self._built[name]

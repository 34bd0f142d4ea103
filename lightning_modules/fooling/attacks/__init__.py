"""The fooling attacks, one class each, and the one registry of their shorthands.

A config names an attack by ``class_path`` (``method: {class_path:
lightning_modules.fooling.PGD, init_args: {eps: 0.0314}}``) or by its shorthand (``method: pgd``,
with the attack's options beside it as ``FoolingImage``'s flat options, as before attacks were
objects). :func:`resolve_attack` turns either into an :class:`Attack`.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping, Union

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.fooling.attacks.base import Attack
from lightning_modules.fooling.attacks.carlini_wagner import CarliniWagner
from lightning_modules.fooling.attacks.pgd import PGD, Loss
from lightning_modules.fooling.attacks.seed import SeedAttack

__all__ = ["ATTACKS", "Attack", "CarliniWagner", "Loss", "PGD", "SeedAttack", "resolve_attack"]

#: Each shorthand and the attack it names: the only place an attack's short name appears.
ATTACKS: dict[str, type[Attack]] = {"seed": SeedAttack, "pgd": PGD, "cw": CarliniWagner}


def _defaults(cls: type[Attack]) -> dict[str, Any]:
    return {name: parameter.default
            for name, parameter in inspect.signature(cls.__init__).parameters.items()
            if parameter.default is not parameter.empty}


def _shorthand(cls: type[Attack]) -> str:
    return next((name for name, known in ATTACKS.items() if known is cls), cls.__name__)


def _from_config(spec: Mapping[str, Any]) -> Attack:
    """An attack as a YAML config holds it, ``{class_path: ..., init_args: {...}}``, read by a
    caller that does not instantiate it (LightningCLI does)."""
    path = str(spec.get("class_path", ""))
    module_name, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name) if module_name else None
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, Attack)):
        raise UserInputError(f"method's class_path {path!r} names no attack (e.g. "
                             "lightning_modules.fooling.PGD).")
    try:
        return cls(**dict(spec.get("init_args") or {}))
    except TypeError as error:
        raise UserInputError(f"{cls.__name__} refused its init_args ({error}).") from None


def resolve_attack(method: Union[str, Attack, Mapping[str, Any]], **flat: Any) -> Attack:
    """The attack that ``method`` and the flat options name.

    Args:
        method: An :class:`Attack`; its shorthand (``"seed"``, ``"pgd"``, ``"cw"``, keys of
            :data:`ATTACKS`); or ``{class_path, init_args}`` as a config holds it.
        **flat: ``FoolingImage``'s flat options (``lr``, ``eps``, ``c``, ...; None: not
            given). The attack's own set its arguments (over an object's: ``--model.lr 4``
            still works beside a config's ``SeedAttack``). One that belongs to another attack
            is refused, unless it holds that attack's default, which does nothing (older
            configs and checkpoints list every option).

    Returns:
        The attack.

    Raises:
        UserInputError: An unknown shorthand, or an option the attack lacks, in one sentence.
    """
    given = {name: value for name, value in flat.items() if value is not None}
    if isinstance(method, Mapping):
        method = _from_config(method)
    if isinstance(method, Attack):
        cls, named = type(method), type(method).__name__
    else:
        check_choice("method", method, ATTACKS)
        cls, named = ATTACKS[method], method
    own = {cls.flat_options[name]: value for name, value in given.items()
           if name in cls.flat_options}
    for name, value in given.items():
        if name in cls.flat_options:
            continue
        owner = next((other for other in ATTACKS.values() if name in other.flat_options), None)
        if owner is None:
            raise UserInputError(f"{name} is no attack's option.")
        argument = owner.flat_options[name]
        if value == _defaults(owner).get(argument):
            continue  # the other attack's default: it would do nothing there either
        owner(**{argument: value})  # a value that attack refuses too is said as it says it
        # The chosen attack may have an option of that meaning under another flat name.
        alias = next((flat_name for flat_name, own_argument in cls.flat_options.items()
                      if own_argument == argument), None)
        raise UserInputError(
            f"{name} is an option of {owner.title} (method: {_shorthand(owner)}), not of "
            f"{cls.title} (method: {named}): choose method {_shorthand(owner)}, or "
            + (f"give {cls.title}'s own {alias}." if alias else f"leave {name} out."))
    if isinstance(method, Attack):
        return cls(**{**method.as_config()["init_args"], **own}) if own else method
    return cls(**own)

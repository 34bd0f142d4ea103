"""Variants as objects, short names as shorthands: one registry per family, one resolver.

A family (parameterizations, views, step rules) is a base class; each variant is a subclass
with its own options, which a config names by ``class_path``/``init_args``. Its registry maps
today's short names (``pixel``, ``crops``, ``adam``) to the classes, so ``parameterization:
maco`` and ``parameterization: {class_path: ...MacoImage, init_args: {contrast: 2.0}}`` build
the same object. Older configs gave a variant's options beside its name (``contrast: 2.0``
next to ``parameterization: maco``); :func:`resolve_variant` still takes them, also beside an
object of a class that has them (``--model.contrast 1.5`` over a config's ``MacoImage``), and
refuses one that the chosen variant does not have, so no option is accepted and then ignored.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Mapping, Optional, TypeVar

from lightning_modules.errors import UserInputError

Variant = TypeVar("Variant")


def variant_options(kind: type) -> list[str]:
    """The names of the options a variant class takes (its ``__init__``'s parameters)."""
    parameters = inspect.signature(kind.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def resolve_variant(family: str, value: Any, base: type, registry: Mapping[str, type],
                    legacy: Optional[Mapping[str, tuple[str, Any]]] = None) -> Any:
    """The variant object ``value`` stands for.

    Args:
        family: The option's name, for messages (``"parameterization"``).
        value: A variant object (returned as is), or a short name of ``registry``.
        base: The family's base class.
        registry: Short name -> variant class.
        legacy: Options given beside the short name, as ``{option name: (the variant's
            argument, value)}``; a value of None was not given. Each one given goes to the
            variant, which must take it.

    Raises:
        UserInputError: An unknown name, or an option the variant does not take.
    """
    given = {option: pair for option, pair in (legacy or {}).items() if pair[1] is not None}
    if isinstance(value, Mapping) and "class_path" in value:
        value = _instantiate(family, value, base)
    if isinstance(value, base):
        kind, name = type(value), type(value).__name__
        own = {argument: getattr(value, argument) for argument in variant_options(kind)
               if hasattr(value, argument)}
    elif isinstance(value, str) and value.strip().lower() in registry:
        kind, name, own = registry[value.strip().lower()], repr(value), {}
    else:
        raise UserInputError(f"Unknown {family} {value!r}; choose one of "
                             f"{', '.join(registry)} (or a class_path).")
    if not given and isinstance(value, base):
        return value
    accepted = variant_options(kind)
    for option, (argument, _) in given.items():
        if argument not in accepted:
            owners = [short for short, other in registry.items()
                      if argument in variant_options(other)]
            raise UserInputError(f"{option} does nothing with {family} {name}; it is an "
                                 f"option of {' or '.join(repr(o) for o in owners)}.")
    return kind(**{**own, **{argument: option_value for argument, option_value in given.values()}})


def _instantiate(family: str, spec: Mapping[str, Any], base: type) -> Any:
    """The object a ``{class_path, init_args}`` mapping names (as a config gives it)."""
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        kind = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError):
        raise UserInputError(f"The {family} class {spec['class_path']!r} was not found.") from None
    if not (isinstance(kind, type) and issubclass(kind, base)):
        raise UserInputError(f"{spec['class_path']} is not a {family} (a {base.__name__}).")
    return kind(**dict(spec.get("init_args") or {}))


def describe_variant(variant: Any) -> dict[str, Any]:
    """A variant as plain data, ``{class_path, init_args}`` (what a config would say): kept in
    hyperparameters and checkpoints, which must hold no objects of ours."""
    kind = type(variant)
    init_args = {name: getattr(variant, name) for name in variant_options(kind)
                 if hasattr(variant, name)}
    plain = {name: (list(value) if isinstance(value, tuple) else value)
             for name, value in init_args.items()}
    return {"class_path": f"{kind.__module__}.{kind.__qualname__}", "init_args": plain}

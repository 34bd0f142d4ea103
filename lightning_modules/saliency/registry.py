"""The saliency methods' short names, resolved in one place.

A config or a call names a method by ``class_path`` (an object of
:class:`~lightning_modules.saliency.base.SaliencyMethod`) or by its short name:
``vanilla``, ``smoothgrad``, ``integrated_gradients``, ``gradcam``, ``gradcam++``, ``scorecam``,
``guided_gradcam``, ``hirescam``, ``xgradcam``, ``layercam``, ``eigencam``,
``eigengradcam``, ``ablationcam``, ``fullgrad`` or ``captum:NAME``. :data:`SHORTHANDS` maps
each name to its class; the two builders make the object from options given beside the name:

- :func:`method_from_module_options`: the flat options of
  :class:`~lightning_modules.saliency.SaliencyMap` (``--model.method smoothgrad
  --model.samples 25``);
- :func:`method_from_options`: a dict of the method's own options
  (:class:`~callbacks.training_pictures.TrainingPictures`' ``saliency_options``).

A new method is one class in its family's file and one entry here.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Mapping, Optional, Union

from lightning_modules.errors import UserInputError, check_choice
from lightning_modules.saliency.base import SaliencyMethod
from lightning_modules.saliency.ablation_cam import AblationCAM
from lightning_modules.saliency.captum_methods import CaptumMethod, is_captum_method
from lightning_modules.saliency.cam import GradCAM, GradCAMPlusPlus, GuidedGradCAM, ScoreCAM
from lightning_modules.saliency.cam_family import (
    EigenCAM,
    EigenGradCAM,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from lightning_modules.saliency.controls import CenteredGaussianMap, EdgeMap, RandomMap
from lightning_modules.saliency.fullgrad import FullGrad
from lightning_modules.saliency.gradients import (
    IntegratedGradients,
    SmoothGrad,
    Vanilla,
    check_internal_batch_size,
    check_path,
    check_smoothing,
)

SHORTHANDS: dict[str, type[SaliencyMethod]] = {
    "vanilla": Vanilla,
    "smoothgrad": SmoothGrad,
    "integrated_gradients": IntegratedGradients,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "guided_gradcam": GuidedGradCAM,
    "hirescam": HiResCAM,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
    # The controls every metric is read against (controls.py): maps that ignore the model.
    "random": RandomMap,
    "edges": EdgeMap,
    "center": CenteredGaussianMap,
}
# Any Captum method: captum:NAME, the name going to CaptumMethod's `name`.
CAPTUM_SHORTHAND = "captum:NAME"

# SaliencyMap's flat options whose names differ from the method's own.
MODULE_OPTION_NAMES = {"method_options": "options"}

MethodSpec = Union[str, SaliencyMethod]


def method_class(name: str) -> tuple[type[SaliencyMethod], dict[str, Any]]:
    """The class a short name stands for, and the arguments the name itself gives.

    Raises:
        UserInputError: Not a method's short name.
    """
    if is_captum_method(name):
        return CaptumMethod, {"name": name}
    check_choice("method", name, [*SHORTHANDS, CAPTUM_SHORTHAND], "saliency method")
    return SHORTHANDS[name], {}


def method_options(cls: type) -> list[str]:
    """The options ``cls(...)`` takes, in its signature's order."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in parameters if p.name != "self"
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def owners(option: str) -> list[str]:
    """The short names of the methods that take ``option``."""
    names = [name for name, cls in SHORTHANDS.items() if option in method_options(cls)]
    return names + ([CAPTUM_SHORTHAND] if option in method_options(CaptumMethod) else [])


def _checked_spec(method: Any) -> MethodSpec:
    if isinstance(method, (str, SaliencyMethod)):
        return method
    raise UserInputError(f"The saliency method must be a short name such as 'smoothgrad' or a "
                         f"SaliencyMethod (a config's class_path), got {type(method).__name__}.")


def method_from_options(method: MethodSpec, options: Optional[Mapping[str, Any]] = None,
                        defaults: Optional[Mapping[str, Any]] = None,
                        aliases: Optional[Mapping[str, str]] = None,
                        what: str = "options") -> SaliencyMethod:
    """A method object from a short name and its own options (or the object itself).

    Args:
        method: A short name, or a method object (then ``options`` must be empty).
        options: The method's constructor arguments by name.
        defaults: Values for arguments that ``options`` leave unset, used where the method
            takes them (others are ignored).
        aliases: Other names an option may be given by (``{"method": "integration"}``).
        what: How messages name ``options``.

    Raises:
        UserInputError: An unknown name or option, in one sentence.
    """
    method = _checked_spec(method)
    options = dict(options or {})
    if isinstance(method, SaliencyMethod):
        if options:
            raise UserInputError(f"{what} are for a method given by its short name; "
                                 f"{type(method).__name__} takes its options itself.")
        return method
    cls, given = method_class(method)
    accepted = [name for name in method_options(cls) if name not in given]
    arguments = {key: value for key, value in (defaults or {}).items() if key in accepted}
    for key, value in options.items():
        name = (aliases or {}).get(key, key)
        if name not in accepted:
            raise UserInputError(f"Unknown {what} entry '{key}'; choose from "
                                 f"{', '.join(sorted(accepted))}.")
        arguments[name] = value
    return cls(**given, **arguments)


def method_from_module_options(method: MethodSpec, settings: Mapping[str, Any],
                               options: Mapping[str, Any]) -> SaliencyMethod:
    """The method of :class:`~lightning_modules.saliency.SaliencyMap`'s flat options.

    Args:
        method: A short name, or a method object (a ``class_path``), which carries its own
            options.
        settings: Flat options with a default (``noise_level``, ``samples``, ``baseline``,
            ``steps``, ``integration``, ``reduction``): a config sets them for whichever
            method it may be switched to, so each method takes those it has and the rest are
            checked but unused (as a ``vanilla`` run with ``samples: 25`` always was).
        options: Flat options whose default is None (``layer``, ``internal_batch_size``,
            ``patch_size``, ``method_options``): a value means the user set it, so a method that
            does not take it refuses it.

    Raises:
        UserInputError: An unknown method, a bad value, or an option the method does not take.
    """
    method = _checked_spec(method)
    # Unset: None, or an empty dict (method_options: {} asks for nothing).
    given = {key: value for key, value in options.items() if value is not None and value != {}}
    for name in ("internal_batch_size", "patch_size"):
        check_internal_batch_size(given.get(name), name)
    if isinstance(method, SaliencyMethod):
        if given:
            raise UserInputError(f"Option '{next(iter(given))}' configures a method given by its "
                                 f"short name; give {type(method).__name__}'s options in its "
                                 "init_args.")
        _warn_of_unused_settings(method, settings)
        return method
    check_path(settings["baseline"], settings["steps"], settings["integration"],
               settings["reduction"])
    check_smoothing(settings["noise_level"], settings["samples"])
    cls, fixed = method_class(method)
    accepted = method_options(cls)
    arguments = {key: value for key, value in settings.items() if key in accepted}
    for key, value in given.items():
        name = MODULE_OPTION_NAMES.get(key, key)
        if name in accepted:
            arguments[name] = value
        elif key == "method_options":
            raise UserInputError(f"method_options are for Captum methods ({CAPTUM_SHORTHAND}), "
                                 f"not {method}.")
        else:
            raise UserInputError(f"Option '{key}' does not apply to method '{method}'; it "
                                 f"belongs to {', '.join(owners(name))}.")
    return cls(**fixed, **arguments)


def _warn_of_unused_settings(method: SaliencyMethod, settings: Mapping[str, Any]) -> None:
    """Say so where a flat setting was chosen (not its default) for an option that ``method``
    has, with another value: the object's own value is the one used."""
    parameters = inspect.signature(type(method).__init__).parameters
    for key, value in settings.items():
        parameter = parameters.get(key)
        if parameter is None or parameter.default is inspect.Parameter.empty:
            continue
        own = vars(method).get(key, parameter.default)
        if value != parameter.default and value != own:
            warnings.warn(f"{key}={value!r} is a setting for short method names; "
                          f"{type(method).__name__} uses its own {key}={own!r}.", stacklevel=3)


"""One call from Python per technique, for notebooks: stylize, visualize_class, saliency, fool.

    from lightning_modules import stylize
    picture = stylize("chelsea", "immunohistochemistry", image_size=128, steps=40)

Each function runs the technique's module and datamodule with the same config as the command
line (``configs/<technique>.yaml``, or another one with ``config=``), under a quiet Trainer: no
progress bar, no model summary, no logger, no checkpoint and no run directory. The result comes
from the module's own accessors (``result_pixels``, ``saved_probabilities``, ``score``, the
saliency batch), the same values the run's callbacks write.

Keyword options override the config: an argument of the technique's module or datamodule by its
name (``tv_weight=``, ``image_size=``, ``backbone=``, also a ``Backbone`` object), ``steps=``
(or ``max_steps=``) the steps of an optimizing technique, ``seed=`` the seed (default 0, the
command line's; None: unseeded), ``accelerator=`` and ``precision=`` the Trainer's, and
``save_dir=`` a folder that gets the command line's run directory
(``<save_dir>/<technique>/version_<n>/``: images, sheets, losses, reports). An unknown option
is one sentence (:class:`~lightning_modules.errors.UserInputError`).

Images are a path, a built-in sample's name (``"chelsea"`` or ``"sample:chelsea"``), a PIL
image, 0-1 pixels ``[3, H, W]`` (a tensor, or uint8 0-255), or a numpy uint8 ``[H, W, 3]``
array. Pictures in memory reach the datamodules as ``memory:`` sources, without temporary
files, as 8-bit RGB, the way a PNG of them would.

``saliency`` is not re-exported by ``lightning_modules``, where that name is the subpackage
:mod:`lightning_modules.saliency`: ``from lightning_modules.api import saliency``.

This module assembles runs, as ``cli.py`` does: it is the one module under ``lightning_modules``
that imports ``callbacks`` (for ``save_dir`` and the end of each chunk of jobs).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import os
import random
import re
import shutil
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from PIL import Image

from lightning_modules.errors import UserInputError
from lightning_modules.naming import safe_name, unique_names
from lightning_modules.run_defaults import (
    DEFAULT_SEED,
    IRRELEVANT_WARNINGS,
    check_seed,
    log_period,
)

#: The configs the command line's examples use, one per technique.
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

ImageInput = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]
ClassInput = Union[int, str]

# Options of the run itself (the rest go to the module or the datamodule).
_RUN_OPTIONS = ("config", "save_dir", "seed", "accelerator", "precision")
_STEP_OPTIONS = ("steps", "max_steps")

# Trainer options of a config that the quiet Trainer decides itself.
_QUIET_TRAINER_KEYS = {"logger", "callbacks", "enable_progress_bar", "enable_model_summary",
                       "enable_checkpointing", "default_root_dir", "devices", "num_nodes",
                       "strategy", "plugins", "max_steps", "log_every_n_steps"}

# The callbacks the command line adds to every fit (cli.py: add_arguments_to_parser), by the
# config section that holds their options; with save_dir a Python run gets them too.
_FIT_WRITERS = (("images", "callbacks.image_writer.ImageWriter"),
                ("losses", "callbacks.loss_history.LossHistory"),
                ("class_report", "callbacks.class_report.ClassReport"),
                ("fooling_report", "callbacks.fooling_report.FoolingReport"))

_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch",
                      "lightning.fabric")


# --------------------------------------------------------------------------- results
@dataclass
class SaliencyResult:
    """What :func:`saliency` gives for one image.

    Attributes:
        name: The image's name (its file's stem, the sample's name, or ``"image"``).
        map: The non-negative saliency map ``[H, W]``, unscaled (``<name>_saliency.npy``).
        heatmap: The map scaled and colour-mapped (``<name>_heatmap.png``).
        overlay: The map drawn over the photo (``<name>_overlay.png``).
        image: The photo as the network saw it (resized and centre-cropped).
        predicted_class: The network's top-1 class index.
        predicted_name: Its name.
        probability: Its softmax probability.
        target_class: The class the map explains.
        target_name: Its name.
        target_probability: Its softmax probability.
        method: The method that made the map.
        attributions: Integrated Gradients' (and Captum's) signed ``[3, H, W]``, else None.
        trust: The trust report of the batch with ``evaluate=True``, else None.
        run_directory: The run folder with ``save_dir``, else None.
    """

    name: str
    map: torch.Tensor
    heatmap: Image.Image
    overlay: Image.Image
    image: Image.Image
    predicted_class: int
    predicted_name: str
    probability: float
    target_class: int
    target_name: str
    target_probability: float
    method: str
    attributions: Optional[torch.Tensor] = None
    trust: Any = None
    run_directory: Optional[Path] = None


@dataclass
class FoolingResult:
    """What :func:`fool` gives for one image and target class, judged on the 8-bit image.

    Attributes:
        name: ``<image>_to_<target>``, the stem of the command line's files.
        image: The fooled image, 8-bit, at the network's input size (``<name>.png``).
        original: The photo it started from, at the same size.
        target_class: The class it was pushed towards, and ``target_name`` its name.
        predicted_class: What the network sees in ``image``, and ``predicted_name`` its name.
        probability: The probability of ``predicted_class``.
        target_probability: The probability of ``target_class``.
        fooled: Whether ``image`` fools the network (the target wins, with the confidence
            asked for).
        steps: The steps it took.
        l2: ``||δ||₂`` of the change, in 0-1 pixels; ``linf`` its ``||δ||∞``.
        ssim: SSIM against the original; ``psnr`` the PSNR (dB).
        checks: Whether it still fools after each check (``jpeg90``, ``jpeg75``, ...) and on
            each judge (``on_<backbone>``), as ``fooling_results.csv``'s ``success_*`` columns.
        run_directory: The run folder with ``save_dir``, else None.
    """

    name: str
    image: Image.Image
    original: Image.Image
    target_class: int
    target_name: str
    predicted_class: int
    predicted_name: str
    probability: float
    target_probability: float
    fooled: bool
    steps: int
    l2: float
    linf: float
    ssim: float
    psnr: float
    checks: dict[str, bool] = field(default_factory=dict)
    run_directory: Optional[Path] = None


# --------------------------------------------------------------------------- the four calls
def stylize(content: Union[ImageInput, Sequence[ImageInput]],
            style: Union[ImageInput, Sequence[ImageInput]], **options: Any
            ) -> Union[Image.Image, list[Image.Image]]:
    """Paint ``content`` in the style of ``style``: ``configs/style_transfer.yaml``'s run.

    Args:
        content: The photo; a list gives one picture each.
        style: The style image; a list of several is blended (``style_blend_weights=``).
        **options: Arguments of ``StyleTransfer`` and ``StyleTransferData`` (``image_size``,
            ``tv_weight``, ``style_loss``, ``backbone``, ...), ``steps``, ``seed``, ``save_dir``,
            ``config``, ``accelerator``, ``precision`` (see the module docstring).

    Returns:
        The stylized picture (8-bit RGB, as ``<content>__<style>.png``), or a list for a list of
        contents (or ``style_mode="each"``). Its ``info["losses"]`` holds the run's loss terms
        per step (``losses.csv``'s rows).

    Raises:
        UserInputError: For bad input, in one sentence.
    """
    from lightning_modules.style_transfer.module import StyleTransfer

    contents = _as_list(content)
    styles = _as_list(style)
    with _image_sources({"content": contents, "style": styles}) as sources:
        data = {"content": sources["content"] if isinstance(content, (list, tuple))
                else sources["content"][0],
                "style": sources["style"] if len(styles) > 1 else sources["style"][0]}
        run = _Run("stylize", "style_transfer", StyleTransfer, options, data, fit=True)
        results, rows = run.fit(_picture_records)
    pictures = []
    for pixels in results:
        picture = _to_image(pixels)
        picture.info["losses"] = rows
        if run.directory is not None:
            picture.info["run_directory"] = run.directory
        pictures.append(picture)
    return pictures if isinstance(content, (list, tuple)) or len(pictures) != 1 else pictures[0]


def visualize_class(classes: Union[ClassInput, Sequence[ClassInput]], **options: Any
                    ) -> Union[Image.Image, list[Image.Image]]:
    """Draw what the network sees in a class: ``configs/class_visualization.yaml``'s run.

    Args:
        classes: A class index or ImageNet name (``"flamingo"``), or a list of them.
        **options: Arguments of ``ClassVisualization`` and ``ClassListData`` (``image_size``,
            ``lr``, ``parameterization``, ``backbone``, ...), ``steps``, ``seed``,
            ``save_dir``, ``config``, ``accelerator``, ``precision``.

    Returns:
        The picture (8-bit RGB, as ``<class>.png``), or one per class for a list. Its ``info``
        holds ``class_index``, ``class_name`` and ``probability``: what the network gives the
        8-bit picture (the title on ``classes_sheet.png``); with a judge (the config's
        EfficientNet-Lite2) ``recognition`` too, its verdict
        (:class:`~lightning_modules.class_visualization.recognition.Recognition`).

    Raises:
        UserInputError: For bad input, in one sentence.
    """
    from lightning_modules.class_visualization.module import ClassVisualization

    wanted = list(classes) if isinstance(classes, (list, tuple)) else classes
    run = _Run("visualize_class", "class_visualization", ClassVisualization, options,
               {"classes": wanted}, fit=True)
    records, _ = run.fit(_class_records)
    pictures = []
    for pixels, class_index, name, probability, verdict in records:
        picture = _to_image(pixels)
        picture.info.update(class_index=class_index, class_name=name, probability=probability)
        if verdict is not None:
            picture.info["recognition"] = verdict
        if run.directory is not None:
            picture.info["run_directory"] = run.directory
        pictures.append(picture)
    return pictures if isinstance(classes, (list, tuple)) or len(pictures) != 1 else pictures[0]


def saliency(image: Union[ImageInput, Sequence[ImageInput]],
             target: Optional[ClassInput] = None, method: Optional[str] = None,
             **options: Any) -> Union[SaliencyResult, list[SaliencyResult]]:
    """Which pixels the network's score of a class depends on: ``configs/saliency.yaml``'s run.

    Args:
        image: The photo, or a list of photos; each is resized and centre-cropped to
            ``image_size`` (224) as the classifier expects.
        target: The class each map explains: an index or ImageNet name, ``"predicted"``, or
            ``"true"`` (the label: built-in samples have one, else give ``labels=``). None:
            the network's top-1 class.
        method: ``"vanilla"`` (the homework's gradient), ``"smoothgrad"``,
            ``"integrated_gradients"``, ``"gradcam"``, ``"gradcam++"``, ``"scorecam"``,
            ``"guided_gradcam"`` or ``"captum:NAME"``; None: the config's (``smoothgrad``).
        **options: Arguments of ``SaliencyMap`` and ``LabeledImageData`` (``samples``,
            ``steps``, ``layer``, ``image_size``, ``labels``, ``backbone``, ...), ``seed``,
            ``save_dir``, ``config``, ``accelerator``, ``precision``.

    Returns:
        A :class:`SaliencyResult`, or one per image for a list.

    Raises:
        UserInputError: For bad input, in one sentence.
    """
    from lightning_modules.saliency.module import SaliencyMap

    # A photo of one's own has no label: by default the map explains the network's top class.
    options = {**options, "target": "predicted" if target is None else target}
    if method is not None:  # else the config's
        options["method"] = method
    images = _as_list(image)
    with _image_sources({"image": images}) as sources:
        run = _Run("saliency", "saliency", SaliencyMap, options, {"images": sources["image"]},
                   fit=False)
        batches = run.predict()
    writer = run.saliency_pictures()
    results = []
    for batch in batches:
        for index, name in enumerate(batch.names):
            _, heatmap, drawn = writer.pictures(batch, index)
            results.append(SaliencyResult(
                name=name, map=batch.maps[index], heatmap=_to_image(heatmap),
                overlay=_to_image(drawn), image=_to_image(batch.pixels[index]),
                predicted_class=batch.predicted[index],
                predicted_name=batch.class_name(batch.predicted[index]),
                probability=batch.probability[index], target_class=batch.target[index],
                target_name=batch.class_name(batch.target[index]),
                target_probability=batch.target_probability[index], method=batch.method,
                attributions=None if batch.attributions is None else batch.attributions[index],
                trust=batch.trust, run_directory=run.directory))
    return results if isinstance(image, (list, tuple)) or len(results) != 1 else results[0]


def fool(image: Union[ImageInput, Sequence[ImageInput]],
         target_class: Union[ClassInput, Sequence[ClassInput]], **options: Any
         ) -> Union[FoolingResult, list[FoolingResult]]:
    """Change a photo a little until the network sees ``target_class``: ``configs/fooling.yaml``'s
    run (the homework's method; ``method="pgd"`` or ``"cw"`` for the others).

    Args:
        image: The photo (resized and centre-cropped to ``image_size``, 224), or a list.
        target_class: The class index or ImageNet name to reach, or one per image.
        **options: Arguments of ``FoolingImage`` and ``LabeledImageData`` (``method``, ``eps``,
            ``confidence``, ``all_pairs``, ``labels``, ``backbone``, ...), ``steps`` (the most
            steps; the run stops once the image fools), ``seed``, ``save_dir``, ``config``,
            ``accelerator``, ``precision``.

    Returns:
        A :class:`FoolingResult`, or a list for several images or targets.

    Raises:
        UserInputError: For bad input (the target is the photo's own class, say), in one
            sentence.
    """
    from lightning_modules.fooling.module import FoolingImage

    options = dict(options)
    if "target" in options:
        raise UserInputError("fool() takes the class to reach as target_class, not target.")
    options["target"] = list(target_class) if isinstance(target_class, (list, tuple)) \
        else target_class
    options.setdefault("all_pairs", False)  # the config tries five classes on every sample
    images = _as_list(image)
    with _image_sources({"image": images}) as sources:
        run = _Run("fool", "fooling", FoolingImage, options, {"images": sources["image"]},
                   fit=True)
        results, _ = run.fit(_fooling_records)
    for result in results:
        result.run_directory = run.directory
    listed = isinstance(image, (list, tuple)) or isinstance(target_class, (list, tuple))
    return results if listed or len(results) != 1 else results[0]


# --------------------------------------------------------------------------- what each keeps
def _picture_records(module: Any) -> list[torch.Tensor]:
    """Each job's result as its PNG would hold it (``ImageWriter``'s ``<job>.png``)."""
    return [module.result_pixels(row) for row in range(len(module.slots))]


def _class_records(module: Any) -> list[tuple[torch.Tensor, int, str, float, Any]]:
    """Each class's picture, index, name, the probability of its 8-bit picture (the title
    ``ClassReport`` puts on the sheet) and, with a judge, its verdict (a ``Recognition``)."""
    probabilities = module.saved_probabilities()
    verdicts = module.recognitions() or [None] * len(module.jobs)
    return [(module.result_pixels(row), job.class_index,
             module.backbone.categories[job.class_index], probabilities[row], verdicts[row])
            for row, job in enumerate(module.jobs)]


def _fooling_records(module: Any) -> list[FoolingResult]:
    """Each job judged on its 8-bit picture, as ``FoolingReport`` judges the PNG it reads."""
    fooled = torch.stack([module.fooled_pixels(row) for row in range(len(module.slots))])
    rows = module.score(fooled)
    # score() names the predicted class; its index comes from the same network's probabilities.
    probabilities = module._classify(fooled, module.attacked())
    categories = module.backbone.categories
    results = []
    for row, (job, scored) in enumerate(zip(module.jobs, rows)):
        predicted = int(probabilities[row].argmax())
        results.append(FoolingResult(
            name=job.name, image=_to_image(fooled[row]), original=_to_image(job.pixels),
            target_class=job.target_class, target_name=categories[job.target_class],
            predicted_class=predicted, predicted_name=categories[predicted],
            probability=float(probabilities[row, predicted]),
            target_probability=scored["p_target"], fooled=scored["success"],
            steps=scored["steps"], l2=scored["l2"], linf=scored["linf"], ssim=scored["ssim"],
            psnr=scored["psnr"],
            checks={key[len("success_"):]: value for key, value in scored.items()
                    if key.startswith("success_")}))
    return results


# --------------------------------------------------------------------------- one run
class _Run:
    """One technique's run from Python: the config, the options on top, a quiet Trainer.

    Args:
        function: The public function's name, for messages.
        technique: The config's stem in ``configs/`` (and the run folder's name with
            ``save_dir``, unless the config's logger names another).
        base: The module class the config must name (or a subclass of it).
        options: The caller's keyword options.
        inputs: The datamodule's arguments that the function's own arguments give.
        fit: Whether the technique optimizes (``fit``) or explains (``predict``).
    """

    def __init__(self, function: str, technique: str, base: type, options: dict[str, Any],
                 inputs: dict[str, Any], fit: bool) -> None:
        self.function, self.fit_technique = function, fit
        options = dict(options)
        run_keys = _RUN_OPTIONS + (_STEP_OPTIONS if fit else ())
        run = {key: options.pop(key) for key in run_keys if key in options}
        self.config_path = _config_path(run.get("config"), technique)
        self.config = load_config(self.config_path)
        self.model_class, self.model_args = _section(self.config, "model", self.config_path)
        self.data_class, self.data_args = _section(self.config, "data", self.config_path)
        if not (isinstance(self.model_class, type) and issubclass(self.model_class, base)):
            raise UserInputError(f"{function}() runs {base.__name__}, but {self.config_path} "
                                 f"runs {getattr(self.model_class, '__name__', self.model_class)}.")
        model_names, data_names = (init_arguments(self.model_class),
                                   init_arguments(self.data_class))
        for key, value in options.items():
            if key in inputs:
                raise UserInputError(f"{function}() takes its {key} as an argument, not as an "
                                     f"option.")
            if key in model_names:
                self.model_args[key] = value
            elif key in data_names:
                self.data_args[key] = value
            else:
                raise UserInputError(self._unknown(key, model_names + data_names + list(run_keys)))
        self.data_args.update(inputs)
        if "seed" in run:
            self.seed = run["seed"]
            if isinstance(self.seed, bool):
                raise UserInputError(f"seed must be a whole number or None, got {self.seed}.")
        else:
            self.seed = self.config.get("seed_everything", DEFAULT_SEED)
            if isinstance(self.seed, bool):
                self.seed = None  # a config's true (a random seed) or false (none): unseeded
        check_seed(self.seed, "seed", "None")
        self.max_steps = self._max_steps(run) if fit else None
        self.accelerator = run.get("accelerator", "auto")
        self.precision = run.get("precision")
        self.save_dir = run.get("save_dir")
        self.directory: Optional[Path] = None  # the run folder, with save_dir

    def _unknown(self, key: str, known: list[str]) -> str:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        run_keys = _RUN_OPTIONS + (_STEP_OPTIONS if self.fit_technique else ())
        return (f"{self.function}() has no option '{key}'{hint}; it takes the arguments of "
                f"{self.model_class.__name__} and {self.data_class.__name__} and "
                f"{', '.join(run_keys)}.")

    def _max_steps(self, run: dict[str, Any]) -> int:
        if all(key in run for key in _STEP_OPTIONS):
            raise UserInputError("Give steps or max_steps, not both.")
        steps = run.get("steps", run.get("max_steps",
                                         (self.config.get("trainer") or {}).get("max_steps")))
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UserInputError(f"steps must be a positive number of steps, got {steps!r}.")
        return steps

    # ----------------------------------------------------------------- running
    def fit(self, record: Callable[[Any], list[Any]]) -> tuple[list[Any], list[dict[str, float]]]:
        """Optimize; returns ``record(module)`` of every chunk's jobs, in the jobs' order, and
        the run's loss rows (``losses.csv``'s)."""
        # Imported here, as every callback is: importing this module stays cheap.
        from callbacks.chunk_end import ChunkEndCallback
        from callbacks.loss_history import LossHistory

        class Results(ChunkEndCallback):
            """Keeps each chunk's results before the next chunk replaces its images."""

            def __init__(self) -> None:
                self.kept: list[tuple[int, Any]] = []
                self.rows: list[dict[str, float]] = []

            def on_chunk_end(self, trainer: Any, pl_module: Any) -> None:
                self.kept += list(zip(pl_module.job_indices, record(pl_module)))

            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any,
                                   batch: Any, batch_idx: int) -> None:
                if history is None:  # else LossHistory takes the rows, and keeps them
                    self.rows += pl_module.take_loss_rows()
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

        writers = self._writers()
        history = next((w for w in writers if isinstance(w, LossHistory)), None)
        results = Results()
        with self._running(writers + [results]) as (module, data, trainer):
            trainer.fit(module, datamodule=data)
        rows = history.rows if history is not None else results.rows + module.take_loss_rows()
        return [value for _, value in sorted(results.kept, key=lambda pair: pair[0])], rows

    def predict(self) -> list[Any]:
        """Explain every batch; returns the module's predictions (``SaliencyBatch``es)."""
        with self._running(self._writers()) as (module, data, trainer):
            return trainer.predict(module, datamodule=data, return_predictions=True)

    def saliency_pictures(self) -> Any:
        """The config's ``SaliencyWriter`` (unattached), which draws heat maps and overlays."""
        from callbacks.saliency_writer import SaliencyWriter

        for spec in (self.config.get("trainer") or {}).get("callbacks") or []:
            writer = _instantiate(spec, self.config_path)
            if isinstance(writer, SaliencyWriter):
                return writer
        return SaliencyWriter()

    def _writers(self) -> list[Any]:
        """The callbacks that write the command line's run folder: only with ``save_dir``."""
        if self.save_dir is None:
            return []
        specs = [{"class_path": path, "init_args": self.config.get(section) or {}}
                 for section, path in _FIT_WRITERS] if self.fit_technique else []
        specs += (self.config.get("trainer") or {}).get("callbacks") or []
        return [_instantiate(spec, self.config_path) for spec in specs]

    @contextmanager
    def _running(self, callbacks: list[Any]) -> Iterator[tuple[Any, Any, Any]]:
        """The module, datamodule and quiet Trainer, made and run under the run's seed; a run
        folder that never saw a step is removed."""
        with ExitStack() as stack:
            stack.enter_context(_quiet())
            stack.enter_context(_seeded(self.seed))
            trainer = None
            try:
                # In the command line's order: seeded, then the classes, then the Trainer.
                module = self.model_class(**self.model_args)
                data = self.data_class(**self.data_args)
                trainer = self._trainer(callbacks)
                yield module, data, trainer
            except UserInputError as error:
                self._forget_unstarted(trainer)
                # One sentence from the call itself, not from deep inside Lightning.
                raise UserInputError(str(error)) from None
            except BaseException:
                self._forget_unstarted(trainer)
                raise

    def _forget_unstarted(self, trainer: Any) -> None:
        """Remove the run folder of a run that took no step (as the command line does)."""
        if self.directory is None:
            return
        started = trainer is not None and (
            trainer.global_step > 0 or trainer.predict_loop.batch_progress.total.ready > 0)
        if not started:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def _trainer(self, callbacks: list[Any]) -> Any:
        import pytorch_lightning as pl
        from pytorch_lightning.utilities.exceptions import MisconfigurationException

        options = {key: value for key, value in (self.config.get("trainer") or {}).items()
                   if key not in _QUIET_TRAINER_KEYS}
        options.update(logger=self._logger(), enable_checkpointing=False,
                       enable_progress_bar=False, enable_model_summary=False,
                       num_sanity_val_steps=0, accelerator=self.accelerator, devices=1,
                       callbacks=callbacks)
        if self.directory is not None:
            options["default_root_dir"] = str(self.directory)
        if self.fit_technique:
            options.update(max_steps=self.max_steps, log_every_n_steps=log_period(self.max_steps))
        else:
            options.setdefault("inference_mode", False)  # saliency differentiates the input
        if self.precision is not None:
            options["precision"] = self.precision
        try:
            return pl.Trainer(**options)
        except MisconfigurationException as error:
            raise UserInputError(" ".join(str(error).split())) from None
        except ModuleNotFoundError as error:
            raise UserInputError(f"The Trainer's options need a package that is not "
                                 f"installed: {' '.join(str(error).split())}") from None

    def _logger(self) -> Any:
        """False (no logger, no folder), or with ``save_dir`` the command line's CSV logger in a
        freshly claimed ``<save_dir>/<name>/version_<n>``."""
        if self.save_dir is None:
            return False
        from pytorch_lightning.loggers import CSVLogger

        from callbacks.run_directory import claim_run_directory

        logger = (self.config.get("trainer") or {}).get("logger")
        init_args = (logger.get("init_args") or {}) if isinstance(logger, dict) else {}
        name = str(init_args.get("name") or self.config_path.stem)
        number = claim_run_directory(Path(self.save_dir) / name)
        self.directory = Path(self.save_dir) / name / f"version_{number}"
        return CSVLogger(save_dir=str(self.save_dir), name=name, version=number)


# --------------------------------------------------------------------------- configs
class _ConfigLoader(yaml.SafeLoader):
    """YAML as the command line reads it: ``3e-2`` is a number (YAML 1.1 wants ``3.0e-2``)."""


_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?[eE][-+]?\d+$|^[-+]?\d[\d_]*\.\d*$"
               r"|^[-+]?\.\d+(?:[eE][-+]?\d+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."))


def load_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read a run config (``configs/*.yaml``) as the command line reads it.

    Raises:
        UserInputError: If it is missing or not YAML.
    """
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserInputError(f"Cannot read the config {path} ({error.strerror or error}).") \
            from None
    try:
        config = yaml.load(text, Loader=_ConfigLoader)
    except yaml.YAMLError as error:
        raise UserInputError(f"The config {path} is not valid YAML "
                             f"({' '.join(str(error).split())}).") from None
    if not isinstance(config, dict):
        raise UserInputError(f"The config {path} holds no options.")
    return config


def _config_path(given: Any, technique: str) -> Path:
    """The config to start from: ``given`` (a path, or a name in ``configs/`` such as
    ``cs231n/the_scream``), else ``configs/<technique>.yaml``."""
    if given is None:
        path = CONFIG_DIR / f"{technique}.yaml"
        if not path.is_file():
            raise UserInputError(f"The default config {path} is missing: this needs the "
                                 f"project's configs folder (pip install -e .), or config=.")
        return path
    path = Path(given)
    for candidate in (path, CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise UserInputError(f"Config {given} not found (a YAML file, or a name in {CONFIG_DIR}).")


def _section(config: dict[str, Any], key: str, path: Path) -> tuple[type, dict[str, Any]]:
    """The class and init arguments of a config's ``model`` or ``data``."""
    spec = config.get(key)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise UserInputError(f"The config {path} names no {key} class ({key}: class_path: ...).")
    return _import(spec["class_path"], path), dict(spec.get("init_args") or {})


def _import(class_path: str, path: Path) -> Any:
    module_name, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise UserInputError(f"The config {path} names {class_path}, which cannot be "
                             f"imported.") from None


def _instantiate(spec: Any, path: Path) -> Any:
    """A callback of a config: ``{class_path: ..., init_args: {...}}``."""
    if isinstance(spec, str):
        spec = {"class_path": spec}
    return _import(spec["class_path"], path)(**(spec.get("init_args") or {}))


def init_arguments(cls: type) -> list[str]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up to the base classes
    (``StyleTransfer``'s include ``ImageOptimization``'s ``backbone`` and ``weights``)."""
    names: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.name not in names
                  and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return names


# --------------------------------------------------------------------------- images
def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@contextmanager
def _image_sources(images: dict[str, list[Any]]) -> Iterator[dict[str, list[str]]]:
    """Each argument's images as sources: paths and samples as they are, pictures in memory
    as ``memory:`` sources while the block runs.

    Args:
        images: Each argument's name (``"content"``, also the name of its pictures) and images.
    """
    from datamodules.images import memory_images

    # Per argument, each image as ("source", text) or ("memory", its position in `pictures`).
    entries: dict[str, list[tuple[str, Any]]] = {}
    pictures: list[Image.Image] = []
    stems: list[str] = []
    for argument, values in images.items():
        entries[argument] = []
        for value in values:
            source = _source(value, argument)
            if isinstance(source, Image.Image):
                # A picture opened from a file keeps its name; others are named by the argument.
                stem = safe_name(Path(getattr(source, "filename", "") or argument).stem)
                stems.append(stem or argument)
                entries[argument].append(("memory", len(pictures)))
                pictures.append(source)
            else:
                entries[argument].append(("source", source))
    # Unique over the call: two pictures are two jobs, with two sets of files.
    names = unique_names(stems)
    with memory_images(dict(zip(names, pictures))) as registered:
        yield {argument: [item if kind == "source" else registered[names[item]]
                          for kind, item in listed] for argument, listed in entries.items()}


def _source(value: Any, argument: str) -> Union[str, Image.Image]:
    """A source string for a path or sample, else the picture to hold in memory."""
    from datamodules.images import SAMPLE_PREFIX, list_samples, tensor_to_image

    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if text in list_samples() and not Path(text).exists():
            return SAMPLE_PREFIX + text  # "chelsea": the built-in sample, unless a file is so named
        return text
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim not in (2, 3):
            raise UserInputError(f"A numpy {argument} must be uint8 [H, W, 3] or [H, W], got "
                                 f"{value.dtype} {list(value.shape)}.")
        return Image.fromarray(value)
    if isinstance(value, torch.Tensor):
        pixels = value.detach()
        if pixels.ndim == 4 and pixels.shape[0] == 1:
            pixels = pixels[0]
        if pixels.ndim == 2:
            pixels = pixels[None]
        if pixels.ndim != 3 or pixels.shape[0] not in (1, 3) or not pixels.shape[-1] > 0:
            raise UserInputError(f"A tensor {argument} must be pixels [3, H, W] (or [1, 3, H, "
                                 f"W]), got shape {list(value.shape)}.")
        pixels = pixels.float() / 255 if pixels.dtype == torch.uint8 else pixels.float()
        return tensor_to_image(pixels.expand(3, -1, -1))
    raise UserInputError(f"The {argument} must be a path, a built-in sample name, a PIL image "
                         f"or a tensor, got {type(value).__name__}.")


def _to_image(pixels: torch.Tensor) -> Image.Image:
    """0-1 pixels ``[3, H, W]`` as the 8-bit picture a PNG of them holds."""
    from datamodules.images import tensor_to_image

    return tensor_to_image(pixels)


# --------------------------------------------------------------------------- quiet and seeded
@contextmanager
def _quiet() -> Iterator[None]:
    """No start-up report, tips or advice meant for training networks, for this call only (a
    notebook's own logging and warnings are put back as they were)."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for message in IRRELEVANT_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@contextmanager
def _seeded(seed: Optional[int]) -> Iterator[None]:
    """Seed as the command line does (``seed_everything(seed, workers=True)``), and put every
    random state back afterwards: a call must not change what a notebook draws next."""
    from lightning_fabric.utilities.seed import seed_everything

    if seed is None:
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()
    environment = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    with torch.random.fork_rng():
        seed_everything(seed, workers=True, verbose=False)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
            for name, value in environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

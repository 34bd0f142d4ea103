"""One call from Python per technique, for notebooks: stylize, visualize_class, saliency, fool,
explain_dataset, stylize_video.

    from lightning_modules import stylize
    picture = stylize("chelsea", "immunohistochemistry", image_size=128, steps=40)

Each function builds its run with the command line's own builder (``cli.PythonRun``: the same
parser, checks, seeding and error sentences) from the shipped config of its technique (or another
one with ``config=``, a path or a shipped config's name), under a quiet Trainer: no progress bar,
no model summary, no logger, no checkpoint and no run directory. The result comes
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

This module is the one under ``lightning_modules`` that imports ``cli`` and ``callbacks`` (the
builder, and the end of each chunk of jobs).
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from lightning_modules.errors import UserInputError
from lightning_modules.naming import safe_name, unique_names
from lightning_modules.run_defaults import IRRELEVANT_WARNINGS, check_seed

ImageInput = Union[str, os.PathLike, Image.Image, torch.Tensor, np.ndarray]
ClassInput = Union[int, str]

# Options of the run itself (the rest go to the module or the datamodule).
_RUN_OPTIONS = ("config", "save_dir", "seed", "accelerator", "precision")
_STEP_OPTIONS = ("steps", "max_steps")

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
class DatasetResult:
    """What :func:`explain_dataset` gives: where the run is, and its index.

    Attributes:
        run_directory: The run folder (``index.csv``, ``maps/``, the report).
        index: The rows of ``index.csv``: per image its prediction and every
            ``<method>.<metric>`` score, as strings.
        report: The self-contained HTML report.
    """

    run_directory: Path
    index: list[dict[str, str]]
    report: Path

    def maps(self, paths: Optional[Sequence[str]] = None,
             methods: Optional[Sequence[str]] = None) -> dict[str, dict[str, np.ndarray]]:
        """The maps by image path and method (:func:`~lightning_modules.saliency.load_maps`)."""
        from lightning_modules.saliency.map_shards import load_maps

        return load_maps(self.run_directory, paths, methods)


@dataclass
class VideoResult:
    """A stylized video (:func:`stylize_video`).

    Attributes:
        video: The video file.
        frames: Its frames' PNGs, in order.
        warping_errors: Each frame's warping error against the one before (Lai et al. 2018).
        run_directory: The run folder.
    """

    video: Path
    frames: list[Path]
    warping_errors: list[float]
    run_directory: Path


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


def explain_dataset(images: Union[str, Sequence[str], None] = None, save_dir: str = "runs",
                    **options: Any) -> DatasetResult:
    """Explain a whole dataset with several methods and score every map with the evaluation
    metrics beside the controls: ``configs/saliency_dataset.yaml``'s run (see
    docs/saliency_dataset.md).

    Args:
        images: A folder of class subfolders, a CSV (``path,label[,x0,y0,x1,y1]``), a glob, a
            folder, a list of these; None: the built-in samples with their boxes.
        save_dir: The folder of the run directory (``<save_dir>/saliency_dataset/version_<n>``),
            which gets the map shards, the index and the report: a dataset is not held in memory.
        **options: Arguments of ``DatasetExplanation`` and ``DatasetImages`` (``methods``,
            ``metrics``, ``controls``, ``target``, ``backbone``, ``image_size``,
            ``batch_size``, ``shard_size``, ``num_workers``, ``strict``, ...), ``seed``,
            ``config``, ``accelerator``, ``precision``.

    Returns:
        A :class:`DatasetResult`: the run folder, the index rows, the report; ``maps()`` reads
        the maps back.

    Raises:
        UserInputError: For bad input, in one sentence.
    """
    from lightning_modules.saliency.dataset import DatasetExplanation
    from lightning_modules.saliency.map_shards import INDEX, read_rows

    if save_dir is None:
        raise UserInputError("explain_dataset() writes its shards, index and report into a run "
                             "folder: give save_dir.")
    inputs = {} if images is None else {"images": images}
    run = _Run("explain_dataset", "saliency_dataset", DatasetExplanation,
               {**options, "save_dir": save_dir}, inputs, fit=False)
    run.predict(keep=False)
    directory = run.directory
    return DatasetResult(run_directory=directory, index=read_rows(directory / INDEX),
                         report=directory / "report.html")


def stylize_video(video: Union[str, os.PathLike], style: Union[ImageInput, Sequence[ImageInput]],
                  save_dir: str = "runs", **options: Any) -> VideoResult:
    """Stylize a video without flicker: ``configs/video_style_transfer.yaml``'s run (see
    docs/video.md).

    Args:
        video: A video file, a folder of frames, or ``"sample:<photo>"`` (a built-in pan with
            a zoom over a built-in photo).
        style: The style image; a list of several is blended.
        save_dir: The folder of the run directory (``<save_dir>/video_style_transfer/
            version_<n>``), which gets the frames, the video and ``temporal.csv``: a video is
            not held in memory.
        **options: Arguments of ``VideoStyleTransfer`` and ``VideoStyleData``
            (``temporal_weight``, ``warm_steps``, ``image_size``, ``frames``, ``every_n``, ...),
            ``steps`` (the first frame's), ``seed``, ``config``, ``accelerator``, ``precision``.

    Returns:
        A :class:`VideoResult`: the video, its frames' PNGs, each frame's warping error.

    Raises:
        UserInputError: For bad input, in one sentence.
    """
    from callbacks.video_writer import VideoWriter
    from lightning_modules.video_style_transfer.module import VideoStyleTransfer

    if save_dir is None:
        raise UserInputError("stylize_video() writes its frames and video into a run folder: "
                             "give save_dir.")
    if not isinstance(video, (str, os.PathLike)):
        raise UserInputError(f"video must be a path or 'sample:<photo>', got "
                             f"{type(video).__name__}.")
    styles = _as_list(style)
    with _image_sources({"style": styles}) as sources:
        data = {"content": str(video),
                "style": sources["style"] if len(styles) > 1 else sources["style"][0]}
        run = _Run("stylize_video", "video_style_transfer", VideoStyleTransfer,
                   {**options, "save_dir": save_dir}, data, fit=True)
        run.fit(lambda module: [None] * len(module.slots))
    writer = next(c for c in run.writers if isinstance(c, VideoWriter))
    return VideoResult(video=writer.written, frames=list(writer.frames),
                       warping_errors=list(writer.errors), run_directory=run.directory)


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
    """Each job judged on its 8-bit picture, as the run's ``fooling_results.csv`` gives it."""
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
    """One technique's run from Python, built by the command line's builder (``cli.PythonRun``).

    Args:
        function: The public function's name, for messages.
        technique: The shipped config's name (and the run folder's name with ``save_dir``,
            unless the config's logger names another).
        base: The module class the config must name (or a subclass of it).
        options: The caller's keyword options.
        inputs: The datamodule's arguments that the function's own arguments give.
        fit: Whether the technique optimizes (``fit``) or explains (``predict``).
    """

    def __init__(self, function: str, technique: str, base: type, options: dict[str, Any],
                 inputs: dict[str, Any], fit: bool) -> None:
        self.function, self.technique, self.base, self.fit_technique = (
            function, technique, base, fit)
        options = dict(options)
        self.run_keys = _RUN_OPTIONS + (_STEP_OPTIONS if fit else ())
        run = {key: options.pop(key) for key in self.run_keys if key in options}
        for key in options:
            if key in inputs:
                raise UserInputError(f"{function}() takes its {key} as an argument, not as an "
                                     f"option.")
        self.options = {**options, **inputs}
        self.inputs = tuple(inputs)
        self.config = _config_file(run.get("config"), technique)
        self.seeded = "seed" in run
        self.seed = run.get("seed")
        if self.seeded and isinstance(self.seed, bool):
            raise UserInputError(f"seed must be a whole number or None, got {self.seed}.")
        if self.seeded:
            check_seed(self.seed, "seed", "None")
        self.trainer: dict[str, Any] = {"accelerator": run.get("accelerator", "auto")}
        if run.get("precision") is not None:
            self.trainer["precision"] = run["precision"]
        if fit and any(key in run for key in _STEP_OPTIONS):
            self.trainer["max_steps"] = _max_steps(run)
        self.save_dir = run.get("save_dir")
        self.directory: Optional[Path] = None  # the run folder, with save_dir
        self.writers: list[Any] = []  # the run's callbacks, once it ran

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
                self.history: Optional[LossHistory] = None

            def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
                # With save_dir, LossHistory takes the rows (and writes losses.csv).
                self.history = next((c for c in trainer.callbacks
                                     if isinstance(c, LossHistory)), None)

            def on_chunk_end(self, trainer: Any, pl_module: Any) -> None:
                self.kept += list(zip(pl_module.job_indices, record(pl_module)))

            def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any,
                                   batch: Any, batch_idx: int) -> None:
                if self.history is None:
                    self.rows += pl_module.take_loss_rows()
                super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

        results = Results()
        run = self._run("fit", [results])
        rows = (results.history.rows if results.history is not None
                else results.rows + run.model.take_loss_rows())
        return [value for _, value in sorted(results.kept, key=lambda pair: pair[0])], rows

    def predict(self, keep: bool = True) -> list[Any]:
        """Explain every batch; returns the module's predictions (``SaliencyBatch``es), or
        nothing without ``keep`` (the run's writer saves them)."""
        return self._run("predict", [], keep_predictions=keep).predictions

    def saliency_pictures(self) -> Any:
        """The run's ``SaliencyWriter`` (the config's, with its colours), which draws heat maps
        and overlays; a default one when the run had none."""
        from callbacks.saliency_writer import SaliencyWriter

        return next((c for c in self.writers if isinstance(c, SaliencyWriter)), None) \
            or SaliencyWriter()

    def _run(self, subcommand: str, collectors: list[Any], keep_predictions: bool = True) -> Any:
        """Build and run with the command line's builder, quiet and seeded; a run folder that
        never saw a step is removed by the builder."""
        from cli import PythonRun, translate_error

        with _quiet(), _random_states_kept():
            try:
                run = PythonRun(subcommand, str(self.config), self.options,
                                function=self.function, expected=self.base, inputs=self.inputs,
                                run_options=self.run_keys, trainer=self.trainer,
                                seed=self.seed, seeded=self.seeded, save_dir=self.save_dir,
                                callbacks=collectors, keep_predictions=keep_predictions)
            except Exception as error:  # noqa: BLE001 - a user's mistake becomes one sentence
                translated = translate_error(error)
                if translated is None:
                    raise
                # One sentence from the call itself, not from deep inside Lightning.
                raise UserInputError(translated[1]) from None
        self.writers = list(run.trainer.callbacks) + run.unattached
        if not run.quiet and run.trainer.logger is not None:
            self.directory = Path(run.trainer.logger.log_dir)
        return run


def _config_file(given: Any, technique: str) -> Path:
    """The config to start from: ``given`` (a path, or a shipped config's name such as
    ``cs231n/the_scream``), else the shipped ``<technique>`` config."""
    from configs import find_config

    return find_config(technique if given is None else given)


def _max_steps(run: dict[str, Any]) -> int:
    if all(key in run for key in _STEP_OPTIONS):
        raise UserInputError("Give steps or max_steps, not both.")
    steps = run.get("steps", run.get("max_steps"))
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise UserInputError(f"steps must be a positive number of steps, got {steps!r}.")
    return steps


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
    """A source string for a path or sample, else the picture to hold in memory.

    Pictures in memory are PIL images, uint8 numpy arrays ``[H, W]`` or ``[H, W, 1|3|4]``, and
    tensors ``[3, H, W]`` (or ``[1, 3, H, W]``, ``[1, H, W]``, ``[H, W]``) of 0-1 floats or
    uint8 0-255: anything else is refused in one sentence rather than turned into some picture.
    """
    from datamodules.images import SAMPLE_PREFIX, list_samples

    if isinstance(value, Image.Image):
        _check_not_empty(value.size[::-1], argument)
        return value
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        if text in list_samples() and not Path(text).exists():
            return SAMPLE_PREFIX + text  # "chelsea": the built-in sample, unless a file is so named
        return text
    if isinstance(value, np.ndarray):
        return _array_picture(value, argument)
    if isinstance(value, torch.Tensor):
        return _tensor_picture(value, argument)
    raise UserInputError(f"The {argument} must be a path, a built-in sample name, a PIL image "
                         f"or a tensor, got {type(value).__name__}.")


def _check_not_empty(height_width: Sequence[int], argument: str) -> None:
    """Refuse a picture without pixels (resizing it would divide by zero)."""
    height, width = height_width
    if not (height > 0 and width > 0):
        raise UserInputError(f"The {argument} picture is empty ({width} x {height} pixels).")


def _array_picture(array: np.ndarray, argument: str) -> Image.Image:
    """A uint8 numpy array ``[H, W]`` or ``[H, W, 1|3|4]`` as a picture."""
    channels = array.shape[2] if array.ndim == 3 else None
    if array.dtype != np.uint8 or not (array.ndim == 2 or channels in (1, 3, 4)):
        raise UserInputError(f"A numpy {argument} must be uint8 [H, W, 3] or [H, W], got "
                             f"{array.dtype} {list(array.shape)}.")
    _check_not_empty(array.shape[:2], argument)
    # Pillow cannot read [H, W, 1]: it is the greyscale [H, W].
    return Image.fromarray(np.ascontiguousarray(array[..., 0] if channels == 1 else array))


# Floats this far outside 0-1 still round to the 8-bit levels 0 and 255 (half a level): a
# picture computed in floats may overshoot by a rounding error.
_FLOAT_SLACK = 0.5 / 255


def _tensor_picture(tensor: torch.Tensor, argument: str) -> Image.Image:
    """A tensor of pixels (0-1 floats or uint8 0-255) as a picture."""
    from datamodules.images import tensor_to_image

    shape = list(tensor.shape)
    if tensor.is_meta:
        raise UserInputError(f"A tensor {argument} on the meta device holds no pixels: give a "
                             f"tensor with data.")
    if not (tensor.dtype == torch.uint8 or tensor.is_floating_point()):
        raise UserInputError(f"A tensor {argument} must hold 0-1 floats or uint8 0-255, got "
                             f"{tensor.dtype}.")
    pixels = tensor.detach()
    if pixels.ndim == 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3):
        raise UserInputError(f"A tensor {argument} must be pixels [3, H, W] (or [1, 3, H, "
                             f"W]), got shape {shape}.")
    _check_not_empty(pixels.shape[1:], argument)
    pixels = pixels.cpu()
    if pixels.dtype == torch.uint8:
        pixels = pixels.float() / 255
    else:
        pixels = pixels.float()
        if not bool(torch.isfinite(pixels).all()):
            raise UserInputError(f"A tensor {argument} holds NaN or infinite values: give 0-1 "
                                 f"floats or uint8 0-255.")
        low, high = float(pixels.min()), float(pixels.max())
        if low < -_FLOAT_SLACK or high > 1 + _FLOAT_SLACK:
            raise UserInputError(
                f"A float tensor {argument} must hold pixels in 0-1 (or be uint8 0-255), got "
                f"values from {low:.4g} to {high:.4g}"
                + (": divide 0-255 values by 255." if low >= 0 and high <= 255 else "."))
    return tensor_to_image(pixels.expand(3, -1, -1))


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
def _random_states_kept() -> Iterator[None]:
    """Put every random state back after the run (which seeds as the command line does): a
    call must not change what a notebook draws next."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    environment = {name: os.environ.get(name) for name in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    with torch.random.fork_rng():
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

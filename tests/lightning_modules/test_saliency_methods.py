"""Saliency methods as objects (issue 24): one object per method, named by ``class_path`` or by
its short name, and the writers SaliencyMap brings itself."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger

import cli
from callbacks.saliency_writer import SaliencyWriter
from callbacks.trust_report import TrustReportWriter
from datamodules.labeled_images import LabeledImageData
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import (
    SHORTHANDS,
    CaptumMethod,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    IntegratedGradients,
    SaliencyMap,
    SaliencyMethod,
    ScoreCAM,
    SmoothGrad,
    Vanilla,
    compute_saliency_maps,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "saliency.yaml"
NAMES = ("chelsea", "coffee", "rocket")  # the built-in samples


@pytest.fixture
def images(tiny_backbone) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.rand(3, 3, 20, 24, generator=torch.Generator().manual_seed(0))
    return tiny_backbone.normalize(pixels), torch.tensor([1, 7, 42])


# --- the objects and their short names ---------------------------------------------------------


@pytest.mark.parametrize("name, flat, method", [
    ("vanilla", {}, Vanilla()),
    ("smoothgrad", {"samples": 3, "noise_level": 0.2}, SmoothGrad(noise_level=0.2, samples=3)),
    ("integrated_gradients", {"steps": 4, "reduction": "positive"},
     IntegratedGradients(steps=4, reduction="positive")),
    ("gradcam", {"layer": 2}, GradCAM(layer=2)),
    ("gradcam++", {}, GradCAMPlusPlus()),
    ("scorecam", {"internal_batch_size": 5}, ScoreCAM(internal_batch_size=5)),
    ("guided_gradcam", {"layer": "features.2"}, GuidedGradCAM(layer="features.2")),
    ("captum:Occlusion", {"patch_size": 8}, CaptumMethod("Occlusion", patch_size=8)),
])
def test_a_short_name_and_its_object_give_the_same_maps(images, name: str, flat: dict,
                                                        method: SaliencyMethod) -> None:
    inputs, targets = images
    by_name = SaliencyMap(backbone="tiny", weights="random", method=name, **flat)
    by_object = SaliencyMap(backbone="tiny", weights="random", method=method)
    assert type(by_name.method) is type(method) and method.shorthand == name
    torch.manual_seed(0)
    expected = by_name.saliency(inputs, targets)
    torch.manual_seed(0)
    got = by_object.saliency(inputs, targets)
    assert expected.maps.shape == (3, 20, 24) and expected.maps.max() > 0
    assert torch.equal(got.maps, expected.maps)
    assert (got.attributions is None) == (expected.attributions is None)
    if got.attributions is not None:
        assert torch.equal(got.attributions, expected.attributions)


def test_vanilla_is_the_seed_function(tiny_backbone, images) -> None:
    inputs, targets = images
    assert torch.equal(Vanilla().attribute(tiny_backbone, inputs, targets).maps,
                       compute_saliency_maps(inputs, targets, tiny_backbone))


def test_every_short_name_has_its_class() -> None:
    assert list(SHORTHANDS) == ["vanilla", "smoothgrad", "integrated_gradients", "gradcam",
                                "gradcam++", "scorecam", "guided_gradcam", "hirescam", "xgradcam",
                                "layercam", "eigencam", "eigengradcam", "ablationcam", "fullgrad",
                                "random", "edges", "center"]
    for name, cls in SHORTHANDS.items():
        assert cls().shorthand == name
    # Class activation maps are drawn as regions; Guided Grad-CAM's are pixel-sharp.
    assert [name for name, cls in SHORTHANDS.items() if cls.class_activation_map] == [
        "gradcam", "gradcam++", "scorecam", "hirescam", "xgradcam", "layercam", "eigencam",
        "eigengradcam", "ablationcam", "fullgrad"]
    assert CaptumMethod("captum:Saliency").shorthand == "captum:Saliency"


def test_smoothgrad_draws_its_noise_from_the_generator_given(tiny_backbone, images) -> None:
    inputs, targets = images
    method = SmoothGrad(samples=2)
    first = method.attribute(tiny_backbone, inputs, targets, torch.Generator().manual_seed(1))
    again = method.attribute(tiny_backbone, inputs, targets, torch.Generator().manual_seed(1))
    other = method.attribute(tiny_backbone, inputs, targets, torch.Generator().manual_seed(2))
    assert torch.equal(first.maps, again.maps) and not torch.equal(first.maps, other.maps)


@pytest.mark.parametrize("build, message", [
    (lambda: SmoothGrad(samples=0), "samples must be at least 1"),
    (lambda: SmoothGrad(noise_level=-0.1), "noise_level must be zero or positive"),
    (lambda: IntegratedGradients(reduction="sum"), "Unknown reduction 'sum'"),
    (lambda: IntegratedGradients(baseline="white"), "Unknown baseline 'white'"),
    (lambda: IntegratedGradients(steps=1, integration="riemann_left"), "at least 2"),
    (lambda: ScoreCAM(internal_batch_size=0), "internal_batch_size must be a whole number"),
    (lambda: CaptumMethod("GradCam"), "Unknown Captum method 'GradCam'"),
    (lambda: CaptumMethod("Occlusion", {"window": 3}), "takes no option 'window'"),
    (lambda: CaptumMethod("Occlusion", patch_size=0), "patch_size must be a whole number"),
    (lambda: SaliencyMap(backbone="tiny", weights="random", method=GradCAM(layer=9)),
     "CAM layer 9 is out of range"),
    (lambda: SaliencyMap(backbone="tiny", weights="random", method=GradCAM(), layer=2),
     "Option 'layer' configures a method given by its short name; give GradCAM's options in "
     "its init_args."),
    (lambda: SaliencyMap(backbone="tiny", weights="random", method={"class_path": "GradCAM"}),
     "must be a short name such as 'smoothgrad' or a SaliencyMethod"),
])
def test_bad_method_options_are_one_sentence(build, message: str) -> None:
    with pytest.raises(UserInputError) as error:
        build()
    assert message in str(error.value) and str(error.value).count(". ") == 0, error.value


def test_an_empty_method_options_asks_for_nothing() -> None:
    module = SaliencyMap(backbone="tiny", weights="random", method="smoothgrad",
                         method_options={})
    assert isinstance(module.method, SmoothGrad)


def test_a_flat_setting_beside_a_method_object_that_has_its_own_is_said() -> None:
    # The shipped config sets noise_level: 0.1 for the short names; an object keeps its own.
    with pytest.warns(UserWarning, match="noise_level=0.1 is a setting for short method names; "
                                         "SmoothGrad uses its own noise_level=0.15"):
        module = SaliencyMap(backbone="tiny", weights="random", method=SmoothGrad(),
                             noise_level=0.1)
    assert module.method.noise_level == 0.15
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Agreeing, a default, or an option the method does not have: nothing to say.
        SaliencyMap(backbone="tiny", weights="random", method=SmoothGrad(noise_level=0.1),
                    noise_level=0.1, samples=25, steps=7)


# --- the command line -----------------------------------------------------------------------


def _maps(run: Path) -> np.ndarray:
    return np.stack([np.load(run / f"{name}_saliency.npy") for name in NAMES])


def test_a_class_path_method_runs_from_the_cli_as_its_short_name(workdir: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # pytest's own arguments hidden
    tiny = ["--model.backbone", "tiny", "--model.weights", "random", "--data.image_size", "32",
            "--trainer.enable_progress_bar", "false"]
    # The short name with flat options (the config's noise_level 0.1), as ever.
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method", "smoothgrad",
                     "--model.samples", "3"]) == 0
    # The class on the command line, its options as the method's own.
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method",
                     "lightning_modules.saliency.SmoothGrad", "--model.method.samples", "3",
                     "--model.method.noise_level", "0.1"]) == 0
    # A config of its own that names the method by class_path and lists no callbacks: the
    # module brings its writers.
    config = workdir / "smoothgrad_by_class.yaml"
    config.write_text(
        "trainer:\n  inference_mode: false\n  logger:\n"
        "    class_path: pytorch_lightning.loggers.CSVLogger\n    init_args: {name: saliency}\n"
        "model:\n  class_path: lightning_modules.saliency.SaliencyMap\n  init_args:\n"
        "    backbone: tiny\n    weights: random\n    evaluate: true\n"
        "    evaluation_steps: 4\n    method:\n"
        "      class_path: lightning_modules.saliency.SmoothGrad\n"
        "      init_args: {noise_level: 0.1, samples: 3}\n"
        "data:\n  class_path: datamodules.labeled_images.LabeledImageData\n"
        "  init_args: {image_size: 32, batch_size: 8}\n")
    assert cli.main(["predict", "--config", str(config),
                     "--trainer.enable_progress_bar", "false"]) == 0
    runs = [workdir / "runs" / "saliency" / f"version_{n}" for n in range(3)]
    shorthand = _maps(runs[0])
    assert shorthand.shape == (3, 32, 32) and shorthand.max() > 0
    assert np.array_equal(_maps(runs[1]), shorthand) and np.array_equal(_maps(runs[2]), shorthand)
    saved = (runs[1] / "config.yaml").read_text()
    assert "class_path: lightning_modules.saliency.SmoothGrad" in saved
    # Both writers came from the module: the pictures and the trust report.
    assert (runs[2] / "sheet_0000.png").is_file() and (runs[2] / "coffee_overlay.png").is_file()
    assert (runs[2] / "trust_report.csv").is_file()
    rows = (runs[2] / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4


def test_a_class_path_method_with_a_flat_method_option_is_one_line(workdir: Path, capsys,
                                                                   monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    capsys.readouterr()
    assert cli.main(["predict", "--config", str(CONFIG), "--model.backbone", "tiny",
                     "--model.weights", "random", "--model.method", "GradCAM",
                     "--model.layer", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Option 'layer' configures a method given by its " \
        "short name" in err, err


# --- the writers the module brings ----------------------------------------------------------


def _trainer(root: Path, callbacks: list, logger: bool = True) -> pl.Trainer:
    return pl.Trainer(logger=CSVLogger(root, name="run") if logger else False,
                      callbacks=callbacks, inference_mode=False, accelerator="cpu",
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=root)


def _data() -> LabeledImageData:
    return LabeledImageData(images=["sample:coffee"], image_size=16, batch_size=1)


def test_the_module_brings_its_writers(workdir: Path) -> None:
    trainer = _trainer(workdir, [])
    module = SaliencyMap(backbone="tiny", weights="random", evaluate=True, evaluation_steps=4)
    trainer.predict(module, datamodule=_data(), return_predictions=False)
    assert sum(isinstance(c, SaliencyWriter) for c in trainer.callbacks) == 1
    assert sum(isinstance(c, TrustReportWriter) for c in trainer.callbacks) == 1
    run = workdir / "run" / "version_0"
    assert (run / "coffee_heatmap.png").is_file() and (run / "trust_summary.md").is_file()


def test_a_writer_the_trainer_has_keeps_its_options(workdir: Path) -> None:
    # Lightning replaces a trainer callback with a module's of the same type; a config's
    # writer (its colormap, its clip_percentile) must stay.
    mine = SaliencyWriter(colormap="gray", clip_percentile=50.0)
    trainer = _trainer(workdir, [mine])
    trainer.predict(SaliencyMap(backbone="tiny", weights="random"), datamodule=_data(),
                    return_predictions=False)
    writers = [c for c in trainer.callbacks if isinstance(c, SaliencyWriter)]
    assert writers == [mine]
    assert not any(isinstance(c, TrustReportWriter) for c in trainer.callbacks)  # no evaluate
    # The heat map is drawn in the config's grey, not the default "hot".
    heat = np.asarray(Image.open(workdir / "run" / "version_0" / "coffee_heatmap.png"))[..., :3]
    assert heat.std() > 0 and (heat[..., 0] == heat[..., 1]).all() and \
        (heat[..., 1] == heat[..., 2]).all()


def test_a_trainer_without_logger_gets_no_writers(workdir: Path) -> None:
    trainer = _trainer(workdir, [], logger=False)
    [batch] = trainer.predict(SaliencyMap(backbone="tiny", weights="random", evaluate=True,
                                          evaluation_steps=4), datamodule=_data())
    assert batch.maps.shape == (1, 16, 16) and batch.trust is not None
    assert not any(isinstance(c, (SaliencyWriter, TrustReportWriter)) for c in trainer.callbacks)
    assert list(workdir.iterdir()) == []  # no file anywhere

"""One call from Python (lightning_modules.api): the command line's results, without its files."""

from __future__ import annotations

import contextlib
import csv
import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli
from conftest import two_layer_backbone
from datamodules import images as image_sources
from datamodules.images import image_to_tensor, load_image
import yaml

from configs import shipped_config, shipped_configs
from lightning_modules.api import explain_dataset, fool, saliency, stylize, visualize_class
from lightning_modules.backbones import (IMAGENET_MEAN, IMAGENET_STD, classifier_backbone,
                                         imagenet_categories, load_backbone, register_backbone)
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import compute_saliency_maps

ROOT = Path(__file__).resolve().parents[1]

# conftest's tiny backbone averages its features globally, which leaves most classes out of
# reach of a few steps; these keep a grid of features (as the fooling and class tests' do).
CLASSES_NET = "tiny_api_classes"
FOOLING_NET = "tiny_api_fooling"
FOOLING_CLASSES = ["Egyptian cat", "espresso", "missile", "stingray", "flamingo", "balloon"]
register_backbone(CLASSES_NET, lambda weights="random": two_layer_backbone(
    CLASSES_NET, 16, 2, imagenet_categories(), IMAGENET_MEAN, IMAGENET_STD), "test")
register_backbone(FOOLING_NET, lambda weights="random": two_layer_backbone(
    FOOLING_NET, 8, 4, FOOLING_CLASSES, (0.5,) * 3, (0.25,) * 3), "test")

# Style transfer on the tiny backbone at 32 px, 4 steps: in Python and on the command line.
TINY_STYLE = {"backbone": "tiny", "weights": "random", "content_layers": [2],
              "style_layers": [0, 1, 2, 3], "style_weights": [1.0, 1.0, 1.0, 1.0],
              "image_size": 32, "steps": 4}


def probabilities(backbone_name: str, picture: Image.Image) -> torch.Tensor:
    """What a backbone gives an 8-bit picture, as the command line's reports read a PNG."""
    backbone = load_backbone(backbone_name, "random")
    with torch.no_grad():
        return backbone(backbone.normalize(image_to_tensor(picture)[None])).softmax(1)[0]


def test_stylize_gives_the_picture_the_command_line_writes_and_leaves_no_files(
        workdir: Path, content_image: Path, style_image: Path) -> None:
    # In memory: the content as a PIL image opened from its file, the style as a tensor.
    picture = stylize(Image.open(content_image), image_to_tensor(load_image(style_image)),
                      **TINY_STYLE)
    assert sorted(p.name for p in workdir.iterdir()) == ["inputs"]  # no runs/, no temp files
    assert image_sources._MEMORY_IMAGES == {}  # the in-memory sources are gone after the call
    assert picture.size == (38, 32)  # shorter side 32, the 48 x 40 content's aspect ratio
    losses = picture.info["losses"]
    assert [row["step"] for row in losses] == [1, 2, 3, 4]
    assert losses[-1]["style_loss"] < losses[0]["style_loss"]
    assert not np.array_equal(np.asarray(picture),
                              np.asarray(load_image(content_image).resize(picture.size)))

    assert cli.main(["fit", "--config", str(ROOT / "configs" / "style_transfer.yaml"),
                     "--model.backbone", "tiny", "--model.weights", "random",
                     "--model.content_layers", "[2]", "--model.style_layers", "[0, 1, 2, 3]",
                     "--model.style_weights", "[1, 1, 1, 1]", "--data.content",
                     str(content_image), "--data.style", str(style_image),
                     "--data.image_size", "32", "--trainer.max_steps", "4",
                     "--trainer.enable_progress_bar", "false"]) == 0
    written = Image.open(workdir / "runs" / "style_transfer" / "version_0" / "content__style.png")
    assert np.array_equal(np.asarray(picture), np.asarray(written.convert("RGB")))


def test_save_dir_gets_the_command_lines_run_folder(workdir: Path, content_image: Path,
                                                    style_image: Path) -> None:
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    picture = stylize(str(content_image), str(style_image), save_dir="out", **TINY_STYLE)
    # Seeded as the command line seeds, and every random state put back for the notebook.
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    run = workdir / "out" / "style_transfer" / "version_0"
    assert picture.info["run_directory"] == Path("out") / "style_transfer" / "version_0"
    assert np.array_equal(np.asarray(picture), np.asarray(Image.open(run / "content__style.png")))
    for name in ("content__style_sheet.png", "losses.csv", "loss_curve.png", "metrics.csv"):
        assert (run / name).is_file(), name
    with open(run / "losses.csv", newline="") as handle:
        assert [float(row["step"]) for row in csv.DictReader(handle)] == [1, 2, 3, 4]
    assert not (workdir / "runs").exists()


def test_visualize_class_gives_each_class_its_picture_and_8_bit_probability(
        workdir: Path) -> None:
    # A random network's probabilities hardly move (docs/python_api.md's example shows the real
    # one's rise); here: one picture per class, named, and the probability its 8-bit picture gets.
    options = {"backbone": CLASSES_NET, "weights": "random", "image_size": 32, "steps": 3}
    pictures = visualize_class(["flamingo", 3], **options)
    assert [p.info["class_name"] for p in pictures] == ["flamingo", "tiger shark"]
    assert [p.info["class_index"] for p in pictures] == [130, 3]
    for picture in pictures:
        assert picture.size == (32, 32) and picture.mode == "RGB"
        measured = probabilities(CLASSES_NET, picture)[picture.info["class_index"]]
        # As the class sheet's title gives it: the network's probability for the 8-bit picture.
        assert float(measured) == pytest.approx(picture.info["probability"], abs=1e-5)
    single = visualize_class("flamingo", **options)
    assert isinstance(single, Image.Image) and single.info["class_index"] == 130  # one, not a list
    assert list(workdir.iterdir()) == []


def test_saliency_is_the_homeworks_map_of_the_picture_given(workdir: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (3, 32, 32), generator=generator).float() / 255  # 8-bit
    results = saliency([pixels, "coffee"], target=5, method="vanilla", backbone="tiny",
                       weights="random", image_size=32)
    assert [r.name for r in results] == ["image", "coffee"]
    result = results[0]
    backbone = load_backbone("tiny", "random")
    expected = compute_saliency_maps(backbone.normalize(pixels[None]), torch.tensor([5]),
                                     backbone)[0]
    assert result.map.shape == (32, 32)
    torch.testing.assert_close(result.map, expected)
    assert result.heatmap.size == result.overlay.size == (32, 32)
    assert np.array_equal(np.asarray(result.image), np.asarray(
        Image.fromarray(pixels.mul(255).round().byte().permute(1, 2, 0).numpy())))
    assert (result.target_class, result.target_name) == (5, imagenet_categories()[5])
    with torch.no_grad():
        scores = backbone(backbone.normalize(pixels[None])).softmax(1)[0]
    assert result.predicted_class == int(scores.argmax())
    assert result.probability == pytest.approx(float(scores.max()), abs=1e-6)
    assert list(workdir.iterdir()) == []


def test_explain_dataset_writes_the_run_and_keeps_no_batch(workdir: Path, monkeypatch) -> None:
    """The command line's dataset run from one call: the index comes back, the maps are read
    from the shards, and trainer.predict is asked to keep nothing."""
    kept = []
    original = cli.PythonRun.predict

    def watched(self, **kwargs):
        original(self, **kwargs)
        kept.append(self.predictions)

    monkeypatch.setattr(cli.PythonRun, "predict", watched)
    result = explain_dataset(["sample:coffee", "sample:rocket"], labels=["espresso", "missile"],
                             backbone="tiny", weights="random", image_size=32,
                             methods=["vanilla"], controls=["random"], metrics=["sparseness"])
    assert kept == [[]]
    assert result.run_directory.resolve() == workdir / "runs" / "saliency_dataset" / "version_0"
    assert [row["path"] for row in result.index] == ["sample:coffee", "sample:rocket"]
    assert set(result.index[0]) >= {"vanilla.sparseness", "random.sparseness"}
    assert result.report.is_file()
    maps = result.maps(["sample:rocket"])
    assert list(maps) == ["sample:rocket"] and maps["sample:rocket"]["vanilla"].shape == (32, 32)
    with pytest.raises(UserInputError, match="give save_dir"):
        explain_dataset(save_dir=None)


def test_saliency_of_your_own_network(workdir: Path) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                                    torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                                    torch.nn.Linear(4, 10))
    backbone = classifier_backbone(model, mean=(0.5,) * 3, std=(0.25,) * 3)
    pixels = torch.randint(0, 256, (3, 16, 16), generator=generator).float() / 255
    result = saliency(pixels, target=7, method="vanilla", backbone=backbone, image_size=16)
    expected = compute_saliency_maps(backbone.normalize(pixels[None]), torch.tensor([7]),
                                     backbone)[0]
    torch.testing.assert_close(result.map, expected)
    assert result.target_class == 7


def test_every_shipped_config_is_found_by_name_and_parsed_by_the_command_line(
        capsys) -> None:
    names = shipped_configs()
    assert len(names) >= 14 and "style_transfer" in names and "cs231n/the_scream" in names
    for name in names:
        subcommand = "predict" if "saliency" in name else "fit"
        with pytest.raises(SystemExit) as exited:
            cli.main([subcommand, "--config", name, "--print_config"])
        assert exited.value.code == 0, name
        printed = yaml.safe_load(capsys.readouterr().out)
        # Every option the config gives reaches an argument of its class, with its value.
        given = yaml.safe_load(shipped_config(name).read_text())
        for section in ("model", "data"):
            for key, value in (given[section].get("init_args") or {}).items():
                assert key in printed[section]["init_args"], (name, section, key)
    # YAML 1.1 reads 3e-2 as a string; jsonargparse, and so the command line, as a number.
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", "cs231n/the_scream", "--print_config"])
    preset = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert preset["content_weight"] == 0.03 and preset["tv_weight"] == 0.02


def test_fool_reaches_the_target_on_the_returned_8_bit_image(workdir: Path) -> None:
    result = fool("chelsea", "stingray", backbone=FOOLING_NET, weights="random",
                  image_size=32, steps=60)
    assert result.fooled and 0 < result.steps < 60  # the run stops once the image fools
    assert result.image.mode == "RGB" and result.image.size == (32, 32)
    seen = probabilities(FOOLING_NET, result.image)
    assert int(seen.argmax()) == result.predicted_class == result.target_class == 3
    assert result.predicted_name == result.target_name == "stingray"
    assert result.probability == pytest.approx(float(seen.max()), abs=1e-5)
    assert probabilities(FOOLING_NET, result.original).argmax() != 3  # it was not before
    assert result.linf > 0 and set(result.checks) == {"jpeg90", "jpeg75", "resize0.75", "blur1"}
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("call, message", [
    (lambda: stylize("chelsea", "coffee", tv_weigth=1.0),
     "stylize() has no option 'tv_weigth' (did you mean 'tv_weight'?); it takes the arguments "
     "of StyleTransfer and StyleTransferData and config, save_dir, seed, accelerator, "
     "precision, steps, max_steps."),
    (lambda: stylize("chelsea", "coffee", steps=0), "steps must be a positive number of "
                                                    "steps, got 0."),
    (lambda: saliency("coffee", images=["x.png"]),
     "saliency() takes its images as an argument, not as an option."),
    (lambda: fool("chelsea", 3, target=4), "fool() takes the class to reach as target_class, "
                                           "not target."),
    (lambda: stylize("no_such_photo.png", "coffee", **TINY_STYLE),
     "Image file not found: no_such_photo.png."),
    (lambda: saliency(42), "The image must be a path, a built-in sample name, a PIL image or "
                           "a tensor, got int."),
    (lambda: visualize_class("flamingo", config="fooling"),
     f"visualize_class() runs ClassVisualization, but {shipped_config('fooling')} runs "
     f"FoolingImage."),
    # Wrong types reach the command line's parser: its sentence, never a traceback.
    (lambda: stylize("chelsea", "coffee", image_size="x"),
     "--data.image_size: Expected a <class 'int'>. Got value: x"),
    (lambda: stylize("chelsea", "coffee", image_size=None),
     "--data.image_size needs a value; null (None) is not one."),
    (lambda: stylize("chelsea", "coffee", tv_weight="a"),
     "--model.tv_weight: Expected a <class 'float'>. Got value: a"),
    (lambda: stylize("chelsea", "coffee", tv_weight=None), "--model.tv_weight needs a value; "
                                                           "null (None) is not one."),
    (lambda: stylize("chelsea", "coffee", backbone=None),
     "--model.backbone needs a value; null (None) is not one."),
    (lambda: stylize("chelsea", "coffee", backbone=3), "--model.backbone: Expected a <class "
                                                       "'str'>"),
    (lambda: stylize("chelsea", "coffee", precision="bogus"),
     "--trainer.precision: Expected a <class 'int'>"),
    (lambda: stylize("chelsea", "coffee", config="no_such_config"),
     "Config no_such_config not found: give a YAML file or a shipped config's name (" +
     ", ".join(shipped_configs()) + ")."),
])
def test_bad_input_is_one_sentence(workdir: Path, call, message: str) -> None:
    with pytest.raises(UserInputError) as raised:
        call()
    assert str(raised.value) == message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__ or \
        raised.value.__context__ is None
    assert list(workdir.iterdir()) == []


def test_a_saved_run_that_fails_before_its_first_step_leaves_no_folder(workdir: Path) -> None:
    with pytest.raises(UserInputError, match="Image file not found"):
        stylize("no_such_photo.png", "coffee", save_dir="out", **TINY_STYLE)
    assert not (workdir / "out").exists()  # nor the folders the run made for itself


def test_saliency_name_stays_the_subpackage() -> None:
    import lightning_modules
    from lightning_modules import fool as exported_fool, stylize as exported_stylize

    assert exported_stylize is stylize and exported_fool is fool
    assert lightning_modules.saliency.__name__ == "lightning_modules.saliency"
    assert "saliency" not in lightning_modules.__all__


def docs_python_examples() -> list[str]:
    """The Python blocks of docs/python_api.md's "One call per technique" section, in order."""
    text = (ROOT / "docs" / "python_api.md").read_text()
    section = re.search(r"^## One call per technique\n(.*?)^## ", text, re.S | re.M)
    assert section, "docs/python_api.md has no One call per technique section"
    return re.findall(r"```python\n(.*?)```", section.group(1), re.S)


def assert_prints_as_commented(printed: str, block: str) -> None:
    """What a block printed is what its ``# prints ...`` comments say, line by line.

    Words and whole numbers must be equal; decimals, which the examples round to 2 places,
    may differ by 0.02 (another CPU's last bits).
    """
    promised = re.findall(r"#\s*prints (.*)$", block, re.M)
    lines = printed.splitlines()
    assert len(lines) == len(promised), f"printed {lines}, the comments say {promised}"
    for line, comment in zip(lines, promised):
        words, expected = line.split(), comment.split()
        assert len(words) == len(expected), f"printed {line!r}, the comment says {comment!r}"
        for word, want in zip(words, expected):
            if re.fullmatch(r"-?\d+\.\d+", want):
                assert abs(float(word) - float(want)) <= 0.02, f"printed {line!r}, not {comment!r}"
            else:
                assert word == want, f"printed {line!r}, the comment says {comment!r}"


def test_readme_from_python_examples_run_offline_as_written(workdir: Path) -> None:
    blocks = docs_python_examples()
    assert len(blocks) == 5
    assert all(len(block.strip().splitlines()) == 3 for block in blocks)  # three lines each
    # class picture, fooling, dataset
    assert sum(block.count("# prints ") for block in blocks) == 3
    namespace: dict = {}
    threads = torch.get_num_threads()
    # The comments give one thread's figures: float sums, and so a few dozen steps, depend on
    # the thread count (docs/python_api.md says so).
    torch.set_num_threads(1)
    try:
        for block in blocks:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(block, "docs/python_api.md", "exec"), namespace)
            assert_prints_as_commented(printed.getvalue(), block)
    finally:
        torch.set_num_threads(threads)
    picture, flamingo, explained, fooled, run = (
        namespace[name] for name in ("picture", "flamingo", "explained", "fooled", "run"))
    noise = namespace["visualize_class"]("flamingo", image_size=128, steps=1)  # where it starts
    assert picture.size == (192, 128)
    assert picture.info["losses"][-1]["style_loss"] < 0.5 * picture.info["losses"][0]["style_loss"]
    assert flamingo.info["class_name"] == "flamingo" and flamingo.info["probability"] > 0.5
    assert flamingo.info["probability"] > 10 * noise.info["probability"]
    assert explained.map.shape == (224, 224) and explained.predicted_name == "espresso"
    assert fooled.fooled and fooled.predicted_name == "stingray"
    assert run.run_directory.resolve() == workdir / "runs" / "saliency_dataset" / "version_0"
    # Only what the examples save themselves, and the dataset run's folder.
    assert sorted(path.name for path in workdir.iterdir()) == sorted(
        re.findall(r"save\(\"([^\"]+)\"\)", "".join(blocks)) + ["runs"])

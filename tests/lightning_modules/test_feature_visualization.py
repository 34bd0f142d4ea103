"""FeatureVisualization and DeepDream end to end through the command line, on the tiny CNN."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

import cli
from datamodules.images import image_to_tensor, load_image
from datamodules.objectives import ObjectiveListData
from lightning_modules.errors import UserInputError
from lightning_modules.feature_visualization import Channel, DeepDream, FeatureVisualization

REPO = Path(__file__).resolve().parents[2]
FEATURES = str(REPO / "configs" / "feature_visualization.yaml")
DREAM = str(REPO / "configs" / "deep_dream.yaml")
TINY = ["--model.backbone", "tiny", "--model.weights", "random"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch) -> None:
    """LightningCLI warns when pytest's own arguments are in sys.argv beside args=."""
    monkeypatch.setattr("sys.argv", ["cli.py"])


def features_cli(*extra: str) -> int:
    return cli.main(["fit", "--config", FEATURES, *TINY, *QUIET, "--model.image_size", "32",
                     "--trainer.max_steps", "4", "--model.transforms", "false", *extra])


def losses(run: Path, column: str) -> list[float]:
    with open(run / "losses.csv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle)]


def steps(run: Path) -> list[str]:
    with open(run / "losses.csv", newline="") as handle:
        return [row["step"] for row in csv.DictReader(handle)]


def pixels(path: Path) -> torch.Tensor:
    return image_to_tensor(load_image(path))


def test_cli_draws_one_picture_per_objective_and_raises_it(workdir) -> None:
    objectives = '["channel:features.2:5", "channel:2:5 - 0.5*layer:3 + 0.1*diversity:2"]'
    assert features_cli("--data.objectives", objectives, "--data.images_per_objective", "2") == 0
    run = workdir / "runs" / "feature_visualization" / "version_0"
    names = ["channel_features.2_5", "channel_2_5_minus_0.5x_layer_3_plus_0.1x_diversity_2"]
    for name in names:
        for copy in (name, f"{name}_2"):
            assert pixels(run / f"{copy}.png").shape == (3, 32, 32)
            assert (run / f"{copy}_sheet.png").is_file()
    # Two pictures of one objective start from different noise.
    assert not torch.equal(pixels(run / f"{names[0]}.png"), pixels(run / f"{names[0]}_2.png"))
    curve = losses(run, "objective_loss")
    assert curve[-1] < curve[0]  # minus the mean score: the objectives rose
    assert not (run / "classes_sheet.png").exists()  # the class report left the run alone


@pytest.mark.parametrize("objective, words", [
    ("channel:blocks.9:1", "Unknown objective layer 'blocks.9' for backbone 'tiny'"),
    ("channel:2:16", "Channel 16 of 'channel:2:16' is out of range"),
    ("channel:2:3-layer:1", "spaces around the sign"),
    ("direction:3:1,2,3", "has 3 values, but layer 3 (features.3) of backbone 'tiny' has 32"),
    ("direction:3:no_such_vector.npy", "Direction file not found: no_such_vector.npy"),
])
def test_cli_bad_objectives_exit_1_with_one_sentence(objective, words, workdir, capsys) -> None:
    assert features_cli("--data.objectives", f'["{objective}"]') == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and words in err and err.endswith("."), err
    assert not (workdir / "runs" / "feature_visualization" / "version_0").exists()


def test_module_from_python_takes_objective_objects() -> None:
    module = FeatureVisualization(backbone="tiny", weights="random", image_size=32)
    module.set_jobs([Channel(2, 5) + Channel(3, 1), "layer:3"])
    module.setup("fit")
    assert [job.name for job in module.jobs] == ["channel_2_5_plus_channel_3_1", "layer_3"]
    module.prepare_targets()
    terms = module.loss_terms(0, module.images[0])
    assert terms["objective"].shape == (2,)


def test_objective_list_data_refuses_bad_lists() -> None:
    with pytest.raises(UserInputError, match="empty"):
        ObjectiveListData([])
    with pytest.raises(UserInputError, match="images_per_objective"):
        ObjectiveListData(["layer:1"], images_per_objective=0)
    assert ObjectiveListData("layer:1", images_per_objective=2).jobs == ["layer:1", "layer:1"]


# ----------------------------------------------------------------- DeepDream
def dream_cli(photo: Path, *extra: str) -> int:
    return cli.main(["fit", "--config", DREAM, *TINY, *QUIET, "--data.content", str(photo),
                     "--data.image_size", "40", "--model.objective", "layer:2",
                     "--model.octaves", "3", "--trainer.max_steps", "6", *extra])


def test_deep_dream_from_its_config_changes_the_photo_over_octaves(workdir, content_image) -> None:
    assert dream_cli(content_image) == 0
    run = workdir / "runs" / "deep_dream" / "version_0"
    dream = pixels(run / "content.png")
    assert dream.shape == (3, 40, 48)  # the photo's size: shorter side 40, aspect kept
    photo = torch.nn.functional.interpolate(pixels(content_image)[None], size=(40, 48),
                                            mode="bilinear", antialias=True)[0]
    assert (dream - photo).abs().mean() > 0.01  # changed ...
    assert (dream - photo).abs().mean() < 0.3  # ... but still the photo
    # Octaves coarse to fine: 40 / 1.4^2 and 40 / 1.4 px, then the photo's size.
    sides = [min(pixels(run / "snapshots" / f"content_octave{k}.png").shape[1:]) for k in (1, 2)]
    assert sides == [20, 29]
    curve = losses(run, "objective_loss")
    assert curve[-1] < curve[-2] < curve[-3]  # the last octave's steps raise the layer's energy
    assert (run / "content_sheet.png").is_file()
    # The notebook's function makes the same picture from the same photo and seed.
    from datamodules.images import resize_shorter_side
    from lightning_modules.backbones import load_backbone
    from lightning_modules.feature_visualization import deep_dream

    read = image_to_tensor(resize_shorter_side(load_image(content_image), 40))
    plain = deep_dream(read, load_backbone("tiny", "random"), "layer:2", octaves=3,
                       steps_per_octave=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain.clamp(0, 1).mul(255).round().div(255), dream)


def test_deep_dream_refuses_too_many_octaves_and_no_photo(workdir, content_image, capsys) -> None:
    assert dream_cli(content_image, "--model.octaves", "9") == 1
    assert "octaves" in capsys.readouterr().err
    # Steps that do not split over the octaves: the messages name DeepDream's own options.
    assert dream_cli(content_image, "--model.octave_steps", "[1, 1]") == 1
    assert ("octave_steps [1, 1] must have one entry per octave (3) and sum to "
            "trainer.max_steps (6).") in capsys.readouterr().err
    assert dream_cli(content_image, "--trainer.max_steps", "2") == 1
    assert "3 octaves need at least 3 steps (trainer.max_steps is 2)." in capsys.readouterr().err
    with pytest.raises(UserInputError, match="octave_steps must be whole numbers of at least 1"):
        DeepDream(backbone="tiny", weights="random", octave_steps=[0, 2])
    with pytest.raises(UserInputError, match="octave_scale"):
        DeepDream(backbone="tiny", weights="random", octave_scale=1.0)
    with pytest.raises(UserInputError, match="Unknown objective kind"):
        DeepDream(backbone="tiny", weights="random", objective="lyr:2")


def test_deep_dream_resumed_at_a_later_octave_ends_as_the_uninterrupted_run(
        workdir, content_image, monkeypatch, capsys) -> None:
    from callbacks.checkpoint import AtomicCheckpointIO

    kept = workdir / "kept"
    kept.mkdir()
    save = AtomicCheckpointIO.save_checkpoint

    def save_and_keep(self, checkpoint, path, storage_options=None) -> None:
        save(self, checkpoint, path, storage_options)
        shutil.copy(path, kept / f"step{checkpoint['global_step']}.ckpt")

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save_and_keep)
    # Steps 2 + 2 + 2 over three octaves: after step 3 the run is in the middle of the second
    # octave, after step 4 at its end (the next step enters the third).
    assert dream_cli(content_image, "--checkpoint.every_n_train_steps", "1") == 0
    runs = workdir / "runs" / "deep_dream"
    first = runs / "version_0"
    for version, step in ((1, 3), (2, 4)):
        middle = kept / f"step{step}.ckpt"
        assert torch.load(middle, weights_only=False)["deep_dream_octave"] == 1
        assert dream_cli(content_image, "--ckpt_path", str(middle)) == 0
        resumed = runs / f"version_{version}"
        assert (resumed / "content.png").read_bytes() == (first / "content.png").read_bytes()
        assert [int(row) for row in steps(resumed)][-2:] == [5, 6]
    # Resumed mid-octave, the run ends the second octave at its size: its snapshot is the
    # uninterrupted run's. Resumed at its end, the coarse octaves' snapshots were the
    # interrupted run's.
    assert [p.name for p in (runs / "version_1" / "snapshots").glob("*")] == ["content_octave2.png"]
    assert ((runs / "version_1" / "snapshots" / "content_octave2.png").read_bytes()
            == (first / "snapshots" / "content_octave2.png").read_bytes())
    assert sorted(p.name for p in (runs / "version_2" / "snapshots").glob("*")) == []
    # A checkpoint at an octave this run does not have is refused in one sentence.
    other = torch.load(kept / "step3.ckpt", weights_only=False)
    other["deep_dream_octave"] = 3
    torch.save(other, kept / "other.ckpt")
    capsys.readouterr()
    assert dream_cli(content_image, "--ckpt_path", str(kept / "other.ckpt")) == 1
    assert "The checkpoint was made with other octaves" in capsys.readouterr().err


def test_cli_feature_visualization_with_maco_and_crops_raises_the_channel(workdir) -> None:
    # MACO's phase and crops serve feature objectives as they serve classes.
    assert features_cli("--data.objectives", '["channel:2:5"]', "--model.parameterization", "maco",
                        "--model.transforms", "crops", "--model.crops", "3", "--model.step",
                        "adam", "--model.lr", "0.25", "--trainer.max_steps", "24") == 0
    run = workdir / "runs" / "feature_visualization" / "version_0"
    assert pixels(run / "channel_2_5.png").shape == (3, 32, 32)
    curve = losses(run, "objective_loss")  # each step sees other crops: compare the ends' means
    assert sum(curve[-6:]) < sum(curve[:6])


# --------------------------------------------------------------------------- variants as objects
def test_short_names_and_class_paths_build_the_same_variants() -> None:
    from lightning_modules.image_optimization.maco import MacoImage
    from lightning_modules.image_optimization.parameterizations import (
        FourierImage,
        resolve_parameterization,
    )
    from lightning_modules.image_optimization.steps import AdamStep, resolve_step
    from lightning_modules.image_optimization.transforms import (
        LucentTransforms,
        NoTransforms,
        RandomCrops,
        resolve_transforms,
    )
    from lightning_modules.image_optimization.variants import describe_variant

    maco = resolve_parameterization("maco", contrast=2.0)
    assert isinstance(maco, MacoImage) and maco.contrast == 2.0
    assert isinstance(resolve_parameterization("FOURIER"), FourierImage)
    assert isinstance(resolve_transforms(True), LucentTransforms)
    assert isinstance(resolve_transforms("false"), NoTransforms)
    assert resolve_transforms("crops", crops=3, crop_noise=0.1) == RandomCrops(3, noise=0.1)
    assert isinstance(resolve_step("adam"), AdamStep)
    # A variant's description is plain data that names it as a config would.
    assert describe_variant(RandomCrops(3, 24)) == {
        "class_path": "lightning_modules.image_optimization.transforms.RandomCrops",
        "init_args": {"count": 3, "size": 24, "scale": [0.4, 1.0], "noise": 0.05}}


@pytest.mark.parametrize("options, words", [
    (dict(parameterization="pixel", contrast=2.0), "contrast does nothing"),
    (dict(parameterization="fourier", init_std=0.5), "init_std does nothing"),
    (dict(transforms="lucent", crops=3), "crops does nothing"),
    (dict(parameterization="fourier", blur_every=5), "blur_every is for the pixel"),
    (dict(parameterization="maco", clamp=1.5), "clamp is for the pixel"),
    (dict(parameterization="wavelet"), "Unknown parameterization 'wavelet'"),
    (dict(step="sgd"), "Unknown step 'sgd'"),
])
def test_an_option_that_would_do_nothing_is_refused(options: dict, words: str) -> None:
    with pytest.raises(UserInputError, match=words):
        FeatureVisualization(backbone="tiny", weights="random", **options)


def test_an_older_option_beside_a_variant_object_sets_it_where_the_object_has_it() -> None:
    from lightning_modules.image_optimization.maco import MacoImage
    from lightning_modules.image_optimization.parameterizations import FourierImage
    from lightning_modules.image_optimization.transforms import RandomCrops

    # As a config's object and a command line's --model.contrast / --model.crops meet.
    module = FeatureVisualization(backbone="tiny", weights="random",
                                  parameterization=MacoImage(contrast=2.0, amplitude=None),
                                  contrast=1.5, transforms=RandomCrops(3, noise=0.1), crops=5)
    assert module.parameterization.contrast == 1.5
    assert module.view == RandomCrops(5, noise=0.1)
    with pytest.raises(UserInputError, match="contrast does nothing with parameterization "
                                             "FourierImage"):
        FeatureVisualization(backbone="tiny", weights="random",
                             parameterization=FourierImage(), contrast=2.0)
    # A {class_path, init_args} mapping (a config read without the parser) is built.
    spec = {"class_path": "lightning_modules.image_optimization.maco.MacoImage",
            "init_args": {"contrast": 2.0}}
    built = FeatureVisualization(backbone="tiny", weights="random", parameterization=spec)
    assert isinstance(built.parameterization, MacoImage)
    with pytest.raises(UserInputError, match="not a parameterization"):
        FeatureVisualization(backbone="tiny", weights="random", parameterization={
            "class_path": "lightning_modules.image_optimization.transforms.RandomCrops"})


def test_deep_dream_takes_only_options_that_act(workdir, content_image, capsys) -> None:
    for option in ("judge", "parameterization", "transforms", "image_size"):
        with pytest.raises(TypeError, match=option):
            DeepDream(backbone="tiny", weights="random", **{option: None})
    # On the command line the parser refuses them: exit 2, one error line naming the option.
    assert cli.main(["fit", "--config", DREAM, *TINY, *QUIET, "--data.content",
                     str(content_image), "--model.judge", "efficientnet_lite2"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert errors and "judge" in " ".join(errors)


def test_cli_takes_variants_by_class_path_with_their_own_options(workdir) -> None:
    maco = ('{"class_path": "lightning_modules.image_optimization.maco.MacoImage", '
            '"init_args": {"contrast": 2.0}}')
    crops = ('{"class_path": "lightning_modules.image_optimization.transforms.RandomCrops", '
             '"init_args": {"count": 3}}')
    adam = '{"class_path": "lightning_modules.image_optimization.steps.AdamStep"}'
    objective = ["--data.objectives", '["channel:2:5"]', "--model.lr", "0.25"]
    assert features_cli(*objective, "--model.parameterization", maco, "--model.transforms",
                        crops, "--model.step", adam) == 0
    assert features_cli(*objective, "--model.parameterization", "maco", "--model.contrast",
                        "2.0", "--model.transforms", "crops", "--model.crops", "3",
                        "--model.step", "adam") == 0
    runs = workdir / "runs" / "feature_visualization"
    by_class_path, by_name = (runs / f"version_{n}" / "channel_2_5.png" for n in (0, 1))
    assert by_class_path.read_bytes() == by_name.read_bytes()
    # The checkpoint's hyperparameters are plain data (a resume reads it with weights_only).
    checkpoint = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt",
                            weights_only=True)
    assert checkpoint["hyper_parameters"]["transforms"]["init_args"]["count"] == 3


# --------------------------------------------------------------------------- reports it brings
def test_reports_come_from_the_technique_in_runs_that_save_pictures(tmp_path: Path) -> None:
    import pytorch_lightning as pl

    from callbacks import AtlasSheet, ClassReport, ImageWriter
    from datamodules.objectives import ChannelAtlasData
    from lightning_modules import ClassVisualization

    def fit(module, data, callbacks):
        trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=str(tmp_path), callbacks=callbacks)
        trainer.fit(module, data)
        return [type(callback) for callback in trainer.callbacks]

    options = dict(backbone="tiny", weights="random", image_size=16)
    kinds = fit(FeatureVisualization(**options), ChannelAtlasData(layers=2, channels=[0, 1]),
                [ImageWriter()])
    assert AtlasSheet in kinds and ClassReport not in kinds
    assert (tmp_path / "atlas_sheet.png").is_file()
    kinds = fit(FeatureVisualization(**options), ObjectiveListData(["channel:2:5"]),
                [ImageWriter()])
    assert AtlasSheet not in kinds  # no atlas in the data: no atlas sheet
    from datamodules.classes import ClassListData

    kinds = fit(ClassVisualization(**options), ClassListData([1]), [ImageWriter()])
    assert ClassReport in kinds and (tmp_path / "classes_sheet.png").is_file()
    # A run that saves no pictures (Python without a run folder) gets no report, and no error.
    (tmp_path / "classes_sheet.png").unlink()
    kinds = fit(ClassVisualization(**options), ClassListData([1]), [])
    assert ClassReport not in kinds and not (tmp_path / "classes_sheet.png").exists()

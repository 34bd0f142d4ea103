"""Tests for lightning_modules.fooling: the seed's step, PGD, the FoolingImage module and its CLI.

Most tests use a tiny random CNN with eight class names at 32 px; the acceptance test at the end
uses the real offline EfficientNet-Lite0 at 224 px.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

import cli
from conftest import two_layer_backbone
from datamodules.images import image_to_tensor, load_image
from datamodules.labeled_images import LabeledImageData
from lightning_modules.backbones import Backbone, load_backbone, register_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.fooling.functional import Ensemble
from lightning_modules.fooling.robustness import diverse_input, fools, robustness
from lightning_modules.fooling.steps import CarliniWagnerStep, ProjectedStep
from callbacks import FoolingReport, ImageWriter
from callbacks.fooling_report import RESULTS_FILE
from lightning_modules.fooling import (
    ATTACKS,
    PGD,
    Attack,
    CarliniWagner,
    FoolingAttack,
    FoolingImage,
    FoolingProgress,
    SeedAttack,
    make_fooling_image,
    pgd_attack,
    project,
    quantize_pixels,
    resolve_attack,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "fooling.yaml")
TINY = "tiny_fooling"
# The built-in samples' classes come first, so LabeledImageData's labels resolve.
CATEGORIES = ["Egyptian cat", "espresso", "missile", "stingray", "flamingo", "balloon",
              "Granny Smith", "snail"]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def tiny_fooling_backbone(weights: str = "random") -> Backbone:
    """A small CNN that a few steps fool towards any of its eight classes.

    conftest's tiny backbone averages its features globally, which leaves most of its 1000
    classes out of reach; this one keeps a 4x4 grid of features and names eight classes.
    """
    return two_layer_backbone(TINY, 8, 4, CATEGORIES, MEAN, STD)


register_backbone(TINY, tiny_fooling_backbone, "test: tiny random CNN")
OTHER = "tiny_fooling_other"  # the same classes, other weights: a held-out judge
register_backbone(OTHER, lambda weights="random": two_layer_backbone(OTHER, 12, 4, CATEGORIES,
                                                                     MEAN, STD),
                  "test: another tiny random CNN")


@pytest.fixture(scope="module")
def model() -> Backbone:
    return tiny_fooling_backbone()


def _pixels(count: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(count, 3, size, size, generator=generator)
    pixels[:, :, :2] = 0.0  # pixels at the ends of the range exercise the [0, 1] clamp
    pixels[:, :, -2:] = 1.0
    return pixels


def _predicted(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(inputs).argmax(dim=1)


def _not_predicted(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A target per image that the model does not predict now."""
    return (_predicted(model, inputs) + 1) % len(CATEGORIES)


# --------------------------------------------------------------------------- the seed's step
def test_seed_step_is_lr_times_gradient_over_its_norm(model: Backbone) -> None:
    inputs = model.normalize(_pixels())
    targets = _not_predicted(model, inputs)
    lr = 0.7
    moved = FoolingAttack("seed", lr=lr).update(inputs, inputs, targets, model)
    for row in range(len(inputs)):
        image = inputs[row : row + 1].clone().requires_grad_(True)
        model(image)[0, targets[row]].backward()
        gradient = image.grad[0]
        expected = inputs[row] + lr * gradient / gradient.norm()
        torch.testing.assert_close(moved[row], expected, rtol=1e-5, atol=1e-6)
    # Norms are per image: every image moved by exactly lr.
    torch.testing.assert_close((moved - inputs).flatten(1).norm(dim=1),
                               torch.full((len(inputs),), lr), rtol=1e-5, atol=1e-6)


def test_make_fooling_image_matches_the_homework_loop(model: Backbone) -> None:
    inputs = model.normalize(_pixels(1, seed=3))
    target = int(_not_predicted(model, inputs)[0])
    # The homework's loop, verbatim in spirit: one image, raw score, lr * g / ||g||.
    X_fooling = inputs.clone().requires_grad_(True)
    for _ in range(100):
        scores = model(X_fooling)
        if scores.argmax(dim=1).item() == target:
            break
        scores[0, target].backward()
        with torch.no_grad():
            X_fooling += 1.0 * X_fooling.grad / X_fooling.grad.norm()
        X_fooling.grad.zero_()
    fooled = make_fooling_image(inputs, target, model)
    torch.testing.assert_close(fooled, X_fooling.detach(), rtol=1e-4, atol=1e-5)
    assert _predicted(model, fooled).item() == target


def test_seed_with_pixel_range_stays_valid_and_fools_in_8_bit(model: Backbone) -> None:
    pixels = _pixels(3)
    inputs = model.normalize(pixels)
    targets = _not_predicted(model, inputs)
    fooled = make_fooling_image(inputs, targets, model, lr=1.0, mean=MEAN, std=STD)
    fooled_pixels = model.denormalize(fooled)
    assert fooled_pixels.min() >= -1e-6 and fooled_pixels.max() <= 1 + 1e-6
    saved = quantize_pixels(fooled_pixels)
    assert torch.equal(_predicted(model, model.normalize(saved)), targets)


# --------------------------------------------------------------------------- PGD
@pytest.mark.parametrize("norm, eps", [("linf", 0.03), ("l2", 0.5)])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_keeps_the_change_in_budget_and_pixels_in_range(
    model: Backbone, norm: str, eps: float, loss: str
) -> None:
    pixels = _pixels(4)
    inputs = model.normalize(pixels)
    targets = _not_predicted(model, inputs)
    attack = FoolingAttack("pgd", norm=norm, eps=eps, step_size=eps, loss=loss, mean=MEAN,
                           std=STD)
    images, origin = inputs, inputs.clone()
    progress = FoolingProgress.start(len(inputs))
    for _ in range(8):
        images = attack.advance(images, origin, targets, model, progress)
        delta = model.denormalize(images) - pixels
        sizes = delta.abs().flatten(1).amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert (sizes <= eps + 1e-5).all()
        assert model.denormalize(images).min() >= -1e-6
        assert model.denormalize(images).max() <= 1 + 1e-6
    assert progress.steps.max() > 1  # the images moved, and the budget held anyway
    assert sizes.max() > 0.5 * eps


def test_project_shrinks_only_what_is_outside_the_ball() -> None:
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, 0, 0, 0] = 3.0  # outside an L2 ball of radius 1
    delta[1, 0, 0, 0] = 0.5  # inside
    projected = project(delta, 1.0, "l2")
    assert projected[0].norm() == pytest.approx(1.0)
    assert torch.equal(projected[1], delta[1])
    assert project(delta, 0.2, "linf").abs().max() == pytest.approx(0.2)


def test_pgd_function_fools_in_8_bit(model: Backbone) -> None:
    pixels = _pixels(3)
    inputs = model.normalize(pixels)
    targets = _not_predicted(model, inputs)
    fooled = pgd_attack(inputs, targets, model, mean=MEAN, std=STD, eps=0.1, step_size=0.01)
    saved = quantize_pixels(model.denormalize(fooled))
    assert torch.equal(_predicted(model, model.normalize(saved)), targets)
    assert (saved - pixels).abs().max() <= 0.1 + 1e-6


# --------------------------------------------------------------------------- masking
def test_fooled_images_stop_changing(model: Backbone) -> None:
    inputs = model.normalize(quantize_pixels(_pixels(2)))
    predicted = _predicted(model, inputs)
    # Image 0's target is what it already shows: fooled at the first check.
    targets = torch.stack([predicted[0], (predicted[1] + 1) % len(CATEGORIES)])
    attack = FoolingAttack("seed", mean=MEAN, std=STD, quantize=True)
    progress = FoolingProgress.start(2)
    following = attack.advance(inputs, inputs, targets, model, progress)
    assert progress.fooled.tolist() == [True, False]
    assert progress.steps.tolist() == [0, 1]
    assert torch.equal(following[0], inputs[0])
    assert not torch.equal(following[1], inputs[1])
    again = attack.advance(following, inputs, targets, model, progress)
    assert torch.equal(again[0], inputs[0])


# --------------------------------------------------------------------------- the module
class ImageRecorder(pl.Callback):
    """Keeps every step's images and fooled flags."""

    def __init__(self) -> None:
        self.images: list[torch.Tensor] = []
        self.fooled: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.images.append(pl_module.images[0].detach().clone())
        self.fooled.append(pl_module.progress.fooled.clone())


def _fit(directory: Path, max_steps: int = 60, **model_args: Any) -> tuple[FoolingImage, pl.Trainer,
                                                                          ImageRecorder]:
    module = FoolingImage(**{"backbone": TINY, "weights": "random", **model_args})
    recorder = ImageRecorder()
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=directory,
                         callbacks=[ImageWriter(), FoolingReport(), recorder])
    trainer.fit(module, datamodule=LabeledImageData(image_size=32))
    return module, trainer, recorder


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[FoolingImage, pl.Trainer,
                                                                ImageRecorder, Path]:
    directory = tmp_path_factory.mktemp("seed_run")
    module, trainer, recorder = _fit(directory, target=["stingray", "flamingo"], all_pairs=True)
    return module, trainer, recorder, directory


def test_module_stops_early_when_all_are_fooled(seed_run: Any) -> None:
    module, trainer, recorder, _ = seed_run
    assert len(module.jobs) == 6
    assert module.progress.fooled.all()
    # The last step only found the last image fooled; then the run stopped, long before 60.
    assert trainer.global_step == int(module.progress.steps.max()) + 1 < 60
    assert len(recorder.images) == trainer.global_step


def test_module_leaves_fooled_images_alone(seed_run: Any) -> None:
    module, _, recorder, _ = seed_run
    steps = module.progress.steps
    assert steps.min() < steps.max()  # some were fooled while others went on
    for job in range(len(module.jobs)):
        fooled_at = int(steps[job])  # the step whose check found it fooled
        assert recorder.fooled[fooled_at][job]
        if fooled_at > 0:
            assert not recorder.fooled[fooled_at - 1][job]
            assert torch.equal(recorder.images[fooled_at - 1][job], recorder.images[fooled_at][job])
        for later in recorder.images[fooled_at:]:
            assert torch.equal(later[job], recorder.images[fooled_at][job])


def test_saved_pngs_read_back_are_classified_as_the_targets(seed_run: Any) -> None:
    module, _, _, directory = seed_run
    with open(directory / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == [job.name for job in module.jobs]
    backbone = tiny_fooling_backbone()
    for row, job in zip(rows, module.jobs):
        saved = image_to_tensor(load_image(directory / f"{job.name}.png"))
        assert saved.shape == (3, 32, 32)
        with torch.no_grad():
            probabilities = backbone(backbone.normalize(saved[None])).softmax(dim=1)[0]
        assert int(probabilities.argmax()) == job.target_class
        assert row["success"] == "True"
        assert row["target_class"] == CATEGORIES[job.target_class]
        assert float(row["p_target"]) == pytest.approx(float(probabilities[job.target_class]),
                                                       abs=1e-5)
        delta = saved - job.pixels
        assert float(row["linf"]) == pytest.approx(float(delta.abs().max()), abs=1e-5)
        assert float(row["l2"]) == pytest.approx(float(delta.norm()), rel=1e-4)
        assert 0 < float(row["ssim"]) <= 1 and float(row["psnr"]) > 20


def test_module_pgd_stays_in_budget(tmp_path: Path) -> None:
    module, _, _ = _fit(tmp_path, max_steps=40, target="flamingo", method="pgd", eps=0.1,
                        step_size=0.02)
    with open(tmp_path / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and all(row["success"] == "True" for row in rows)
    assert max(float(row["linf"]) for row in rows) <= 0.1 + 1e-6


def test_sheet_shows_original_fooled_and_difference(seed_run: Any) -> None:
    module, _, _, _ = seed_run
    panels = module.sheet_panels(0)
    job = module.jobs[0]
    assert [title.split(" p=")[0] for title, _ in panels[:2]] == [
        CATEGORIES[int(_predicted(module.backbone, module.backbone.normalize(job.pixels[None])))],
        CATEGORIES[job.target_class]]
    expected = ((panels[1][1] - job.pixels) * 10 + 0.5).clamp(0, 1)
    assert torch.equal(panels[2][1], expected)


def test_all_pairs_skips_the_true_class_and_lists_must_fit(tmp_path: Path) -> None:
    module = FoolingImage(backbone=TINY, target=["Egyptian cat", "stingray"], all_pairs=True)
    data = LabeledImageData(image_size=32)
    data.setup("fit")
    with pytest.warns(UserWarning, match="true class"):
        jobs = module.make_jobs(data.items)
    assert [job.name for job in jobs] == ["chelsea_to_stingray", "coffee_to_egyptian_cat",
                                         "coffee_to_stingray", "rocket_to_egyptian_cat",
                                         "rocket_to_stingray"]
    per_image = FoolingImage(backbone=TINY, target=[3, 4, 5]).make_jobs(data.items)
    assert [job.target_class for job in per_image] == [3, 4, 5]
    with pytest.raises(UserInputError, match="2 classes for 3 images"):
        FoolingImage(backbone=TINY, target=[3, 4]).make_jobs(data.items)


@pytest.mark.parametrize("arguments, message", [
    ({"eps": 0.0}, "eps must be positive"),
    ({"eps": -0.1, "method": "pgd"}, "eps must be positive"),
    ({"step_size": 0.0}, "step_size must be positive"),
    ({"target": "unicorn"}, "Unknown class name 'unicorn'"),
    ({"target": 8}, "Class index 8 is out of range"),
])
def test_bad_arguments_raise_one_sentence(arguments: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as caught:
        FoolingImage(backbone=TINY, **arguments)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------- attacks as objects
def test_shorthands_and_flat_options_build_the_same_attacks_as_the_objects() -> None:
    assert set(ATTACKS) == {"seed", "pgd", "cw"}
    assert all(issubclass(cls, Attack) for cls in ATTACKS.values())
    assert repr(resolve_attack("pgd", eps=0.1, norm="l2", momentum=1.0)) == repr(
        PGD(eps=0.1, norm="l2", momentum=1.0))
    assert repr(resolve_attack("cw", c=5.0, cw_lr=0.05)) == repr(CarliniWagner(c=5.0, lr=0.05))
    # A config's object with the old flat option beside it (--model.lr 4): the object's own.
    assert resolve_attack(SeedAttack(2.0), lr=4.0).lr == 4.0
    pgd = PGD(eps=0.1)
    assert resolve_attack(pgd) is pgd and pgd.step == 0.1 / 4
    assert resolve_attack(pgd, eps=0.2).step == 0.2 / 4  # step_size still follows eps
    assert repr(resolve_attack(PGD(eps=0.1).as_config())) == repr(PGD(eps=0.1))
    # Another attack's default does nothing: older configs and checkpoints list every option.
    assert isinstance(resolve_attack("seed", eps=2 / 255, momentum=0.0, c=1.0), SeedAttack)


@pytest.mark.parametrize("method, flat, message", [
    ("seed", {"eps": 0.03}, "eps is an option of PGD (method: pgd), not of the seed's step "
                            "(method: seed): choose method pgd, or leave eps out."),
    ("pgd", {"kappa": 2.0}, "kappa is an option of Carlini-Wagner (method: cw), not of PGD"),
    (CarliniWagner(), {"lr": 0.5}, "choose method seed, or give Carlini-Wagner's own cw_lr."),
    ("seed", {"eps": 0.0}, "eps must be positive"),  # the value is wrong wherever it goes
    ("fgsm", {}, "Unknown method 'fgsm'; choose 'seed', 'pgd' or 'cw'."),
    ({"class_path": "torch.nn.Linear"}, {}, "names no attack"),
])
def test_an_option_the_attack_lacks_is_refused_in_one_sentence(method: Any, flat: dict,
                                                                message: str) -> None:
    with pytest.raises(UserInputError) as caught:
        resolve_attack(method, **flat)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_attack_object_runs_as_its_shorthand_and_leaves_plain_hyperparameters(
        tmp_path: Path) -> None:
    """PGD(...) and method="pgd" with flat options give the same pictures; the checkpoint's
    hyperparameters name the attack as a config does (checkpoints are read with weights_only)."""
    by_name, _, _ = _fit(tmp_path / "by_name", max_steps=6, target="flamingo", method="pgd",
                         eps=0.1, step_size=0.02)
    as_object, _, _ = _fit(tmp_path / "object", max_steps=6, target="flamingo",
                           method=PGD(eps=0.1, step_size=0.02))
    assert torch.equal(by_name.images[0], as_object.images[0])
    assert ((tmp_path / "by_name" / RESULTS_FILE).read_text()
            == (tmp_path / "object" / RESULTS_FILE).read_text())
    assert as_object.hparams["method"] == {
        "class_path": "lightning_modules.fooling.attacks.pgd.PGD",
        "init_args": {"eps": 0.1, "step_size": 0.02, "norm": "linf", "loss": "ce",
                      "momentum": 0.0}}
    rebuilt = FoolingImage(**as_object.hparams)  # as load_from_checkpoint builds it
    assert repr(rebuilt.attack.method) == repr(as_object.attack.method)


def test_cli_runs_an_attack_named_by_class_path_and_refuses_a_foreign_flat_option(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A config's ``method: {class_path: ..., init_args: ...}``, with one of its options set
    from the command line, gives the shorthand run's results; a flat option of another attack
    beside it is refused in one line."""
    config = tmp_path / "pgd.yaml"
    config.write_text("model:\n  init_args:\n    method:\n"
                      "      class_path: lightning_modules.fooling.PGD\n"
                      "      init_args: {eps: 0.1, step_size: 0.05}\n")
    common = ["fit", "--config", CONFIG, "--model.backbone", "tiny", "--model.weights",
              "random", "--model.target", "[23, 10]", "--model.checks", "[jpeg75]",
              "--data.image_size", "32", "--trainer.max_steps", "8",
              "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
              "false"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert cli.main([*common, "--config", str(config), "--model.method.step_size", "0.02"]) == 0
    assert cli.main([*common, "--model.method", "pgd", "--model.eps", "0.1",
                     "--model.step_size", "0.02"]) == 0
    object_run, shorthand_run = sorted((tmp_path / "runs" / "fooling").glob("version_*"))
    assert "class_path: lightning_modules.fooling.PGD" in (object_run / "config.yaml").read_text()
    results = (object_run / RESULTS_FILE).read_text()
    assert results == (shorthand_run / RESULTS_FILE).read_text()
    # The budget holds before the 8-bit rounding, which may add half a level.
    assert max(float(row["linf"]) for row in csv.DictReader(results.splitlines())) <= (
        0.1 + 0.5 / 255 + 1e-6)
    capsys.readouterr()
    assert cli.main([*common, "--config", str(config), "--model.c", "5"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: c is an option of Carlini-Wagner (method: cw), not of PGD (method: PGD): "
        "choose method cw, or leave c out."], err[-3000:]
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the CLI
def _cli(*extra: str) -> int:
    return cli.main(["fit", "--config", CONFIG, "--model.backbone", TINY, "--model.weights",
                     "random", "--data.image_size", "32", "--trainer.max_steps", "40",
                     "--trainer.enable_progress_bar", "false", *extra])


def test_cli_end_to_end_writes_a_fresh_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # pytest's own arguments are not the CLI's
    assert _cli("--model.target", "[stingray, flamingo]") == 0
    run = tmp_path / "runs" / "fooling" / "version_0"
    with open(run / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and all(row["success"] == "True" for row in rows)
    for row in rows:
        assert (run / f"{row['name']}.png").is_file()
        assert (run / f"{row['name']}_sheet.png").is_file()
    assert (run / "loss_curve.png").is_file() and (run / "metrics.csv").is_file()
    with open(run / "metrics.csv", newline="") as handle:
        logged = list(csv.DictReader(handle))
    assert any(line.get("success_rate") == "1.0" for line in logged)
    assert any(line.get("chelsea_to_stingray/l2") for line in logged)
    # A second run never touches the first.
    assert _cli("--model.target", "stingray", "--model.all_pairs", "false",
                "--model.method", "pgd", "--model.eps", "0.1") == 0
    assert (tmp_path / "runs" / "fooling" / "version_1" / RESULTS_FILE).is_file()
    assert len(list(run.glob("*_sheet.png"))) == 6


def test_cli_confidence_checks_and_judges_in_the_report(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert _cli("--model.target", "[stingray, flamingo]", "--model.confidence", "0.3",
                "--model.judges", f"[{TINY}, {OTHER}]", "--trainer.max_steps", "60") == 0
    run = tmp_path / "runs" / "fooling" / "version_0"
    with open(run / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    checks = ["success_jpeg90", "success_jpeg75", "success_resize0.75", "success_blur1"]
    assert list(rows[0])[-6:] == [*checks, f"success_on_{TINY}_not_held_out",
                                  f"success_on_{OTHER}"]
    assert any(row["success"] == "True" for row in rows)
    for row in rows:
        # Fooled means p(target) >= 0.3 on the PNG read back; the attacked net judges the same.
        assert (row["success"] == "True") == (float(row["p_target"]) >= 0.3
                                              and row["predicted_class"] == row["target_class"])
        assert row[f"success_on_{TINY}_not_held_out"] == row["success"]
        assert all(row[column] in ("True", "False") for column in checks)
    from PIL import Image
    # original | fooled | difference, 4 checks, 2 judges
    assert Image.open(run / f"{rows[0]['name']}_sheet.png").width > 9 * 32


def test_cli_robust_attack_survives_the_checks_it_trains_against(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With robust_to, an image counts as fooled only once JPEG 75 and a 0.75 resize of its
    PNG fool too: the report, reading the PNG back and applying them, agrees."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert _cli("--model.target", "[stingray, flamingo]", "--model.method", "pgd",
                "--model.eps", "0.2", "--model.step_size", "0.02",
                "--model.robust_to", "[jpeg75, resize0.75-1.25, shift2]",
                "--model.eot_samples", "2", "--trainer.max_steps", "60") == 0
    with open(tmp_path / "runs" / "fooling" / "version_0" / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(row["success"] == "True" for row in rows) >= 4
    for row in rows:
        if row["success"] == "True":
            assert row["success_jpeg75"] == "True" and row["success_resize0.75"] == "True", row


def test_cli_ensemble_momentum_and_diversity_run_and_mark_what_was_attacked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert _cli("--model.target", "[stingray, flamingo]", "--model.method", "pgd",
                "--model.eps", "0.2", "--model.step_size", "0.02", "--model.ensemble",
                f"[{OTHER}]", "--model.momentum", "1.0", "--model.diversity", "0.5",
                "--model.judges", f"[{OTHER}]", "--model.checks", "[]",
                "--trainer.max_steps", "60") == 0
    with open(tmp_path / "runs" / "fooling" / "version_0" / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[-1] == f"success_on_{OTHER}_not_held_out"
    assert sum(row["success"] == "True" for row in rows) >= 3


def test_ensemble_is_the_mean_of_its_networks_logits_on_the_same_pixels(model) -> None:
    other = load_backbone(OTHER, "random")
    pixels = torch.rand(2, 3, 16, 16)
    inputs = model.normalize(pixels)
    expected = (model(inputs) + other(other.normalize(pixels))) / 2
    torch.testing.assert_close(Ensemble(model, [other])(inputs), expected)
    with pytest.raises(UserInputError, match="same classes"):
        Ensemble(model, [load_backbone("tiny", "random")])


def test_momentum_keeps_the_direction_of_earlier_steps() -> None:
    """MI-FGSM: after a step up everywhere, a gradient that points down on half the pixels
    (weakly) moves them up still with momentum 1, and down without."""
    def two_steps(momentum: float) -> torch.Tensor:
        image = torch.full((1, 1, 2, 2), 0.5, requires_grad=True)
        step = ProjectedStep([image], eps=1.0, step_size=0.01, norm="linf", mean=(0.0,),
                             std=(1.0,), momentum=momentum)
        for ascent in ([1.0, 1.0, 1.0, 1.0], [-0.5, -0.5, 1.5, 1.5]):
            image.grad = -torch.tensor(ascent).view(1, 1, 2, 2)  # the loss descends
            step.step()
        return image.detach().flatten() - 0.5
    torch.testing.assert_close(two_steps(1.0), torch.full((4,), 0.02))
    torch.testing.assert_close(two_steps(0.0), torch.tensor([0.0, 0.0, 0.02, 0.02]))


def test_carlini_wagner_step_settles_where_the_l2_pull_balances_the_loss() -> None:
    """With a constant loss gradient g on the pixels, Adam on w settles where
    g + 2 (x - x0) = 0, i.e. x = x0 - g / 2, and x never leaves (0, 1)."""
    image = torch.tensor([[[[0.5, 0.9]]]], requires_grad=True)
    step = CarliniWagnerStep([image], lr=0.01, mean=(0.0,), std=(1.0,))
    for _ in range(1500):
        image.grad = torch.tensor([[[[0.2, -1.0]]]])
        step.step()
    settled = image.detach().flatten()
    assert abs(float(settled[0]) - 0.4) < 2e-3
    assert 0.99 < float(settled[1]) < 1.0  # pushed up past 1 - 0.5 would be: tanh keeps it in


def test_carlini_wagner_returns_each_images_smallest_fooling_change(model: Backbone) -> None:
    pixels = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    attack = FoolingAttack("cw", mean=model.mean, std=model.std, quantize=True, c=5.0,
                           cw_lr=0.05)
    target = torch.tensor([3, 4, 5, 6])
    images, progress = attack.run(model.normalize(pixels), target, model, max_iter=40)
    found = torch.isfinite(progress.best_l2)
    assert found.sum() >= 3 and bool(progress.fooled.eq(found).all())
    saved = quantize_pixels(model.denormalize(images))
    assert bool((model(model.normalize(saved)).argmax(dim=1) == target)[found].all())
    l2 = (saved - pixels).flatten(1).norm(dim=1)
    torch.testing.assert_close(l2[found], progress.best_l2[found])
    assert progress.steps.eq(40).all()  # it goes on after the first success


def test_cli_carlini_wagner_fools_with_a_small_change(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert _cli("--model.target", "[stingray, flamingo]", "--model.method", "cw",
                "--model.c", "10", "--model.cw_lr", "0.05", "--model.checks", "[]",
                "--trainer.max_steps", "60") == 0
    with open(tmp_path / "runs" / "fooling" / "version_0" / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    fooled = [row for row in rows if row["success"] == "True"]
    assert len(fooled) >= 4
    assert all(float(row["linf"]) < 0.5 for row in fooled)


def test_input_diversity_resizes_and_pads_or_leaves_alone() -> None:
    pixels = torch.rand(2, 3, 20, 20) + 1  # no zeros: the padding shows
    generator = torch.Generator().manual_seed(0)
    assert diverse_input(pixels, 0.0, generator) is pixels
    diverse = diverse_input(pixels, 1.0, generator)
    assert diverse.shape == (2, 3, 22, 22)
    inside = (diverse != 0).all(dim=1)[0]
    assert 20 * 20 <= int(inside.sum()) <= 22 * 22 and not bool(inside.all())


def high_frequency_classifier(pixels: torch.Tensor) -> torch.Tensor:
    """Class 1 for pictures with fine detail (a checkerboard), class 0 for smooth ones."""
    blurred = nn.functional.avg_pool2d(pixels, 3, 1, 1, count_include_pad=False)
    detail = (pixels - blurred).abs().mean(dim=(1, 2, 3))
    logit = (detail - 0.05) * 100
    return torch.stack([-logit, logit], dim=1).softmax(dim=1)


def test_robustness_checks_on_pictures_whose_answers_are_known() -> None:
    """A grey checkerboard keeps its detail through JPEG but not through a resize or a blur;
    a checkerboard of colours alone (equal brightness) loses it to JPEG's chroma subsampling."""
    ys, xs = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    odd = ((ys + xs) % 2).bool()
    grey = torch.where(odd, torch.tensor(0.7), torch.tensor(0.3)).expand(3, 32, 32)
    colours = torch.where(odd, torch.tensor([0.7, 0.4, 0.5])[:, None, None],
                          torch.tensor([0.3, 0.6037, 0.5])[:, None, None])
    saved = torch.stack([grey, colours])
    target = torch.tensor([1, 1])
    assert fools(high_frequency_classifier(saved), target, 0.0).tolist() == [True, True]
    after = robustness(saved, target, high_frequency_classifier)
    assert {name: passed.tolist() for name, passed in after.items()} == {
        "jpeg90": [True, False], "jpeg75": [True, False],
        "resize0.75": [False, False], "blur1": [False, False]}
    # A confidence the detector does not reach counts as not fooled.
    assert fools(torch.tensor([[0.4, 0.6]]), torch.tensor([1]), 0.7).tolist() == [False]
    with pytest.raises(UserInputError, match="Unknown or out-of-range transformation 'sharpen'"):
        robustness(saved, target, high_frequency_classifier, checks=["sharpen"])
    with pytest.raises(UserInputError, match="'shift4' is random"):
        robustness(saved, target, high_frequency_classifier, checks=["shift4"])
    # Any quality, scale or blur is a check: JPEG 50 keeps the grey board, kills the colours.
    assert robustness(saved, target, high_frequency_classifier, checks=["jpeg50"])[
        "jpeg50"].tolist() == [True, False]


@pytest.mark.parametrize("extra, message", [
    (["--model.eps", "0"], "eps must be positive"),
    (["--model.method", "pgd", "--model.eps", "-0.01"], "eps must be positive"),
    (["--model.target", "unicorn"], "Unknown class name 'unicorn'"),
    (["--model.confidence", "1"], "confidence is the p(target) to reach"),
    (["--model.method", "pgd", "--model.eps", "2"], "an L∞ budget above 1"),
    (["--model.checks", "[sharpen]"], "Unknown or out-of-range transformation 'sharpen'"),
    (["--model.checks", "[shift4]"], "'shift4' is random"),
    (["--model.judges", "[alexnet9]"], "Unknown judge backbone 'alexnet9'"),
    (["--model.robust_to", "[jpeg200]"], "Unknown or out-of-range transformation 'jpeg200'"),
    (["--model.robust_to", "[sharpen]"], "Unknown or out-of-range transformation 'sharpen'"),
    (["--model.eot_samples", "0"], "eot_samples must be a whole number"),
    (["--model.momentum", "1"], "momentum is an option of PGD (method: pgd), not of the seed's"),
    (["--model.eps", "0.03"], "eps is an option of PGD (method: pgd), not of the seed's step"),
    (["--model.method", "cw", "--model.lr", "0.5"], "give Carlini-Wagner's own cw_lr"),
    (["--model.method", "bogus"], "Unknown method 'bogus'; choose 'seed', 'pgd' or 'cw'."),
    (["--model.diversity", "2"], "diversity is a probability"),
    (["--model.method", "cw", "--model.c", "0"], "c must be in (0, 1e6]"),
    (["--model.ensemble", "[tiny]"], "An ensemble needs networks with the same classes"),
    (["--model.judges", "[tiny]"], "judge 'tiny' has other classes"),
    (["--model.target", "42"], "Class index 42 is out of range"),
    (["--model.target", "Egyptian cat", "--model.all_pairs", "false"],
     "is the true class of image 'chelsea'"),
])
def test_cli_bad_input_exits_1_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    extra: list[str], message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert _cli(*extra) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and errors[0].endswith(".")
    assert "Traceback" not in err


# --------------------------------------------------------------------------- the real network
TARGETS = ["stingray", "flamingo", "balloon", "Granny Smith", "snail"]


@pytest.fixture(scope="module")
def efficientnet() -> Backbone:
    return load_backbone("efficientnet_lite0")


@pytest.mark.parametrize("method", ["seed", "pgd"])
def test_real_backbone_fools_a_sample_towards_five_classes(
    tmp_path: Path, efficientnet: Backbone, method: str
) -> None:
    """The acceptance check on one built-in sample (all three: see the report's figures).

    Five (image, target) jobs in one batch at 224 px; PGD with an L∞ budget of 2/255.
    """
    eps = 2 / 255
    module = FoolingImage(target=TARGETS, all_pairs=True, method=method, eps=eps)
    trainer = pl.Trainer(max_steps=100, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=tmp_path, callbacks=[ImageWriter(), FoolingReport()])
    trainer.fit(module, datamodule=LabeledImageData(images="sample:coffee", image_size=224))
    with open(tmp_path / RESULTS_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["target_class"] for row in rows} == set(TARGETS)
    for row, job in zip(rows, module.jobs):
        print(f"{method} {row['name']}: steps {row['steps']}, ||δ||₂ {float(row['l2']):.3f}, "
              f"||δ||∞ {float(row['linf']) * 255:.1f}/255, p {float(row['p_target']):.2f}")
        saved = image_to_tensor(load_image(tmp_path / f"{job.name}.png"))
        assert saved.shape == (3, 224, 224)
        with torch.no_grad():
            predicted = int(efficientnet(efficientnet.normalize(saved[None])).argmax())
        assert predicted == job.target_class
        assert row["success"] == "True" and int(row["steps"]) <= 100
        if method == "pgd":
            assert float(row["linf"]) <= eps + 1e-6

"""StyleTransfer, FeatureInversion and TextureSynthesis as modules, run by a Trainer."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from datamodules import StyleTransferData
from lightning_modules import FeatureInversion, StyleTransfer, TextureSynthesis
from lightning_modules.losses import gram_matrix
from lightning_modules.style_transfer import keep_colors


def fit(module: pl.LightningModule, data: pl.LightningDataModule, steps: int) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                         log_every_n_steps=1)  # callback_metrics after every step
    trainer.fit(module, data)
    return trainer


def tiny_module(cls=StyleTransfer, **kwargs) -> StyleTransfer:
    options = dict(backbone="tiny", weights="random", tv_weight=0.01, lr=0.05)
    if cls is not TextureSynthesis:  # the options of the terms each preset has
        options.update(content_layers=[2])
    if cls is not FeatureInversion:
        options.update(style_layers=[0, 1, 2], style_weights=[1.0, 1.0, 1.0])
    options.update(kwargs)
    return cls(**options)


def style_targets(module, group: int = 0) -> list:
    """The style term's blended target of each style layer, for one image group."""
    return module.targets[group][module.term_names.index("style")][0]


class StepRecorder(pl.Callback):
    """Records, as each step is taken, the learning rate, Adam's state size and the image range."""

    def __init__(self) -> None:
        self.rows = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        image = pl_module.images[0].detach()
        self.rows.append((optimizer.param_groups[0]["lr"], len(optimizer.state),
                          float(image.min()), float(image.max())))


def test_style_loss_of_the_default_settings_falls_by_90_percent(content_image) -> None:
    """The default config's layers and weights, on the real offline backbone, at a small size."""
    data = StyleTransferData(content="sample:chelsea", style="sample:immunohistochemistry",
                             image_size=96)
    module = StyleTransfer(content_layers=[4], style_layers=[1, 2, 3, 4],
                           style_weights=[1e4] * 4, tv_weight=0.005, lr=0.08)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(trainer.callback_metrics["style_loss"]))

    trainer = pl.Trainer(max_steps=60, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", callbacks=[Record()], log_every_n_steps=1)
    trainer.fit(module, data)
    assert losses[-1] < 0.1 * losses[0]


def test_lr_drop_restarts_adam_and_clamp_stops(content_image, style_image) -> None:
    module = tiny_module(lr=0.5, lr_drop_step=3, lr_drop_to=0.01, restart_optimizer_at_drop=True,
                         clamp=0.2, clamp_until=4)
    recorder = StepRecorder()
    data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=24)
    trainer = pl.Trainer(max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder])
    trainer.fit(module, data)
    lrs = [row[0] for row in recorder.rows]
    assert lrs == [0.5, 0.5, 0.5, 0.01, 0.01, 0.01]
    assert recorder.rows[3][1] == 0  # Adam's moments were forgotten at the drop
    for step, (_, _, low, high) in enumerate(recorder.rows):
        if step < 4:
            assert -0.2 - 1e-6 <= low and high <= 0.2 + 1e-6
    assert max(row[3] for row in recorder.rows[4:]) > 0.2  # no clamping from step 4 on


def test_default_clamp_keeps_valid_pixels(content_image, style_image) -> None:
    module = tiny_module(lr=5.0)
    fit(module, StyleTransferData(content=str(content_image), style=str(style_image), image_size=24), 3)
    module.clamp_images()
    pixels = module.backbone.denormalize(module.images[0])
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6


def test_blended_style_target_is_weighted_sum_of_grams(content_image, style_image, tmp_path) -> None:
    from conftest import write_test_image

    second = write_test_image(tmp_path / "second.png", (30, 36), seed=5)
    data = StyleTransferData(content=str(content_image), style=[str(style_image), str(second)],
                             style_blend_weights=[3, 1], image_size=24, style_size=20)
    module = tiny_module()
    fit(module, data, 1)
    job = data.jobs[0]
    assert job.style_blend_weights == [0.75, 0.25]
    assert [tuple(s.shape[1:]) for s in job.styles] == [(20, 20), (24, 20)]
    for layer, target in zip(module.term("style").layers, style_targets(module)):
        grams = [gram_matrix(module.backbone.extract(module.backbone.normalize(s[None]), [layer])[0])[0]
                 for s in job.styles]
        assert torch.allclose(target[0], 0.75 * grams[0] + 0.25 * grams[1], atol=1e-6)


def test_style_scale_and_sizes(content_image, style_image) -> None:
    data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=30,
                             style_size=20, style_scale=1.5)
    data.setup("fit")
    assert data.jobs[0].size == (30, 36)
    assert tuple(data.jobs[0].styles[0].shape[1:]) == (30, 30)


def test_jobs_are_one_per_content_image_with_unique_names(content_image, style_image, tmp_path) -> None:
    from conftest import write_test_image

    folder = tmp_path / "photos"
    for name in ("b", "a"):
        write_test_image(folder / f"{name}.png", (40, 40))
    data = StyleTransferData(content=[str(folder), str(content_image)], style=str(style_image),
                             image_size=16)
    data.setup("fit")
    assert [job.name for job in data.jobs] == ["a__style", "b__style", "content__style"]


def test_preserve_colors_keeps_content_chrominance(content_image, style_image) -> None:
    module = tiny_module(preserve_colors=True, lr=0.2)
    fit(module, StyleTransferData(content=str(content_image), style=str(style_image), image_size=24), 3)
    result = module.result_pixels(0)
    plain = super(StyleTransfer, module).result_pixels(0)
    content = module.jobs[0].content
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263],
                           [0.211456, -0.522591, 0.311135]])
    yiq = lambda x: torch.einsum("ij,jhw->ihw", to_yiq, x)  # noqa: E731
    inside = (result > 0.01).all(0) & (result < 0.99).all(0)  # unclipped pixels
    assert torch.allclose(yiq(result)[1:, inside], yiq(content)[1:, inside], atol=1e-4)
    assert torch.allclose(yiq(result)[0, inside], yiq(plain)[0, inside], atol=1e-4)
    assert torch.allclose(keep_colors(content, content), content, atol=1e-5)


def test_feature_inversion_starts_from_noise_and_reduces_content_loss(content_image) -> None:
    module = tiny_module(FeatureInversion, lr=0.1)
    data = StyleTransferData(content=str(content_image), style=None, image_size=24)
    trainer = fit(module, data, 1)
    first = float(trainer.callback_metrics["content_loss"])
    start = module.result_pixels(0)
    assert not torch.allclose(start, data.jobs[0].content, atol=0.1)
    assert "style_loss" not in trainer.callback_metrics
    trainer = fit(module, data, 30)
    assert float(trainer.callback_metrics["content_loss"]) < 0.5 * first


def test_texture_synthesis_needs_no_content(style_image) -> None:
    module = tiny_module(TextureSynthesis)
    data = StyleTransferData(content=None, style=str(style_image), image_size=16)
    trainer = fit(module, data, 2)
    assert "content_loss" not in trainer.callback_metrics
    assert module.result_pixels(0).shape == (3, 16, 16)


def test_init_from_file(content_image, style_image) -> None:
    module = tiny_module(init=str(style_image))
    data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=24)
    fit(module, data, 0 + 1)
    assert module.images[0].shape == (1, 3, 24, 29)


def test_lbfgs_runs_and_lowers_the_loss(content_image, style_image) -> None:
    module = tiny_module(optimizer="lbfgs", lr=0.5)
    data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=24)
    first = float(fit(module, data, 1).callback_metrics["loss"])
    module = tiny_module(optimizer="lbfgs", lr=0.5)
    last = float(fit(module, data, 15).callback_metrics["loss"])
    assert last < first


# ----------------------------------------------------------------- style losses and masks
def flat_colour_styles(folder, size=(40, 32)) -> dict[str, str]:
    """A red and a blue style, and masks of the left and right halves of a ``size`` content."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: str(folder / f"{name}.png") for name in ("red", "blue", "left", "right")}
    Image.new("RGB", (32, 32), (230, 30, 30)).save(paths["red"])
    Image.new("RGB", (32, 32), (30, 30, 230)).save(paths["blue"])
    left = Image.new("L", size, 0)
    left.paste(255, (0, 0, size[0] // 2, size[1]))
    left.save(paths["left"])
    Image.eval(left, lambda value: 255 - value).save(paths["right"])
    return paths


def red_minus_blue(pixels: torch.Tensor) -> float:
    return float(pixels[0].mean() - pixels[2].mean())


@pytest.mark.parametrize("style_loss", ["gram", "mean_std", "sliced_wasserstein"])
def test_masked_styles_paint_their_own_regions(style_loss, content_image, tmp_path) -> None:
    """Red style in the left mask, blue in the right: each half moves toward its colour."""
    paths = flat_colour_styles(tmp_path / "masks")
    results = {}
    for order in ("left-right", "right-left"):
        masks = [paths["left"], paths["right"]][::1 if order == "left-right" else -1]
        data = StyleTransferData(content=str(content_image), style=[paths["red"], paths["blue"]],
                                 style_masks=masks, image_size=32)
        module = tiny_module(style_loss=style_loss, style_weights=[1000.0] * 3, tv_weight=0.0)
        fit(module, data, 40)
        results[order] = module.result_pixels(0)
    content = data.jobs[0].content
    half = content.shape[2] // 2
    halves = lambda x: (red_minus_blue(x[:, :, :half]), red_minus_blue(x[:, :, half:]))  # noqa: E731
    content_left, content_right = halves(content)
    left, right = halves(results["left-right"])
    assert left > content_left + 0.15 and right < content_right - 0.15
    assert left > right + 0.3
    swapped_left, swapped_right = halves(results["right-left"])
    assert swapped_left < swapped_right - 0.3


@pytest.mark.parametrize("cls", [StyleTransfer, TextureSynthesis])
@pytest.mark.parametrize("style_loss", ["mean_std", "sliced_wasserstein"])
def test_new_style_losses_fall(cls, style_loss, content_image, style_image) -> None:
    options = dict(style_loss=style_loss, style_weights=[100.0] * 3, tv_weight=0.0, lr=0.05)
    content = str(content_image) if cls is StyleTransfer else None
    data = StyleTransferData(content=content, style=str(style_image), image_size=32)
    first = float(fit(tiny_module(cls, **options), data, 1).callback_metrics["style_loss"])
    module = tiny_module(cls, **options)
    last = float(fit(module, data, 30).callback_metrics["style_loss"])
    assert last < 0.5 * first


def test_gram_is_the_default_and_the_homeworks_style_loss(content_image, style_image) -> None:
    from lightning_modules.style_transfer import GramLoss, style_loss

    module = tiny_module()
    assert isinstance(module.term("style").criterion, GramLoss)
    fit(module, StyleTransferData(content=str(content_image), style=str(style_image), image_size=24), 1)
    images = module.images[0].detach()
    feats = dict(zip([0, 1, 2], module.backbone.extract(images, [0, 1, 2])))
    style = module.term("style")
    expected = style_loss(feats, style.layers, style_targets(module), style.weights)
    assert torch.equal(module.loss_terms(0, images)["style"], expected)


def test_sliced_wasserstein_blends_quantiles_of_each_style(content_image, style_image, tmp_path) -> None:
    from conftest import write_test_image

    second = write_test_image(tmp_path / "second.png", (30, 36), seed=5)
    data = StyleTransferData(content=str(content_image), style=[str(style_image), str(second)],
                             style_blend_weights=[3, 1], image_size=24)
    module = tiny_module(style_loss="sliced_wasserstein")
    fit(module, data, 2)
    mixture = style_targets(module)[0][0]  # layer 0, job 0
    assert [weight for weight, _ in mixture] == [0.75, 0.25]
    assert [tuple(cloud.shape) for _, cloud in mixture] == [(8, 24 * 24), (8, 24 * 29)]


def test_sliced_wasserstein_runs_are_reproducible_and_resume_alike(content_image, style_image,
                                                                   tmp_path) -> None:
    """Same seed, same image; another seed, another; the directions change every step, and a
    run resumed at step 3 draws the same ones at steps 3 to 5 as the uninterrupted run."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    fixed_losses: dict[int, float] = {}  # step: style loss of one fixed image

    class FixedImageLoss(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            with torch.no_grad():
                fixed = pl_module.backbone.normalize(pl_module.jobs[0].content[None])
                fixed_losses[trainer.global_step] = float(pl_module.loss_terms(0, fixed)["style"])

    def run(seed: int, callbacks=(), ckpt_path=None) -> torch.Tensor:
        pl.seed_everything(seed, verbose=False)
        module = tiny_module(style_loss="sliced_wasserstein", lr=0.1)
        data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=24)
        trainer = pl.Trainer(max_steps=6, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, accelerator="cpu",
                             callbacks=list(callbacks), enable_checkpointing=bool(callbacks))
        trainer.fit(module, data, ckpt_path=ckpt_path)
        return module.images[0].detach().clone()

    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    first = run(0, [saver, FixedImageLoss()])
    uninterrupted = dict(fixed_losses)
    assert len(set(uninterrupted.values())) == 6  # new directions every step
    assert torch.equal(first, run(0))
    assert not torch.allclose(first, run(1))
    at_step_3 = next((tmp_path / "ckpt").glob("*step=3*.ckpt"))
    fixed_losses.clear()
    resumed = run(0, [ModelCheckpoint(dirpath=tmp_path / "again"), FixedImageLoss()],
                  ckpt_path=at_step_3)
    assert fixed_losses == {step: uninterrupted[step] for step in (3, 4, 5)}
    assert torch.equal(resumed, first)


# ----------------------------------------------------------------- composition of loss terms
@pytest.mark.parametrize("build, message", [
    (lambda: TextureSynthesis(content_weight=5),
     "TextureSynthesis has no option content_weight: it belongs to a content term"),
    (lambda: FeatureInversion(style_weights=[0, 0]),
     "FeatureInversion has no option style_weights: it belongs to a style term"),
    (lambda: TextureSynthesis(init="content"),
     "TextureSynthesis has no content image to start from: init must be 'noise' or an image"),
    (lambda: TextureSynthesis(preserve_colors=True),
     "preserve_colors keeps the content image's colours, and TextureSynthesis has none"),
    (lambda: StyleTransfer(colour=1), "StyleTransfer has no option 'colour'."),
])
def test_a_preset_refuses_what_its_terms_would_ignore(build, message) -> None:
    from lightning_modules.errors import UserInputError

    with pytest.raises(UserInputError) as caught:
        build()
    assert str(caught.value).startswith(message.replace("has none", "has no content image"))


@pytest.mark.parametrize("config, extra, message", [
    ("texture_synthesis", ["--model.content_weight", "5"], "'content_weight' is not accepted"),
    ("feature_inversion", ["--model.style_loss", "gram"], "'style_loss' is not accepted"),
    ("texture_synthesis", ["--data.content", "{content}"],
     "TextureSynthesis uses no content image: leave --data.content out (null)."),
    ("feature_inversion", ["--data.style", "{style}"],
     "FeatureInversion uses no style image: leave --data.style out (null)."),
])
def test_the_command_line_refuses_an_option_or_image_no_term_uses(
        config, extra, message, workdir, content_image, style_image, capsys) -> None:
    import cli
    from test_bad_input import one_error_line
    from test_cli import REPO

    images = {"content": str(content_image), "style": str(style_image)}
    own = (["--data.content", images["content"]] if config == "feature_inversion" else
           ["--data.style", images["style"], "--model.style_layers", "[0, 1]",
            "--model.style_weights", "[1, 1]"])
    args = ["fit", "--config", str(REPO / "configs" / f"{config}.yaml"), "--model.backbone", "tiny",
            "--model.weights", "random", "--data.image_size", "16", "--trainer.max_steps", "2",
            "--trainer.enable_progress_bar", "false",
            *(["--model.content_layers", "[1]"] if config == "feature_inversion" else []),
            *own, *[arg.format(**images) for arg in extra]]
    assert cli.main(args) == (2 if "not accepted" in message else 1)
    assert message in one_error_line(capsys)
    assert not (workdir / "runs").exists() or not list((workdir / "runs").rglob("*.png"))


def test_feature_matching_sums_the_terms_it_is_given(content_image) -> None:
    """Two content terms of their own layers and reductions and a TV term: each logged under
    its own name, and the loss is their sum."""
    from lightning_modules.style_transfer import (ContentTerm, FeatureMatching,
                                                  TotalVariation)

    terms = [ContentTerm([1], 1.0), ContentTerm([2], 0.5, "sum"), TotalVariation(0.1)]
    module = FeatureMatching(terms=terms, backbone="tiny", weights="random", init="noise",
                             lr=0.1)
    assert module.term_names == ["content", "content_2", "tv"]
    trainer = fit(module, StyleTransferData(content=str(content_image), style=None,
                                            image_size=16), 3)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    parts = [metrics[f"{name}_loss"] for name in ("content", "content_2", "tv")]
    assert metrics["loss"] == pytest.approx(sum(parts), rel=1e-5)
    assert parts[1] > 10 * parts[0]  # a sum over the values, not their mean
    assert [title for title, _ in module.sheet_panels(0)] == ["content", "result"]


def test_feature_matching_terms_from_a_config(workdir, content_image, tmp_path) -> None:
    """A config composes terms by class_path, with their own options."""
    import yaml

    import cli
    from test_cli import REPO

    config = yaml.safe_load((REPO / "configs" / "feature_inversion.yaml").read_text())
    config["model"] = {"class_path": "lightning_modules.style_transfer.FeatureMatching",
                       "init_args": {"backbone": "tiny", "weights": "random", "init": "noise",
                                     "terms": [
        {"class_path": "lightning_modules.style_transfer.terms.ContentTerm",
         "init_args": {"layers": [1], "weight": 2.0}},
        {"class_path": "lightning_modules.style_transfer.terms.ChromaTotalVariation",
         "init_args": {"weight": 5.0}}]}}
    path = tmp_path / "composed.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["fit", "--config", str(path), "--data.content", str(content_image),
                     "--data.image_size", "16", "--trainer.max_steps", "2",
                     "--trainer.enable_progress_bar", "false"]) == 0
    [run] = (workdir / "runs" / "feature_inversion").glob("version_*")
    header = (run / "losses.csv").read_text().splitlines()[0]
    assert "content_loss" in header and "chroma_tv_loss" in header and "style" not in header
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert "terms" not in checkpoint["hyper_parameters"]


def test_a_style_loss_by_class_path_keeps_its_options(workdir, content_image,
                                                      style_image) -> None:
    """``style_loss`` names a class with its own options; the checkpoint, loaded as a resume
    loads it (weights only), holds a plain description of it."""
    import json

    import cli
    from lightning_modules.style_transfer import SlicedWassersteinLoss
    from test_cli import tiny_args

    spec = {"class_path": "lightning_modules.style_transfer.SlicedWassersteinLoss",
            "init_args": {"projections": 3}}
    assert cli.main(tiny_args(content_image, style_image, "--model.style_loss",
                              json.dumps(spec))) == 0
    [run] = (workdir / "runs" / "style_transfer").glob("version_*")
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    described = checkpoint["hyper_parameters"]["style_loss"]
    assert described["init_args"] == {"projections": 3}
    assert described["class_path"].endswith("SlicedWassersteinLoss")
    module = tiny_module(style_loss=SlicedWassersteinLoss(projections=3))
    assert module.term("style").criterion.projections == 3
    assert tiny_module(style_loss="sliced_wasserstein").hparams["style_loss"] == \
        "sliced_wasserstein"


def test_style_loss_options_are_checked() -> None:
    from lightning_modules.errors import UserInputError
    from lightning_modules.style_transfer import MeanStdLoss, SlicedWassersteinLoss

    with pytest.raises(UserInputError, match="projections of the sliced_wasserstein style "
                                             "loss must be a whole number of at least 1"):
        SlicedWassersteinLoss(projections=0)
    with pytest.raises(UserInputError, match="eps of the mean_std style loss must be positive"):
        MeanStdLoss(eps=-1.0)

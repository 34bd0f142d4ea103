"""Hostile input beyond ``test_cli.BAD_INPUTS``: wrong subcommands, hardware the machine lacks,
other techniques' options, loggers, files that are not files, and running out of memory.

Each ends with one ``error: `` line on stderr, a non-zero exit and no traceback.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cli
from test_cli import REPO, STYLE_CONFIG, fifo, run_dirs, tiny_args

SALIENCY_CONFIG = str(REPO / "configs" / "saliency.yaml")
TINY = ["--model.backbone", "tiny", "--model.weights", "random"]


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch) -> None:
    """LightningCLI warns when pytest's own arguments are in sys.argv beside args=."""
    monkeypatch.setattr("sys.argv", ["cli.py"])


def one_error_line(capsys) -> str:
    """The only line on stderr, which must be an ``error: `` sentence (no traceback)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err


def saliency_args(content_image: Path, *extra: str) -> list[str]:
    return ["--config", SALIENCY_CONFIG, *TINY, "--data.images", f"[{content_image}]",
            "--data.labels", "[1]", "--data.image_size", "16", "--model.samples", "2",
            "--trainer.enable_progress_bar", "false", *extra]


# ----------------------------------------------------------------- fit and predict mixed up
def test_predict_on_a_fit_config_says_to_use_fit(workdir, content_image, style_image, capsys) -> None:
    args = tiny_args(content_image, style_image)
    assert cli.main(["predict", *args[1:]]) == 1
    err = one_error_line(capsys)
    assert "StyleTransfer is run with fit" in err and "style_transfer.yaml" in err, err


def test_fit_on_a_predict_technique_says_to_use_predict(workdir, content_image, capsys) -> None:
    # Without the config's predict-only keys the parse succeeds and the Trainer is built.
    assert cli.main(["fit", "--model", "SaliencyMap", *TINY, "--data", "LabeledImageData",
                     "--data.images", f"[{content_image}]", "--data.labels", "[1]",
                     "--data.image_size", "16"]) == 1
    err = one_error_line(capsys)
    assert "SaliencyMap is run with predict" in err, err


def test_fit_on_the_saliency_config_says_to_use_predict(workdir, content_image, capsys) -> None:
    assert cli.main(["fit", *saliency_args(content_image)]) == 2
    err = one_error_line(capsys)
    assert "predict" in err and "return_predictions" in err, err


def test_validate_and_test_stay_refused_by_the_parser(workdir, capsys) -> None:
    for subcommand in ("validate", "test"):
        assert cli.main([subcommand, "--config", STYLE_CONFIG]) == 2
        assert "invalid choice" in one_error_line(capsys)


# ----------------------------------------------------------------- hardware
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_gpu_accelerator_without_a_gpu(accelerator, workdir, content_image, style_image, capsys) -> None:
    assert cli.main(tiny_args(content_image, style_image, "--trainer.accelerator", accelerator)) == 1
    err = one_error_line(capsys)
    assert "no GPU is available" in err and "cpu" in err and "auto" in err, err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
@pytest.mark.parametrize("accelerator, expected", [("mps", "MPSAccelerator"), ("tpu", "torch_xla")])
def test_accelerators_lightning_refuses_are_one_sentence(accelerator, expected, workdir,
                                                         content_image, style_image, capsys) -> None:
    """Trainer options Lightning refuses, which no check of ours knows about."""
    assert cli.main(tiny_args(content_image, style_image, "--trainer.accelerator", accelerator)) == 1
    assert expected in one_error_line(capsys)


# ----------------------------------------------------------------- the other techniques' options
def class_visualization_args(*extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / "class_visualization.yaml"), *TINY,
            "--data.classes", "[1]", "--model.image_size", "16", "--model.max_jitter", "2",
            "--model.judge", "null", "--trainer.max_steps", "2",
            "--trainer.enable_progress_bar", "false", *extra]


def fooling_args(content_image: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / "fooling.yaml"), *TINY,
            "--data.images", f"[{content_image}]", "--data.labels", "[1]", "--model.target",
            "[2]", "--data.image_size", "16", "--trainer.max_steps", "2",
            "--trainer.enable_progress_bar", "false", *extra]


@pytest.mark.parametrize("lr", ["1e38", "1e300"])
def test_absurd_lr_of_class_visualization_and_fooling(lr, workdir, content_image, capsys) -> None:
    assert cli.main(class_visualization_args("--model.lr", lr)) == 1
    assert "lr must be" in one_error_line(capsys)
    assert cli.main(fooling_args(content_image, "--model.lr", lr)) == 1
    assert "lr must be" in one_error_line(capsys)


@pytest.mark.parametrize("option", ["--model.step_size", "--model.eps"])
def test_absurd_pgd_step_and_budget(option, workdir, content_image, capsys) -> None:
    assert cli.main(fooling_args(content_image, "--model.method", "pgd", option, "1e300")) == 1
    one_error_line(capsys)


def test_class_visualization_image_too_large_for_memory(workdir, capsys) -> None:
    assert cli.main(class_visualization_args("--model.image_size", "1000000")) == 1
    err = one_error_line(capsys)
    assert "image_size 1000000" in err and "TiB" in err, err


def test_saliency_image_too_large_for_memory(workdir, content_image, capsys) -> None:
    assert cli.main(["predict", *saliency_args(content_image, "--data.image_size", "1000000")]) == 1
    assert "GiB" in one_error_line(capsys)


def test_print_size_style_transfer_is_not_refused() -> None:
    """A 4000 px print on a 24 GiB machine must pass the memory check (it is a lower bound)."""
    from datamodules.images import READ_BYTES_PER_PIXEL
    from lightning_modules.errors import check_fits_in_memory

    four_thousand = 4000 * 6000 * READ_BYTES_PER_PIXEL
    check_fits_in_memory("a 4000 x 6000 image", four_thousand, "", available=24 * 2**30)
    with pytest.raises(ValueError, match="at least 4.0 GiB.*2.0 GiB"):
        check_fits_in_memory("it", 4 * 2**30, "give less", available=2 * 2**30)


# ----------------------------------------------------------------- loggers
@pytest.mark.parametrize("times", [1, 2])
def test_logger_false_once_or_twice_runs(times, workdir, content_image, style_image, capsys) -> None:
    assert cli.main(tiny_args(content_image, style_image,
                              *["--trainer.logger", "false"] * times)) == 0
    assert (workdir / "content__style.png").is_file()


def test_logger_false_twice_in_one_folder_refuses_to_overwrite(workdir, content_image, style_image,
                                                               capsys) -> None:
    args = tiny_args(content_image, style_image, "--trainer.logger", "false")
    assert cli.main(args) == 0
    before = (workdir / "content__style.png").read_bytes()
    capsys.readouterr()
    assert cli.main(args) == 1
    err = one_error_line(capsys)
    assert "config.yaml" in err and "--trainer.default_root_dir" in err, err
    assert (workdir / "content__style.png").read_bytes() == before
    assert not run_dirs(workdir)


# ----------------------------------------------------------------- files that are not files
def test_fifo_content_is_refused_without_hanging(workdir, style_image) -> None:
    """A real process, with a timeout: reading a pipe nobody writes to would wait forever."""
    import cli_processes

    pipe = fifo(workdir)
    try:
        completed = cli_processes.run(tiny_args(pipe, style_image), workdir, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("cli.py hung reading a named pipe")
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"error: Not a regular file (a named pipe): {pipe}; give an image file."]


def test_fifo_in_a_folder_is_refused(workdir, content_image, style_image, capsys) -> None:
    folder = workdir / "photos"
    folder.mkdir()
    os.mkfifo(folder / "a.png")
    assert cli.main(tiny_args(folder, style_image)) == 1
    assert "named pipe" in one_error_line(capsys)


# ----------------------------------------------------------------- out of memory, as a backstop
@pytest.mark.parametrize("error", [
    MemoryError(),
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                           "capacity of 15.77 GiB of which 2.00 GiB is free."),
    RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate "
                 "memory: you tried to allocate 53687091200 bytes. Error code 12 (Cannot "
                 "allocate memory)"),
])
def test_out_of_memory_is_one_sentence(error, workdir, content_image, style_image, capsys,
                                       monkeypatch) -> None:
    import datamodules.style_transfer

    def no_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(datamodules.style_transfer, "image_to_tensor", no_memory)
    assert cli.main(tiny_args(content_image, style_image)) == 1
    err = one_error_line(capsys)
    assert "out of memory" in err and "--data.image_size" in err, err
    if not isinstance(error, MemoryError):
        assert "GiB" in err, err


def test_other_runtime_errors_are_not_swallowed(workdir, content_image, style_image,
                                                monkeypatch) -> None:
    """Only the user's mistakes become one sentence; a bug keeps its traceback."""
    import datamodules.style_transfer

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(datamodules.style_transfer, "image_to_tensor", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(tiny_args(content_image, style_image))


@pytest.mark.parametrize("scales", [[], ["--model.scales", "[16]"]])
def test_images_too_large_to_optimize_are_refused_before_allocating(
        workdir, content_image, style_image, capsys, monkeypatch, scales) -> None:
    """Photos that can be read but not optimized: the check in the module's setup says so.

    38 x 32 content and 32 x 32 style read in 23 and 19 KiB; optimizing the content needs 29 KiB
    for the image and its gradient, and 38 KiB for the tiny backbone's first layer (8 channels).
    """
    import lightning_modules.errors

    monkeypatch.setattr(lightning_modules.errors, "available_memory", lambda: 25 * 1024)
    # Coarse to fine starts small (16 px fits): the full size is checked all the same.
    assert cli.main(tiny_args(content_image, style_image, *scales)) == 1
    err = one_error_line(capsys)
    assert err.startswith("error: Optimizing 1 image(s)") and "66.5 KiB" in err, err


# ----------------------------------------------------------------- tileable
def test_tileable_not_a_bool_is_refused_by_the_parser(workdir, content_image, style_image,
                                                      capsys) -> None:
    assert cli.main(tiny_args(content_image, style_image, "--model.tileable", "maybe")) == 2
    assert "tileable" in one_error_line(capsys)


def test_a_backbone_that_cannot_wrap_around_is_one_sentence(workdir, content_image, style_image,
                                                           capsys, monkeypatch) -> None:
    from torch import nn

    from lightning_modules.backbones import Backbone, registry

    def transposed(weights: str) -> Backbone:
        layers = [nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                  nn.ConvTranspose2d(4, 4, 3, padding=1)]
        return Backbone("transposed", layers, nn.Flatten(1), (0.5,) * 3, (0.5,) * 3,
                        [str(i) for i in range(1000)])

    monkeypatch.setitem(registry._REGISTRY, "transposed", registry._Entry(transposed, ""))
    args = tiny_args(content_image, style_image, "--model.backbone", "transposed",
                     "--model.tileable", "true")
    assert cli.main(args) == 1
    err = one_error_line(capsys)
    assert "'transposed' cannot be made tileable" in err and "features.3 (ConvTranspose2d)" in err


# ----------------------------------------------------------------- style losses and style masks
def write_masks(folder: Path) -> dict[str, str]:
    """A half-white mask, an all-black one and a text file, each 40 x 32."""
    from PIL import Image

    half = Image.new("L", (40, 32), 0)
    half.paste(255, (0, 0, 20, 32))
    paths = {"half": folder / "half.png", "black": folder / "black.png",
             "text": folder / "mask.txt"}
    half.save(paths["half"])
    Image.new("L", (40, 32), 0).save(paths["black"])
    paths["text"].write_text("white on the left")
    return {name: str(path) for name, path in paths.items()}


BAD_MASKS = {
    "unknown style loss": (["--model.style_loss", "cosine"],
                           "error: Unknown style_loss 'cosine'; choose 'gram', 'mean_std' or "
                           "'sliced_wasserstein'."),
    "two masks for one style": (["--data.style_masks", "[{half}, {half}]"],
                                "style_masks has 2 masks for 1 style image"),
    "unreadable mask": (["--data.style_masks", "[{text}]"], "Not a recognised image file"),
    "missing mask": (["--data.style_masks", "[{missing}]"], "Image file not found"),
    "black mask": (["--data.style_masks", "[{black}]"], "is black everywhere"),
    "masks without content": (["--data.style_masks", "[{half}]", "--data.content", "null"],
                              "there is no content image (--data.content)"),
}


@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_bad_style_loss_and_masks_are_one_sentence(case, workdir, content_image, style_image,
                                                   capsys) -> None:
    paths = write_masks(workdir)
    extra, expected = BAD_MASKS[case]
    extra = [arg.format(missing=workdir / "nope.png", **paths) for arg in extra]
    assert cli.main(tiny_args(content_image, style_image, *extra)) == 1
    assert expected in one_error_line(capsys)


def test_a_good_mask_runs_with_each_new_loss(workdir, content_image, style_image) -> None:
    """The control of the cases above: the same command with a good mask succeeds."""
    paths = write_masks(workdir)
    for style_loss in ("mean_std", "sliced_wasserstein"):
        assert cli.main(tiny_args(content_image, style_image, "--model.style_loss", style_loss,
                                  "--data.style_masks", f"[{paths['half']}]",
                                  "--trainer.logger", "false",
                                  "--trainer.default_root_dir", style_loss)) == 0
        assert (workdir / style_loss / "content__style.png").is_file()


# ----------------------------------------------------------------- pictures given from Python
def _api_calls():
    from test_api import TINY_STYLE

    from lightning_modules.api import saliency, stylize

    def style(picture):
        return stylize(picture, "sample:coffee", **{**TINY_STYLE, "steps": 1})

    def explain(picture):
        return saliency(picture, target=1, method="vanilla", backbone="tiny", weights="random",
                        image_size=16)
    return style, explain


BAD_PICTURES = {
    "an empty tensor": (lambda: torch.zeros(3, 0, 8), "The content picture is empty (8 x 0"),
    "an empty array": (lambda: np.zeros((0, 5, 3), np.uint8), "picture is empty (5 x 0"),
    "an empty PIL image": (lambda: Image.new("RGB", (0, 4)), "picture is empty (0 x 4"),
    "a meta tensor": (lambda: torch.zeros(3, 8, 8, device="meta"), "meta device holds no pixels"),
    "NaN": (lambda: torch.full((3, 8, 8), float("nan")), "holds NaN or infinite values"),
    "inf": (lambda: torch.full((3, 8, 8), float("inf")), "holds NaN or infinite values"),
    "negative floats": (lambda: -torch.rand(3, 8, 8) - 0.1, "must hold pixels in 0-1"),
    "floats in 0-255": (lambda: torch.rand(3, 8, 8) * 200 + 10, "divide 0-255 values by 255"),
    "a bool tensor": (lambda: torch.ones(3, 8, 8, dtype=torch.bool),
                      "must hold 0-1 floats or uint8 0-255, got torch.bool"),
    "int64 pixels": (lambda: torch.randint(0, 256, (3, 8, 8)),
                     "must hold 0-1 floats or uint8 0-255, got torch.int64"),
}


@pytest.mark.parametrize("case", sorted(BAD_PICTURES))
@pytest.mark.parametrize("function", ["stylize", "saliency"])
def test_pictures_in_memory_outside_the_pixel_range_are_one_sentence(case, function,
                                                                      workdir) -> None:
    """Empty, meta, NaN or inf, and values outside 0-1 floats or uint8 0-255 were turned into
    some picture (or traced back): each is refused, with the range that is expected."""
    from lightning_modules.errors import UserInputError

    make, expected = BAD_PICTURES[case]
    style, explain = _api_calls()
    call = style if function == "stylize" else explain
    with pytest.raises(UserInputError) as raised:
        call(make())
    message = str(raised.value)
    if function == "saliency":
        expected = expected.replace("content", "image")
    assert expected in message, message
    assert len(message.splitlines()) == 1
    assert list(workdir.iterdir()) == []


def test_pixels_in_range_and_a_one_pixel_grey_array_give_a_picture(workdir) -> None:
    style, _ = _api_calls()
    slightly_over = torch.rand(3, 8, 8).clamp(0, 1)
    slightly_over[0, 0, 0] = 1 + 1e-6  # a rounding error: still pixel 255
    for picture in (np.full((1, 1, 1), 200, np.uint8), slightly_over,
                    torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)):
        assert style(picture).size == (32, 32)


# ----------------------------------------------------------------- paths that read as globs
def test_an_existing_file_named_like_a_glob_is_that_file(workdir, content_image, style_image,
                                                         capsys) -> None:
    bracketed = content_image.with_name("photo[1].png")
    content_image.rename(bracketed)
    assert cli.main(tiny_args(bracketed, style_image, "--trainer.max_steps", "1")) == 0, \
        capsys.readouterr().err[-3000:]
    [run] = run_dirs(workdir)
    assert (run / "photo[1]__style.png").is_file()
    # A pattern that is no file still expands.
    assert cli.main(tiny_args(workdir / "inputs" / "ph*.png", style_image,
                              "--trainer.max_steps", "1")) == 0

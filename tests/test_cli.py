"""The command line end to end: outputs of a run, fresh run directories, and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml
from PIL import Image

import cli
from conftest import write_test_image

REPO = Path(__file__).resolve().parents[1]
STYLE_CONFIG = str(REPO / "configs" / "style_transfer.yaml")


def tiny_args(content: Path | str, style: Path | str, *extra: str) -> list[str]:
    """A style-transfer run on the tiny random backbone: 32 px, 4 steps."""
    return [
        "fit", "--config", STYLE_CONFIG,
        "--model.backbone", "tiny", "--model.weights", "random",
        "--model.content_layers", "[2]", "--model.style_layers", "[0, 1, 2, 3]",
        "--model.style_weights", "[1, 1, 1, 1]",
        "--data.content", str(content), "--data.style", str(style), "--data.image_size", "32",
        "--trainer.max_steps", "4", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--images.every_n_steps", "2",
        *extra,
    ]


def saved_model_options(run: Path) -> dict:
    return yaml.safe_load(open(run / "config.yaml"))["model"]["init_args"]


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "style_transfer").glob("version_*"))


def test_fit_writes_images_losses_plot_and_config(workdir, content_image, style_image) -> None:
    assert cli.main(tiny_args(content_image, style_image)) == 0
    [run] = run_dirs(workdir)
    result = Image.open(run / "content__style.png")
    assert result.size == (38, 32)  # shorter side 32, aspect ratio of the 48x40 content kept
    assert Image.open(run / "content__style_sheet.png").width > 3 * 32
    assert (run / "snapshots" / "content__style_step000002.png").is_file()
    rows = list(csv.DictReader(open(run / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    # The config's colour term (the painting's palette) logs its column; its colour-detail
    # limit acts after each step and adds no loss.
    assert {"content_loss", "style_loss", "tv_loss", "color_loss", "loss"} <= set(rows[0])
    assert "chroma_detail_loss" not in rows[0]
    assert saved_model_options(run)["chroma_detail_limit"] is True
    assert Image.open(run / "loss_curve.png").size[0] > 100
    saved = yaml.safe_load(open(run / "config.yaml"))
    assert saved["model"]["init_args"]["backbone"] == "tiny"
    assert saved["model"]["init_args"]["lr"] is None  # the optimizer's own (Adam 0.02, L-BFGS 1)
    assert saved["seed_everything"] == 0


def test_each_run_gets_a_fresh_directory_and_same_seed_same_result(workdir, content_image, style_image) -> None:
    assert cli.main(tiny_args(content_image, style_image)) == 0
    first = run_dirs(workdir)[0] / "content__style.png"
    before = first.read_bytes()
    assert cli.main(tiny_args(content_image, style_image)) == 0
    runs = run_dirs(workdir)
    assert len(runs) == 2
    assert first.read_bytes() == before  # the first run's files were not touched
    assert (runs[1] / "content__style.png").read_bytes() == before  # reproducible with the seed


def test_print_config_can_be_fed_back(workdir, content_image, style_image, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(tiny_args(content_image, style_image, "--print_config"))
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: lightning_modules.StyleTransfer" in printed
    (workdir / "printed.yaml").write_text(printed)
    assert cli.main(["fit", "--config", str(workdir / "printed.yaml")]) == 0
    assert (run_dirs(workdir)[0] / "content__style.png").is_file()
    # The run says where its results went, on a line of its own.
    assert f"Results in {Path('runs') / 'style_transfer' / 'version_0'}" in \
        capsys.readouterr().err.splitlines()


def test_a_run_does_not_report_lightnings_internal_step_limit(workdir, capfd, caplog) -> None:
    # 3 photos of one job each in chunks of 1: Lightning's own count is 3 x 2 steps.
    photos = workdir / "photos"
    for seed in range(3):
        write_test_image(photos / f"c{seed}.png", seed=seed)
    style = write_test_image(workdir / "style.png", seed=7)
    assert cli.main(tiny_args(photos, style, "--data.batch_size", "1",
                              "--trainer.max_steps", "2")) == 0
    err = capfd.readouterr().err + "".join(record.getMessage() for record in caplog.records)
    assert "max_steps=6" not in err and "`Trainer.fit` stopped" not in err, err
    assert "Results in" in err


def test_help_lists_the_layers_command(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "cli.py layers --model.backbone NAME" in " ".join(capsys.readouterr().out.split())


def test_feature_inversion_and_texture_synthesis_run(workdir, content_image, style_image) -> None:
    common = ["--model.backbone", "tiny", "--model.weights", "random", "--data.image_size", "24",
              "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false"]
    assert cli.main(["fit", "--config", str(REPO / "configs" / "feature_inversion.yaml"),
                     "--model.content_layers", "[1]", "--data.content", str(content_image),
                     *common]) == 0
    assert cli.main(["fit", "--config", str(REPO / "configs" / "texture_synthesis.yaml"),
                     "--model.style_layers", "[0, 1]", "--model.style_weights", "[1, 1]",
                     "--data.style", str(style_image), *common]) == 0
    assert Image.open(workdir / "runs/feature_inversion/version_0/content.png").size == (29, 24)
    assert Image.open(workdir / "runs/texture_synthesis/version_0/style.png").size == (24, 24)


def truncated_png(tmp_path: Path, content_image: Path) -> Path:
    data = content_image.read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(data[: len(data) // 2])
    return path


def wrong_weights(tmp_path: Path) -> Path:
    import torch

    path = tmp_path / "conv.pth"
    torch.save(torch.nn.Conv2d(3, 4, 3).state_dict(), path)
    return path


def thin_image(tmp_path: Path) -> Path:
    """1 x 20000 pixels: small on disk, enormous once its shorter side is resized up."""
    path = tmp_path / "thin.png"
    Image.new("RGB", (20000, 1), (10, 200, 30)).save(path)
    return path


def fifo(tmp_path: Path) -> Path:
    """A named pipe with a picture's name: opening it for reading waits for a writer forever."""
    import os

    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    return path


BAD_INPUTS = {
    "missing file": (lambda t, c, s: ["--data.content", str(t / "nope.jpg")], "not found"),
    "neither file": (lambda t, c, s: ["--data.content", "photo.jpg", "--data.style",
                                      "painting.jpg"],
                     "Image files not found: photo.jpg (--data.content), painting.jpg "
                     "(--data.style)."),
    "not an image": (lambda t, c, s: ["--data.content", str(t / "notes.txt")], "Not a recognised image"),
    "truncated": (lambda t, c, s: ["--data.content", str(truncated_png(t, c))], "truncated"),
    "unknown backbone": (lambda t, c, s: ["--model.backbone", "alexnet9"], "Unknown backbone"),
    "layer out of range": (lambda t, c, s: ["--model.content_layers", "[7]"], "out of range"),
    "negative content weight": (lambda t, c, s: ["--model.content_weight", "-1"], "content_weight"),
    "negative style weight": (lambda t, c, s: ["--model.style_weights", "[1, -1, 1, 1]"], "style_weights"),
    "negative tv weight": (lambda t, c, s: ["--model.tv_weight", "-0.5"], "tv_weight"),
    "style weights count": (lambda t, c, s: ["--model.style_weights", "[1, 1]"], "2 values"),
    "zero image size": (lambda t, c, s: ["--data.image_size", "0"], "image_size"),
    "negative style size": (lambda t, c, s: ["--data.style_size", "-5"], "style_size"),
    "zero steps": (lambda t, c, s: ["--trainer.max_steps", "0"], "max_steps"),
    "nonsense weights file": (lambda t, c, s: ["--model.backbone", "efficientnet_lite0",
                                               "--model.weights", str(t / "notes.txt")], "not a PyTorch"),
    "missing weights file": (lambda t, c, s: ["--model.weights", str(t / "w.pth")], "Weights file not found"),
    "weights of another network": (lambda t, c, s: ["--model.backbone", "resnet18",
                                                    "--model.weights", str(wrong_weights(t))], "does not fit"),
    "zero devices": (lambda t, c, s: ["--trainer.devices", "0"], "--trainer.devices"),
    "devices not a number": (lambda t, c, s: ["--trainer.devices", "abc"], "--trainer.devices"),
    "negative seed": (lambda t, c, s: ["--seed_everything", "-1"], "0 to 4294967295"),
    "seed over 2**32-1": (lambda t, c, s: ["--seed_everything", "99999999999999999999"],
                          "0 to 4294967295"),
    "lr 1e38": (lambda t, c, s: ["--model.lr", "1e38"], "lr must be"),
    "lr 1e300": (lambda t, c, s: ["--model.lr", "1e300"], "lr must be"),
    "image size 100000": (lambda t, c, s: ["--data.image_size", "100000"], "GiB"),
    "image size 10**12": (lambda t, c, s: ["--data.image_size", str(10**12)], "of memory"),
    "style size 100000": (lambda t, c, s: ["--data.style_size", "100000"], "GiB"),
    "thin image made huge": (lambda t, c, s: ["--data.content", str(thin_image(t)),
                                              "--data.image_size", "4096"], "GiB"),
    "empty content": (lambda t, c, s: ["--data.content", ""],
                      "--data.content is empty: give an image file, folder or glob"),
    "empty style": (lambda t, c, s: ["--data.style", ""], "--data.style is empty"),
    "content is a FIFO": (lambda t, c, s: ["--data.content", str(fifo(t))], "named pipe"),
    "content is /dev/zero": (lambda t, c, s: ["--data.content", "/dev/zero"], "Not a regular file"),
    # Lightning's own checks fail deep inside (ValueError, TypeError, ZeroDivisionError, a
    # dtype mismatch, an OverflowError) or let a meaningless value run: one sentence instead.
    "accelerator banana": (lambda t, c, s: ["--trainer.accelerator", "banana"],
                           "--trainer.accelerator must be one of auto, cpu"),
    "zero nodes": (lambda t, c, s: ["--trainer.num_nodes", "0"], "--trainer.num_nodes must be"),
    "devices -1 on a CPU": (lambda t, c, s: ["--trainer.devices", "-1"],
                            "--trainer.devices on a CPU is the number of processes"),
    "99 processes": (lambda t, c, s: ["--trainer.devices", "99", "--trainer.accelerator", "cpu"],
                     "asks for 99 processes, but this machine has"),
    "accumulate 0": (lambda t, c, s: ["--trainer.accumulate_grad_batches", "0"],
                     "--trainer.accumulate_grad_batches must be a whole number of at least 1"),
    "precision 64": (lambda t, c, s: ["--trainer.precision", "64"],
                     "--trainer.precision 64 is not supported"),
    "negative checkpoint period": (lambda t, c, s: ["--checkpoint.every_n_train_steps", "-3"],
                                   "--checkpoint.every_n_train_steps must be a whole number"),
    "int64 max steps": (lambda t, c, s: ["--trainer.max_steps", str(2**63 - 1)],
                        "--trainer.max_steps must be at most 2,147,483,647"),
    "negative snapshot period": (lambda t, c, s: ["--images.every_n_steps", "-2"],
                                 "--images.every_n_steps must be a whole number of at least 0"),
    "no batches": (lambda t, c, s: ["--trainer.limit_train_batches", "0"],
                   "--trainer.limit_train_batches must be above 0"),
}


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch) -> None:
    """LightningCLI warns when pytest's own arguments are in sys.argv beside args=."""
    monkeypatch.setattr("sys.argv", ["cli.py"])


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_sentence_and_exit_1(case, workdir, content_image, style_image, capsys) -> None:
    (workdir / "notes.txt").write_text("these are not pixels")
    extra, expected = BAD_INPUTS[case]
    status = cli.main(tiny_args(content_image, style_image, *extra(workdir, content_image, style_image)))
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and expected in err, err


def test_decompression_bomb_is_refused(workdir, content_image, style_image, capsys, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    assert cli.main(tiny_args(content_image, style_image)) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "too large" in err, err


def test_diverging_run_stops_and_says_so(workdir, content_image, style_image, capsys) -> None:
    status = cli.main(tiny_args(content_image, style_image, "--model.lr", "1e30",
                                "--model.clamp", "1e30", "--trainer.max_steps", "50"))
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert "diverged" in err and len(err.splitlines()) == 1, err


def test_squeezenet_offline_error_and_local_weights_file(workdir, content_image, style_image, capsys,
                                                        monkeypatch) -> None:
    import torch
    import urllib.error
    from torchvision.models import squeezenet1_1

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    homework = ["--config", str(REPO / "configs" / "cs231n" / "the_scream.yaml"),
                "--data.content", str(content_image), "--data.style", str(style_image),
                "--data.image_size", "32", "--data.style_size", "32", "--trainer.max_steps", "3",
                "--trainer.enable_progress_bar", "false"]
    assert cli.main(["fit", *homework]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "squeezenet1_1" in err and "--model.weights" in err
    weights = workdir / "squeezenet1_1.pth"
    torch.save(squeezenet1_1(weights=None).state_dict(), weights)
    assert cli.main(["fit", *homework, "--model.weights", str(weights)]) == 0
    assert (workdir / "runs/cs231n_the_scream/version_0/content__style.png").is_file()


@pytest.mark.parametrize("extra, expected", [
    (["--model.optimizer", "sgd"], "--model.optimizer: Expected a typing.Literal"),
    (["--data.image_size", "abc"], "--data.image_size: Expected a <class 'int'>"),
    (["--model.nonsense", "3"], "--model: Option 'nonsense' is not accepted"),
])
def test_bad_arguments_are_one_line(extra, expected, workdir, content_image, style_image, capsys) -> None:
    assert cli.main(tiny_args(content_image, style_image, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err


def test_error_after_trainer_start_is_alone_on_real_stderr(workdir, style_image) -> None:
    """In a real process, Lightning's start-up lines must not crowd the error on stderr."""
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, str(REPO / "cli.py"), "fit", "--config", STYLE_CONFIG,
         "--data.content", str(workdir / "missing.jpg"), "--data.style", str(style_image),
         "--trainer.max_steps", "2"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines() == [
        f"error: Image file not found: {workdir / 'missing.jpg'}."]


def test_default_root_dir_holds_the_run_and_its_resume(workdir, content_image, style_image) -> None:
    """``--trainer.default_root_dir DIR``: the run goes to DIR/<name>/version_0, and
    ``--ckpt_path last`` with the same DIR continues it there (real processes, tiny backbone)."""
    import cli_processes

    root = workdir / "elsewhere"
    command = tiny_args(content_image, style_image, "--trainer.default_root_dir", str(root))
    stop = '[{"class_path": "fault_injection.TerminateAtStep", "init_args": {"step": 2}}]'
    first = cli_processes.run([*command, "--trainer.callbacks", stop], workdir)
    assert first.returncode == 143, first.stderr[-2000:]
    run = root / "style_transfer" / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (workdir / "runs").exists()

    resumed = cli_processes.run([*command, "--ckpt_path", "last"], workdir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "content__style.png").is_file()
    assert (run / "config_resumed.yaml").is_file()
    assert sorted(p.name for p in (root / "style_transfer").iterdir()) == ["version_0"]
    assert not (workdir / "runs").exists()


def test_explicit_save_dir_wins_over_default_root_dir(workdir, content_image, style_image) -> None:
    assert cli.main(tiny_args(content_image, style_image, "--trainer.default_root_dir", "root",
                              "--trainer.logger.init_args.save_dir", "mine")) == 0
    assert (workdir / "mine" / "style_transfer" / "version_0" / "content__style.png").is_file()
    assert not (workdir / "root" / "style_transfer").exists()
    assert not (workdir / "runs").exists()


def test_only_fit_and_predict_are_offered(workdir, capsys) -> None:
    """No technique has a validation or test step, so those subcommands are not offered."""
    assert cli.main(["validate", "--config", STYLE_CONFIG]) == 2
    err = capsys.readouterr().err.strip()
    assert "invalid choice" in err and "'fit', 'predict'" in err, err


def test_techniques_and_data_by_their_short_names(workdir, content_image) -> None:
    # A process that imported only what tiny_cli.py imports (forked after those imports): the
    # package exports are lazy, so only cli.py's own imports count.
    import cli_processes

    command = ["fit", "--model",
               "FeatureInversion", "--model.backbone", "tiny", "--model.weights", "random",
               "--model.content_layers", "[2]", "--data", "StyleTransferData",
               "--data.content", str(content_image), "--data.style", "null",
               "--data.image_size", "16", "--trainer.max_steps", "2",
               "--trainer.enable_progress_bar", "false"]
    completed = cli_processes.run(command, workdir)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert (workdir / "runs" / "run" / "version_0" / "content.png").is_file()


def billion_laughs(tmp_path: Path) -> Path:
    """Nine levels of ten aliases each: 10**9 strings once expanded."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [{', '.join(['*a' + str(level - 1)] * 10)}]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def binary_config(tmp_path: Path) -> Path:
    path = tmp_path / "model.ckpt"
    path.write_bytes(bytes(range(256)) * 8)
    return path


def config_fifo(tmp_path: Path) -> Path:
    import os

    path = tmp_path / "config.yaml"
    os.mkfifo(path)
    return path


BAD_CONFIGS = {
    "binary": (binary_config, "is not text (UTF-8)"),
    "billion laughs": (billion_laughs, "expands to more than 100,000 values"),
    "named pipe": (config_fifo, "is a named pipe"),
    "folder": (lambda t: t, "is a folder"),
    "unknown name": (lambda t: "no_such_config", "Config no_such_config not found: give a YAML "
                                                 "file or a shipped config's name (channel_atlas"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_config_file_is_one_sentence_not_a_hang(case, workdir, capsys) -> None:
    make, expected = BAD_CONFIGS[case]
    assert cli.main(["fit", "--config", str(make(workdir))]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert not (workdir / "runs").exists()


def test_a_shipped_config_is_found_by_name_from_any_folder(workdir, capsys) -> None:
    for given in ("style_transfer", "configs/style_transfer.yaml", "cs231n/the_scream"):
        with pytest.raises(SystemExit):
            cli.main(["fit", "--config", given, "--print_config"])
        assert "class_path: lightning_modules.StyleTransfer" in capsys.readouterr().out, given
    # A file of the user's own with a shipped config's name wins.
    (workdir / "style_transfer").write_text("trainer: {max_steps: 7}\n")
    with pytest.raises(SystemExit):
        cli.main(["fit", "--config", "style_transfer", "--print_config"])
    assert "max_steps: 7" in capsys.readouterr().out


def test_a_run_with_fewer_steps_than_automatic_scales_keeps_the_finest(workdir, content_image,
                                                                        style_image) -> None:
    from lightning_modules.style_transfer.scales import ScalePlan

    assert ScalePlan("auto").sides(256) == [128, 181, 256]
    assert ScalePlan("auto").sides(256, most=2) == [181, 256]
    # The two-step run of the default config: it was refused (3 scales, 2 steps).
    assert cli.main(tiny_args(content_image, style_image, "--data.image_size", "200",
                              "--trainer.max_steps", "1")) == 0
    [run] = run_dirs(workdir)
    assert min(Image.open(run / "content__style.png").size) == 200


def test_a_run_that_fails_before_its_first_step_leaves_no_folder_it_made(workdir, content_image,
                                                                          style_image) -> None:
    bad = tiny_args(content_image, style_image, "--model.content_layers", "[99]")
    assert cli.main(bad) == 1
    assert not (workdir / "runs").exists()  # neither version_0 nor runs/style_transfer
    # Folders that were there before stay, with what they hold.
    (workdir / "runs" / "style_transfer" / "version_0").mkdir(parents=True)
    (workdir / "runs" / "style_transfer" / "version_0" / "notes.txt").write_text("mine")
    assert cli.main(bad) == 1
    assert [p.name for p in (workdir / "runs" / "style_transfer").iterdir()] == ["version_0"]
    assert (workdir / "runs" / "style_transfer" / "version_0" / "notes.txt").read_text() == "mine"

"""Faults, in real processes: SIGKILL at any step, full disks, bad checkpoints, runs that must
not touch earlier ones. Each test reproduces a defect that was found by hand (issue 16)."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

import cli_processes
from conftest import write_test_image

REPO = Path(__file__).resolve().parents[1]
STEPS = 6  # per chunk; 3 chunks of one job each


def make_photos(root: Path) -> Path:
    """Three content photos in ``root/photos`` and ``root/style.png``; ``root``."""
    folder = root / "photos"
    folder.mkdir()
    for seed in range(3):
        write_test_image(folder / f"c{seed}.png", seed=seed)
    write_test_image(root / "style.png", seed=7)
    return root


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    return make_photos(tmp_path)


def style_args(root: Path, *extra: str) -> list[str]:
    """Three content photos, one chunk each, STEPS steps: snapshots and checkpoints every 2."""
    return [
        "fit", "--config", str(REPO / "configs" / "style_transfer.yaml"),
        "--model.backbone", "tiny", "--model.weights", "random",
        "--model.content_layers", "[2]", "--model.style_layers", "[0, 1, 2, 3]",
        "--model.style_weights", "[1, 1, 1, 1]",
        "--data.content", str(root / "photos"), "--data.style", str(root / "style.png"),
        "--data.image_size", "24", "--data.batch_size", "1",
        "--trainer.max_steps", str(STEPS), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
        "--images.every_n_steps", "2", "--checkpoint.every_n_train_steps", "2", *extra,
    ]


def kill_at(step: int, during_checkpoint: bool = False) -> list[str]:
    callback = {"class_path": "fault_injection.KillAtStep",
                "init_args": {"step": step, "during_checkpoint": during_checkpoint}}
    return ["--trainer.callbacks", json.dumps([callback])]


def run(args: list[str], cwd: Path, limit_file_bytes: int | None = None
        ) -> subprocess.CompletedProcess:
    """``python tests/tiny_cli.py ARGS`` in a process of its own (forked after the imports)."""
    return cli_processes.run(args, cwd, limit_file_bytes)


def runs(root: Path) -> list[Path]:
    return sorted((root / "runs" / "style_transfer").glob("version_*"))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def assert_same_results(run: Path, reference: Path) -> None:
    for name in ("c0__style", "c1__style", "c2__style"):
        assert np.array_equal(pixels(run / f"{name}.png"), pixels(reference / f"{name}.png")), name
    snapshots = sorted(p.name for p in (reference / "snapshots").glob("*.png"))
    assert sorted(p.name for p in (run / "snapshots").glob("*.png")) == snapshots
    for snapshot in snapshots:
        assert np.array_equal(pixels(run / "snapshots" / snapshot),
                              pixels(reference / "snapshots" / snapshot)), snapshot
    rows = [list(csv.reader(open(r / "losses.csv"))) for r in (run, reference)]
    assert rows[0] == rows[1]


def one_error_line(completed: subprocess.CompletedProcess) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert "Traceback" not in completed.stderr, completed.stderr[-3000:]
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert lines and lines[-1].startswith("error: "), completed.stderr[-3000:]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, errors
    return lines[-1]


def main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """``cli.main`` in this process (for faults before or between runs: quicker than a child)."""
    import cli

    capsys.readouterr()
    status = cli.main(args)
    return status, capsys.readouterr().err


def one_error(status_and_err: tuple[int, str]) -> str:
    status, err = status_and_err
    return one_error_line(subprocess.CompletedProcess([], status, "", err))


@pytest.fixture
def in_photos(photos: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``photos``, as the working folder of in-process runs."""
    monkeypatch.chdir(photos)
    monkeypatch.setattr("sys.argv", ["cli.py"])
    return photos


def interrupted_run(photos: Path, capsys: pytest.CaptureFixture, step: int = 3,
                    extra: Sequence[str] = ()) -> Path:
    """A run stopped by SIGTERM after ``step`` steps, in this process; its folder."""
    terminate = [{"class_path": "fault_injection.TerminateAtStep", "init_args": {"step": step}}]
    with pytest.raises(SystemExit) as stopped:
        main([*style_args(photos, *extra), "--trainer.callbacks", json.dumps(terminate)], capsys)
    assert stopped.value.code == 128 + signal.SIGTERM
    [run_folder] = runs(photos)
    return run_folder


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of an uninterrupted run of ``style_args`` (made once per test process, on the
    same photos): what stopped and resumed runs of that command line must end with."""
    import cli

    root = make_photos(tmp_path_factory.mktemp("uninterrupted"))
    folder = os.getcwd()
    os.chdir(root)  # where the run's runs/ folder goes
    try:
        with mock.patch.object(sys, "argv", ["cli.py"]):
            assert cli.main(style_args(root)) == 0
    finally:
        os.chdir(folder)
    [run_folder] = runs(root)
    return run_folder


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])


# --------------------------------------------------------------------------- SIGKILL, resume
def test_sigkill_at_random_steps_then_last_finishes_like_an_uninterrupted_run(
        in_photos: Path, capsys) -> None:
    """Killed three times (once while saving a checkpoint), the run still ends with an
    uninterrupted run's pictures and losses; --ckpt_path last always finds the newest."""
    photos = in_photos
    assert main(style_args(photos), capsys)[0] == 0
    [reference] = runs(photos)
    total = 3 * STEPS
    kills = sorted(random.Random(16).sample(range(2, total, 2), 3))  # checkpoints every 2
    kills[0] += 1  # one between checkpoints, one while saving one, one right after
    attempts = [kill_at(kills[0]), kill_at(kills[1], during_checkpoint=True), kill_at(kills[2])]
    for number, kill in enumerate(attempts):
        resume = ["--ckpt_path", "last"] if number else []
        killed = run([*style_args(photos), *kill, *resume], photos)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = run([*style_args(photos), "--ckpt_path", "last"], photos)
    assert finished.returncode == 0, finished.stderr[-3000:]
    [_, resumed] = runs(photos)
    assert_same_results(resumed, reference)
    checkpoints = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt", "last.previous.ckpt"]  # no last-v1.ckpt
    assert checkpoint_step(resumed / "checkpoints" / "last.ckpt") == total
    assert not list(resumed.rglob(".*partial*"))  # no temporary file left by the kills


def test_a_checkpoint_cut_short_falls_back_to_the_previous_one(in_photos: Path, capsys,
                                                              uninterrupted: Path) -> None:
    photos = in_photos
    interrupted = interrupted_run(photos, capsys, step=9)  # saved at 8 (previous) and at 9
    reference = uninterrupted
    last = interrupted / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # what a full disk did to non-atomic writes
    status, err = main([*style_args(photos), "--ckpt_path", str(last)], capsys)
    assert status == 0, err[-3000:]
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "not a readable checkpoint" in warnings[0], warnings
    assert "going on from step 8" in warnings[0], warnings
    assert_same_results(interrupted, reference)


def test_no_usable_checkpoint_is_one_sentence(in_photos: Path, capsys) -> None:
    photos = in_photos
    interrupted = interrupted_run(photos, capsys)
    for name in ("last.ckpt", "last.previous.ckpt"):
        (interrupted / "checkpoints" / name).write_bytes(b"PK\x03\x04 not really")
    line = one_error(main([*style_args(photos), "--ckpt_path", "last"], capsys))
    assert "No usable checkpoint in" in line and "not a readable checkpoint" in line, line


def test_full_disk_while_checkpointing_leaves_the_good_checkpoint(in_photos: Path,
                                                                 capsys) -> None:
    """A checkpoint that no longer fits: one sentence, and the last checkpoint is the previous
    good one (never a truncated file); after space is freed, last goes on."""
    photos = in_photos
    small_sheets = ["--images.sheet_height", "24"]  # smaller than a checkpoint
    interrupted = interrupted_run(photos, capsys, step=5, extra=small_sheets)
    assert main(style_args(photos, *small_sheets), capsys)[0] == 0
    reference = runs(photos)[1]
    last = interrupted / "checkpoints" / "last.ckpt"
    size, step = last.stat().st_size, checkpoint_step(last)
    # The images written before the next checkpoint (the loss curve comes at the end).
    largest_other = max(p.stat().st_size for p in reference.rglob("*.png")
                        if p.name != "loss_curve.png")
    assert largest_other < size  # so that the checkpoint is the file that does not fit
    full = run([*style_args(photos, *small_sheets), "--ckpt_path", str(last)], photos,
               limit_file_bytes=(largest_other + size) // 2)  # a disk that is full (a child)
    line = one_error_line(full)
    assert "Cannot write checkpoint" in line and "File too large" in line, line
    assert checkpoint_step(last) == step  # still the good one, whole
    assert not list(interrupted.rglob(".*partial*"))
    status, err = main([*style_args(photos, *small_sheets), "--ckpt_path", str(last)], capsys)
    assert status == 0, err[-3000:]
    assert_same_results(interrupted, reference)


# --------------------------------------------------------------------------- earlier runs kept
def test_an_existing_version_is_refused_and_left_as_it_was(in_photos: Path, capsys) -> None:
    photos = in_photos
    assert main(style_args(photos, "--trainer.max_steps", "2"), capsys)[0] == 0
    [first] = runs(photos)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    line = one_error(main([*style_args(photos), "--trainer.logger.init_args.version", "0"],
                          capsys))
    assert "already holds a run" in line and "--ckpt_path" in line, line
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before


def test_resume_keeps_the_interrupted_parts_hparams_and_metrics(in_photos: Path, capsys) -> None:
    photos = in_photos
    interrupted = interrupted_run(photos, capsys, step=7)  # metrics logged at 6
    hparams = (interrupted / "hparams.yaml").read_text()
    metrics = (interrupted / "metrics.csv").read_text()
    status, err = main([*style_args(photos), "--model.tv_weight", "0.5", "--ckpt_path", "last"],
                       capsys)
    assert status == 0, err[-3000:]
    assert (interrupted / "hparams_before_resume.yaml").read_text() == hparams
    assert "tv_weight: 0.5" in (interrupted / "hparams.yaml").read_text()
    assert (interrupted / "metrics_before_resume.csv").read_text() == metrics


def test_runs_started_together_get_their_own_folders(photos: Path) -> None:
    short = style_args(photos, "--trainer.max_steps", "2")
    processes = [cli_processes.CliProcess(short, photos) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr[-3000:]
    first, second = runs(photos)
    assert_same_results(first, second)


# --------------------------------------------------------------------------- bad checkpoints
def jpeg(root: Path) -> Path:
    path = root / "photo.ckpt"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")
    return path


def state_dict(root: Path) -> Path:
    path = root / "weights.ckpt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    return path


class Unsafe:
    """A pickled object that ``weights_only`` loading refuses."""


def unsafe_pickle(root: Path) -> Path:
    path = root / "unsafe.ckpt"
    torch.save({"payload": Unsafe()}, path)
    return path


BAD_CHECKPOINTS = {
    "a JPEG": (jpeg, "not a readable checkpoint"),
    "a plain state dict": (state_dict, "not a checkpoint of an image-optimization run"),
    "a pickle weights_only refuses": (unsafe_pickle, "not a readable checkpoint"),
    "a folder": (lambda root: root / "photos", "is a folder"),
    "a URL": (lambda root: "http://example.com/last.ckpt", "not a URL: http://example.com/"),
    "a missing file": (lambda root: root / "nope.ckpt", "does not exist"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_sentence_and_leaves_nothing(case: str, in_photos: Path,
                                                          capsys) -> None:
    photos = in_photos
    make, expected = BAD_CHECKPOINTS[case]
    line = one_error(main([*style_args(photos), "--ckpt_path", str(make(photos))], capsys))
    assert expected in line, line
    assert "weights_only" not in line
    assert runs(photos) == []  # no empty version_N


def test_failed_resume_leaves_the_run_as_it_was(in_photos: Path, capsys) -> None:
    photos = in_photos
    interrupted = interrupted_run(photos, capsys)
    before = {p.relative_to(interrupted): p.read_bytes() for p in interrupted.rglob("*")
              if p.is_file()}
    line = one_error(main([*style_args(photos), "--data.image_size", "32", "--ckpt_path",
                           "last"], capsys))
    assert "checkpoint's images are 24x" in line and "config.yaml" in line, line
    assert {p.relative_to(interrupted): p.read_bytes() for p in interrupted.rglob("*")
            if p.is_file()} == before
    status, err = main([*style_args(photos), "--ckpt_path", "last"], capsys)
    assert status == 0, err[-3000:]
    assert sorted(p.name for p in interrupted.glob("config*.yaml")) == [
        "config.yaml", "config_resumed.yaml"]


def test_checkpoint_hyperparameters_never_choose_a_class(in_photos: Path, capsys) -> None:
    """Options come from the command line: a class named in a checkpoint is never built."""
    photos = in_photos
    interrupted = interrupted_run(photos, capsys)
    path = interrupted / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["_class_path"] = "subprocess.Popen"
    checkpoint["hyper_parameters"]["tv_weight"] = 123.0
    torch.save(checkpoint, path)
    status, err = main([*style_args(photos), "--ckpt_path", str(path)], capsys)
    assert status == 0, err[-3000:]
    assert "tv_weight: 123" not in (interrupted / "hparams.yaml").read_text()


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(in_photos: Path,
                                                                capsys) -> None:
    photos = in_photos
    failed = main([*style_args(photos), "--data.content", str(photos / "missing.png")], capsys)
    assert "Image file not found" in one_error(failed)
    assert runs(photos) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_runs_folder_is_one_sentence(photos: Path) -> None:
    (photos / "runs").mkdir()
    (photos / "runs").chmod(0o555)
    try:
        line = one_error_line(run(style_args(photos), photos))
    finally:
        (photos / "runs").chmod(0o755)
    assert "Cannot create a run folder" in line and "Permission denied" in line, line


def test_a_runs_folder_that_cannot_be_made_is_one_sentence(in_photos: Path, capsys) -> None:
    photos = in_photos
    (photos / "runs").mkdir()
    (photos / "runs" / "style_transfer").write_text("a file where the runs' folder should be")
    line = one_error(main(style_args(photos), capsys))
    assert "Cannot create a run folder" in line, line


# --------------------------------------------------------------------------- colliding names
def test_job_names_that_would_collide_are_told_apart_before_the_first_step(in_photos: Path,
                                                                          capsys) -> None:
    """Styles "x" and "x_sheet" (x's sheet is x_sheet.png), and a texture named like the
    run's loss curve: every job's result is kept, and the run's own files too."""
    photos = in_photos
    styles = photos / "styles"
    styles.mkdir()
    for seed, name in enumerate(("x", "x_sheet", "loss_curve")):
        write_test_image(styles / f"{name}.png", seed=seed)
    status, err = main([*style_args(photos, "--trainer.max_steps", "2"), "--data.content",
                        str(photos / "photos" / "c0.png"), "--data.style", str(styles),
                        "--data.style_mode", "each"], capsys)
    assert status == 0, err[-3000:]
    [run_folder] = runs(photos)
    written = {p.name for p in run_folder.glob("*.png")}
    assert {"c0__x.png", "c0__x_sheet.png", "c0__x_sheet_2.png", "c0__x_sheet_2_sheet.png",
            "c0__loss_curve.png", "loss_curve.png"} <= written, written
    texture = ["fit", "--config", str(REPO / "configs" / "texture_synthesis.yaml"),
               "--model.backbone", "tiny", "--model.weights", "random",
               "--model.style_layers", "[0, 1]", "--model.style_weights", "[1, 1]",
               "--data.style", str(styles / "loss_curve.png"), "--data.image_size", "16",
               "--trainer.max_steps", "2", "--trainer.enable_progress_bar", "false"]
    status, err = main(texture, capsys)
    assert status == 0, err[-3000:]
    textures = photos / "runs" / "texture_synthesis" / "version_0"
    assert (textures / "loss_curve_2.png").is_file() and (textures / "loss_curve.png").is_file()


# --------------------------------------------------------------------------- reports on resume
def terminate_at(step: int) -> list[str]:
    callback = {"class_path": "fault_injection.TerminateAtStep", "init_args": {"step": step}}
    return ["--trainer.callbacks", json.dumps([callback])]


def stop_and_resume(args: list[str], steps: Sequence[int], capsys) -> None:
    """Run ``args`` stopped by SIGTERM after each of ``steps``, resuming each time, to the end."""
    for number, step in enumerate(steps):
        with pytest.raises(SystemExit) as stopped:
            main([*args, *terminate_at(step), *(["--ckpt_path", "last"] if number else [])],
                 capsys)
        assert stopped.value.code == 128 + signal.SIGTERM
    status, err = main([*args, "--ckpt_path", "last"], capsys)
    assert status == 0, err[-3000:]


def test_class_report_of_a_run_stopped_at_and_between_chunk_ends(in_photos: Path,
                                                                 capsys) -> None:
    """Stopped at the last step of a chunk and in the middle of the next: the sheet of every
    class, each class once, as in an uninterrupted run."""
    args = ["fit", "--config", str(REPO / "configs" / "class_visualization.yaml"),
            "--model.backbone", "tiny", "--model.weights", "random", "--model.image_size", "16",
            "--model.max_jitter", "2", "--model.judge", "null", "--data.classes", "[76, 78, 113]",
            "--data.batch_size", "1", "--trainer.max_steps", "3",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    stop_and_resume(args, [3, 5], capsys)
    assert main(args, capsys)[0] == 0
    resumed, reference = sorted((in_photos / "runs" / "class_visualization").glob("version_*"))
    for name in ("0076_tarantula", "0078_tick", "0113_snail", "classes_sheet",
                 "class_probability"):
        assert np.array_equal(pixels(resumed / f"{name}.png"),
                              pixels(reference / f"{name}.png")), name


def test_fooling_report_of_a_stopped_run_lists_each_job_once(in_photos: Path, capsys) -> None:
    args = ["fit", "--config", str(REPO / "configs" / "fooling.yaml"), "--model.backbone",
            "tiny", "--model.weights", "random", "--model.target", "[23, 10]",
            "--data.image_size", "32", "--data.batch_size", "2", "--trainer.max_steps", "60",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    stop_and_resume(args, [2], capsys)
    assert main(args, capsys)[0] == 0
    resumed, reference = sorted((in_photos / "runs" / "fooling").glob("version_*"))
    rows = [list(csv.DictReader(open(run_folder / "fooling_results.csv")))
            for run_folder in (resumed, reference)]
    assert len(rows[1]) == 6 and rows[0] == rows[1]
    for row in rows[1]:
        assert np.array_equal(pixels(resumed / f"{row['name']}.png"),
                              pixels(reference / f"{row['name']}.png"))


def test_checkpointing_can_be_turned_off(in_photos: Path, capsys) -> None:
    status, err = main(style_args(in_photos, "--trainer.max_steps", "2",
                                  "--trainer.enable_checkpointing", "false"), capsys)
    assert status == 0, err[-3000:]
    [run_folder] = runs(in_photos)
    assert (run_folder / "c0__style.png").is_file()
    assert not (run_folder / "checkpoints").exists()


# --------------------------------------------------------------------------- found in review
def folder_bytes(folder: Path) -> dict[Path, bytes]:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_chunk_that_ended_early_is_not_stepped_again_after_a_kill(in_photos: Path,
                                                                   capsys) -> None:
    """Fooling chunks end when every image is fooled; killed after the checkpoint of that
    step, the resumed run must not take one more step (losses.csv would gain a row)."""
    args = ["fit", "--config", str(REPO / "configs" / "fooling.yaml"), "--model.backbone",
            "tiny", "--model.weights", "random", "--model.target", "[23, 10]",
            "--data.image_size", "32", "--data.batch_size", "2", "--model.lr", "4",
            "--trainer.max_steps", "10", "--checkpoint.every_n_train_steps", "2",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert main(args, capsys)[0] == 0
    reference = sorted((in_photos / "runs" / "fooling").glob("version_*"))[0]
    assert run([*args, *kill_at(5)], in_photos).returncode == -signal.SIGKILL
    status, err = main([*args, "--ckpt_path", "last"], capsys)
    assert status == 0, err[-3000:]
    resumed = sorted((in_photos / "runs" / "fooling").glob("version_*"))[1]
    assert (resumed / "losses.csv").read_text() == (reference / "losses.csv").read_text()
    assert ((resumed / "fooling_results.csv").read_text()
            == (reference / "fooling_results.csv").read_text())


def test_last_never_continues_an_older_run_than_the_newest(in_photos: Path, capsys) -> None:
    assert main(style_args(in_photos, "--trainer.max_steps", "2"), capsys)[0] == 0
    [finished] = runs(in_photos)
    before = folder_bytes(finished)
    killed = run([*style_args(in_photos), *kill_at(1)], in_photos)  # before any checkpoint
    assert killed.returncode == -signal.SIGKILL
    line = one_error(main([*style_args(in_photos), "--ckpt_path", "last"], capsys))
    assert "version_1, stopped before its first checkpoint" in line, line
    assert folder_bytes(finished) == before


def test_resuming_a_finished_run_changes_nothing(in_photos: Path, capsys) -> None:
    assert main(style_args(in_photos, "--trainer.max_steps", "2"), capsys)[0] == 0
    [finished] = runs(in_photos)
    before = folder_bytes(finished)
    for _ in range(2):
        status, err = main([*style_args(in_photos, "--trainer.max_steps", "2"), "--ckpt_path",
                            "last"], capsys)
        assert status == 0 and "already taken its 6 steps" in err, err[-3000:]
    assert folder_bytes(finished) == before


@pytest.mark.parametrize("change, expected", [
    (["--data.content", "photos/c0.png"], "other jobs than this run"),  # fewer jobs
    (["--model.optimizer", "lbfgs"], "optimizer is Adam, this run's LBFGS"),
])
def test_resume_with_other_jobs_or_optimizer_is_one_sentence(change: list[str], expected: str,
                                                             in_photos: Path, capsys) -> None:
    interrupted = interrupted_run(in_photos, capsys, step=7)
    before = folder_bytes(interrupted)
    line = one_error(main([*style_args(in_photos), *change, "--ckpt_path", "last"], capsys))
    assert expected in line, line
    assert folder_bytes(interrupted) == before


def test_sigterm_at_a_logging_step_keeps_its_metrics_row(in_photos: Path, capsys,
                                                         uninterrupted: Path) -> None:
    reference = uninterrupted
    terminate = [{"class_path": "fault_injection.TerminateAtStep", "init_args": {"step": 6}}]
    with pytest.raises(SystemExit):
        main([*style_args(in_photos), "--trainer.callbacks", json.dumps(terminate)], capsys)
    assert main([*style_args(in_photos), "--ckpt_path", "last"], capsys)[0] == 0
    [stopped] = runs(in_photos)

    def steps(*files: Path) -> list[str]:
        return sorted(row["step"] for f in files for row in csv.DictReader(open(f))
                      if row.get("loss"))
    assert steps(stopped / "metrics_before_resume.csv", stopped / "metrics.csv") == steps(
        reference / "metrics.csv")


def test_coarse_to_fine_run_killed_within_each_scale_finishes_like_an_uninterrupted_one(
        in_photos: Path, capsys) -> None:
    """Scales 12 then 24 px, 3 steps each: killed at step 5 (the checkpoint of step 4 holds a
    24 px image) and step 9 (that of step 8 holds a 12 px one), the run still ends as one that
    never stopped, scale snapshots included."""
    photos = in_photos
    scales = ["--model.scales", "[12]"]
    assert main(style_args(photos, *scales), capsys)[0] == 0
    [reference] = runs(photos)
    assert (reference / "snapshots" / "c0__style_scale12px.png").exists()
    for number, step in enumerate((5, 9)):
        resume = ["--ckpt_path", "last"] if number else []
        killed = run([*style_args(photos, *scales), *kill_at(step), *resume], photos)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finished = run([*style_args(photos, *scales), "--ckpt_path", "last"], photos)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_results(runs(photos)[1], reference)


def test_a_fourier_run_stopped_within_a_scale_finishes_like_an_uninterrupted_one(
        in_photos: Path, capsys) -> None:
    """The spectrum changes shape between scales and is resized through its picture: a run
    stopped in the second scale (its checkpoint holds a 24 px spectrum) still ends as one that
    never stopped."""
    extra = ["--model.scales", "[12]", "--model.parameterization", "fourier",
             "--model.optimizer", "lbfgs", "--model.lr", "1"]
    assert main(style_args(in_photos, *extra), capsys)[0] == 0
    [reference] = runs(in_photos)
    terminate = [{"class_path": "fault_injection.TerminateAtStep", "init_args": {"step": 10}}]
    with pytest.raises(SystemExit):
        main([*style_args(in_photos, *extra), "--trainer.callbacks", json.dumps(terminate)],
             capsys)
    assert main([*style_args(in_photos, *extra), "--ckpt_path", "last"], capsys)[0] == 0
    assert_same_results(runs(in_photos)[1], reference)


# --------------------------------------------------------------------------- issue 24: hostile
def test_a_file_named_like_the_next_version_is_passed_over(in_photos: Path, capsys) -> None:
    folder = in_photos / "runs" / "style_transfer"
    folder.mkdir(parents=True)
    (folder / "version_0").write_text("not a run")
    status, err = main(style_args(in_photos, "--trainer.max_steps", "2"), capsys)
    assert status == 0, err[-3000:]
    assert (folder / "version_0").read_text() == "not a run"
    assert (folder / "version_1" / "c0__style.png").is_file()


@pytest.mark.parametrize("how", ["a checkpoint outside a run", "an explicit version"])
def test_a_file_in_the_way_of_the_run_folder_is_one_sentence(how: str, in_photos: Path,
                                                            capsys) -> None:
    extra: list[str] = []
    if how == "a checkpoint outside a run":
        interrupted = interrupted_run(in_photos, capsys)
        checkpoint = in_photos / "copied.ckpt"
        checkpoint.write_bytes((interrupted / "checkpoints" / "last.ckpt").read_bytes())
        extra = ["--ckpt_path", str(checkpoint)]
        (in_photos / "runs" / "style_transfer" / "version_1").write_text("not a run")
    else:
        (in_photos / "runs" / "style_transfer").mkdir(parents=True)
        (in_photos / "runs" / "style_transfer" / "version_0").write_text("not a run")
        extra = ["--trainer.logger.init_args.version", "0"]
    status, err = main([*style_args(in_photos), *extra], capsys)
    if status != 0:
        one_error((status, err))
    assert "Traceback" not in err


def test_a_read_only_run_folder_on_resume_is_one_sentence_and_loses_nothing(
        in_photos: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """Root may write into a read-only folder, so the refusal is simulated: renaming the
    interrupted part's metrics.csv fails as it does for a user in a read-only folder."""
    interrupted = interrupted_run(in_photos, capsys, step=7)
    before = folder_bytes(interrupted)
    rename = Path.rename

    def refused(self: Path, target):
        if self.resolve().parent == interrupted.resolve():
            raise PermissionError(13, "Permission denied", str(self))
        return rename(self, target)
    monkeypatch.setattr(Path, "rename", refused)
    line = one_error(main([*style_args(in_photos), "--ckpt_path", "last"], capsys))
    assert "Permission denied" in line, line
    assert folder_bytes(interrupted) == before


def test_a_content_and_a_style_with_200_character_names_run(in_photos: Path, capsys) -> None:
    """Their job's name was too long for the file system (OSError: File name too long): long
    names keep their beginning and gain a short hash, so two of them stay apart."""
    names = ["c" * 199 + "1", "c" * 199 + "2", "s" * 200]
    for seed, name in enumerate(names):
        write_test_image(in_photos / "long" / f"{name}.png", seed=seed)
    status, err = main([*style_args(in_photos, "--trainer.max_steps", "2"),
                        "--data.content", str(in_photos / "long" / "c*.png"),
                        "--data.style", str(in_photos / "long" / ("s" * 200 + ".png"))], capsys)
    assert status == 0, err[-3000:]
    [run_folder] = runs(in_photos)
    results = sorted(p.name for p in run_folder.glob("c*.png") if not p.stem.endswith("_sheet"))
    assert len(results) == 2 and all(len(name.encode()) <= 255 for name in results), results
    assert all(name.startswith("c" * 100) for name in results), results
    assert max(len(p.name.encode()) for p in run_folder.rglob("*")) <= 255


def finished_run_with(in_photos: Path, capsys, bad_last: Callable[[Path], None]) -> Path:
    """A finished 2-step run whose checkpoints/last.ckpt was then spoiled by ``bad_last``."""
    assert main(style_args(in_photos, "--trainer.max_steps", "2"), capsys)[0] == 0
    [run_folder] = runs(in_photos)
    bad_last(run_folder / "checkpoints" / "last.ckpt")
    return run_folder


def malicious(path: Path) -> None:
    torch.save({"payload": Unsafe()}, path)


def test_a_refused_last_checkpoint_and_the_good_previous_are_both_kept(in_photos: Path,
                                                                       capsys) -> None:
    """A malicious last.ckpt beside a good previous one: the run goes on from the previous, and
    neither file is deleted; a resume with nothing to do leaves the folder as it was."""
    def malicious_beside_the_last(last: Path) -> None:
        last.with_name("last.previous.ckpt").write_bytes(last.read_bytes())  # step 6 twice
        malicious(last)
    finished = finished_run_with(in_photos, capsys, malicious_beside_the_last)
    before = folder_bytes(finished)
    status, err = main([*style_args(in_photos, "--trainer.max_steps", "2"), "--ckpt_path",
                        "last"], capsys)
    assert status == 0 and "nothing to do" in err, err[-3000:]
    assert "not a readable checkpoint" in err and "kept" in err, err[-3000:]
    assert folder_bytes(finished) == before


def test_a_refused_last_checkpoint_survives_the_run_that_goes_on_from_the_previous(
        in_photos: Path, capsys, uninterrupted: Path) -> None:
    interrupted = interrupted_run(in_photos, capsys, step=9)  # saved at 8 (previous) and at 9
    last = interrupted / "checkpoints" / "last.ckpt"
    malicious(last)
    spoiled = last.read_bytes()
    reference = uninterrupted
    status, err = main([*style_args(in_photos), "--ckpt_path", str(last)], capsys)
    assert status == 0 and "going on from step 8" in err, err[-3000:]
    assert_same_results(interrupted, reference)
    assert (interrupted / "checkpoints" / "last.unusable.ckpt").read_bytes() == spoiled
    assert checkpoint_step(last) == 3 * STEPS


def test_an_unreadable_last_checkpoint_is_said_and_never_overwritten(
        in_photos: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A last.ckpt of mode 000 was called corrupt and replaced by the next save. Root reads any
    file, so the PermissionError is simulated there; other users get the real one."""
    interrupted = interrupted_run(in_photos, capsys, step=5)
    last = interrupted / "checkpoints" / "last.ckpt"
    before = folder_bytes(interrupted)
    last.chmod(0)
    load = torch.load

    def refused(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == last.resolve():
            raise PermissionError(13, "Permission denied", str(file))
        return load(file, *args, **kwargs)
    if os.geteuid() == 0:
        monkeypatch.setattr(torch, "load", refused)
    try:
        line = one_error(main([*style_args(in_photos), "--ckpt_path", "last"], capsys))
    finally:
        last.chmod(0o644)
    assert "Cannot read checkpoint" in line and "permission denied" in line, line
    assert "corrupt" not in line, line
    assert folder_bytes(interrupted) == before


def test_a_checkpoint_cut_by_a_full_disk_inside_torch_save_is_one_sentence(photos: Path) -> None:
    """torch.save's zip writer turns the OSError into a RuntimeError when the limit is hit
    inside a record (a limit of 8000 bytes here): it traced back."""
    full = run(style_args(photos, "--images.sheet_height", "24"), photos, limit_file_bytes=8000)
    line = one_error_line(full)
    assert "Cannot write" in line and "File too large" in line, line


def test_a_full_disk_at_the_end_leaves_a_resume_that_writes_the_end_files(
        in_photos: Path, capsys) -> None:
    """The loss curve did not fit after the last step's checkpoint was saved: the resume found
    nothing to do and the run never got its loss curve (or losses.csv). The last step is saved
    after the end files now, so the resume takes that step again and writes them."""
    small = ["--images.sheet_height", "24", "--images.every_n_steps", "0"]
    assert main(style_args(in_photos, *small), capsys)[0] == 0
    [reference] = runs(in_photos)
    checkpoint = (reference / "checkpoints" / "last.ckpt").stat().st_size
    curve = (reference / "loss_curve.png").stat().st_size
    others = [p.stat().st_size for p in reference.rglob("*") if p.is_file()
              and p.suffix in (".png", ".csv", ".yaml") and p.name != "loss_curve.png"]
    limit = (checkpoint + curve) // 2
    assert max(others) < checkpoint < limit < curve
    full = run(style_args(in_photos, *small), in_photos, limit_file_bytes=limit)
    assert "loss_curve.png (File too large)" in one_error_line(full)
    failed = runs(in_photos)[1]
    status, err = main([*style_args(in_photos, *small), "--ckpt_path", "last"], capsys)
    assert status == 0 and "nothing to do" not in err, err[-3000:]
    assert (failed / "loss_curve.png").is_file()
    for name in ("losses.csv", "c0__style.png", "c2__style.png"):
        assert (failed / name).read_bytes() == (reference / name).read_bytes(), name


def test_a_full_disk_while_writing_the_config_is_one_sentence(photos: Path) -> None:
    full = run(style_args(photos), photos, limit_file_bytes=1000)  # config.yaml is ~2.8 kB
    line = one_error_line(full)
    assert "File too large" in line, line
    assert runs(photos) == []


def test_ctrl_c_while_starting_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGINT while the libraries load, in a real process of the real command: no traceback."""
    started = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "fit", "--config",
                                "style_transfer"], cwd=tmp_path, stderr=subprocess.PIPE,
                               text=True)
    import time

    time.sleep(0.5)  # torch alone takes seconds to import
    started.send_signal(signal.SIGINT)
    _, err = started.communicate(timeout=120)
    assert started.returncode == 130
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: "), err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_the_run_is_built_is_one_line_and_leaves_no_folder(
        photos: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    import cli
    from lightning_modules.backbones import registry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.chdir(photos)
    monkeypatch.setattr(registry, "load_backbone", interrupted)
    monkeypatch.setattr("lightning_modules.image_optimization.module.load_backbone", interrupted)
    assert cli.main(style_args(photos)) == 130
    err = capsys.readouterr().err.strip()
    assert err == "error: stopped (Ctrl+C) before the run's first step; nothing was kept."
    assert not (photos / "runs").exists()


def test_a_run_in_use_is_not_continued_or_cleaned_up_by_another_resume(in_photos: Path,
                                                                       capsys) -> None:
    """Two resumes started together: the loser's clean-up deleted the winner's
    config_resumed.yaml. Now the run folder is held by whoever continues it."""
    import fcntl

    with pytest.raises(SystemExit):
        main([*style_args(in_photos), *terminate_at(3)], capsys)
    [run] = (in_photos / "runs" / "style_transfer").glob("version_*")
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    # Another process holds the run (the winning resume): this one is refused, changes nothing.
    holder = os.open(run, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        status, err = main([*style_args(in_photos), "--ckpt_path", "last"], capsys)
    finally:
        os.close(holder)
    assert status == 1 and "is in use by another process" in err.strip().splitlines()[-1], err
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before
    # Once it is free, the resume goes on.
    assert main([*style_args(in_photos), "--ckpt_path", "last"], capsys)[0] == 0
    assert (run / "config_resumed.yaml").is_file()


def test_two_resumes_started_together_leave_the_winners_files(in_photos: Path, capsys) -> None:
    photos = in_photos
    with pytest.raises(SystemExit):
        main([*style_args(photos), *terminate_at(3)], capsys)
    resume = style_args(photos, "--ckpt_path", "last")
    both = [cli_processes.CliProcess(resume, photos) for _ in range(2)]
    outcomes = [(process.wait(timeout=300), process.stderr) for process in both]
    assert sorted(code for code, _ in outcomes)[0] == 0, outcomes
    for code, err in outcomes:
        assert "Traceback" not in err, err
        assert code == 0 or "is in use by another process" in err, err
    [folder] = (photos / "runs" / "style_transfer").glob("version_*")
    assert (folder / "config_resumed.yaml").is_file()

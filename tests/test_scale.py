"""Scale and staying power: batches of jobs, several processes, resume, signals, bf16.

Multi-process runs start ``tests/tiny_cli.py`` in a child process (Lightning starts the other
ranks with the same command line); they are compared job by job with one-process runs, through
the final images stored in the checkpoints (float) and the PNGs.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

import cli
import cli_processes
from conftest import write_test_image
from datamodules.style_transfer import StyleTransferData
from lightning_modules.image_optimization.jobs import plan_chunks
from lightning_modules.errors import UserInputError
from lightning_modules.style_transfer import StyleTransfer

REPO = Path(__file__).resolve().parents[1]
PAIRS = ["c0__s0", "c0__s1", "c1__s0", "c1__s1"]


@pytest.fixture
def inputs(workdir: Path) -> Path:
    """Two content and two style images (2 x 2 = 4 style-transfer jobs in 'each' mode)."""
    for index in range(2):
        write_test_image(workdir / "inputs" / "content" / f"c{index}.png", (48, 40), seed=1 + index)
        write_test_image(workdir / "inputs" / "style" / f"s{index}.png", (40, 40), seed=10 + index)
    return workdir / "inputs"


def style_args(inputs: Path, steps: int, *extra: str) -> list[str]:
    """Style transfer of every content and style pair on the tiny backbone at 32 px."""
    return [
        "fit", "--config", str(REPO / "configs" / "style_transfer.yaml"),
        "--model.backbone", "tiny", "--model.weights", "random",
        "--model.content_layers", "[2]", "--model.style_layers", "[0, 1, 2, 3]",
        "--model.style_weights", "[1, 1, 1, 1]", "--model.init", "noise",
        "--data.content", str(inputs / "content"), "--data.style", str(inputs / "style"),
        "--data.style_mode", "each", "--data.image_size", "32",
        "--trainer.max_steps", str(steps), "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *extra,
    ]


def run_in_child(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python tests/tiny_cli.py ARGS`` in a process of its own (forked after the imports); the
    other ranks are started by Lightning as fresh ``tiny_cli.py`` processes."""
    done = cli_processes.run(args, cwd, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def final_images(run: Path) -> dict[str, torch.Tensor]:
    """Each job's image in the run's last checkpoint (and its other processes' shards)."""
    images = {}
    for path in sorted((run / "checkpoints").glob("last*.ckpt")):
        if ".previous." in path.name:
            continue  # the checkpoint before the last (callbacks.checkpoint)
        checkpoint = torch.load(path, weights_only=True)
        for name, group, row in checkpoint["image_jobs"]["slots"]:
            assert name not in images, f"{name} is in two processes' checkpoints"
            images[name] = checkpoint["state_dict"][f"images.{group}"][row]
    return images


def png_pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


def loss_rows(run: Path) -> list[dict[str, float]]:
    with open(run / "losses.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def assert_same_losses(first: Path, second: Path, rtol: float = 1e-5) -> None:
    rows, others = loss_rows(first), loss_rows(second)
    assert [r["step"] for r in rows] == [r["step"] for r in others]
    for row, other in zip(rows, others):
        for key in row:
            assert other[key] == pytest.approx(row[key], rel=rtol, abs=1e-7), (key, row["step"])


# --------------------------------------------------------------------------- jobs and batches
def test_plan_chunks_keeps_sizes_apart_and_shares_each_chunk_between_processes() -> None:
    assert plan_chunks([None] * 5, None, 2) == [[0, 1, 2, 3, 4]]
    sizes = ["a", "b", "a", "a", "b"]
    assert plan_chunks(sizes, 1, 2) == [[0, 2], [3], [1, 4]]  # up to 1 job per process
    assert plan_chunks(sizes, 2, 1) == [[0, 2], [3], [1, 4]]
    assert plan_chunks(sizes, 8, 1) == [[0, 2, 3], [1, 4]]
    with pytest.raises(UserInputError, match="batch_size"):
        plan_chunks(sizes, 0, 1)


def test_style_modes_make_one_job_per_content_or_per_pair(inputs: Path) -> None:
    each = StyleTransferData(inputs / "content", inputs / "style", style_mode="each", image_size=32)
    each.setup("fit")
    assert [job.name for job in each.jobs] == PAIRS
    assert all(len(job.styles) == 1 and job.style_blend_weights == [1.0] for job in each.jobs)
    blend = StyleTransferData(inputs / "content", inputs / "style", image_size=32)
    blend.setup("fit")
    assert [job.name for job in blend.jobs] == ["c0__s0+s1", "c1__s0+s1"]
    textures = StyleTransferData(None, inputs / "style", style_mode="each", image_size=32)
    textures.setup("fit")
    assert [job.name for job in textures.jobs] == ["s0", "s1"]
    with pytest.raises(UserInputError, match="style_mode"):
        StyleTransferData(style_mode="mix")


class ResultRecorder(pl.Callback):
    """Keeps each job's result at the end of its chunk, by name."""

    def __init__(self) -> None:
        self.results: dict[str, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        for index, slot in enumerate(pl_module.slots):
            assert slot.name not in self.results, f"{slot.name} finished twice"
            self.results[slot.name] = pl_module.result_pixels(index)


def test_batches_of_jobs_end_as_all_jobs_at_once(inputs: Path, tmp_path: Path) -> None:
    results = {}
    for batch_size in (None, 1):
        recorder = ResultRecorder()
        module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                               style_layers=[0, 1, 2, 3], style_weights=[1, 1, 1, 1],
                               init="noise", lr_drop_step=2, lr_drop_to=0.01)
        data = StyleTransferData(inputs / "content", inputs / "style", style_mode="each",
                                 image_size=32, batch_size=batch_size)
        trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             default_root_dir=tmp_path, callbacks=[recorder])
        trainer.fit(module, datamodule=data)
        results[batch_size] = recorder.results
        # Every job gets max_steps steps: one chunk of 4 jobs, or 4 chunks of 1.
        assert trainer.global_step == 3 * (1 if batch_size is None else 4)
    assert sorted(results[1]) == PAIRS
    for name in PAIRS:
        torch.testing.assert_close(results[1][name], results[None][name], atol=1e-5, rtol=0)


def test_bf16_mixed_precision_runs_style_transfer_on_cpu(inputs: Path, workdir: Path) -> None:
    assert cli.main(style_args(inputs, 3, "--trainer.precision", "bf16-mixed")) == 0
    run = workdir / "runs" / "style_transfer" / "version_0"
    rows = loss_rows(run)
    assert len(rows) == 3 and all(np.isfinite(list(row.values())).all() for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert all((run / f"{name}.png").is_file() for name in PAIRS)


# --------------------------------------------------------------------------- several processes
def test_two_processes_split_style_jobs_and_match_one_process(inputs: Path,
                                                             workdir: Path) -> None:
    assert cli.main(style_args(inputs, 4)) == 0
    run_in_child(style_args(inputs, 4, "--trainer.devices", "2"), workdir)
    one, two = sorted((workdir / "runs" / "style_transfer").glob("version_*"))
    assert (two / "checkpoints" / "last.rank1.ckpt").is_file()
    alone, split = final_images(one), final_images(two)
    assert sorted(split) == PAIRS
    for name in PAIRS:
        torch.testing.assert_close(split[name], alone[name], atol=1e-6, rtol=0)
        assert np.abs(png_pixels(two / f"{name}.png") - png_pixels(one / f"{name}.png")).max() <= 1
    # Each image written once (a second write would have failed), and nothing else.
    expected = {f"{name}{end}" for name in PAIRS for end in (".png", "_sheet.png")}
    assert {p.name for p in two.glob("*.png")} == expected | {"loss_curve.png"}
    assert_same_losses(one, two)  # logged per job over both processes


def class_args(*extra: str) -> list[str]:
    """Class visualization of 4 classes on the tiny backbone at 32 px, 4 steps."""
    return [
        "fit", "--config", str(REPO / "configs" / "class_visualization.yaml"),
        "--model.backbone", "tiny", "--model.weights", "random", "--model.image_size", "32",
        "--model.max_jitter", "4", "--model.lr", "0.25", "--model.judge", "null",
        "--data.classes", "[76, 78, 113, 130]", "--trainer.max_steps", "4",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", *extra,
    ]


def test_two_processes_in_batches_draw_the_classes_of_one_process(workdir: Path) -> None:
    assert cli.main(class_args()) == 0
    # Two processes, one class each at a time: 2 chunks; jitter and noise as in one process.
    run_in_child(class_args("--trainer.devices", "2", "--data.batch_size", "1"), workdir)
    one, two = sorted((workdir / "runs" / "class_visualization").glob("version_*"))
    names = ["0076_tarantula", "0078_tick", "0113_snail", "0130_flamingo"]
    for name in names:
        alone, split = png_pixels(one / f"{name}.png"), png_pixels(two / f"{name}.png")
        assert np.abs(split - alone).max() <= 1 and (split != alone).mean() < 0.01, name
    # The last chunk's images, in float: classes 2 and 3 (one per process).
    split, alone = final_images(two), final_images(one)
    assert sorted(split) == names[2:]
    for name in split:
        # A batch of one and a batch of two sum their spectra and convolutions in another order:
        # float rounding reaches 1.6e-5 after the steps (checked alone, on an idle machine).
        torch.testing.assert_close(split[name], alone[name], atol=1e-4, rtol=0)
    expected = {f"{name}{end}" for name in names for end in (".png", "_sheet.png")}
    assert {p.name for p in two.glob("*.png")} == expected | {
        "loss_curve.png", "classes_sheet.png", "class_probability.png"}
    assert np.abs(png_pixels(two / "classes_sheet.png")
                  - png_pixels(one / "classes_sheet.png")).max() <= 1


def test_two_processes_in_batches_draw_the_channel_atlas_of_one_process(workdir: Path) -> None:
    args = ["fit", "--config", str(REPO / "configs" / "channel_atlas.yaml"),
            "--model.backbone", "tiny", "--model.weights", "random", "--model.image_size", "32",
            "--model.transforms", "false", "--model.parameterization", "pixel",
            "--model.lr", "20", "--model.blur_every", "0", "--data.layers", "features.1",
            "--trainer.max_steps", "3", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert cli.main(args) == 0
    # 16 channels, 3 per process at a time: 3 chunks, the last of 4 channels.
    run_in_child([*args, "--trainer.devices", "2", "--data.batch_size", "3"], workdir)
    one, two = sorted((workdir / "runs" / "channel_atlas").glob("version_*"))
    names = [f"channel_features.1_{channel}.png" for channel in range(16)]
    assert {p.name for p in two.glob("*.png")} == {*names, "atlas_sheet.png", "loss_curve.png"}
    for name in [*names, "atlas_sheet.png"]:
        assert np.abs(png_pixels(two / name) - png_pixels(one / name)).max() <= 1, name


def test_two_processes_fool_in_batches_like_one_process(workdir: Path) -> None:
    # Classes 23 and 10 are within reach of the tiny network: every batch ends early.
    args = ["fit", "--config", str(REPO / "configs" / "fooling.yaml"), "--model.backbone", "tiny",
            "--model.weights", "random", "--model.target", "[23, 10]", "--data.image_size", "32",
            "--trainer.max_steps", "60", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    assert cli.main(args) == 0
    run_in_child([*args, "--trainer.devices", "2", "--data.batch_size", "2"], workdir)
    one, two = sorted((workdir / "runs" / "fooling").glob("version_*"))
    with open(one / "fooling_results.csv") as alone, open(two / "fooling_results.csv") as split:
        rows, split_rows = list(csv.DictReader(alone)), list(csv.DictReader(split))
    assert len(rows) == 6 and all(row["success"] == "True" for row in rows)
    assert [int(row["steps"]) for row in rows] != [60] * 6  # fooled before the last step
    assert split_rows == rows  # gathered from both processes, in job order
    for row in rows:
        assert np.array_equal(png_pixels(two / f"{row['name']}.png"),
                              png_pixels(one / f"{row['name']}.png"))


def test_two_processes_explain_a_folder_like_one_process(workdir: Path) -> None:
    """Saliency maps and the trust report of 5 photos in batches of 2, over 2 processes: each
    photo's map once, equal to one process's; the trust report gathered in order."""
    for index in range(5):
        write_test_image(workdir / "photos" / f"p{index}.png", (40, 36), seed=20 + index)
    args = ["predict", "--config", str(REPO / "configs" / "saliency.yaml"),
            "--model.backbone", "tiny", "--model.weights", "random", "--model.target",
            "predicted", "--model.method", "integrated_gradients", "--model.steps", "3",
            "--model.internal_batch_size", "4", "--model.evaluate", "true",
            "--model.evaluation_steps", "4", "--data.images", str(workdir / "photos"),
            "--data.image_size", "32", "--data.batch_size", "2", "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false"]
    assert cli.main(args) == 0
    run_in_child([*args, "--trainer.devices", "2", "--trainer.strategy", "ddp"], workdir)
    one, two = sorted((workdir / "runs" / "saliency").glob("version_*"))
    assert sorted(p.name for p in two.glob("*_saliency.npy")) == [
        f"p{index}_saliency.npy" for index in range(5)]
    for index in range(5):
        assert np.allclose(np.load(two / f"p{index}_saliency.npy"),
                           np.load(one / f"p{index}_saliency.npy"), rtol=1e-4, atol=1e-7)
    with open(one / "trust_report.csv") as alone, open(two / "trust_report.csv") as split:
        rows, split_rows = list(csv.DictReader(alone)), list(csv.DictReader(split))
    assert [row["image"] for row in rows] == [f"p{index}" for index in range(5)]
    for row, split_row in zip(rows, split_rows):
        assert row["image"] == split_row["image"]
        assert float(row["deletion_auc"]) == pytest.approx(float(split_row["deletion_auc"]),
                                                           abs=1e-3)


def test_process_count_of_devices_and_nodes() -> None:
    assert [cli.process_count(d, 1) for d in (1, "1", [0], 2, "2", [0, 1], "0,1", "0,")] == [
        1, 1, 1, 2, 2, 2, 2, 1]
    assert cli.process_count(4, 2) == 8
    assert cli.process_count("auto", 1) is None and cli.process_count(-1, 1) is None


# --------------------------------------------------------------------------- resume and signals
class SignalAtStep(pl.Callback):
    """Sends this process SIGTERM after a given step: an interruption at a known point."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_resumed_run_ends_where_an_uninterrupted_run_ends(inputs: Path, workdir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    # 4 jobs in 2 chunks of 2, 4 steps each; stopped at step 3 of the second chunk.
    args = style_args(inputs, 4, "--data.batch_size", "2", "--checkpoint.every_n_train_steps", "2")
    assert cli.main(args) == 0
    signal_at = '[{"class_path": "test_scale.SignalAtStep", "init_args": {"step": 7}}]'
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli.main([*args, "--trainer.callbacks", signal_at])
    assert stopped.value.code == 128 + signal.SIGTERM
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("SIGTERM")]
    assert len(said) == 1 and "step 3 of the current jobs (step 7 of" in said[0], said
    uninterrupted, run = sorted((workdir / "runs" / "style_transfer").glob("version_*"))
    assert {p.name for p in run.glob("*_interrupted_step000003.png")} == {
        "c1__s0_interrupted_step000003.png", "c1__s1_interrupted_step000003.png"}
    assert not (run / "c1__s0.png").exists() and (run / "c0__s0.png").is_file()

    assert cli.main([*args, "--ckpt_path", "last"]) == 0
    assert len(list((workdir / "runs" / "style_transfer").glob("version_*"))) == 2  # same run
    assert (run / "config.yaml").is_file() and (run / "config_resumed.yaml").is_file()
    ended, expected = final_images(run), final_images(uninterrupted)
    assert sorted(ended) == ["c1__s0", "c1__s1"]
    for name in ended:
        torch.testing.assert_close(ended[name], expected[name], atol=1e-5, rtol=0)
    for name in PAIRS:
        assert np.array_equal(png_pixels(run / f"{name}.png"),
                              png_pixels(uninterrupted / f"{name}.png"))
    assert_same_losses(uninterrupted, run)  # the interrupted part's rows came with the checkpoint


def test_sigterm_stops_every_process_and_last_goes_on(inputs: Path, workdir: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    args = style_args(inputs, 150, "--trainer.devices", "2", "--images.every_n_steps", "5")
    process = cli_processes.CliProcess(args, workdir)
    run = workdir / "runs" / "style_transfer" / "version_0"
    started = time.monotonic()
    while not (run / "snapshots" / "c1__s1_step000005.png").exists():
        assert process.poll() is None and time.monotonic() - started < 300, "run did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=300)
    err = process.stderr
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("SIGTERM")]
    assert len(said) == 1 and "version_0/checkpoints/last.ckpt" in said[0], err[-3000:]
    interrupted = sorted(p.name for p in run.glob("*_interrupted_step*[0-9].png"))
    assert [name.split("_interrupted")[0] for name in interrupted] == PAIRS  # both processes
    assert len({name.split("_step")[1] for name in interrupted}) == 1  # stopped at one step
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "checkpoints" / "last.rank1.ckpt").is_file()

    # The checkpoint holds two processes' jobs: one process cannot take it over.
    assert cli.main([*style_args(inputs, 150), "--ckpt_path", "last"]) == 1
    assert "written by 2 processes" in capsys.readouterr().err
    run_in_child([*args, "--ckpt_path", "last"], workdir)
    assert [int(row["step"]) for row in loss_rows(run)] == list(range(1, 151))
    assert all((run / f"{name}.png").is_file() for name in PAIRS)

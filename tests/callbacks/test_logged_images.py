"""Runs show their pictures in TensorBoard beside the curves (issue 14, item 4)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import cli
from test_cli import tiny_args

# The test extra installs tensorboard.
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[2]


def events(run: Path) -> EventAccumulator:
    [event_file] = run.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(event_file), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator


def decoded(accumulator: EventAccumulator, tag: str) -> np.ndarray:
    import io

    return np.asarray(Image.open(io.BytesIO(accumulator.Images(tag)[-1].encoded_image_string))
                      .convert("RGB"))


def test_a_default_run_shows_its_pictures_in_tensorboard(workdir, content_image,
                                                         style_image) -> None:
    assert cli.main(tiny_args(content_image, style_image)) == 0
    [run] = (workdir / "runs" / "style_transfer").glob("version_*")
    accumulator = events(run)
    job = f"{content_image.stem}__{style_image.stem}"
    tags = accumulator.Tags()["images"]
    assert {f"{job}/result", f"{job}/sheet", f"{job}/snapshot", "loss_curve"} <= set(tags)
    assert accumulator.Tags()["scalars"]  # the curves are there too
    # What TensorBoard shows is what is on disk.
    on_disk = np.asarray(Image.open(run / f"{job}.png").convert("RGB"))
    assert np.array_equal(decoded(accumulator, f"{job}/result"), on_disk)
    assert len(accumulator.Images(f"{job}/snapshot")) == 1  # step 2 of 4


def test_a_saliency_run_shows_its_sheets(workdir, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    assert cli.main(["predict", "--config", str(REPO / "configs" / "saliency.yaml"),
                     "--model.backbone", "tiny", "--model.weights", "random",
                     "--model.method", "vanilla", "--data.image_size", "32",
                     "--trainer.enable_progress_bar", "false"]) == 0
    [run] = (workdir / "runs" / "saliency").glob("version_*")
    accumulator = events(run)
    assert "saliency/sheet" in accumulator.Tags()["images"]
    assert np.array_equal(decoded(accumulator, "saliency/sheet"),
                          np.asarray(Image.open(run / "sheet_0000.png").convert("RGB")))

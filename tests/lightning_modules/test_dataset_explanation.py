"""A whole dataset explained: streamed in shards, resumable after kills, the same on 1 or 2
processes, every map scored beside the controls, bad input in one sentence."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_test_image

IMAGES = 10


def dataset_args(images: str, *extra: str, name: str = "saliency_dataset") -> list[str]:
    """A dataset run on the tiny network: 32 px, batches of 2, shards of 4 (3 shards)."""
    return ["predict", "--config", "saliency_dataset", "--model.backbone", "tiny",
            "--model.methods", "[vanilla, gradcam]", "--model.metrics", "[sparseness]",
            "--data.images", images, "--data.image_size", "32", "--data.batch_size", "2",
            "--data.shard_size", "4", "--trainer.logger.init_args.name", name,
            "--trainer.enable_progress_bar", "false", *extra]


def class_tree(root: Path, count: int = IMAGES) -> Path:
    """``count`` small photos in two class folders (``285/`` and ``Egyptian_cat/``)."""
    for i in range(count):
        folder = "285" if i % 2 else "Egyptian_cat"
        write_test_image(root / "photos" / folder / f"img{i:02d}.png", (40 + i, 36), seed=i)
    return root / "photos"


def main(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    import cli

    capsys.readouterr()
    status = cli.main(args)
    return status, capsys.readouterr().err


def one_error(status: int, err: str) -> str:
    assert status == 1, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    return errors[0]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def run_folder(root: Path, name: str = "saliency_dataset") -> Path:
    [run] = sorted((root / "runs" / name).glob("version_*"))
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted single-process run over the class tree, in its own folder."""
    import cli

    root = tmp_path_factory.mktemp("reference")
    class_tree(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(dataset_args("photos")) == 0
    return run_folder(root)


def test_a_class_tree_is_explained_once_per_image_in_shards(reference: Path) -> None:
    from lightning_modules.saliency import SHORTHANDS, load_maps

    index = rows(reference / "index.csv")
    assert [row["name"] for row in index] == [f"img{i:02d}" for i in range(1, IMAGES, 2)] + [
        f"img{i:02d}" for i in range(0, IMAGES, 2)]  # class folders in order: 285, Egyptian_cat
    assert {row["label"] for row in index} == {"285", "Egyptian cat"}
    assert [row["shard"] for row in index] == ["0"] * 4 + ["1"] * 4 + ["2"] * 2
    assert [row["row"] for row in index] == ["0", "1", "2", "3"] * 2 + ["0", "1"]
    for name in ("vanilla", "gradcam", "random", "edges", "center"):
        values = [float(row[f"{name}.sparseness"]) for row in index]
        assert all(0 <= value <= 1 for value in values), name
    # The centred Gaussian is one map for every image; uniform noise has a Gini index of 1/3,
    # and each image gets its own noise.
    assert len({row["center.sparseness"] for row in index}) == 1
    noise = [float(row["random.sparseness"]) for row in index]
    assert all(abs(value - 1 / 3) < 0.05 for value in noise) and len(set(noise)) == IMAGES
    shards = sorted(path.name for path in (reference / "maps").glob("shard_*"))
    assert shards == [f"shard_0000{k}.{suffix}" for k in range(3) for suffix in ("csv", "npz")]
    info = json.loads((reference / "explanation.json").read_text())
    assert info["methods"] == ["vanilla", "gradcam"] and info["images"] == IMAGES
    assert info["metrics"]["sparseness"]["family"] == "complexity"
    for name in ("report.html", "report.csv", "report.png", "skipped.csv"):
        assert (reference / name).is_file(), name

    # The stored maps are the methods' maps (float16 keeps three digits of each).
    from conftest import build_tiny_backbone
    from datamodules.labeled_images import preprocess

    path = index[5]["path"]
    maps = load_maps(reference, paths=[path])[path]
    backbone = build_tiny_backbone()
    inputs = backbone.normalize(preprocess(str(reference.parents[2] / path), 32)[None])
    target = torch.tensor([int(index[5]["target"])])
    for name in ("vanilla", "gradcam"):
        expected = SHORTHANDS[name]().attribute(backbone, inputs, target).maps[0].numpy()
        assert np.allclose(maps[name], expected, atol=2e-3 * np.abs(expected).max()), name
    assert len(load_maps(reference)) == IMAGES


def test_sheets_only_for_the_first_images(reference: Path) -> None:
    # The writer's default sheet_images is 16: every batch of these 10 images gets one.
    assert sorted(p.name for p in reference.glob("sheet_*.png")) == [
        f"sheet_{first:05d}.png" for first in range(0, IMAGES, 2)]


def test_the_writer_holds_one_shard_at_most(tmp_path: Path, capsys, monkeypatch) -> None:
    """Flat memory: what the writer keeps is emptied at every shard's end."""
    from callbacks.dataset_writer import DatasetWriter

    class Watched(DatasetWriter):
        most = 0

        def on_predict_batch_end(self, *args, **kwargs) -> None:
            super().on_predict_batch_end(*args, **kwargs)
            Watched.most = max(Watched.most, len(self._paths))

    class_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("callbacks.dataset_writer.DatasetWriter", Watched)
    status, err = main(dataset_args("photos", "--data.shard_size", "3"), capsys)
    assert status == 0, err[-3000:]
    assert Watched.most == 2  # batches of 2 in shards of 3: never more than 2 held


def test_loader_processes_read_the_batches_in_order(reference: Path, tmp_path: Path, capsys,
                                                    monkeypatch) -> None:
    """Two loader processes take every other batch; the run is the one-process run."""
    class_tree(tmp_path)
    monkeypatch.chdir(tmp_path)
    status, err = main(dataset_args("photos", "--data.num_workers", "2"), capsys)
    assert status == 0, err[-3000:]
    assert rows(run_folder(tmp_path) / "index.csv") == rows(reference / "index.csv")


def test_maps_without_metrics_make_a_run_without_a_report(tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    class_tree(tmp_path, count=3)
    monkeypatch.chdir(tmp_path)
    status, err = main(dataset_args("photos", "--model.metrics", "[]"), capsys)
    assert status == 0, err[-3000:]
    run = run_folder(tmp_path)
    assert len(rows(run / "index.csv")) == 3 and not (run / "report.html").exists()


def test_csv_with_boxes_and_an_unreadable_image(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for i in range(4):
        write_test_image(tmp_path / "data" / f"p{i}.png", (40, 32), seed=i)
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    (tmp_path / "data" / "list.csv").write_text(
        "path,label,x0,y0,x1,y1\n"
        "p0.png,285,0,0,20,32\n"
        "broken.png,285,,,,\n"
        "p1.png,Egyptian cat,20,0,40,32\n"
        "p2.png,285,,,,\n"
        "p3.png,1,4,4,36,28\n")
    extra = ["--model.metrics", "[sparseness, pointing_game, relevance_mass_accuracy]"]
    status, err = main(dataset_args("data/list.csv", *extra), capsys)
    assert status == 0, err[-3000:]
    run = run_folder(tmp_path)
    index = rows(run / "index.csv")
    assert [row["name"] for row in index] == ["p0", "p1", "p2", "p3"]
    assert [row["label"] for row in index] == ["285", "Egyptian cat", "285", "1"]
    assert index[2]["gradcam.pointing_game"] == ""  # no box
    for row in (index[0], index[1], index[3]):
        assert row["gradcam.pointing_game"] in ("0", "1"), row
        assert 0 <= float(row["center.relevance_mass_accuracy"]) <= 1
    # The centred Gaussian peaks inside the central box of p3, outside the left half of p0.
    assert index[3]["center.pointing_game"] == "1"
    [skipped] = rows(run / "skipped.csv")
    assert skipped["path"].endswith("broken.png") and skipped["reason"]

    one = one_error(*main(dataset_args("data/list.csv", *extra, "--data.strict", "true",
                                       name="strict"), capsys))
    assert "broken.png" in one and "--data.strict" in one, one


@pytest.mark.parametrize("table, expected", [
    ("path,label\nmissing.png,285\n", "line 2: image not found: missing.png"),
    ("path,label\np0.png,no such class\n", "Unknown class name 'no such class'"),
    ("path,label,x0,y0,x1,y1\np0.png,285,0,0,400,10\n", "lies outside the 40 x 32 photo"),
    ("path,label,x0,y0,x1,y1\np0.png,285,5,0,2,10\n", "needs 0 <= x0 < x1"),
    ("file,label\np0.png,285\n", "needs a header with a 'path' column"),
])
def test_bad_dataset_tables_are_one_sentence(tmp_path: Path, capsys, monkeypatch, table: str,
                                             expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    write_test_image(tmp_path / "p0.png", (40, 32))
    (tmp_path / "list.csv").write_text(table)
    line = one_error(*main(dataset_args("list.csv"), capsys))
    assert expected in line, line
    assert not (tmp_path / "runs").exists()  # nothing left behind


def test_a_run_is_continued_only_with_its_own_options(reference: Path, tmp_path: Path, capsys,
                                                      monkeypatch) -> None:
    import shutil

    copy = tmp_path / "runs" / "saliency_dataset" / "version_0"
    shutil.copytree(reference, copy)
    shutil.copytree(reference.parents[2] / "photos", tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    line = one_error(*main(dataset_args("photos", "--data.shard_size", "5", "--ckpt_path",
                                        "last"), capsys))
    assert "another shard_size (4 there, 5 now)" in line, line
    before = sorted(p.name for p in copy.iterdir())
    status, err = main(dataset_args("photos", "--ckpt_path", "last"), capsys)
    assert status == 0, err[-3000:]  # nothing left to explain: the run's files are put together
    assert rows(copy / "index.csv") == rows(reference / "index.csv")
    assert set(before) <= {p.name for p in copy.iterdir()}


# ------------------------------------------------------------------ in real processes: kills, DDP
def child(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A real process of its own (SIGKILL is real), forked after tiny_cli's imports."""
    from cli_processes import run

    return run(args, cwd)


# The fault runs compare maps and index only: no sheets or report (each costs a second or two).
LEAN_WRITER = {"class_path": "callbacks.dataset_writer.DatasetWriter",
               "init_args": {"sheet_images": 0, "report": False}}


def lean(*callbacks: dict) -> list[str]:
    """The lean writer, after ``callbacks`` (a killer sees a batch before the writer does)."""
    return ["--trainer.callbacks", json.dumps([*callbacks, LEAN_WRITER])]


def assert_same_run(run: Path, reference: Path) -> None:
    from lightning_modules.saliency import load_maps

    assert rows(run / "index.csv") == rows(reference / "index.csv")
    expected, found = load_maps(reference), load_maps(run)
    assert list(found) == list(expected)
    for path, maps in expected.items():
        for name, values in maps.items():
            assert np.array_equal(found[path][name], values), (path, name)


def test_stopped_by_ctrl_c_then_killed_a_run_goes_on_to_the_uninterrupted_result(
        reference: Path, tmp_path: Path) -> None:
    class_tree(tmp_path)
    # Ctrl+C after batch 2 (shard 1's first): the run stops before batch 3, says how to go on.
    ctrl_c = {"class_path": "fault_injection.SignalAtBatch",
              "init_args": {"batch": 2, "signal": "SIGINT"}}
    stopped = child(dataset_args("photos", *lean(ctrl_c)), tmp_path)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "SIGINT: stopped after 3 batches" in stopped.stderr
    assert "(continue with --ckpt_path last)" in stopped.stderr
    # SIGKILL after batch 1 of the continued run: the middle of shard 1 again.
    killer = {"class_path": "fault_injection.SignalAtBatch", "init_args": {"batch": 1}}
    killed = child(dataset_args("photos", *lean(killer), "--ckpt_path", "last"), tmp_path)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run = run_folder(tmp_path)
    assert not (run / "index.csv").exists()
    assert sorted(p.name for p in (run / "maps").glob("*.csv")) == ["shard_00000.csv"]
    finished = child(dataset_args("photos", *lean(), "--ckpt_path", "last"), tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert_same_run(run, reference)
    assert not list(run.rglob(".*partial*"))


def test_two_processes_give_the_one_process_result(reference: Path, tmp_path: Path) -> None:
    class_tree(tmp_path)
    done = child(dataset_args("photos", *lean(), "--trainer.devices", "2"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(run_folder(tmp_path), reference)

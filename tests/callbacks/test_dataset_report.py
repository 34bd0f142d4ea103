"""Tests for the dataset report: lightning_modules.saliency.dataset_statistics (the numbers) and
callbacks.dataset_report (the files), on a synthetic run folder laid out as a dataset run writes
it (index.csv, explanation.json, maps/shard_*.npz, skipped.csv)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from callbacks.dataset_report import main, write_report
from callbacks.dataset_writer import DatasetWriter
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.dataset_statistics import (
    dataset_statistics, kendall_tau, mean_interval, rank_methods)

NAN = float("nan")
# Student's t quantile t(0.975; 5 degrees of freedom), from a printed table: the oracle for the
# intervals over the six images below.
T_975_5 = 2.570582
T_975_3 = 3.182446

METHODS = ["gradcam", "integrated_gradients"]
CONTROLS = ["random", "edges", "center"]
# In the run's order: the first faithfulness metric (road_morf) is not the first metric.
METRICS = {
    "sparseness": {"family": "complexity", "higher_is_better": True,
                   "perturbation": "none", "normalisation": "absolute values"},
    "road_morf": {"family": "faithfulness", "higher_is_better": False,
                  "perturbation": "most relevant first, noisy linear imputation",
                  "normalisation": "ranks only"},
    "insertion": {"family": "faithfulness", "higher_is_better": True,
                  "perturbation": "blurred image, pixels inserted by rank",
                  "normalisation": "ranks only"},
    "pointing_game": {"family": "localisation", "higher_is_better": True,
                      "perturbation": "none", "normalisation": "none"},
}
# One value per image (six images). Grad-CAM is clearly better than every control on road_morf
# (lower is better); Integrated Gradients is not better than random there and loses to edges
# and center; sparseness ranks the two methods the other way round (a disagreement), insertion
# the same way as road_morf; pointing_game is undefined (no box) on two images.
VALUES = {
    "gradcam.road_morf": [0.10, 0.12, 0.08, 0.11, 0.09, 0.10],
    "integrated_gradients.road_morf": [0.30, 0.28, 0.35, 0.31, 0.29, 0.33],
    "random.road_morf": [0.30, 0.31, 0.29, 0.32, 0.30, 0.28],
    "edges.road_morf": [0.20, 0.25, 0.22, 0.18, 0.21, 0.24],
    "center.road_morf": [0.15, 0.14, 0.16, 0.13, 0.17, 0.15],
    "gradcam.insertion": [0.60, 0.70, 0.65, 0.62, 0.68, 0.66],
    "integrated_gradients.insertion": [0.50, 0.52, 0.48, 0.55, 0.50, 0.51],
    "random.insertion": [0.40, 0.45, 0.42, 0.41, 0.44, 0.43],
    "edges.insertion": [0.55, 0.50, 0.52, 0.51, 0.56, 0.50],
    "center.insertion": [0.58, 0.57, 0.60, 0.59, 0.61, 0.56],
    "gradcam.sparseness": [0.20, 0.25, 0.22, 0.21, 0.24, 0.23],
    "integrated_gradients.sparseness": [0.60, 0.62, 0.58, 0.65, 0.61, 0.63],
    "random.sparseness": [0.05, 0.06, 0.04, 0.05, 0.06, 0.05],
    "edges.sparseness": [0.30, 0.31, 0.29, 0.33, 0.32, 0.30],
    "center.sparseness": [0.40, 0.41, 0.39, 0.42, 0.40, 0.41],
    "gradcam.pointing_game": [1, 1, NAN, 1, 0, NAN],
    "integrated_gradients.pointing_game": [1, 0, NAN, 0, 1, NAN],
    "random.pointing_game": [0, 0, NAN, 1, 0, NAN],
    "edges.pointing_game": [0, 1, NAN, 0, 0, NAN],
    "center.pointing_game": [1, 1, NAN, 1, 1, NAN],
}
SIDE = 16


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t interval of six values, by hand."""
    data = np.array(values, dtype=np.float64)
    half = T_975_5 * data.std(ddof=1) / math.sqrt(len(data))
    return data.mean(), data.mean() - half, data.mean() + half


def make_run(folder: Path) -> Path:
    """A finished dataset run: five PNG files and one built-in sample, maps in two shards."""
    generator = np.random.default_rng(0)
    run_dir = folder / "run"
    (run_dir / "maps").mkdir(parents=True)
    paths = []
    for index in range(5):
        path = folder / f"image_{index}.png"
        Image.fromarray(generator.integers(0, 255, (SIDE, SIDE + 4, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    paths.append("sample:chelsea")
    shards = [[0, 1, 2, 3], [4, 5]]
    rows = []
    for shard_number, members in enumerate(shards):
        arrays = {"paths": np.array([paths[i] for i in members])}
        for name in [*METHODS, *CONTROLS]:
            maps = generator.random((len(members), SIDE, SIDE)).astype(np.float32) * 3
            scale = maps.reshape(len(members), -1).max(axis=1)
            arrays[name] = (maps / scale[:, None, None]).astype(np.float16)
            arrays[f"{name}.scale"] = scale.astype(np.float32)
        np.savez_compressed(run_dir / "maps" / f"shard_{shard_number:05d}.npz", **arrays)
        for row, image in enumerate(members):
            rows.append({"path": paths[image], "name": Path(paths[image]).stem, "label": 281,
                         "prediction": 281, "probability": 0.5, "target": 281,
                         "target_probability": 0.5, "shard": shard_number, "row": row,
                         **{column: "" if math.isnan(values[image]) else values[image]
                            for column, values in VALUES.items()}})
    with open(run_dir / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (run_dir / "explanation.json").write_text(json.dumps({
        "methods": METHODS, "controls": CONTROLS, "metrics": METRICS, "image_size": SIDE,
        "images": 6, "skipped": 1, "backbone": "tiny"}))
    (run_dir / "skipped.csv").write_text("path,reason\nbroken.png,not an image\n")
    return run_dir


def read_report(run_dir: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(run_dir / "report.csv", newline="") as handle:
        return {(row["method"], row["metric"]): row for row in csv.DictReader(handle)}


def test_mean_interval_t_by_hand_and_nan_left_out():
    values = [0.10, 0.12, 0.08, 0.11, 0.09, 0.10]
    mean, low, high = t_interval(values)
    estimate = mean_interval(values + [NAN, NAN])
    assert estimate.n == 6
    assert estimate.mean == pytest.approx(mean)
    assert (estimate.low, estimate.high) == pytest.approx((low, high), abs=1e-6)
    # Four defined values: 3 degrees of freedom.
    four = mean_interval([1.0, 0.0, NAN, 1.0, 1.0])
    half = T_975_3 * np.std([1.0, 0.0, 1.0, 1.0], ddof=1) / 2
    assert four.n == 4 and (four.low, four.high) == pytest.approx((0.75 - half, 0.75 + half),
                                                                  abs=1e-6)
    one = mean_interval([NAN, 2.0])
    assert one.n == 1 and one.mean == 2.0 and math.isnan(one.low)
    assert mean_interval([NAN]).n == 0


def test_bootstrap_interval_is_the_percentiles_of_resampled_means():
    values = np.array([0.3, 0.1, 0.5, 0.2, 0.9, 0.4, 0.7])
    generator = np.random.default_rng(7)
    means = values[generator.integers(0, 7, size=(500, 7))].mean(axis=1)
    estimate = mean_interval(np.append(values, NAN), interval="bootstrap", samples=500, seed=7)
    assert estimate.n == 7
    assert (estimate.low, estimate.high) == pytest.approx(tuple(np.quantile(means,
                                                                            [0.025, 0.975])))
    # Fixed seed: the same interval every time.
    assert mean_interval(values, interval="bootstrap", seed=7, samples=500) == estimate
    with pytest.raises(UserInputError, match="Unknown interval"):
        mean_interval(values, interval="wald")


def test_ranks_and_kendall_tau():
    assert rank_methods({"a": 0.1, "b": 0.3, "c": 0.1, "d": NAN}, higher_is_better=False) == {
        "a": 1, "b": 3, "c": 1, "d": None}
    assert rank_methods({"a": 0.1, "b": 0.3}, higher_is_better=True) == {"a": 2, "b": 1}
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # One discordant pair of three: (2 - 1) / 3.
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert math.isnan(kendall_tau([1, 1], [1, 2]))


def test_statistics_of_the_synthetic_run():
    table = {column: np.array(values, dtype=np.float64) for column, values in VALUES.items()}
    statistics = dataset_statistics(table, METHODS, CONTROLS, METRICS, images_per_method=2)
    gradcam = statistics.summary("gradcam", "road_morf")
    integrated = statistics.summary("integrated_gradients", "road_morf")
    assert (gradcam.rank, integrated.rank) == (1, 2)
    assert all(c.beats and not c.loses for c in gradcam.comparisons.values())
    assert not integrated.comparisons["random"].beats
    assert not integrated.comparisons["random"].loses
    assert integrated.comparisons["edges"].loses and integrated.comparisons["center"].loses
    sparse = statistics.summary("integrated_gradients", "sparseness")
    assert sparse.rank == 1 and statistics.summary("gradcam", "sparseness").rank == 2
    pairs = {(d.first, d.second) for d in statistics.disagreements}
    # pointing_game, like the faithfulness metrics, finds Grad-CAM best.
    assert pairs == {("sparseness", "road_morf"), ("sparseness", "insertion"),
                     ("sparseness", "pointing_game")}
    for disagreement in statistics.disagreements:
        assert disagreement.tau == pytest.approx(-1.0)
    assert statistics.ranking_metric == "road_morf"
    # road_morf: lower is better; gradcam's best are images 2 (0.08) and 4 (0.09).
    assert statistics.extremes["gradcam"].best == (2, 4)
    assert statistics.extremes["gradcam"].worst == (1, 3)
    # Six images, four of each: the worst are those not already among the best.
    many = dataset_statistics(table, METHODS, CONTROLS, METRICS, images_per_method=4)
    assert many.extremes["gradcam"].best == (2, 4, 0, 5)
    assert many.extremes["gradcam"].worst == (1, 3)
    assert "On road_morf, no method beats the random control." not in (
        statistics.unbeaten_controls())
    # Four hits or misses prove nothing: on pointing_game no method beats any control.
    assert statistics.unbeaten_controls() == [
        f"On pointing_game, no method beats the {control} control." for control in CONTROLS]


def test_write_report_numbers(tmp_path):
    run_dir = make_run(tmp_path)
    written = write_report(run_dir, images_per_method=2)
    assert [path.name for path in written] == ["report.csv", "report.md", "report.html",
                                               "report.png"]
    report = read_report(run_dir)
    row = report[("gradcam", "road_morf")]
    mean, low, high = t_interval(VALUES["gradcam.road_morf"])
    assert float(row["mean"]) == pytest.approx(mean, rel=1e-5)
    assert (float(row["ci_low"]), float(row["ci_high"])) == pytest.approx((low, high), rel=1e-5)
    assert (row["family"], row["higher_is_better"], row["n"], row["rank"]) == (
        "faithfulness", "False", "6", "1")
    difference = np.subtract(VALUES["gradcam.road_morf"], VALUES["random.road_morf"])
    mean, low, high = t_interval(list(difference))
    assert float(row["random_mean"]) == pytest.approx(np.mean(VALUES["random.road_morf"]))
    assert (float(row["random_diff"]), float(row["random_diff_low"]),
            float(row["random_diff_high"])) == pytest.approx((mean, low, high), rel=1e-5)
    assert high < 0  # lower is better: the whole interval below zero
    assert (row["beats_random"], row["beats_edges"], row["beats_center"]) == ("True",) * 3
    integrated = report[("integrated_gradients", "road_morf")]
    assert (integrated["rank"], integrated["beats_random"], integrated["beats_edges"]) == (
        "2", "False", "False")
    assert report[("integrated_gradients", "sparseness")]["rank"] == "1"
    # NaN cells are left out of n, for the methods, the controls and the pairs.
    assert report[("gradcam", "pointing_game")]["n"] == "4"
    assert report[("center", "pointing_game")]["n"] == "4"
    assert report[("gradcam", "pointing_game")]["random_pairs"] == "4"
    assert float(report[("gradcam", "pointing_game")]["mean"]) == pytest.approx(0.75)
    assert report[("random", "road_morf")]["kind"] == "control"
    assert report[("random", "road_morf")]["rank"] == ""
    assert len(report) == (len(METHODS) + len(CONTROLS)) * len(METRICS)

    markdown = (run_dir / "report.md").read_text()
    assert "sparseness and road_morf disagree" in markdown
    assert "sparseness and insertion disagree" in markdown
    assert "road_morf and insertion disagree" not in markdown
    assert "Student t interval" in markdown
    assert "most relevant first, noisy linear imputation" in markdown


def test_report_html_is_self_contained(tmp_path):
    run_dir = make_run(tmp_path)
    write_report(run_dir, images_per_method=2)
    page = (run_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    # The figure, then 2 methods x (2 best + 2 worst) images with their maps, all embedded.
    assert len(sources) == 1 + 2 * 4
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert "href=" not in page and "<link" not in page and "<script" not in page
    assert '<img alt="one panel per metric" src="data:image/png;base64' in page
    # One table per family, faithfulness first although the run lists sparseness first.
    headings = [page.index(f"<h2>{family}</h2>") for family in
                ("faithfulness", "localisation", "complexity")]
    assert headings == sorted(headings)
    assert "Where metrics disagree" in page and "sparseness and road_morf disagree" in page
    assert "noisy linear imputation" in page and "broken.png" in page
    # Every thumbnail decodes as a 160 px PNG.
    import base64
    import io
    for source in sources[1:]:
        picture = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert picture.size == (160, 160)
    figure = Image.open(run_dir / "report.png")
    assert figure.size[0] > 400


def test_thumbnail_blends_the_image_with_the_map_from_its_shard(tmp_path):
    """A map is read from its shard and row (the built-in sample: row 1 of shard 1), rescaled,
    and drawn over the photo."""
    from callbacks.dataset_report import _ShardReader, _load_pixels, blended_thumbnail

    run_dir = make_run(tmp_path)
    with open(run_dir / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    reader = _ShardReader(run_dir)
    with np.load(run_dir / "maps" / "shard_00001.npz") as shard:
        expected = shard["gradcam"][1].astype(np.float32) * shard["gradcam.scale"][1]
    assert np.allclose(reader.map_of(rows[5], "gradcam"), expected)
    pixels = _load_pixels(run_dir, "sample:chelsea", SIDE)
    assert pixels.shape == (SIDE, SIDE, 3)
    alone = blended_thumbnail(None, expected)
    assert blended_thumbnail(pixels, expected) != alone
    assert _load_pixels(run_dir, str(tmp_path / "missing.png"), SIDE) is None


def test_write_report_refuses_to_overwrite_and_bad_folders(tmp_path):
    run_dir = make_run(tmp_path)
    write_report(run_dir)
    with pytest.raises(UserInputError, match="Refusing to overwrite"):
        write_report(run_dir)
    write_report(run_dir, interval="bootstrap", replace=True)
    assert "percentile bootstrap" in (run_dir / "report.md").read_text()
    with pytest.raises(UserInputError, match="Unknown ranking metric"):
        write_report(run_dir, ranking_metric="nonsense", replace=True)
    with pytest.raises(UserInputError, match="index.csv is missing"):
        write_report(tmp_path / "empty")
    assert main([str(tmp_path / "empty")]) == 1


def test_the_writer_checks_the_report_options():
    with pytest.raises(UserInputError, match="Unknown interval"):
        DatasetWriter(interval="wald")
    with pytest.raises(UserInputError, match="images_per_method"):
        DatasetWriter(images_per_method=-1)

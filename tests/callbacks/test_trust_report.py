"""Tests for callbacks.trust_report: the files of the trust report, from a batch and from the
predict command with ``--model.evaluate true``."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import cli
from callbacks.trust_report import TrustReportWriter
from lightning_modules.backbones import imagenet_categories
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import SaliencyBatch
from lightning_modules.saliency.evaluation import TrustReport

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency.yaml"
TRUST_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency_trust.yaml"
LAYERS = ["head", "features.1", "features.0"]


def _batch() -> SaliencyBatch:
    generator = torch.Generator().manual_seed(0)
    fractions = torch.linspace(0, 1, 5)
    report = TrustReport(
        method="vanilla", deletion_substrate="black", insertion_substrate="blur",
        fractions=fractions,
        deletion_curves=torch.tensor([[0.8, 0.4, 0.2, 0.1, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5]]),
        insertion_curves=torch.tensor([[0.1, 0.5, 0.7, 0.8, 0.8], [0.5, 0.5, 0.5, 0.5, 0.5]]),
        deletion_auc=torch.tensor([0.25, 0.5]), insertion_auc=torch.tensor([0.6, 0.5]),
        randomized_layers=list(LAYERS), randomized_maps=torch.rand(2, 3, 8, 10,
                                                                   generator=generator),
        rank_correlation=torch.tensor([[0.6, 0.3, 0.1], [0.8, 0.4, float("nan")]]),
        ssim=torch.tensor([[0.5, 0.2, 0.0], [0.7, 0.3, 0.1]]))
    return SaliencyBatch(
        names=["chelsea", "photo"], pixels=torch.rand(2, 3, 8, 10, generator=generator),
        maps=torch.rand(2, 8, 10, generator=generator), attributions=None, predicted=[285, 967],
        probability=[0.8, 0.5], target=[285, 967], true=[285, None],
        categories=imagenet_categories(), trust=report)


def _writer(directory: Path) -> TrustReportWriter:
    writer = TrustReportWriter()
    writer.directory = directory
    return writer


def test_writes_the_plots_the_rows_and_the_summary(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    written = writer.write_batch(_batch(), "randomization_0000.png")
    assert all(path.is_file() for path in written)
    grid = Image.open(tmp_path / "randomization_0000.png")
    # 5 columns (photo, map, 3 layers) of 1.3 inches, 2 rows of 1.75, a title line; 100 dpi.
    assert grid.size == (650, 400)
    assert Image.open(tmp_path / "photo_deletion_insertion.png").width > 0
    writer.write_tables(writer.rows, writer.reports)
    with open(tmp_path / "trust_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == ["chelsea", "photo"]
    assert rows[0]["deletion_auc"] == "0.2500" and rows[0]["probability"] == "0.8000"
    assert rows[0]["rank_correlation_features.0"] == "0.1000"
    assert rows[1]["rank_correlation_features.0"] == "nan"  # a constant map orders nothing
    assert rows[1]["target_name"] == "espresso"
    with open(tmp_path / "trust_summary.csv") as handle:
        (summary,) = list(csv.DictReader(handle))
    assert summary["method"] == "vanilla" and summary["images"] == "2"
    assert float(summary["deletion_auc"]) == pytest.approx(0.375)
    assert float(summary["rank_correlation_head"]) == pytest.approx(0.7)
    assert float(summary["rank_correlation_features.0"]) == pytest.approx(0.1)  # NaN skipped
    markdown = (tmp_path / "trust_summary.md").read_text()
    assert "| vanilla | 2 | 0.375 | 0.550 | 0.700 | 0.100 | 0.050 |" in markdown


def test_never_overwrites(tmp_path: Path) -> None:
    _writer(tmp_path).write_batch(_batch(), "randomization_0000.png")
    before = (tmp_path / "chelsea_deletion_insertion.png").read_bytes()
    with pytest.raises(UserInputError, match="Refusing to overwrite"):
        _writer(tmp_path).write_batch(_batch(), "randomization_0001.png")
    assert (tmp_path / "chelsea_deletion_insertion.png").read_bytes() == before


# --- the predict command, end to end -----------------------------------------------------------


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch) -> Path:
    """Run the command line in tmp_path (runs/ lands there), with pytest's own arguments hidden."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    return tmp_path


def _predict(config: Path, *extra: str) -> int:
    return cli.main(["predict", "--config", str(config), "--model.backbone", "tiny",
                     "--model.weights", "random", "--data.image_size", "32",
                     "--trainer.enable_progress_bar", "false", *extra])


def test_predict_with_evaluate_writes_the_trust_report(in_tmp_path: Path) -> None:
    assert _predict(CONFIG, "--model.method", "vanilla", "--model.evaluate", "true",
                    "--model.evaluation_steps", "8") == 0
    run = in_tmp_path / "runs" / "saliency" / "version_0"
    with open(run / "trust_report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["image"] for row in rows] == ["chelsea", "coffee", "rocket"]
    layers = ["head", "features.3", "features.2", "features.1", "features.0"]
    for row in rows:
        assert row["method"] == "vanilla" and row["deletion_baseline"] == "black"
        for key in ("probability", "deletion_auc", "insertion_auc"):
            assert 0 <= float(row[key]) <= 1, (key, row[key])
        for layer in layers:
            assert -1 <= float(row[f"rank_correlation_{layer}"]) <= 1
            assert -1 <= float(row[f"ssim_{layer}"]) <= 1
        assert Image.open(run / f"{row['image']}_deletion_insertion.png").width > 0
        assert (run / f"{row['image']}_heatmap.png").is_file()  # the saliency files as well
    assert Image.open(run / "randomization_0000.png").width > 0
    with open(run / "trust_summary.csv") as handle:
        (summary,) = list(csv.DictReader(handle))
    assert summary["images"] == "3"
    mean = sum(float(row["deletion_auc"]) for row in rows) / 3
    assert float(summary["deletion_auc"]) == pytest.approx(mean, abs=1e-4)
    assert "| vanilla | 3 |" in (run / "trust_summary.md").read_text()
    # Without evaluate the writer stays idle.
    assert _predict(CONFIG, "--model.method", "vanilla") == 0
    second = in_tmp_path / "runs" / "saliency" / "version_1"
    assert (second / "chelsea_heatmap.png").is_file()
    assert not list(second.glob("trust_*")) and not list(second.glob("*_deletion_insertion.png"))


def test_the_trust_config_parses_and_turns_evaluate_on(in_tmp_path: Path) -> None:
    assert _predict(TRUST_CONFIG, "--model.evaluation_steps", "2",
                    "--data.images", "[sample:coffee]") == 0
    assert (in_tmp_path / "runs" / "saliency_trust" / "version_0" / "trust_summary.md").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--model.evaluation_steps", "0"], "evaluation_steps must be an integer of at least 1"),
    (["--model.deletion_baseline", "white"], "Unknown deletion_baseline 'white'"),
])
def test_bad_evaluation_options_give_one_sentence(in_tmp_path: Path, capsys, extra: list[str],
                                                  message: str) -> None:
    capsys.readouterr()
    assert _predict(CONFIG, "--model.evaluate", "true", *extra) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors

"""Loss curves that show every term (issue 11, item 6)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

import callbacks.loss_history as loss_history
from callbacks.loss_history import LossHistory
from callbacks.plots import axis_scale


def test_an_axis_shows_its_values() -> None:
    assert axis_scale([-20.0, -3.0, 0.5]) == "linear"  # a log axis would hide the negatives
    assert axis_scale([0.01, 5.0, 20.0]) == "log"  # positive, over three decades
    assert axis_scale([3.0, 5.0, float("nan")]) == "linear"  # positive but narrow


def test_a_negated_score_gets_panels_of_its_own(tmp_path: Path, monkeypatch) -> None:
    drawn = {}
    monkeypatch.setattr(loss_history, "term_panels",
                        lambda path, steps, series, replace: drawn.update(series))
    history = LossHistory()
    history.rows = [{"step": 1, "score_loss": 0.1, "l2_loss": 0.01, "loss": 0.11},
                    {"step": 2, "score_loss": -12.0, "l2_loss": 4.0, "loss": -8.0}]
    history.plot(tmp_path / "loss_curve.png")
    assert drawn == {"score loss": [0.1, -12.0], "l2 loss": [0.01, 4.0], "loss": [0.11, -8.0]}


def test_a_term_at_zero_throughout_and_a_total_equal_to_the_one_term_get_no_panel(
        tmp_path: Path, monkeypatch) -> None:
    drawn = {}
    monkeypatch.setattr(loss_history, "term_panels",
                        lambda path, steps, series, replace: drawn.update(series))
    history = LossHistory()
    history.rows = [{"step": 1, "score_loss": -0.5, "l2_loss": 0.0, "loss": -0.5},
                    {"step": 2, "score_loss": -12.0, "l2_loss": 0.0, "loss": -12.0}]
    history.plot(tmp_path / "loss_curve.png")
    assert drawn == {"score loss": [-0.5, -12.0]}


def test_positive_terms_share_one_log_plot(tmp_path: Path) -> None:
    history = LossHistory()
    history.rows = [{"step": s, "content_loss": 10.0 / s, "style_loss": 100.0 / s,
                     "loss": 110.0 / s} for s in range(1, 5)]
    history.plot(tmp_path / "loss_curve.png")
    assert Image.open(tmp_path / "loss_curve.png").size == (700, 400)  # one panel, as before
    history.rows[1]["style_loss"] = -1.0
    history.plot(tmp_path / "panels.png")
    assert Image.open(tmp_path / "panels.png").size[1] > 400  # one panel per term

"""Line plots of per-step values (losses, probabilities)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from datamodules.files import write_file


def line_plot(path: Path, steps: Sequence[float], series: dict[str, Sequence[float]],
              ylabel: str, log_scale: bool = False, ylim: Optional[tuple[float, float]] = None,
              bold: Sequence[str] = (), bold_color: Optional[str] = None,
              linewidth: float = 1.5, legend: bool = True,
              legend_options: Optional[dict] = None, replace: bool = False) -> Path:
    """Draw each series against the step into a new PNG file.

    Args:
        path: The file to create.
        steps: The x values.
        series: Each line's label and values (NaN leaves a gap).
        ylabel: The y axis's label.
        log_scale: A logarithmic y axis.
        ylim: The y axis's range (default: matplotlib's).
        bold: Labels drawn thicker (e.g. the total, the mean).
        bold_color: The colour of the thick lines (default: the next in the cycle).
        linewidth: The width of the other lines.
        legend: Draw a legend.
        legend_options: Passed to ``Axes.legend`` (e.g. ``fontsize``, ``loc``).
        replace: Replace an existing file (a resumed run's own).

    Returns:
        ``path``.
    """
    import matplotlib  # imported here: slow, needed only at the end of a run

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for label, values in series.items():
        style = {"linewidth": 2.5, **({"color": bold_color} if bold_color else {})}
        axes.plot(steps, values, label=label,
                  **(style if label in bold else {"linewidth": linewidth}))
    if log_scale:
        axes.set_yscale("log")
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(True, which="both" if log_scale else "major", alpha=0.3)
    if legend:
        axes.legend(**(legend_options or {}))
    figure.tight_layout()
    return save_figure(figure, path, replace)


def axis_scale(values: Sequence[float]) -> str:
    """``"log"`` for positive values that span two decades or more, else ``"linear"``.

    A log axis hides every value at or below zero: a class score, which is maximized and so
    enters the loss negated, would not show at all.
    """
    finite = [v for v in values if v == v]  # NaN is not equal to itself
    if finite and min(finite) > 0 and max(finite) / min(finite) >= 100:
        return "log"
    return "linear"


def term_panels(path: Path, steps: Sequence[float], series: dict[str, Sequence[float]],
                replace: bool = False) -> Path:
    """One panel per series, stacked with a shared step axis, each on an axis that shows it
    (:func:`axis_scale`): terms of different signs and sizes each get their own.

    Args:
        path: The file to create.
        steps: The x values.
        series: Each panel's title and values.
        replace: Replace an existing file (a resumed run's own).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(len(series), 1, figsize=(7, 1.2 + 1.6 * len(series)), dpi=100,
                                sharex=True, squeeze=False)
    for panel, (label, values) in zip(axes[:, 0], series.items()):
        panel.plot(steps, values, linewidth=2.0 if label == "loss" else 1.5)
        scale = axis_scale(values)
        panel.set_yscale(scale)
        panel.set_ylabel(label, fontsize=9)
        panel.grid(True, which="both" if scale == "log" else "major", alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    figure.tight_layout()
    return save_figure(figure, path, replace)


def save_figure(figure: Any, path: Path, replace: bool = False) -> Path:
    """Write a matplotlib figure to a PNG file, then close it.

    Args:
        figure: The figure.
        path: The file; an existing one is replaced only with ``replace``.
        replace: Replace an existing file (a resumed run's own).
    """
    from matplotlib import pyplot as plt

    try:
        return write_file(path, lambda handle: figure.savefig(handle, format="png"), replace,
                          what="plot")
    finally:
        plt.close(figure)

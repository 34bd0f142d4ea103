"""The report of a dataset run: what a reviewer reads.

:func:`write_report` reads a finished run folder (``index.csv``, ``explanation.json``, the map
shards ``maps/shard_*.npz`` and ``skipped.csv``; see docs/dataset_report.md) and writes beside
them:

- ``report.csv``: one row per method (and control) and metric: the mean with its 95 % interval,
  the count, the method's rank, and per control its mean, the paired difference with its
  interval and whether the method beats it;
- ``report.md``: the same, short, for a README or a paper's notes;
- ``report.html``: one self-contained page (figures embedded as base64 PNG): a table per metric
  family with the controls beside each method, the ranks, where metrics disagree, where a
  control wins, each metric's perturbation and normalisation, the figure, and each method's best
  and worst images with their maps;
- ``report.png``: the figure, one panel per metric.

The numbers come from :mod:`lightning_modules.saliency.dataset_statistics`. The run's writer
(:class:`~callbacks.dataset_writer.DatasetWriter`) calls :func:`write_report` once every shard
is written; the function also works on a finished run folder:
``python -m callbacks.dataset_report RUN_DIR``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from datamodules.files import write_csv_rows, write_file
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.dataset_statistics import (
    INTERVALS, DatasetStatistics, Interval, MetricSummary, dataset_statistics, direction,
    table_from_rows)

# What write_report writes, in the run folder.
REPORT_FILES = ("report.csv", "report.md", "report.html", "report.png")

# Colours and line styles of the controls in the figure (others take the next of the cycle).
_CONTROL_STYLES = {"random": ("tab:gray", "--"), "edges": ("tab:orange", ":"),
                   "center": ("tab:green", "-.")}

# The order of the metric families in the HTML page.
_FAMILY_ORDER = ("faithfulness", "randomisation", "robustness", "localisation", "complexity")

# Side of a best/worst thumbnail in the HTML page, in pixels.
_THUMBNAIL_SIDE = 160


def number(value: float) -> str:
    """A value in four significant digits; NaN as an en dash."""
    return "–" if value is None or math.isnan(value) else f"{value:.4g}"


def interval_text(estimate: Interval, signed: bool = False) -> str:
    """``"0.1234 [0.1, 0.15]"`` (ends omitted when undefined)."""
    if math.isnan(estimate.mean):
        return "–"
    form = "{:+.4g}" if signed else "{:.4g}"
    if math.isnan(estimate.low):
        return form.format(estimate.mean)
    return (f"{form.format(estimate.mean)} [{form.format(estimate.low)}, "
            f"{form.format(estimate.high)}]")


def _verdict(comparison: Any) -> str:
    return "beats" if comparison.beats else "loses" if comparison.loses else "no difference shown"


def _read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """explanation.json and the rows of index.csv."""
    explanation_path, index_path = run_dir / "explanation.json", run_dir / "index.csv"
    for path in (index_path, explanation_path):
        if not path.is_file():
            raise UserInputError(f"Not a finished dataset run: {path} is missing.")
    try:
        explanation = json.loads(explanation_path.read_text())
    except (OSError, ValueError) as error:
        raise UserInputError(f"Cannot read {explanation_path} ({error}).") from None
    if not isinstance(explanation, dict) or not isinstance(explanation.get("metrics"), dict):
        raise UserInputError(f"{explanation_path} has no \"metrics\" object.")
    try:
        with open(index_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserInputError(f"Cannot read {index_path} ({error}).") from None
    if not rows:
        raise UserInputError(f"{index_path} lists no explained image: nothing to report.")
    return explanation, rows


def _read_skipped(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "skipped.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def report_rows(statistics: DatasetStatistics) -> list[dict[str, Any]]:
    """The rows of ``report.csv``: methods first, then the controls, per metric in order."""
    rows = []
    for summary in sorted(statistics.summaries, key=lambda s: (
            list(statistics.metrics).index(s.metric), s.is_control)):
        estimate = summary.estimate
        row = {"method": summary.method, "kind": "control" if summary.is_control else "method",
               "metric": summary.metric, "family": summary.family,
               "higher_is_better": summary.higher_is_better, "mean": _csv(estimate.mean),
               "ci_low": _csv(estimate.low), "ci_high": _csv(estimate.high), "n": estimate.n,
               "rank": "" if summary.rank is None else summary.rank}
        for control in statistics.controls:
            comparison = summary.comparisons.get(control)
            if comparison is None:
                row.update({f"{control}_mean": "", f"{control}_diff": "",
                            f"{control}_diff_low": "", f"{control}_diff_high": "",
                            f"{control}_pairs": "", f"beats_{control}": ""})
                continue
            difference = comparison.difference
            row.update({f"{control}_mean": _csv(comparison.control_estimate.mean),
                        f"{control}_diff": _csv(difference.mean),
                        f"{control}_diff_low": _csv(difference.low),
                        f"{control}_diff_high": _csv(difference.high),
                        f"{control}_pairs": difference.n, f"beats_{control}": comparison.beats})
        rows.append(row)
    return rows


def _csv(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _interval_name(statistics: DatasetStatistics, samples: int, seed: int) -> str:
    level = f"{statistics.confidence:.0%}"
    if statistics.interval == "t":
        return f"{level} Student t interval of the mean"
    return f"{level} percentile bootstrap interval ({samples} resamples, seed {seed})"


def _method_rows(statistics: DatasetStatistics, metric: str) -> list[MetricSummary]:
    rows = [s for s in statistics.summaries if s.metric == metric]
    return [s for s in rows if not s.is_control] + [s for s in rows if s.is_control]


def report_markdown(statistics: DatasetStatistics, explanation: dict[str, Any],
                    rows: list[dict[str, str]], interval_name: str, skipped: int) -> str:
    """``report.md``: per metric a table of methods and controls, then the disagreements."""
    lines = ["# Dataset report", "",
             f"{len(rows)} images explained ({skipped} skipped), backbone "
             f"{explanation.get('backbone', '?')}, {explanation.get('image_size', '?')} px. "
             f"Means over the images where a metric is defined (n), with a {interval_name}. "
             "\"vs control\": mean paired difference (method - control) and its interval; "
             "**beats** when the whole interval is on the better side of zero. Rank 1 = best "
             "method. Figure: report.png.", ""]
    for metric, info in statistics.metrics.items():
        lines += [f"## {metric} ({info.get('family', '')}, "
                  f"{direction(bool(info.get('higher_is_better', True)))})", "",
                  "| method | mean [95% CI] | n | rank | "
                  + " | ".join(f"vs {c}" for c in statistics.controls) + " |",
                  "|---|---|---|---|" + "---|" * len(statistics.controls)]
        for summary in _method_rows(statistics, metric):
            cells = []
            for control in statistics.controls:
                comparison = summary.comparisons.get(control)
                if comparison is None:
                    cells.append("")
                else:
                    verdict = _verdict(comparison)
                    shown = f"**{verdict}**" if comparison.beats else verdict
                    cells.append(f"{interval_text(comparison.difference, True)} {shown}")
            name = f"*{summary.method} (control)*" if summary.is_control else summary.method
            lines.append(f"| {name} | {interval_text(summary.estimate)} | {summary.estimate.n} "
                         f"| {summary.rank or ''} | " + " | ".join(cells) + " |")
        lines += ["", f"Perturbation: {info.get('perturbation', 'not stated')}. "
                  f"Normalisation: {info.get('normalisation', 'not stated')}.", ""]
    lines += ["## Where metrics disagree", ""]
    lines += [f"- {d.describe()}" for d in statistics.disagreements] or [
        "- No two metrics disagree on the order of the methods."]
    lines += ["", "## Where a control wins", ""]
    lines += [f"- {sentence}" for sentence in
              statistics.unbeaten_controls() + statistics.control_wins()] or [
        "- Every method beats every control on every metric."]
    if statistics.ranking_metric is not None:
        lines += ["", f"## Best and worst images by {statistics.ranking_metric}", ""]
        column = statistics.ranking_metric
        for method, extremes in statistics.extremes.items():
            def listed(indices: Sequence[int]) -> str:
                return ", ".join(f"{rows[i]['path']} ({rows[i].get(f'{method}.{column}')})"
                                 for i in indices) or "none"
            lines.append(f"- {method}: best {listed(extremes.best)}; worst "
                         f"{listed(extremes.worst)}")
    return "\n".join(lines) + "\n"


def report_figure(statistics: DatasetStatistics) -> bytes:
    """The figure as PNG bytes: one panel per metric, each method's mean and interval, the
    controls' means as lines with their intervals as bands."""
    import matplotlib  # imported here: slow, needed only at the end of a run

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    metrics = list(statistics.metrics)
    columns = max(1, min(3, len(metrics)))
    panel_rows = max(1, math.ceil(len(metrics) / columns))
    figure, axes = plt.subplots(panel_rows, columns, figsize=(4.4 * columns, 3.6 * panel_rows),
                                dpi=100, squeeze=False)
    cycle = iter(["tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"])
    control_styles = {control: _CONTROL_STYLES.get(control) or (next(cycle, "black"), "--")
                      for control in statistics.controls}
    for axis, metric in zip(axes.flat, metrics):
        rows = [s for s in statistics.summaries if s.metric == metric]
        methods = [s for s in rows if not s.is_control]
        for position, summary in enumerate(methods):
            estimate = summary.estimate
            error = None if math.isnan(estimate.low) else [[estimate.mean - estimate.low],
                                                           [estimate.high - estimate.mean]]
            axis.errorbar([position], [estimate.mean], yerr=error, fmt="o", color="tab:blue",
                          capsize=4, markersize=6)
        for summary in (s for s in rows if s.is_control):
            color, style = control_styles[summary.method]
            estimate = summary.estimate
            axis.axhline(estimate.mean, color=color, linestyle=style, linewidth=1.5,
                         label=f"{summary.method} (control)")
            if not math.isnan(estimate.low):
                axis.axhspan(estimate.low, estimate.high, color=color, alpha=0.15, linewidth=0)
        axis.set_xticks(range(len(methods)), [s.method for s in methods], rotation=30,
                        ha="right", fontsize=8)
        axis.set_xlim(-0.6, max(len(methods), 1) - 0.4)
        info = statistics.metrics[metric]
        axis.set_title(f"{metric} ({direction(bool(info.get('higher_is_better', True)))})",
                       fontsize=10)
        axis.grid(True, axis="y", alpha=0.3)
    for axis in list(axes.flat)[len(metrics):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9,
                      frameon=False)
    figure.suptitle(f"Means with {statistics.confidence:.0%} intervals; controls as lines "
                    "(bands: their intervals)", fontsize=11)
    figure.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.95))
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png")
    finally:
        plt.close(figure)
    return buffer.getvalue()


class _ShardReader:
    """Reads single maps from ``maps/shard_*.npz``, each shard and method decoded once."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.shards: dict[Path, Any] = {}
        self.arrays: dict[tuple[Path, str], np.ndarray] = {}

    def shard_path(self, shard: str) -> Path:
        shard = shard.strip()
        if shard.isdigit():
            return self.run_dir / "maps" / f"shard_{int(shard):05d}.npz"
        for candidate in (self.run_dir / shard, self.run_dir / "maps" / shard):
            if candidate.is_file():
                return candidate
        return self.run_dir / "maps" / shard

    def map_of(self, row: dict[str, str], method: str) -> Optional[np.ndarray]:
        """The method's map of one index row (float32 ``[H, W]``), None if not found."""
        path = self.shard_path(row.get("shard") or "")
        if path not in self.shards:
            if not path.is_file():
                return None
            self.shards[path] = np.load(path, allow_pickle=False)
        shard = self.shards[path]
        if method not in shard.files:
            return None
        if (path, method) not in self.arrays:
            scale = shard[f"{method}.scale"] if f"{method}.scale" in shard.files else None
            self.arrays[(path, method)] = (shard[method], scale)
        maps, scale = self.arrays[(path, method)]
        position = int(row.get("row") or 0)
        if "paths" in shard.files:
            paths = list(shard["paths"])
            if not (0 <= position < len(paths) and paths[position] == row.get("path")):
                if row.get("path") not in paths:
                    return None
                position = paths.index(row.get("path"))  # the row column disagrees: trust paths
        if not 0 <= position < len(maps):
            return None
        picture = maps[position].astype(np.float32)
        return picture * float(scale[position]) if scale is not None else picture


def _load_pixels(run_dir: Path, source: str, size: int) -> Optional[np.ndarray]:
    """The image as the classifier saw it, ``[size, size, 3]`` uint8; None if unreadable."""
    from datamodules.labeled_images import preprocess

    candidates = [source]
    if not source.startswith(("sample:", "memory:")) and not Path(source).is_absolute():
        candidates.append(str(run_dir / source))
    for candidate in candidates:
        try:
            pixels = preprocess(candidate, size)
        except (UserInputError, OSError):
            continue
        return (pixels.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    return None


def blended_thumbnail(pixels: Optional[np.ndarray], saliency: np.ndarray,
                      side: int = _THUMBNAIL_SIDE) -> bytes:
    """The image with its map blended over it (jet colours, half opacity) as PNG bytes; the map
    alone when the image is missing."""
    from matplotlib import colormaps
    from PIL import Image

    saliency = np.nan_to_num(saliency.astype(np.float64))
    low, high = float(saliency.min()), float(saliency.max())
    # A non-negative map keeps zero as "no relevance"; a signed one spans its range.
    floor = 0.0 if low >= 0 else low
    scaled = (saliency - floor) / (high - floor) if high > floor else np.zeros_like(saliency)
    colours = (colormaps["jet"](scaled)[..., :3] * 255).astype(np.uint8)
    heat = Image.fromarray(colours).resize((side, side), Image.BILINEAR)
    if pixels is not None:
        photo = Image.fromarray(pixels).resize((side, side), Image.BILINEAR)
        heat = Image.blend(photo, heat, 0.5)
    buffer = io.BytesIO()
    heat.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


_STYLE = """
body { font-family: sans-serif; max-width: 1200px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr.control td { color: #666; font-style: italic; }
tr.metric td { background: #fafafa; font-weight: bold; }
td.beats { background: #e3f4e3; }
td.loses { background: #f8e0e0; }
figure { display: inline-block; margin: 4px; font-size: 0.75em; width: 170px; }
figure img { display: block; }
"""


def report_html(statistics: DatasetStatistics, explanation: dict[str, Any],
                rows: list[dict[str, str]], interval_name: str, figure_png: bytes,
                thumbnails: dict[str, dict[str, list[tuple[int, bytes]]]],
                skipped: list[dict[str, str]]) -> str:
    """``report.html``: one page, every picture embedded."""
    escape = html.escape
    controls = statistics.controls
    parts = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\">",
             "<title>Dataset report</title>", f"<style>{_STYLE}</style></head><body>",
             "<h1>Dataset report</h1>",
             f"<p>{len(rows)} images explained, {len(skipped)} skipped; backbone "
             f"{escape(str(explanation.get('backbone', '?')))}, "
             f"{escape(str(explanation.get('image_size', '?')))} px. Methods: "
             f"{escape(', '.join(statistics.methods))}. Controls: "
             f"{escape(', '.join(controls)) or 'none'}.</p>",
             f"<p>Each mean is over the images where the metric is defined (<i>n</i>), with a "
             f"{escape(interval_name)}. A method's column <i>vs control</i> is the mean paired "
             "difference (method &minus; control, image by image) with its interval: "
             "<b>beats</b> (green) when the whole interval lies on the better side of zero, "
             "<b>loses</b> (red) when it lies wholly on the worse side. Rank 1 is the best "
             "method. Each interval is 95 % on its own (no correction for the many "
             "comparisons).</p>"]
    # Quantus' order of the families, faithfulness first; unknown families after them.
    families = sorted(dict.fromkeys(str(info.get("family", "")) for info in
                                    statistics.metrics.values()),
                      key=lambda f: _FAMILY_ORDER.index(f) if f in _FAMILY_ORDER else 99)
    for family in families:
        parts.append(f"<h2>{escape(family or 'other')}</h2><table><tr><th>method</th>"
                     "<th>mean [95% CI]</th><th>n</th><th>rank</th>"
                     + "".join(f"<th>vs {escape(c)}</th>" for c in controls) + "</tr>")
        for metric, info in statistics.metrics.items():
            if str(info.get("family", "")) != family:
                continue
            parts.append(f"<tr class=\"metric\"><td colspan=\"{4 + len(controls)}\">"
                         f"{escape(metric)} ({direction(bool(info.get('higher_is_better', True)))}"
                         ")</td></tr>")
            for summary in _method_rows(statistics, metric):
                cells = []
                for control in controls:
                    comparison = summary.comparisons.get(control)
                    if comparison is None:
                        cells.append("<td></td>")
                        continue
                    verdict = _verdict(comparison)
                    css = {"beats": " class=\"beats\"", "loses": " class=\"loses\""}.get(
                        verdict, "")
                    cells.append(f"<td{css}>{escape(interval_text(comparison.difference, True))}"
                                 f" {verdict}</td>")
                name = (f"{escape(summary.method)} (control)" if summary.is_control
                        else escape(summary.method))
                css = " class=\"control\"" if summary.is_control else ""
                parts.append(f"<tr{css}><td>{name}</td>"
                             f"<td>{escape(interval_text(summary.estimate))}</td>"
                             f"<td>{summary.estimate.n}</td><td>{summary.rank or ''}</td>"
                             + "".join(cells) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Where metrics disagree</h2><ul>")
    parts += [f"<li>{escape(d.describe())}</li>" for d in statistics.disagreements] or [
        "<li>No two metrics disagree on the order of the methods.</li>"]
    parts.append("</ul><h2>Where a control wins</h2><ul>")
    parts += [f"<li>{escape(sentence)}</li>" for sentence in
              statistics.unbeaten_controls() + statistics.control_wins()] or [
        "<li>Every method beats every control on every metric.</li>"]
    parts.append("</ul><h2>How each metric perturbs and normalises</h2><table><tr>"
                 "<th>metric</th><th>family</th><th>better</th><th>perturbation</th>"
                 "<th>normalisation</th></tr>")
    for metric, info in statistics.metrics.items():
        parts.append(f"<tr><td>{escape(metric)}</td>"
                     f"<td>{escape(str(info.get('family', '')))}</td>"
                     f"<td>{'higher' if info.get('higher_is_better', True) else 'lower'}</td>"
                     f"<td>{escape(str(info.get('perturbation', 'not stated')))}</td>"
                     f"<td>{escape(str(info.get('normalisation', 'not stated')))}</td></tr>")
    parts.append("</table><h2>Figure</h2>"
                 f"<img alt=\"one panel per metric\" src=\"{_data_uri(figure_png)}\">")
    if statistics.ranking_metric is not None:
        metric = statistics.ranking_metric
        parts.append(f"<h2>Best and worst images by {escape(metric)}</h2>")
        for method, groups in thumbnails.items():
            parts.append(f"<h3>{escape(method)}</h3>")
            for title, pictures in groups.items():
                parts.append(f"<div><b>{title}</b><br>")
                for index, png in pictures:
                    row = rows[index]
                    caption = (f"{row.get('path', '')}: {metric} "
                               f"{number(float(row.get(f'{method}.{metric}') or 'nan'))}")
                    parts.append(f"<figure><img alt=\"{escape(caption)}\" "
                                 f"src=\"{_data_uri(png)}\"><figcaption>{escape(caption)}"
                                 "</figcaption></figure>")
                parts.append("</div>")
    if skipped:
        parts.append(f"<h2>Skipped images ({len(skipped)})</h2><ul>")
        parts += [f"<li>{escape(r.get('path', ''))}: {escape(r.get('reason', ''))}</li>"
                  for r in skipped[:50]]
        if len(skipped) > 50:
            parts.append(f"<li>... and {len(skipped) - 50} more (skipped.csv)</li>")
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _thumbnails(run_dir: Path, statistics: DatasetStatistics, rows: list[dict[str, str]],
                image_size: Optional[int]) -> dict[str, dict[str, list[tuple[int, bytes]]]]:
    """Per method, its best and worst images with their maps blended, as PNG bytes."""
    reader = _ShardReader(run_dir)
    pixels_cache: dict[tuple[str, int], Optional[np.ndarray]] = {}
    result = {}
    for method, extremes in statistics.extremes.items():
        groups = {}
        for title, indices in (("best", extremes.best), ("worst", extremes.worst)):
            pictures = []
            for index in indices:
                saliency = reader.map_of(rows[index], method)
                if saliency is None:
                    continue
                side = int(image_size or saliency.shape[-1])
                key = (rows[index].get("path", ""), side)
                if key not in pixels_cache:
                    pixels_cache[key] = _load_pixels(run_dir, key[0], side)
                pictures.append((index, blended_thumbnail(pixels_cache[key], saliency)))
            groups[title] = pictures
        result[method] = groups
    return result


def check_report_options(interval: str, confidence: float, images_per_method: int,
                         bootstrap_samples: int) -> None:
    """Raise a one-sentence error for an option of the report that cannot work."""
    if interval not in INTERVALS:
        raise UserInputError(f"Unknown interval {interval!r}: expected one of "
                             f"{', '.join(INTERVALS)}.")
    if not 0 < confidence < 1:
        raise UserInputError(f"The confidence must lie between 0 and 1, got {confidence}.")
    if images_per_method < 0:
        raise UserInputError(f"images_per_method must be 0 or more, got {images_per_method}.")
    if bootstrap_samples < 1:
        raise UserInputError(f"bootstrap_samples must be 1 or more, got {bootstrap_samples}.")


def write_report(run_dir: str | Path, interval: str = "t", confidence: float = 0.95,
                 ranking_metric: Optional[str] = None, images_per_method: int = 3,
                 bootstrap_samples: int = 2000, seed: int = 0,
                 replace: bool = False) -> list[Path]:
    """Write the report of a finished dataset run into its folder.

    Args:
        run_dir: The run folder (``index.csv``, ``explanation.json``, ``maps/``).
        interval: ``"t"`` (Student's t interval) or ``"bootstrap"`` (percentile bootstrap).
        confidence: The intervals' coverage.
        ranking_metric: The metric that picks each method's best and worst images (default:
            the first faithfulness metric of the run, e.g. ``road_morf``).
        images_per_method: How many best and how many worst images per method.
        bootstrap_samples: Resamples of the bootstrap interval.
        seed: The bootstrap's random seed.
        replace: Replace existing report files (by default they are never overwritten).

    Returns:
        The files written: ``report.csv``, ``report.md``, ``report.html``, ``report.png``.

    Raises:
        UserInputError: If the folder is not a finished dataset run, or an option is invalid.
    """
    check_report_options(interval, confidence, images_per_method, bootstrap_samples)
    run_dir = Path(run_dir)
    explanation, rows = _read_run(run_dir)
    methods = [str(m) for m in explanation.get("methods", [])]
    controls = [str(c) for c in explanation.get("controls", [])]
    metrics = {str(name): info if isinstance(info, dict) else {}
               for name, info in explanation["metrics"].items()}
    columns = [f"{name}.{metric}" for name in [*methods, *controls] for metric in metrics]
    header = set(rows[0])
    table = table_from_rows(rows, [column for column in columns if column in header])
    statistics = dataset_statistics(
        table, methods, controls, metrics, confidence=confidence, interval=interval,
        samples=bootstrap_samples, seed=seed, ranking_metric=ranking_metric,
        images_per_method=images_per_method)
    if not statistics.metrics:
        raise UserInputError(f"{run_dir / 'index.csv'} has no column <method>.<metric> for the "
                             "methods and metrics of explanation.json: nothing to report.")
    interval_name = _interval_name(statistics, bootstrap_samples, seed)
    skipped = _read_skipped(run_dir)
    report_csv_rows = report_rows(statistics)
    figure_png = report_figure(statistics)
    thumbnails = _thumbnails(run_dir, statistics, rows, explanation.get("image_size"))
    page = report_html(statistics, explanation, rows, interval_name, figure_png, thumbnails,
                       skipped)
    markdown = report_markdown(statistics, explanation, rows, interval_name, len(skipped))
    return [
        write_csv_rows(run_dir / "report.csv", list(report_csv_rows[0]), report_csv_rows,
                       replace),
        write_file(run_dir / "report.md", lambda h: h.write(markdown.encode()), replace,
                   what="report"),
        write_file(run_dir / "report.html", lambda h: h.write(page.encode()), replace,
                   what="report"),
        write_file(run_dir / "report.png", lambda h: h.write(figure_png), replace,
                   what="plot"),
    ]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m callbacks.dataset_report RUN_DIR``: the report of a finished run folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("run_dir")
    parser.add_argument("--interval", choices=INTERVALS, default="t")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--ranking_metric", default=None)
    parser.add_argument("--images_per_method", type=int, default=3)
    parser.add_argument("--bootstrap_samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--replace", action="store_true", help="replace an existing report")
    arguments = vars(parser.parse_args(argv))
    try:
        for path in write_report(arguments.pop("run_dir"), **arguments):
            print(path)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

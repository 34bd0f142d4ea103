"""Writes the trust report of :class:`lightning_modules.saliency.SaliencyMap` (``evaluate``).

The numbers come from :mod:`lightning_modules.saliency.evaluation`; this callback only lays them
out: a CSV row per image, the deletion and insertion curves of each image, the grid of
randomized maps per batch (Adebayo et al. 2018, figure 2), and the method's means.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from callbacks.plots import save_figure
from callbacks.run_directory import run_directory
from datamodules.files import write_csv_rows, write_file
from lightning_modules.image_optimization.jobs import gather_objects
from lightning_modules.naming import short_title
from lightning_modules.saliency.evaluation import TrustReport, normalized_map, summary
from lightning_modules.saliency.module import SaliencyBatch


def report_rows(result: SaliencyBatch) -> list[dict[str, Any]]:
    """One CSV row per image of a batch with a trust report."""
    report = result.trust
    rows = []
    for index, name in enumerate(result.names):
        row = {"image": name, "method": report.method, "target_class": result.target[index],
               "target_name": result.class_name(result.target[index]),
               "probability": f"{report.deletion_curves[index, 0].item():.4f}",
               "deletion_baseline": report.deletion_substrate,
               "insertion_start": report.insertion_substrate,
               "deletion_auc": f"{report.deletion_auc[index].item():.4f}",
               "insertion_auc": f"{report.insertion_auc[index].item():.4f}"}
        for layer, name_of_layer in enumerate(report.randomized_layers):
            row[f"rank_correlation_{name_of_layer}"] = (
                f"{report.rank_correlation[index, layer].item():.4f}")
            row[f"ssim_{name_of_layer}"] = f"{report.ssim[index, layer].item():.4f}"
        rows.append(row)
    return rows


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    """The summary as markdown: one line per method, then each randomized layer's means."""
    layers = [key[len("rank_correlation_"):] for key in rows[0] if
              key.startswith("rank_correlation_")]
    lines = ["| method | images | deletion AUC (lower is better) | insertion AUC (higher is "
             "better) | rank correlation, head random | rank correlation, all random | SSIM, "
             "all random |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['method']} | {int(row['images'])} | {row['deletion_auc']:.3f} | "
                     f"{row['insertion_auc']:.3f} | {row[f'rank_correlation_{layers[0]}']:.3f} "
                     f"| {row[f'rank_correlation_{layers[-1]}']:.3f} | "
                     f"{row[f'ssim_{layers[-1]}']:.3f} |")
    lines += ["", "Randomized from the top down, cumulatively (each row: that layer and every "
              "layer above it):", "", "| method | layers random | rank correlation | SSIM |",
              "|---|---|---|---|"]
    for row in rows:
        for layer in layers:
            lines.append(f"| {row['method']} | down to {layer} | "
                         f"{row[f'rank_correlation_{layer}']:.3f} | {row[f'ssim_{layer}']:.3f} |")
    return "\n".join(lines) + "\n"


class TrustReportWriter(BasePredictionWriter):
    """Writes the trust report of a saliency run; batches without one are left alone.

    Files in the run directory: ``<image>_deletion_insertion.png`` (the two curves with their
    areas), ``randomization_<batch>.png`` (rows: images; columns: the photo, the map, then the
    map after each cumulative randomization, with its rank correlation and SSIM to the
    original), and at the end ``trust_report.csv`` (one row per image), ``trust_summary.csv`` and
    ``trust_summary.md`` (the method's means). Existing files are never overwritten.

    Args:
        panel_inches: Width of one panel of the randomization grid, in inches (100 dpi).
    """

    def __init__(self, panel_inches: float = 1.3) -> None:
        super().__init__(write_interval="batch")
        self.panel_inches = panel_inches
        self.directory: Optional[Path] = None
        self.suffix = ""
        self.rows: list[dict[str, Any]] = []
        self.positions: list[int] = []  # each row's image's place in the data, for the order
        self.reports: list[TrustReport] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.directory = run_directory(trainer)  # a collective call: every process is here
        self.suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self.rows, self.positions, self.reports = [], [], []

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           prediction: Any, batch_indices: Optional[Sequence[int]], batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        if not isinstance(prediction, SaliencyBatch) or prediction.trust is None:
            return
        positions = batch.get("index") if isinstance(batch, dict) else None
        self.write_batch(prediction, f"randomization_{batch_idx:04d}{self.suffix}.png",
                         None if positions is None else [int(p) for p in positions])

    def write_batch(self, result: SaliencyBatch, grid_name: str,
                    positions: Optional[list[int]] = None) -> list[Path]:
        """Write one batch's plots and keep its rows; returns the paths written.

        Args:
            result: The batch.
            grid_name: File name of its randomization grid.
            positions: Each image's place in the data (default: after the rows so far), so
                that rows gathered from several processes go back in the data's order.
        """
        if positions is None:
            positions = list(range(len(self.rows), len(self.rows) + len(result.names)))
        self.positions += positions
        written = [self.write_curves(result, index) for index in range(len(result.names))]
        written.append(self.write_grid(result, self.directory / grid_name))
        self.rows += report_rows(result)
        # The maps and curves are drawn already; only the numbers wait for the summary.
        self.reports.append(dataclasses.replace(
            result.trust, randomized_maps=torch.empty(0), deletion_curves=torch.empty(0),
            insertion_curves=torch.empty(0)))
        return written

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Each process explained its share of the batches: back in the data's order.
        pairs = [pair for part in gather_objects(list(zip(self.positions, self.rows)),
                                                 trainer.world_size) for pair in part]
        rows = [row for _, row in sorted(pairs, key=lambda pair: pair[0])]
        reports = [report for part in gather_objects(self.reports, trainer.world_size)
                   for report in part]
        if trainer.is_global_zero and rows:
            self.write_tables(rows, reports)

    def write_tables(self, rows: list[dict[str, Any]], reports: list[TrustReport]) -> list[Path]:
        """``trust_report.csv``, ``trust_summary.csv`` and ``trust_summary.md``."""
        directory = self.directory
        written = [write_csv_rows(directory / "trust_report.csv", list(rows[0]), rows)]
        means = []
        for method in dict.fromkeys(report.method for report in reports):
            means.append({"method": method, "deletion_baseline": reports[0].deletion_substrate,
                          "insertion_start": reports[0].insertion_substrate,
                          **summary([report for report in reports if report.method == method])})
        written.append(write_csv_rows(
            directory / "trust_summary.csv", list(means[0]),
            [{key: f"{value:.4f}" if isinstance(value, float) and key != "images" else
              (int(value) if key == "images" else value) for key, value in row.items()}
             for row in means]))
        text = summary_markdown(means).encode()
        written.append(write_file(directory / "trust_summary.md",
                                  lambda handle: handle.write(text), what="summary"))
        return written

    def write_curves(self, result: SaliencyBatch, index: int) -> Path:
        """The deletion and insertion curves of one image, side by side."""
        plt = _pyplot()
        report = result.trust
        fractions = report.fractions.numpy()
        target = short_title(result.class_name(result.target[index]))
        figure, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100, sharey=True)
        for axis, kind, curve, area, start in (
                (axes[0], "deletion", report.deletion_curves[index], report.deletion_auc[index],
                 f"removed pixels become {report.deletion_substrate}"),
                (axes[1], "insertion", report.insertion_curves[index],
                 report.insertion_auc[index], f"starts from {report.insertion_substrate}")):
            axis.plot(fractions, curve.numpy(), color="tab:red" if kind == "deletion"
                      else "tab:green")
            axis.fill_between(fractions, curve.numpy(), alpha=0.2,
                              color="tab:red" if kind == "deletion" else "tab:green")
            axis.set_title(f"{kind} AUC {area.item():.3f} ({start})", fontsize=9)
            axis.set_xlabel(f"fraction of pixels {'removed' if kind == 'deletion' else 'inserted'}"
                            ", most salient first")
            axis.set_xlim(0, 1)
            axis.set_ylim(0, 1)
            axis.grid(True, alpha=0.3)
        axes[0].set_ylabel(f"p({target})")
        figure.suptitle(f"{result.names[index]}: {report.method}", fontsize=10)
        figure.tight_layout()
        return save_figure(figure, self.directory / f"{result.names[index]}_deletion_insertion.png")

    def write_grid(self, result: SaliencyBatch, path: Path) -> Path:
        """Rows: images; columns: photo, map, then the map after each cumulative randomization."""
        plt = _pyplot()
        report = result.trust
        rows, layers = len(result.names), len(report.randomized_layers)
        width = self.panel_inches
        figure, axes = plt.subplots(rows, layers + 2, squeeze=False, dpi=100,
                                    figsize=(width * (layers + 2), (width + 0.45) * rows + 0.5))
        for row in range(rows):
            # The scaling SSIM compares (absolute value, minimum to 0, 99th percentile to 1).
            maps = normalized_map(torch.cat([result.maps[row][None],
                                             report.randomized_maps[row]]))
            panels = [("photo", result.pixels[row].permute(1, 2, 0).clamp(0, 1).numpy(), None)]
            panels.append((f"{report.method}", maps[0].numpy(), None))
            for layer, name in enumerate(report.randomized_layers):
                panels.append((name, maps[layer + 1].numpy(),
                               f"ρ {report.rank_correlation[row, layer].item():.2f} "
                               f"SSIM {report.ssim[row, layer].item():.2f}"))
            for column, (title, picture, caption) in enumerate(panels):
                axis = axes[row][column]
                axis.imshow(picture, cmap="gray", vmin=0, vmax=1)
                axis.set_xticks([])
                axis.set_yticks([])
                if row == 0:
                    axis.set_title(title, fontsize=8)
                if caption:
                    axis.set_xlabel(caption, fontsize=7)
            axes[row][0].set_ylabel(result.names[row], fontsize=8)
        figure.suptitle("cascading randomization, top down: each column randomizes one more layer",
                        fontsize=9)
        figure.tight_layout()
        return save_figure(figure, path)


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend (imported late: slow, needed only here)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot

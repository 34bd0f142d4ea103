"""Writes the pictures and raw maps of :class:`lightning_modules.saliency.SaliencyMap`."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from callbacks.logged_images import log_picture
from callbacks.plots import save_figure
from callbacks.run_directory import run_directory
from datamodules.files import write_file
from datamodules.images import save_png
from lightning_modules.errors import UserInputError
from lightning_modules.naming import short_title
from lightning_modules.saliency.module import SaliencyBatch


def scale_map(saliency: torch.Tensor, clip_percentile: float = 99.9) -> torch.Tensor:
    """Scale a non-negative map ``[H, W]`` to 0-1, clipping the brightest pixels.

    A handful of very large gradients would otherwise leave the rest of the map black; clipping
    many more (the earlier 99.5 %: 250 pixels of a 224 px map) made every map glow, at a mean
    brightness of 0.13-0.42 on the built-in photos, where the homework's are nearly black with
    sparse hot spots (0.06-0.36 at 99.9 %: SmoothGrad's maps are the diffuse ones).

    Args:
        saliency: The map.
        clip_percentile: Values above this percentile of the map become 1 (100: the maximum).

    Returns:
        ``[H, W]`` in ``[0, 1]``.
    """
    saliency = saliency.detach().float().clamp(min=0)
    top = torch.quantile(saliency.flatten(), clip_percentile / 100.0)
    if not top > 0:
        top = saliency.max()
    return (saliency / top).clamp(0, 1) if top > 0 else torch.zeros_like(saliency)


def mass_area(saliency: torch.Tensor, fraction: float = 0.5) -> float:
    """The share of the image that holds ``fraction`` of the map's mass, its brightest first.

    Where the mass is, in one number: a map that points at an object puts half its mass in a
    few percent of the pixels; one that glows everywhere needs nearly half of them.

    Args:
        saliency: A non-negative map ``[H, W]``.
        fraction: The share of the total mass.

    Returns:
        The fewest pixels whose values add up to ``fraction`` of the total, as a share of all
        pixels (1.0 for an empty map).
    """
    values = saliency.detach().float().clamp(min=0).flatten().sort(descending=True).values
    total = values.sum()
    if not total > 0:
        return 1.0
    count = int(torch.searchsorted(values.cumsum(0), fraction * total)) + 1
    return min(count, values.numel()) / values.numel()


def colorize(scaled: torch.Tensor, colormap: str = "hot") -> torch.Tensor:
    """Apply a matplotlib colormap to a 0-1 map ``[H, W]``; returns 0-1 pixels ``[3, H, W]``."""
    from matplotlib import colormaps

    rgba = colormaps[colormap](scaled.cpu().numpy())
    return torch.from_numpy(rgba[..., :3]).permute(2, 0, 1).float()


def overlay(pixels: torch.Tensor, scaled: torch.Tensor, colormap: str = "hot",
            dim: float = 0.4) -> torch.Tensor:
    """Draw a heat map over a photo: opacity is the squared map, so weak evidence stays faint.

    Args:
        pixels: The photo, 0-1 ``[3, H, W]``.
        scaled: The map scaled to 0-1, ``[H, W]``.
        colormap: Matplotlib colormap name.
        dim: How much the photo is darkened where the map is low, so the colours stand out.

    Returns:
        0-1 pixels ``[3, H, W]``.
    """
    alpha = scaled.square()[None]
    return (1 - alpha) * (1 - dim) * pixels + alpha * colorize(scaled, colormap)


def cam_overlay(pixels: torch.Tensor, scaled: torch.Tensor, colormap: str = "jet",
                weight: float = 0.5) -> torch.Tensor:
    """A class activation map over a photo, as CAM papers and pytorch-grad-cam draw it: the
    colour-mapped map blended with the photo everywhere (a CAM is smooth and covers regions,
    so the photo shows through the colours)."""
    return (1 - weight) * pixels + weight * colorize(scaled, colormap)


def save_npy(array: np.ndarray, path: Path) -> Path:
    """Save an array, refusing to overwrite an existing file."""
    return write_file(path, lambda handle: np.save(handle, array), what="array file")


class SaliencyWriter(BasePredictionWriter):
    """Saves, per image, a heat map, an overlay and the raw map, plus one sheet per batch.

    Files in the run directory (``runs/saliency/version_N``): ``<image>_heatmap.png``,
    ``<image>_overlay.png``, ``<image>_saliency.npy`` (float32 ``[H, W]``, unscaled),
    ``<image>_attributions.npy`` (Integrated Gradients only: float32 ``[3, H, W]``, signed),
    ``sheet_<batch>.png`` (each photo with its predicted and true classes, its map and the
    overlay; the map's title gives the share of the image that holds half its mass, and warns
    when the explained class has a low probability) and ``predictions.csv`` (one row per image).
    Class activation maps (Grad-CAM and its family) are drawn in ``cam_colormap`` blended over
    the photo. Existing files are never overwritten.

    Args:
        colormap: Matplotlib colormap of the heat maps (the homework shows ``"hot"``).
        clip_percentile: Map values above this percentile show at full brightness.
        panel_inches: Width of one column of the sheet, in inches (100 dpi).
        cam_colormap: Colormap of class activation maps (``"jet"``, as the CAM papers).
        low_probability: Below this probability of the explained class the sheet warns that
            the map explains a class the network hardly sees.
    """

    def __init__(self, colormap: str = "hot", clip_percentile: float = 99.9,
                 panel_inches: float = 2.4, cam_colormap: str = "jet",
                 low_probability: float = 0.2) -> None:
        super().__init__(write_interval="batch")
        from matplotlib import colormaps

        for name in (colormap, cam_colormap):
            if name not in colormaps:
                raise UserInputError(f"Unknown colormap '{name}' (see matplotlib's colormaps).")
        if not 0 <= low_probability <= 1:
            raise UserInputError(f"low_probability must be in [0, 1], got {low_probability}.")
        if not 0 < clip_percentile <= 100:
            raise UserInputError(f"clip_percentile must be in (0, 100], got {clip_percentile}.")
        self.colormap = colormap
        self.cam_colormap = cam_colormap
        self.low_probability = low_probability
        self.clip_percentile = clip_percentile
        self.panel_inches = panel_inches
        self.directory: Optional[Path] = None
        self.suffix = ""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self.directory = run_directory(trainer)
        # Each process writes its own batches; names carry the rank when there are several.
        self.suffix = f"_rank{trainer.global_rank}" if trainer.world_size > 1 else ""

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           prediction: Any, batch_indices: Optional[Sequence[int]], batch: Any,
                           batch_idx: int, dataloader_idx: int) -> None:
        if not isinstance(prediction, SaliencyBatch):
            raise TypeError(f"SaliencyWriter expects SaliencyBatch predictions, got "
                            f"{type(prediction).__name__}.")
        written = self.write_batch(prediction, f"sheet_{batch_idx:04d}{self.suffix}.png")
        sheet = next(path for path in written if path.name.startswith("sheet_"))
        log_picture(trainer, "saliency/sheet", sheet, step=batch_idx)

    def write_batch(self, result: SaliencyBatch, sheet_name: str) -> list[Path]:
        """Write every file of one batch; returns the paths written."""
        directory = self.directory
        written = []
        scaled_maps, overlays = [], []
        colormap = self.colormap_of(result)
        for index, name in enumerate(result.names):
            saliency = result.maps[index]
            scaled, heatmap, drawn = self.pictures(result, index)
            scaled_maps.append(scaled)
            overlays.append(drawn)
            written.append(save_png(heatmap, directory / f"{name}_heatmap.png"))
            written.append(save_png(drawn, directory / f"{name}_overlay.png"))
            written.append(save_npy(saliency.float().numpy(), directory / f"{name}_saliency.npy"))
            if result.attributions is not None:
                written.append(save_npy(result.attributions[index].float().numpy(),
                                        directory / f"{name}_attributions.npy"))
        written.append(self.write_sheet(result, scaled_maps, overlays, colormap,
                                        directory / sheet_name))
        written.append(self.append_rows(result, directory / f"predictions{self.suffix}.csv"))
        return written

    def colormap_of(self, result: SaliencyBatch) -> str:
        """The colormap of a batch's maps: ``cam_colormap`` for class activation maps."""
        return self.cam_colormap if result.class_activation_map else self.colormap

    def pictures(self, result: SaliencyBatch, index: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image ``index``'s map scaled to 0-1 ``[H, W]``, its heat map and its overlay (0-1
        pixels ``[3, H, W]``): what ``<image>_heatmap.png`` and ``<image>_overlay.png`` hold."""
        colormap = self.colormap_of(result)
        scaled = scale_map(result.maps[index], self.clip_percentile)
        if result.class_activation_map:
            drawn = cam_overlay(result.pixels[index], scaled, colormap)
        else:
            drawn = overlay(result.pixels[index], scaled, colormap)
        return scaled, colorize(scaled, colormap), drawn

    def write_sheet(self, result: SaliencyBatch, scaled_maps: list[torch.Tensor],
                    overlays: list[torch.Tensor], colormap: str, path: Path) -> Path:
        """Photos in the top row, titled with the predicted and true class; their maps, titled
        with the explained class and where the mass is; the overlays."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        columns = len(result.names)
        width = self.panel_inches
        figure, axes = plt.subplots(3, columns, figsize=(width * columns, 3 * width + 1.6),
                                    dpi=100, squeeze=False)
        for column in range(columns):
            predicted = result.predicted[column]
            true = result.true[column]
            title = (f"{short_title(result.class_name(predicted))} "
                     f"(p={result.probability[column]:.2f})"
                     f"\ntrue: {short_title(result.class_name(true))}")
            photo, heat, both = axes[0][column], axes[1][column], axes[2][column]
            photo.imshow(result.pixels[column].permute(1, 2, 0).clamp(0, 1).numpy())
            # Red title: the network gets this image wrong.
            photo.set_title(title, fontsize=9,
                            color="black" if true in (None, predicted) else "red")
            heat.imshow(scaled_maps[column].numpy(), cmap=colormap, vmin=0, vmax=1)
            text, color = self.map_title(result, column)
            heat.set_title(text, fontsize=9, color=color)
            both.imshow(overlays[column].permute(1, 2, 0).clamp(0, 1).numpy())
            for axis in (photo, heat, both):
                axis.axis("off")
        figure.tight_layout()
        return save_figure(figure, path)

    def map_title(self, result: SaliencyBatch, column: int) -> tuple[str, str]:
        """The title of image ``column``'s map and its colour."""
        target = short_title(result.class_name(result.target[column]))
        if result.target_probability and result.target_probability[column] < self.low_probability:
            # Any class gets a structured map; say when the network hardly sees this one.
            return (f"map for: {target}\np={result.target_probability[column]:.2f}: the network "
                    "is unsure", "darkorange")
        area = mass_area(result.maps[column])
        return f"map for: {target}\nhalf the mass in {100 * area:.0f} % of it", "black"

    @staticmethod
    def append_rows(result: SaliencyBatch, path: Path) -> Path:
        """Add one CSV row per image: name, true, predicted (with p) and explained class."""
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["image", "true_class", "true_name", "predicted_class",
                                 "predicted_name", "probability", "target_class", "target_name",
                                 "target_probability", "half_mass_area"])
            for index, name in enumerate(result.names):
                true, predicted, target = (result.true[index], result.predicted[index],
                                           result.target[index])
                writer.writerow([name, "" if true is None else true, result.class_name(true),
                                 predicted, result.class_name(predicted),
                                 f"{result.probability[index]:.4f}", target,
                                 result.class_name(target),
                                 f"{result.target_probability[index]:.4f}"
                                 if result.target_probability else "",
                                 f"{mass_area(result.maps[index]):.4f}"])
        return path

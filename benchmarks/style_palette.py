"""Does the picture take the painting's palette? Style transfer's colour, measured on your pairs.

For each photo/painting pair, three runs of the shipped config (``configs/style_transfer.yaml``),
one process, side by side:

- ``no_color_terms``: ``color_weight: 0`` and ``chroma_detail_limit: false``, the config as
  it was before the colour terms;
- ``default``: the shipped config;
- ``preserve_colors``: the shipped config with ``preserve_colors: true``.

Each picture is measured against its painting and its photo:

- ``r``: colour distance of the result to the painting over that of the photo to the painting
  (``color_distance``: sliced Wasserstein of Lab pixels, 64 directions, 256 x 256): how far the
  picture moved from the photo's palette toward the painting's (0: the painting's; 1: the
  photo's);
- ``to_photo``: colour distance of the result to the photo (small for ``preserve_colors``);
- ``chroma_noise`` and ``luma_noise`` of the result and of the painting at the same size;
- ``lightness``: mean L of the result, the painting and the photo;
- ``content``: the content loss as the config defines it (mean squared difference of
  EfficientNet-Lite0's layer-4 features of the result and the photo, unweighted);
- ``seconds``: the run's wall time.

It writes ``palette.csv``, ``palette.md`` (a Markdown table) and a sheet per pair: the photo's
and the painting's pixels sorted by lightness (their palettes, not the pictures: the pairs are
not ours to publish), then the three results. The pairs are yours; nothing is downloaded::

    python benchmarks/style_palette.py --out /tmp/palette --size 512 \\
        --pair photo1.jpg painting1.jpg --pair photo2.jpg painting2.jpg

``--reuse`` measures a picture already in ``--out`` (from an earlier run of the same variant)
instead of making it again: after a change to the default alone, only its pictures are
remade (delete them first); a reused picture's seconds are left empty.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from callbacks.sheets import make_sheet  # noqa: E402
from datamodules.images import image_to_tensor, load_image, resize_shorter_side  # noqa: E402
from lightning_modules.api import stylize  # noqa: E402
from lightning_modules.backbones import load_backbone  # noqa: E402
from lightning_modules.style_transfer.functional import (chroma_noise, color_distance,  # noqa: E402
                                                         luma_noise, rgb_to_lab)

VARIANTS = {"no_color_terms": {"color_weight": 0.0, "chroma_detail_limit": False}, "default": {},
            "preserve_colors": {"preserve_colors": True}}


def pixels(path: str, size: int | None = None) -> torch.Tensor:
    """0-1 pixels of an image file, its shorter side resized to ``size`` (None: as it is)."""
    image = load_image(path).convert("RGB")
    return image_to_tensor(resize_shorter_side(image, size) if size else image)


def palette(picture: torch.Tensor, side: int = 96) -> torch.Tensor:
    """The picture's pixels sorted by lightness into a ``side`` x ``side`` square: its colours
    without its forms."""
    small = F.interpolate(picture[None], size=(side, side), mode="area")[0].flatten(1)
    order = rgb_to_lab(small[:, :, None])[0, :, 0].argsort()
    return small[:, order].reshape(3, side, side).transpose(1, 2)


@torch.no_grad()
def content_loss(result: torch.Tensor, photo: torch.Tensor, backbone, layer: int = 4) -> float:
    """Mean squared difference of the result's and the photo's features at ``layer``."""
    photo = F.interpolate(photo[None], size=result.shape[-2:], mode="bilinear",
                          antialias=True, align_corners=False)
    ours, theirs = backbone.extract(backbone.normalize(torch.stack([result, photo[0]])),
                                    [layer])[0]
    return float((ours - theirs).pow(2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", nargs=2, action="append", required=True,
                        metavar=("PHOTO", "PAINTING"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true",
                        help="measure the pictures already in --out instead of remaking them")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    backbone = load_backbone("efficientnet_lite0").eval()
    rows = []
    for photo_path, painting_path in args.pair:
        name = f"{Path(photo_path).stem}__{Path(painting_path).stem}"
        photo, painting = pixels(photo_path), pixels(painting_path, args.size)
        panels = [("photo's palette", palette(photo)), ("painting's palette", palette(painting))]
        for variant, options in VARIANTS.items():
            saved = args.out / f"{name}__{variant}.png"
            if args.reuse and saved.exists():
                picture, seconds = load_image(saved).convert("RGB"), float("nan")
            else:
                start = time.perf_counter()
                picture = stylize(photo_path, painting_path, image_size=args.size,
                                  save_dir=None, seed=args.seed, **options)
                seconds = time.perf_counter() - start
                picture.save(saved)
            result = image_to_tensor(picture)
            photo_small = F.interpolate(photo[None], size=result.shape[-2:], mode="area")[0]
            distance = color_distance(photo_small, painting)
            rows.append({
                "pair": name, "variant": variant,
                "r": color_distance(result, painting) / distance,
                "to_photo": color_distance(result, photo_small),
                "chroma_noise": chroma_noise(result), "painting_chroma_noise": chroma_noise(painting),
                "luma_noise": luma_noise(result), "painting_luma_noise": luma_noise(painting),
                "lightness": float(rgb_to_lab(result)[0].mean()),
                "painting_lightness": float(rgb_to_lab(painting)[0].mean()),
                "photo_lightness": float(rgb_to_lab(photo_small)[0].mean()),
                "content": content_loss(result, photo, backbone), "seconds": seconds})
            print({key: round(value, 4) if isinstance(value, float) else value
                   for key, value in rows[-1].items()}, flush=True)
            panels.append((f"{variant} (r {rows[-1]['r']:.2f})", result))
        make_sheet(panels, height=256).save(args.out / f"{name}.png")
    with open(args.out / "palette.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_table(rows, args.out / "palette.md")


def _seconds(row: dict) -> str:
    """A run's seconds, or a dash for a reused picture."""
    return "-" if math.isnan(row["seconds"]) else f"{row['seconds']:.0f}"


def write_table(rows: list[dict], path: Path) -> None:
    """One Markdown row per pair: r, content loss, noise and lightness of the variants."""
    by_pair: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_pair.setdefault(row["pair"], {})[row["variant"]] = row
    lines = ["| pair | r: no colour terms / default / preserve_colors | content loss: no terms / "
             "default (ratio) | chroma noise: default / painting | luma noise: default / "
             "painting | lightness: default / painting / photo | to photo: preserve_colors | "
             "seconds: no terms / default |",
             "|---|---|---|---|---|---|---|---|"]
    for pair, variants in by_pair.items():
        old, new, kept = (variants[name] for name in VARIANTS)
        lines.append(
            f"| {pair} | {old['r']:.2f} / **{new['r']:.2f}** / {kept['r']:.2f} | "
            f"{old['content']:.1f} / {new['content']:.1f} ({new['content'] / old['content']:.2f}x)"
            f" | {new['chroma_noise']:.4f} / {new['painting_chroma_noise']:.4f} | "
            f"{new['luma_noise']:.4f} / {new['painting_luma_noise']:.4f} | "
            f"{new['lightness']:.0f} / {new['painting_lightness']:.0f} / "
            f"{new['photo_lightness']:.0f} | {kept['to_photo']:.1f} | "
            f"{_seconds(old)} / {_seconds(new)} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

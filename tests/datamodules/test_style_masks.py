"""--data.style_masks: one greyscale mask per style image, at the content's size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules import StyleTransferData
from lightning_modules.errors import UserInputError


def save_mask(path: Path, size: tuple[int, int], white_columns: int, mode: str = "L") -> str:
    """A mask whose first ``white_columns`` columns are white (RGB masks: pure red elsewhere)."""
    mask = Image.new(mode, size, 0 if mode == "L" else (255, 0, 0))
    mask.paste(255 if mode == "L" else (255, 255, 255), (0, 0, white_columns, size[1]))
    mask.save(path)
    return str(path)


def test_masks_are_greyscale_weights_at_the_content_size(content_image, style_image,
                                                        tmp_path) -> None:
    # Half the width at a quarter of the content's resolution, one mask in RGB.
    left = save_mask(tmp_path / "left.png", (12, 10), 6)
    right = save_mask(tmp_path / "right.png", (12, 10), 6, mode="RGB")
    data = StyleTransferData(content=str(content_image), style=[str(style_image)] * 2,
                             style_masks=[left, right], image_size=20)
    data.setup("fit")
    job = data.jobs[0]
    assert job.size == (20, 24)
    assert [tuple(m.shape) for m in job.style_masks] == [(1, 20, 24), (1, 20, 24)]
    assert float(job.style_masks[0][..., :10].min()) == 1.0
    assert float(job.style_masks[0][..., 14:].max()) == 0.0
    # RGB is read as luminance: pure red is about 0.3 grey, white is 1.
    assert float(job.style_masks[1][..., 0].min()) == pytest.approx(1.0)
    assert float(job.style_masks[1].min()) == pytest.approx(0.299, abs=0.01)


def test_without_masks_jobs_have_none(content_image, style_image) -> None:
    data = StyleTransferData(content=str(content_image), style=str(style_image), image_size=16)
    data.setup("fit")
    assert data.jobs[0].style_masks == []


def test_each_mode_gives_the_job_of_style_k_mask_k(content_image, style_image, tmp_path) -> None:
    masks = [save_mask(tmp_path / f"m{k}.png", (24, 20), width) for k, width in enumerate((6, 18))]
    data = StyleTransferData(content=str(content_image), style=[str(style_image)] * 2,
                             style_masks=masks, style_mode="each", image_size=20)
    data.setup("fit")
    assert [len(job.style_masks) for job in data.jobs] == [1, 1]
    areas = [float(job.style_masks[0].mean()) for job in data.jobs]
    assert areas == pytest.approx([0.25, 0.75], abs=0.03)


@pytest.mark.parametrize("case, expected", [
    ("count", "style_masks has 1 mask for 2 style images; give one per style image"),
    ("black", "is black everywhere"),
    ("no content", "there is no content image"),
    ("missing", "Image file not found"),
])
def test_bad_masks_are_one_sentence(case, expected, content_image, style_image, tmp_path) -> None:
    mask = save_mask(tmp_path / "mask.png", (24, 20), 12)
    options = dict(content=str(content_image), style=[str(style_image)] * 2,
                   style_masks=[mask, mask], image_size=16)
    if case == "count":
        options["style_masks"] = [mask]
    elif case == "black":
        options["style_masks"] = [mask, save_mask(tmp_path / "black.png", (24, 20), 0)]
    elif case == "no content":
        options["content"] = None
    else:
        options["style_masks"] = [mask, str(tmp_path / "nope.png")]
    with pytest.raises(UserInputError, match=expected):
        StyleTransferData(**options).setup("fit")


def test_masks_reach_the_module_as_regions(content_image, style_image, tmp_path) -> None:
    import pytorch_lightning as pl

    from lightning_modules import StyleTransfer

    masks = [save_mask(tmp_path / f"m{k}.png", (24, 20), width) for k, width in enumerate((6, 18))]
    data = StyleTransferData(content=str(content_image), style=[str(style_image)] * 2,
                             style_blend_weights=[1, 3], style_masks=masks, image_size=20)
    module = StyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                           style_layers=[0, 1], style_weights=[1.0, 1.0])
    pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, accelerator="cpu").fit(module, data)
    _, regions = module.targets[0][module.term_names.index("style")]  # (blended, regions)
    targets, region_masks, weights = regions
    assert len(targets) == 2 and len(targets[0]) == 2
    assert region_masks.shape == (2, 1, 1, 20, 24)
    assert torch.allclose(weights, torch.tensor([[0.5], [1.5]]))
    assert [name for name, _ in module.sheet_panels(0)] == [
        "content", "style 1", "style 2", "mask 1", "mask 2", "result"]

"""Precision, memory format and the ``fast`` path (torch.compile, fused Adam), on the CPU.

bf16-mixed must take every technique the same way as float32 (its losses accumulated in
float32). Channels-last and the fast path must change how the work is laid out and launched,
never its result: every technique is run with and without them and the images compared. On a
GPU the fast path replays CUDA graphs (mode ``reduce-overhead``); a CPU run stays eager. Its
wiring is tested here with compile mode ``"default"``, which runs on a CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import pytest
import pytorch_lightning as pl
import torch
from torch._dynamo.utils import counters

from datamodules import StyleTransferData
from datamodules.classes import ClassListData
from datamodules.labeled_images import LabeledImageData
from lightning_modules import StyleTransfer, TextureSynthesis
from lightning_modules.image_optimization import fast_path
from lightning_modules.backbones import COMPILED_CALLS
from lightning_modules.class_visualization import ClassVisualization
from lightning_modules.errors import UserInputError
from lightning_modules.fooling import FoolingImage
from lightning_modules.losses import content_loss, gram_matrix, style_loss, tv_loss
from lightning_modules.saliency import SaliencyMap

CHANNELS_LAST = torch.channels_last
STYLE_OPTIONS = dict(backbone="tiny", weights="random", content_layers=[2], style_layers=[0, 1, 2],
                     style_weights=[1.0, 1.0, 1.0], tv_weight=0.01, lr=0.05)


def _fit(module: pl.LightningModule, data: pl.LightningDataModule, steps: int,
         root: Path, precision: str = "32-true", callbacks: Sequence[pl.Callback] = ()
         ) -> pl.Trainer:
    pl.seed_everything(3)
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=str(root), precision=precision,
                         callbacks=list(callbacks))
    trainer.fit(module, data)
    return trainer


def _style_transfer(paths: tuple[Path, Path], **options: Any) -> tuple[Any, Any]:
    content, style = paths
    return (StyleTransfer(**STYLE_OPTIONS, **options),
            StyleTransferData(content=[str(content)], style=[str(style)], image_size=40,
                              style_size=40))


def _texture(paths: tuple[Path, Path], **options: Any) -> tuple[Any, Any]:
    options = {**STYLE_OPTIONS, **options}
    del options["content_layers"]
    return (TextureSynthesis(**options),
            StyleTransferData(content=None, style=[str(paths[1])], image_size=32,
                              style_size=40))


def _class_pixels(paths: tuple[Path, Path], **options: Any) -> tuple[Any, Any]:
    return (ClassVisualization(backbone="tiny", weights="random", image_size=32, max_jitter=4,
                               blur_every=2, lr=3.0, **options),
            ClassListData(["tarantula", 948]))


def _class_fourier(paths: tuple[Path, Path], **options: Any) -> tuple[Any, Any]:
    return (ClassVisualization(backbone="tiny", weights="random", image_size=32,
                               parameterization="fourier", transforms=True, step="adam", lr=0.05,
                               **options),
            ClassListData(["tarantula", 948]))


def _fooling(paths: tuple[Path, Path], **options: Any) -> tuple[Any, Any]:
    return (FoolingImage(backbone="tiny", weights="random", target="goldfish", method="pgd",
                         eps=8 / 255, **options),
            LabeledImageData(image_size=32))


TECHNIQUES: dict[str, Callable[..., tuple[Any, Any]]] = {
    "style_transfer": _style_transfer, "texture_synthesis": _texture,
    "class_visualization_pixels": _class_pixels, "class_visualization_fourier": _class_fourier,
    "fooling_pgd": _fooling,
}


def _images(module: pl.LightningModule) -> torch.Tensor:
    return torch.cat([image.detach().reshape(-1) for image in module.images])


@pytest.fixture
def paths(content_image: Path, style_image: Path) -> tuple[Path, Path]:
    return content_image, style_image


def _pixels(module: pl.LightningModule) -> torch.Tensor:
    """Every job's picture as 0-1 pixels (a Fourier spectrum rendered), flattened."""
    return torch.cat([module.result_pixels(i).reshape(-1) for i in range(len(module.slots))])


class StartRecorder(pl.Callback):
    """Keeps the pictures as the first step finds them (a random start is drawn in setup)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.start = _pixels(pl_module)


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_every_technique_runs_in_bf16_mixed_like_float32(
        technique: str, paths: tuple[Path, Path], tmp_path: Path) -> None:
    moves = {}
    for precision in ("32-true", "bf16-mixed"):
        module, data = TECHNIQUES[technique](paths)
        recorder = StartRecorder()
        _fit(module, data, 6, tmp_path / precision, precision, [recorder])
        images = _images(module)
        assert images.dtype == torch.float32 and torch.isfinite(images).all()
        moves[precision] = _pixels(module) - recorder.start
    # bfloat16 rounds each activation to 3 significant digits; the pictures must still move
    # the same way as in float32. (Compared as pixels: Adam moves every Fourier coefficient by
    # about lr whatever its gradient, so the faint high frequencies, which bf16 rounding may
    # flip, would weigh as much as the strong ones in the raw spectrum.)
    similarity = torch.nn.functional.cosine_similarity(moves["bf16-mixed"], moves["32-true"],
                                                       dim=0)
    assert moves["32-true"].abs().max() > 0 and similarity > 0.9, float(similarity)


def test_losses_accumulate_in_float32_under_bf16_autocast(tiny_backbone) -> None:
    inputs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = tiny_backbone.extract(inputs, [1, 2])
        assert features[0].dtype == torch.bfloat16  # the network itself runs in bf16
        gram = gram_matrix(features[0])
        terms = [gram, style_loss(features, [0, 1], [gram_matrix(f) for f in features], [1, 1]),
                 content_loss(1.0, features[1], features[1].detach() * 0.5),
                 tv_loss(inputs.bfloat16(), 0.1)]
    assert all(term.dtype == torch.float32 for term in terms)


def test_channels_last_backbone_gives_the_same_features_and_logits(tiny_backbone) -> None:
    inputs = torch.randn(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    expected = tiny_backbone.extract(inputs, [3, 0, 2]), tiny_backbone(inputs)
    tiny_backbone.use_channels_last()
    assert tiny_backbone.features[0][0].weight.is_contiguous(memory_format=CHANNELS_LAST)
    features, logits = tiny_backbone.extract(inputs, [3, 0, 2]), tiny_backbone(inputs)
    assert features[0].is_contiguous(memory_format=CHANNELS_LAST)
    for got, want in zip(features, expected[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, expected[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_every_technique_gives_the_same_images_in_channels_last(
        technique: str, paths: tuple[Path, Path], tmp_path: Path) -> None:
    results = {}
    for channels_last in (False, True):
        module, data = TECHNIQUES[technique](paths, channels_last=channels_last)
        _fit(module, data, 6, tmp_path / str(channels_last))
        results[channels_last] = _images(module)
        # Pixel images live in channels-last too; a Fourier spectrum is not an image.
        image = module.images[0]
        assert image.is_contiguous(memory_format=CHANNELS_LAST) == (
            channels_last and image.dim() == 4 and image.shape[1] > 1)
    assert results[True].abs().max() > 0
    # Adam divides by the gradient's size, so rounding moves a pixel by up to ~lr * 1e-2.
    torch.testing.assert_close(results[True], results[False], rtol=0, atol=2e-3)


def test_saliency_maps_are_the_same_in_channels_last() -> None:
    inputs = torch.randn(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 285, 999])
    maps = {}
    for channels_last in (False, True):
        module = SaliencyMap(backbone="tiny", weights="random", method="integrated_gradients",
                             steps=8, channels_last=channels_last)
        maps[channels_last] = module.saliency(inputs, targets)[0]
    assert maps[False].abs().max() > 0
    torch.testing.assert_close(maps[True], maps[False], rtol=1e-4, atol=1e-6)


def test_fast_on_a_cpu_says_so_and_runs_eager(paths: tuple[Path, Path], tmp_path: Path) -> None:
    eager, data = _style_transfer(paths)
    _fit(eager, data, 4, tmp_path / "eager")
    counters.clear()
    fast, data = _style_transfer(paths, fast=True)
    with pytest.warns(UserWarning, match="GPU runs.*cpu.*runs eager"):
        trainer = _fit(fast, data, 4, tmp_path / "fast")
    assert counters["frames"]["ok"] == 0 and fast.backbone.compile_mode is None
    assert not fast.channels_last and not trainer.optimizers[0].defaults["fused"]
    assert torch.equal(_images(fast), _images(eager))


@pytest.mark.parametrize("method", ["vanilla", "integrated_gradients"])
def test_saliency_maps_under_bf16_autocast_match_float32(method: str) -> None:
    """What ``--trainer.precision bf16-mixed`` does to ``predict_step``: autocast around it."""
    inputs = torch.randn(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([1, 285, 999])
    module = SaliencyMap(backbone="tiny", weights="random", method=method, steps=8)
    expected = module.saliency(inputs, targets)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = module.saliency(inputs, targets)[0]
    assert got.dtype == torch.float32  # gradients with respect to the float32 image
    similarity = torch.nn.functional.cosine_similarity(got.float().flatten(), expected.flatten(),
                                                       dim=0)
    assert similarity > 0.95, float(similarity)


@pytest.mark.parametrize("technique", ["style_transfer", "class_visualization_fourier"])
def test_fast_path_compiles_the_backbone_and_matches_eager(
        technique: str, paths: tuple[Path, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU fast path's wiring, run on the CPU: compile mode "default" instead of CUDA graphs."""
    steps = 10 if technique.startswith("class") else 6  # more input sizes than COMPILED_CALLS
    eager, data = TECHNIQUES[technique](paths)
    _fit(eager, data, steps, tmp_path / "eager")
    monkeypatch.setattr(fast_path, "fast_path_compile_mode", lambda device: "default")
    counters.clear()
    fast, data = TECHNIQUES[technique](paths, fast=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(fast, data, steps, tmp_path / "fast")
    assert counters["frames"]["ok"] > 0, "torch.compile never ran"
    # Random transforms change the input size every step: compilations stay bounded, and the
    # run says that the later sizes run eager.
    assert counters["stats"]["unique_graphs"] <= COMPILED_CALLS
    said = [str(warning.message) for warning in caught if "run eager" in str(warning.message)]
    assert len(said) == (1 if technique.startswith("class") else 0)
    assert fast.backbone.compile_mode == "default"
    assert fast.channels_last and fast.backbone.memory_format == CHANNELS_LAST
    if technique == "style_transfer":
        assert fast.images[0].is_contiguous(memory_format=CHANNELS_LAST)
        assert trainer.optimizers[0].defaults["fused"] is True
    torch.testing.assert_close(_images(fast), _images(eager), rtol=0, atol=2e-3)


def test_fast_path_mode_is_cuda_graphs_on_a_gpu_and_eager_on_a_cpu() -> None:
    assert fast_path.fast_path_compile_mode(torch.device("cuda", 0)) == "reduce-overhead"
    assert fast_path.fast_path_compile_mode(torch.device("cpu")) is None


def test_compiled_network_gives_the_same_features_and_gradients(tiny_backbone) -> None:
    inputs = torch.randn(2, 3, 24, 20, generator=torch.Generator().manual_seed(0))

    def features_and_gradient() -> tuple[list[torch.Tensor], torch.Tensor]:
        image = inputs.clone().requires_grad_()
        features = tiny_backbone.extract(image, [2, 0])
        logits = tiny_backbone(image)
        (sum(f.square().mean() for f in features) + logits.logsumexp(1).sum()).backward()
        return [f.detach() for f in features] + [logits.detach()], image.grad

    counters.clear()
    expected = features_and_gradient()
    tiny_backbone.compile_network("default")
    got = features_and_gradient()
    assert counters["frames"]["ok"] > 0
    for value, want in zip(got[0], expected[0]):
        torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # calls without gradients stay eager (CUDA graphs reuse outputs)
        before = counters["frames"]["total"]
        tiny_backbone(inputs)
        assert counters["frames"]["total"] == before


def test_fast_path_refuses_to_accumulate_gradients(paths: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    module, data = _style_transfer(paths, fast=True)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", default_root_dir=str(tmp_path),
                         accumulate_grad_batches=2)
    with pytest.raises(UserInputError, match="accumulate_grad_batches at 1"):
        trainer.fit(module, data)


def test_a_new_chunk_keeps_the_image_parameter_in_place(paths: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """CUDA graphs record the image's address: chunks of one size reuse the same memory."""

    class Addresses(pl.Callback):
        def __init__(self) -> None:
            self.seen = set()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self.seen.add(pl_module.images[0].data_ptr())

    content, style = paths
    module = StyleTransfer(**STYLE_OPTIONS)
    data = StyleTransferData(content=[str(content), str(content)], style=[str(style)],
                             image_size=40, style_size=40, batch_size=1)
    addresses = Addresses()
    trainer = _fit(module, data, 2, tmp_path, callbacks=[addresses])
    assert trainer.global_step == 4 and len(addresses.seen) == 1

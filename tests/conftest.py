"""Shared fixtures: a tiny random backbone, small test images, an isolated working folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Sequence

import pytest
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per pytest-xdist worker, and per process it starts (the command-line tests'
    # child processes read OMP_NUM_THREADS): the workers share the cores instead of fighting.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

from lightning_modules.backbones import Backbone, imagenet_categories, register_backbone  # noqa: E402


def build_tiny_backbone(weights: str = "random") -> Backbone:
    """A 4-layer random CNN with a 1000-way head: fast stand-in for a real classifier."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)  # the same tiny network in every test and every process
    layers = [
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU()),
    ]
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(32, 1000))
    backbone = Backbone("tiny", layers, head, (0.5,) * 3, (0.25,) * 3, imagenet_categories())
    torch.random.set_rng_state(generator_state)
    return backbone


register_backbone("tiny", build_tiny_backbone, "tiny random CNN for tests")


def two_layer_backbone(name: str, width: int, grid: int, categories: Sequence[str],
                       mean: Sequence[float], std: Sequence[float]) -> Backbone:
    """Two stride-2 convolutions, then a ``grid x grid`` average pool and a linear head.

    The same weights in every call (seed 0), whatever the global random state.

    Args:
        name: The backbone's name.
        width: Channels of the second layer (the first has 8).
        grid: Side of the pooled feature grid the head sees; a larger grid leaves more classes
            within reach of a few gradient steps.
        categories: The class names (one logit each).
        mean: Preprocessing mean per channel.
        std: Preprocessing standard deviation per channel.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layers = [nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2), nn.ReLU()),
                  nn.Sequential(nn.Conv2d(8, width, 3, padding=1, stride=2), nn.ReLU())]
        head = nn.Sequential(nn.AdaptiveAvgPool2d(grid), nn.Flatten(1),
                             nn.Linear(width * grid * grid, len(categories)))
    return Backbone(name, layers, head, mean, std, categories)


@pytest.fixture
def tiny_backbone() -> Backbone:
    return build_tiny_backbone()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder so that runs/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_test_image(path: Path, size: tuple[int, int] = (48, 40), seed: int = 0) -> Path:
    """A smooth colourful RGB image (gradients and a disc) saved at ``path``."""
    generator = torch.Generator().manual_seed(seed)
    width, height = size
    ys = torch.linspace(0, 1, height)[:, None].expand(height, width)
    xs = torch.linspace(0, 1, width)[None, :].expand(height, width)
    disc = (((xs - 0.5) ** 2 + (ys - 0.5) ** 2) < 0.08).float()
    phase = torch.rand(3, generator=generator)
    channels = [((xs * (c + 1) + ys + phase[c]) % 1.0) * (1 - disc) + disc * phase[c] for c in range(3)]
    array = (torch.stack(channels, -1) * 255).round().byte().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def content_image(tmp_path: Path) -> Path:
    return write_test_image(tmp_path / "inputs" / "content.png", (48, 40), seed=1)


@pytest.fixture
def style_image(tmp_path: Path) -> Path:
    return write_test_image(tmp_path / "inputs" / "style.png", (40, 40), seed=2)

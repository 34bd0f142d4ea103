"""The channel atlas through its config, on the tiny CNN: every channel of a layer, one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cli
from callbacks.sheets import grid_sheet
from datamodules.images import image_to_tensor, load_image
from datamodules.objectives import ChannelAtlasData
from lightning_modules.errors import UserInputError
from lightning_modules.feature_visualization import ChannelAtlas, FeatureVisualization

REPO = Path(__file__).resolve().parents[2]
ATLAS = str(REPO / "configs" / "channel_atlas.yaml")
TINY = ["--model.backbone", "tiny", "--model.weights", "random"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
LAYER = "features.2"  # 16 channels of the tiny CNN
CHANNELS = 16


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch) -> None:
    """LightningCLI warns when pytest's own arguments are in sys.argv beside args=."""
    monkeypatch.setattr("sys.argv", ["cli.py"])


def atlas_cli(*extra: str) -> int:
    # Pixel images: on the random CNN half of this layer's channels are zero at the Fourier
    # start (no gradient), and noise in pixels lights every channel somewhere.
    return cli.main(["fit", "--config", ATLAS, *TINY, *QUIET, "--data.layers", LAYER,
                     "--model.image_size", "32", "--trainer.max_steps", "6",
                     "--model.transforms", "false", "--model.parameterization", "pixel",
                     "--model.lr", "20", "--model.blur_every", "0", *extra])


def atlas_pictures(run: Path) -> torch.Tensor:
    return torch.stack([image_to_tensor(load_image(run / f"channel_{LAYER}_{c}.png"))
                        for c in range(CHANNELS)])


@pytest.fixture(scope="module")
def one_chunk(tmp_path_factory) -> Path:
    """One atlas run of every channel in one batch, shared by the tests that read it."""
    folder = tmp_path_factory.mktemp("atlas")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setattr("sys.argv", ["cli.py"])
        assert atlas_cli() == 0
    return folder / "runs" / "channel_atlas" / "version_0"


def test_atlas_writes_one_picture_per_channel_and_the_sheet(one_chunk) -> None:
    pictures = sorted(path.name for path in one_chunk.glob("channel_*.png"))
    assert pictures == sorted(f"channel_{LAYER}_{c}.png" for c in range(CHANNELS))
    # No per-channel sheets (the config's images.sheets: false): only the atlas's.
    assert list(one_chunk.glob("*sheet.png")) == [one_chunk / "atlas_sheet.png"]
    sheet = load_image(one_chunk / "atlas_sheet.png")
    # 16 columns of 96 px pictures in one row (the config's AtlasSheet defaults).
    expected = grid_sheet([(str(c), torch.zeros(3, 32, 32)) for c in range(CHANNELS)], 16, 96, 12)
    assert sheet.size == expected.size


def test_each_picture_raises_its_own_channel_most(one_chunk) -> None:
    module = FeatureVisualization(backbone="tiny", weights="random")
    backbone = module.backbone
    layer = backbone.layer_index(LAYER)
    with torch.no_grad():
        maps = backbone.extract(backbone.normalize(atlas_pictures(one_chunk)), [layer])[0]
    means = maps.mean((2, 3))  # [picture, channel]
    # Column c: channel c's mean in every picture; its own picture's must be the largest.
    assert torch.equal(means.argmax(0), torch.arange(CHANNELS)), means.argmax(0)


def test_atlas_in_chunks_gives_the_pictures_of_one_chunk(one_chunk, workdir) -> None:
    assert atlas_cli("--data.batch_size", "6") == 0  # 3 chunks: 6, 6 and 4 channels
    chunked = atlas_pictures(workdir / "runs" / "channel_atlas" / "version_0")
    # Every chunk draws the run's noise and jitter and keeps its own rows: the same PNGs.
    assert torch.equal(chunked, atlas_pictures(one_chunk))


@pytest.mark.parametrize("option, value, words", [
    ("--data.layers", "blocks.9", "Unknown atlas layer 'blocks.9' for backbone 'tiny'"),
    ("--data.channels", "[3, 16]", "Atlas channel 16 is out of range: layer 2 (features.2) of "
                                   "backbone 'tiny' has channels 0 to 15."),
])
def test_cli_bad_atlas_exits_1_with_one_sentence(option, value, words, workdir, capsys) -> None:
    assert atlas_cli(option, value) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and words in err and err.endswith("."), err


def test_channel_atlas_data_refuses_bad_options() -> None:
    assert ChannelAtlasData("blocks.4").jobs == [ChannelAtlas("blocks.4", "all")]
    assert ChannelAtlasData([3, "blocks.4"], [5, 2, 5]).jobs == [ChannelAtlas(3, (5, 2)),
                                                              ChannelAtlas("blocks.4", (5, 2))]
    for layers, channels in (([], "all"), ("blocks.4", "some"), ("blocks.4", [-1]),
                             ("blocks.4", []), (True, "all")):
        with pytest.raises(UserInputError):
            ChannelAtlasData(layers, channels)


def test_atlas_beside_other_objectives_from_python() -> None:
    module = FeatureVisualization(backbone="tiny", weights="random", image_size=32)
    module.set_jobs([ChannelAtlas("features.0", (1, 3)), "layer:2", ChannelAtlas(1, (0,))])
    module.setup("fit")
    assert [job.objective for job in module.jobs] == [
        "channel:features.0:1", "channel:features.0:3", "layer:2", "channel:1:0"]
    # Two layers: the sheet's titles say which; the other objective is not on the sheet.
    assert [(record["job"], record["title"]) for record in module.atlas_records()] == [
        (0, "features.0:1"), (1, "features.0:3"), (3, "1:0")]
    module.prepare_targets()
    assert module.loss_terms(0, module.images[0])["objective"].shape == (4,)

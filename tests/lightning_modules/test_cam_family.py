"""The rest of the CAM family (HiResCAM, XGradCAM, LayerCAM, EigenCAM, EigenGradCAM,
AblationCAM, FullGrad) against pytorch-grad-cam 1.5.7, the oracle.

What is compared: the library's output map (``cam(input_tensor, targets)``, ``[N, H, W]``,
after its own ReLU, per-image 0-1 scaling, ``cv2.resize`` to the image and second scaling)
with ours (the same steps in torch), on the same network, layer, normalized images and classes.
Agreement: ``max |ours - theirs| <= 1e-4 * max |theirs|`` (1e-4 of the map's range), as in
test_saliency_cam.py.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_grad_cam import (
    AblationCAM as LibraryAblationCAM,
    EigenCAM as LibraryEigenCAM,
    EigenGradCAM as LibraryEigenGradCAM,
    FullGrad as LibraryFullGrad,
    HiResCAM as LibraryHiResCAM,
    LayerCAM as LibraryLayerCAM,
    XGradCAM as LibraryXGradCAM,
)
from pytorch_grad_cam import eigen_cam as library_eigen_cam_module
from pytorch_grad_cam import eigen_grad_cam as library_eigen_grad_cam_module
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import (
    get_2d_projection,
    get_2d_projection_with_sign_correction,
)
from torch import nn

import cli
from conftest import build_tiny_backbone
from datamodules.labeled_images import LabeledImageData
from lightning_modules.backbones import Backbone, load_backbone
from lightning_modules.errors import UserInputError
from lightning_modules.saliency import (
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    HiResCAM,
    LayerCAM,
    SaliencyMap,
    XGradCAM,
    cam_family,
)
from lightning_modules.saliency.ablation_cam import ablation_cam, ablation_values
from lightning_modules.saliency.cam import find_layer, layer_activations, scale_cam
from lightning_modules.saliency.cam_family import (
    eigen_cam,
    eigen_grad_cam,
    hires_cam,
    layer_cam,
    principal_projection,
    xgrad_cam,
)
from lightning_modules.saliency.fullgrad import bias_sites, full_grad
from lightning_modules.saliency.registry import SHORTHANDS

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "saliency.yaml"
TARGETS = [1, 5, 999]
LAYER_METHODS = {  # ours, the library's
    "hirescam": (hires_cam, LibraryHiResCAM),
    "xgradcam": (xgrad_cam, LibraryXGradCAM),
    "layercam": (layer_cam, LibraryLayerCAM),
    "eigencam": (eigen_cam, LibraryEigenCAM),
    "eigengradcam": (eigen_grad_cam, LibraryEigenGradCAM),
    "ablationcam": (ablation_cam, LibraryAblationCAM),
}
CLASSES = {"hirescam": HiResCAM, "xgradcam": XGradCAM, "layercam": LayerCAM,
           "eigencam": EigenCAM, "eigengradcam": EigenGradCAM, "ablationcam": AblationCAM,
           "fullgrad": FullGrad}


def assert_agrees(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert theirs.max() > 0 and theirs.std() > 0.01 * theirs.max()  # a map with structure
    assert (ours - theirs).abs().max() <= 1e-4 * theirs.abs().max()


def library_map(cls: type, model: nn.Module, X: torch.Tensor, targets: list[int],
                layer=None, **options) -> torch.Tensor:
    """The library's map; its hooks need parameters that require grad, so on a copy."""
    trainable = copy.deepcopy(model).requires_grad_(True)
    layers = [] if layer is None else [trainable.get_submodule(
        next(name for name, found in model.named_modules() if found is find_layer(model, layer)))]
    with cls(trainable, layers, **options) as cam:
        return torch.from_numpy(cam(X.clone(), [ClassifierOutputTarget(c) for c in targets]))


@pytest.fixture
def sign_corrected_library(monkeypatch) -> None:
    """The library's Eigen methods with its own SVD sign correction (Seg-Eigen-CAM's rule)."""
    for module in (library_eigen_cam_module, library_eigen_grad_cam_module):
        monkeypatch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return build_tiny_backbone()


@pytest.fixture(scope="module")
def images(tiny: Backbone) -> torch.Tensor:
    # Not square, so that height and width cannot be swapped.
    return tiny.normalize(torch.rand(3, 3, 20, 28, generator=torch.Generator().manual_seed(0)))


def call(method: str, X: torch.Tensor, targets: list[int], model: nn.Module, layer=2):
    if method == "fullgrad":
        return full_grad(X, targets, model)
    return LAYER_METHODS[method][0](X, targets, model, layer)


# --- against pytorch-grad-cam ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["hirescam", "xgradcam", "layercam", "eigencam",
                                    "eigengradcam"])
@pytest.mark.parametrize("layer", [1, 3, "features.2.0"])
def test_cam_matches_pytorch_grad_cam(tiny: Backbone, images, sign_corrected_library,
                                      method: str, layer) -> None:
    ours, theirs = LAYER_METHODS[method]
    assert_agrees(ours(images, TARGETS, tiny, layer),
                  library_map(theirs, tiny, images, TARGETS, layer))


def test_eigen_sign_is_the_svds_up_to_sign_and_fixed(tiny: Backbone, images,
                                                     monkeypatch) -> None:
    activations = layer_activations(images, tiny, 3)
    ours = principal_projection(activations)
    # The library's projection without correction: ours or its negative, image by image.
    plain = torch.from_numpy(get_2d_projection(activations.numpy()))
    signs = [1 if torch.allclose(o, p, atol=1e-4) else -1 for o, p in zip(ours, plain)]
    assert torch.allclose(ours * torch.tensor(signs)[:, None, None], plain, atol=1e-4)
    # Its plain EigenCAM map is therefore ours, or ours of the negated projection.
    theirs = library_map(LibraryEigenCAM, tiny, images, TARGETS, 3)
    flipped = scale_cam(-ours, images.shape[2:])
    for index, sign in enumerate(signs):
        expected = eigen_cam(images, TARGETS, tiny, 3)[index] if sign == 1 else flipped[index]
        assert (expected - theirs[index]).abs().max() <= 1e-4
    # The larger extreme is positive, so an SVD that returns the other sign changes nothing.
    assert (ours.flatten(1).amax(1) >= ours.flatten(1).amin(1).abs()).all()
    before = eigen_cam(images, TARGETS, tiny, 3)
    svd = torch.linalg.svd
    monkeypatch.setattr(cam_family.torch.linalg, "svd", lambda matrix, **kwargs: tuple(
        -part if index != 1 else part for index, part in enumerate(svd(matrix, **kwargs))))
    assert torch.allclose(eigen_cam(images, TARGETS, tiny, 3), before, atol=1e-6)
    assert torch.allclose(principal_projection(-activations), ours, atol=1e-5)


@pytest.mark.parametrize("layer", [1, 3])
def test_ablation_cam_matches_pytorch_grad_cam(tiny: Backbone, images, layer) -> None:
    # After a ReLU the smallest activation is 0: ablated channels are zeroed, in whatever
    # internal batches.
    assert (ablation_values(layer_activations(images, tiny, layer)) == 0).all()
    assert_agrees(ablation_cam(images, TARGETS, tiny, layer, internal_batch_size=5),
                  library_map(LibraryAblationCAM, tiny, images, TARGETS, layer))


def test_ablation_cam_of_a_layer_with_negative_values_is_the_librarys_one_at_a_time(
        tiny: Backbone, images) -> None:
    # A convolution's output: ablated channels go to the image's minimum minus 1e7. The library
    # lowers that value again per channel within a batch, so its batch_size=1 is the definition.
    values = ablation_values(layer_activations(images, tiny, "features.2.0"))
    assert (values < -1e6).all()
    theirs = library_map(LibraryAblationCAM, tiny, images, TARGETS, "features.2.0", batch_size=1)
    assert_agrees(ablation_cam(images, TARGETS, tiny, "features.2.0", internal_batch_size=9),
                  theirs)


def test_full_grad_matches_pytorch_grad_cam_on_convolutions_with_bias(tiny: Backbone,
                                                                       images) -> None:
    assert [site.name for site in bias_sites(tiny)] == [f"features.{i}.0" for i in range(4)]
    assert_agrees(full_grad(images, TARGETS, tiny), library_map(LibraryFullGrad, tiny, images,
                                                                TARGETS))


def _batch_norm_net() -> nn.Module:
    """Convolutions without bias, each followed by a BatchNorm2d with running statistics."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    for norm in (net[1], net[4]):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_full_grad_matches_pytorch_grad_cam_on_batch_norms(images) -> None:
    net = _batch_norm_net()
    assert [site.name for site in bias_sites(net)] == ["1", "4"]
    assert_agrees(full_grad(images, [3, 7, 9], net),
                  library_map(LibraryFullGrad, net, images, [3, 7, 9]))


def _plain_modules(model: nn.Module) -> nn.Module:
    """A copy with every timm BatchNormAct2d split into a plain BatchNorm2d and its children."""
    plain = copy.deepcopy(model)
    for name, module in list(plain.named_modules()):
        if isinstance(module, nn.BatchNorm2d) and type(module) is not nn.BatchNorm2d:
            norm = nn.BatchNorm2d(module.num_features, module.eps).eval()
            norm.load_state_dict(module.state_dict(), strict=False)
            parent, _, child = name.rpartition(".")
            setattr(plain.get_submodule(parent), child,
                    nn.Sequential(norm, *module.children()))
    return plain


def test_full_grad_on_efficientnet_lite0_counts_its_fused_batch_norms() -> None:
    # The library selects layers by exact type and so skips timm's BatchNormAct2d; with them
    # split into BatchNorm2d + activation (the same network), its FullGrad is ours.
    lite0 = load_backbone("efficientnet_lite0")
    X = lite0.normalize(torch.rand(2, 3, 32, 24, generator=torch.Generator().manual_seed(3)))
    sites = bias_sites(lite0)
    assert len(sites) == 49 and all(site.at_input for site in sites)
    plain = _plain_modules(lite0)
    assert torch.allclose(plain(X), lite0(X), atol=1e-5)
    assert_agrees(full_grad(X, [285, 967], lite0),
                  library_map(LibraryFullGrad, plain, X, [285, 967]))


# --- batched, class, options ---------------------------------------------------------------------


@pytest.mark.parametrize("method", list(CLASSES))
def test_batched_equals_per_image_and_depends_on_the_class(tiny: Backbone, images,
                                                           method: str) -> None:
    batched = call(method, images, TARGETS, tiny)
    assert batched.shape == (3, 20, 28) and (batched >= 0).all() and batched.max() <= 1
    for index in range(3):
        single = call(method, images[index : index + 1], TARGETS[index : index + 1], tiny)
        assert torch.allclose(batched[index : index + 1], single, atol=1e-5)
    other = call(method, images, [7, 8, 9], tiny)
    if method == "eigencam":  # no gradient: the same map for every class
        assert torch.equal(batched, other)
    else:
        assert (batched - other).abs().max() > 1e-4 * batched.max()


@pytest.mark.parametrize("internal_batch_size", [1, 7, 1000])
def test_ablation_internal_batches_do_not_change_the_map(tiny: Backbone, images,
                                                         internal_batch_size: int) -> None:
    # Two images of 8 channels: 16 ablated passes, split unevenly by 7.
    reference = ablation_cam(images[:2], TARGETS[:2], tiny, 1, internal_batch_size=32)
    # Up to rounding: a convolution's sums may run in another order for another batch size.
    assert torch.allclose(ablation_cam(images[:2], TARGETS[:2], tiny, 1, internal_batch_size),
                          reference, atol=1e-5)


def test_methods_as_objects(tiny: Backbone, images) -> None:
    targets = torch.tensor(TARGETS)
    for name, cls in CLASSES.items():
        assert SHORTHANDS[name] is cls and cls().shorthand == name
        assert cls.class_activation_map
        method = cls() if name == "fullgrad" else cls(layer=2)
        assert torch.equal(method.attribute(tiny, images, targets).maps,
                           call(name, images, TARGETS, tiny, 2))
    # The default layer is the last one with spatial maps, features.3.
    assert torch.equal(LayerCAM().attribute(tiny, images, targets).maps,
                       layer_cam(images, TARGETS, tiny, 3))
    module = SaliencyMap(backbone="tiny", weights="random", method="ablationcam", layer=1,
                         internal_batch_size=4)
    assert isinstance(module.method, AblationCAM) and module.method.internal_batch_size == 4


@pytest.mark.parametrize("build, message", [
    (lambda: AblationCAM(internal_batch_size=0), "whole number of at least 1, got 0"),
    (lambda: AblationCAM(internal_batch_size=None), "whole number of at least 1, got None"),
    (lambda: SaliencyMap(backbone="tiny", weights="random", method="fullgrad", layer=2),
     "Option 'layer' does not apply to method 'fullgrad'"),
    (lambda: SaliencyMap(backbone="tiny", weights="random", method="layercam", layer=9),
     "CAM layer 9 is out of range"),
])
def test_bad_options_are_one_sentence(build, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        build()


def test_bad_layers_are_one_sentence(tiny: Backbone, images) -> None:
    with pytest.raises(UserInputError, match=r"Ablation-CAM ablates channels of a layer that "
                       r"outputs spatial maps \[N, C, H, W\]; CAM layer 'head.1' outputs shape "
                       r"\[3, 32\]"):
        ablation_cam(images, TARGETS, tiny, "head.1")
    for method in ("hirescam", "eigencam"):
        with pytest.raises(UserInputError, match="not spatial maps"):
            call(method, images, TARGETS, tiny, "head.1")
    net = _batch_norm_net()
    net[1] = nn.BatchNorm2d(6, track_running_stats=False).eval()
    with pytest.raises(UserInputError, match="FullGrad needs every BatchNorm2d to keep running "
                                             "statistics"):
        full_grad(images, [1, 2, 3], net)


# --- the command line ----------------------------------------------------------------------------


def test_cli_runs_layercam_by_short_name_and_by_class_path(tmp_path: Path, monkeypatch) -> None:
    # In this process, as tests/tiny_cli.py runs cli.py: conftest registered the tiny backbone.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])  # pytest's own arguments hidden
    tiny = ["--model.backbone", "tiny", "--model.weights", "random", "--data.image_size", "32",
            "--trainer.enable_progress_bar", "false"]
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method", "layercam",
                     "--model.layer", "2"]) == 0
    assert cli.main(["predict", "--config", str(CONFIG), *tiny, "--model.method",
                     "lightning_modules.saliency.LayerCAM", "--model.method.layer", "2"]) == 0
    data = LabeledImageData(image_size=32)  # the built-in samples, as the runs read them
    data.setup("predict")
    runs = [tmp_path / "runs" / "saliency" / f"version_{n}" for n in range(2)]
    maps = [np.stack([np.load(run / f"{item.name}_saliency.npy") for item in data.items])
            for run in runs]
    backbone = build_tiny_backbone()
    X = backbone.normalize(torch.stack([item.pixels for item in data.items]))
    targets = [backbone.class_index(item.label) for item in data.items]
    assert np.allclose(maps[0], layer_cam(X, targets, backbone, 2).numpy(), atol=1e-5)
    assert np.array_equal(maps[1], maps[0])
    assert "class_path: lightning_modules.saliency.LayerCAM" in (runs[1] / "config.yaml").read_text()

"""More class activation maps of one layer: HiResCAM, XGrad-CAM, LayerCAM, Eigen-CAM and
Eigen-Grad-CAM, each as pytorch-grad-cam 1.5.7 defines it.

They share cam.py's layer capture (:func:`~lightning_modules.saliency.cam.layer_gradients`,
one forward and one backward pass for the whole batch, stopped at the layer) and its scaling
(:func:`~lightning_modules.saliency.cam.scale_cam`: ReLU, per image to 0-1, bilinear to the
image, to 0-1). With ``A`` the layer's activations and ``g`` the class score's gradient with
respect to them, both ``[N, K, h, w]``, the map before scaling is:

- :func:`hires_cam` (Draelos and Carin 2020): ``sum_k g_k * A_k``, element-wise, so the map
  is exactly the class score's first-order contribution of each position (no averaging of
  the gradient over space, as Grad-CAM does).
- :func:`xgrad_cam` (Fu et al. 2020): channel weights ``sum_ij g * A / (sum_ij A + 1e-7)``.
- :func:`layer_cam` (Jiang et al. 2021): ``sum_k ReLU(g_k) * A_k``, element-wise; meant for
  shallow layers too, where Grad-CAM's averaged weights blur.
- :func:`eigen_cam` (Muhammad and Yeasin 2020): no gradient; the activations' first principal
  component, the projection of each position's channel vector (centred over positions) on the
  first right singular vector.
- :func:`eigen_grad_cam`: the same projection of ``g * A`` (pytorch-grad-cam's variant).

**The sign of the Eigen maps.** A singular vector is defined up to its sign, so ``P`` and
``-P`` are equally the projection, and after the ReLU they are different maps.
pytorch-grad-cam's ``EigenCAM`` keeps whichever sign its LAPACK returns, which another SVD
(another BLAS, a GPU) may flip. We fix the sign as pytorch-grad-cam's own sign correction
does (``get_2d_projection_with_sign_correction``, Seg-Eigen-CAM's equation 13): the projection
is negated where its minimum is larger in magnitude than its maximum, so the map is the same
whatever sign the SVD returns. Where the library's SVD happened to give that sign, its
``EigenCAM`` map equals ours; where not, its map is ours of ``-P``.

No Lightning here; models map normalized images ``[N, 3, H, W]`` to logits ``[N, C]``, in
eval mode. The layer is as in :func:`~lightning_modules.saliency.cam.find_layer`; None: the
last feature layer with spatial maps.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from lightning_modules.saliency.cam import (
    Layer,
    LayerMethod,
    Targets,
    layer_activations,
    layer_gradients,
    scale_cam,
    weighted_cam,
)

XGRAD_EPS = 1e-7  # pytorch-grad-cam's XGrad-CAM: sum_ij(A) + eps in the denominator


def hires_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None) -> torch.Tensor:
    """HiResCAM: ``ReLU(sum_k g_k * A_k)``, the gradient times the activation at each position.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``HiResCAM``.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    return scale_cam((gradients * activations).sum(dim=1), X.shape[2:])


def xgrad_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None) -> torch.Tensor:
    """XGrad-CAM: channels weighted by ``sum_ij g * A / (sum_ij A + 1e-7)``.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``XGradCAM``.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    totals = activations.sum(dim=(2, 3), keepdim=True)
    weights = (gradients * activations / (totals + XGRAD_EPS)).sum(dim=(2, 3))
    return weighted_cam(activations, weights, X.shape[2:])


def layer_cam(X: torch.Tensor, y: Targets, model: nn.Module, layer: Layer = None) -> torch.Tensor:
    """LayerCAM: ``ReLU(sum_k ReLU(g_k) * A_k)``, positive gradients as per-position weights.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``LayerCAM``.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    return scale_cam((gradients.clamp(min=0) * activations).sum(dim=1), X.shape[2:])


def principal_projection(maps: torch.Tensor) -> torch.Tensor:
    """Each image's channel vectors projected on their first principal direction, sign fixed.

    Per image, the ``h * w`` channel vectors are centred (the mean over positions subtracted
    from each channel; NaNs read as 0, as the library reads them) and projected on the first
    right singular vector of that ``[h * w, K]`` matrix. The projection is negated where
    ``|min| > |max|`` (see the module docstring), so it does not depend on the SVD's sign.

    Args:
        maps: ``[N, K, h, w]``.

    Returns:
        ``[N, h, w]``.
    """
    count, channels, height, width = maps.shape
    vectors = torch.nan_to_num(maps, nan=0.0).reshape(count, channels, -1).transpose(1, 2)
    vectors = vectors - vectors.mean(dim=1, keepdim=True)
    # One batched SVD for all images; only the first right singular vector is used.
    _, _, right = torch.linalg.svd(vectors, full_matrices=False)
    projection = torch.einsum("npk,nk->np", vectors, right[:, 0])
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.reshape(count, height, width)


def eigen_cam(X: torch.Tensor, y: Optional[Targets], model: nn.Module,
              layer: Layer = None) -> torch.Tensor:
    """Eigen-CAM: the activations' first principal component, no gradient and no class.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: Unused (the map does not depend on the class); kept so that every CAM function is
            called alike.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``EigenCAM`` with its sign correction.
    """
    return scale_cam(principal_projection(layer_activations(X, model, layer)), X.shape[2:])


def eigen_grad_cam(X: torch.Tensor, y: Targets, model: nn.Module,
                   layer: Layer = None) -> torch.Tensor:
    """Eigen-Grad-CAM: the first principal component of ``g * A``.

    Args:
        X: Normalized images ``[N, 3, H, W]``.
        y: The class to explain for each image, ``[N]``.
        model: Maps normalized images to logits, in eval mode.
        layer: See :func:`~lightning_modules.saliency.cam.find_layer`.

    Returns:
        ``[N, H, W]`` in 0-1, as pytorch-grad-cam's ``EigenGradCAM`` with its sign correction.
    """
    activations, gradients = layer_gradients(X, y, model, layer)
    return scale_cam(principal_projection(gradients * activations), X.shape[2:])


# --- the methods as objects ---------------------------------------------------------------------


class HiResCAM(LayerMethod):
    """HiResCAM (:func:`hires_cam`): gradient times activation, position by position.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
    """

    shorthand = "hirescam"
    cam = staticmethod(hires_cam)


class XGradCAM(LayerMethod):
    """XGrad-CAM (:func:`xgrad_cam`): gradients weighted by the normalized activations.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
    """

    shorthand = "xgradcam"
    cam = staticmethod(xgrad_cam)


class LayerCAM(LayerMethod):
    """LayerCAM (:func:`layer_cam`): positive gradients weigh each position.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
    """

    shorthand = "layercam"
    cam = staticmethod(layer_cam)


class EigenCAM(LayerMethod):
    """Eigen-CAM (:func:`eigen_cam`): the activations' first principal component.

    The map is the same for every class.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
    """

    shorthand = "eigencam"
    cam = staticmethod(eigen_cam)


class EigenGradCAM(LayerMethod):
    """Eigen-Grad-CAM (:func:`eigen_grad_cam`): the first principal component of ``g * A``.

    Args:
        layer: See :class:`~lightning_modules.saliency.cam.LayerMethod`.
    """

    shorthand = "eigengradcam"
    cam = staticmethod(eigen_grad_cam)

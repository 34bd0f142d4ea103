"""Optical flow between video frames, warping by it, its unreliable pixels, and the warping error.

The pieces of temporally consistent style transfer (Ruder, Dosovitskiy & Brox, "Artistic style
transfer for videos", 2016) and of its measurement (Lai et al., "Learning Blind Video Temporal
Consistency", 2018):

- :func:`optical_flow` estimates the flow between two frames with OpenCV's DIS or Farneback;
- :func:`warp` moves an image along a flow, so that the previous stylized frame lands on frame t;
- :func:`reliable_mask` marks the pixels where that warped frame cannot be trusted
  (disocclusions from a forward-backward check, and motion boundaries);
- :func:`temporal_weights` turns them into the per-pixel weight of the temporal loss;
- :func:`warping_error` measures flicker: how far each output frame is from the previous one
  warped by the flow of the *input* video.

Convention, as OpenCV's: a flow ``F`` is ``[2, H, W]`` (channel 0 the x or column displacement,
channel 1 the y or row displacement, in pixels) with ``frame_to(x + F(x)) ≈ frame_from(x)``, so
``warp(frame_to, optical_flow(frame_from, frame_to)) ≈ frame_from``. Stylizing frame t, the
previous result is brought to t by ``warp(result_prev, optical_flow(frame_t, frame_prev))``.

OpenCV is part of the optional ``[video]`` extra, so it is imported inside the functions that
need it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.errors import UserInputError, check_choice

FLOW_METHODS = ("dis", "farneback")

# The same sentence wherever a video piece finds PyAV or OpenCV missing.
VIDEO_EXTRA_MISSING = "Video needs PyAV and OpenCV: pip install 'image-optimization[video]'."

# Rec. 601 luma weights, OpenCV's own for RGB -> gray, so the flow sees what cv2 users expect.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Ruder et al. 2016, eq. (5)-(6), after Sundaram et al. 2010: a forward-backward mismatch beyond
# 1 % of the flows' squared lengths plus half a pixel squared is a disocclusion; a flow gradient
# beyond 1 % of the squared flow plus 0.002 is a motion boundary.
_CONSISTENCY_RELATIVE, _CONSISTENCY_ABSOLUTE = 0.01, 0.5
_BOUNDARY_RELATIVE, _BOUNDARY_ABSOLUTE = 0.01, 0.002


def _import_cv2() -> Any:
    """OpenCV, or the one-sentence error that says how to install the ``[video]`` extra."""
    try:
        import cv2
    except ImportError as error:
        raise UserInputError(VIDEO_EXTRA_MISSING) from error
    return cv2


def _luminance_uint8(frame: Tensor, name: str) -> Any:
    """A [3, H, W] (or [1, H, W]) 0-1 frame as the H x W uint8 array OpenCV's flows take."""
    if frame.dim() != 3 or frame.shape[0] not in (1, 3):
        raise UserInputError(f"{name} must be one RGB frame of shape [3, H, W], "
                             f"got shape {list(frame.shape)}.")
    frame = frame.detach().to("cpu", torch.float32)
    if frame.shape[0] == 3:
        weights = torch.tensor(_LUMA_WEIGHTS).view(3, 1, 1)
        frame = (frame * weights).sum(0, keepdim=True)
    # Rounded, not truncated: truncating would darken every pixel by half a level on average.
    return (frame[0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()


def _dis_flow(cv2: Any, gray_from: Any, gray_to: Any) -> Any:
    """DIS flow at OpenCV's MEDIUM preset, its patch search carried down to full resolution.

    MEDIUM stops the search at half resolution and upsamples; ``setFinestScale(0)`` goes on to
    full resolution. Measured here on a 3 px pan and a 5 % zoom of two photos (``chelsea``,
    ``coffee``): median / 95th-percentile end-point error over the interior, and the time of one
    flow on the shared 2-core CPU at OpenCV's default threads (ranges: the load varied):

    ===============  ===================  ===================  ===========  ============
    setting          pan                  zoom                 256 x 455    512 x 910
    ===============  ===================  ===================  ===========  ============
    FAST             0.08-0.2 / 0.6 px    0.15-0.3 / 1.1 px    3-5 ms       9-13 ms
    MEDIUM           0.02-0.04 / 0.24 px  0.07-0.14 / 0.56 px  11-14 ms     35-70 ms
    MEDIUM, scale 0  0.000 / 0.000 px     0.05-0.07 / 0.22 px  40-50 ms     140-290 ms
    Farneback        0.01-0.1 / 3.6 px    0.14-0.5 / 13 px     20-28 ms     90-115 ms
    ===============  ===================  ===================  ===========  ============

    Full resolution makes a pan exact and halves the zoom's tail error for a few tenths of a
    second per 512 px frame pair, next to the seconds or minutes each frame's optimization
    takes, so it is the default.
    """
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setFinestScale(0)
    return dis.calc(gray_from, gray_to, None)


def _farneback_flow(cv2: Any, gray_from: Any, gray_to: Any) -> Any:
    """Farneback flow with OpenCV's documented starting values (5 pyramid levels of half size)."""
    return cv2.calcOpticalFlowFarneback(gray_from, gray_to, None, pyr_scale=0.5, levels=5,
                                        winsize=15, iterations=3, poly_n=5, poly_sigma=1.1,
                                        flags=0)


_FLOW_FUNCTIONS = {"dis": _dis_flow, "farneback": _farneback_flow}


def optical_flow(frame_from: Tensor, frame_to: Tensor, method: str = "dis") -> Tensor:
    """The dense optical flow that takes ``frame_from`` to ``frame_to``.

    Computed on the frames' luminance as 8-bit. Deterministic: the same frames give the same
    flow bit for bit, measured for both methods at 1, 2, 4 and 8 OpenCV threads, so the
    process-wide ``cv2.setNumThreads`` is left as the caller set it.

    Args:
        frame_from: The frame the flow starts from, ``[3, H, W]``, values 0-1.
        frame_to: The frame it ends at, the same shape.
        method: ``"dis"`` (OpenCV's Dense Inverse Search, MEDIUM preset searched down to full
            resolution: the most accurate here) or
            ``"farneback"`` (OpenCV's Farneback polynomial expansion: faster at 512 px, but
            errors of pixels where DIS's are tenths; see ``_dis_flow``).

    Returns:
        The flow ``F``, ``[2, H, W]`` float32 on the CPU (channel 0 x, channel 1 y, in pixels),
        with ``frame_to(x + F(x)) ≈ frame_from(x)``: OpenCV's convention for
        ``calcOpticalFlow*(prev=frame_from, next=frame_to)``.

    Raises:
        UserInputError: For an unknown method, frames of different or wrong shapes, or
            without OpenCV.
    """
    check_choice("method", method, FLOW_METHODS, "optical flow method")
    if frame_from.shape != frame_to.shape:
        raise UserInputError(f"Optical flow needs two frames of the same size, got "
                             f"{list(frame_from.shape)} and {list(frame_to.shape)}.")
    gray_from = _luminance_uint8(frame_from, "frame_from")
    gray_to = _luminance_uint8(frame_to, "frame_to")
    flow = _FLOW_FUNCTIONS[method](_import_cv2(), gray_from, gray_to)
    return torch.from_numpy(flow).permute(2, 0, 1).contiguous().float()


def _pixel_grid(height: int, width: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Each pixel's row and column index, ``[H, W]`` each, in ``like``'s dtype and device."""
    rows = torch.arange(height, dtype=like.dtype, device=like.device)
    columns = torch.arange(width, dtype=like.dtype, device=like.device)
    return torch.meshgrid(rows, columns, indexing="ij")


def warp(image: Tensor, flow: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample ``image`` at each pixel moved by ``flow``: ``output(x) = image(x + flow(x))``.

    Bilinear by default (``grid_sample`` with ``align_corners=True``, so pixel centres land on
    pixel centres and an integer flow moves pixels exactly), replicating the border where
    ``x + flow`` leaves the image. Differentiable with respect to the image and the flow.

    Args:
        image: ``[C, H, W]`` or a batch ``[N, C, H, W]``.
        flow: ``[2, H, W]`` or ``[N, 2, H, W]`` (x then y displacement, pixels); a single flow
            moves every image of a batch, a single image is moved by every flow of a batch.
        mode: ``"bilinear"`` or ``"bicubic"``: a picture warped again and again (each frame of
            a video from the one before) blurs less with bicubic sampling, which keeps more of
            a pixel's own value at sub-pixel moves.

    Returns:
        The warped image, ``[C, H, W]`` when both are single, else ``[N, C, H, W]``.

    Raises:
        UserInputError: If the shapes do not fit together.
    """
    single = image.dim() == 3 and flow.dim() == 3
    images = image.unsqueeze(0) if image.dim() == 3 else image
    flows = flow.unsqueeze(0) if flow.dim() == 3 else flow
    if (images.dim() != 4 or flows.dim() != 4 or flows.shape[1] != 2
            or images.shape[-2:] != flows.shape[-2:]
            or len({images.shape[0], flows.shape[0]} - {1}) > 1):
        raise UserInputError(f"warp needs an image [C, H, W] or [N, C, H, W] and a flow "
                             f"[2, H, W] or [N, 2, H, W] of the same size, got "
                             f"{list(image.shape)} and {list(flow.shape)}.")
    batch = max(images.shape[0], flows.shape[0])
    images = images.expand(batch, *images.shape[1:])
    flows = flows.to(images).expand(batch, *flows.shape[1:])
    height, width = images.shape[-2:]
    rows, columns = _pixel_grid(height, width, flows)
    # grid_sample wants -1..1 with align_corners=True: -1 is the first pixel's centre, +1 the
    # last's. A side of one pixel has a single centre, where any scale gives 0.
    x = (columns + flows[:, 0]) * (2 / max(width - 1, 1)) - 1
    y = (rows + flows[:, 1]) * (2 / max(height - 1, 1)) - 1
    warped = F.grid_sample(images, torch.stack((x, y), dim=-1), mode=mode,
                           padding_mode="border", align_corners=True)
    return warped[0] if single else warped


def _check_flow(flow: Tensor, name: str) -> None:
    """Refuse anything but one ``[2, H, W]`` flow, naming the argument."""
    if flow.dim() != 3 or flow.shape[0] != 2:
        raise UserInputError(f"{name} must be one flow of shape [2, H, W], "
                             f"got shape {list(flow.shape)}.")


def _squared_length(vectors: Tensor) -> Tensor:
    """``|v|^2`` of a ``[2, H, W]`` field, as ``[1, H, W]``."""
    return (vectors ** 2).sum(0, keepdim=True)


def reliable_mask(flow_back: Tensor, flow_forward: Tensor) -> tuple[Tensor, Tensor]:
    """The pixels of frame t where the previous frame warped to t cannot be trusted.

    After Ruder, Dosovitskiy & Brox 2016 (sec. 3.1) and Sundaram, Brox & Keutzer 2010. With
    ``w^ = flow_back(x)`` and ``w~ = flow_forward(x + w^)`` (sampled by :func:`warp`):

    - disocclusion: ``|w~ + w^|^2 > 0.01 (|w~|^2 + |w^|^2) + 0.5`` (going to frame t-1 and back
      does not return to x: what x shows was hidden in t-1), or ``x + w^`` falls more than half
      a pixel outside the frame (it entered the picture at t);
    - motion boundary: ``|∇w^_x|^2 + |∇w^_y|^2 > 0.01 |w^|^2 + 0.002`` (central differences;
      the flow is unreliable where it jumps).

    Args:
        flow_back: ``optical_flow(frame_t, frame_prev)``, ``[2, H, W]``: the flow that warps
            frame t-1 (or its result) into frame t.
        flow_forward: ``optical_flow(frame_prev, frame_t)``, ``[2, H, W]``.

    Returns:
        ``(disocclusion, motion_boundary)``, each ``[1, H, W]`` float of 0 and 1, where 1 marks
        an unreliable pixel.

    Raises:
        UserInputError: If the flows are not ``[2, H, W]`` of one size.
    """
    _check_flow(flow_back, "flow_back")
    _check_flow(flow_forward, "flow_forward")
    if flow_back.shape != flow_forward.shape:
        raise UserInputError(f"The two flows must have the same size, got "
                             f"{list(flow_back.shape)} and {list(flow_forward.shape)}.")
    flow_back = flow_back.float()
    flow_forward = flow_forward.to(flow_back)
    height, width = flow_back.shape[-2:]

    forward_there = warp(flow_forward, flow_back)
    mismatch = _squared_length(forward_there + flow_back)
    tolerance = (_CONSISTENCY_RELATIVE * (_squared_length(forward_there)
                                          + _squared_length(flow_back))
                 + _CONSISTENCY_ABSOLUTE)
    inconsistent = mismatch > tolerance

    # Half a pixel of slack: a pixel whose centre lands inside the last pixel's area still has
    # its content in frame t-1, and estimated flows jitter by a fraction of a pixel at borders.
    rows, columns = _pixel_grid(height, width, flow_back)
    source_x, source_y = columns + flow_back[0], rows + flow_back[1]
    outside = ((source_x < -0.5) | (source_x > width - 0.5)
               | (source_y < -0.5) | (source_y > height - 0.5)).unsqueeze(0)
    disocclusion = (inconsistent | outside).float()

    # torch.gradient needs two samples along a side; a one-pixel side has no boundary across it.
    dims = tuple(dim for dim, size in ((1, height), (2, width)) if size > 1)
    gradient_energy = torch.zeros_like(mismatch)
    for gradient in (torch.gradient(flow_back, dim=dims) if dims else ()):
        gradient_energy = gradient_energy + _squared_length(gradient)
    motion_boundary = (gradient_energy > _BOUNDARY_RELATIVE * _squared_length(flow_back)
                       + _BOUNDARY_ABSOLUTE).float()
    return disocclusion, motion_boundary


def temporal_weights(flow_back: Tensor, flow_forward: Tensor) -> Tensor:
    """The per-pixel weight ``c`` of the temporal loss: 0 where unreliable, 1 elsewhere.

    Args:
        flow_back: ``optical_flow(frame_t, frame_prev)``, ``[2, H, W]``.
        flow_forward: ``optical_flow(frame_prev, frame_t)``, ``[2, H, W]``.

    Returns:
        ``1 - max(disocclusion, motion_boundary)`` of :func:`reliable_mask`, ``[1, H, W]``.
    """
    disocclusion, motion_boundary = reliable_mask(flow_back, flow_forward)
    return 1 - torch.maximum(disocclusion, motion_boundary)


@torch.no_grad()
def warping_error(outputs: Sequence[Tensor], inputs: Sequence[Tensor],
                  method: str = "dis") -> list[float]:
    """The temporal warping error ``E_warp`` of Lai et al. 2018, frame by frame.

    For each t >= 1 the flows of the *input* frames (t -> t-1 and back) warp output t-1 to t,
    and :func:`temporal_weights` gives the non-occlusion mask ``M_t``::

        error_t = sum_x M_t(x) * sum_c (O_t(c, x) - warp(O_{t-1})(c, x))^2  /  sum_x M_t(x)

    that is, the squared difference summed over the three 0-1 channels, averaged over the
    non-occluded pixels. An output that only moves as its input does scores 0; flicker scores
    more. (Lai et al. average ``error_t`` over the video; this returns the values per frame.)

    Args:
        outputs: The output frames, each ``[3, H, W]``, values 0-1.
        inputs: The input frames they were made from, as many and of the same size.
        method: The optical flow method, one of :data:`FLOW_METHODS`.

    Returns:
        ``len(outputs) - 1`` errors, one per frame t >= 1; NaN for a frame with no reliable
        pixel (a scene cut), where the error is undefined.

    Raises:
        UserInputError: If the sequences differ in length, a frame's size differs from the
            others, or the method is unknown.
    """
    check_choice("method", method, FLOW_METHODS, "optical flow method")
    if len(outputs) != len(inputs):
        raise UserInputError(f"The warping error needs as many output frames as input frames, "
                             f"got {len(outputs)} outputs and {len(inputs)} inputs.")
    shapes = {tuple(frame.shape) for frame in (*outputs, *inputs)}
    if len(shapes) > 1:
        raise UserInputError(f"The warping error needs all frames of one size, got sizes "
                             f"{sorted(list(shape) for shape in shapes)}.")
    errors = []
    for t in range(1, len(outputs)):
        flow_back = optical_flow(inputs[t], inputs[t - 1], method)
        flow_forward = optical_flow(inputs[t - 1], inputs[t], method)
        weights = temporal_weights(flow_back, flow_forward)
        current = outputs[t].detach().to("cpu", torch.float32)
        previous = warp(outputs[t - 1].detach().to("cpu", torch.float32), flow_back)
        squared = ((current - previous) ** 2).sum(0, keepdim=True)
        reliable = weights.sum()
        errors.append(float((weights * squared).sum() / reliable) if reliable > 0
                      else float("nan"))
    return errors

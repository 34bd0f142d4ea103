"""Optical flow, warping, unreliable-pixel masks and the warping error, on synthetic motion whose
true displacement is known: a pan and a zoom over a built-in photo, and a square moving over a
still background. The frames are made here, never shipped."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from datamodules.images import load_image
from lightning_modules.errors import UserInputError
from lightning_modules.video_style_transfer import (FLOW_METHODS, optical_flow, reliable_mask,
                                                    temporal_weights, warp, warping_error)

pytest.importorskip("cv2")

HEIGHT, WIDTH = 96, 128
PAN = (3, 2)  # (dx, dy) in pixels: the picture moves 3 px right and 2 px down
MARGIN = 16  # the interior: far enough from the edges that no flow method sees past them
INTERIOR = (slice(None), slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """scikit-image's ``chelsea`` (451 x 300), ``[3, H, W]`` in 0-1."""
    return torch.from_numpy(np.array(load_image("sample:chelsea"))).permute(2, 0, 1).float() / 255


def crop(photo: torch.Tensor, top: int, left: int) -> torch.Tensor:
    return photo[:, top:top + HEIGHT, left:left + WIDTH].clone()


def pan_frames(photo: torch.Tensor, shift: tuple[int, int] = PAN,
               count: int = 2) -> list[torch.Tensor]:
    """Frames of a camera pan: frame k is frame 0 moved by ``k * shift``, cut from the larger
    photo so that what enters at the edge is real picture, not a wrapped or padded copy."""
    dx, dy = shift
    top, left = 100, 160  # the cat's face: texture everywhere, for the flow to lock on
    return [crop(photo, top - k * dy, left - k * dx) for k in range(count)]


def zoom_frames(photo: torch.Tensor, scale: float = 1.05) -> tuple[torch.Tensor, torch.Tensor,
                                                                   torch.Tensor]:
    """Frame 0 and frame 0 magnified ``scale`` times about its centre, and the true flow.

    A point x moves to c + scale (x - c), so the flow from frame 0 is (scale - 1)(x - c); frame 1
    is frame 0 sampled at c + (y - c) / scale with ``grid_sample`` (through :func:`warp`, whose
    exactness has its own test below).
    """
    frame_from = crop(photo, 100, 160)
    rows, columns = torch.meshgrid(torch.arange(HEIGHT).float(), torch.arange(WIDTH).float(),
                                   indexing="ij")
    positions = torch.stack((columns, rows))
    centre = torch.tensor([(WIDTH - 1) / 2, (HEIGHT - 1) / 2]).view(2, 1, 1)
    frame_to = warp(frame_from, (1 / scale - 1) * (positions - centre))
    return frame_from, frame_to, (scale - 1) * (positions - centre)


def end_point_error(flow: torch.Tensor, true_flow: torch.Tensor) -> torch.Tensor:
    """Each interior pixel's distance between the estimated and the true displacement."""
    return ((flow - true_flow) ** 2).sum(0).sqrt()[INTERIOR[1:]]


def constant_flow(dx: float, dy: float, height: int = HEIGHT, width: int = WIDTH) -> torch.Tensor:
    return torch.tensor([dx, dy], dtype=torch.float32).view(2, 1, 1).expand(2, height, width)


# ----------------------------------------------------------------- optical flow
@pytest.mark.parametrize("method", FLOW_METHODS)
def test_pan_flow_is_the_known_shift_both_ways(photo, method) -> None:
    frame_from, frame_to = pan_frames(photo)
    forward = optical_flow(frame_from, frame_to, method)
    backward = optical_flow(frame_to, frame_from, method)
    assert forward.shape == (2, HEIGHT, WIDTH) and forward.dtype == torch.float32
    # OpenCV's convention: frame_to(x + F(x)) = frame_from(x), so the flow points along the pan.
    assert end_point_error(forward, constant_flow(*PAN)).median() < 0.5
    assert end_point_error(backward, constant_flow(-PAN[0], -PAN[1])).median() < 0.5


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_zoom_flow_is_the_known_displacement_at_each_pixel(photo, method) -> None:
    frame_from, frame_to, true_flow = zoom_frames(photo)
    errors = end_point_error(optical_flow(frame_from, frame_to, method), true_flow)
    # The displacement runs from 0 at the centre to 2.4 px at the interior's corners.
    assert true_flow[INTERIOR].abs().max() > 2
    assert errors.median() < 0.5
    if method == "dis":  # the default, at full resolution: tight everywhere, not only mostly
        assert errors.quantile(0.9) < 0.5


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_flow_is_deterministic(photo, method) -> None:
    frame_from, frame_to, _ = zoom_frames(photo)
    assert torch.equal(optical_flow(frame_from, frame_to, method),
                       optical_flow(frame_from.clone(), frame_to.clone(), method))


def test_flow_refuses_an_unknown_method_and_mismatched_frames(photo) -> None:
    frame_from, frame_to = pan_frames(photo)
    with pytest.raises(UserInputError, match=r"^Unknown optical flow method 'raft'; "
                                             r"choose 'dis' or 'farneback'\.$"):
        optical_flow(frame_from, frame_to, "raft")
    with pytest.raises(UserInputError, match="same size"):
        optical_flow(frame_from, frame_to[:, :-1])
    with pytest.raises(UserInputError, match=r"\[3, H, W\]"):
        optical_flow(frame_from[None], frame_to[None])


def test_flow_without_opencv_says_how_to_install_it(photo, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(UserInputError, match=r"pip install 'image-optimization\[video\]'"):
        optical_flow(*pan_frames(photo))


# ----------------------------------------------------------------- warp
def test_warp_by_an_integer_flow_moves_pixels_exactly() -> None:
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    warped = warp(image, constant_flow(2, -1, 20, 30))
    # output(y, x) = image(y - 1, x + 2), exactly: bilinear weights are 0 and 1.
    assert torch.allclose(warped[:, 1:, :-2], image[:, :-1, 2:], atol=1e-6)
    # Past the border the edge pixel is repeated: row -1 reads row 0, column 30 reads column 29.
    assert torch.allclose(warped[:, 0, :-2], image[:, 0, 2:], atol=1e-6)
    assert torch.allclose(warped[:, 1:, -1], image[:, :-1, -1], atol=1e-6)


def test_warp_by_half_a_pixel_averages_neighbours() -> None:
    image = torch.rand(1, 8, 9, generator=torch.Generator().manual_seed(1))
    warped = warp(image, constant_flow(0.5, 0, 8, 9))
    assert torch.allclose(warped[:, :, :-1], (image[:, :, :-1] + image[:, :, 1:]) / 2, atol=1e-6)


def test_warp_brings_the_previous_frame_to_the_current_one(photo) -> None:
    """The direction that matters for video: warp(prev, optical_flow(t, prev)) is frame t."""
    frame_prev, frame_t = pan_frames(photo)
    unwarped = (frame_t - frame_prev)[INTERIOR].abs().mean()
    to_current = warp(frame_prev, optical_flow(frame_t, frame_prev))
    to_previous = warp(frame_t, optical_flow(frame_prev, frame_t))
    wrong_way = warp(frame_prev, optical_flow(frame_prev, frame_t))
    assert (to_current - frame_t)[INTERIOR].abs().mean() < min(0.01, unwarped / 10)
    assert (to_previous - frame_prev)[INTERIOR].abs().mean() < min(0.01, unwarped / 10)
    assert (wrong_way - frame_t)[INTERIOR].abs().mean() > unwarped  # twice the pan, not none


def test_warp_of_a_batch_equals_warp_of_each_image() -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.rand(4, 3, 12, 16, generator=generator)
    flows = torch.randn(4, 2, 12, 16, generator=generator) * 3
    batched = warp(images, flows)
    assert batched.shape == images.shape
    for image, flow, warped in zip(images, flows, batched):
        assert torch.allclose(warped, warp(image, flow), atol=1e-6)
    # One flow for a batch of images, one image for a batch of flows.
    assert torch.allclose(warp(images, flows[0]), torch.stack([warp(i, flows[0]) for i in images]))
    assert torch.allclose(warp(images[0], flows), torch.stack([warp(images[0], f) for f in flows]))


def test_warp_refuses_shapes_that_do_not_fit() -> None:
    with pytest.raises(UserInputError, match="same size"):
        warp(torch.rand(3, 12, 16), torch.zeros(2, 12, 15))
    with pytest.raises(UserInputError, match="same size"):
        warp(torch.rand(3, 3, 12, 16), torch.zeros(2, 2, 12, 16))


# ----------------------------------------------------------------- masks
def test_pan_marks_the_entering_strip_and_trusts_the_rest(photo) -> None:
    frame_prev, frame_t = pan_frames(photo)
    flow_back, flow_forward = optical_flow(frame_t, frame_prev), optical_flow(frame_prev, frame_t)
    disocclusion, motion_boundary = reliable_mask(flow_back, flow_forward)
    for mask in (disocclusion, motion_boundary):
        assert mask.shape == (1, HEIGHT, WIDTH) and set(mask.unique().tolist()) <= {0.0, 1.0}
    dx, dy = PAN
    # The picture moved right and down: its left and top strips are new in frame t.
    assert disocclusion[0, :, :dx].mean() > 0.9 and disocclusion[0, :dy, :].mean() > 0.9
    weights = temporal_weights(flow_back, flow_forward)
    assert torch.equal(weights, 1 - torch.maximum(disocclusion, motion_boundary))
    assert weights[0, dy + 1:, dx + 1:].mean() > 0.95  # all the rest, edges included
    assert weights[0, MARGIN:-MARGIN, MARGIN:-MARGIN].mean() > 0.95


def test_square_moving_over_a_still_background(photo) -> None:
    """A square of other texture moves 4 px right: the background it uncovers behind it is
    disoccluded, where it arrives is not (that background is gone, not new), its outline is a
    motion boundary, and the background and the square's inside stay reliable."""
    side, top, left, step = 24, 36, 50, 4
    square = photo[:, 20:20 + side, 20:20 + side].flip(-1)

    def frame(square_left: int) -> torch.Tensor:
        image = crop(photo, 100, 160)
        image[:, top:top + side, square_left:square_left + side] = square
        return image

    frame_prev, frame_t = frame(left), frame(left + step)
    disocclusion, motion_boundary = reliable_mask(optical_flow(frame_t, frame_prev),
                                                  optical_flow(frame_prev, frame_t))
    rows = slice(top + 2, top + side - 2)  # leave the corners aside
    assert disocclusion[0, rows, left:left + step].mean() > 0.9  # trailing edge
    assert disocclusion[0, rows, left + side:left + side + step].mean() < 0.1  # leading edge

    # The outline: along each side, a motion boundary within 4 px of where the edge is or was.
    right = left + step + side  # the square's right edge in frame t
    columns = slice(left + step + 2, right - 2)
    assert motion_boundary[0, rows, left - 4:left + step + 4].amax(1).mean() > 0.9
    assert motion_boundary[0, rows, right - 4:right + 4].amax(1).mean() > 0.9
    assert motion_boundary[0, top - 4:top + 4, columns].amax(0).mean() > 0.9
    assert motion_boundary[0, top + side - 4:top + side + 4, columns].amax(0).mean() > 0.9

    unreliable = torch.maximum(disocclusion, motion_boundary)[0]
    inside = unreliable[top + 6:top + side - 6, left + step + 6:right - 6]
    away = torch.ones(HEIGHT, WIDTH, dtype=torch.bool)
    away[top - 8:top + side + 8, left - 8:right + 8] = False
    assert inside.mean() < 0.1
    assert unreliable[away].mean() < 0.05


def test_masks_refuse_flows_of_the_wrong_shape() -> None:
    with pytest.raises(UserInputError, match=r"\[2, H, W\]"):
        reliable_mask(torch.zeros(3, 8, 8), torch.zeros(2, 8, 8))
    with pytest.raises(UserInputError, match="same size"):
        reliable_mask(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))


# ----------------------------------------------------------------- warping error
def test_warping_error_of_still_identical_outputs_is_zero(photo) -> None:
    still = crop(photo, 100, 160)
    errors = warping_error([still] * 3, [still] * 3)
    assert len(errors) == 2 and max(errors) < 1e-10


def test_warping_error_is_near_zero_when_outputs_follow_the_pan_and_large_with_noise(
        photo) -> None:
    inputs = pan_frames(photo, count=3)
    following = warping_error(inputs, inputs)
    generator = torch.Generator().manual_seed(3)
    # Independent noise of 0.1 per channel: about 2 x 3 x 0.01 = 0.06 per pixel between frames.
    noisy = [(frame + 0.1 * torch.randn(frame.shape, generator=generator)) for frame in inputs]
    flickering = warping_error(noisy, inputs)
    assert len(following) == len(flickering) == 2
    assert max(following) < 1e-3
    assert min(flickering) > 0.03 and min(flickering) > 100 * max(following)


def test_warping_error_refuses_sequences_that_do_not_match(photo) -> None:
    inputs = pan_frames(photo, count=3)
    with pytest.raises(UserInputError, match=r"^The warping error needs as many output frames "
                                             r"as input frames, got 2 outputs and 3 inputs\.$"):
        warping_error(inputs[:2], inputs)
    with pytest.raises(UserInputError, match="one size"):
        warping_error([frame[:, :-2] for frame in inputs], inputs)
    with pytest.raises(UserInputError, match="Unknown optical flow method"):
        warping_error(inputs, inputs, method="raft")


def test_warping_error_sums_channels_and_averages_over_reliable_pixels_only(photo) -> None:
    """Outputs 0 then (0.1, 0.2, 0) everywhere over a pan: 0.1² + 0.2² = 0.05 at every pixel,
    and exactly that once averaged over the reliable pixels (over all of them it would be less).
    Garbage in the strip the pan uncovers is not counted: nothing there was known before."""
    inputs = pan_frames(photo)
    colour = torch.tensor([0.1, 0.2, 0.0]).view(3, 1, 1)
    outputs = [torch.zeros(3, HEIGHT, WIDTH), colour.expand(3, HEIGHT, WIDTH)]
    assert warping_error(outputs, inputs) == pytest.approx([0.05], rel=1e-5)

    garbage_in_the_new_strip = inputs[1].clone()
    garbage_in_the_new_strip[:, :, :PAN[0]] = torch.rand(3, HEIGHT, PAN[0])
    assert warping_error([inputs[0], garbage_in_the_new_strip], inputs)[0] < 1e-3

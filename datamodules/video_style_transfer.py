"""A video and style images in, one style-transfer job per frame out.

A video's frames are jobs with a dependency: frame ``t`` starts from frame ``t - 1``'s result
(see :class:`~lightning_modules.video_style_transfer.VideoStyleTransfer`), so the frames of one
*chain* are optimized in order, one chunk each. Several processes each run their own chain over
a *segment* of the clip; a chain that does not begin the clip starts a few frames before its
segment (the *overlap*), so that where two chains meet the picture has settled, and the final
frames there are a cross-fade from one chain to the other (:func:`plan_chains`). The jobs are
interleaved (chunk ``c`` holds frame ``c`` of every chain), so process ``r`` runs chain ``r``.

Frames are read when a job needs them, not at start-up: a 10-second clip at 512 px is 240
pictures, and only the few a step reads are held (:class:`FrameStore`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from datamodules.images import SAMPLE_PREFIX, image_to_tensor, load_image, resize_shorter_side
from datamodules.jobs import JobData
from datamodules.sources import Sources, expand_sources, is_missing_file
from datamodules.style_transfer import blend_weights
from lightning_modules.errors import UserInputError, check_positive

#: The clip ``sample:<photo>`` makes: a pan with a zoom over a built-in photo, at 24 frames/s.
SAMPLE_CLIP_FRAMES = 72
SAMPLE_CLIP_FPS = Fraction(24)


@dataclass(frozen=True)
class Chain:
    """The frames one process optimizes in order: ``frames`` (indices into the clip's selected
    frames), of which the first ``shared`` are also the previous chain's last: the output
    cross-fades from that chain's pictures to this one's over them."""

    frames: range
    shared: int = 0


def plan_chains(frame_count: int, segments: int, overlap: int) -> list[Chain]:
    """Cut a clip into ``segments`` chains of equal length that cover it.

    Chains have one length so that chunk ``c`` holds frame ``c`` of every chain (each process
    keeps its own chain). Chain ``j > 0`` starts ``overlap`` or ``overlap + 1`` frames before
    the end of chain ``j - 1``. Too short a clip for so many chains gets fewer chains (the
    other processes idle).

    Args:
        frame_count: The clip's frames.
        segments: The most chains (the number of processes).
        overlap: The frames two neighbouring chains share, at least.

    Returns:
        The chains, in the clip's order.
    """
    if frame_count < 1:
        raise UserInputError("The video gives no frame to stylize.")
    segments = max(1, min(segments, frame_count))
    while segments > 1:
        length = math.ceil((frame_count + overlap * (segments - 1)) / segments)
        # A chain must have frames of its own beyond the ones it shares on each side (up to
        # overlap + 1 each), so that no frame belongs to three chains.
        if length > 2 * (overlap + 1):
            break
        segments -= 1
    if segments == 1:
        return [Chain(range(frame_count))]
    chains = []
    for index in range(segments):
        start = round(index * (frame_count - length) / (segments - 1))
        previous_end = chains[-1].frames.stop if chains else start
        chains.append(Chain(range(start, start + length), max(0, previous_end - start)))
    return chains


class FrameStore:
    """A clip's frames at the run's size, read on demand, the last few kept.

    Args:
        video: The clip (``datamodules.video_io.VideoSource`` or :class:`SampleClip`).
        indices: The clip's frame index of each selected frame.
        image_size: The shorter side of the frames as optimized.
        keep: How many frames stay in memory (the current one, those its loss terms read, and a
            block read at once when going backwards), 8-bit.
    """

    def __init__(self, video: Any, indices: Sequence[int], image_size: int, keep: int = 16
                 ) -> None:
        self.video = video
        self.indices = list(indices)
        self.image_size = image_size
        self.keep = keep
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        first = self._read(0)
        self.size: tuple[int, int] = (int(first.shape[1]), int(first.shape[2]))
        self._cache[0] = first

    def __len__(self) -> int:
        return len(self.indices)

    def frame(self, position: int) -> torch.Tensor:
        """Selected frame ``position`` as 0-1 pixels ``[3, H, W]``.

        A frame behind the last one read (a backward pass) is read with the ``keep - 1`` before
        it in one forward decode: a video decodes forwards only, so frame by frame backwards
        would decode the clip from its start each time."""
        if position not in self._cache:
            newest = max(self._cache, default=-1)
            first = position if position > newest else max(0, position - self.keep + 1)
            for index in range(first, position + 1):
                if index not in self._cache:
                    self._cache[index] = self._read(index)
                self._cache.move_to_end(index)
            while len(self._cache) > self.keep:
                self._cache.popitem(last=False)
        self._cache.move_to_end(position)
        return self._cache[position].float() / 255

    def _read(self, position: int) -> torch.Tensor:
        """Selected frame ``position`` at the run's size, as 8-bit ``[3, H, W]`` (a quarter of
        the memory of floats, and exactly what the file holds)."""
        picture = self.video.frame(self.indices[position])
        picture = resize_shorter_side(picture.convert("RGB"), self.image_size,
                                      str(self.video.path))
        pixels = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)
        if self._cache and tuple(pixels.shape[1:]) != self.size:
            raise UserInputError(f"Frame {self.indices[position]} of {self.video.path} is "
                                 f"{pixels.shape[2]}x{pixels.shape[1]} pixels after resizing, the "
                                 f"first {self.size[1]}x{self.size[0]}: every frame must have "
                                 "one size.")
        return pixels


class FrameJob:
    """One frame to stylize: a style-transfer job whose content is read when it is needed.

    Attributes:
        name: The frame's file stem, ``frame_000012`` (the frame's number in the output), or
            ``frame_000012_chain2`` for a frame two chains share.
        position: The frame's number among the selected frames (the output's frame number).
        chain: The chain (process) that optimizes it.
        step_in_chain: 0 for a chain's first frame (started from the content); then the
            frame starts from the one before.
        shared: The frame is computed by two chains (where they meet): each keeps its own
            picture (``frames/overlap/``) and the output cross-fades them.
        chain_frames: The frames of the job's chain.
        direction: 1 in the forward pass (the frame follows ``position - 1``), -1 in the
            backward pass (it follows ``position + 1``).
        pass_index: 0 for the forward pass, 1 for the backward one (``passes=2``).
        final: The frame's picture is the output's (the last pass).
        styles, style_blend_weights, style_masks, size: As ``StyleJob``'s.
        temporal: What the module's temporal term compares against, set when the frame's chunk
            begins: ``(warped previous results [K, 3, H, W], their weights [K, 1, H, W])``.
    """

    def __init__(self, name: str, frames: FrameStore, position: int, chain: int,
                 step_in_chain: int, shared: bool, styles: list[torch.Tensor],
                 style_blend_weights: list[float], chain_frames: range = range(0),
                 direction: int = 1, pass_index: int = 0, final: bool = True) -> None:
        self.name = name
        self.frames = frames
        self.position = position
        self.chain = chain
        self.step_in_chain = step_in_chain
        self.shared = shared
        self.chain_frames = chain_frames
        self.direction = direction
        self.pass_index = pass_index
        self.final = final
        self.styles = styles
        self.style_blend_weights = style_blend_weights
        self.style_masks: list[torch.Tensor] = []
        self.size = frames.size
        self.temporal: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    @property
    def content(self) -> torch.Tensor:
        """The frame's 0-1 pixels ``[3, H, W]``."""
        return self.frames.frame(self.position)

    def __repr__(self) -> str:
        return f"FrameJob({self.name!r}, chain={self.chain}, step_in_chain={self.step_in_chain})"


@dataclass
class ClipInfo:
    """What the writer needs to know of the clip: its rate, where its sound is, the chains."""

    source: str
    fps: Fraction
    frame_count: int
    audio: Optional[tuple[str, float, float]] = None
    chains: list[Chain] = field(default_factory=list)
    digits: int = 6

    def frame_name(self, position: int, chain: Optional[int] = None) -> str:
        """The file stem of output frame ``position`` (of one chain's picture, where two
        chains share it)."""
        name = f"frame_{position:0{self.digits}d}"
        return name if chain is None else f"{name}_chain{chain}"


class SampleClip:
    """A built-in clip: a pan with a zoom over a built-in photo (``sample:<photo>``), made in
    memory, so a video run needs no file. The camera moves 12 % of the photo's width and zooms
    in by 15 % over the clip, on a smooth (sub-pixel) path."""

    has_audio = False
    is_folder = False

    def __init__(self, source: str, frame_count: int = SAMPLE_CLIP_FRAMES,
                 fps: Fraction = SAMPLE_CLIP_FPS) -> None:
        self.path = source
        self.photo = load_image(source).convert("RGB")
        self.frame_count = frame_count
        self.fps = fps
        width, height = self.photo.size
        self.window = (round(width * 0.8), round(height * 0.8))
        self.size = (self.window[1], self.window[0])

    def frame(self, index: int) -> Image.Image:
        """Frame ``index``: the window at its place on the path, resampled bicubically."""
        width, height = self.photo.size
        progress = index / max(1, self.frame_count - 1)
        zoom = 1.0 + 0.15 * progress
        window_w, window_h = self.window
        centre_x = width * (0.44 + 0.12 * progress)
        centre_y = height * 0.5
        # The affine map from output pixels to the photo's pixels.
        scale = 1.0 / zoom
        left = centre_x - window_w * scale / 2
        top = centre_y - window_h * scale / 2
        return self.photo.transform(self.window, Image.Transform.AFFINE,
                                    (scale, 0, left, 0, scale, top), Image.Resampling.BICUBIC)

    def close(self) -> None:
        """Nothing to release."""


def open_clip(source: str, fps: Optional[float]) -> Any:
    """The clip behind ``--data.content``: a video file, a folder of frames or a sample."""
    if source.startswith(SAMPLE_PREFIX):
        clip = SampleClip(source)
        if fps is not None:
            clip.fps = _positive_fps(fps)
        return clip
    from datamodules.video_io import open_video

    return open_video(source, fps=fps)


def _positive_fps(fps: float) -> Fraction:
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise UserInputError(f"fps must be a positive number of frames per second, got {fps}.")
    return Fraction(fps).limit_denominator(1001)


class VideoStyleData(JobData):
    """A video (or a folder of frames) and style images: one job per frame.

    Args:
        content: The video: a file (mp4, webm, mov, gif, ...), a folder of frames (sorted by
            name) or ``sample:<photo>`` (a built-in 3-second pan with a zoom over a built-in
            photo, e.g. ``sample:chelsea``).
        style: Style image(s): paths, folders, globs or built-in samples; several are blended.
        style_blend_weights: Relative weight of each style image (default: equal).
        image_size: Shorter side of the frames as stylized.
        style_size: Shorter side of the style images (default: ``image_size``).
        style_scale: Multiplies ``style_size``.
        frames: The frames taken, as a Python slice of the clip's frames: ``[start, stop]`` or
            ``"start:stop"`` (stop excluded; None: all).
        every_n: Take every n-th frame of that range (the output's rate is divided by it).
        fps: The frame rate of a folder of frames (default 24), or one that replaces a file's
            (the video then has no sound: it would not match the frames).
        overlap: Frames two processes' chains share where they meet (see :func:`plan_chains`);
            the output cross-fades from one to the other over them (12: half a second at 24
            frames/s, measured to leave no visible seam; 4 showed one).
        passes: 1, or 2 for a second pass that runs backwards (Ruder et al.'s multi-pass): each
            frame again, from the last, starting from its first-pass picture blended with its
            successor's second-pass picture warped to it. Twice the frames' steps.
    """

    def __init__(
        self,
        content: str = "sample:chelsea",
        style: Sources = "sample:immunohistochemistry",
        style_blend_weights: Optional[list[float]] = None,
        image_size: int = 256,
        style_size: Optional[int] = None,
        style_scale: float = 1.0,
        frames: Union[Sequence[int], str, None] = None,
        every_n: int = 1,
        fps: Optional[float] = None,
        overlap: int = 12,
        passes: int = 1,
    ) -> None:
        super().__init__(batch_size=1)  # a frame waits for the one before it
        check_positive("image_size", image_size)
        check_positive("style_size", style_size)
        check_positive("style_scale", style_scale)
        if not isinstance(overlap, int) or overlap < 0:
            raise UserInputError(f"overlap must be a whole number of frames, 0 or more, got "
                                 f"{overlap!r}.")
        if fps is not None:
            _positive_fps(fps)
        if passes not in (1, 2) or isinstance(passes, bool):
            raise UserInputError(f"passes must be 1 (forward) or 2 (forward, then backward), got "
                                 f"{passes!r}.")
        if not isinstance(content, str) or not content:
            raise UserInputError("--data.content must name one video file, a folder of frames "
                                 "or sample:<photo>.")
        self.content = content
        self.style = style
        self.style_blend_weights = style_blend_weights
        self.image_size = image_size
        self.style_size = style_size
        self.style_scale = style_scale
        self.frames = frames
        self.every_n = every_n
        self.fps = fps
        self.overlap = overlap
        self.passes = passes
        self.clip: Optional[ClipInfo] = None

    def _world_size(self) -> int:
        trainer = self.trainer  # set by Lightning; None from Python without a Trainer
        return trainer.world_size if trainer is not None else 1

    def setup(self, stage: str) -> None:
        if self.jobs:
            return
        if not self.content.startswith(SAMPLE_PREFIX) and is_missing_file(self.content):
            raise UserInputError(f"Video not found: {self.content} (--data.content).")
        styles, blend = self._styles()
        video = open_clip(self.content, self.fps)
        from datamodules.video_io import select_frames

        indices = select_frames(video.frame_count, self.frames, self.every_n)
        store = FrameStore(video, indices, self.image_size)
        fps = Fraction(video.fps) / self.every_n
        audio = None
        # The sound keeps the file's own time: with a rate of one's own it would not match.
        if getattr(video, "has_audio", False) and self.fps is None:
            start = indices[0] / video.fps
            audio = (str(video.path), float(start), float(start + len(indices) / fps))
        chains = plan_chains(len(indices), self._world_size(), self.overlap)
        self.clip = ClipInfo(str(video.path), fps, len(indices), audio, chains,
                             digits=max(6, len(str(len(indices)))))
        self.frame_store = store
        shared = {position for chain in chains[1:] for position in chain.frames[:chain.shared]}
        by_chain: list[list[FrameJob]] = []
        for chain_index, chain in enumerate(chains):
            jobs = []
            # The forward pass, then (passes=2) the backward one, from the chain's last frame.
            order = [(0, 1, chain.frames)] + ([(1, -1, chain.frames[::-1])]
                                               if self.passes == 2 else [])
            for pass_index, direction, positions in order:
                final = pass_index == self.passes - 1
                for position in positions:
                    name = self.clip.frame_name(position,
                                                chain_index if position in shared else None)
                    jobs.append(FrameJob(name if final else f"{name}_forward", store, position,
                                         chain_index, len(jobs), position in shared, styles,
                                         blend, chain.frames, direction, pass_index, final))
            by_chain.append(jobs)
        # Chunk c holds job c of every chain: process r keeps chain r.
        self.jobs = [jobs[step] for step in range(len(by_chain[0])) for jobs in by_chain]

    def _styles(self) -> tuple[list[torch.Tensor], list[float]]:
        sources = expand_sources(self.style, "--data.style")
        if not sources:
            raise UserInputError("Give at least one style image (--data.style).")
        missing = [source for source in sources if is_missing_file(source)]
        if missing:
            raise UserInputError("Style image not found: " + ", ".join(missing) + ".")
        weights = blend_weights(self.style_blend_weights, len(sources))
        side = round((self.style_size or self.image_size) * self.style_scale)
        check_positive("style_size * style_scale", side)
        styles = [image_to_tensor(resize_shorter_side(load_image(s), side, s)) for s in sources]
        return styles, weights

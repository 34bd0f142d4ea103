"""Video style transfer without flicker (Ruder, Dosovitskiy and Brox, 2016).

Each frame is a style-transfer job (:class:`~datamodules.video_style_transfer.FrameJob`), one
chunk each, in the order of its chain. A frame after a chain's first:

- starts from the previous frame's result warped to it by the optical flow of the input
  (bicubically; where the flow is not reliable, from the frame itself), so it needs fewer and
  smaller steps (``warm_steps`` at ``warm_lr``) and only the finest scale;
- adds a temporal term (:class:`~lightning_modules.style_transfer.terms.temporal.TemporalTerm`):
  the picture stays where the previous results moved to, on the pixels the flow follows
  reliably (forward-backward consistent, off motion boundaries).

The previous results a frame needs are kept in memory (and in checkpoints, so a run killed at
any frame and step goes on as the uninterrupted one would); a chain's first frame is a plain
style transfer at every scale. With ``passes=2`` (the data's option) the frames run again
backwards, each from its forward picture blended with its successor's new one.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from lightning_modules.errors import UserInputError, check_learning_rate, check_non_negative
from lightning_modules.image_optimization.module import ImageOptimization
from lightning_modules.style_transfer.composition import _distinct
from lightning_modules.style_transfer.module import StyleTransfer
from lightning_modules.style_transfer.terms.temporal import TemporalTerm


# Each frame's start is the previous result warped: bilinear sampling, again and again at
# sub-pixel moves, blurred 24 frames of a zoom to 79 % of the first frame's edge strength,
# bicubic to 90 % (benchmarks/video_flicker.py, docs/video.md).
WARP_MODE = "bicubic"


class VideoStyleTransfer(StyleTransfer):
    """Stylize a video's frames in order, each from the one before (no flicker).

    Args:
        temporal_weight: Weight of the temporal term (0: none; the frames still start from the
            warped previous result when ``warm_start``).
        long_term: The earlier frames whose warped results the temporal term also compares
            against, by distance (``[1]``: the previous frame only; ``[1, 2, 4]``: Ruder et
            al.'s long-term consistency); a farther frame counts only where the nearer ones'
            flow is not reliable. Must include 1.
        warm_start: Start each frame after a chain's first from the previous result, warped.
            False: every frame is an independent style transfer (the flickering baseline).
        warm_steps: Steps of a warm-started frame (``trainer.max_steps`` is the first
            frame's); None: as many as the first.
        flow: The optical flow method: ``"dis"`` (OpenCV's dense inverse search) or
            ``"farneback"``.
        warm_lr: The learning rate of a warm-started frame (None: ``lr``): a frame that starts
            close to its result needs smaller steps, and every frame's steps add up along the
            video (the picture drifts toward the style's colours with larger ones).
        video_file: The video's file name in the run folder; its suffix picks the container
            and codec (``.mp4``: H.264, ``.webm``: VP9, ``.mov``, ``.mkv``, ``.gif``).
        **kwargs: Every option of :class:`~lightning_modules.style_transfer.StyleTransfer`.
    """

    data_name = ("a VideoStyleData datamodule (data: class_path: "
                 "datamodules.VideoStyleData)")

    def __init__(self, temporal_weight: float = 20000.0, long_term: Sequence[int] = (1,),
                 warm_start: bool = True, warm_steps: Optional[int] = None,
                 flow: str = "dis", video_file: str = "video.mp4",
                 warm_lr: Optional[float] = 0.005, **kwargs: Any) -> None:
        check_non_negative("temporal_weight", temporal_weight)
        long_term = sorted(set(long_term))
        if (not long_term or long_term[0] != 1
                or not all(isinstance(k, int) and k >= 1 for k in long_term)):
            raise UserInputError(f"long_term must be whole distances in frames that include 1, "
                                 f"got {list(long_term)}.")
        check_learning_rate("warm_lr", warm_lr)
        if warm_steps is not None and (isinstance(warm_steps, bool)
                                       or not isinstance(warm_steps, int) or warm_steps < 1):
            raise UserInputError(f"warm_steps must be a positive number of steps, got "
                                 f"{warm_steps!r}.")
        from lightning_modules.video_style_transfer.flow import FLOW_METHODS

        if flow not in FLOW_METHODS:
            raise UserInputError(f"Unknown flow '{flow}'; choose one of "
                                 f"{', '.join(FLOW_METHODS)}.")
        from datamodules.video_io import check_video_file_name

        check_video_file_name(video_file)  # before any work, not after the frames
        super().__init__(**kwargs)
        self.video_file = video_file
        self.temporal_weight = temporal_weight
        self.long_term = long_term
        self.warm_start = warm_start
        self.warm_steps = warm_steps
        self.warm_lr = warm_lr
        self.flow = flow
        term = TemporalTerm(temporal_weight if warm_start else 0.0)
        term.bind(self.backbone, wrap=self.tileable)
        self.terms.append(term)
        self.term_names = _distinct([term.name for term in self.terms])
        self.backward_blend = 0.5  # a backward pass's start: half the neighbour, half its own
        # Earlier results, by (pass, frame number).
        self._results: dict[tuple[int, int], torch.Tensor] = {}
        self._starts: dict[int, torch.Tensor] = {}  # warm starts of the current jobs
        self._holds_results = False  # the images hold optimized pictures of the current chunk
        self._chunk_step = 0  # steps the current chunk's jobs have taken
        self._was_idle = False  # this process had no job of its own in the current chunk

    # ----------------------------------------------------------------- jobs and their starts
    def make_jobs(self, items: Sequence[Any]) -> list[Any]:
        items = list(items)
        if not items or not hasattr(items[0], "step_in_chain"):
            raise UserInputError(f"VideoStyleTransfer needs {self.data_name}.")
        super().make_jobs(items[:1])  # every frame has the first's images: one check reads one
        if not self.warm_start and any(job.pass_index for job in items):
            raise UserInputError("A backward pass (--data.passes 2) starts each frame from its "
                                 "forward picture: it needs --model.warm_start true.")
        return items

    def _plan_jobs(self) -> None:
        super()._plan_jobs()
        # Chunk c holds job c of every chain, process r's at place r; a process without a chain
        # (a clip too short for so many) idles. The jobs' order alone cannot say it, as chunks
        # of batch_size x processes consecutive jobs would pair one chain's frames together.
        chunks: dict[int, list[int]] = {}
        for index, job in enumerate(self.plan.jobs):
            chunks.setdefault(job.step_in_chain, []).append(index)
        self.plan.chunks = [chunks[step] for step in sorted(chunks)]

    def _warm(self) -> bool:
        """Whether the current chunk's frames start from their predecessors."""
        return bool(self.jobs) and self.warm_start and self.jobs[0].step_in_chain > 0

    def _start_images(self) -> None:
        # The chunk before's results are the next frames' predecessors: keep them.
        if self._holds_results and self.jobs and not self._was_idle:
            for index, job in enumerate(self.jobs):
                picture = ImageOptimization.result_pixels(self, index)
                if not job.final:  # kept for the backward pass: 8-bit, a quarter the memory
                    picture = (picture * 255).round().to(torch.uint8)
                self._results[(job.pass_index, job.position)] = picture
                self._forget_results(job)
        self._holds_results = False
        self._chunk_step = 0
        super()._start_images()
        self._was_idle = self.idle  # read before the next chunk replaces the plan's place

    def _forget_results(self, job: Any) -> None:
        """Drop the results no later frame reads, now that ``job`` is done: its pass's frames
        ``long_term`` or more behind it, and (in a backward pass) its own forward picture. A
        forward pass followed by a backward one keeps its pictures for it."""
        if not job.final:
            return
        reach = max(self.long_term)
        for key in list(self._results):
            pass_index, position = key
            behind = (job.position - position) * job.direction >= reach
            if (pass_index == job.pass_index and behind) or key == (0, job.position) != (
                    job.pass_index, job.position):
                del self._results[key]

    def create_images(self, jobs: list[Any]) -> list[torch.Tensor]:
        self._starts = {}
        for index, job in enumerate(self.jobs):
            job.temporal = None
            if self._warm() and not self.idle:
                self._starts[index] = self._warm_start(job)
        return super().create_images(jobs)

    def _warm_start(self, job: Any) -> torch.Tensor:
        """Set ``job.temporal`` from the earlier results of its pass, and return its start."""
        from lightning_modules.video_style_transfer.flow import (optical_flow,
                                                                 temporal_weights, warp)

        frame = job.content
        warped, weights, covered = [], [], torch.zeros(1, *frame.shape[1:])
        for distance in self.long_term:
            earlier = job.position - distance * job.direction
            if earlier not in job.chain_frames:
                break
            if (job.pass_index, earlier) not in self._results:
                raise RuntimeError(f"The result of frame {earlier} is missing: frames must run "
                                   "in their chain's order.")
            earlier_frame = job.frames.frame(earlier)
            flow_back = optical_flow(frame, earlier_frame, self.flow)
            flow_forward = optical_flow(earlier_frame, frame, self.flow)
            reliable = temporal_weights(flow_back, flow_forward)
            warped.append(warp(self._picture((job.pass_index, earlier)), flow_back,
                               WARP_MODE).clamp(0, 1))
            # A farther frame counts only where the nearer ones' flow fails (Ruder et al.).
            weights.append((reliable - covered).clamp(min=0))
            covered = torch.maximum(covered, reliable)
        own = self._picture((0, job.position)) if job.pass_index else None
        if not warped:  # the backward pass's first frame: its forward picture, no neighbour
            return own
        job.temporal = (torch.stack(warped), torch.stack(weights))
        nearest, reliable = warped[0], weights[0]
        if own is None:
            return reliable * nearest + (1 - reliable) * frame
        # The backward pass blends the neighbour's new picture into the frame's own (the
        # paper's multi-pass start, delta = 1/2), where the flow is reliable.
        blend = self.backward_blend * reliable
        return blend * nearest + (1 - blend) * own

    def _picture(self, key: tuple[int, int]) -> torch.Tensor:
        """A kept result as 0-1 pixels (a forward pass's are kept 8-bit for a backward one)."""
        picture = self._results[key]
        return picture.float() / 255 if picture.dtype == torch.uint8 else picture

    def _starting_pixels(self, index: int) -> torch.Tensor:
        start = self._starts.get(index)
        return start if start is not None else super()._starting_pixels(index)

    # ----------------------------------------------------------------- stages and steps
    def stage_count(self) -> int:
        return 1 if self._warm() else super().stage_count()

    def stage_steps(self) -> list[int]:
        return [self.steps_per_chunk] if self._warm() else super().stage_steps()

    def stage_size(self, index: int, stage: Optional[int] = None) -> tuple[int, int]:
        return self.jobs[index].size if self._warm() else super().stage_size(index, stage)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if (stage == "fit" and self.warm_steps is not None and self.steps_per_chunk
                and self.warm_steps > self.steps_per_chunk):
            raise UserInputError(f"warm_steps ({self.warm_steps}) must be at most the first "
                                 f"frame's steps, trainer.max_steps ({self.steps_per_chunk}).")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        optimizer = super().configure_optimizers()
        # Built again at every chunk: a warm frame's steps are its own.
        if self._warm() and self.warm_lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = self.warm_lr
        return optimizer

    def chunk_finished(self) -> bool:
        return (self._warm() and self.warm_steps is not None
                and self._chunk_step >= self.warm_steps)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        if self.is_log_step() and self.jobs:
            # The progress bar counts chunks as epochs; the frame number says where the video is.
            self.log("frame", float(self.jobs[0].position), prog_bar=True, on_step=True,
                     on_epoch=False)
        return loss

    def after_step(self, step: int) -> None:
        super().after_step(step)
        self._holds_results = True
        self._chunk_step = step + 1

    # ----------------------------------------------------------------- results
    def result_stem(self, index: int) -> str:
        job = self.jobs[index]
        folder = "frames" if job.final else "frames/forward"
        return f"{folder}/overlap/{job.name}" if job.shared else f"{folder}/{job.name}"

    def configure_callbacks(self) -> list[Any]:
        from callbacks.video_writer import VideoWriter

        return [VideoWriter(self.video_file)]

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["video_frames"] = {"results": {p: r.clone() for p, r in self._results.items()},
                                      "chunk_step": self._chunk_step}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("video_frames")
        if saved is None:
            raise UserInputError("This checkpoint was not written by a video run.")
        # Before the base restores the chunk: its frames' starts read the earlier results.
        self._results = dict(saved["results"])
        super().on_load_checkpoint(checkpoint)
        self._chunk_step = int(saved["chunk_step"])
        self._holds_results = True  # the images are the checkpoint's, optimized

"""Writes a stylized video from its frames, and how much it flickers.

The frames' PNGs are written as every job's result is (``callbacks.ImageWriter``, under
``frames/``). When every process has finished, the first one:

- cross-fades, where two processes' chains meet, from one chain's pictures
  (``frames/overlap/<frame>_chain<j>.png``) to the next one's into ``frames/<frame>.png``, so
  the seam is a dissolve over a few frames instead of a jump;
- encodes ``video.<suffix>`` at the clip's frame rate, with the clip's sound where it has one;
- measures the warping error of each frame (Lai et al. 2018: the previous output warped by the
  input's flow, against this output, on the pixels the flow follows) into ``temporal.csv``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl

from callbacks.run_directory import continues_run, run_directory
from datamodules.files import write_csv_rows
from datamodules.images import image_to_tensor, load_image, save_png


class VideoWriter(pl.Callback):
    """Assembles the video of a :class:`~lightning_modules.VideoStyleTransfer` run.

    Args:
        file_name: The video's file name in the run folder; its suffix picks the container
            and codec (``.mp4``: H.264, ``.webm``: VP9, ``.gif``).
        warping_error: Measure each frame's warping error into ``temporal.csv``.
    """

    def __init__(self, file_name: str = "video.mp4", warping_error: bool = True) -> None:
        from datamodules.video_io import check_video_file_name

        check_video_file_name(file_name)
        self.file_name = file_name
        self.warping_error = warping_error
        self.directory: Optional[Path] = None
        self.written: Optional[Path] = None  # the video, once written
        self.frames: list[Path] = []  # its frames' PNGs, in order
        self.errors: list[float] = []  # each frame's warping error, from the second

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.directory = run_directory(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.strategy.barrier()  # every chain's frames are written
        if trainer.is_global_zero:
            clip = trainer.datamodule.clip
            overwrite = continues_run(trainer)
            self._cross_fade(clip)
            names = [clip.frame_name(position) for position in range(clip.frame_count)]
            frames = self.frames = [self.directory / "frames" / f"{name}.png" for name in names]
            from datamodules.video_io import write_video

            self.written = write_video(frames, self.directory / self.file_name, clip.fps,
                                       audio=clip.audio, overwrite=overwrite)
            if self.warping_error:
                self._measure(frames, trainer.datamodule.frame_store, overwrite)
        trainer.strategy.barrier()

    def _cross_fade(self, clip: Any) -> None:
        """Write each shared frame as a blend of its two chains' pictures."""
        for chain_index, chain in enumerate(clip.chains[1:], start=1):
            for offset, position in enumerate(chain.frames[:chain.shared]):
                fraction = (offset + 1) / (chain.shared + 1)
                folder = self.directory / "frames"
                before = image_to_tensor(load_image(
                    folder / "overlap" / f"{clip.frame_name(position, chain_index - 1)}.png"))
                after = image_to_tensor(load_image(
                    folder / "overlap" / f"{clip.frame_name(position, chain_index)}.png"))
                save_png((1 - fraction) * before + fraction * after,
                         folder / f"{clip.frame_name(position)}.png", overwrite=True)

    def _measure(self, frames: list[Path], inputs: Any, overwrite: bool) -> None:
        """Each frame's warping error against the one before, into ``temporal.csv``."""
        from lightning_modules.video_style_transfer.flow import warping_error

        self.errors = []
        previous = image_to_tensor(load_image(frames[0]))
        for position in range(1, len(frames)):
            current = image_to_tensor(load_image(frames[position]))
            self.errors.append(warping_error([previous, current],
                                             [inputs.frame(position - 1),
                                              inputs.frame(position)])[0])
            previous = current
        rows = [{"frame": position, "warping_error": f"{error:.6g}"}
                for position, error in enumerate(self.errors, start=1)]
        write_csv_rows(self.directory / "temporal.csv", ["frame", "warping_error"], rows,
                       replace=overwrite)
        if self.errors:
            mean = sum(self.errors) / len(self.errors)
            print(f"Video: {self.written} ({len(frames)} frames); mean warping error "
                  f"{mean:.5f} (temporal.csv).")
        else:
            print(f"Video: {self.written} (one frame: no warping error).")


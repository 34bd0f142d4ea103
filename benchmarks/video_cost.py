"""What a video costs: time per frame and memory, against one picture of the same size.

Makes a 10-second clip (240 frames at 24 frames/s: a pan with a zoom over a built-in photo,
written with PyAV to a temporary folder), then runs, each in its own process and timed by the
frames' files:

- ``cli.py fit --config video_style_transfer`` on its first ``--frames`` frames at
  ``--image-size`` (the first frame at every scale with ``max_steps``, the others warm);
- ``cli.py fit --config style_transfer`` on the clip's first frame alone (one picture).

It prints each run's seconds per frame and peak resident memory (the children's ``ru_maxrss``),
and the whole clip's time projected from the measured frames (first + 239 x the median of the
warm ones), labelled as a projection::

    python benchmarks/video_cost.py --image-size 512 --frames 12
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_clip(folder: Path, seconds: int = 10, fps: int = 24) -> Path:
    """A pan with a zoom over the built-in ``astronaut`` photo, ``seconds`` long."""
    from datamodules.video_io import write_video
    from datamodules.video_style_transfer import SampleClip

    clip = SampleClip("sample:astronaut", frame_count=seconds * fps, fps=Fraction(fps))
    return write_video((clip.frame(i) for i in range(clip.frame_count)), folder / "clip.mp4",
                       clip.fps)


def peak_memory_of(command: list[str]) -> tuple[float, float]:
    """Run ``command`` in a child; returns (seconds, its peak resident memory in MiB)."""
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of the children is the largest of any child so far: run the smaller job first.
    return time.time() - started, max(peak, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="video_cost_"))
    clip = make_clip(out)
    first_frame = out / "first_frame.png"
    from datamodules.video_io import open_video

    with open_video(str(clip)) as video:
        video.frame(0).save(first_frame)
    single, single_memory = peak_memory_of(
        [sys.executable, str(REPO / "cli.py"), "fit", "--config", "style_transfer",
         "--data.content", str(first_frame), "--data.image_size", str(args.image_size),
         "--trainer.logger.init_args.save_dir", str(out / "picture"),
         "--trainer.enable_progress_bar", "false"])
    whole, video_memory = peak_memory_of(
        [sys.executable, str(REPO / "cli.py"), "fit", "--config", "video_style_transfer",
         "--data.content", str(clip), "--data.frames", f"0:{args.frames}",
         "--data.image_size", str(args.image_size),
         "--trainer.logger.init_args.save_dir", str(out / "video"),
         "--trainer.enable_progress_bar", "false"])
    [run] = (out / "video" / "video_style_transfer").glob("version_*")
    frames = sorted((run / "frames").glob("frame_*.png"))
    times = [(run / "config.yaml").stat().st_mtime] + [p.stat().st_mtime for p in frames]
    seconds = [after - before for before, after in zip(times, times[1:])]
    warm = statistics.median(seconds[1:])
    print(f"clip: {clip} (240 frames, 24 frames/s); {args.image_size} px")
    print(f"one picture (style_transfer, 200 steps): {single:.0f} s, peak {single_memory:.0f} MiB")
    print(f"video, {len(frames)} frames: {whole:.0f} s, peak {video_memory:.0f} MiB")
    print(f"first frame {seconds[0]:.1f} s; warm frames median {warm:.1f} s "
          f"(ratio {warm / seconds[0]:.2f}); all: {', '.join(f'{s:.1f}' for s in seconds)}")
    print(f"projection for the whole 10-second clip: {seconds[0] + 239 * warm:.0f} s "
          f"({(seconds[0] + 239 * warm) / 3600:.1f} h)")


if __name__ == "__main__":
    main()

"""Video style transfer: chains of frames, warm starts, the temporal term, resume, processes.

Runs use the tiny random backbone on a few frames of the built-in clip (a pan with a zoom over
a sample photo, made in memory) at 32 px: what they show is the engine (order, starts, files,
resume, segments), not the pictures' quality, which benchmarks/video_flicker.py measures.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

import cli
import cli_processes
from callbacks import ImageWriter
from datamodules.video_style_transfer import Chain, SampleClip, VideoStyleData, plan_chains
from lightning_modules.errors import UserInputError
from lightning_modules.video_style_transfer.flow import optical_flow, temporal_weights, warp
from lightning_modules.video_style_transfer.module import VideoStyleTransfer

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "video_style_transfer.yaml")


def tiny_video_args(*extra: str, frames: str = "0:5", steps: int = 6) -> list[str]:
    """The shipped video config on the tiny random backbone: 32 px, a few frames."""
    return ["fit", "--config", CONFIG, "--model.backbone", "tiny", "--model.weights", "random",
            "--model.content_layers", "[2]", "--model.style_layers", "[0, 1]",
            "--model.style_weights", "[1, 1]", "--model.scales", "[16]",
            "--model.warm_steps", "3", "--data.frames", frames, "--data.image_size", "32",
            "--trainer.max_steps", str(steps), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", *extra]


def frames_of(run: Path) -> dict[str, np.ndarray]:
    return {path.stem: np.asarray(Image.open(path)) for path in sorted((run / "frames").glob(
        "frame_*.png"))}


# ----------------------------------------------------------------- segments
def test_one_process_runs_one_chain_over_every_frame() -> None:
    assert plan_chains(10, 1, 4) == [Chain(range(10))]


@pytest.mark.parametrize("frames,segments,overlap", [(72, 2, 4), (73, 2, 4), (100, 3, 2),
                                                     (30, 4, 3)])
def test_chains_have_one_length_cover_the_clip_and_overlap(frames, segments, overlap) -> None:
    chains = plan_chains(frames, segments, overlap)
    assert len(chains) == segments
    assert len({len(chain.frames) for chain in chains}) == 1
    assert chains[0].frames.start == 0 and chains[-1].frames.stop == frames
    for before, after in zip(chains, chains[1:]):
        assert after.shared == before.frames.stop - after.frames.start
        assert overlap <= after.shared <= overlap + 1


def test_no_frame_belongs_to_three_chains() -> None:
    for frames in range(1, 60):
        for segments in range(1, 5):
            for overlap in range(0, 6):
                chains = plan_chains(frames, segments, overlap)
                owners = [sum(position in chain.frames for chain in chains)
                          for position in range(frames)]
                assert 1 <= min(owners) and max(owners) <= 2, (frames, segments, overlap)


def test_a_process_without_a_chain_idles_and_the_others_keep_theirs() -> None:
    """6 frames for 3 processes (overlap 4): one chain; processes 1 and 2 idle."""
    data = VideoStyleData(frames="0:6", image_size=32)
    data.trainer = type("T", (), {"world_size": 3})()
    data.setup("fit")
    for rank in range(3):
        module = VideoStyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                                    style_layers=[0], style_weights=[1.0])
        module._world = lambda rank=rank: (3, rank)
        module.set_jobs(data.jobs, 1)
        module._plan_jobs()
        for chunk in range(len(module.plan)):
            module.plan.chunk = chunk
            assert module.plan.idle == (rank > 0)
            if rank == 0:
                assert [job.position for job in module.plan.current()] == [chunk]


def test_a_clip_too_short_for_every_process_gets_fewer_chains() -> None:
    chains = plan_chains(6, 4, 2)
    assert len(chains) == 1 and chains[0].frames == range(6)
    with pytest.raises(UserInputError, match="no frame"):
        plan_chains(0, 2, 4)


def test_the_jobs_interleave_the_chains_so_each_process_keeps_its_own() -> None:
    data = VideoStyleData(frames="0:12", image_size=32, overlap=2)
    data.trainer = type("T", (), {"world_size": 2})()  # what setup asks of the trainer
    data.setup("fit")
    chains = [job.chain for job in data.jobs]
    assert chains[0::2] == [0] * 7 and chains[1::2] == [1] * 7
    assert [job.step_in_chain for job in data.jobs[0::2]] == list(range(7))
    shared = [job.name for job in data.jobs if job.shared]
    assert sorted(shared) == ["frame_000005_chain0", "frame_000005_chain1",
                              "frame_000006_chain0", "frame_000006_chain1"]


# ----------------------------------------------------------------- the built-in clip
def test_the_sample_clip_pans_and_zooms_smoothly() -> None:
    clip = SampleClip("sample:chelsea")
    assert clip.frame_count == 72 and clip.fps == 24
    first, second = (torch.from_numpy(np.asarray(clip.frame(i), dtype=np.float32) / 255)
                     .permute(2, 0, 1) for i in (0, 1))
    flow = optical_flow(first, second)
    # The camera moves right and zooms in: the picture flows left, by under 2 px a frame.
    assert -2 < float(flow[0].median()) < -0.2
    assert float(flow.abs().max()) < 4


# ----------------------------------------------------------------- the run
def run_in_process(tmp_path: Path, callbacks=(), ckpt_path=None, passes: int = 1,
                   **options) -> VideoStyleTransfer:
    pl.seed_everything(0, verbose=False)
    module = VideoStyleTransfer(backbone="tiny", weights="random", content_layers=[2],
                                style_layers=[0, 1], style_weights=[1.0, 1.0], scales=[16],
                                shift=2, warm_steps=3, **options)
    trainer = pl.Trainer(max_steps=6, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu",
                         default_root_dir=tmp_path, callbacks=[ImageWriter(sheets=False), *callbacks],
                         enable_checkpointing=bool(callbacks))
    trainer.fit(module, VideoStyleData(frames="0:4", image_size=32, passes=passes),
                ckpt_path=ckpt_path)
    return module


def test_a_frame_starts_from_the_previous_result_warped_by_the_flow(tmp_path) -> None:
    module = run_in_process(tmp_path)
    data_frames = [np.asarray(Image.open(tmp_path / "frames" / f"frame_{i:06d}.png"))
                   for i in range(4)]
    assert len(data_frames) == 4
    # Frame 3's start, made again from frame 2's kept result.
    job = module.jobs[0]
    assert job.position == 3
    previous = module._results[(0, 2)]
    frame, before = job.content, job.frames.frame(2)
    flow_back = optical_flow(frame, before)
    reliable = temporal_weights(flow_back, optical_flow(before, frame))
    warped_previous = warp(previous, flow_back, "bicubic").clamp(0, 1)
    expected = reliable * warped_previous + (1 - reliable) * frame
    torch.testing.assert_close(module._warm_start(job), expected)
    warped, weights = job.temporal
    torch.testing.assert_close(warped[0], warped_previous)
    assert 0.5 < float(weights.mean()) <= 1


def test_warm_frames_take_warm_steps_at_full_size_and_a_temporal_loss(tmp_path) -> None:
    module = run_in_process(tmp_path)
    # First frame: 6 steps (two scales); three warm frames: 3 steps each.
    assert module.trainer.global_step == 6 + 3 * 3
    rows = module.losses.rows
    assert all(row["temporal_loss"] == 0 for row in rows[:6])
    assert all(row["temporal_loss"] > 0 for row in rows[6:])


def test_independent_frames_start_from_their_photo_without_a_temporal_loss(tmp_path) -> None:
    module = run_in_process(tmp_path, warm_start=False)
    assert module.trainer.global_step == 6 * 4
    assert all(row["temporal_loss"] == 0 for row in module.losses.rows)


@pytest.mark.parametrize("passes,checkpoints", [
    # Step 4: the first frame's second scale; 10: in frame 2, after frame 1 ended early
    # (warm_steps), which Lightning's batch counts once miscounted; 12: frame 2's last step.
    # The numbers: the frames written before the checkpoint.
    (1, ((4, []), (10, [0, 1]), (12, [0, 1]))),
    # Step 20: frame 2 of the backward pass (its frame 3 done at step 18), every forward one.
    (2, ((20, [3]),)),
])
def test_a_run_resumed_at_any_frame_and_step_ends_as_the_uninterrupted_one(
        tmp_path, passes, checkpoints) -> None:
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=2, save_top_k=-1)
    uninterrupted = run_in_process(tmp_path / "whole", [saver], passes=passes)
    whole = frames_of(tmp_path / "whole")
    for step, written in checkpoints:
        # The run folder as the kill left it: the frames finished before the checkpoint.
        folder = tmp_path / f"again{step}"
        (folder / "frames").mkdir(parents=True)
        if passes == 2:
            shutil.copytree(tmp_path / "whole" / "frames" / "forward",
                            folder / "frames" / "forward")
        for position in written:
            name = f"frame_{position:06d}.png"
            shutil.copy(tmp_path / "whole" / "frames" / name, folder / "frames" / name)
        path = next((tmp_path / "ckpt").glob(f"*step={step}.ckpt"))
        resumed = run_in_process(folder, [ModelCheckpoint(dirpath=tmp_path / f"c{step}")],
                                 ckpt_path=path, passes=passes)
        assert torch.equal(resumed.images[0].detach(), uninterrupted.images[0].detach()), step
        again = frames_of(folder)
        assert again.keys() == whole.keys()
        for name, pixels in again.items():
            assert np.array_equal(pixels, whole[name]), (step, name)


def test_a_backward_pass_runs_each_frame_again_from_the_last(tmp_path) -> None:
    data = VideoStyleData(frames="0:4", image_size=32, passes=2)
    data.setup("fit")
    assert [(job.name, job.pass_index, job.direction) for job in data.jobs] == [
        *((f"frame_{i:06d}_forward", 0, 1) for i in range(4)),
        *((f"frame_{i:06d}", 1, -1) for i in (3, 2, 1, 0))]
    module = run_in_process(tmp_path, passes=2)
    # Forward: 6 + 3 x 3 steps; backward: 4 warm frames of 3 steps.
    assert module.trainer.global_step == 6 + 3 * 3 + 4 * 3
    rows = module.losses.rows
    # The backward pass's first frame (the last) has no neighbour: no temporal loss.
    assert all(row["temporal_loss"] == 0 for row in rows[15:18])
    assert all(row["temporal_loss"] > 0 for row in rows[18:])
    assert len(list((tmp_path / "frames" / "forward").glob("*.png"))) == 4
    assert sorted(frames_of(tmp_path)) == [f"frame_{i:06d}" for i in range(4)]
    # Its frames start from their forward pictures blended with the warped neighbour's.
    job = module.jobs[0]
    assert (job.position, job.pass_index) == (0, 1)
    assert (0, 0) in module._results and (1, 1) in module._results


def test_the_command_line_writes_frames_a_video_that_plays_and_the_flicker(workdir) -> None:
    from datamodules.video_io import probe_video

    assert cli.main(tiny_video_args()) == 0
    [run] = sorted((workdir / "runs" / "video_style_transfer").glob("version_*"))
    assert sorted(frames_of(run)) == [f"frame_{i:06d}" for i in range(5)]
    assert probe_video(run / "video.mp4") == (5, 24)
    rows = (run / "temporal.csv").read_text().splitlines()
    assert rows[0] == "frame,warping_error" and len(rows) == 1 + 4
    assert "temporal_loss" in (run / "losses.csv").read_text().splitlines()[0]


def test_killed_twice_and_resumed_the_video_equals_the_uninterrupted_one(workdir) -> None:
    """SIGKILL in the first frame's coarse scale, then in a warm frame; each resume goes on
    with --ckpt_path last; the frames equal an uninterrupted run's."""
    args = tiny_video_args("--checkpoint.every_n_train_steps", "2")
    assert cli.main(args) == 0
    for step in (3, 9):
        kill = ('--trainer.callbacks=[{"class_path": "fault_injection.KillAtStep", '
                f'"init_args": {{"step": {step}}}}}]')
        resume = ["--ckpt_path", "last"] if step == 9 else []
        status = cli_processes.run([*args, *resume, kill], workdir).returncode
        assert status == -9, status
    assert cli_processes.run([*args, "--ckpt_path", "last"], workdir).returncode == 0
    whole, resumed = sorted((workdir / "runs" / "video_style_transfer").glob("version_*"))
    assert frames_of(whole).keys() == frames_of(resumed).keys()
    for name, pixels in frames_of(whole).items():
        assert np.abs(pixels.astype(int) - frames_of(resumed)[name]).max() <= 1, name


def test_two_processes_run_a_segment_each_and_cross_fade_where_they_meet(workdir) -> None:
    args = tiny_video_args("--trainer.devices", "2", "--trainer.strategy", "image_ddp",
                           "--data.overlap", "1", frames="0:10")
    result = cli_processes.run(args, workdir)
    assert result.returncode == 0, result.stderr[-2000:]
    [run] = sorted((workdir / "runs" / "video_style_transfer").glob("version_*"))
    assert sorted(frames_of(run)) == [f"frame_{i:06d}" for i in range(10)]
    # Chains [0, 6) and [4, 10) (overlap 1, one more to make them equal): frames 4 and 5
    # blend chain 0's into chain 1's.
    for offset, position in enumerate((4, 5)):
        fraction = (offset + 1) / 3
        before, after = (np.asarray(Image.open(
            run / "frames" / "overlap" / f"frame_{position:06d}_chain{chain}.png"), dtype=float)
            for chain in (0, 1))
        blended = np.asarray(Image.open(run / "frames" / f"frame_{position:06d}.png"), float)
        assert np.abs(blended - ((1 - fraction) * before + fraction * after)).max() <= 1
    from datamodules.video_io import probe_video

    assert probe_video(run / "video.mp4") == (10, 24)
    # Away from the seam the frames are one process's (each process runs one thread there:
    # the last float digit may differ, the 8-bit pictures by at most 1).
    assert cli.main(tiny_video_args("--data.overlap", "1", frames="0:10")) == 0
    alone = frames_of(max((workdir / "runs" / "video_style_transfer").glob("version_*")))
    for position in range(4):
        name = f"frame_{position:06d}"
        assert np.abs(frames_of(run)[name].astype(int) - alone[name]).max() <= 1, name


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("options,expected", [
    (["--model.long_term", "[2, 4]"], "long_term must be whole distances"),
    (["--model.warm_steps", "0"], "warm_steps must be a positive number"),
    (["--model.flow", "raft"], "Unknown flow 'raft'"),
    (["--data.content", "missing.mp4"], "Video not found: missing.mp4"),
    (["--data.fps", "0"], "fps must be a positive number"),
    (["--data.frames", "9:3"], "holds no frames"),
    (["--data.passes", "3"], "passes must be 1 (forward) or 2"),
    (["--data.passes", "2", "--model.warm_start", "false"], "needs --model.warm_start true"),
    (["--model.warm_steps", "7"], "warm_steps (7) must be at most the first frame's steps"),
    (["--model.video_file", "out"], "must be a file name with a suffix"),
    (["--model.video_file", "out.xyz"], "Cannot write a .xyz video"),
])
def test_bad_video_options_are_one_sentence(workdir, capsys, options, expected) -> None:
    assert cli.main(tiny_video_args(*options)) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and expected in error[0] and "Traceback" not in error[0], error


def test_bad_videos_are_one_sentence_and_leave_no_run(workdir, capsys) -> None:
    (workdir / "notes.mp4").write_text("not a video")
    folder = workdir / "frames"
    folder.mkdir()
    Image.new("RGB", (40, 30)).save(folder / "a1.png")
    Image.new("RGB", (30, 40)).save(folder / "a2.png")
    for content, expected in (("notes.mp4", "notes.mp4"), (str(folder), "a2.png")):
        assert cli.main(tiny_video_args("--data.content", content)) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and expected in error[0], error
    assert not list((workdir / "runs" / "video_style_transfer").glob("version_*/frames"))


def sound_clip(path: Path, frames: int = 24) -> Path:
    """A 1-second clip with a 440 Hz tone, written with PyAV itself."""
    import av

    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
    sound = container.add_stream("aac", rate=48000)
    sound.layout = "mono"
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)).astype(np.float32)
    for start in range(0, 48000, 1024):
        frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = 48000, start
        for packet in sound.encode(frame):
            container.mux(packet)
    for packet in sound.encode(None):
        container.mux(packet)
    for index in range(frames):
        pixels = np.full((32, 48, 3), index * 10, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return path


def test_the_video_keeps_the_clips_sound_unless_its_rate_is_replaced(workdir) -> None:
    import av

    clip = sound_clip(workdir / "tone.mp4")
    for extra, sound in (([], True), (["--data.fps", "12"], False)):
        assert cli.main(tiny_video_args("--data.content", str(clip), *extra, frames="0:3")) == 0
        run = max((workdir / "runs" / "video_style_transfer").glob("version_*"),
                  key=lambda path: path.stat().st_mtime)
        with av.open(str(run / "video.mp4")) as container:
            assert bool(container.streams.audio) == sound, extra


def test_stylize_video_from_python(tmp_path) -> None:
    from lightning_modules import stylize_video

    result = stylize_video("sample:chelsea", "sample:immunohistochemistry", save_dir=tmp_path,
                           backbone="tiny", weights="random", content_layers=[2],
                           style_layers=[0, 1], style_weights=[1.0, 1.0], scales=[16],
                           image_size=32, frames="0:3", steps=4, warm_steps=2,
                           video_file="clip.webm")
    assert result.video.name == "clip.webm" and [p.name for p in result.frames] == [
        "frame_000000.png", "frame_000001.png", "frame_000002.png"]
    assert len(result.warping_errors) == 2 and result.run_directory.is_dir()

"""Tests for datamodules.video_io; every video is made in the test (tiny, under two seconds)."""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pytest
from PIL import Image

from datamodules import video_io
from datamodules.files import TEMPORARY_MARK
from datamodules.video_io import (
    MISSING_VIDEO_LIBRARIES,
    VideoFile,
    open_video,
    probe_video,
    select_frames,
    write_video,
    writable_suffixes,
)
from lightning_modules.errors import UserInputError

av = pytest.importorskip("av")

HEIGHT, WIDTH, COUNT = 32, 48, 12
NTSC = Fraction(30000, 1001)
AUDIO_RATE = 48000


def gradient(index: int, height: int = HEIGHT, width: int = WIDTH) -> Image.Image:
    """Frame ``index`` of a moving gradient; its flat top-left block says the index (mod 12)."""
    rows, columns = np.mgrid[0:height, 0:width]
    pixels = np.stack([(columns * 5 + index * 10) % 256, (rows * 7) % 256,
                       (rows + columns + index * 3) % 256], axis=-1).astype(np.uint8)
    pixels[:8, :8] = 10 + 20 * (index % 12)  # flat and far apart, so that lossy codecs keep it
    return Image.fromarray(pixels)


def index_of(image: Image.Image) -> int:
    """The index (mod 12) a frame of :func:`gradient` says (survives H.264, VP9 and GIF)."""
    return round((np.asarray(image)[2:6, 2:6].mean() - 10) / 20)


def gradients(count: int = COUNT, **size: int) -> list[Image.Image]:
    return [gradient(index, **size) for index in range(count)]


def raw_video(path: Path, frames: int = COUNT, rate: Fraction = Fraction(24),
              loud: Optional[tuple[float, float]] = None, seconds: float = 0.0) -> Path:
    """A video written with PyAV itself; ``loud``: a 440 Hz tone between those seconds of
    ``seconds`` of AAC (mono, 48 kHz), silence elsewhere."""
    container = av.open(str(path), "w")
    stream = container.add_stream("libx264", rate=rate)
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    if loud is not None:
        sound = container.add_stream("aac", rate=AUDIO_RATE)
        sound.layout = "mono"
        times = np.arange(int(seconds * AUDIO_RATE)) / AUDIO_RATE
        tone = 0.5 * np.sin(2 * np.pi * 440 * times) * ((times >= loud[0]) & (times < loud[1]))
        for start in range(0, len(times), 1000):
            frame = av.AudioFrame.from_ndarray(tone[None, start:start + 1000].astype(np.float32),
                                               format="fltp", layout="mono")
            frame.sample_rate, frame.pts = AUDIO_RATE, start
            for packet in sound.encode(frame):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    for index in range(frames):
        frame = av.VideoFrame.from_image(gradient(index))
        frame.pts = index
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return path


def decoded_audio(path: Path) -> Optional[np.ndarray]:
    """The first audio stream of ``path`` as one channel of samples; None if it has none."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        assert stream.codec_context.sample_rate == AUDIO_RATE
        mono = av.AudioResampler(format="fltp", layout="mono", rate=AUDIO_RATE)
        pieces = [piece.to_ndarray()[0] for frame in container.decode(stream)
                  for piece in mono.resample(frame)]
        return np.concatenate(pieces + [piece.to_ndarray()[0] for piece in mono.resample(None)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, rate", [(".mp4", Fraction(24)), (".mp4", NTSC),
                                          (".webm", Fraction(24)), (".webm", NTSC),
                                          (".mov", NTSC), (".mkv", Fraction(24))])
def test_write_then_read_keeps_count_rate_size_and_order(tmp_path: Path, suffix: str,
                                                         rate: Fraction) -> None:
    path = write_video(iter(gradients()), tmp_path / f"clip{suffix}", rate)

    assert probe_video(path) == (COUNT, rate)
    with open_video(path) as video:
        assert (video.frame_count, video.fps, video.size) == (COUNT, rate, (HEIGHT, WIDTH))
        assert not video.has_audio and not video.is_folder
        frames = list(video.read(range(COUNT)))
    assert [index for index, _ in frames] == list(range(COUNT))
    assert [index_of(image) for _, image in frames] == list(range(COUNT))
    assert all(image.mode == "RGB" for _, image in frames)
    error = np.abs(np.asarray(frames[5][1], float) - np.asarray(gradient(5), float)).mean()
    assert error < 8


def test_gif_keeps_count_and_a_rate_it_can_hold(tmp_path: Path) -> None:
    # GIF delays are hundredths of a second: 25 fps (4/100 s) holds exactly.
    path = write_video(gradients(), tmp_path / "clip.gif", 25)

    assert probe_video(path) == (COUNT, Fraction(25))
    with open_video(path) as video:
        images = [image for _, image in video.read(range(COUNT))]
    assert [index_of(image) for image in images] == list(range(COUNT))
    # Each frame's own palette keeps the gradient close (FFmpeg's fixed rgb8 palette: ~17).
    assert np.abs(np.asarray(images[3], float) - np.asarray(gradient(3), float)).mean() < 6


def test_raw_pyav_video_reads_with_its_rate(tmp_path: Path) -> None:
    with open_video(raw_video(tmp_path / "raw.mkv", rate=NTSC)) as video:
        assert (video.frame_count, video.fps, video.size) == (COUNT, NTSC, (HEIGHT, WIDTH))
        assert index_of(video.frame(7)) == 7


def test_given_fps_replaces_the_files_rate(tmp_path: Path) -> None:
    path = write_video(gradients(), tmp_path / "clip.mp4", 24)
    with open_video(path, fps=12.5) as video:
        assert video.fps == Fraction(25, 2)
    with open_video(path, fps=float(NTSC)) as video:
        assert video.fps == NTSC  # a float rate comes back as the fraction it was


def test_odd_sizes_are_padded_for_h264_by_the_edge_pixels(tmp_path: Path) -> None:
    frames = gradients(4, height=HEIGHT - 1, width=WIDTH - 1)
    path = write_video(frames, tmp_path / "odd.mp4", 24)

    with open_video(path) as video:
        assert video.size == (HEIGHT, WIDTH)
        pixels = np.asarray(video.frame(0), float)
    assert np.abs(pixels[:, -1] - pixels[:, -2]).mean() < 12  # a copy of the edge, not black
    assert np.abs(pixels[-1] - pixels[-2]).mean() < 12
    assert pixels[-1].mean() > 40


def test_frames_can_be_image_files(tmp_path: Path) -> None:
    files = []
    for index, image in enumerate(gradients(3)):
        files.append(tmp_path / f"{index}.png")
        image.save(files[-1])
    path = write_video(files, tmp_path / "clip.webm", 24)
    assert probe_video(path) == (3, Fraction(24))


# ---------------------------------------------------------------------------------------------
# Folders of frames
# ---------------------------------------------------------------------------------------------


def test_folder_frames_come_in_natural_order(tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(COUNT):  # frame1 ... frame12: plain sorting puts frame10 before frame2
        gradient(index).save(folder / f"frame{index + 1}.png")
    (folder / "notes.txt").write_text("not a frame")
    (folder / f".frame13.png{TEMPORARY_MARK}123").write_bytes(b"half written")

    with open_video(folder) as video:
        assert video.is_folder and not video.has_audio
        assert (video.frame_count, video.fps, video.size) == (COUNT, 24, (HEIGHT, WIDTH))
        assert [index_of(image) for _, image in video.read(range(COUNT))] == list(range(COUNT))
    with open_video(str(folder), fps=NTSC) as video:
        assert video.fps == NTSC


# ---------------------------------------------------------------------------------------------
# Choosing frames and reading them
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames, every_n, expected", [
    (None, 1, list(range(10))),
    ("2:5", 1, [2, 3, 4]),
    ([2, 5], 1, [2, 3, 4]),
    ((0, 10), 3, [0, 3, 6, 9]),
    ("4:", 2, [4, 6, 8]),
    (":3", 1, [0, 1, 2]),
    ("-3:", 1, [7, 8, 9]),
    ([None, -8], 1, [0, 1]),
    (None, 4, [0, 4, 8]),
    ("9:10", 1, [9]),
])
def test_select_frames_takes_slices(frames: object, every_n: int, expected: list[int]) -> None:
    assert select_frames(10, frames, every_n) == expected


@pytest.mark.parametrize("frames, every_n, words", [
    ("5:11", 1, "reaches outside the video's 10 frames"),
    ([-11, 3], 1, "reaches outside"),
    ("5:5", 1, "holds no frames"),
    ("7:2", 1, "holds no frames"),
    ("1-5", 1, "must be 'start:stop'"),
    ([1, 2, 3], 1, "must be [start, stop]"),
    ([1.5, 3], 1, "must be [start, stop]"),
    (None, 0, "--data.every_n must be a whole number of at least 1"),
    (None, 1.5, "--data.every_n"),
])
def test_select_frames_refuses_in_one_sentence(frames: object, every_n: object,
                                               words: str) -> None:
    with pytest.raises(UserInputError, match=None) as caught:
        select_frames(10, frames, every_n)  # type: ignore[arg-type]
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_read_yields_only_the_requested_frames_in_one_pass(tmp_path: Path) -> None:
    path = write_video(gradients(), tmp_path / "clip.webm", 24)
    with open_video(path) as video:
        assert isinstance(video, VideoFile)
        got = [(index, index_of(image)) for index, image in video.read([1, 4, 5, 11])]
        assert got == [(1, 1), (4, 4), (5, 5), (11, 11)]
        assert video.restarts == 0
        with pytest.raises(ValueError, match="ascend"):
            list(video.read([3, 2]))
        with pytest.raises(IndexError):
            video.frame(COUNT)


def test_sequential_frames_continue_the_decoder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = []
    next_frame = VideoFile._next_frame

    def counting(self: VideoFile) -> object:
        frame = next_frame(self)
        decoded.append(frame is not None)
        return frame

    monkeypatch.setattr(VideoFile, "_next_frame", counting)
    path = write_video(gradients(), tmp_path / "clip.mp4", 24)
    with open_video(path) as video:
        assert [index_of(video.frame(index)) for index in range(COUNT)] == list(range(COUNT))
        assert index_of(video.frame(COUNT - 1)) == COUNT - 1  # the same frame again: kept
        assert video.restarts == 0
        assert sum(decoded) == COUNT  # every frame decoded once, the first while opening
        assert index_of(video.frame(2)) == 2  # backwards: the one way to start again
        assert video.restarts == 1 and sum(decoded) == COUNT + 3


# ---------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_a_clip_keeps_its_own_stretch_of_sound(tmp_path: Path, suffix: str) -> None:
    # 1.5 s of video whose sound is a tone only between 0.5 s and 1 s: frames 12 to 23.
    source = raw_video(tmp_path / "source.mp4", frames=36, loud=(0.5, 1.0), seconds=1.5)
    with open_video(source) as video:
        assert video.has_audio
        clip = [image for _, image in video.read(select_frames(video.frame_count, "12:24", 1))]

    loud = write_video(clip, tmp_path / f"loud{suffix}", 24, audio=(str(source), 0.5, 1.0))
    quiet = write_video(clip, tmp_path / f"quiet{suffix}", 24, audio=(str(source), 0.0, 0.5))

    assert probe_video(loud) == (12, Fraction(24))
    samples = decoded_audio(loud)
    assert samples is not None
    assert 0.45 <= len(samples) / AUDIO_RATE <= 0.56  # an encoder pads its last block
    middle = samples[int(0.05 * AUDIO_RATE):int(0.45 * AUDIO_RATE)]
    assert rms(middle) > 0.25  # the tone (0.35 RMS) throughout: in sync, not shifted
    quiet_samples = decoded_audio(quiet)
    assert quiet_samples is not None and rms(quiet_samples[: int(0.45 * AUDIO_RATE)]) < 0.05


def test_a_sound_that_ends_early_is_followed_by_silence(tmp_path: Path) -> None:
    source = raw_video(tmp_path / "source.mp4", frames=12, loud=(0.0, 0.25), seconds=0.25)
    path = write_video(gradients(), tmp_path / "clip.mkv", 24, audio=(str(source), 0.0, 0.5))
    samples = decoded_audio(path)
    assert samples is not None and 0.45 <= len(samples) / AUDIO_RATE <= 0.56
    assert rms(samples[: int(0.2 * AUDIO_RATE)]) > 0.25
    assert rms(samples[int(0.3 * AUDIO_RATE):]) < 0.05


def test_no_sound_in_the_source_writes_none(tmp_path: Path) -> None:
    silent = write_video(gradients(), tmp_path / "silent.mp4", 24)
    path = write_video(gradients(), tmp_path / "clip.mp4", 24, audio=(str(silent), 0.0, 0.5))
    assert decoded_audio(path) is None
    source = raw_video(tmp_path / "source.mp4", frames=12, loud=(0.0, 0.5), seconds=0.5)
    gif = write_video(gradients(), tmp_path / "clip.gif", 25, audio=(str(source), 0.0, 0.5))
    assert decoded_audio(gif) is None  # a GIF holds no sound


# ---------------------------------------------------------------------------------------------
# Written whole or not at all
# ---------------------------------------------------------------------------------------------


def test_an_existing_video_is_replaced_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"keep me")
    with pytest.raises(UserInputError, match="Refusing to overwrite"):
        write_video(gradients(), path, 24)
    assert path.read_bytes() == b"keep me"

    write_video(gradients(), path, 24, overwrite=True)
    assert probe_video(path) == (COUNT, Fraction(24))
    assert [entry.name for entry in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def failing() -> Iterator[Image.Image]:
        yield from gradients(3)
        raise KeyboardInterrupt  # a kill mid-video

    with pytest.raises(KeyboardInterrupt):
        write_video(failing(), tmp_path / "clip.mp4", 24)
    with pytest.raises(UserInputError, match=r"Frame 1 .* is 40x30 px, but frame 0 is 48x32"):
        write_video([gradient(0), gradient(1, height=30, width=40)], tmp_path / "mixed.webm", 24)
    with pytest.raises(UserInputError, match="No frames to write"):
        write_video([], tmp_path / "empty.gif", 24)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Bad input: one sentence each
# ---------------------------------------------------------------------------------------------


def one_sentence(error: pytest.ExceptionInfo[UserInputError]) -> str:
    message = str(error.value)
    assert "\n" not in message and message.endswith(".") and "Traceback" not in message
    return message


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as caught:
        open_video(tmp_path / "nowhere.mp4")
    assert one_sentence(caught) == f"Video not found: {tmp_path / 'nowhere.mp4'}."


def test_a_named_pipe_is_refused_before_ffmpeg_blocks_on_it(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)
    with pytest.raises(UserInputError) as caught:
        open_video(pipe)
    assert one_sentence(caught).startswith(f"Not a regular file: {pipe}")


def test_a_text_file_named_mp4_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("these are notes, not a video\n")
    with pytest.raises(UserInputError) as caught:
        open_video(path)
    assert one_sentence(caught).startswith(f"Not a video FFmpeg can read: {path} (")
    with pytest.raises(UserInputError, match="Not a video FFmpeg can read"):
        probe_video(path)


def test_an_audio_only_file_has_no_frames(tmp_path: Path) -> None:
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 4800), np.float32), format="fltp",
                                           layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(UserInputError) as caught:
        open_video(path)
    assert "has no video stream (no frames)" in one_sentence(caught)


def test_a_truncated_video_has_no_frames(tmp_path: Path) -> None:
    whole = write_video(gradients(), tmp_path / "whole.webm", 24).read_bytes()
    path = tmp_path / "cut.webm"
    path.write_bytes(whole[:500])  # the header and track, no frame
    with pytest.raises(UserInputError) as caught:
        open_video(path)
    assert one_sentence(caught) == (f"The video {path} has no frames that decode (empty or "
                                    f"truncated).")


@pytest.mark.parametrize("fps", [0, -24, float("nan"), float("inf"), "fast", True])
def test_a_frame_rate_must_be_positive(tmp_path: Path, fps: object) -> None:
    path = write_video(gradients(2), tmp_path / "clip.mp4", 24)
    with pytest.raises(UserInputError) as caught:
        open_video(path, fps=fps)  # type: ignore[arg-type]
    assert one_sentence(caught).startswith("The frame rate must be a positive number")
    with pytest.raises(UserInputError, match="frame rate must be a positive"):
        write_video(gradients(2), tmp_path / "other.mp4", fps)  # type: ignore[arg-type]


def test_a_video_without_a_rate_asks_for_one(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_video(gradients(2), tmp_path / "clip.mp4", 24)
    monkeypatch.setattr(video_io, "stream_rate", lambda stream: None)  # as a broken header
    with pytest.raises(UserInputError) as caught:
        open_video(path)
    assert one_sentence(caught) == (f"The video {path} has no frame rate; give one with "
                                    f"--data.fps.")
    with open_video(path, fps=10) as video:
        assert video.fps == 10


def test_a_folder_of_mixed_sizes_names_the_frame(tmp_path: Path) -> None:
    for index in range(3):
        gradient(index).save(tmp_path / f"f{index + 1}.png")
    gradient(3, height=20, width=30).save(tmp_path / "f10.png")
    gradient(4, height=20, width=30).save(tmp_path / "f11.png")
    with pytest.raises(UserInputError) as caught:
        open_video(tmp_path)
    assert one_sentence(caught) == (f"The frames in {tmp_path} differ in size: f10.png is "
                                    f"30x20 px, f1.png is 48x32 px; give frames of one size.")


def test_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no frames here")
    with pytest.raises(UserInputError) as caught:
        open_video(tmp_path)
    assert one_sentence(caught).startswith(f"The folder {tmp_path} has no frames: no image files")


def test_a_broken_frame_in_a_folder(tmp_path: Path) -> None:
    gradient(0).save(tmp_path / "f1.png")
    (tmp_path / "f2.png").write_bytes(b"not a png")
    with pytest.raises(UserInputError) as caught:
        open_video(tmp_path)
    assert "f2.png" in one_sentence(caught)


def test_a_suffix_without_an_encoder_names_those_that_work(tmp_path: Path) -> None:
    with pytest.raises(UserInputError) as caught:
        write_video(gradients(2), tmp_path / "clip.xyz", 24)
    assert one_sentence(caught) == (f"Cannot write video {tmp_path / 'clip.xyz'}: no encoder "
                                    f"here for '.xyz'; use a suffix that works: .mp4 .mov .mkv "
                                    f".webm .gif.")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_encoder_names_those_that_work(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    has_encoder = video_io._has_encoder
    monkeypatch.setattr(video_io, "_has_encoder",
                        lambda av, codec: codec != "libx264" and has_encoder(av, codec))
    assert writable_suffixes() == [".webm", ".gif"]
    with pytest.raises(UserInputError) as caught:
        write_video(gradients(2), tmp_path / "clip.mp4", 24)
    assert one_sentence(caught).endswith("no encoder here for '.mp4'; use a suffix that "
                                         "works: .webm .gif.")


def test_missing_pyav_says_how_to_install(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    for call in (lambda: open_video(path), lambda: probe_video(path),
                 lambda: write_video(gradients(1), tmp_path / "new.mp4", 24)):
        with pytest.raises(UserInputError) as caught:
            call()
        assert one_sentence(caught) == MISSING_VIDEO_LIBRARIES

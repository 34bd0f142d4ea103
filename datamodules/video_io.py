"""Video in and video out: frames from a video file or a folder of images, and videos written whole.

Reading and writing go through PyAV rather than imageio with imageio-ffmpeg. PyAV links FFmpeg's
libraries inside its wheel (with the libx264, libvpx-vp9, AAC and Opus encoders), decodes in
this process frame by frame, reads and writes audio streams (so a clip cut from the middle of a
video can keep its own stretch of sound) and gives frame rates as exact fractions (30000/1001).
imageio-ffmpeg runs an ``ffmpeg`` executable it ships and pipes raw frames through it: its reader
gives frames only, with the rate parsed from FFmpeg's log as a float (29.97), and its writer muxes
in an audio file's whole track, which FFmpeg does not cut to a shorter video (imageio's docs say
so); cutting a stretch of it takes FFmpeg arguments written by hand.

Frames are numbered from 0 in the order they are shown. A video is taken at a constant rate: its
stream's average rate, frame ``i`` at ``i / fps`` seconds after the first. Rotation metadata
(a phone's "display matrix") and non-square pixels are ignored: frames come as stored.

Everything the user can get wrong (a missing or unreadable file, a video with no frames or no
frame rate, frames of mixed sizes, a suffix no encoder here writes) is reported as one sentence,
a :class:`~lightning_modules.errors.UserInputError`. PyAV is an optional extra: it is imported
inside the functions that need it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from datamodules.files import write_file
from datamodules.images import load_image
from datamodules.sources import IMAGE_SUFFIXES
from lightning_modules.errors import UserInputError

MISSING_VIDEO_LIBRARIES = "Video needs PyAV and OpenCV: pip install 'image-optimization[video]'."

# A folder of frames carries no rate; 24 frames a second is film's, and the most common default.
DEFAULT_FOLDER_FPS = 24

# Rates given as floats become fractions with at most this denominator: 29.97002997 is
# 30000/1001 again, and any rate a container holds is within reach.
_MAX_RATE_DENOMINATOR = 1_000_000

# EXIF orientations 5 to 8 turn the picture a quarter turn: load_image swaps its width and height.
_QUARTER_TURN_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112

FrameRange = Union[Sequence[Optional[int]], str, None]
Picture = Union[Image.Image, str, "os.PathLike[str]"]


def _import_av() -> Any:
    """PyAV, or the one sentence that says how to install it."""
    try:
        import av
    except ImportError:
        raise UserInputError(MISSING_VIDEO_LIBRARIES) from None
    return av


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


class VideoSource:
    """Frames to read: a video file or a folder of frames (see :func:`open_video`).

    Attributes:
        path: The source as given.
        fps: Frames per second, exact (``Fraction(30000, 1001)``).
        frame_count: How many frames it has.
        size: ``(height, width)`` of the frames as decoded (rotation metadata is ignored).
        has_audio: Whether it has an audio stream (a folder never has).
        is_folder: Whether it is a folder of frames.
    """

    path: str
    fps: Fraction
    frame_count: int
    size: tuple[int, int]
    has_audio: bool
    is_folder: bool

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, Image.Image]]:
        """Yield the frames at ``indices``, in one pass from the first to the last.

        Only the frame being yielded is held in memory; frames between the indices are decoded
        and dropped.

        Args:
            indices: Strictly ascending frame indices (as :func:`select_frames` gives).

        Yields:
            ``(index, frame)`` pairs, the frame as an RGB image.

        Raises:
            ValueError: If the indices do not ascend.
            IndexError: If an index is not a frame of the video.
        """
        previous = -1
        for index in indices:
            if index <= previous:
                raise ValueError(f"Frame indices must ascend, got {index} after {previous}.")
            previous = index
            yield index, self.frame(index)

    def frame(self, index: int) -> Image.Image:
        """The frame at ``index`` as an RGB image.

        Reading ``i, i + 1, ...`` continues where the last call stopped; only going backwards
        starts the decoder again from the first frame.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the open file, if any; the source cannot be read afterwards."""

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.frame_count:
            raise IndexError(f"Frame {index} is not in {self.path}, which has frames 0 to "
                             f"{self.frame_count - 1}.")

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        height, width = self.size
        return (f"{type(self).__name__}({self.path!r}, {self.frame_count} frames of "
                f"{width}x{height} px at {self.fps} fps)")


class VideoFile(VideoSource):
    """A video file, decoded by PyAV with one decoder kept open between calls.

    Attributes:
        restarts: How many times the decoder went back to the first frame (reading backwards);
            sequential reading never adds to it.
    """

    def __init__(self, path: Path, shown: str, fps: Optional[Fraction] = None) -> None:
        self._av = _import_av()
        self._file = path
        self.path = shown
        self.is_folder = False
        self.restarts = 0
        self._container = _open_container(self._av, path, shown)
        try:
            if not self._container.streams.video:
                raise UserInputError(f"The file {shown} has no video stream (no frames); give a "
                                     f"video file or a folder of frames.")
            stream = self._container.streams.video[0]
            self.has_audio = bool(self._container.streams.audio)
            rate = fps if fps is not None else stream_rate(stream)
            if rate is None:
                raise UserInputError(f"The video {shown} has no frame rate; give one with "
                                     f"--data.fps.")
            self.fps = rate
            self._start_decoding()
            first = self._next_frame()
            if first is None:
                raise UserInputError(f"The video {shown} has no frames that decode (empty or "
                                     f"truncated).")
            self._last: tuple[int, Any] = (0, first)
            self.size = (first.height, first.width)
            # The container's count is in its header; where it is missing (WebM, Matroska,
            # some GIFs hold none), only decoding every frame tells.
            header_count = stream.frames or 0
            self.frame_count = (header_count if header_count > 0
                                else _cached_frame_count(self._av, path, shown))
        except BaseException:
            self._container.close()
            raise

    def frame(self, index: int) -> Image.Image:
        """The frame at ``index`` (see :meth:`VideoSource.frame`)."""
        self._check_index(index)
        if self._last[0] == index:
            return self._last[1].to_image()
        if index < self._next_index:
            self._restart()
        while True:
            decoded = self._next_frame()
            if decoded is None:
                raise UserInputError(f"The video {self.path} ended after {self._next_index} "
                                     f"frames, though its header says {self.frame_count}; it "
                                     f"may be truncated.")
            if self._next_index - 1 == index:
                self._last = (index, decoded)
                return decoded.to_image()

    def close(self) -> None:
        """Close the file."""
        self._container.close()

    def _start_decoding(self) -> None:
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is the cost of reading
        self._decoded = self._container.decode(stream)
        self._next_index = 0

    def _restart(self) -> None:
        # Reopening is the one way back that every container and codec supports exactly;
        # seeking lands on a keyframe whose index the container may not know.
        self._container.close()
        self._container = _open_container(self._av, self._file, self.path)
        self._start_decoding()
        self.restarts += 1

    def _next_frame(self) -> Any:
        """The next decoded ``av.VideoFrame``, or None at the end of the stream."""
        try:
            decoded = next(self._decoded, None)
        except (self._av.FFmpegError, OSError) as error:
            raise UserInputError(f"Cannot decode frame {self._next_index} of {self.path} "
                                 f"({_one_line(error)}).") from None
        if decoded is not None:
            self._next_index += 1
        return decoded


class FrameFolder(VideoSource):
    """A folder of frames: its image files in natural order (``frame2`` before ``frame10``).

    Attributes:
        files: The frames' files, in order.
    """

    def __init__(self, folder: Path, shown: str, fps: Fraction) -> None:
        self.path = shown
        self.is_folder = True
        self.has_audio = False
        self.fps = fps
        self.files = sorted((entry for entry in folder.iterdir() if _is_frame_file(entry)),
                            key=lambda entry: natural_key(entry.name))
        if not self.files:
            listed = ", ".join(sorted(IMAGE_SUFFIXES))
            raise UserInputError(f"The folder {shown} has no frames: no image files ({listed}) "
                                 f"in it.")
        self.frame_count = len(self.files)
        # Every frame's size from its header, before any optimizing starts: a frame that differs
        # would otherwise stop the run at that frame, hours in.
        self.size = _header_size(self.files[0])
        for file in self.files[1:]:
            self._check_size(file, _header_size(file))

    def frame(self, index: int) -> Image.Image:
        """The frame at ``index``, read from its file."""
        self._check_index(index)
        image = load_image(self.files[index])
        self._check_size(self.files[index], (image.height, image.width))
        return image

    def _check_size(self, file: Path, size: tuple[int, int]) -> None:
        if size != self.size:
            raise UserInputError(
                f"The frames in {self.path} differ in size: {file.name} is {_wxh(size)} px, "
                f"{self.files[0].name} is {_wxh(self.size)} px; give frames of one size.")


def open_video(source: Union[str, "os.PathLike[str]"],
               fps: Optional[Union[float, Fraction, str]] = None) -> VideoSource:
    """Open a video file or a folder of frames for reading.

    Args:
        source: A video file (mp4, webm, mov, mkv, avi, gif, ... anything the FFmpeg inside PyAV
            reads) or a folder of image files, taken in natural order of their names.
        fps: Frames per second. A folder's rate (default :data:`DEFAULT_FOLDER_FPS`); for a file,
            a rate that replaces the file's own (for a file that has none).

    Returns:
        The source, open; close it (or use it in a ``with`` block) when done.

    Raises:
        UserInputError: If the path is missing, not a video FFmpeg can decode, has no video
            frames or no frame rate, or is a folder with no images or images of mixed sizes;
            if ``fps`` is not a positive, finite number; or if PyAV is not installed.
    """
    rate = check_fps(fps)
    shown = os.fspath(source)
    path = Path(source)
    if path.is_dir():
        return FrameFolder(path, shown, rate if rate is not None else Fraction(DEFAULT_FOLDER_FPS))
    _check_video_file(path, shown)
    return VideoFile(path, shown, rate)


def probe_video(path: Union[str, "os.PathLike[str]"]) -> tuple[int, Fraction]:
    """Read a video back as a player would: count its frames by decoding them all.

    The check that a written video plays: its frame count and rate equal what was written.

    Args:
        path: A video file.

    Returns:
        ``(frame_count, fps)``: the frames that decode, and the stream's rate.

    Raises:
        UserInputError: As :func:`open_video` for a file.
    """
    av = _import_av()
    shown = os.fspath(path)
    _check_video_file(Path(path), shown)
    with _open_container(av, Path(path), shown) as container:
        if not container.streams.video:
            raise UserInputError(f"The file {shown} has no video stream (no frames).")
        rate = stream_rate(container.streams.video[0])
    if rate is None:
        raise UserInputError(f"The video {shown} has no frame rate; give one with --data.fps.")
    return _count_frames(av, Path(path), shown), rate


def stream_rate(stream: Any) -> Optional[Fraction]:
    """A PyAV video stream's frame rate: its average rate, else FFmpeg's guess; None if neither."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return None


def check_fps(fps: Optional[Union[float, Fraction, str]]) -> Optional[Fraction]:
    """A frame rate as an exact fraction (None stays None).

    Args:
        fps: Frames per second: a number, a Fraction, or a string like ``"30000/1001"``.

    Raises:
        UserInputError: If it is not a positive, finite number.
    """
    if fps is None:
        return None
    try:
        if isinstance(fps, bool):
            raise TypeError
        number = float(Fraction(fps) if isinstance(fps, str) else fps)
    except (TypeError, ValueError, ZeroDivisionError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise UserInputError(f"The frame rate must be a positive number of frames per second, "
                             f"got {fps}.")
    if isinstance(fps, (Fraction, int, str)):
        return Fraction(fps)
    return Fraction(number).limit_denominator(_MAX_RATE_DENOMINATOR) or Fraction(number)


def select_frames(frame_count: int, frames: FrameRange = None, every_n: int = 1) -> list[int]:
    """The indices of the frames to use: a range of them, thinned.

    Args:
        frame_count: How many frames the video has.
        frames: None for all; else ``[start, stop]`` or the string ``"start:stop"``, with
            Python's slice meaning: from ``start`` up to but not including ``stop``, negative
            counting from the end, an empty or None end meaning the video's first or last frame
            (``"10:"``, ``":48"``).
        every_n: Keep every n-th frame of the range, starting with its first.

    Returns:
        Ascending frame indices.

    Raises:
        UserInputError: If the range is malformed, reaches outside the video or holds no frame,
            or ``every_n`` is not a whole number of at least 1.
    """
    if isinstance(every_n, bool) or not isinstance(every_n, (int, np.integer)) or every_n < 1:
        raise UserInputError(f"--data.every_n must be a whole number of at least 1, got "
                             f"{every_n!r}.")
    start, stop = _parse_range(frames)
    shown = f"{'' if start is None else start}:{'' if stop is None else stop}"
    for end in (start, stop):
        if end is not None and not -frame_count <= end <= frame_count:
            raise UserInputError(f"--data.frames {shown} reaches outside the video's "
                                 f"{frame_count} frames; give a range within 0:{frame_count}.")
    indices = list(range(frame_count))[start:stop:every_n]
    if not indices:
        raise UserInputError(f"--data.frames {shown} holds no frames of the video's "
                             f"{frame_count}; give a start before the stop.")
    return indices


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that puts ``frame2`` before ``frame10``: digit runs compare as numbers."""
    parts = re.split(r"(\d+)", name)
    # re.split alternates text and digits, so the same position always holds the same type.
    return (tuple(int(part) if position % 2 else part.lower()
                  for position, part in enumerate(parts)), name)


def _parse_range(frames: FrameRange) -> tuple[Optional[int], Optional[int]]:
    if frames is None:
        return None, None
    if isinstance(frames, str):
        match = re.fullmatch(r"\s*(-?\d+)?\s*:\s*(-?\d+)?\s*", frames)
        if match is None:
            raise UserInputError(f"--data.frames must be 'start:stop' (e.g. '0:48'), got "
                                 f"'{frames}'.")
        return tuple(None if end is None else int(end) for end in match.groups())  # type: ignore
    ends = list(frames) if isinstance(frames, Sequence) else None
    if (ends is None or len(ends) != 2 or any(
            end is not None and (isinstance(end, bool) or not isinstance(end, (int, np.integer)))
            for end in ends)):
        raise UserInputError(f"--data.frames must be [start, stop] or 'start:stop', got "
                             f"{frames!r}.")
    return (None if ends[0] is None else int(ends[0]), None if ends[1] is None else int(ends[1]))


def _check_video_file(path: Path, shown: str) -> None:
    if not path.exists():
        raise UserInputError(f"Video not found: {shown}.")
    if not path.is_file():
        # A named pipe or a device could block FFmpeg forever.
        raise UserInputError(f"Not a regular file: {shown}; give a video file or a folder of "
                             f"frames.")


def _open_container(av: Any, path: Path, shown: str) -> Any:
    try:
        return av.open(str(path), mode="r")
    except PermissionError:
        raise UserInputError(f"Cannot read video file (permission denied): {shown}.") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"Not a video FFmpeg can read: {shown} ({_one_line(error)}).") \
            from None


# Decoded frame counts, by file and its size and time of change: counting decodes every frame.
_FRAME_COUNTS: dict[tuple[str, int, int], int] = {}


def _cached_frame_count(av: Any, path: Path, shown: str) -> int:
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _FRAME_COUNTS:
        _FRAME_COUNTS[key] = _count_frames(av, path, shown)
    return _FRAME_COUNTS[key]


def _count_frames(av: Any, path: Path, shown: str) -> int:
    with _open_container(av, path, shown) as container:
        if not container.streams.video:
            return 0
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        count = 0
        try:
            for _ in container.decode(stream):
                count += 1
        except (av.FFmpegError, OSError) as error:
            raise UserInputError(f"Cannot decode frame {count} of {shown} "
                                 f"({_one_line(error)}).") from None
    return count


def _is_frame_file(entry: Path) -> bool:
    # Hidden files include the half-written ``.name.partial-<pid>`` files of datamodules.files.
    return (entry.suffix.lower() in IMAGE_SUFFIXES and not entry.name.startswith(".")
            and entry.is_file())


def _header_size(file: Path) -> tuple[int, int]:
    """``(height, width)`` of an image as load_image returns it, read from the header only."""
    try:
        with Image.open(file) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        image = load_image(file)  # raises the sentence that says what is wrong with the file
        return image.height, image.width
    if orientation in _QUARTER_TURN_ORIENTATIONS:
        width, height = height, width
    return height, width


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()).rstrip(".") or type(error).__name__


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _VideoFormat:
    """How a video with a given suffix is written."""

    container: str  # FFmpeg's muxer: the temporary name's suffix does not say it
    codec: str
    pixel_format: str
    options: dict[str, str] = field(default_factory=dict)
    audio_codec: Optional[str] = None
    audio_rate: Optional[int] = None  # None: the source's rate
    even_size: bool = False  # yuv420p halves the chroma planes: H.264 refuses odd sides


# x264's CRF 18 is close to visually lossless; libvpx needs b=0 for constant quality, and
# cpu-used 4 with row threads keeps VP9 within a few times x264's time.
_H264 = dict(codec="libx264", pixel_format="yuv420p", options={"crf": "18"}, audio_codec="aac",
             even_size=True)
_FORMATS = {
    ".mp4": _VideoFormat("mp4", **_H264),
    ".mov": _VideoFormat("mov", **_H264),
    ".mkv": _VideoFormat("matroska", **_H264),
    ".webm": _VideoFormat("webm", "libvpx-vp9", "yuv420p",
                          {"crf": "24", "b": "0", "cpu-used": "4", "row-mt": "1"},
                          audio_codec="libopus", audio_rate=48000),  # Opus runs at 48 kHz
    # Each frame gets its own 256-colour palette: FFmpeg's fixed rgb8 palette bands gradients.
    ".gif": _VideoFormat("gif", "gif", "pal8"),
}


def writable_suffixes() -> list[str]:
    """The video suffixes :func:`write_video` can write with the FFmpeg inside PyAV here."""
    av = _import_av()
    return [suffix for suffix, spec in _FORMATS.items() if _can_write(av, spec)]


def check_video_file_name(name: str) -> None:
    """Refuse, in one sentence, a video file name that is a path or whose suffix
    :func:`write_video` does not write (checked before a run, not after its frames)."""
    if not isinstance(name, str) or Path(name).name != name or not Path(name).suffix:
        raise UserInputError(f"The video's file name must be a file name with a suffix "
                             f"(video.mp4), got {name!r}.")
    if Path(name).suffix.lower() not in _FORMATS:
        raise UserInputError(f"Cannot write a {Path(name).suffix} video; use one of "
                             f"{', '.join(_FORMATS)}.")


def write_video(frames: Iterable[Picture], path: Union[str, "os.PathLike[str]"],
                fps: Union[Fraction, float], audio: Optional[tuple[str, float, float]] = None,
                overwrite: bool = False) -> Path:
    """Write frames as a video file, whole or not at all.

    The video goes to a hidden temporary file beside ``path`` that is renamed into place when
    complete (see :func:`datamodules.files.write_file`): a kill leaves no half-written video.

    Args:
        frames: RGB images (or image files) of one size, in order; read one at a time.
        path: The video file; its suffix picks the codec: ``.mp4``, ``.mov``, ``.mkv`` H.264
            (an odd width or height gets one more column or row, a copy of the edge, as
            H.264's yuv420p needs even sides), ``.webm`` VP9, ``.gif`` GIF.
        fps: Frames per second (GIF keeps delays in hundredths of a second: other rates read
            back rounded, e.g. 24 as 25).
        audio: ``(source, start_seconds, end_seconds)``: the first audio stream of ``source``
            between those times (from its first video frame), re-encoded (AAC in mp4/mov/mkv,
            Opus in webm) so that a clip cut from a video keeps its own sound in sync. None, a
            source without audio, or a GIF: no audio.
        overwrite: Replace an existing file; by default it is never touched.

    Returns:
        ``path``.

    Raises:
        UserInputError: If the suffix has no encoder here (the sentence names those that work),
            the rate is not positive, there are no frames or they differ in size, the file
            exists (without ``overwrite``), the folder cannot be written, the audio source
            cannot be read, or PyAV is missing.
    """
    av = _import_av()
    path = Path(path)
    spec = _FORMATS.get(path.suffix.lower())
    if spec is None or not _can_write(av, spec):
        working = " ".join(writable_suffixes()) or "none"
        raise UserInputError(f"Cannot write video {path}: no encoder here for "
                             f"'{path.suffix or path.name}'; use a suffix that works: {working}.")
    rate = check_fps(fps)
    if rate is None:
        raise UserInputError(f"Writing {path} needs a frame rate.")
    if audio is not None:
        _check_audio_times(audio)

    def write(handle: Any) -> None:
        container = av.open(handle, mode="w", format=spec.container)
        try:
            _encode(av, container, spec, iter(frames), rate, audio, path)
        except BaseException:
            try:
                container.close()
            except (av.FFmpegError, OSError):
                pass  # the error being raised says more than this one
            raise
        container.close()

    try:
        return write_file(path, write, replace=overwrite, what="video file")
    except av.FFmpegError as error:
        # An encoder that refused its settings or frames (write_file turns OS errors, e.g. a full
        # disk, into sentences itself, and has removed the temporary file).
        raise UserInputError(f"Cannot write video {path} ({_one_line(error)}).") from None


def _can_write(av: Any, spec: _VideoFormat) -> bool:
    return _has_encoder(av, spec.codec) and spec.container in av.formats_available


def _has_encoder(av: Any, codec: str) -> bool:
    try:
        av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):  # UnknownCodecError is a ValueError
        return False
    return True


def _check_audio_times(audio: tuple[str, float, float]) -> None:
    _, start, end = audio
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise UserInputError(f"The audio to cut must run from a start to a later end, in seconds "
                             f"from zero, got {start} to {end}.")


def _encode(av: Any, container: Any, spec: _VideoFormat, frames: Iterator[Picture],
            rate: Fraction, audio: Optional[tuple[str, float, float]], path: Path) -> None:
    """Encode ``frames`` (and the audio) into the open output ``container``."""
    first = next(frames, None)
    if first is None:
        raise UserInputError(f"No frames to write to {path}.")
    first_image = _rgb(first)
    size = (first_image.height, first_image.width)
    stream = container.add_stream(spec.codec, rate=rate, options=dict(spec.options))
    stream.height, stream.width = (side + side % 2 if spec.even_size else side for side in size)
    stream.pix_fmt = spec.pixel_format
    if audio is not None and spec.audio_codec is not None:
        # All the sound first: the muxer holds it (small) until the video catches up, instead of
        # holding the video's packets.
        _encode_audio(av, container, spec, audio)
    pictures = _chain_first(first_image, frames)
    for index, picture in enumerate(pictures):
        image = picture if index == 0 else _rgb(picture)
        if (image.height, image.width) != size:
            raise UserInputError(f"Frame {index} to write to {path} is {image.width}x"
                                 f"{image.height} px, but frame 0 is {_wxh(size)} px; give "
                                 f"frames of one size.")
        frame = _video_frame(av, image, spec)
        frame.pts = index  # the stream's time base is 1 / rate: one tick a frame
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _chain_first(first: Image.Image, rest: Iterator[Picture]) -> Iterator[Picture]:
    yield first
    yield from rest


def _rgb(picture: Picture) -> Image.Image:
    if isinstance(picture, Image.Image):
        return picture if picture.mode == "RGB" else picture.convert("RGB")
    return load_image(picture)


def _video_frame(av: Any, image: Image.Image, spec: _VideoFormat) -> Any:
    if spec.pixel_format == "pal8":
        paletted = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        colours = np.asarray(paletted.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
        palette = np.zeros((256, 4), dtype=np.uint8)  # ARGB, as PyAV's pal8 takes it
        palette[:, 0] = 255
        palette[: len(colours), 1:] = colours
        return av.VideoFrame.from_ndarray((np.asarray(paletted), palette), format="pal8")
    pixels = np.asarray(image)
    if spec.even_size:
        pixels = np.pad(pixels, ((0, image.height % 2), (0, image.width % 2), (0, 0)),
                        mode="edge")
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")


def _encode_audio(av: Any, container: Any, spec: _VideoFormat,
                  audio: tuple[str, float, float]) -> None:
    """Cut ``audio``'s stretch of sound from its source and encode it into ``container``."""
    source, start, end = audio
    shown = os.fspath(source)
    _check_video_file(Path(source), shown)
    with _open_container(av, Path(source), shown) as reader:
        if not reader.streams.audio:
            return  # a silent source gives a silent video
        input_stream = reader.streams.audio[0]
        rate = spec.audio_rate or input_stream.codec_context.sample_rate or 48000
        layout = input_stream.codec_context.layout.name
        if spec.audio_codec == "libopus" and input_stream.codec_context.layout.nb_channels > 2:
            layout = "stereo"  # Opus past two channels needs a channel mapping: fold them down
        output_stream = container.add_stream(spec.audio_codec, rate=rate)
        output_stream.layout = layout
        # Seconds are counted from the source's first video frame, as frame i is at i / fps.
        origin = _start_seconds(reader.streams.video[0] if reader.streams.video else input_stream)
        first_sample, end_sample = round(start * rate), round(end * rate)
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        written = 0  # samples encoded, from first_sample on
        position: Optional[int] = None  # the source sample the next resampled one stands for

        def emit(samples: np.ndarray) -> None:
            nonlocal written
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            frame.time_base = Fraction(1, rate)
            frame.pts = written
            written += samples.shape[1]
            for packet in output_stream.encode(frame):
                container.mux(packet)

        def take(samples: np.ndarray) -> None:
            nonlocal position
            assert position is not None
            begin = position
            position += samples.shape[1]
            expected = first_sample + written
            gap = min(begin, end_sample) - expected
            if gap > 0:  # the source's sound starts late or skips: silence keeps the sync
                emit(np.zeros((samples.shape[0], gap), dtype=np.float32))
            low = max(begin, first_sample + written) - begin
            high = min(position, end_sample) - begin
            if high > low:
                emit(samples[:, low:high])

        try:
            _seek_before(av, reader, input_stream, origin + start)
            for decoded in reader.decode(input_stream):
                stamped = (None if decoded.pts is None or decoded.time_base is None
                           else round((float(decoded.pts * decoded.time_base) - origin) * rate))
                # Count samples from the first timestamp on; follow a timestamp only where the
                # sound jumps (the resampler's own delay of a few samples is not a jump).
                if position is None or (stamped is not None
                                        and abs(stamped - position) > rate // 10):
                    position = stamped if stamped is not None else 0
                for piece in resampler.resample(decoded):
                    take(piece.to_ndarray())
                if position >= end_sample:
                    break
            else:
                for piece in resampler.resample(None):
                    if position is not None:
                        take(piece.to_ndarray())
        except (av.FFmpegError, OSError) as error:
            raise UserInputError(f"Cannot read the audio of {shown} ({_one_line(error)}).") \
                from None
        # A sound that ends before the clip does: silence to the end, so the tracks end together.
        channels = av.AudioLayout(layout).nb_channels
        while first_sample + written < end_sample:
            emit(np.zeros((channels, min(end_sample - first_sample - written, rate)), np.float32))
        for packet in output_stream.encode(None):
            container.mux(packet)


def _start_seconds(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _seek_before(av: Any, reader: Any, stream: Any, seconds: float) -> None:
    """Skip most of the sound before ``seconds``: a clip from a long video's end decodes less."""
    margin = 1.0  # seeking lands on a packet at or before the target; decoding covers the rest
    if seconds - margin <= 0 or stream.time_base is None:
        return
    try:
        reader.seek(int((seconds - margin) / stream.time_base), stream=stream, backward=True)
    except (av.FFmpegError, OSError):
        pass  # a source that cannot seek is read from its start: slower, as exact

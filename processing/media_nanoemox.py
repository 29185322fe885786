# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Decoding of raw video and audio with PyAV: a few frames spread over a clip, and fixed-length audio clips.

Work and memory are bounded whatever the input: frames are converted to RGB at a capped resolution only when they
are kept, long files are read by seeking rather than decoded start to finish, and a stream without a known length
keeps an evenly thinned buffer instead of every frame.
"""

import io
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from transformers.utils import logging

logger = logging.get_logger(__name__)

# A gap this long between two wanted frames (or audio clips) is crossed with a seek instead of decoding through it.
SEEK_GAP_SECONDS = 20.0
# Frames further than this before the next wanted time are decoded only if other frames reference them.
SKIP_WINDOW_SECONDS = 0.5
# A clip is decoded in two parts at once (two threads, from two keyframes) only when that cuts the longest part's
# span to this fraction of the whole or less; otherwise one pass.
SPLIT_MAX_SHARE = 0.75
# Upper bound on frames held while reading a stream whose length the container does not state.
MAX_BUFFERED_FRAMES = 64
# Upper bound on the audio one `decode_audio` call decodes in full (without spans), whatever the container states.
MAX_FULL_AUDIO_SECONDS = 300.0


class MediaError(ValueError):
    """A media input that cannot be used; the message names the input and the reason."""


class MediaNotFoundError(MediaError, FileNotFoundError):
    """A media path that does not exist."""


class MediaDecodeError(MediaError):
    """A file or buffer that is not decodable media (corrupt, truncated beyond use, not a media file)."""


@dataclass
class DecodedVideo:
    """
    Frames sampled from a clip.

    Attributes:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, `uint8` RGB): at working resolution.
        scale (`float`): original pixels per working pixel (multiply working coordinates by it).
        original_size (`tuple[int, int]`): `(height, width)` of the source frames.
        timestamps (`np.ndarray` of shape `(num_frames,)`): seconds of each frame, NaN when unknown.
    """

    frames: np.ndarray
    scale: float
    original_size: tuple[int, int]
    timestamps: np.ndarray


def describe_source(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def open_container(source) -> av.container.InputContainer:
    """Opens a path or an in-memory file for reading, translating PyAV's errors into typed ones."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise MediaNotFoundError(f"{path}: no such file.")
        if path.stat().st_size == 0:
            raise MediaDecodeError(f"{path}: the file is empty.")
        target = str(path)
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise MediaDecodeError("The media buffer is empty.")
        target = io.BytesIO(bytes(source))
    else:
        raise TypeError(f"Expected a media path or bytes, got {type(source).__name__}.")
    try:
        return av.open(target, mode="r", metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise MediaDecodeError(f"{describe_source(source)}: not a readable media file ({error}).") from None


def _working_size(height: int, width: int, max_side: int) -> tuple[int, int, float]:
    scale = max(height, width) / max_side if max(height, width) > max_side else 1.0
    # Even sizes keep swscale's chroma subsampling exact.
    return max(2, round(height / scale) // 2 * 2), max(2, round(width / scale) // 2 * 2), scale


def _stream_duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def scan_stream_length(source, kind: str) -> tuple[float | None, int]:
    """
    The true length of the first `kind` ("video" or "audio") stream, read from its packets' timestamps without
    decoding them (memory stays flat; the work is a read of the file): `(seconds or None, packets holding data)`.
    For containers that state no duration (live Matroska/WebM, some streamed files).
    """
    with open_container(source) as container:
        streams = getattr(container.streams, kind)
        if not streams:
            return None, 0
        stream = streams[0]
        last, count = None, 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                count += 1
                if packet.pts is None or packet.time_base is None:
                    continue
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                last = end if last is None else max(last, end)
        except (av.FFmpegError, OSError):
            pass  # a damaged tail: the length is what was read before it
    # Seconds from time zero to the end of the last packet, as a stated duration counts them.
    return (None if last is None else max(last, 0.0)), count


def _check_no_data(source, kind: str) -> None:
    """
    Called when the first `kind` stream gave nothing: raises [`MediaDecodeError`] when that stream holds data that
    does not decode (zeroed or truncated payload, animated WebP) or when no stream of the file holds any data (a
    file truncated after its header). Returns when the stream is simply empty next to other data (then the caller
    goes on without that modality).
    """
    found_here = found_any = False
    with open_container(source) as container:
        index = getattr(container.streams, kind)[0].index
        try:
            for packet in container.demux():
                if packet.size > 0:
                    found_any = True
                    if packet.stream.index == index:
                        found_here = True
                        break
        except (av.FFmpegError, OSError):
            found_here = found_any = True  # something is there, and it is damaged
    if found_here:
        raise MediaDecodeError(f"{describe_source(source)}: the {kind} stream holds data but nothing of it decodes.")
    if not found_any:
        raise MediaDecodeError(f"{describe_source(source)}: the file holds no media data (truncated after its header?).")


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Applies a display matrix's rotation (degrees counter-clockwise, as FFmpeg reports it) to an `(H, W, 3)` frame,
    so it comes out the way players show it."""
    turns = round(rotation / 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=turns)) if turns else image


def _frame_rotation(frame) -> int:
    try:
        return int(frame.rotation or 0)
    except (AttributeError, ValueError, TypeError):
        return 0


def sample_indices(num_available: int, num_frames: int) -> np.ndarray:
    """`num_frames` indices spread uniformly from the start (as the benchmarks' loaders do); the last repeats when
    fewer frames exist."""
    if num_available >= num_frames:
        return np.floor(np.arange(num_frames) * num_available / num_frames).astype(int)
    return np.minimum(np.arange(num_frames), num_available - 1)


def decode_video(source, num_frames: int = 8, max_side: int = 1280) -> DecodedVideo | None:
    """
    Samples `num_frames` RGB frames uniformly over a video file (path or bytes): frame `i` is the one on screen at
    `i / num_frames` of the duration; a clip with fewer frames gives all of them with the last repeated.

    Returns `None` when the container has no video stream or the stream yields no frame (the caller proceeds with
    the other modalities). Raises [`MediaNotFoundError`] / [`MediaDecodeError`] for missing or undecodable input.
    """
    with open_container(source) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        duration = _stream_duration(container, stream)
        rate = float(stream.average_rate) if stream.average_rate else 0.0
        estimated_frames = stream.frames or (duration * rate if duration else 0)
        if duration is None:
            # The container states no length (live Matroska/WebM): find it from the packets, then sample by time
            # as for any other file, so the work is bounded by the 8 sampled frames and not by the stream's length.
            duration, estimated_frames = scan_stream_length(source, "video")
        try:
            if duration and estimated_frames > 2 * num_frames and stream.time_base is not None:
                picked = _decode_in_two(source, container, stream, [i * duration / num_frames for i in range(num_frames)])
            else:
                # Short clip or unknown length: read it through (bounded) and index the frames.
                kept = _decode_thinned(container, stream)
                picked = [kept[i] for i in sample_indices(len(kept), num_frames)] if kept else []
        except av.FFmpegError as error:
            raise MediaDecodeError(
                f"{describe_source(source)}: the video stream cannot be decoded ({error})."
            ) from None
        if not picked:
            _check_no_data(source, "video")
            return None
        height, width = picked[0].height, picked[0].width
        work_height, work_width, _ = _working_size(height, width, max_side)
        rotation = _frame_rotation(picked[0])
        frames = np.stack(
            [
                _upright(frame.to_ndarray(format="rgb24", width=work_width, height=work_height), rotation)
                for frame in picked
            ]
        )
        if round(rotation / 90) % 2:
            height, width = width, height
        timestamps = np.array([frame.time if frame.time is not None else math.nan for frame in picked])
        return DecodedVideo(frames, width / frames.shape[2], (height, width), timestamps)


def _decode_in_two(source, container, stream, targets: list[float]) -> list:
    """
    The frames on screen at `targets` (see `_TimedFramePicker`; fewer only when the stream has none), for a clip
    read through without seeking, with the later targets decoded at the same time on a second thread from a
    keyframe (`_split_point`), so that two cores decode at once: about 40 % less time on a 16 s 720p clip with
    keyframes 10 s apart.

    The frames are those of one pass by construction: decoding from a keyframe reproduces every frame after it, and
    the second part is used only when it ran cleanly and its first frame starts at or before its first target.
    Otherwise (the first part ran out before the cut, the second part met damage or an error) the one pass goes on
    through the later targets, so frames, warnings and errors are exactly those of one pass.
    """
    first = _TimedFramePicker(container, stream)
    split = _split_point(source, stream, targets)
    if split is None:
        return _pick_each(first, targets)
    index, second = split
    # One decoding thread per part: the two parts keep two cores busy, and frame threads on top cost more than they
    # give (measured on the 720p clip of benchmarks/bench_processor.py).
    stream.thread_count = second.streams.video[0].thread_count = 1
    later: dict = {}
    stop = threading.Event()

    def decode_later():
        try:
            with second:
                picker = _TimedFramePicker(second, second.streams.video[0], stop, warn=False)
                frames = _pick_each(picker, targets[index:])
        except Exception:
            return  # the one pass goes on instead, and meets the same error itself
        starts = frames[0].time if frames else None
        if not picker.reader.damaged and starts is not None and starts <= targets[index] + 1e-6:
            later["frames"] = frames

    worker, started = threading.Thread(target=decode_later, name="nanoemox-video-decode", daemon=True), False
    try:
        worker.start()
        started = True
        picked = _pick_each(first, targets[:index])
    except BaseException:
        stop.set()  # the first part failed: the second part's frames are not needed
        raise
    finally:
        # No thread outlives the call; the worker closes its container itself.
        if started:
            worker.join()
        else:
            second.close()
    if len(picked) < index:  # no frame at all
        return picked
    if not first.ended and len(later.get("frames", ())) == len(targets) - index:
        return picked + later["frames"]
    return picked + _pick_each(first, targets[index:])


def _pick_each(picker, targets: list[float]) -> list:
    """`picker.pick` of each target in turn, stopping at the first target with no frame."""
    frames = []
    for target in targets:
        if (frame := picker.pick(target)) is None:
            break
        frames.append(frame)
    return frames


def _split_point(source, stream, targets: list[float]):
    """
    Where to cut `targets` for `_decode_in_two`: `(index, container)`, the container a second opening of `source`,
    already sought to the keyframe at or before `targets[index]`; the cut is the one that best balances the spans
    the two parts decode (`[0, targets[index - 1]]` and `[keyframe, targets[-1]]`). `None` when targets are far
    enough apart to be sought to anyway, when no cut shortens the longer part to `SPLIT_MAX_SHARE` of the whole, or
    when the file cannot be sought (the demuxer does not land on a keyframe).
    """
    if len(targets) < 2 or max(b - a for a, b in zip(targets, targets[1:])) > SEEK_GAP_SECONDS:
        return None
    time_base = stream.time_base
    try:
        second = open_container(source)
    except MediaError:
        return None
    best, best_span = None, SPLIT_MAX_SHARE * targets[-1]
    try:
        probe = second.streams.video[0]
        for index in range(1, len(targets)):
            keyframe = _keyframe_before(second, probe, targets[index], time_base)
            if keyframe is not None and max(targets[index - 1], targets[-1] - keyframe) < best_span:
                best, best_span = index, max(targets[index - 1], targets[-1] - keyframe)
        if best is not None:
            second.seek(int(targets[best] / time_base), stream=probe, backward=True, any_frame=False)
            return best, second
    except (av.FFmpegError, OSError):
        pass
    second.close()
    return None


def _keyframe_before(container, stream, target: float, time_base) -> float | None:
    """Seconds of the keyframe a backward seek to `target` lands on (None when it lands elsewhere)."""
    container.seek(int(target / time_base), stream=stream, backward=True, any_frame=False)
    for packet in container.demux(stream):
        if packet.pts is None or not packet.is_keyframe:
            return None
        return float(packet.pts * time_base)
    return None


class _TimedFramePicker:
    """
    One forward pass over a video stream giving, target by target (in increasing time), the frame on screen at that
    moment: the last one starting at or before it. Crosses long gaps with a seek. When the stream ends early the
    last frame stands in for later targets (`ended` is then set). `stop` (set by another thread) ends the pass.
    """

    def __init__(self, container, stream, stop: threading.Event | None = None, warn: bool = True):
        self.container, self.stream, self.stop = container, stream, stop
        # The decoding generator gets the shared target, not `self`: no reference cycle keeps a decoder alive.
        self.current = {"target": 0.0}
        self.reader = _FrameReader(_decode_towards(container, stream, self.current, stop), warn)
        self.shown = self.pending = None
        self.ended = False

    def pick(self, target: float):
        """The frame for `target`; None only when the stream has no frame at all."""
        self.current["target"] = target
        shown = self.shown
        if shown is not None and shown.time is not None and target - shown.time > SEEK_GAP_SECONDS:
            stream = self.stream
            self.container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
            self.reader.iterator = _decode_towards(self.container, stream, self.current, self.stop)
            self.shown = self.pending = None
        while True:
            frame = self.pending if self.pending is not None else self.reader.next()
            self.pending = None
            if frame is None:
                self.ended = True
                break
            if frame.time is not None and frame.time > target + 1e-6:
                self.pending = frame  # belongs to a later target
                break
            self.shown = frame
        if self.shown is None:
            self.shown = self.pending  # the stream starts after the target (e.g. a first timestamp above zero)
        return self.shown


def _decode_towards(container, stream, current: dict, stop: threading.Event | None = None):
    """
    Decodes the stream packet by packet, skipping non-reference frames (which nothing else needs) while the packet is
    well before the wanted time `current["target"]`: about half the decoding work of a typical h264 clip. `stop`
    (set by another thread) ends it early.
    """
    codec = stream.codec_context
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    window = max(SKIP_WINDOW_SECONDS, 3 / rate)
    # `demux` ends with an empty packet that flushes the frames still inside the decoder.
    for packet in container.demux(stream):
        if stop is not None and stop.is_set():
            return
        if packet.pts is not None and packet.time_base is not None:
            early = current["target"] - float(packet.pts * packet.time_base) > window
            codec.skip_frame = "NONREF" if early else "DEFAULT"
        elif packet.size == 0:
            codec.skip_frame = "DEFAULT"
        yield from packet.decode()


class _FrameReader:
    """Frames from a decoding iterator; `next()` gives None at the end, and also at a damaged packet mid-stream (a
    truncated download: `damaged` is set, a warning logged, and the frames decoded so far are what there is)."""

    def __init__(self, iterator, warn: bool = True):
        self.iterator, self.warn, self.damaged = iterator, warn, False

    def next(self):
        try:
            return next(self.iterator)
        except StopIteration:
            return None
        except av.error.InvalidDataError:
            self.damaged = True
            if self.warn:
                logger.warning("The video stream is damaged; using the frames decoded before the damage.")
            return None


def _decode_thinned(container, stream) -> list:
    """Reads a stream of unknown length keeping an evenly spaced subset of at most MAX_BUFFERED_FRAMES frames."""
    kept, stride = [], 1
    reader = _FrameReader(container.decode(stream))
    index = 0
    while (frame := reader.next()) is not None:
        if index % stride == 0:
            kept.append(frame)
            if len(kept) > MAX_BUFFERED_FRAMES:
                kept, stride = kept[::2], stride * 2
        index += 1
    return kept


def frames_from_array(frames, max_side: int = 1280) -> DecodedVideo:
    """
    Wraps caller-supplied frames: an array `(num_frames, height, width, 3)` (uint8, or float in [0, 1]) or a list
    of such arrays / PIL images. Every frame is used; the caller chooses which.
    """
    if isinstance(frames, np.ndarray):
        frame_list = list(frames) if frames.ndim == 4 else [frames]
    elif isinstance(frames, (list, tuple)):
        frame_list = [np.asarray(frame) for frame in frames]
    else:
        raise TypeError(f"Expected frames as an array or a list of images, got {type(frames).__name__}.")
    if not frame_list:
        raise MediaError("The list of frames is empty.")
    arrays = []
    for index, frame in enumerate(frame_list):
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = np.repeat(frame[..., None], 3, axis=-1)
        if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
            raise MediaError(f"Frame {index} has shape {frame.shape}; expected (height, width, 3).")
        frame = frame[..., :3]
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise MediaError(f"Frame {index} has shape {frame.shape}: it holds no pixels.")
        if frame.dtype == object or not (np.issubdtype(frame.dtype, np.number) or frame.dtype == bool):
            raise MediaError(f"Frame {index} has dtype {frame.dtype}; expected uint8 or float pixels.")
        if np.issubdtype(frame.dtype, np.inexact) and not np.isfinite(frame).all():
            raise MediaError(f"Frame {index} contains NaN or infinite values.")
        if frame.dtype != np.uint8:
            frame = np.clip(frame.astype(np.float32) * (255.0 if frame.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        arrays.append(frame)
    height, width = arrays[0].shape[:2]
    if any(frame.shape[:2] != (height, width) for frame in arrays):
        raise MediaError("All frames of a clip must have the same size.")
    work_height, work_width, scale = _working_size(height, width, max_side)
    if scale != 1.0:
        arrays = [_resize(frame, work_width, work_height) for frame in arrays]
    return DecodedVideo(np.stack(arrays), width / arrays[0].shape[1], (height, width), np.full(len(arrays), math.nan))


IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".webp")


def image_folder_paths(path: Path) -> list[Path]:
    """The images of a frame folder, in name order; `MediaError` when there is none."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MediaError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder.")
    return files


def load_images(files: list[Path]) -> list[np.ndarray]:
    from PIL import Image

    images = []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(np.asarray(image.convert("RGB")))
        except OSError as error:
            raise MediaDecodeError(f"{file}: not a readable image ({error}).") from None
    return images


def decode_frame_folder(path, num_frames: int = 8, max_side: int = 1280) -> DecodedVideo:
    """A clip stored as a folder of frame images (e.g. FERV39k): `num_frames` of them, sampled uniformly by name."""
    files = image_folder_paths(Path(path))
    chosen = [files[i] for i in sample_indices(len(files), num_frames)]
    return frames_from_array(load_images(chosen), max_side)


def load_face_crops(source) -> np.ndarray:
    """
    Face crops made beforehand (e.g. OpenFace's aligned faces): a folder of images (sorted by name, one per frame),
    a `.npy` array `(num_frames, H, W, 3)`, or an array / list of images. Returns `(num_frames, H, W, 3)` uint8.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            source = load_images(image_folder_paths(path))
        elif path.suffix == ".npy" and path.is_file():
            source = np.load(path, allow_pickle=False)
        elif not path.exists():
            raise MediaNotFoundError(f"{path}: no such face folder or file.")
        else:
            raise MediaError(f"{path}: face crops must be a folder of images or a .npy array.")
    return frames_from_array(source, max_side=10**6).frames


def _resize(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return video_frame.to_ndarray(format="rgb24", width=width, height=height)


# ---------------------------------------------------------------------------------------------------------------
# Audio
# ---------------------------------------------------------------------------------------------------------------


def resample_mono(waveform: np.ndarray, sampling_rate: int, target_rate: int) -> np.ndarray:
    """Downmixes `(samples,)` or `(channels, samples)` audio by averaging channels and resamples it (libswresample)."""
    waveform = np.asarray(waveform, dtype=np.float32)
    if waveform.ndim == 2:
        # Accept (channels, samples) or (samples, channels): channels is the short axis.
        waveform = waveform.mean(axis=0 if waveform.shape[0] <= waveform.shape[1] else 1)
    if waveform.ndim != 1:
        raise MediaError(f"Audio must be (samples,) or (channels, samples), got shape {waveform.shape}.")
    if not np.isfinite(waveform).all():
        raise MediaError("The audio contains NaN or infinite samples.")
    if sampling_rate == target_rate or waveform.size == 0:
        return waveform
    if not 1000 <= sampling_rate <= 384000:
        raise MediaError(f"Unsupported sampling rate {sampling_rate} Hz (expected 1 kHz – 384 kHz).")
    frame = av.AudioFrame.from_ndarray(waveform[None, :], format="fltp", layout="mono")
    frame.sample_rate = int(sampling_rate)
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=target_rate)
    chunks = [out.to_ndarray()[0] for out in resampler.resample(frame)]
    chunks += [out.to_ndarray()[0] for out in resampler.resample(None)]
    return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


def decode_audio(
    source,
    target_rate: int = 16000,
    spans: list[tuple[float, float]] | None = None,
    max_seconds: float | None = MAX_FULL_AUDIO_SECONDS,
) -> np.ndarray | None:
    """
    Decodes the first audio stream of a file (path or bytes) to mono float32 at `target_rate`.

    With `spans` (start, end) in seconds only those parts are decoded (seeking across long gaps) and returned
    concatenated. Without, at most `max_seconds` are decoded (`None`: no limit), whatever the container states,
    with a warning when the audio runs longer; callers with long files use `audio_duration` + `clip_spans`.
    Returns `None` when the file has no audio stream; raises [`MediaDecodeError`] when the stream holds data but
    none of it decodes.
    """
    with open_container(source) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        try:
            if spans is None:
                limit = math.inf if max_seconds is None else float(max_seconds)
                waveform = _decode_audio_span(container, stream, 0.0, limit, target_rate)
                if not math.isinf(limit) and waveform.shape[0] >= int(limit * target_rate):
                    logger.warning(
                        f"{describe_source(source)}: the audio runs past {limit:.0f} s; decoding only the first "
                        f"{limit:.0f} s (read long files clip by clip: audio_duration + clip_spans)."
                    )
            else:
                waveform = np.concatenate(
                    [np.zeros(0, np.float32)] + [_decode_audio_span(container, stream, s, e, target_rate) for s, e in spans]
                )
        except av.FFmpegError as error:
            raise MediaDecodeError(
                f"{describe_source(source)}: the audio stream cannot be decoded ({error})."
            ) from None
    if waveform.size == 0:
        _check_no_data(source, "audio")
    return waveform


def _decode_audio_span(container, stream, start: float, end: float, target_rate: int) -> np.ndarray:
    """
    Mono audio from `start` to `end` seconds (at most), at `target_rate`. Decoding stops at `end`, and each decoded
    frame is averaged to mono at once, so memory follows the span, never the file.
    """
    if start > 0:
        try:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            logger.warning("The audio stream cannot seek; decoding through to the span instead.")
    # Interleaved float output: PyAV crashes converting planar frames of 8 or more channels to arrays.
    interleaved = av.AudioResampler(format="flt")
    pieces, rate, first_time, held = [], None, None, 0
    wanted = math.inf
    iterator = container.decode(stream)
    while True:
        try:
            frame = next(iterator)
        except StopIteration:
            break
        except av.error.InvalidDataError:
            logger.warning("The audio stream is damaged; using the audio decoded before the damage.")
            break
        if frame.time is not None and frame.time + frame.samples / max(frame.sample_rate, 1) < start:
            continue  # before the span (a stream that could not seek)
        if rate is not None and frame.sample_rate != rate:
            break  # a mid-stream rate change: keep what is consistent
        rate = frame.sample_rate
        if first_time is None:
            first_time = frame.time if frame.time is not None else 0.0
            wanted = max(0.0, start - first_time) * rate + (end - start) * rate
        for converted in interleaved.resample(frame):
            channels = len(converted.layout.channels)
            mono = converted.to_ndarray().reshape(-1, channels).mean(axis=1, dtype=np.float32)
            pieces.append(mono)
            held += mono.shape[0]
        if held >= wanted or (frame.time is not None and frame.time > end):
            break
    if not pieces:
        return np.zeros(0, np.float32)
    waveform = np.concatenate(pieces)  # mono at the source rate
    offset = max(0, int(round((start - first_time) * rate)))
    stop = waveform.shape[0] if math.isinf(end) else offset + int(round((end - start) * rate))
    return resample_mono(waveform[offset:stop], rate, target_rate)


def audio_duration(source) -> float | None:
    """
    Duration in seconds of the first audio stream, `None` without one. When the container states none (live
    Matroska/WebM) it is read from the packets' timestamps (no decoding), so long files still go clip by clip.
    """
    with open_container(source) as container:
        if not container.streams.audio:
            return None
        duration = _stream_duration(container, container.streams.audio[0])
    if duration is None:
        duration, _ = scan_stream_length(source, "audio")
    return duration


def clip_spans(duration: float, num_clips: int, clip_seconds: float) -> list[tuple[float, float]]:
    """`num_clips` windows of `clip_seconds` spread evenly from 0 to the end (overlapping when the audio is short)."""
    step = max(duration - clip_seconds, 0.0) / max(num_clips - 1, 1)
    return [(i * step, i * step + clip_seconds) for i in range(num_clips)]


def split_clips(waveform: np.ndarray, sampling_rate: int, num_clips: int, clip_seconds: float) -> np.ndarray:
    """
    Cuts mono audio into `(num_clips, clip_samples)` windows spread evenly over it; audio shorter than one clip is
    zero-padded first (so every window is that padded clip).
    """
    clip_samples = int(round(clip_seconds * sampling_rate))
    if waveform.shape[0] < clip_samples:
        waveform = np.pad(waveform, (0, clip_samples - waveform.shape[0]))
    duration = waveform.shape[0] / sampling_rate
    clips = []
    for start, _ in clip_spans(duration, num_clips, clip_seconds):
        offset = min(int(round(start * sampling_rate)), waveform.shape[0] - clip_samples)
        clips.append(waveform[offset : offset + clip_samples])
    return np.stack(clips).astype(np.float32)

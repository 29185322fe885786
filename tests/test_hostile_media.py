"""Hostile media (issue 17, causes 1, 9 and 11's rotation): decoding is bounded by what is sampled, never by what the
container claims; files with no usable media raise `MediaDecodeError`; bad frame arrays raise a clear `MediaError`;
display-matrix rotation is applied. All media are generated here with PyAV."""

import struct
import time
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest

import nanoemox_processing.media_nanoemox as media
from modeling_nanoemox.synthetic import synthetic_voice, write_clip
from nanoemox_processing import MediaDecodeError, MediaError

# ---- media makers (the benchmark replays them) ------------------------------------------------------------------


def write_tone(path, seconds: int, rate: int = 48000, codec: str = "libopus") -> Path:
    """A mono tone in Matroska, one second per frame (cheap to encode: ~5 ms a second of Opus)."""
    t = np.arange(rate) / rate
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        for second in range(seconds):
            frame = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * 220 * (t + second))).astype(np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, second * rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def write_counting_video(path, seconds: int, fps: int = 2, size: int = 32) -> Path:
    """h264 whose frames' gray level is their second (mod 250), so the sampled times can be read back."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"g": str(10 * fps), "preset": "ultrafast"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        image = np.zeros((size, size, 3), np.uint8)
        for index in range(seconds * fps):
            image[:] = (index // fps) % 250
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def remux_live(source, target, container_format: str = "matroska") -> Path:
    """Copies the packets into a live Matroska/WebM file: no duration, no cues (what a recorder's stream looks
    like), written with `options={"live": "1"}`."""
    with (
        av.open(str(source)) as reader,
        av.open(str(target), "w", format=container_format, options={"live": "1"}) as out,
    ):
        streams = {stream.index: out.add_stream_from_template(stream) for stream in reader.streams}
        for packet in reader.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return Path(target)


def zero_payload(source, target) -> Path:
    """The mp4 with its `mdat` payload zeroed (headers intact)."""
    data = bytearray(Path(source).read_bytes())
    at = data.find(b"mdat")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)
    Path(target).write_bytes(bytes(data))
    return Path(target)


def rotate_mp4(source, target, degrees: int) -> Path:
    """Writes the display matrix of `degrees` clockwise (as a phone does) into the mp4's video `tkhd`."""
    data = bytearray(Path(source).read_bytes())
    at = data.find(b"tkhd")
    assert data[at + 4] == 0  # version 0 header
    offset = at + 4 + 4 + 20 + 8 + 8
    one, matrices = (
        0x10000,
        {
            90: (0, 1, 0, -1, 0, 0),
            180: (-1, 0, 0, 0, -1, 0),
            270: (0, -1, 0, 1, 0, 0),
        },
    )
    a, b, _, c, d, _ = matrices[degrees]
    data[offset : offset + 36] = struct.pack(">9i", a * one, b * one, 0, c * one, d * one, 0, 0, 0, 0x40000000)
    Path(target).write_bytes(bytes(data))
    return Path(target)


def animated_webp(path) -> Path:
    from PIL import Image

    images = [Image.fromarray(np.full((32, 32, 3), v, np.uint8)) for v in (0, 100, 200)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=100)
    return Path(path)


def top_white_clip(path) -> Path:
    frames = np.zeros((10, 48, 64, 3), np.uint8)
    frames[:, :24] = 255  # top half white
    return write_clip(path, frames, fps=10)


def processor_style_audio(source):
    """What the processor does with an audio file: clip by clip when it is long, else whole."""
    duration = media.audio_duration(source)
    if duration is not None and duration > 120:
        return media.decode_audio(source, 16000, media.clip_spans(duration, 8, 2.0))
    return media.decode_audio(source, 16000)


def peak_mib(function, *args, **kwargs):
    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


# ---- cause 1: containers that state no duration ------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_tone(tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    return write_tone(folder / "tone.mkv", 240)


@pytest.mark.parametrize("container_format, suffix", [("matroska", ".mkv"), ("webm", ".webm")])
def test_live_audio_without_duration_is_read_clip_by_clip(long_tone, tmp_path, container_format, suffix):
    live = remux_live(long_tone, tmp_path / f"live{suffix}", container_format)
    with av.open(str(live)) as container:
        assert container.duration is None and container.streams.audio[0].duration is None
    assert media.audio_duration(live) == pytest.approx(240, abs=0.1)
    waveform, peak = peak_mib(processor_style_audio, live)
    assert waveform.shape[0] == pytest.approx(8 * 32000, abs=64)
    assert np.abs(waveform).max() > 0.2
    # The 240 s at 48 kHz would be 44 MiB as float32; eight 2 s clips need a fraction of that.
    assert peak < 12, f"{peak:.1f} MiB"


def test_decoding_a_whole_file_stops_at_max_seconds_whatever_the_container_says(long_tone, tmp_path, caplog):
    live = remux_live(long_tone, tmp_path / "live.webm", "webm")
    waveform = media.decode_audio(live, 16000, max_seconds=30)
    assert waveform.shape[0] == 30 * 16000
    assert "runs past 30 s" in caplog.text
    assert media.MAX_FULL_AUDIO_SECONDS <= 300  # the default cap keeps one call under ~20 MB of output at 16 kHz


def test_live_video_without_duration_is_sampled_by_seeking(tmp_path, monkeypatch):
    live = remux_live(write_counting_video(tmp_path / "count.mkv", 400), tmp_path / "live.mkv")
    with av.open(str(live)) as container:
        assert container.duration is None and container.streams.video[0].frames == 0

    def refuse(*args):
        raise AssertionError("a stream of known length must not be decoded through")

    monkeypatch.setattr(media, "_decode_thinned", refuse)
    start = time.perf_counter()
    decoded = media.decode_video(live, num_frames=8)
    assert time.perf_counter() - start < 5
    assert np.allclose(decoded.timestamps, np.arange(8) * 50, atol=0.6)
    assert np.abs(decoded.frames[:, 0, 0, 0].astype(int) - np.arange(8) * 50 % 250).max() <= 3


def test_scan_reads_no_more_than_the_packets(tmp_path):
    assert media.scan_stream_length(write_counting_video(tmp_path / "v.mkv", 3), "audio") == (None, 0)
    seconds, packets = media.scan_stream_length(tmp_path / "v.mkv", "video")
    assert seconds == pytest.approx(3.0, abs=0.6) and packets == 6


# ---- cause 9: no usable media ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    frames = np.zeros((40, 48, 64, 3), np.uint8)
    frames[:, :24] = 255
    return write_clip(folder / "good.mp4", frames, fps=20, audio=synthetic_voice(2.0)), write_clip(
        folder / "good.mkv", frames, fps=20, audio=synthetic_voice(2.0)
    )


def test_an_mp4_whose_payload_is_zeroed_is_a_decode_error(good_clip, tmp_path):
    zeroed = zero_payload(good_clip[0], tmp_path / "zeroed.mp4")
    with pytest.raises(MediaDecodeError, match="zeroed.mp4: the video stream holds data but nothing of it decodes"):
        media.decode_video(zeroed)
    with pytest.raises(MediaDecodeError, match="the audio stream holds data"):
        media.decode_audio(zeroed)


@pytest.mark.parametrize("keep", [700, 900, 1300])
def test_a_file_cut_after_a_few_bytes_of_payload_is_a_decode_error(good_clip, tmp_path, keep):
    cut = tmp_path / f"cut{keep}.mkv"
    cut.write_bytes(good_clip[1].read_bytes()[:keep])
    with pytest.raises(MediaDecodeError):
        media.decode_video(cut)
    with pytest.raises(MediaDecodeError):
        media.decode_audio(cut)


def test_an_animated_webp_is_a_decode_error(tmp_path):
    with pytest.raises(MediaDecodeError, match="anim.webp"):
        media.decode_video(animated_webp(tmp_path / "anim.webp"))


def test_an_empty_stream_next_to_real_data_is_still_skipped(tmp_path):
    voice = write_clip(tmp_path / "voice.m4a", audio=synthetic_voice(1.0))
    assert media.decode_video(voice) is None and media.decode_audio(voice).shape[0] > 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_frame_arrays_are_refused(value):
    frames = np.zeros((4, 8, 8, 3), np.float32)
    frames[2, 3, 3, 1] = value
    with pytest.raises(MediaError, match="Frame 2 contains NaN or infinite values"):
        media.frames_from_array(frames)


@pytest.mark.parametrize("shape", [(4, 0, 0, 3), (4, 0, 8, 3), (4, 8, 0, 3), (0, 0, 3)])
def test_zero_sized_frames_are_a_clear_error(shape):
    with pytest.raises(MediaError, match="no pixels"):
        media.frames_from_array(np.zeros(shape, np.uint8))
    assert issubclass(MediaError, ValueError)


def test_frames_of_objects_are_refused():
    with pytest.raises(MediaError, match="dtype"):
        media.frames_from_array(np.full((2, 4, 4, 3), None, dtype=object))


# ---- cause 11: rotation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_display_matrix_rotation_makes_frames_upright(tmp_path, degrees):
    rotated = rotate_mp4(top_white_clip(tmp_path / "plain.mp4"), tmp_path / f"rot{degrees}.mp4", degrees)
    decoded = media.decode_video(rotated, num_frames=2)
    frame = decoded.frames[0, :, :, 0].astype(float)
    if degrees == 180:
        assert decoded.frames.shape[1:3] == (48, 64) and decoded.original_size == (48, 64)
        assert frame[-1].mean() > 200 and frame[0].mean() < 50  # the white half is now at the bottom
        return
    assert decoded.frames.shape[1:3] == (64, 48) and decoded.original_size == (64, 48)
    white_column = -1 if degrees == 90 else 0  # turned clockwise the top goes right; anticlockwise, left
    assert frame[:, white_column].mean() > 200 and frame[:, -1 - white_column].mean() < 50
    assert decoded.scale == 1.0


def test_an_unrotated_clip_is_unchanged(tmp_path):
    decoded = media.decode_video(top_white_clip(tmp_path / "plain.mp4"), num_frames=2)
    assert decoded.frames.shape[1:3] == (48, 64) and decoded.frames[0, 0, :, 0].mean() > 200

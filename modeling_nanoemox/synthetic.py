# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Media the project generates itself: clips for tests, benchmarks and the demo's examples (benchmark videos are
under licence and never ship). Everything is deterministic given its arguments. PyAV loads when a clip is written.
"""

from pathlib import Path

import numpy as np


def write_clip(
    path: str | Path,
    frames: np.ndarray | None = None,
    fps: int = 25,
    audio: np.ndarray | None = None,
    sampling_rate: int = 16000,
    channels: int = 1,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
) -> Path:
    """
    Encodes `frames` (`(T, H, W, 3)` uint8 RGB) and/or mono `audio` (`(samples,)` float in [-1, 1], duplicated to
    `channels`) into a container chosen by the file extension (h264/aac in .mp4 by default).
    """
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        video_stream = audio_stream = None
        if frames is not None:
            video_stream = container.add_stream(video_codec, rate=fps)
            video_stream.height, video_stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
            video_stream.pix_fmt = "yuv420p"
        if audio is not None:
            layouts = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
            audio_stream = container.add_stream(audio_codec, rate=sampling_rate)
            audio_stream.layout = layouts[channels]
        if video_stream is not None:
            for frame in frames:
                frame = np.ascontiguousarray(frame[: video_stream.height, : video_stream.width])
                for packet in video_stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in video_stream.encode():
                container.mux(packet)
        if audio_stream is not None:
            # Interleaved samples: PyAV mishandles planar frames of 8 or more channels.
            interleaved = np.repeat(np.asarray(audio, np.float32)[:, None], channels, axis=1)
            step = 1024
            for offset in range(0, interleaved.shape[0], step):
                chunk = np.ascontiguousarray(interleaved[offset : offset + step].reshape(1, -1))
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout=audio_stream.layout.name)
                frame.sample_rate = sampling_rate
                for packet in audio_stream.encode(frame):
                    container.mux(packet)
            for packet in audio_stream.encode():
                container.mux(packet)
    return path


def synthetic_voice(
    seconds: float,
    sampling_rate: int = 16000,
    pitch_hz: float = 140.0,
    pitch_range: float = 0.15,
    syllables_per_second: float = 4.0,
    loudness: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """
    A voiced, speech-like signal: a harmonic source on a moving pitch contour, shaped by two vowel formants and
    cut into syllables. `pitch_hz`, `pitch_range`, the syllable rate and loudness carry prosody (e.g. raised, wide
    and fast for excitement; low, flat and slow for sadness).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sampling_rate)) / sampling_rate
    contour = pitch_hz * (1 + pitch_range * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, np.pi)))
    phase = 2 * np.pi * np.cumsum(contour) / sampling_rate
    formants = rng.choice([(700, 1200), (400, 2000), (300, 900), (600, 1700)], size=2)
    harmonics = np.zeros_like(t)
    for k in range(1, 12):
        frequency = k * contour
        gain = sum(np.exp(-(((frequency - f) / 180.0) ** 2)) for f in formants[0]) + 0.05
        harmonics += gain * np.sin(k * phase) / k
    envelope = np.clip(np.sin(np.pi * syllables_per_second * t) ** 2 * 1.4, 0, 1)
    signal = harmonics * envelope
    signal += 0.003 * rng.standard_normal(t.shape)
    return (loudness * signal / (np.abs(signal).max() + 1e-9)).astype(np.float32)


def real_face_photo() -> np.ndarray:
    """Grace Hopper's portrait that ships with matplotlib (RGB uint8), a real face for detector tests."""
    import matplotlib
    from PIL import Image

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def photo_clip_frames(photo: np.ndarray, num_frames: int, size: tuple[int, int] = (360, 640), seed: int = 0):
    """
    Frames of a slow pan across `photo` placed on a plain background of `size` (height, width): the face moves a
    little, as in a talking-head clip. Returns `(frames, boxes)`, where boxes are where the photo was drawn.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    scale = min(height / photo.shape[0], width / photo.shape[1]) * 0.9
    from PIL import Image

    resized = np.asarray(
        Image.fromarray(photo).resize((int(photo.shape[1] * scale), int(photo.shape[0] * scale)), Image.BILINEAR)
    )
    frames, boxes = [], []
    base = np.full((height, width, 3), (40, 60, 90), np.uint8)
    max_dx, max_dy = width - resized.shape[1], height - resized.shape[0]
    x0, y0 = max_dx // 2, max_dy // 2
    for i in range(num_frames):
        dx = int(x0 + 0.1 * max_dx * np.sin(2 * np.pi * i / max(num_frames, 1)) + rng.integers(-1, 2))
        dy = int(np.clip(y0 + rng.integers(-1, 2), 0, max_dy))
        dx = int(np.clip(dx, 0, max_dx))
        frame = base.copy()
        frame[dy : dy + resized.shape[0], dx : dx + resized.shape[1]] = resized
        frames.append(frame)
        boxes.append((dx, dy, resized.shape[1], resized.shape[0]))
    return np.stack(frames), np.asarray(boxes)

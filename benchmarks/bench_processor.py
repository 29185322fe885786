# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Processor throughput: one 16 s 1280×720 clip with speech → every processor output, on this machine.

    python benchmarks/bench_processor.py [--repeats 10] [--face-detector mtcnn] [--detection-size 640]

The clip is generated (a real face photograph panning slowly, a synthetic voice) and processed with the full-size
settings (CLIP and face crops at 224 px, 8 frames, 8 × 2 s of audio). Reports clips/s, the time of each stage and the
peak resident memory of the process, with the CPU model.

The process is set up as `nanoemox predict` and the demo set up theirs on a CPU (`configure_cpu_inference()`: one
thread per physical core, malloc keeping large buffers); `--plain-process` leaves PyTorch's and glibc's defaults.
"""

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model

# Run in a child process, so that generating the 400 HD frames does not count towards the processor's memory.
MAKE_CLIP = """
import sys
from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip
frames, _ = photo_clip_frames(real_face_photo(), 16 * 25, (720, 1280))
write_clip(sys.argv[1], frames, fps=25, audio=synthetic_voice(16.0), channels=2)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (after one warm-up run)")
    parser.add_argument("--face-detector", default="mtcnn", help="detector of the processor")
    parser.add_argument(
        "--detection-size", type=int, default=640, help="longest side frames are shrunk to for detection"
    )
    parser.add_argument(
        "--plain-process", action="store_true", help="skip configure_cpu_inference (PyTorch's and glibc's defaults)"
    )
    args = parser.parse_args()
    from modeling_nanoemox.quantization_nanoemox import configure_cpu_inference

    if not args.plain_process:
        configure_cpu_inference()

    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXProcessor
    from modeling_nanoemox.tiny import build_tiny_tokenizer

    processor = NanoEmoXProcessor.from_model_config(
        NanoEmoXConfig(),
        build_tiny_tokenizer(),
        face_detector=args.face_detector,
        face_detection_max_side=args.detection_size,
    )
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        subprocess.run([sys.executable, "-c", MAKE_CLIP, str(clip)], check=True)
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        text = "I can't believe it, this is wonderful!"
        processor.prepare_task("mer", video=clip, text=text, load_audio_from_video=True)  # warm-up
        timings = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            outputs = processor.prepare_task("mer", video=clip, text=text, load_audio_from_video=True)
            timings.append(time.perf_counter() - start)
        stages = {}
        from nanoemox_processing.media_nanoemox import decode_audio, decode_video

        start = time.perf_counter()
        decoded = decode_video(clip, 8, processor.max_frame_side)
        stages["decode 8 frames"] = time.perf_counter() - start
        start = time.perf_counter()
        processor._prepare_frames(decoded)
        stages["CLIP preprocessing"] = time.perf_counter() - start
        start = time.perf_counter()
        processor._prepare_faces(decoded, None)
        stages["face detection + crops"] = time.perf_counter() - start
        start = time.perf_counter()
        decode_audio(clip, 16000)
        stages["audio decode + resample"] = time.perf_counter() - start

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    median = statistics.median(timings)
    lines = [
        f"command: {' '.join(sys.argv)}",
        f"cpu: {cpu_model()} ({torch.get_num_threads()} torch threads), python {platform.python_version()}, "
        + ("PyTorch's and glibc's defaults" if args.plain_process else "configure_cpu_inference()"),
        f"face detector: {args.face_detector} at {args.detection_size} px",
        "clip: 16 s, 1280x720, 25 fps, h264 + stereo aac; outputs: "
        + ", ".join(f"{k} {tuple(v.shape)}" for k, v in outputs.items()),
        f"per clip: median {median * 1000:.0f} ms, min {min(timings) * 1000:.0f} ms over {args.repeats} runs",
        f"throughput: {1 / median:.2f} clips/s (target >= 2)",
        f"peak RSS: {peak:.0f} MB (of which {rss_before:.0f} MB before the first clip: Python, torch, transformers, "
        "the processor; target < 600 MB)",
        "stages (one run each, one after the other; inside a clip the audio decodes beside the frames): "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in stages.items()),
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

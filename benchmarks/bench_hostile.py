# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Replays the reliability battery's categories for the media decoder, the judge's HTTP client, eval-path
confinement and training resume (issue 17, causes 1, 2, 6, 7, 8, 9, 11-rotation), and prints cases tried /
acceptable per category.

    PYTHONPATH=.:.shim python benchmarks/bench_hostile.py        # about a minute on 2 cores

A case is acceptable when the outcome is the documented one (a typed error, a bounded result) within its time and
memory bounds. Media are generated with PyAV; HTTP endpoints are hostile servers on 127.0.0.1.
"""

import json
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_hostile_http as http_cases  # noqa: E402
import test_hostile_media as media_cases  # noqa: E402

import nanoemox_processing.media_nanoemox as media  # noqa: E402
from modeling_nanoemox.evaluation.backends import (  # noqa: E402
    BackendRedirectError,
    BackendResponseError,
    BackendTimeoutError,
    OpenAIChatBackend,
)
from modeling_nanoemox.synthetic import synthetic_voice, write_clip  # noqa: E402
from nanoemox_processing import MediaDecodeError, MediaError  # noqa: E402

RESULTS: dict[str, list[tuple[str, bool, str]]] = {}


def case(category: str, name: str, check) -> None:
    start = time.perf_counter()
    try:
        ok, detail = check()
    except Exception as error:  # an unexpected exception is an unacceptable outcome, not a crash of the bench
        ok, detail = False, f"{type(error).__name__}: {error}"[:120]
    RESULTS.setdefault(category, []).append((name, bool(ok), f"{detail} ({time.perf_counter() - start:.2f} s)"))


def raises(kind, function, *args, **kwargs):
    def check():
        try:
            function(*args, **kwargs)
        except kind as error:
            return True, f"{type(error).__name__}"
        return False, "no error"

    return check


def peak(function, *args, **kwargs):
    tracemalloc.start()
    try:
        result = function(*args, **kwargs)
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def media_battery(folder: Path) -> None:
    tone = media_cases.write_tone(folder / "tone.mkv", 400)  # 6 min 40 s of Opus, ~4 MB
    for fmt, suffix in (("matroska", ".mkv"), ("webm", ".webm")):
        live = media_cases.remux_live(tone, folder / f"live{suffix}", fmt)

        def clip_by_clip(live=live):
            waveform, mib = peak(media_cases.processor_style_audio, live)
            return waveform.shape[0] >= 8 * 32000 - 64 and mib < 16, f"{mib:.1f} MiB peak"

        case("1 live containers (no duration)", f"audio {suffix} 400 s, processor path", clip_by_clip)

        def whole(live=live):
            waveform, mib = peak(media.decode_audio, live, 16000)
            bound = media.MAX_FULL_AUDIO_SECONDS * 16000
            return waveform.shape[0] <= bound and mib < 160, f"{waveform.shape[0] / 16000:.0f} s, {mib:.0f} MiB peak"

        case("1 live containers (no duration)", f"audio {suffix} 400 s, decode_audio() whole (capped)", whole)
    video = media_cases.write_counting_video(folder / "count.mkv", 1200, fps=2)  # 20 minutes
    for fmt, suffix in (("matroska", ".mkv"), ("webm", ".webm")):
        if fmt == "webm":
            continue  # h264 is not allowed in WebM
        live = media_cases.remux_live(video, folder / f"vlive{suffix}", fmt)

        def sampled(live=live):
            start = time.perf_counter()
            decoded, mib = peak(media.decode_video, live, 8)
            ok = np.allclose(decoded.timestamps, np.arange(8) * 150, atol=0.6) and time.perf_counter() - start < 10
            return ok and mib < 64, f"{mib:.1f} MiB peak"

        case("1 live containers (no duration)", f"video {suffix} 20 min", sampled)

    good = media_cases.top_white_clip(folder / "good.mp4")
    voice = write_clip(folder / "av.mp4", np.zeros((20, 48, 64, 3), np.uint8), fps=10, audio=synthetic_voice(2.0))
    mkv = write_clip(folder / "av.mkv", np.zeros((20, 48, 64, 3), np.uint8), fps=10, audio=synthetic_voice(2.0))
    zeroed = media_cases.zero_payload(voice, folder / "zeroed.mp4")
    category = "9 no usable media"
    case(category, "zeroed mp4 payload (video)", raises(MediaDecodeError, media.decode_video, zeroed))
    case(category, "zeroed mp4 payload (audio)", raises(MediaDecodeError, media.decode_audio, zeroed))
    for keep in (700, 900, 1100, 1300):
        cut = folder / f"cut{keep}.mkv"
        cut.write_bytes(mkv.read_bytes()[:keep])
        case(category, f"mkv cut at {keep} bytes", raises(MediaDecodeError, media.decode_video, cut))
    case(category, "animated WebP", raises(MediaDecodeError, media.decode_video, media_cases.animated_webp(folder / "a.webp")))
    for value in (np.nan, np.inf):
        frames = np.zeros((4, 8, 8, 3), np.float32)
        frames[1, 1, 1, 1] = value
        case(category, f"{value} in a frame array", raises(MediaError, media.frames_from_array, frames))
    for shape in ((4, 0, 0, 3), (0, 0, 3), (2, 8, 0, 3)):
        case(category, f"frame array {shape}", raises(MediaError, media.frames_from_array, np.zeros(shape, np.uint8)))
    case(category, "empty frame list", raises(MediaError, media.frames_from_array, []))

    for degrees in (90, 180, 270):
        rotated = media_cases.rotate_mp4(good, folder / f"rot{degrees}.mp4", degrees)

        def upright(rotated=rotated, degrees=degrees):
            frame = media.decode_video(rotated, 2).frames[0, :, :, 0].astype(float)
            if degrees == 180:
                return frame[-1].mean() > 200 and frame[0].mean() < 50, f"{frame.shape}"
            column = -1 if degrees == 90 else 0
            return frame.shape == (64, 48) and frame[:, column].mean() > 200, f"{frame.shape}"

        case("11 rotation metadata", f"display matrix {degrees}°", upright)


def http_battery() -> None:
    category = "2 redirects"
    servers = []

    def serve(behaviour):
        servers.append(http_cases.HostileServer(behaviour))
        return servers[-1]

    try:
        for status in (301, 302, 303, 307, 308):
            other = serve(http_cases.reply)
            first = serve(http_cases.redirect(other.url + "/v1/chat/completions", status))

            def cross(first=first, other=other):
                backend = OpenAIChatBackend("m", base_url=first.url + "/v1", api_key="sk-bench", max_retries=0)
                try:
                    backend.chat(http_cases.MESSAGES)
                except BackendRedirectError:
                    return other.requests == [], "refused; the other origin got nothing"
                return False, "followed"

            case(category, f"{status} to another origin", cross)

        def downgrade():
            backend = OpenAIChatBackend("m", base_url="https://x.invalid/v1", api_key="k", max_retries=0)
            backend._post_once = lambda *a: (308, {"Location": "http://x.invalid/v1/chat/completions"}, b"")
            return raises(BackendRedirectError, backend.chat, http_cases.MESSAGES)()

        case(category, "https → http downgrade", downgrade)

        category = "8 HTTP client"

        def trickle(handler):
            handler.send_response(200)
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            for _ in range(100):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.2)

        slow = serve(trickle)

        def deadline():
            start = time.monotonic()
            ok, detail = raises(BackendTimeoutError, OpenAIChatBackend("m", base_url=slow.url, timeout=1, max_retries=3, deadline=2).chat, http_cases.MESSAGES)()
            return ok and time.monotonic() - start < 3.5, detail

        case(category, "server trickling 1 byte / 0.2 s, timeout=1", deadline)
        bodies = {
            "non-UTF-8 body": b'{"choices": [{"message": {"content": "\xff\xfe"}}]}',
            "HTML body": b"<html>502</html>",
            "list content": json.dumps({"choices": [{"message": {"content": [1]}}]}).encode(),
            "number content": json.dumps({"choices": [{"message": {"content": 3.5}}]}).encode(),
        }
        for name, body in bodies.items():
            server = serve(lambda handler, body=body: http_cases.reply(handler, body))
            case(category, name, raises(BackendResponseError, OpenAIChatBackend("m", base_url=server.url, max_retries=0).chat, http_cases.MESSAGES))

        def cut(handler):
            handler.send_response(200)
            handler.send_header("Content-Length", "5000")
            handler.end_headers()
            handler.wfile.write(b'{"choices"')

        server = serve(cut)
        case(category, "incomplete read", raises(BackendResponseError, OpenAIChatBackend("m", base_url=server.url, max_retries=0).chat, http_cases.MESSAGES))
        server = serve(http_cases._announce)
        case(category, "200 MB body announced", raises(BackendResponseError, OpenAIChatBackend("m", base_url=server.url, max_retries=0).chat, http_cases.MESSAGES))

        def endless(handler):
            handler.send_response(200)
            handler.end_headers()
            for _ in range(200):
                handler.wfile.write(b"x" * 65536)

        server = serve(endless)
        case(category, "12 MB body, no length (cap 8 MiB)", raises(BackendResponseError, OpenAIChatBackend("m", base_url=server.url, max_retries=0).chat, http_cases.MESSAGES))

        def credentials():
            host = serve(http_cases.reply).url.removeprefix("http://")
            backend = OpenAIChatBackend("m", base_url=f"http://u:hunter2@{host}/v1?key=topsecret", max_retries=0)
            backend.chat(http_cases.MESSAGES)
            text = backend.identity + repr(backend)
            return "hunter2" not in text and "topsecret" not in text, backend.identity

        case(category, "credentials in base_url", credentials)
    finally:
        for server in servers:
            server.close()


def eval_battery(folder: Path) -> None:
    from modeling_nanoemox.data import load_manifest, write_manifest
    from modeling_nanoemox.evaluation.run import media_outside_root

    root = folder / "root"
    (root / "sub").mkdir(parents=True)
    (root / "ok.mp4").write_bytes(b"")
    rows = [
        {"id": "passwd", "task": "msa", "video": "../../../../../../../etc/passwd"},
        {"id": "climb", "task": "msa", "video": "sub/../../x.mp4", "audio": "ok.mp4"},
        {"id": "inside", "task": "msa", "video": "sub/../ok.mp4"},
    ]
    (folder / "x.mp4").write_bytes(b"")
    manifest = write_manifest(rows, root / "m.jsonl")
    samples, _ = load_manifest(manifest)
    escaping = media_outside_root(samples, manifest, None)
    for row in rows:
        expected = row["id"] != "inside"
        case("7 eval run media root", f"{row['video']}", lambda row=row, expected=expected: ((row["id"] in escaping) == expected, "refused" if expected else "kept"))


def training_battery(folder: Path) -> None:
    from modeling_nanoemox.tiny import build_tiny
    from modeling_nanoemox.training.curriculum import latest_intact_checkpoint, saved_model_complete

    model, processor = build_tiny(seed=0)
    final = folder / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    category = "6 resume after a kill"
    case(category, "intact final/", lambda: (saved_model_complete(final), "done"))
    for keep in (0.99, 0.5, 0.01):
        broken = folder / f"final{keep}"
        shutil.copytree(final, broken)
        data = (broken / "model.safetensors").read_bytes()
        (broken / "model.safetensors").write_bytes(data[: int(len(data) * keep)])
        case(category, f"final/ truncated to {keep:.0%}", lambda broken=broken: (not saved_model_complete(broken), "not done"))
    phase = folder / "phase"
    for step, damage in ((2, None), (4, "truncate"), (6, "no_state")):
        checkpoint = phase / f"checkpoint-{step}"
        shutil.copytree(final, checkpoint)
        (checkpoint / "trainer_state.json").write_text("{}")
        if damage == "truncate":
            (checkpoint / "model.safetensors").write_bytes((checkpoint / "model.safetensors").read_bytes()[:1000])
        elif damage == "no_state":
            (checkpoint / "trainer_state.json").unlink()
    case(category, "newest truncated / without trainer_state", lambda: (latest_intact_checkpoint(phase).name == "checkpoint-2", "falls back to checkpoint-2"))
    start = folder / "start"
    start.mkdir()
    shutil.copy(final / "config.json", start / "config.json")
    case(category, "start/ without weights", lambda: (not saved_model_complete(start), "rebuilt"))


def main() -> int:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for battery in (lambda: media_battery(folder / "media"), http_battery,
                        lambda: eval_battery(folder / "eval"), lambda: training_battery(folder / "training")):  # fmt: skip
            for sub in ("media", "eval", "training"):
                (folder / sub).mkdir(exist_ok=True)
            battery()
    tried = accepted = 0
    for category, cases in RESULTS.items():
        good = sum(ok for _, ok, _ in cases)
        tried, accepted = tried + len(cases), accepted + good
        print(f"{category:<36} {good:>3} / {len(cases):<3} acceptable")
        for name, ok, detail in cases:
            if not ok or "-v" in sys.argv:
                print(f"    {'ok ' if ok else 'BAD'} {name}: {detail}")
    print(f"{'total':<36} {accepted:>3} / {tried:<3} acceptable   ({time.perf_counter() - started:.0f} s)")
    return 0 if accepted == tried else 1


if __name__ == "__main__":
    sys.exit(main())

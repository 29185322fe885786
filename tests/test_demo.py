"""The Gradio demo (`spaces_demo/app.py`): upload checks, the named API endpoint through `gradio_client`, and the page
itself in headless Chromium (upload, run, face crops, a corrupt upload's message, then a good request again).

The app runs as `python spaces_demo/app.py --model <tiny model>` in a subprocess on 127.0.0.1. Set
`NANOEMOX_DEMO_SCREENSHOT=/some/file.png` to also copy the browser test's screenshot there.
"""

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")

REPO_ROOT = Path(__file__).resolve().parents[1]
APP = REPO_ROOT / "spaces_demo" / "app.py"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("nanoemox_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Clips generated here: a real face (Grace Hopper's portrait) with a synthetic voice, the same without sound,
    sound without a picture, a picture without a face, a long clip, an over-sized one, broken files and a text file."""
    from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip

    folder = tmp_path_factory.mktemp("demo-media")
    frames, _ = photo_clip_frames(real_face_photo(), 24, size=(270, 480))
    clips = {
        "face_voice": write_clip(folder / "face_voice.mp4", frames, fps=12, audio=synthetic_voice(2.0)),
        "face_silent": write_clip(folder / "face_silent.mp4", frames, fps=12),
        "voice_only": write_clip(folder / "voice_only.mp4", audio=synthetic_voice(1.0)),
        "no_face": write_clip(
            folder / "no_face.mp4", np.full((12, 120, 160, 3), 90, np.uint8), fps=12, audio=synthetic_voice(1.0)
        ),
        "long": write_clip(folder / "long.mp4", np.zeros((24, 32, 32, 3), np.uint8), fps=2),
        "huge": write_clip(folder / "huge.mp4", np.zeros((1, 2400, 4000, 3), np.uint8), fps=1),
    }
    good = clips["face_voice"].read_bytes()
    clips["corrupt"] = folder / "corrupt.mp4"
    clips["corrupt"].write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    clips["truncated"] = folder / "truncated.mp4"
    clips["truncated"].write_bytes(good[: len(good) // 3])
    clips["text"] = folder / "notes.txt"
    clips["text"].write_text("not a video")
    clips["empty"] = folder / "empty.mp4"
    clips["empty"].write_bytes(b"")
    return clips


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_dir, tmp_path_factory):
    """The app on 127.0.0.1 serving the tiny model; yields its URL."""
    work = tmp_path_factory.mktemp("demo-server")
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(work / "gradio-tmp"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    for variable in ("SPACE_ID", "SPACES_ZERO_GPU", "NANOEMOX_MODEL", "GRADIO_EXAMPLES_CACHE"):
        env.pop(variable, None)
    log_path = work / "app.log"
    command = [sys.executable, str(APP), "--model", str(tiny_dir), "--host", "127.0.0.1", "--port", str(port),
               "--cache-dir", str(work / "cache"), "--max-seconds", "60"]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the app exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not answer within {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield {"url": url, "log": log_path, "process": process}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---- upload checks (no server) -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clip", "kind", "message"),
    [
        ("text", "video", "is not a video file type"),
        ("empty", "video", "is empty"),
        ("corrupt", "video", "could not be read as video"),
        ("truncated", "video", "could not be read as video"),
        ("long", "video", "lasts 12 s; this demo takes clips up to 10 s"),
        ("huge", "video", "is 4000×2400"),
        ("voice_only", "video", "has no video track"),
        ("face_silent", "audio", "has no audio track"),
    ],
)
def test_check_media_refuses_bad_uploads(app_module, media, clip, kind, message):
    limits = app_module.Limits(max_seconds=10)
    with pytest.raises(app_module.UploadError, match=message):
        app_module.check_media(media[clip], kind, limits)


def test_check_media_accepts_good_uploads(app_module, media):
    info = app_module.check_media(media["face_voice"], "video", app_module.Limits())
    assert (info["width"], info["height"], info["has_audio"]) == (480, 270, True)
    assert info["duration_s"] == pytest.approx(2.0, abs=0.2)
    assert app_module.check_media(media["voice_only"], "audio", app_module.Limits())["has_audio"]
    with pytest.raises(app_module.UploadError, match="up to 0 MB"):
        app_module.check_media(media["face_voice"], "video", app_module.Limits(max_file_mb=0))


def test_parse_history(app_module):
    assert app_module.parse_history("  ") is None
    text = "user: I had my final interview.\nIt was long.\n\nassistant: How did it go?"
    assert app_module.parse_history(text) == [
        {"role": "user", "content": "I had my final interview.\nIt was long."},
        {"role": "assistant", "content": "How did it go?"},
    ]
    assert app_module.parse_history('[{"role": "user", "content": "hi"}]') == [{"role": "user", "content": "hi"}]
    with pytest.raises(app_module.UploadError, match="line 1"):
        app_module.parse_history("hello there")
    with pytest.raises(app_module.UploadError, match="not valid JSON"):
        app_module.parse_history("[{oops")
    with pytest.raises(app_module.UploadError, match="list of"):
        app_module.parse_history('[{"role": "narrator", "content": "x"}]')


def test_resolve_model(app_module, tmp_path, monkeypatch):
    monkeypatch.delenv("NANOEMOX_MODEL", raising=False)
    assert app_module.resolve_model("org/model", tmp_path) == app_module.ServedModel("org/model", "given")
    monkeypatch.setenv("NANOEMOX_MODEL", "org/other")
    assert app_module.resolve_model(None, tmp_path).source == "org/other"
    monkeypatch.delenv("NANOEMOX_MODEL")

    checkpoint = tmp_path / "outputs" / "p2e" / "final"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    monkeypatch.setattr(app_module, "EMBEDDED_RUN_CHECKPOINT", checkpoint)
    assert app_module.resolve_model(None, tmp_path) == app_module.ServedModel(str(checkpoint), "embedded-run")

    monkeypatch.setattr(app_module, "EMBEDDED_RUN_CHECKPOINT", tmp_path / "missing")
    written = []

    def fake_create_tiny(folder):
        written.append(folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    import modeling_nanoemox.tiny

    monkeypatch.setattr(modeling_nanoemox.tiny, "create_tiny", fake_create_tiny)
    served = app_module.resolve_model(None, tmp_path)
    assert served.origin == "tiny" and written == [tmp_path / "tiny-model"]
    assert app_module.resolve_model(None, tmp_path).source == served.source and len(written) == 1  # reused

    monkeypatch.setitem(sys.modules, "modeling_nanoemox.tiny", None)  # as on a Space: the package is absent
    with pytest.raises(SystemExit, match="A model id is required"):
        app_module.resolve_model(None, tmp_path / "elsewhere")


def test_no_spaces_gpu_outside_a_space(app_module, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def function():
        return 1

    assert app_module._gpu(function) is function


def test_example_clips_are_generated(app_module, tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "BUNDLED_EXAMPLES", tmp_path / "none")
    rows, folder = app_module.example_rows(tmp_path)
    assert folder == tmp_path / "example-clips"
    assert {row[3] for row in rows} == {"mer", "ovmer", "erg", "msa", "all"}
    for row in rows:
        app_module.check_media(row[0], "video", app_module.Limits())


# ---- the named API endpoint --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server["url"], verbose=False)


def _call(client, video, task="mer", text="", history="", audio=None, max_new_tokens=16, sample=True):
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(video)) if video else None,
        handle_file(str(audio)) if audio else None,
        text,
        history,
        task,
        max_new_tokens,
        sample,
        1.0,
        0,
        api_name="/analyze",
    )


def test_api_endpoint_answers(client, media):
    answer, chain, reply, faces, gates, summary, details = _call(client, media["face_voice"], text="We won!")
    assert answer.strip()
    assert len(faces) == 8 and any(face["caption"] == "frame 1" for face in faces)
    assert all(Path(face["image"]).is_file() for face in faces)
    weights = [row[1] for row in gates["data"]]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    assert details["modalities"] == ["video", "face", "audio", "audio-visual fusion"]
    assert details["tasks"]["mer"]["timings"]["tokens"] > 0
    assert len(details["face_boxes_xywh"]) == 8 and any(details["face_detected"])
    assert "Latency, MER" in summary and "Total" in summary


def test_api_endpoint_erg_and_all_six(client, media):
    history = "user: I had my final interview yesterday.\nassistant: How do you feel it went?"
    *_, details = _call(client, media["face_voice"], task="erg", text="I didn't get the job.", history=history)
    assert set(details["tasks"]["erg"]) >= {"answer", "chain_of_empathy", "reply"}
    answer, *_, details = _call(client, media["face_silent"], task="all", max_new_tokens=32)
    assert list(details["tasks"]) == ["msa", "mer", "ovmer", "mir", "eri", "erg"]
    assert all(f"[{label}]" in answer for label in ("MSA · sentiment", "ERG · empathic reply"))
    # No sound track: the model runs on the picture, says so, and the fusion gate has nothing to weigh.
    assert "audio" not in details["modalities"] and details["fusion_gate_weights"] is None
    assert any("No audio" in note for note in details["notes"])


def test_api_endpoint_separate_audio_and_refusals(client, media):
    *_, details = _call(client, media["face_silent"], audio=media["voice_only"], task="msa")
    assert "audio-visual fusion" in details["modalities"]
    _, _, _, faces, *_, details = _call(client, media["no_face"], task="msa", max_new_tokens=4)
    assert any("No face was found in any frame" in note for note in details["notes"])
    assert len(faces) == 8 and all(face["caption"].endswith("no face") for face in faces)
    from gradio_client.exceptions import AppError

    for clip, message in (("corrupt", "could not be read as video"), ("text", "is not a video file type")):
        with pytest.raises(AppError, match=message):
            _call(client, media[clip])
    with pytest.raises(AppError, match="Upload or record a video"):
        _call(client, None)
    with pytest.raises(AppError, match="Dialogue history, line 1"):
        _call(client, media["face_voice"], task="erg", history="no prefix here")
    answer, *_ = _call(client, media["face_voice"])  # still serving
    assert answer.strip()


# ---- the page in a real browser -------------------------------------------------------------------------------


@pytest.fixture
def browser_page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs `pip install playwright`")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile, sync_api.sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1400, "height": 1000},
            )
        except Exception as error:  # a browser that cannot start is an environment problem, not a demo bug
            pytest.skip(f"Chromium failed to start: {error}")
        try:
            yield context.new_page()
        finally:
            context.close()


def _run_and_wait(page, task_label: str):
    page.get_by_label(task_label).check()
    page.locator("#run-button").click()
    code = task_label.split(" ")[0].replace("-", "").upper()
    # The summary starts over with each request: first this task's latency line, then the total once it is done.
    page.locator("#summary").get_by_text(f"Latency, {code}").wait_for(timeout=60_000)
    page.locator("#summary").get_by_text("Total:").wait_for(timeout=60_000)


@pytest.mark.browser
def test_page_in_chromium(server, media, browser_page, tmp_path):
    page = browser_page
    page.goto(server["url"], wait_until="domcontentloaded")
    page.locator("#run-button").wait_for(timeout=60_000)
    assert "answers are meaningless" in page.locator("#model-banner").inner_text()

    # A good clip: streamed answer, face crops, gate plot.
    page.locator("#video-input input[type=file]").set_input_files(str(media["face_voice"]))
    page.locator("#video-input video").wait_for(timeout=15_000)
    page.get_by_text("Generation settings").click()
    page.get_by_label("Sample (off: greedy, deterministic)").check()
    page.locator("#text-input textarea").fill("I can't believe we actually won!")
    _run_and_wait(page, "MER · emotion (closed set)")
    assert page.locator("#answer textarea").input_value().strip()
    assert page.locator("#faces img").count() >= 1
    assert "video, face, audio, audio-visual fusion" in page.locator("#summary").inner_text()
    page.locator("#gates [aria-roledescription='axis']").first.wait_for(timeout=10_000)
    screenshot = tmp_path / "demo_answer.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get("NANOEMOX_DEMO_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["NANOEMOX_DEMO_SCREENSHOT"])

    # A corrupt upload: a readable message on the page.
    page.locator("#video-input button[aria-label='Clear']").click()
    page.locator("#video-input input[type=file]").set_input_files(str(media["corrupt"]))
    page.locator("#run-button").click()
    page.get_by_text("corrupt.mp4 could not be read as video").first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()

    # The app keeps serving: a good request works again.
    page.locator("#video-input button[aria-label='Clear']").click()
    page.locator("#video-input input[type=file]").set_input_files(str(media["face_voice"]))
    page.locator("#video-input video").wait_for(timeout=15_000)
    _run_and_wait(page, "OV-MER · open-vocabulary emotions")
    assert page.locator("#answer textarea").input_value().strip()
    assert page.locator("#faces img").count() >= 1
    assert server["process"].poll() is None

"""The Gradio demo (`spaces_demo/app.py`): upload checks, what it stores and deletes, the request handler on the model's
pipeline, the named API endpoint through `gradio_client`, and the page itself in headless Chromium (upload, run, face
crops, a corrupt upload's message, then a good request again).

The app runs as `python spaces_demo/app.py --model <tiny model>` in a subprocess on 127.0.0.1. Set
`NANOEMOX_DEMO_SCREENSHOT=/some/file.png` to also copy the browser test's screenshot there.
"""

import importlib.util
import inspect
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
# The test server's storage settings: small uploads, a short cache life, a quick clean-up of request files.
SERVER_MAX_FILE_MB = 2
SERVER_CACHE_MAX_AGE_S = 60
SERVER_CACHE_SWEEP_S = 3
SERVER_REQUEST_FILES_GRACE_S = 1


@pytest.fixture(scope="module")
def app_module():
    spec = importlib.util.spec_from_file_location("nanoemox_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def remux_live(source: Path, target: Path) -> Path:
    """`source`'s packets in a live Matroska (`live=1`: no duration, no cues, as a recording being streamed)."""
    import av

    with av.open(str(source)) as reader, av.open(str(target), "w", format="matroska", options={"live": "1"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in reader.streams if s.type in ("video", "audio")}
        for packet in reader.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    return target


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Clips generated here: a real face (Grace Hopper's portrait) with a synthetic voice, the same without sound,
    sound without a picture, a picture without a face, a long clip, an over-sized one, live Matroska without a stated
    duration (short and long), broken files and a text file."""
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
    clips["live"] = remux_live(clips["face_voice"], folder / "live.mkv")
    clips["live_long"] = remux_live(clips["long"], folder / "live_long.mkv")
    long_voice = write_clip(folder / "long_voice.mp4", np.zeros((70, 32, 32, 3), np.uint8), fps=1,
                            audio=synthetic_voice(70.0))  # fmt: skip
    clips["live_over_a_minute"] = remux_live(long_voice, folder / "live_over_a_minute.mkv")
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
    """The app on 127.0.0.1 serving the tiny model; yields its URL and folders (Gradio's cache, the system temp)."""
    work = tmp_path_factory.mktemp("demo-server")
    (work / "tmp").mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(work / "gradio-tmp"),
        "TMPDIR": str(work / "tmp"),  # the request files' folder lives under the system temp
        "TOKENIZERS_PARALLELISM": "false",
    }
    for variable in ("SPACE_ID", "SPACES_ZERO_GPU", "NANOEMOX_MODEL", "GRADIO_EXAMPLES_CACHE"):
        env.pop(variable, None)
    log_path = work / "app.log"
    command = [sys.executable, str(APP), "--model", str(tiny_dir), "--host", "127.0.0.1", "--port", str(port),
               "--cache-dir", str(work / "cache"), "--max-seconds", "60", "--max-file-mb", str(SERVER_MAX_FILE_MB),
               "--cache-max-age", str(SERVER_CACHE_MAX_AGE_S), "--cache-sweep-every", str(SERVER_CACHE_SWEEP_S),
               "--request-files-grace", str(SERVER_REQUEST_FILES_GRACE_S)]  # fmt: skip
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
        yield {
            "url": url,
            "log": log_path,
            "process": process,
            "uploads": work / "gradio-tmp",
            "request_files": work / "tmp" / "nanoemox-demo-requests",
        }
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
        ("live_long", "video", "lasts more than 10 s; this demo takes clips up to 10 s"),  # no stated duration
        ("live_long", "audio", "has no audio track"),
        ("huge", "video", "is 4000×2400"),
        ("voice_only", "video", "has no video track"),
        ("face_silent", "audio", "has no audio track"),
    ],
)
def test_check_media_refuses_bad_uploads(app_module, media, clip, kind, message):
    limits = app_module.Limits(max_seconds=10)
    with pytest.raises(app_module.UploadError, match=message) as refused:
        app_module.check_media(media[clip], kind, limits)
    assert refused.value.path == media[clip]  # the handler deletes the refused upload


def test_check_media_accepts_good_uploads(app_module, media):
    info = app_module.check_media(media["face_voice"], "video", app_module.Limits())
    assert (info["width"], info["height"], info["has_audio"]) == (480, 270, True)
    assert info["duration_s"] == pytest.approx(2.0, abs=0.2)
    assert app_module.check_media(media["voice_only"], "audio", app_module.Limits())["has_audio"]
    with pytest.raises(app_module.UploadError, match="up to 0 MB"):
        app_module.check_media(media["face_voice"], "video", app_module.Limits(max_file_mb=0))


def test_live_matroska_duration_is_measured_not_assumed(app_module, media):
    """Issue 17 cause 1: a container without a stated duration used to pass the length check (`None` passed)."""
    import av

    with av.open(str(media["live_over_a_minute"])) as container:  # the fixture really states no duration
        assert container.duration is None and all(s.duration is None for s in container.streams)
    info = app_module.check_media(media["live"], "video", app_module.Limits())
    assert info["duration_s"] == pytest.approx(2.0, abs=0.3) and info["has_audio"]
    assert app_module.check_media(media["live"], "audio", app_module.Limits())["duration_s"] == pytest.approx(2, 0.2)
    for kind in ("video", "audio"):
        with pytest.raises(app_module.UploadError, match="lasts more than 60 s; this demo takes clips up to 60 s"):
            app_module.check_media(media["live_over_a_minute"], kind, app_module.Limits(max_seconds=60))


def test_unknown_duration_is_refused(app_module, media, monkeypatch):
    # No stated duration and no packet timestamps to measure one: refused, with a message saying what to do.
    monkeypatch.setattr(app_module, "_demuxed_duration", lambda path, kind, max_seconds: (None, True))
    with pytest.raises(app_module.UploadError, match="does not say how long it is.*Re-save it"):
        app_module.check_media(media["live"], "video", app_module.Limits())
    assert app_module.check_media(media["face_voice"], "video", app_module.Limits())["duration_s"]  # stated: kept


def test_delete_upload_only_touches_uploads(app_module, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    upload = tmp_path / "gradio" / "0123abcd" / "clip.mp4"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"x")
    elsewhere = tmp_path / "examples" / "clip.mp4"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"x")
    assert app_module.delete_upload(upload) and not upload.parent.exists()
    assert not app_module.delete_upload(elsewhere) and elsewhere.is_file()
    assert not app_module.delete_upload(None) and not app_module.delete_upload(upload)


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
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert app_module.resolve_model("org/model", tmp_path) == app_module.ServedModel("org/model", "given")
    monkeypatch.setenv("NANOEMOX_MODEL", "org/other")
    assert app_module.resolve_model(None, tmp_path).source == "org/other"
    monkeypatch.delenv("NANOEMOX_MODEL")

    # The embedded run's model, where the recipe writes it by default (`outputs/p2e/final` under the folder it ran
    # in); a folder without weights (a run killed while copying) does not count.
    monkeypatch.setattr(app_module, "EMBEDDED_RUN_CHECKPOINTS", (Path("outputs/p2e/final"), tmp_path / "repo-run"))
    checkpoint = tmp_path / "outputs" / "p2e" / "final"
    checkpoint.mkdir(parents=True)
    (checkpoint / "config.json").write_text("{}")
    written = []

    def fake_create_tiny(folder):
        written.append(folder)
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"")

    import modeling_nanoemox.tiny

    monkeypatch.setattr(modeling_nanoemox.tiny, "create_tiny", fake_create_tiny)
    assert app_module.resolve_model(None, tmp_path).origin == "tiny"  # no weights yet
    (checkpoint / "model.safetensors").write_bytes(b"")
    assert app_module.resolve_model(None, tmp_path) == app_module.ServedModel(str(checkpoint), "embedded-run")

    # No run: a random tiny model, written whole (under a temporary name, then renamed) and reused.
    shutil.rmtree(tmp_path / "outputs")
    served = app_module.resolve_model(None, tmp_path)
    assert served == app_module.ServedModel(str(tmp_path / "tiny-model"), "tiny") and len(written) == 1
    assert written[0] != tmp_path / "tiny-model" and not written[0].exists()
    assert app_module.resolve_model(None, tmp_path).source == served.source and len(written) == 1  # reused

    monkeypatch.setitem(sys.modules, "modeling_nanoemox.tiny", None)  # as on a Space: the package is absent
    with pytest.raises(SystemExit, match="A model id is required"):
        app_module.resolve_model(None, tmp_path / "elsewhere")


def test_a_space_serves_the_model_its_card_names(app_module, tmp_path, monkeypatch):
    assert "/" in app_module.space_model_id()  # spaces_demo/README.md's `models:` entry, a Hub id
    card = tmp_path / "README.md"
    card.write_text('---\ntitle: x\nmodels:\n  - "org/model"\ntags:\n  - a\n---\n\nmodels:\n  - no\n')
    assert app_module.space_model_id(card) == "org/model"
    monkeypatch.setattr(app_module, "SPACE_CARD", card)
    monkeypatch.delenv("NANOEMOX_MODEL", raising=False)
    monkeypatch.setenv("SPACE_ID", "org/space")
    assert app_module.resolve_model(None, tmp_path) == app_module.ServedModel("org/model", "given")
    card.write_text("---\ntitle: x\n---\n")
    assert app_module.space_model_id(card) is None


def test_no_spaces_gpu_outside_a_space(app_module, monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def function():
        return 1

    assert app_module._gpu(function) is function


def test_spaces_gpu_duration_follows_the_request(app_module, monkeypatch):
    seen = {}

    class FakeSpaces:
        @staticmethod
        def GPU(duration):
            seen["duration"] = duration
            return lambda function: function

    monkeypatch.setattr(app_module, "spaces", FakeSpaces)
    monkeypatch.setenv("SPACE_ID", "org/space")
    app_module._gpu(lambda: None)
    assert seen["duration"] is app_module.gpu_seconds  # called by ZeroGPU with the handler's arguments
    gpu_seconds = app_module.gpu_seconds
    assert gpu_seconds("clip.mp4", None, "", "", "mer", 128) == 17
    assert gpu_seconds("clip.mp4", None, "", "", "all", 128, False, 0.7, 0) == 53
    assert gpu_seconds("clip.mp4", None, "", "", "all", 512) == gpu_seconds("clip.mp4", None, "", "", "all", 10**6)
    assert gpu_seconds("clip.mp4", None, "", "", "all", 512) == 120


def test_example_clips_are_generated(app_module, tmp_path, monkeypatch):
    monkeypatch.setattr(app_module, "BUNDLED_EXAMPLES", tmp_path / "none")
    rows, folder = app_module.example_rows(tmp_path)
    assert folder == tmp_path / "example-clips"
    assert {row[3] for row in rows} == {"mer", "ovmer", "erg", "msa", "all"}
    for row in rows:
        app_module.check_media(row[0], "video", app_module.Limits())


# ---- face crops: drawn from the pipeline's boxes, written once per request -----------------------------------------


def test_face_boxes_are_drawn_on_the_crops(app_module):
    crops = np.full((3, 32, 32, 3), 100, np.uint8)
    images = app_module.face_crop_images(
        crops,
        face_boxes=[[110, 60, 20, 20], [100, 50, 40, 40], [0, 0, 10, 10]],
        crop_boxes=[[100, 50, 40, 40], [100, 50, 40, 40], [0, 0, 10, 10]],
        face_source=["detected", "completed", "none"],
    )
    assert [caption for _, caption in images] == ["frame 1", "frame 2: completed", "frame 3: no face"]
    first, second, third = (np.asarray(image) for image, _ in images)
    assert first.shape == (160, 160, 3)  # the 32 px crop enlarged for the page
    # Frame 1: the face is the middle half of the crop, so its box runs from 1/4 to 3/4 of the image.
    assert tuple(first[40, 80]) == app_module.BOX_COLOURS["detected"] and tuple(first[80, 80]) == (100, 100, 100)
    assert tuple(first[10, 10]) == (100, 100, 100)
    assert tuple(second[0, 80]) == app_module.BOX_COLOURS["completed"]  # the face fills the crop: its border
    assert (third == 100).all()  # no face: no box


def test_face_crops_are_written_once_per_request(app_module, tmp_path, monkeypatch):
    """Issue 17 cause 5: a face-crop PNG was rewritten (same content, same cache path) while another client
    downloaded it. Each request writes its own files, creating them (never overwriting), and the gallery gets paths,
    which Gradio copies into its cache without ever rewriting a copy that exists; images or arrays would instead be
    encoded into a content-named file that Gradio writes again for every request with the same crops."""
    import gradio as gr
    from gradio import processing_utils

    images = app_module.face_crop_images(
        np.full((2, 32, 32, 3), 100, np.uint8), [[0, 0, 8, 8]] * 2, [[0, 0, 32, 32]] * 2, ["detected"] * 2
    )
    first = app_module.write_face_gallery(images, tmp_path / "request-1")
    second = app_module.write_face_gallery(images, tmp_path / "request-2")
    assert [caption for _, caption in first] == ["frame 1", "frame 2"]
    assert {Path(path).parent for path, _ in first} == {tmp_path / "request-1"}
    assert not {path for path, _ in first} & {path for path, _ in second}
    with pytest.raises(FileExistsError):  # a request folder is never written twice
        app_module.write_face_gallery(images, tmp_path / "request-1")

    def rewrites(*args, **kwargs):
        raise AssertionError("the gallery went through Gradio's encode-to-cache path")

    monkeypatch.setattr(processing_utils, "save_img_array_to_cache", rewrites)
    monkeypatch.setattr(processing_utils, "save_pil_to_cache", rewrites)
    gallery = gr.Gallery(format="png").postprocess(first)
    assert [item.image.path for item in gallery.root] == [path for path, _ in first]

    cache = tmp_path / "cache"
    copied = Path(processing_utils.save_file_to_cache(first[0][0], str(cache)))
    inode, content = copied.stat().st_ino, copied.read_bytes()
    again = Path(processing_utils.save_file_to_cache(second[0][0], str(cache)))  # same crop, another request
    assert again == copied and copied.stat().st_ino == inode and copied.read_bytes() == content


# ---- the request handler on the model's pipeline (in this process) ------------------------------------------------


@pytest.fixture(scope="module")
def demo_app(app_module, tiny_dir):
    return app_module.NanoEmoXDemo(
        app_module.ServedModel(str(tiny_dir), "given"),
        device="cpu",
        storage=app_module.Storage(max_age_s=120, sweep_every_s=7, request_files_grace_s=0.2),
    )


def test_handler_reads_gates_from_the_pipeline_and_cleans_up(app_module, demo_app, media, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(app_module, "REQUEST_FILES_ROOT", tmp_path / "requests")

    hooked_from = []  # the gates are an output of the pipeline: no hooks of the demo's on the model's internals
    register_forward_hook = torch.nn.Module.register_forward_hook

    def recording(module, *args, **kwargs):
        hooked_from.append(inspect.stack()[1].filename)
        return register_forward_hook(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", recording)
    folders = []
    for _ in range(2):
        outputs = None
        for outputs in demo_app.analyze(str(media["face_voice"]), None, "We won!", "", "mer", 8):
            faces = outputs[3]
            if isinstance(faces, list) and faces:
                assert all(Path(path).is_file() for path, _ in faces)  # there while Gradio copies them
                folders.append(Path(faces[0][0]).parent)
        answer, _, _, faces, gates, summary, details = outputs
        assert answer == details["tasks"]["mer"]["answer"] and "\ufffd" not in answer
        assert details["fusion_gate_weights"] == pytest.approx(gates["weight"].tolist())
        # A softmax; in bf16 (the demo's dtype on a CPU with native bf16) each weight has 3 significant digits.
        assert len(gates) == 3 and sum(details["fusion_gate_weights"]) == pytest.approx(1.0, abs=1e-2)
        assert details["face_source"] == ["detected"] * 8 and len(details["crop_boxes_xywh"]) == 8
    assert str(APP) not in hooked_from
    assert len(set(folders)) == 2 and all(f.parent == tmp_path / "requests" for f in folders)
    deadline = time.monotonic() + 10
    while any(f.exists() for f in folders) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(f.exists() for f in folders)  # deleted once the grace period is over

    blocks = demo_app.build()
    assert blocks.delete_cache == (7, 120)


def test_handler_deletes_a_refused_upload(app_module, demo_app, media, tmp_path, monkeypatch):
    import gradio as gr

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(app_module, "REQUEST_FILES_ROOT", tmp_path / "requests")
    upload = tmp_path / "gradio" / "f00d" / "corrupt.mp4"
    upload.parent.mkdir(parents=True)
    shutil.copyfile(media["corrupt"], upload)
    kept = tmp_path / "gradio" / "beef" / "face_voice.mp4"
    kept.parent.mkdir(parents=True)
    shutil.copyfile(media["face_voice"], kept)
    with pytest.raises(gr.Error, match="could not be read as video"):
        list(demo_app.analyze(str(upload), None, "", "", "mer", 4))
    assert not upload.exists()
    os.utime(kept, (1, 1))
    before = kept.stat().st_ctime_ns
    list(demo_app.analyze(str(kept), None, "", "", "msa", 2))
    assert kept.is_file()  # an accepted upload stays for reruns; Gradio's `delete_cache` sweeps it later
    assert kept.stat().st_ctime_ns > before  # in use: marked new, so that the sweep never takes it mid-request


def test_pipeline_comes_with_the_weights(app_module, demo_app, tmp_path):
    """A folder whose config names its pipeline (`custom_pipelines`) gets it as remote code, as
    `transformers.pipeline(model=folder, trust_remote_code=True)` would."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copyfile(REPO_ROOT / "modeling_nanoemox" / "pipeline_nanoemox.py", folder / "pipeline_nanoemox.py")
    (folder / "config.json").write_text("{}")
    model = demo_app.model
    saved = getattr(model.config, "custom_pipelines", None)
    model.config.custom_pipelines = {"nanoemox": {"impl": "pipeline_nanoemox.NanoEmoXPipeline", "pt": ["AutoModel"]}}
    try:
        pipe = app_module.load_pipeline(str(folder), model, demo_app.processor)
    finally:
        model.config.custom_pipelines = saved
    assert type(pipe).__name__ == "NanoEmoXPipeline" and type(pipe).__module__.startswith("transformers_modules")


# ---- the named API endpoint --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(server["url"], verbose=False)


@pytest.fixture(scope="module")
def direct_posts(server, media):
    """Posts straight to the upload route (no request ever uses them), made early so that the cache sweep has had
    time to come by when the test that checks it runs."""
    import httpx

    upload_url = server["url"] + "gradio_api/upload"
    with open(media["face_voice"], "rb") as file:
        stored = httpx.post(upload_url, files={"files": ("posted.mp4", file)}, timeout=30)
    too_big = httpx.post(
        upload_url, files={"files": ("too_big.mp4", b"\0" * (SERVER_MAX_FILE_MB + 1) * 2**20)}, timeout=30
    )
    return {"stored": stored, "too_big": too_big, "time": time.monotonic()}


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


def _stored(folder: Path, name: str) -> list[Path]:
    return sorted(folder.rglob(name)) if folder.exists() else []


def test_api_endpoint_answers(client, media, direct_posts):
    answer, chain, reply, faces, gates, summary, details = _call(client, media["face_voice"], text="We won!")
    assert answer.strip() and "\ufffd" not in answer
    assert len(faces) == 8 and any(face["caption"] == "frame 1" for face in faces)
    assert all(Path(face["image"]).is_file() for face in faces)
    weights = [row[1] for row in gates["data"]]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-2)  # bf16 on a CPU with native bf16
    assert details["fusion_gate_weights"] == pytest.approx(weights)
    assert details["modalities"] == ["video", "face", "audio", "audio-visual fusion"]
    assert details["tasks"]["mer"]["timings"]["tokens"] > 0
    assert len(details["face_boxes_xywh"]) == 8 and len(details["crop_boxes_xywh"]) == 8
    assert set(details["face_source"]) <= {"detected", "completed", "none"} and "detected" in details["face_source"]
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


def test_api_endpoint_separate_audio_and_refusals(client, server, media):
    *_, details = _call(client, media["face_silent"], audio=media["voice_only"], task="msa")
    assert "audio-visual fusion" in details["modalities"]
    _, _, _, faces, *_, details = _call(client, media["no_face"], task="msa", max_new_tokens=4)
    assert any("No face was found in any frame" in note for note in details["notes"])
    assert len(faces) == 8 and all(face["caption"].endswith("no face") for face in faces)
    from gradio_client.exceptions import AppError

    refusals = (
        ("corrupt", "could not be read as video"),
        ("text", "is not a video file type"),
        ("live_over_a_minute", "lasts more than 60 s; this demo takes clips up to 60 s"),  # live Matroska, measured
    )
    for clip, message in refusals:
        with pytest.raises(AppError, match=message):
            _call(client, media[clip])
        assert not _stored(server["uploads"], media[clip].name)  # a refused upload is deleted at once
    with pytest.raises(AppError, match="Upload or record a video"):
        _call(client, None)
    with pytest.raises(AppError, match="Dialogue history, line 1"):
        _call(client, media["face_voice"], task="erg", history="no prefix here")
    answer, *_ = _call(client, media["face_voice"])  # still serving
    assert answer.strip()


def test_live_clip_within_the_limit_is_served(client, media):
    answer, *_, details = _call(client, media["live"], max_new_tokens=4)
    assert answer.strip() and "audio-visual fusion" in details["modalities"]


def test_request_files_are_deleted_after_the_request(client, server, media):
    _call(client, media["face_voice"], max_new_tokens=2)
    deadline = time.monotonic() + SERVER_REQUEST_FILES_GRACE_S + 10
    while list(server["request_files"].iterdir()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server["request_files"].is_dir() and not list(server["request_files"].iterdir())


def test_upload_route_is_bounded_and_swept(server, direct_posts):
    """Issue 17 cause 5: posts straight to the upload route were kept forever, 20 MB a call. Now the route takes
    files up to `--max-file-mb`, and what it stores goes with Gradio's cache sweep (`delete_cache`)."""
    assert direct_posts["too_big"].status_code == 413
    assert not _stored(server["uploads"], "too_big.mp4")
    assert direct_posts["stored"].status_code == 200
    (stored,) = direct_posts["stored"].json()
    assert Path(stored).is_relative_to(server["uploads"])
    deadline = direct_posts["time"] + SERVER_CACHE_MAX_AGE_S + 3 * SERVER_CACHE_SWEEP_S + 10
    while Path(stored).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not Path(stored).exists()
    assert server["process"].poll() is None


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

    # A corrupt upload: a readable message on the page, and the file is not kept.
    page.locator("#video-input button[aria-label='Clear']").click()
    page.locator("#video-input input[type=file]").set_input_files(str(media["corrupt"]))
    page.locator("#run-button").click()
    page.get_by_text("corrupt.mp4 could not be read as video").first.wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
    assert not _stored(server["uploads"], "corrupt.mp4")

    # The app keeps serving: a good request works again.
    page.locator("#video-input button[aria-label='Clear']").click()
    page.locator("#video-input input[type=file]").set_input_files(str(media["face_voice"]))
    page.locator("#video-input video").wait_for(timeout=15_000)
    _run_and_wait(page, "OV-MER · open-vocabulary emotions")
    assert page.locator("#answer textarea").input_value().strip()
    assert page.locator("#faces img").count() >= 1
    assert server["process"].poll() is None


def test_quantized_cpu_demo_and_refused_gpu_quantization(app_module, tiny_dir):
    """Issue 16: `--quantize int8` serves the library's CPU path (the towers' linears become dynamically quantized);
    asking for it on another device is a clear error."""
    app = app_module.NanoEmoXDemo(app_module.ServedModel(str(tiny_dir), "given"), device="cpu", quantize="int8")
    kinds = {type(m).__module__ for m in app.model.model.vision_tower.modules() if type(m).__name__ == "Linear"}
    assert kinds == {"torch.ao.nn.quantized.dynamic.modules.linear"}, kinds
    from transformers import AutoConfig, AutoModel

    # The page states the model's size, not what is left in `parameters()` once the linear layers are replaced.
    config = AutoConfig.from_pretrained(tiny_dir, trust_remote_code=True)
    unquantized = AutoModel.from_config(config, trust_remote_code=True)
    assert app.num_parameters == sum(p.numel() for p in unquantized.parameters())
    assert app.num_parameters > sum(p.numel() for p in app.model.parameters())
    with pytest.raises(ValueError, match="is for CPU inference"):
        app_module.NanoEmoXDemo(app_module.ServedModel(str(tiny_dir), "given"), device="cuda", quantize="int8")


def test_cpu_path_without_the_nanoemox_package(app_module, monkeypatch):
    """A Space without the package serves the model as loaded, and refuses `--quantize` with what to install."""
    monkeypatch.setitem(sys.modules, "modeling_nanoemox.quantization_nanoemox", None)  # import → ImportError
    model = object()  # served as it is
    assert app_module.cpu_inference_path(model, None) is model
    import torch

    assert app_module.default_dtype("cpu") == torch.float32 and app_module.default_dtype("cuda") == torch.bfloat16
    with pytest.raises(ValueError, match="needs the nanoemox package"):
        app_module.cpu_inference_path(model, "int8")

"""What a user sees from `nanoemox predict` / `nanoemox eval run` on hostile input (issue 17, causes 7, 10 and 11's
generation budget): one line on stderr and exit 1, never a traceback; `eval run` skips and counts bad samples on
request and keeps media inside the media root."""

import json
import shutil

import numpy as np
import pytest
import torch

from modeling_nanoemox.data import write_manifest
from modeling_nanoemox.predict import generation_budget
from modeling_nanoemox.synthetic import synthetic_voice, write_clip
from nanoemox_cli import main


def one_error_line(capsys, code, *fragments):
    captured = capsys.readouterr()
    assert code == 1, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---- cause 10: predict ---------------------------------------------------------------------------------------------


def test_cuda_on_a_torch_without_cuda_is_one_line(tiny_dir, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["predict", "--model", str(tiny_dir), "--text", "hi", "--task", "msa", "--device", "cuda"])
    one_error_line(capsys, code, "--device cuda: no CUDA device is usable", "--device cpu")
    code = main(["predict", "--model", str(tiny_dir), "--text", "hi", "--task", "msa", "--device", "banana"])
    one_error_line(capsys, code, "not a device torch knows")


def test_a_phase_folder_without_a_processor_is_one_line(tiny_dir, tmp_path, capsys):
    phase = tmp_path / "phase_1.1"
    checkpoint = phase / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_dir / name, checkpoint / name)
    code = main(["predict", "--model", str(checkpoint), "--text", "hi", "--task", "msa"])
    one_error_line(capsys, code, "has no processor", "final/")
    (phase / "final").mkdir()
    code = main(["predict", "--model", str(phase), "--text", "hi", "--task", "msa"])
    one_error_line(capsys, code, "has no config.json", "Did you mean")


def test_a_model_folder_with_only_a_malicious_pickle_is_refused_in_one_line(tiny_dir, tmp_path, capsys):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"weight": Payload()}, folder / "pytorch_model.bin")
    code = main(["predict", "--model", str(folder), "--text", "hi", "--task", "msa"])
    captured_line = one_error_line(capsys, code, "refused", "safetensors")
    assert "this must never run" not in captured_line


def test_an_unexpected_library_error_is_still_one_line(capsys, monkeypatch):
    import modeling_nanoemox.predict as predict_module

    def explode(*args, **kwargs):
        raise KeyError("some_internal_key")

    monkeypatch.setattr(predict_module, "load", explode)
    code = main(["predict", "--model", "whatever", "--text", "hi", "--task", "msa"])
    one_error_line(capsys, code, "KeyError", "some_internal_key", "--verbose")


# ---- cause 11: generation budget -----------------------------------------------------------------------------------


def test_max_new_tokens_past_the_context_is_clamped_with_a_warning(tiny_model, caplog):
    context = tiny_model.config.text_config.max_position_embeddings
    assert generation_budget(tiny_model, 100, 100000) == context - 100
    assert "goes past the" in caplog.text
    assert generation_budget(tiny_model, 100, 16) == 16
    with pytest.raises(ValueError, match="no room left"):
        generation_budget(tiny_model, context, 8)
    with pytest.raises(ValueError, match="at least 1"):
        generation_budget(tiny_model, 10, 0)


def test_max_new_tokens_must_be_positive_on_the_command_line(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["predict", "--model", "m", "--text", "hi", "--task", "msa", "--max-new-tokens", "-5"])
    assert raised.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


# ---- cause 7: eval run ---------------------------------------------------------------------------------------------


@pytest.fixture
def hostile_manifest(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for index in range(3):
        frames = (rng.random((6, 48, 48, 3)) * 255).astype(np.uint8)
        write_clip(root / f"clip{index}.mp4", frames, fps=6, audio=synthetic_voice(1.0, seed=index))
        rows.append({"id": f"good{index}", "task": "msa", "video": f"clip{index}.mp4", "text": "hi", "reference": 1.0})
    (root / "noise.mp4").write_bytes(rng.bytes(4000))
    rows.append({"id": "undecodable", "task": "msa", "video": "noise.mp4", "text": "hi", "reference": -1.0})
    # A perfectly good clip, but outside the media root: it must never be opened.
    write_clip(outside / "secret.mp4", (rng.random((6, 48, 48, 3)) * 255).astype(np.uint8), fps=6)
    rows.append({"id": "escape", "task": "msa", "video": "../outside/secret.mp4", "text": "hi", "reference": -1.0})
    rows.append(
        {"id": "passwd", "task": "msa", "video": "../../../../../../etc/passwd", "text": "x", "reference": 1.0}
    )
    return write_manifest(rows, root / "test.jsonl")


def eval_args(tiny_dir, manifest, out, *extra):
    return ["eval", "run", "--model", str(tiny_dir), "--data", str(manifest), "--task", "msa", "--out", str(out),
            "--batch-size", "2", "--max-new-tokens", "2", "--no-plots", "--protocol", "direct", *extra]  # fmt: skip


def test_eval_run_refuses_media_outside_the_root(tiny_dir, hostile_manifest, tmp_path, capsys):
    code = main(eval_args(tiny_dir, hostile_manifest, tmp_path / "run"))
    one_error_line(capsys, code, "outside the media root", "escape", "passwd")
    assert not (tmp_path / "run" / "predictions.jsonl").exists()  # refused before any generation


def test_eval_run_skips_and_counts_bad_samples_on_request(tiny_dir, hostile_manifest, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(eval_args(tiny_dir, hostile_manifest, out, "--on-missing", "skip"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads(captured.out)["n_samples"] == 3
    predictions = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert predictions == ["good0", "good1", "good2"]
    skipped = {row["id"]: row["reason"] for row in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert set(skipped) == {"undecodable", "escape", "passwd"}
    assert "outside the media root" in skipped["escape"] and "MediaDecodeError" in skipped["undecodable"]
    meta = json.loads((out / "scores.json").read_text())["meta"]
    assert (meta["skipped_unusable_media"], meta["skipped_outside_media_root"], meta["skipped_missing_media"]) == (
        1,
        2,
        0,
    )


def test_eval_run_names_the_undecodable_sample_when_it_stops(tiny_dir, tmp_path, capsys):
    from modeling_nanoemox.evaluation.run import run_evaluation
    from modeling_nanoemox.predict import load

    root = tmp_path / "media"
    root.mkdir()
    (root / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    manifest = write_manifest(
        [{"id": "bad", "task": "msa", "video": "noise.mp4", "text": "hi", "reference": 1.0}], root / "m.jsonl"
    )
    model, processor = load(str(tiny_dir), "cpu", "float32")
    with pytest.raises(ValueError, match="sample\\(s\\) bad: .*not a readable media file.*on_error='skip'"):
        run_evaluation(model, processor, manifest, "msa", tmp_path / "run", plots=False, protocol="direct")
    with pytest.raises(ValueError, match="No 'msa' sample could be used"):
        run_evaluation(
            model,
            processor,
            manifest,
            "msa",
            tmp_path / "run2",
            plots=False,
            on_error="skip",
            protocol="direct",
        )

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_nanoemox.data import write_manifest
from modeling_nanoemox.evaluation.run import generate_predictions, read_predictions
from modeling_nanoemox.synthetic import synthetic_voice, write_clip
from nanoemox_cli import main


def make_manifest(folder, count=5):
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        frames = (rng.random((6, 48, 48, 3)) * 255).astype(np.uint8)
        write_clip(folder / f"clip{index}.mp4", frames, fps=6, audio=synthetic_voice(1.0, seed=index))
        rows.append(
            {"id": f"s{index}", "task": "msa", "video": f"clip{index}.mp4", "text": "what a day",
             "reference": 1.0 if index % 2 else -1.0}
        )  # fmt: skip
    return write_manifest(rows, folder / "test.jsonl")


def test_eval_run_generates_scores_and_reports(tmp_path, tiny_dir, capsys):
    manifest = make_manifest(tmp_path)
    code = main(["eval", "run", "--model", str(tiny_dir), "--data", str(manifest), "--task", "msa",
                 "--out", str(tmp_path / "run"), "--batch-size", "2", "--no-plots", "--protocol", "direct"])  # fmt: skip
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["n_samples"] == 5
    assert scores["protocol"] == "direct" and scores["prompt_task"] == "msa"
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in predictions] == [f"s{i}" for i in range(5)]
    assert json.loads((tmp_path / "run" / "scores.json").read_text())["metrics"]["accuracy"] == scores["accuracy"]
    assert (tmp_path / "run" / "scores.md").is_file()


def test_eval_run_resumes_after_a_kill(tmp_path, tiny_model, tiny_processor):
    from modeling_nanoemox.data import load_manifest

    samples, _ = load_manifest(make_manifest(tmp_path, count=4))
    out = tmp_path / "run"
    out.mkdir()
    # Two predictions written, then the process died in the middle of the third line.
    (out / "predictions.jsonl").write_text(
        '{"id": "s0", "prediction": "positive"}\n{"id": "s1", "prediction": "negative"}\n{"id": "s2", "predi'
    )
    calls = []
    original = tiny_model.generate

    def counting_generate(**kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    tiny_model.generate = counting_generate
    try:
        rows = generate_predictions(tiny_model, tiny_processor, samples, "msa", out, batch_size=8, max_new_tokens=2)
    finally:
        del tiny_model.generate
    assert calls == [2]  # only s2 and s3 were generated
    assert [row["prediction"] for row in rows[:2]] == ["positive", "negative"]
    assert list(read_predictions(out / "predictions.jsonl")) == ["s0", "s1", "s2", "s3"]


def test_eval_run_needs_references(tmp_path, tiny_dir, capsys):
    manifest = write_manifest([{"id": "a", "task": "msa", "text": "hi"}], tmp_path / "m.jsonl")
    code = main(["eval", "run", "--model", str(tiny_dir), "--data", str(manifest), "--task", "msa",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 1
    assert "have no `reference`" in capsys.readouterr().err


WHEEL_DIR = Path(__file__).parents[2] / "shared" / "data" / "emotion_wheel"


def test_paper_protocol_asks_the_ovmer_question_and_scores_msa_as_mer_unibench(tmp_path, tiny_model, tiny_processor):
    """Issue 12 item 5: `--protocol paper` (the default for MSA and MER) asks every sample the OV-MER question (the
    authors' `--zeroshot`, inference_hybird.py:136-138) and scores the extracted labels' sentiment
    (evaluation-scoreonly.py:182-194)."""
    if not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip("emotion-wheel resources not available")
    from modeling_nanoemox.evaluation.run import default_protocol, prompt_task, run_evaluation

    assert default_protocol("msa") == default_protocol("mer") == "paper" and default_protocol("mir") == "direct"
    assert prompt_task("msa", "paper") == prompt_task("mer", "paper") == "ovmer"
    assert prompt_task("msa", "direct") == "msa" and prompt_task("erg", "paper") == "erg"
    asked = []
    original = tiny_processor.build_task_messages

    def recording(task, **kwargs):
        asked.append(task)
        return original(task, **kwargs)

    tiny_processor.build_task_messages = recording
    try:
        result = run_evaluation(tiny_model, tiny_processor, make_manifest(tmp_path, count=2), "msa", tmp_path / "run",
                                max_new_tokens=3, plots=False, score_kwargs={"emotion_wheel": str(WHEEL_DIR)})  # fmt: skip
    finally:
        del tiny_processor.build_task_messages
    assert set(asked) == {"ovmer"}
    assert result["meta"]["protocol"] == "paper" and result["meta"]["prompt_task"] == "ovmer"
    assert result["meta"]["sentiment"].startswith("wheel-valence")
    assert set(result["metrics"]) == {"weighted_f1", "accuracy"}


def test_generation_in_the_authors_style_stops_on_the_end_marker(tmp_path, tiny_model, tiny_processor):
    """With `prompt_style="authors"`, generate gets `stop_strings=["###"]` and answers are cut there
    (conversation/conversation_video.py:116-123, 279-280)."""
    from transformers import AutoProcessor

    from modeling_nanoemox.data import load_manifest
    from modeling_nanoemox.evaluation.run import _generate_batch

    tiny_processor.save_pretrained(tmp_path / "p")
    authors = AutoProcessor.from_pretrained(tmp_path / "p", prompt_style="authors", trust_remote_code=True)
    samples, _ = load_manifest(make_manifest(tmp_path, count=1))
    seen = {}

    def fake_generate(**kwargs):
        seen.update(kwargs)
        answer = authors.tokenizer(["happy###Human: more"], add_special_tokens=False, return_tensors="pt")
        return torch.cat([kwargs["input_ids"], answer["input_ids"]], dim=1)

    tiny_model.generate = fake_generate
    try:
        answers = _generate_batch(tiny_model, authors, samples, "ovmer", 4)
    finally:
        del tiny_model.generate
    assert seen["stop_strings"] == ["###"] and seen["tokenizer"] is authors.tokenizer
    assert answers == ["happy"]
    prompt = authors.tokenizer.decode(seen["input_ids"][0])
    assert prompt.startswith("<|im_start|>###Human: ") and prompt.endswith("###Assistant: ")


def test_paper_protocol_without_the_wheel_fails_before_generating(tmp_path, tiny_dir, capsys, monkeypatch):
    """MSA/MER under the paper's protocol need the emotion wheel to score: say so before the (long) generation."""
    from modeling_nanoemox.evaluation import run

    monkeypatch.setattr(run, "generate_predictions", lambda *a, **k: pytest.fail("generated before the check"))
    manifest = write_manifest([{"id": "a", "task": "mer", "text": "hi", "reference": "happy"}], tmp_path / "m.jsonl")
    code = main(["eval", "run", "--model", str(tiny_dir), "--data", str(manifest), "--task", "mer",
                 "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 1
    assert "needs --emotion-wheel" in capsys.readouterr().err

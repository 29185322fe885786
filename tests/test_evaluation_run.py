import json

import numpy as np

from nanoemox_cli import main
from modeling_nanoemox.data import write_manifest
from modeling_nanoemox.evaluation.run import generate_predictions, read_predictions
from modeling_nanoemox.synthetic import synthetic_voice, write_clip


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
                 "--out", str(tmp_path / "run"), "--batch-size", "2", "--no-plots"])  # fmt: skip
    assert code == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["accuracy"] <= 1.0 and scores["n_samples"] == 5
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

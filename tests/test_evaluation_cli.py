# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox eval score` end to end, and the reports it writes."""

import argparse
import json
from pathlib import Path

import pytest

from modeling_nanoemox.evaluation import score, write_reports
from modeling_nanoemox.evaluation.cli import main, register, run_score

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
WHEEL_DIR = SHARED_DATA / "emotion_wheel"


@pytest.fixture(scope="module")
def wheel_dir():
    if not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip(f"emotion-wheel resources not found at {WHEEL_DIR} (third-party data, only in the workplace)")
    return WHEEL_DIR


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def ovmer_files(tmp_path):
    predictions = [
        {"id": "s1", "prediction": ["anxiety", "nervousness", "self-blame", "regret", "sorrow"]},
        {"id": "s2", "prediction": "[joyful, thankful]"},
        {"id": "s3", "prediction": "[]"},
    ]
    references = [
        {"id": "s1", "reference": "regret, guilt, sadness"},
        {"id": "s2", "reference": ["happy", "grateful", "shy"]},
        {"id": "s3", "reference": "worried"},
    ]
    return write_jsonl(tmp_path / "p.jsonl", predictions), write_jsonl(tmp_path / "r.jsonl", references)


def test_cli_prints_exactly_one_json_object(ovmer_files, wheel_dir, tmp_path, capsys):
    predictions, references = ovmer_files
    out_dir = tmp_path / "run"
    argv = ["eval", "score", "--task", "ovmer", "--predictions", predictions, "--references", references]
    status = main([*argv, "--emotion-wheel", str(wheel_dir), "--out", str(out_dir)])
    captured = capsys.readouterr()
    assert status == 0
    lines = captured.out.splitlines()
    assert len(lines) == 1
    scores = json.loads(lines[0])
    assert isinstance(scores, dict)
    assert scores["ew_level1_f_score"] == pytest.approx(0.509784, abs=5e-7)
    assert scores["extractor"].startswith("lexicon-v1") and scores["task"] == "ovmer"
    assert all(not isinstance(value, (dict, list)) for value in scores.values())  # flat
    # Reports.
    saved = json.loads((out_dir / "scores.json").read_text(encoding="utf-8"))
    assert saved["metrics"]["ew_level1_f_score"] == scores["ew_level1_f_score"]
    assert "| ew_level1_f_score | 0.5098 |" in (out_dir / "scores.md").read_text(encoding="utf-8")
    assert (out_dir / "per_wheel.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_level2(ovmer_files, wheel_dir, capsys):
    predictions, references = ovmer_files
    argv = ["eval", "score", "--task", "ovmer", "--predictions", predictions, "--references", references]
    assert main([*argv, "--emotion-wheel", str(wheel_dir), "--level", "level2"]) == 0
    assert json.loads(capsys.readouterr().out)["f_score"] == pytest.approx(0.331313, abs=5e-7)


@pytest.mark.parametrize(
    "setup, message",
    [
        ("missing_ids", "references without a prediction: 1 ('s3')"),
        ("bad_json", "p.jsonl:2: not valid JSON"),
        ("no_wheel", "needs the emotion-wheel folder"),
        ("no_file", "No such file"),
        ("eri_no_judge", "needs an LLM judge"),
    ],
)
def test_cli_bad_input_is_one_line_on_stderr(tmp_path, capsys, monkeypatch, setup, message):
    monkeypatch.delenv("NANOEMOX_EMOTION_WHEEL", raising=False)
    predictions = [{"id": "s1", "prediction": "happy"}, {"id": "s2", "prediction": "sad"}]
    references = [{"id": "s1", "reference": "happy"}, {"id": "s2", "reference": "sad"}]
    task, extra = "mer", ["--emotion-wheel", str(WHEEL_DIR)]
    if setup == "missing_ids":
        references.append({"id": "s3", "reference": "angry"})
    if setup == "no_wheel":
        task, extra = "ovmer", []
    if setup == "eri_no_judge":
        task = "eri"
    p = write_jsonl(tmp_path / "p.jsonl", predictions)
    r = write_jsonl(tmp_path / "r.jsonl", references)
    if setup == "bad_json":
        Path(p).write_text('{"id": "s1", "prediction": "happy"}\n{"id": "s2", \n', encoding="utf-8")
    if setup == "no_file":
        p = str(tmp_path / "absent.jsonl")
    if setup == "missing_ids" and not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip("emotion-wheel resources not found")
    status = main(["eval", "score", "--task", task, "--predictions", p, "--references", r, *extra])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err
    assert captured.err.startswith("nanoemox eval score: error: ") and "Traceback" not in captured.err


def test_cli_mir_with_label_preset(tmp_path, capsys):
    predictions = [{"id": 1, "prediction": "complain"}, {"id": 2, "prediction": "Praise"}]
    references = [{"id": 1, "reference": "Complain"}, {"id": 2, "reference": "Praise"}]
    p, r = write_jsonl(tmp_path / "p.jsonl", predictions), write_jsonl(tmp_path / "r.jsonl", references)
    assert main(["eval", "score", "--task", "mir", "--predictions", p, "--references", r, "--labels", "mintrec"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["accuracy"] == 1.0 and scores["n_labels"] == 20
    # Macro F1 over the 20 MIntRec labels: 18 labels never occur and score 0.
    assert scores["macro_f1"] == pytest.approx(2 / 20)


def test_register_adds_eval_to_an_existing_parser():
    parser = argparse.ArgumentParser(prog="nanoemox")
    subparsers = parser.add_subparsers(dest="command")
    register(subparsers)
    args = parser.parse_args(["eval", "score", "--task", "msa", "--predictions", "p", "--references", "r"])
    assert args.command == "eval" and args.eval_command == "score" and args.handler is run_score
    args = parser.parse_args(["eval", "run", "--model", "m", "--data", "d", "--task", "mer", "--out", "o"])
    assert args.eval_command == "run" and args.batch_size == 4


def test_reports_for_closed_set_tasks(tmp_path):
    references = [{"id": i, "reference": label} for i, label in enumerate(["Thank", "Greet", "Thank", "Leave"])]
    predictions = [{"id": i, "prediction": label} for i, label in enumerate(["thank", "greet", "leave", "oops"])]
    result = score("mir", predictions, references)
    written = {path.name for path in write_reports(tmp_path, "mir", result)}
    assert written == {"scores.json", "scores.md", "confusion_matrix.png"}
    matrix = json.loads((tmp_path / "scores.json").read_text())["details"]["confusion"]
    assert matrix["labels"] == ["greet", "leave", "thank", "(other)"]
    assert matrix["matrix"][2] == [0, 1, 1, 0]  # gold "thank": one right, one predicted "leave"
    with pytest.raises(ValueError, match="task 'msa'"):
        write_reports(tmp_path, "msa", result)


def test_msa_paper_protocol_scores_the_sentiment_of_extracted_labels(wheel_dir):
    """MER-UniBench's MSA: OV answer → labels → sentiment → positive vs. the rest (evaluation-scoreonly.py:182-194)."""
    predictions = [{"id": "a", "prediction": "The character's emotional state is joyful, happy."},
                   {"id": "b", "prediction": "The character's emotional state is sad, angry."},
                   {"id": "c", "prediction": "The character's emotional state is sad."}]  # fmt: skip
    references = [{"id": "a", "reference": 1.2}, {"id": "b", "reference": -0.8}, {"id": "c", "reference": 0.0}]
    result = score("msa", predictions, references, emotion_wheel=wheel_dir, protocol="paper")
    assert result["metrics"] == {"weighted_f1": 1.0, "accuracy": 1.0}
    assert result["meta"]["protocol"] == "paper" and result["meta"]["n_dropped_zero_valence"] == 1
    direct = score("msa", predictions, references)
    assert direct["meta"]["protocol"] == "direct" and direct["meta"]["n_pred_without_sentiment"] == 2


def test_msa_paper_protocol_with_an_llm_uses_the_authors_sentiment_prompt(wheel_dir):
    from modeling_nanoemox.evaluation.backends import ChatBackend

    class Fake(ChatBackend):
        identity = "fake"
        prompts = []

        def chat_batch(self, conversations, *, max_new_tokens=64):
            self.prompts += [c[0]["content"] for c in conversations]
            return ["happy" if "Description:" in c[0]["content"] else "positive" for c in conversations]

        def chat(self, messages, *, max_new_tokens=64):
            return self.chat_batch([messages], max_new_tokens=max_new_tokens)[0]

    fake = Fake()
    result = score("msa", [{"id": "a", "prediction": "She is full of joy."}], [{"id": "a", "reference": 1.0}],
                   emotion_wheel=wheel_dir, extractor=fake, protocol="paper")  # fmt: skip
    assert result["meta"]["sentiment"] == "llm:fake|prompt=authors-openset-to-sentiment"
    assert any("choose the most likely sentiment from the given candidates" in p for p in fake.prompts)
    assert result["metrics"]["accuracy"] == 1.0


def test_mer_paper_protocol_needs_the_wheel_and_erg_reads_the_authors_emotion_sentence():
    with pytest.raises(ValueError, match="emotion-wheel hit rate"):
        score("mer", [{"id": "a", "prediction": "x"}], [{"id": "a", "reference": "happy"}], protocol="paper")
    # The authors' emotion sub-task answer and their chain of empathy (base_dataset.py:425-430, :446).
    chain = ("<think>Firstly, the event scenario of this conversation is: a loss\nSecondly, the emotion of the speaker "
             "is Sadness\nThirdly, the emotion cause is x\nFourthly, the goal to response is y</think>\n So sorry.")  # fmt: skip
    result = score("erg", [{"id": "a", "prediction": chain}, {"id": "b", "prediction": "The emotion of the speaker is anxious."}],
                   [{"id": "a", "reference": "sadness"}, {"id": "b", "reference": "anxious"}])  # fmt: skip
    assert result["metrics"]["emotion_accuracy"] == 1.0
    mer = score("mer", [{"id": "a", "prediction": "The emotion of the speaker is anxious."}],
                [{"id": "a", "reference": "anxious"}], labels=["anxious", "sadness"])  # fmt: skip
    assert mer["metrics"]["accuracy"] == 1.0

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""LLM-backed parts of the evaluation: backends, the ERI judge, the label extractors (all with fake or tiny LLMs)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from modeling_nanoemox.evaluation import (
    JUDGE_PROMPT_VERSION,
    BackendError,
    ChatBackend,
    ERIJudge,
    LexiconExtractor,
    LLMLabelExtractor,
    OpenAIChatBackend,
    TransformersChatBackend,
    flat_scores,
    parse_judge_score,
    read_emer_references,
    score,
)
from modeling_nanoemox.evaluation import backends as backends_module
from modeling_nanoemox.evaluation.extractors import parse_extractor_reply

SHARED_DATA = Path(__file__).parents[2] / "shared" / "data"
WHEEL_DIR = SHARED_DATA / "emotion_wheel"
EMER_GT = SHARED_DATA / "emer" / "gt-eng.csv"


class CannedBackend(ChatBackend):
    """Answers from a function of the last user message; records the prompts it saw."""

    identity = "fake:canned-v0"

    def __init__(self, reply):
        self.reply = reply
        self.prompts = []

    def chat(self, messages, *, max_new_tokens=256):
        self.prompts.append(messages[-1]["content"])
        return self.reply(messages[-1]["content"])


def judge_reply(prompt):
    if "Example reply" in prompt:  # emotion summary
        return "happy, excited"
    if "PREDICTED emotions" in prompt:  # label overlap
        return '{"score": 6, "reason": "partly the same"}'
    if "GARBLED" in prompt:  # clue overlap, unparsable
        return "I cannot rate this description."
    return "Step 1: ...\nStep 3: close match.\nScore: 8"


@pytest.fixture(scope="module")
def emer_references():
    if not EMER_GT.is_file():
        pytest.skip(f"EMER ground truth not found at {EMER_GT} (third-party data, only in the workplace)")
    return read_emer_references(EMER_GT)


# ---------------------------------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Score: 7", 7.0),
        ("Reasoning...\n**Score**: 9/10", 9.0),
        ('{"score": 4, "reason": "little overlap"}', 4.0),
        ("8", 8.0),
        ("score of 6.5", 6.5),
        ("Score: 3\n...\nFinal Score: 5", 5.0),
        ("Score: 0", None),
        ("Score: 11", None),
        ("The prediction deserves 7 points", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_judge_score(reply, expected):
    assert parse_judge_score(reply) == expected


def test_emer_ground_truth_parsing(emer_references):
    assert len(emer_references) == 100
    assert len({row["id"] for row in emer_references}) == 100
    first = emer_references[0]
    assert first["id"] == "sample_00000648"
    assert first["reference"]["emotion"] == "angry"
    assert first["reference"]["rationale"].endswith("his emotional state is anger.")
    # Quoted fields with embedded quotes survive.
    assert '"thank you"' in emer_references[1]["reference"]["rationale"]


def test_eri_judge_counts_parse_failures(emer_references):
    references = emer_references[:4]
    predictions = [
        {"id": references[0]["id"], "prediction": "He is furious and shouting."},
        {"id": references[1]["id"], "prediction": "GARBLED output"},
        {"id": references[2]["id"], "prediction": "She seems happy."},
        {"id": references[3]["id"], "prediction": "GARBLED again"},
    ]
    backend = CannedBackend(judge_reply)
    result = score("eri", predictions, references, judge=backend)
    flat = flat_scores(result)
    # Failures are left out of the mean, not scored 0.
    assert flat["clue_overlap_1_10"] == 8.0
    assert flat["n_clue_parse_failures"] == 2 and flat["n_clue_scored"] == 2
    assert flat["label_overlap_1_10"] == 6.0 and flat["n_label_parse_failures"] == 0
    assert flat["overall_1_10"] == 7.0
    assert flat["judge"] == "fake:canned-v0" and flat["judge_prompt_version"] == JUDGE_PROMPT_VERSION
    assert result["details"]["judge"]["clue"] == [8.0, None, 8.0, None]
    # 4 clue prompts + 4 distinct gold summaries + 4 prediction summaries + 4 label prompts.
    assert len(backend.prompts) == 16
    assert references[0]["reference"]["rationale"] in backend.prompts[0]


def test_eri_all_failures_give_none_not_zero():
    backend = CannedBackend(lambda prompt: "no score here")
    flat = flat_scores(score("eri", [{"id": 1, "prediction": "x"}], [{"id": 1, "reference": "y"}], judge=backend))
    assert flat["clue_overlap_1_10"] is None and flat["overall_1_10"] is None
    assert flat["n_clue_parse_failures"] == 1 and flat["n_label_parse_failures"] == 1


def test_eri_needs_a_judge():
    with pytest.raises(ValueError, match="needs an LLM judge"):
        score("eri", [{"id": 1, "prediction": "x"}], [{"id": 1, "reference": "y"}])
    with pytest.raises(TypeError, match="ERIJudge or a ChatBackend"):
        score("eri", [{"id": 1, "prediction": "x"}], [{"id": 1, "reference": "y"}], judge="gpt")
    assert ERIJudge(CannedBackend(judge_reply)).identity == "fake:canned-v0"


# ---------------------------------------------------------------------------------------------------------------------
# Extractors
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel_dir():
    if not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip(f"emotion-wheel resources not found at {WHEEL_DIR} (third-party data, only in the workplace)")
    return WHEEL_DIR


def test_lexicon_extractor(wheel_dir):
    extractor = LexiconExtractor(wheel_dir)
    text = "In the video she is not happy at all; her voice sounds anxious and she seems fed up. Anxious again."
    assert extractor.extract_one(text) == ["anxious", "fed up"]
    # A negation does not cross a clause boundary; stopwords ("emotional", "person") are ignored.
    assert extractor.extract_one("Not a word. Happy person, emotional") == ["happy"]
    assert extractor.identity == "lexicon-v1:emotion_wheel"


def test_llm_extractor_with_fake_backend(wheel_dir):
    backend = CannedBackend(lambda prompt: "Emotions: Worried, sad." if "clip" in prompt else "none")
    extractor = LLMLabelExtractor(backend)
    assert extractor.extract(["A long clip description.", "nothing"]) == [["worried", "sad"], []]
    assert extractor.identity == "llm:fake:canned-v0|prompt=extract-v1"

    references = [{"id": 1, "reference": "worried"}, {"id": 2, "reference": "happy"}]
    predictions = [
        {"id": 1, "prediction": "A long clip description of a man."},
        {"id": 2, "prediction": "[happy]"},
    ]
    result = flat_scores(score("ovmer", predictions, references, emotion_wheel=wheel_dir, extractor=backend))
    assert result["extractor"] == "llm:fake:canned-v0|prompt=extract-v1"
    assert result["n_pred_extractor"] == 1 and result["n_pred_label_string"] == 1
    # Sample 1: gold {worried}, predicted {worried, sad} -> P = 1/2; sample 2 exact -> P = 1.
    assert result["recall"] == 1.0 and result["precision"] == pytest.approx(0.75)


def test_parse_extractor_reply():
    assert parse_extractor_reply("happy, relieved\nBecause ...") == ["happy", "relieved"]
    assert parse_extractor_reply("[angry, 'upset']") == ["angry", "upset"]
    assert parse_extractor_reply("None") == [] and parse_extractor_reply("") == []


# ---------------------------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------------------------


class _ChatServer(BaseHTTPRequestHandler):
    requests: list = []
    fail_first: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, dict(self.headers), body))
        if type(self).fail_first:
            code = type(self).fail_first.pop(0)
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b'{"error": "busy"}')
            return
        payload = {
            "choices": [{"message": {"role": "assistant", "content": f"echo {body['messages'][-1]['content']}"}}]
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server(monkeypatch):
    monkeypatch.setattr(backends_module.time, "sleep", lambda seconds: None)
    _ChatServer.requests, _ChatServer.fail_first = [], []
    server = HTTPServer(("127.0.0.1", 0), _ChatServer)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _ChatServer
    server.shutdown()
    server.server_close()


def test_openai_backend_request_and_retry(chat_server, monkeypatch):
    base_url, handler = chat_server
    monkeypatch.setenv("NANOEMOX_TEST_KEY", "sk-test")
    backend = OpenAIChatBackend("judge-model", base_url=base_url, api_key_env="NANOEMOX_TEST_KEY", max_retries=2)
    handler.fail_first = [429, 503]
    assert backend.chat([{"role": "user", "content": "hi"}], max_new_tokens=5) == "echo hi"
    assert len(handler.requests) == 3
    path, headers, body = handler.requests[-1]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body == {
        "model": "judge-model",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.0,
        "max_tokens": 5,
    }
    assert backend.identity == f"openai-compatible:judge-model@{base_url}" and "sk-test" not in backend.identity


def test_openai_backend_errors(chat_server):
    base_url, handler = chat_server
    backend = OpenAIChatBackend("m", base_url=base_url, api_key="k", max_retries=1)
    handler.fail_first = [400]
    with pytest.raises(BackendError, match="HTTP 400"):
        backend.chat([{"role": "user", "content": "hi"}])
    handler.fail_first = [500, 500]
    with pytest.raises(BackendError, match="HTTP 500"):
        backend.chat([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="http"):
        OpenAIChatBackend("m", base_url="ftp://example")


def tiny_chat_model():
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    words = ["[PAD]", "[UNK]", "<eos>", "user", "assistant", ":", "Score", "7", "rate", "this", "happy", "sad"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", eos_token="<eos>"
    )
    hf_tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant : {% endif %}"
    )
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(words),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=0,
        eos_token_id=2,
    )
    return Qwen2ForCausalLM(config), hf_tokenizer


def test_transformers_backend_greedy_and_judge_failures():
    model, tokenizer = tiny_chat_model()
    backend = TransformersChatBackend(model=model, tokenizer=tokenizer, device="cpu", batch_size=2)
    assert backend.identity.startswith("transformers:")
    batch = [[{"role": "user", "content": "rate this"}], [{"role": "user", "content": "happy sad happy"}]] * 2
    first = backend.chat_batch(batch, max_new_tokens=4)
    assert len(first) == 4 and all(isinstance(reply, str) for reply in first)
    assert backend.chat_batch(batch, max_new_tokens=4) == first  # greedy: deterministic
    assert first[0] == first[2] and backend.chat(batch[1], max_new_tokens=4) == first[1]  # padding does not leak
    # A random tiny model never writes a valid score: every sample is a counted failure.
    judge = ERIJudge(backend, max_new_tokens=8, summary_max_new_tokens=4)
    flat = flat_scores(score("eri", [{"id": 1, "prediction": "happy"}], [{"id": 1, "reference": "sad"}], judge=judge))
    assert flat["n_clue_parse_failures"] + flat["n_clue_scored"] == 1


def test_transformers_backend_needs_a_chat_template():
    model, tokenizer = tiny_chat_model()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        TransformersChatBackend(model=model, tokenizer=tokenizer, device="cpu")

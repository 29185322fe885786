"""The folder's own pipeline (modeling_nanoemox/pipeline_nanoemox.py), remote-code loading, transformers' any-to-any."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import make_batch
from modeling_nanoemox.pipeline_nanoemox import (
    FACE_SOURCES,
    NanoEmoXPipeline,
    decode_answer,
    generate_with_fusion_gates,
)

HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("modeling_nanoemox", "nanoemox_processing", "processing"):
        sys.modules[name] = None  # the project's packages cannot be imported at all
    import numpy as np
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,
                              AutoProcessor, pipeline)

    folder, inputs_path, out_path = sys.argv[1:]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    models = [cls.from_pretrained(folder, trust_remote_code=True).eval()
              for cls in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText)]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = torch.load(inputs_path, weights_only=True)
    with torch.no_grad():
        logits = [model(**inputs).logits for model in models]
    frames = (np.random.default_rng(0).random((8, 40, 40, 3)) * 255).astype("uint8")
    audio = (np.zeros(4000, "float32"), 16000)
    processed = processor.prepare_task("msa", video=frames, audio=audio, text="hi")
    generated = models[0].generate(**processed, max_new_tokens=3, do_sample=False)
    pipe = pipeline(model=folder, trust_remote_code=True)  # the folder's own pipeline, without torchvision
    result = pipe(frames, task="mer", audio=audio, max_new_tokens=3)
    torch.save({"names": [type(config).__name__] + [type(m).__name__ for m in models] + [type(processor).__name__],
                "logits": logits, "generated": generated.shape[1] - processed["input_ids"].shape[1],
                "pipeline": type(pipe).__name__, "result": result}, out_path)
    """
)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip

    frames, _ = photo_clip_frames(real_face_photo(), 30, (240, 320))
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=15, audio=synthetic_voice(2.0))


@pytest.fixture(scope="module")
def pipe(tiny):
    model, processor = tiny
    return NanoEmoXPipeline(model=model, processor=processor, device=model.device)


def test_folder_loads_as_remote_code_without_the_project(tiny_model, tiny_dir, tmp_path):
    inputs = make_batch(tiny_model.config, [{"video", "face", "audio"}, {"audio"}])
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tiny_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=False)
    assert out["names"] == ["NanoEmoXConfig"] + ["NanoEmoXForConditionalGeneration"] * 3 + ["NanoEmoXProcessor"]
    with torch.no_grad():
        expected = tiny_model(**inputs).logits
    for logits in out["logits"]:
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert out["generated"] == 3
    assert out["pipeline"] == "NanoEmoXPipeline"
    assert out["result"]["task"] == "mer" and out["result"]["modalities"] == ["video", "face", "audio"]
    assert len(out["result"]["fusion_gate_weights"]) == tiny_model.config.num_fusion_experts
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_nanoemox.NanoEmoXForConditionalGeneration"
    assert config["custom_pipelines"] == {
        "nanoemox": {"impl": "pipeline_nanoemox.NanoEmoXPipeline", "pt": ["AutoModel"], "type": "multimodal"}
    }
    for name in ("configuration_nanoemox.py", "modeling_nanoemox.py", "processing_nanoemox.py", "chat_template.jinja",
                 "pipeline_nanoemox.py"):  # fmt: skip
        assert (tiny_dir / name).is_file(), name


def test_generate_with_fusion_gates_gives_the_tokens_of_plain_generate(tiny, clip):
    model, processor = tiny
    conversations = [
        [{"role": "user", "content": [{"type": "video", "video": str(clip)}, {"type": "text", "text": "Why?"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Hello there, how are you today?"}]}],
    ]
    inputs = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                           return_dict=True, padding=True, load_audio_from_video=True)  # fmt: skip
    assert inputs["attention_mask"][1, 0] == 0  # left padding in play
    with torch.inference_mode():
        plain = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        gates_of_forward = model(**inputs).fusion_gate_weights
    sequences, gates = generate_with_fusion_gates(model, inputs, max_new_tokens=8, do_sample=False)
    assert torch.equal(sequences, plain)
    torch.testing.assert_close(gates, gates_of_forward)
    assert abs(float(gates[0].sum()) - 1) < 1e-5 and torch.all(gates[1] == 0)  # sample 1 has no fusion


def test_pipeline_task_call_returns_answer_faces_and_gates(pipe, clip):
    result = pipe(str(clip), task="erg", text="I lost my keys", history=[{"role": "user", "content": "hi"}],
                  max_new_tokens=4)  # fmt: skip
    assert result["task"] == "erg" and {"chain_of_empathy", "reply"} <= set(result)
    assert result["modalities"] == ["video", "face", "audio"]
    assert len(result["face_boxes"]) == 8 and all(len(box) == 4 for box in result["face_boxes"])
    assert set(result["face_source"]) <= set(FACE_SOURCES)
    assert abs(sum(result["fusion_gate_weights"]) - 1) < 1e-3
    assert set(result["timings"]) == {"preprocess_s", "generate_s"}
    as_dict = pipe({"video": str(clip), "task": "erg", "text": "I lost my keys",
                    "history": [{"role": "user", "content": "hi"}]}, max_new_tokens=4)  # fmt: skip
    assert as_dict["answer"] == result["answer"]


def test_pipeline_conversation_and_audio_flag(pipe, clip):
    conversation = [{"role": "user", "content": [{"type": "video", "video": str(clip)},
                                                 {"type": "text", "text": "How does she feel?"}]}]  # fmt: skip
    result = pipe(conversation, max_new_tokens=3)
    assert result["task"] is None and result["modalities"] == ["video", "face", "audio"]
    silent = pipe(str(clip), task="mer", load_audio_from_video=False, max_new_tokens=3)
    assert silent["modalities"] == ["video", "face"] and silent["fusion_gate_weights"] is None
    assert [r["task"] for r in pipe([str(clip), str(clip)], task="msa", max_new_tokens=2)] == ["msa", "msa"]


def test_pipeline_rejects_bad_calls(pipe, clip):
    with pytest.raises(ValueError, match="task="):
        pipe(str(clip), max_new_tokens=2)
    with pytest.raises(ValueError, match="Unknown input keys"):
        pipe({"video": str(clip), "task": "mer", "subtitle": "x"})
    with pytest.raises(TypeError, match="Unexpected arguments"):
        pipe(str(clip), task="mer", subtitles="x")


def test_face_sources_match_the_processor():
    from nanoemox_processing import FACE_SOURCES as PROCESSOR_FACE_SOURCES

    assert FACE_SOURCES == PROCESSOR_FACE_SOURCES


def test_decoded_answers_show_no_replacement_characters(tiny_processor):
    tokenizer = tiny_processor.tokenizer
    ids = tokenizer("café ☺", add_special_tokens=False)["input_ids"]
    assert "\ufffd" in tokenizer.decode(ids[-1:])  # a byte-level piece alone is not valid UTF-8
    assert decode_answer(tokenizer, ids) == "café ☺"
    assert decode_answer(tokenizer, ids[:-1]) == "café"  # a character cut by the token budget is dropped
    control = tokenizer.convert_tokens_to_ids(["Ā", "č"])  # byte-level pieces of \x00 and \r
    assert decode_answer(tokenizer, control + ids[:3] + control) == "caf"


def _any_to_any(tiny_dir, clip):
    from transformers import pipeline

    pipe = pipeline("any-to-any", model=str(tiny_dir), trust_remote_code=True)
    conversation = [{"role": "user", "content": [{"type": "video", "video": str(clip)},
                                                 {"type": "text", "text": "How does she feel?"}]}]  # fmt: skip
    return pipe(text=conversation, max_new_tokens=32)


@pytest.mark.skipif(not HAS_TORCHVISION, reason="transformers' any-to-any pipeline needs torchvision for video")
def test_any_to_any_pipeline(tiny_dir, clip):
    (result,) = _any_to_any(tiny_dir, clip)
    assert result["generated_text"][-1]["role"] == "assistant"


def test_any_to_any_pipeline_past_its_torchvision_check(tiny_dir, clip, monkeypatch):
    # Everything but the import gate: the processor and model work with transformers' own pipeline code.
    import transformers.pipelines.any_to_any as any_to_any

    monkeypatch.setattr(any_to_any, "requires_backends", lambda *args, **kwargs: None)
    (result,) = _any_to_any(tiny_dir, clip)
    assert result["generated_text"][-1]["role"] == "assistant"

"""`nanoemox predict` (modeling_nanoemox/predict.py): one clip through the pipeline, one-line errors for bad models."""

import json
import socket

import pytest
import torch

from modeling_nanoemox.predict import check_model_id
from nanoemox_cli import main


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip

    frames, _ = photo_clip_frames(real_face_photo(), 30, (240, 320))
    return write_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames, fps=15, audio=synthetic_voice(2.0))


def test_predict_json_has_answer_faces_gates(tiny_dir, clip, capsys):
    code = main(["predict", "--model", str(tiny_dir), "--video", str(clip), "--task", "erg",
                 "--text", "I lost my keys again", "--max-new-tokens", "4", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "erg" and result["modalities"] == ["video", "face", "audio"]
    assert len(result["face_boxes"]) == 8 and len(result["crop_boxes"]) == 8
    assert set(result["face_source"]) <= {"detected", "completed"}
    # A softmax; in bf16 (the default dtype on a CPU with native bf16) each weight is rounded to 3 significant digits.
    assert abs(sum(result["fusion_gate_weights"]) - 1) < 1e-2
    assert {"chain_of_empathy", "reply", "timings"} <= set(result)
    assert "\ufffd" not in result["answer"]


def test_predict_quantize_int8_runs_the_quantized_cpu_path(tiny_dir, clip, capsys, monkeypatch):
    from modeling_nanoemox import quantization_nanoemox as quantization

    quantized = []

    def quantize_for_cpu(model, mode):
        quantized.append(real(model, mode))
        return model

    real = quantization.quantize_for_cpu
    monkeypatch.setattr(quantization, "quantize_for_cpu", quantize_for_cpu)
    code = main(["predict", "--model", str(tiny_dir), "--video", str(clip), "--task", "mer", "--quantize", "int8",
                 "--max-new-tokens", "2", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    # The tiny random model may end its answer at once (its first greedy token can be the end of turn).
    assert result["quantize"] == "int8" and result["dtype"] == "float32" and isinstance(result["answer"], str)
    (model,) = quantized
    assert quantization.is_quantized_linear(model.model.vision_tower.encoder.layers[0].mlp.fc1)
    assert quantization.is_quantized_linear(model.model.language_model.layers[0].mlp.up_proj)
    # lm_head like the language model (fp16, or packed bf16 on a CPU with native bf16) beside the checkpoint's
    # embedding table, looked up into fp32.
    assert quantization.is_quantized_linear(model.lm_head)
    if model.nanoemox_quantization["language_model"] == "float16":
        assert model.lm_head._packed_params.dtype == torch.float16
    else:
        assert model.nanoemox_quantization["language_model"] == "bfloat16"
        assert model.lm_head.weight_packed.dtype == torch.bfloat16
    assert isinstance(model.get_input_embeddings(), quantization.Float32OutputEmbedding)


def test_predict_without_the_video_track_has_no_audio_and_no_gates(tiny_dir, clip, capsys):
    code = main(["predict", "--model", str(tiny_dir), "--video", str(clip), "--task", "mer", "--no-video-audio",
                 "--candidates", "happy, sad", "--max-new-tokens", "2", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["modalities"] == ["video", "face"] and result["fusion_gate_weights"] is None


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("model_id", ["/no/such/folder", "./no-such-folder", "~/no-such-folder", "a/b/c"])
def test_a_missing_path_is_one_line_without_the_network(model_id, monkeypatch, no_network, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    code = main(["predict", "--model", model_id, "--text", "hi", "--task", "msa"])
    assert code == 1
    assert capsys.readouterr().err == f"nanoemox predict: error: no such model folder or Hub id: {model_id}\n"


def test_an_uncached_hub_id_offline_is_one_line_without_the_network(monkeypatch, no_network, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["predict", "--model", "no-such-model", "--text", "hi", "--task", "msa"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("nanoemox predict: error: no such model folder or Hub id: no-such-model")
        and err.count("\n") == 1
    )


def test_a_folder_without_config_is_named_and_hub_ids_pass_online(tmp_path, monkeypatch, no_network):
    with pytest.raises(ValueError, match="has no config.json"):
        check_model_id(str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert check_model_id("owner/name") == "owner/name"  # left to the Hub (no request made here)

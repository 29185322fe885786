import json
import os
import subprocess
import sys
import textwrap

import torch

from helpers import make_batch
from modeling_nanoemox.cli import main

REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    for name in ("modeling_nanoemox", "nanoemox_processing", "processing"):
        sys.modules[name] = None  # the project's packages cannot be imported at all
    import numpy as np
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,
                              AutoProcessor)

    folder, inputs_path, out_path = sys.argv[1:]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    models = [cls.from_pretrained(folder, trust_remote_code=True).eval()
              for cls in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText)]
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    inputs = torch.load(inputs_path, weights_only=True)
    with torch.no_grad():
        logits = [model(**inputs).logits for model in models]
    frames = (np.random.default_rng(0).random((8, 40, 40, 3)) * 255).astype("uint8")
    processed = processor(videos=frames, audio=(np.zeros(4000, "float32"), 16000), text="hi", task="msa")
    generated = models[0].generate(**processed, max_new_tokens=3, do_sample=False)
    torch.save({"names": [type(config).__name__] + [type(m).__name__ for m in models] + [type(processor).__name__],
                "logits": logits, "generated": generated.shape[1] - processed["input_ids"].shape[1]}, out_path)
    """
)


def test_folder_loads_as_remote_code_without_the_project(tiny_model, tiny_dir, tmp_path):
    inputs = make_batch(tiny_model.config, [{"video", "face", "audio"}, {"audio"}])
    torch.save(inputs, tmp_path / "inputs.pt")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"), "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, str(tiny_dir), str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    assert out["names"] == ["NanoEmoXConfig"] + ["NanoEmoXForConditionalGeneration"] * 3 + ["NanoEmoXProcessor"]
    with torch.no_grad():
        expected = tiny_model(**inputs).logits
    for logits in out["logits"]:
        torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    assert out["generated"] == 3
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_nanoemox.NanoEmoXForConditionalGeneration"
    for name in ("configuration_nanoemox.py", "modeling_nanoemox.py", "processing_nanoemox.py", "chat_template.jinja"):
        assert (tiny_dir / name).is_file(), name


def test_info_command(capsys):
    assert main(["info", "--size", "full", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert abs(info["total"] - 2.30e9) / 2.30e9 < 0.01
    assert abs(info["total_without_swin_backbone"] - 2.21e9) / 2.21e9 < 0.01
    assert info["phases"]["1.1"]["trainable"] == info["components"]["audio_head.qformer"] + 32 * 768 + 8 * 1024 + (
        768 * 1536 + 1536
    )
    assert main(["info", "--size", "tiny"]) == 0
    table = capsys.readouterr().out
    assert "tokens per clip: 8 video + 8 audio + 2 face + 1 fusion = 19" in table


def test_create_tiny_and_predict(tmp_path, capsys):
    from modeling_nanoemox.synthetic import photo_clip_frames, real_face_photo, synthetic_voice, write_clip

    assert main(["create-tiny", str(tmp_path / "tiny"), "--seed", "3"]) == 0
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md"} <= {
        p.name for p in (tmp_path / "tiny").iterdir()
    }
    frames, _ = photo_clip_frames(real_face_photo(), 30, (240, 320))
    clip = write_clip(tmp_path / "clip.mp4", frames, fps=15, audio=synthetic_voice(2.0))
    capsys.readouterr()
    code = main(["predict", "--model", str(tmp_path / "tiny"), "--video", str(clip), "--task", "erg",
                 "--text", "I lost my keys again", "--max-new-tokens", "4", "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["task"] == "erg" and set(result["modalities"]) == {"video", "face", "audio"}
    assert len(result["face_boxes"]) == 8 and all(result["face_detected"])
    assert abs(sum(result["fusion_gate_weights"]) - 1) < 1e-5
    assert {"chain_of_empathy", "reply", "timings"} <= set(result)


def test_cli_errors_are_one_line_without_traceback(tmp_path, tiny_dir):
    result = subprocess.run(
        [sys.executable, "-m", "modeling_nanoemox.cli", "predict", "--model", str(tiny_dir), "--video",
         str(tmp_path / "missing.mp4"), "--task", "mer"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"nanoemox predict: error: sample 0: {tmp_path / 'missing.mp4'}: no such file."]

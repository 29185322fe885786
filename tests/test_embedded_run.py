"""recipes/embedded/pipeline.py, the embedded default run: the fusion ablation, stage timing and the machine record,
and one tiny end-to-end run through recipes/p2e.py (eval_results.json with metrics, conflicting-cue and
fusion-ablation scores, the machine and stage times)."""

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from embedded import pipeline  # noqa: E402
from embedded.towers import EMBEDDED_PROCESSOR_SETTINGS, build_start_model  # noqa: E402


def test_fusion_zeroed_zeroes_only_inside_the_block():
    model, _ = build_start_model(seed=0)
    inner = model.model
    config = model.config
    video = torch.randn(2, 8, 1 + config.num_fusion_experts, config.vision_config.hidden_size)
    audio = torch.randn(2, 8, 1 + config.num_fusion_experts, config.audio_config.hidden_size)
    before, _ = inner.get_fusion_features(video, audio)
    with pipeline.fusion_zeroed(model):
        zeroed, _ = inner.get_fusion_features(video, audio)
    after, _ = inner.get_fusion_features(video, audio)
    assert before.abs().sum() > 0 and zeroed.abs().sum() == 0 and torch.equal(before, after)


def test_embedded_processor_settings():
    _, processor = build_start_model(seed=0)
    assert processor.system_prompt == EMBEDDED_PROCESSOR_SETTINGS["system_prompt"]
    assert processor.audio_clip_seconds * processor.num_audio_clips == 2.0  # the windows tile a 2-s clip
    rendered = processor.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert EMBEDDED_PROCESSOR_SETTINGS["system_prompt"] in rendered


def test_stage_clock_and_machine():
    clock = pipeline.StageClock()
    with clock.stage("work"):
        sum(i * i for i in range(200000))
    assert set(clock.stages["work"]) == {"wall_s", "cpu_s"} and clock.stages["work"]["wall_s"] >= 0
    info = pipeline.machine()
    assert info["cores"] >= 1 and info["cpu"] and info["torch"] == torch.__version__


def test_embedded_default_end_to_end(tmp_path, monkeypatch):
    """A tiny embedded run through recipes/p2e.py's main (two steps a phase, 24 + 12 samples): eval_results.json
    holds every task's metrics, the conflicting-cue and fusion-ablation scores, the bars, the machine and every
    stage's times; the phases read the feature cache the pipeline wrote (nothing is encoded again)."""
    import p2e

    monkeypatch.setattr(pipeline, "TOWER_STEPS", 3)
    monkeypatch.setattr(pipeline, "CLOCK", pipeline.StageClock())
    output = tmp_path / "run"
    argv = ["--output_dir", str(output), "--max_steps", "2", "--num_train_samples", "24", "--num_test_samples", "12"]
    assert p2e.main(argv) == 0
    results = json.loads((output / "eval_results.json").read_text())
    assert set(results["tasks"]) == {"msa", "mer", "ovmer", "mir", "eri", "erg"}
    assert set(results["fusion_zeroed"]) == set(results["tasks"])
    assert set(results["bars"]) == {"msa", "mer", "mir", "erg"}
    stages = results["run"]["stages"]
    for stage in ("data", "towers", "features", "phase 1.1", "phase 1.2", "phase 2", "phase 3", "eval"):
        assert stages[stage]["wall_s"] >= 0, stage
    assert results["run"]["machine"]["cores"] >= 1
    samples, _ = p2e.load_manifest(output / "data" / "train.jsonl")
    assert all(sample.faces and Path(sample.faces).is_file() for sample in samples)
    index = json.loads((output / "feature_cache" / "index.json").read_text())
    assert len(index["samples"]) == 36

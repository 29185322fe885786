"""recipes/embedded/pipeline.py, the embedded default run: the fusion ablation, stage timing and the machine record,
and one tiny end-to-end run through recipes/p2e.py (eval_results.json with metrics, conflicting-cue and
fusion-ablation scores, the machine and stage times)."""

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes"))
from embedded import pipeline  # noqa: E402
from embedded.towers import (  # noqa: E402
    EMBEDDED_PROCESSOR_SETTINGS,
    TOWERS,
    build_start_model,
    pretrain_towers,
    tower_modules,
)


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


def test_towers_trained_in_two_subsets_equal_the_towers_trained_together():
    """The pipeline trains the face encoder in one process and the other two towers in another (one per core): the
    towers must be exactly those of one process training all three."""
    import copy
    from types import SimpleNamespace

    model, processor = build_start_model(seed=0)
    samples = [SimpleNamespace(id=f"s{i}", video="clip") for i in range(8)]
    generator = torch.Generator().manual_seed(0)
    media = {"pixel_values_videos": torch.randn(8, 8, 3, 32, 32, generator=generator),
             "face_pixel_values": torch.randn(8, 8, 3, 32, 32, generator=generator),
             "audio_values": torch.randn(8, 8, 4000, generator=generator)}  # fmt: skip
    faces = {s.id: ("happy", "sad")[i % 2] for i, s in enumerate(samples)}
    voices = {s.id: ("sad", "neutral")[i % 2] for i, s in enumerate(samples)}

    def trained(towers):
        torch.manual_seed(1)  # the pipeline forks both processes from one generator state
        copied = copy.deepcopy(model)
        pretrain_towers(copied, processor, samples, faces, voices, steps=2, batch_size=4, media=media, towers=towers)
        return tower_modules(copied)

    together, first, second = trained(TOWERS), *(trained(subset) for subset in pipeline.TOWER_SPLIT)
    split = {name: (first if name in pipeline.TOWER_SPLIT[0] else second)[name] for name in TOWERS}
    for name, module in together.items():
        expected, got = module.state_dict(), split[name].state_dict()
        assert all(torch.equal(expected[key], got[key]) for key in expected), name
    start = tower_modules(model)["face"].state_dict()
    assert not all(torch.equal(value, together["face"].state_dict()[key]) for key, value in start.items())


def test_run_alongside_runs_both_and_raises_the_forked_ones_error(tmp_path):
    pipeline.run_alongside(lambda: (tmp_path / "first").write_text("1"), lambda: (tmp_path / "second").write_text("2"))
    assert (tmp_path / "first").read_text() == "1" and (tmp_path / "second").read_text() == "2"

    def fails():
        raise ValueError("phase 1.1 failed")

    with pytest.raises(ValueError, match="phase 1.1 failed"):
        pipeline.run_alongside(fails, lambda: (tmp_path / "third").write_text("3"))
    assert (tmp_path / "third").is_file()  # this process's work finished first


def test_markdown_table_marks_each_bar_and_counts_the_conflicting_samples():
    results = {
        "tasks": {"msa": {"accuracy": 0.8, "weighted_f1": 0.79}, "eri": {"rouge_l": 0.2}},
        "chance": {"msa": {"accuracy": 0.5, "weighted_f1": 0.5}},
        "bars": {"msa": {"metric": "accuracy", "model": 0.8, "needed": 0.75, "passed": True}},
        "conflicting_cues": {"msa": {"samples": 6, "accuracy": 0.5}},
        "fusion_zeroed": {"msa": {"accuracy": 0.6, "weighted_f1": 0.55}, "eri": {"rouge_l": 0.1}},
    }
    rows = pipeline.markdown_table(results).splitlines()
    assert (
        rows[2]
        == "| MSA | accuracy / weighted F1 | 0.800 / 0.790 | 0.500 / 0.500 | 0.750 ✓ | 0.500 (6) | 0.600 / 0.550 |"
    )
    assert rows[3].startswith("| ERI |") and rows[3].endswith("| 0.200 | — | — | — | 0.100 |") and len(rows) == 4


def test_stage_clock_and_machine():
    clock = pipeline.StageClock()
    with clock.stage("work"):
        sum(i * i for i in range(200000))
    assert set(clock.stages["work"]) == {"wall_s", "cpu_s", "threads"} and clock.stages["work"]["wall_s"] >= 0
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
    for stage in ("data", "towers", "features", "phases 1.1 + 1.2", "phase 2", "phase 3", "eval"):
        assert stages[stage]["wall_s"] >= 0, stage
    assert results["run"]["machine"]["cores"] >= 1
    assert (output / "eval_results.md").read_text().count("\n| ") == 6  # one row per task
    samples, _ = p2e.load_manifest(output / "data" / "train.jsonl")
    assert all(sample.faces and Path(sample.faces).is_file() for sample in samples)
    index = json.loads((output / "feature_cache" / "index.json").read_text())
    assert len(index["samples"]) == 36

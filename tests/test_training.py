"""The P2E recipe's machinery on a tiny model and a handful of generated clips (seconds each)."""

import copy
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from modeling_nanoemox.data import load_manifest, write_manifest
from modeling_nanoemox.phases import PHASES
from modeling_nanoemox.synthetic import synthetic_voice, write_clip
from modeling_nanoemox.training import (
    FeatureCache,
    MixtureSampler,
    NanoEmoXDataCollator,
    copy_head_weights,
    freeze_for_phase,
    load_strict,
)

REPO = Path(__file__).resolve().parents[1]
COMMON = (
    "per_device_train_batch_size: 4\nlogging_steps: 1\nbf16: false\ngradient_checkpointing: false\n"
    "report_to: []\ndataloader_num_workers: 0\nuse_cpu: true\nseed: 0\n"
)


def load_recipe():
    spec = importlib.util.spec_from_file_location("p2e_recipe", REPO / "recipes" / "p2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    return make_small_data(tmp_path_factory.mktemp("p2e-data"))


def make_small_data(root: Path) -> Path:
    """12 clips, two emotions, as `mer` and `msa` samples."""
    rows = []
    for index in range(12):
        happy = index % 2 == 0
        frames = np.full((6, 48, 48, 3), 200 if happy else 40, np.uint8)
        write_clip(root / f"c{index}.mp4", frames, fps=6, audio=synthetic_voice(1.0, pitch_hz=220 if happy else 100))
        label = "happy" if happy else "sad"
        rows.append({"id": f"mer{index}", "task": "mer", "video": f"c{index}.mp4", "candidates": ["happy", "sad"],
                     "target": f"The most likely label is {label}.", "reference": label})  # fmt: skip
        rows.append({"id": f"msa{index}", "task": "msa", "video": f"c{index}.mp4", "text": "well",
                     "target": "positive" if happy else "negative", "reference": 1.0 if happy else -1.0})  # fmt: skip
    write_manifest(rows, root / "train.jsonl")
    write_manifest(rows[:8], root / "test.jsonl")
    (root / "chance.json").write_text(json.dumps({"mer": {"accuracy": 0.5}, "msa": {"accuracy": 0.5}}))
    return root


def write_recipe(folder: Path, steps: int = 2, save_steps: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mixture = "mixture:\n  - {name: mer, manifest: train.jsonl, weight: 0.7, tasks: [mer]}\n"
    mixture += "  - {name: msa, manifest: train.jsonl, weight: 0.3, tasks: [msa]}\n"
    common = COMMON + f"max_steps: {steps}\nsave_steps: {save_steps}\nlearning_rate: 1.0e-3\n"
    (folder / "phase_1.1.yaml").write_text(mixture + "modalities: [audio]\n" + common)
    (folder / "phase_1.2.yaml").write_text(mixture + "modalities: [video, face]\n" + common)
    (folder / "phase_2.yaml").write_text(mixture + common)
    (folder / "phase_3.yaml").write_text(
        mixture + "use_peft: true\nlora_r: 4\nlora_alpha: 8\nevaluate: true\n" + common
    )
    return folder


def test_mixture_sampler_draws_datasets_at_their_weights():
    names = ["a"] * 10 + ["b"] * 1000 + ["c"] * 90
    sampler = MixtureSampler(names, {"a": 0.5, "b": 0.3, "c": 0.2}, num_samples=20000, seed=3)
    drawn = np.array([names[i] for i in sampler])
    for name, weight in {"a": 0.5, "b": 0.3, "c": 0.2}.items():
        assert abs((drawn == name).mean() - weight) < 0.015
    sampler.set_epoch(1)
    assert list(sampler)[:50] != list(MixtureSampler(names, {"a": 0.5, "b": 0.3, "c": 0.2}, 20000, seed=3))[:50]
    with pytest.raises(ValueError, match=r"No mixture weight for datasets \['c'\]"):
        MixtureSampler(names, {"a": 1.0, "b": 1.0})


def test_mixture_sampler_one_dataset_per_batch_keeps_the_shares():
    names = ["a"] * 10 + ["b"] * 1000 + ["c"] * 3
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    sampler = MixtureSampler(names, weights, num_samples=40000, seed=3, batch_size=8)
    drawn = list(sampler)
    assert len(drawn) == 40000 and drawn == list(MixtureSampler(names, weights, 40000, seed=3, batch_size=8))
    batches = [{names[i] for i in drawn[start : start + 8]} for start in range(0, len(drawn), 8)]
    assert all(len(batch) == 1 for batch in batches)  # one dataset per batch
    for name, weight in weights.items():
        assert abs(np.mean([names[i] == name for i in drawn]) - weight) < 0.02
    # Distinct samples within a batch when the dataset has enough; "c" (3 samples) repeats.
    assert all(len(set(drawn[start : start + 8])) == 8 for start in range(0, 800, 8) if names[drawn[start]] != "c")
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        MixtureSampler(names, weights, batch_size=0)


def test_freezing_trains_exactly_the_phase_prefixes(tiny_model, tiny_processor, small_data):
    model = copy.deepcopy(tiny_model)
    freeze_for_phase(model, PHASES["1.1"])
    model.train()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"msa"})
    batch = NanoEmoXDataCollator(tiny_processor)([s.to_dict() for s in samples[:4]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(**batch).loss.backward()
    optimizer.step()
    for name, parameter in model.named_parameters():
        changed = not torch.equal(parameter, before[name])
        assert changed == name.startswith("model.audio_head."), name


@pytest.mark.parametrize("cached", [False, True], ids=["raw-media", "tower-features"])
def test_absent_modalities_still_get_a_zero_gradient(cached):
    """The trainer's data-parallel pass (`absent_branches_pass`): every trainable branch joins the step, adding 0."""
    from helpers import make_batch
    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration
    from modeling_nanoemox.training.curriculum import absent_branches_pass

    torch.manual_seed(0)
    model = NanoEmoXForConditionalGeneration(NanoEmoXConfig.tiny(fusion_dropout=0.0, projector_dropout=0.0))
    freeze_for_phase(model, PHASES["2"])
    model.train()
    batch = make_batch(model.config, [{"audio"}])
    if cached:
        batch["tower_features"] = {"audio": model.model.get_audio_tower_features(batch.pop("audio_values"))}
    tower_calls = []
    hook = model.model.vision_tower.register_forward_hook(lambda *_: tower_calls.append(1))
    torch.manual_seed(0)
    plain = model(**batch, labels=batch["input_ids"]).loss
    torch.manual_seed(0)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss = loss + absent_branches_pass(model, batch)
    hook.remove()
    assert len(tower_calls) == (0 if cached else 1)  # cached features: the dummy skips the towers too
    torch.testing.assert_close(loss, plain)
    loss.backward()
    for name in ("video_head.projector.weight", "face_head.queries", "fusion_encoder.gate.0.weight"):
        grad = model.model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() == 0, name  # part of the step, contributes nothing
    assert model.model.audio_head.projector.weight.grad.abs().sum() > 0


def test_trainer_adds_the_absent_branches_pass_when_asked(monkeypatch):
    from types import SimpleNamespace

    from trl import SFTTrainer

    from helpers import make_batch
    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration
    from modeling_nanoemox.training.curriculum import NanoEmoXTrainer

    torch.manual_seed(0)
    model = NanoEmoXForConditionalGeneration(NanoEmoXConfig.tiny())
    freeze_for_phase(model, PHASES["2"])
    model.train()
    batch = make_batch(model.config, [{"audio"}])
    monkeypatch.setattr(
        SFTTrainer, "compute_loss", lambda self, m, inputs, **_: m(**inputs, labels=inputs["input_ids"]).loss
    )
    trainer = object.__new__(NanoEmoXTrainer)  # the loss path only; the gloo test runs the real trainer
    trainer.accelerator = SimpleNamespace(unwrap_model=lambda m: m)
    for run_every_branch in (False, True):
        model.zero_grad()
        trainer.run_every_branch = run_every_branch
        trainer.compute_loss(model, batch).backward()
        assert (model.model.video_head.projector.weight.grad is not None) == run_every_branch


def test_feature_cache_gives_the_same_loss(tiny_model, tiny_processor, small_data, tmp_path):
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"mer"})
    cache = FeatureCache(tmp_path / "cache")
    assert cache.build(tiny_model, tiny_processor, samples[:5], batch_size=2) == 5
    assert FeatureCache(tmp_path / "cache").build(tiny_model, tiny_processor, samples[:5]) == 0  # reused
    rows = [s.to_dict() for s in samples[:5]]
    live = NanoEmoXDataCollator(tiny_processor)(rows)
    cached = NanoEmoXDataCollator(tiny_processor, FeatureCache(tmp_path / "cache"))(rows)
    assert "pixel_values_videos" not in cached and cached["tower_features"]["video"].shape[:2] == (5, 8)
    assert torch.equal(live["input_ids"], cached["input_ids"]) and torch.equal(live["labels"], cached["labels"])
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(**live).loss, tiny_model(**cached).loss, atol=1e-5, rtol=1e-5)
    audio_only = NanoEmoXDataCollator(tiny_processor, FeatureCache(tmp_path / "cache").restricted_to(["audio"]))(rows)
    assert set(audio_only["tower_features"]) == {"audio"}
    assert (audio_only["input_ids"] == tiny_processor.tokenizer.video_token_id).sum() == 0


def test_feature_cache_refuses_other_towers(tiny_model, tiny_processor, small_data, tmp_path):
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"mer"})
    FeatureCache(tmp_path / "cache").build(tiny_model, tiny_processor, samples[:1])
    other = copy.deepcopy(tiny_model)
    with torch.no_grad():
        other.model.vision_tower.embeddings.patch_embedding.weight.add_(1.0)
    with pytest.raises(ValueError, match="built with other towers or media settings"):
        FeatureCache(tmp_path / "cache").build(other, tiny_processor, samples[:1])


def test_the_four_phases_chain_and_leave_a_loadable_final(small_data, tiny_dir, tmp_path):
    recipe = load_recipe()
    out = tmp_path / "out"
    argv = ["--recipe", str(write_recipe(tmp_path / "recipe")), "--data_root", str(small_data),
            "--model_name_or_path", str(tiny_dir), "--output_dir", str(out)]  # fmt: skip
    assert recipe.main(argv) == 0
    start = load_strict(tiny_dir)
    phase_1_1, phase_1_2 = load_strict(out / "phase_1.1" / "final"), load_strict(out / "phase_1.2" / "final")
    phase_2 = load_strict(out / "phase_2" / "final")

    def same(a, b, prefix):
        return all(
            torch.equal(p, dict(b.named_parameters())[n]) for n, p in a.named_parameters() if n.startswith(prefix)
        )

    assert not same(phase_1_1, start, "model.audio_head.") and same(phase_1_1, start, "model.video_head.")
    assert not same(phase_1_2, start, "model.video_head.") and same(phase_1_2, start, "model.audio_head.")
    # Phase 2 started from 1.2 with 1.1's audio head; then it trained both: compare its starting point instead.
    state = json.loads((out / "phase_2" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert same(phase_2, phase_1_2, "model.language_model.") and same(phase_2, start, "model.vision_tower.")
    final = load_strict(out / "final")
    assert not same(final, phase_2, "model.language_model.layers.0.self_attn.q_proj")  # LoRA merged in
    assert (out / "phase_3" / "adapter" / "adapter_model.safetensors").is_file()
    adapter = json.loads((out / "phase_3" / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["modules_to_save"]) >= {"video_head", "audio_head", "face_head", "fusion_encoder"}
    results = json.loads((out / "eval_results.json").read_text())
    assert {"mer", "msa", "chance"} <= set(results) and "accuracy" in results["mer"]
    # Relaunching finds every phase done and only re-evaluates.
    assert recipe.main(argv) == 0


def recording_trainer(recipe, batches: list):
    """The recipe's trainer, recording every training batch its collator made."""

    class Recording(recipe.NanoEmoXTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            batches.append(dict(inputs))
            return super().compute_loss(model, inputs, *args, **kwargs)

    return Recording


@pytest.mark.parametrize(
    ("phase", "fed", "absent"),
    [("1.2", {"video", "face"}, {"audio", "fusion"}), ("1.1", {"audio"}, {"video", "face", "fusion"})],
)
def test_a_phase_feeds_only_its_modalities(small_data, tiny_dir, tmp_path, phase, fed, absent):
    """Issue 10: with `--feature_cache none` a `modalities: [video, face]` phase fed the video's audio track and a
    fusion token (`audio=None` meant "use the track"); an audio-only phase hears the track as its audio."""
    recipe = load_recipe()
    batches = []
    recipe.NanoEmoXTrainer = recording_trainer(recipe, batches)
    argv = ["--recipe", str(write_recipe(tmp_path / "recipe", steps=1)), "--phase", phase, "--feature_cache", "none",
            "--data_root", str(small_data), "--model_name_or_path", str(tiny_dir), "--output_dir", str(tmp_path / "out")]  # fmt: skip
    assert recipe.main(argv) == 0
    assert batches and not (tmp_path / "out" / "feature_cache").exists()
    config = load_strict(tiny_dir).config
    keys = {"video": "pixel_values_videos", "face": "face_pixel_values", "audio": "audio_values"}
    for batch in batches:
        assert "tower_features" not in batch
        for modality in fed | absent:
            placeholders = int((batch["input_ids"] == getattr(config, f"{modality}_token_id")).sum())
            assert (placeholders > 0) == (modality in fed), modality
            if modality in keys:
                assert (keys[modality] in batch) == (modality in fed), modality


def test_lora_fields_of_a_recipe_yaml_take_effect(small_data, tiny_dir, tmp_path):
    """`lora_target_modules` / `lora_modules_to_save` (TRL's ModelConfig) reach PEFT: only the named projections get
    LoRA and only the named heads train; left unset, the recipe's defaults apply (the four-phase test)."""
    recipe = load_recipe()
    out = tmp_path / "out"
    shutil.copytree(tiny_dir, out / "phase_2" / "final")  # phase 3 starts from phase 2's folder
    targets = ["language_model.layers.0.self_attn.q_proj", "language_model.layers.1.self_attn.v_proj"]
    folder = write_recipe(tmp_path / "recipe", steps=1)
    (folder / "phase_3.yaml").write_text(
        "mixture:\n  - {name: mer, manifest: train.jsonl, weight: 1.0, tasks: [mer]}\n"
        f"use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_target_modules: {json.dumps(targets)}\n"
        "lora_modules_to_save: [fusion_encoder]\n" + COMMON + "max_steps: 1\nsave_steps: 10\nlearning_rate: 1.0e-2\n"
    )
    argv = ["--recipe", str(folder), "--phase", "3", "--feature_cache", "none", "--data_root", str(small_data),
            "--output_dir", str(out)]  # fmt: skip
    assert recipe.main(argv) == 0
    adapter = json.loads((out / "phase_3" / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == targets and adapter["modules_to_save"] == ["fusion_encoder"]
    assert (adapter["r"], adapter["lora_alpha"]) == (4, 8)
    start, final = load_strict(tiny_dir), load_strict(out / "final")
    start_state = dict(start.named_parameters())

    def changed(name):
        return not torch.equal(dict(final.named_parameters())[name], start_state[name])

    assert changed("model.language_model.layers.0.self_attn.q_proj.weight")  # LoRA merged in
    assert not changed("model.language_model.layers.0.self_attn.k_proj.weight")
    assert not changed("model.language_model.layers.0.self_attn.v_proj.weight")
    assert changed("model.fusion_encoder.gate.0.weight")
    assert not changed("model.video_head.projector.weight")  # a phase-3 prefix, but not in lora_modules_to_save


def test_strict_loading_refuses_a_partial_folder(tiny_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for file in tiny_dir.iterdir():
        if file.is_file():
            (broken / file.name).write_bytes(file.read_bytes())
    state = load_file(broken / "model.safetensors")
    state.pop("model.fusion_projector.weight")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="model.fusion_projector.weight"):
        load_strict(broken)


def test_copy_head_weights_moves_only_the_head(tiny_model):
    target, source = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(1.0)
    assert copy_head_weights(target, source, ("model.audio_head.",)) > 0
    assert torch.equal(target.model.audio_head.projector.weight, source.model.audio_head.projector.weight)
    assert torch.equal(target.model.video_head.projector.weight, tiny_model.model.video_head.projector.weight)


def test_resume_after_a_kill_continues_from_the_last_checkpoint(small_data, tiny_dir, tmp_path):
    recipe = load_recipe()
    out = tmp_path / "out"
    base = ["--recipe", str(write_recipe(tmp_path / "recipe", steps=4, save_steps=2)), "--phase", "1.1",
            "--data_root", str(small_data), "--model_name_or_path", str(tiny_dir), "--output_dir", str(out)]  # fmt: skip
    # A first run "killed" after its step-2 checkpoint: stop it there and remove what only a finished phase leaves.
    assert recipe.main([*base, "--max_steps", "2"]) == 0
    shutil.rmtree(out / "phase_1.1" / "final")
    assert recipe.main(base) == 0
    state = json.loads((out / "phase_1.1" / "checkpoint-4" / "trainer_state.json").read_text())
    logged_steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert logged_steps == [1, 2, 3, 4]  # steps 1-2 came from the checkpoint, 3-4 from the resumed run


def test_tower_pretraining_changes_and_refreezes_the_towers(small_data):
    sys.path.insert(0, str(REPO / "recipes"))  # recipes/embedded is recipe code, imported as a recipe script does
    from embedded.towers import pretrain_towers

    from modeling_nanoemox.tiny import build_tiny

    model, processor = build_tiny(seed=1)
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"mer"})
    labels = {s.id: s.reference for s in samples}
    before = model.model.vision_tower.embeddings.patch_embedding.weight.clone()
    accuracy = pretrain_towers(model, processor, samples, labels, labels, steps=3, batch_size=4)
    assert set(accuracy) == {"video", "face", "audio"}
    assert not torch.equal(before, model.model.vision_tower.embeddings.patch_embedding.weight)
    towers = (model.model.vision_tower, model.model.audio_tower, model.model.face_encoder)
    assert not any(p.requires_grad for tower in towers for p in tower.parameters())
    assert not any(tower.training for tower in towers)


# ---- issue 11: the feature cache's lock and resume, TRL-shaped options, global batch, publishing ------------------


def test_feature_cache_lock_refuses_a_second_build_and_a_killed_build_resumes(
    tiny_model, tiny_processor, small_data, tmp_path
):
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"mer"})
    root = tmp_path / "cache"
    assert FeatureCache(root).build(tiny_model, tiny_processor, samples[:2]) == 2
    # A build killed after one more batch: its rank's partial index and files exist, index.json does not list them.
    index = json.loads((root / "index.json").read_text())
    cache = FeatureCache(root)
    cache._encode(tiny_model, tiny_processor, samples[2:4], 2, None, False)
    assert json.loads((root / "index.json").read_text()) == index and (root / "index.rank0.json").is_file()
    # Another live run holds the lock: refused, naming the holder.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (root / "build.lock").write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": holder.pid}))
        with pytest.raises(RuntimeError, match=rf"Another run is building the feature cache .*process {holder.pid}"):
            FeatureCache(root).build(tiny_model, tiny_processor, samples[:6])
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone: its lock is taken over; only samples 4-5 are encoded, 2-3 come from the partial index.
    encoded = []
    original = FeatureCache._encode_batch
    FeatureCache._encode_batch = staticmethod(
        lambda inner, p, batch, d: encoded.extend(s.id for s in batch) or original(inner, p, batch, d)
    )
    try:
        assert FeatureCache(root).build(tiny_model, tiny_processor, samples[:6]) == 2
    finally:
        FeatureCache._encode_batch = staticmethod(original)
    assert encoded == sorted(s.id for s in samples[4:6])
    assert len(FeatureCache(root).entries) == 6 and not (root / "build.lock").exists()
    assert not list(root.glob("index.rank*.json"))


def test_feature_cache_names_the_sample_whose_media_does_not_decode(tiny_model, tiny_processor, small_data, tmp_path):
    samples, _ = load_manifest(small_data / "train.jsonl", tasks={"mer"})
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 4096)
    samples = [samples[0], __import__("dataclasses").replace(samples[1], id="broken-clip", video=str(broken))]
    with pytest.raises(Exception, match="feature cache: sample broken-clip"):
        FeatureCache(tmp_path / "cache").build(tiny_model, tiny_processor, samples)
    assert not (tmp_path / "cache" / "build.lock").exists()  # released on failure


def test_model_config_fields_reach_loading(tiny_dir, tmp_path, monkeypatch):
    """TRL's ModelConfig: attn_implementation, model_revision and (QLoRA, phase 3 only) get_quantization_config reach
    `from_pretrained`; bitsandbytes needs CUDA, so the quantized load itself is not run here."""
    from transformers import BitsAndBytesConfig

    recipe = load_recipe()
    calls = []
    monkeypatch.setattr(recipe, "load_strict", lambda source, **kwargs: calls.append((str(source), kwargs)) or "model")
    monkeypatch.setattr(
        recipe.AutoProcessor, "from_pretrained", lambda source, **kwargs: calls.append(("processor", kwargs))
    )
    runs = recipe.phase_configs(["--recipe", str(write_recipe(tmp_path / "recipe")), "--output_dir", str(tmp_path / "out"),
                                 "--attn_implementation", "eager", "--model_revision", "v1", "--load_in_4bit"])  # fmt: skip
    _, args, training_args, model_args = runs[0]
    model_args.model_name_or_path = str(tiny_dir)
    recipe.start_model("1.1", tmp_path / "out", args, model_args)
    assert calls[0][0] == str(tiny_dir) and "quantization_config" not in calls[0][1]  # not a LoRA phase
    assert calls[0][1]["attn_implementation"] == "eager" and calls[0][1]["revision"] == "v1"
    assert calls[1] == ("processor", {"revision": "v1"})
    _, args, training_args, model_args = runs[3]
    kwargs = recipe.loading_kwargs("3", args, model_args)
    quantization = kwargs["quantization_config"]
    assert isinstance(quantization, BitsAndBytesConfig) and quantization.load_in_4bit
    assert {"vision_tower", "audio_head", "fusion_encoder", "lm_head"} <= set(quantization.llm_int8_skip_modules)
    assert kwargs["attn_implementation"] == "eager" and kwargs["device_map"] == {"": 0}
    model = load_strict(tiny_dir, attn_implementation="eager")
    assert model.config.text_config._attn_implementation == "eager"


def test_full_configs_scale_steps_to_the_global_batch_and_log_the_parity(tmp_path):
    recipe = load_recipe()
    runs = recipe.phase_configs(
        ["--recipe", "full", "--output_dir", str(tmp_path), "--per_device_train_batch_size", "6", "--bf16", "false"]
        + ["--use_cpu", "true"]
    )
    for _, args, training_args, _ in runs:
        assert args.authors_global_batch == 3 and args.trainable is None  # prefixes come from phases.py only
        assert training_args.report_to == ["tensorboard"]
    name, args, training_args, _ = runs[0]
    line = recipe.global_batch_plan(name, args, training_args)
    assert (training_args.max_steps, training_args.warmup_steps, training_args.save_steps) == (7500, 2500, 500)
    assert "world size 1 × per-device batch 6 × accumulation 1 = global batch 6; 7,500 steps → 45,000 samples" in line
    assert "the authors: global batch 3 × 15,000 steps = 45,000 samples, 100 % of theirs" in line
    weights = {name: {e["name"]: e["weight"] for e in a.mixture} for name, a, _, _ in runs}
    assert weights["1.2"] == {"caer": "size", "ferv39k": "size"}
    assert weights["2"] == {"mintrec": 0.5, "mintrec2": 0.5}


def test_size_weights_draw_entries_as_one_merged_dataset(small_data, tmp_path):
    recipe = load_recipe()
    args = recipe.P2EArguments(data_root=str(small_data), mixture=[
        {"name": "mer", "manifest": "train.jsonl", "weight": "size", "tasks": ["mer"]},
        {"name": "few", "manifest": "train.jsonl", "weight": "size", "tasks": ["msa"]}])  # fmt: skip
    _, weights, samples = recipe.training_dataset(args)
    assert weights == {"mer": 12.0, "few": 12.0} and len(samples) == 24


def test_push_to_hub_publishes_each_phase_the_merged_model_and_a_non_empty_adapter(
    small_data, tiny_dir, tmp_path, monkeypatch
):
    from huggingface_hub import HfApi, ModelCard
    from test_hub_publishing import HubCapture

    capture = HubCapture(tmp_path / "hub")
    for name in ("create_repo", "create_branch", "create_commit"):
        monkeypatch.setattr(HfApi, name, getattr(HubCapture, name).__get__(capture))
    monkeypatch.setattr(ModelCard, "load", classmethod(lambda cls, repo_id, **kw: capture.load_card(repo_id, **kw)))
    recipe = load_recipe()
    out = tmp_path / "out"
    shutil.copytree(tiny_dir, out / "phase_2" / "final")
    folder = write_recipe(tmp_path / "recipe", steps=1)
    (folder / "phase_3.yaml").write_text(
        (folder / "phase_3.yaml").read_text().replace("evaluate: true", "use_dora: true")
    )
    argv = ["--recipe", str(folder), "--phase", "3", "--feature_cache", "none", "--data_root", str(small_data),
            "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "org/nx"]  # fmt: skip
    assert recipe.main(argv) == 0
    pushed = {commit.repo_id: commit for commit in capture.commits}
    assert set(pushed) == {"org/nx-phase-3", "org/nx-phase-3-adapter", "org/nx"}
    for repo in ("org/nx-phase-3", "org/nx"):
        assert {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= set(pushed[repo].files)
        assert load_strict(pushed[repo].folder)  # complete and loadable
    adapter = pushed["org/nx-phase-3-adapter"]
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(adapter.files)
    config = json.loads((adapter.folder / "adapter_config.json").read_text())
    assert config["use_dora"] is True and "fusion_encoder" in config["modules_to_save"]
    from safetensors import safe_open

    with safe_open(str(adapter.folder / "adapter_model.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert (
        any("lora_A" in k for k in keys)
        and any("lora_magnitude" in k for k in keys)
        and any("fusion_encoder" in k for k in keys)
    )
    summary = json.loads((out / "final" / "training_summary.json").read_text())
    assert summary["phases"][-1]["name"] == "3"


def test_built_in_recipe_names_resolve_from_inside_recipes(monkeypatch):
    """Regression: run from recipes/, `--recipe embedded` (the default) meant the `embedded/` code folder there, which
    holds no phase YAMLs, and every run failed; a folder path still works."""
    recipe = load_recipe()
    monkeypatch.chdir(REPO / "recipes")
    runs = recipe.phase_configs(["--output_dir", "out"])
    assert [name for name, *_ in runs] == ["1.1", "1.2", "2", "3"]
    assert runs[0][1].modalities == ["audio"] and runs[3][1].evaluate  # the embedded YAMLs' values
    assert recipe.recipe_folder("embedded") == REPO / "recipes" / "configs" / "embedded"
    assert recipe.recipe_folder("./embedded") == Path("./embedded")


def test_help_lists_the_recipes_options_first_and_each_phases_real_settings(capsys):
    recipe = load_recipe()
    assert recipe.main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.index("--phase") < text.index("What each phase") and "--learning_rate" not in text.split("What")[0]
    table = text.split("What each phase of --recipe embedded sets")[1].splitlines()
    phase_3 = next(line.split() for line in table if line.strip().startswith("3 "))
    assert "True" in phase_3 and len(text.splitlines()) < 150  # phase 3 evaluates; the trainer's options are not here
    assert recipe.main(["--help-all"]) == 0
    assert "--learning_rate" in capsys.readouterr().out

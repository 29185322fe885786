"""benchmarks/gpu_bench.py and the section modules beside it (issue 7): the device benchmark runs on the CPU with the
tiny config, reports every section, and its FLOP counts (`gpu_flops.py`) agree with a count by hand and with torch's
FLOP counter."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench.py"
# The benchmark's modules import each other as siblings (a script's folder is on sys.path); so do these tests.
sys.path.insert(0, str(SCRIPT.parent))
import gpu_flops  # noqa: E402

BATCH, TOKENS, LABELS = 2, 48, 8

pytestmark = pytest.mark.slow


def walk(value, path=""):
    """Yields (path, key, value) for every key of nested dicts."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield path, key, item
            yield from walk(item, f"{path}/{key}")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_bench") / "bench.json"
    command = [
        sys.executable, str(SCRIPT), "--size", "tiny", "--device", "cpu", "--dtype", "float32",
        "--steps", "2", "--warmup", "1", "--batch-size", str(BATCH), "--train-tokens", str(TOKENS),
        "--label-tokens", str(LABELS), "--prefill-tokens", "40", "--new-tokens", "6", "--decode-batch-sizes", "1", "2",
        "--out", str(out),
    ]  # fmt: skip
    # One thread: the smoke run must not crawl when other jobs share the CPU (timings are not the point here).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # From outside the repository, so nothing can be imported from the working directory by accident.
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=out.parent)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text()), completed.stdout


def test_every_section_is_reported_without_errors(run):
    results, stdout = run
    errors = [f"{path}/{key}: {value}" for path, key, value in walk(results) if key == "error"]
    assert not errors, errors
    env = results["env"]
    for key in ("device_name", "torch", "transformers", "peft", "dtype", "command"):
        assert env[key], key
    assert "gpu_bench.py --size tiny" in env["command"]
    assert results["matmul"]["tflops"] > 0
    for variant in ("plain", "optimised", "cached"):
        result = results["train"][variant]
        assert result["step_s"]["median_s"] > 0 and result["step_s"]["n"] == 2
        assert result["samples_per_s"] == pytest.approx(BATCH / result["step_s"]["median_s"])
        assert result["peak_memory_gb"] > 0
        assert 0 < result["mfu"] <= 1
    assert results["train"]["plain"]["checkpointing"] is True
    assert results["train"]["trainable_parameters"] == results["train"]["expected_trainable_parameters"]
    inference = results["inference"]
    prefill = inference["prefill_plain"]
    assert prefill["first_token_ms"] > 0 and prefill["towers_ms"] > 0 and prefill["forward_ms"] > 0
    for batch_size in (1, 2):
        decode = inference[f"decode_plain_batch_{batch_size}"]
        assert decode["decode_tokens_per_s"] > 0 and decode["peak_memory_gb"] > 0
        assert decode["batch_size"] == batch_size and decode["new_tokens"] == 6
    # Compilation is off by default on the CPU: said, not crashed.
    assert "no-compile" in inference["decode_optimised"]["skipped"]
    assert "no-compile" in inference["prefill_optimised"]["skipped"]
    for name in ("train_optimised_vs_plain", "train_cached_vs_plain", "train_cached_vs_optimised"):
        assert results["ratios"][name] > 0
    targets = {t["name"]: t for t in results["targets"]}
    assert set(targets) == {
        "train_mfu",
        "train_speedup",
        "train_peak_memory_gb",
        "cached_speedup",
        "prefill_ms",
        "decode_tokens_per_s_batch_1",
    }
    assert {t["verdict"] for t in targets.values()} <= {"n/a (CPU)", "not measured"}
    assert targets["train_mfu"]["verdict"] == "n/a (CPU)"
    assert "## Targets (issue 7)" in stdout and "n/a (CPU)" in stdout


def test_llm_flops_match_a_count_by_hand(run):
    """The tiny decoder (dimensions read from `NanoEmoXConfig.tiny()`, 48 tokens, batch 2, logits at every position),
    counted here by hand: per layer and token q, k, v, o, gate, up, down; attention over the 48 × 48 square; LoRA r 16
    on the same seven projections; the tied LM head."""
    from modeling_nanoemox import NanoEmoXConfig

    text = NanoEmoXConfig.tiny().text_config
    d, ff, layers, vocab, rank = text.hidden_size, text.intermediate_size, text.num_hidden_layers, text.vocab_size, 16
    head_dim = d // text.num_attention_heads
    q, kv = text.num_attention_heads * head_dim, text.num_key_value_heads * head_dim
    linear = layers * TOKENS * 2 * (d * q + 2 * d * kv + q * d + 3 * d * ff)
    attention = layers * 4 * TOKENS**2 * q
    lora = layers * TOKENS * 2 * rank * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + ff) + (ff + d))
    lm_head = 2 * TOKENS * d * vocab
    flops = run[0]["flops"]["train_step"]["components"]
    # Frozen base weights and the tied LM head: forward + input gradient; attention and LoRA: forward + 2 gradients.
    assert flops["llm_linear"] == BATCH * 2 * linear
    assert flops["llm_attention"] == BATCH * 3 * attention
    assert flops["llm_lora"] == BATCH * 3 * lora
    assert flops["llm_lm_head"] == BATCH * 2 * lm_head
    check = run[0]["train"]["check_llm_linear_flops_per_token"]
    assert check["paper"] == check["from_weights"] == linear // TOKENS  # per token, all layers


def test_paper_flops_match_the_flop_counter_on_the_real_step(run):
    results = run[0]
    totals = results["flops"]["train_step"]
    assert results["train"]["optimised"]["paper_flops"] == totals["total_raw"]
    assert results["train"]["cached"]["paper_flops"] == totals["total_cached"]
    assert totals["total_raw"] - totals["total_cached"] == totals["towers_forward"]
    for variant in ("optimised", "cached"):
        assert results["train"][variant]["flop_counter_over_paper"] == pytest.approx(1.0, abs=1e-3)


def test_no_module_missing_from_the_gpu_image_is_imported(run):
    assert run[0]["forbidden_modules_loaded"] == []


def test_full_size_paper_flops_match_the_flop_counter_on_the_meta_device():
    """The full 2.2 B model on the meta device (no memory, no compute): each component's paper count equals what
    `torch.utils.flop_counter` sees, towers forward, heads and LoRA-adapted LLM forward + backward."""
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode

    from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration, phases

    config = NanoEmoXConfig()
    batch, tokens, frames, clips, samples = 8, 200, 8, 8, 32000
    flops = gpu_flops.training_flops(config, batch, tokens, frames, clips, samples)
    with torch.device("meta"):
        model = NanoEmoXForConditionalGeneration(config)
    phase = phases.PHASES["3"]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(phase.trainable_prefixes))
    inner = model.model
    model = get_peft_model(
        model,
        LoraConfig(
            r=phases.LORA_RANK,
            lora_alpha=phases.LORA_ALPHA,
            target_modules=phases.LORA_TARGET_REGEX,
            modules_to_save=list(phases.HEAD_MODULES),
        ),
    )
    model.train()  # frozen towers stay in eval mode (no HuBERT layer drop)

    def exactly(value):
        # Up to one part in a million: transformers 5.17 computes the rotary angles with a (64 × 1) @ (1 × T) matmul
        # (25,600 FLOPs at T = 200), which 5.24 does not.
        return pytest.approx(value, rel=1e-6)

    def counted(fn) -> int:
        counter = FlopCounterMode(display=False, custom_mapping=gpu_flops.flop_counter_mapping())
        with counter:
            fn()
        return counter.get_total_flops()

    image, face = config.vision_config.image_size, config.face_config.backbone_config.image_size
    with torch.no_grad():
        for component, fn, shape in (
            ("vision_tower", inner.get_video_tower_features, (batch, frames, 3, image, image)),
            ("face_encoder", inner.get_face_tower_features, (batch, frames, 3, face, face)),
            ("audio_tower", inner.get_audio_tower_features, (batch, clips, samples)),
        ):
            media = torch.empty(shape, device="meta")
            assert counted(lambda fn=fn, media=media: fn(media)) == exactly(flops["components"][component]), component

    experts = config.num_fusion_experts
    video = torch.empty(batch, frames, 1 + experts, config.vision_config.hidden_size, device="meta")
    audio = torch.empty(batch, clips, 1 + experts, config.audio_config.hidden_size, device="meta")
    faces = torch.empty(batch, frames, config.face_config.hidden_size, device="meta")

    def heads():  # the trainable modules between the towers and the LLM, on tower features (the feature cache's path)
        out = inner.video_head(video[:, :, 0]).sum() + inner.audio_head(audio[:, :, 0]).sum()
        out = out + inner.face_head(faces).sum() + inner.get_fusion_features(video, audio)[0].sum()
        out.backward()

    assert counted(heads) == exactly(flops["heads_forward_backward"])

    embeddings = torch.empty(batch, tokens, config.text_config.hidden_size, device="meta", requires_grad=True)

    def llm():
        hidden = inner.language_model(inputs_embeds=embeddings).last_hidden_state
        model.get_output_embeddings()(hidden).float().sum().backward()

    assert counted(llm) == exactly(flops["llm_forward_backward"])
    # The totals the GPU run will print (27.4 / 10.3 TFLOP per step at batch 8).
    assert flops["total_raw"] == pytest.approx(27.4e12, rel=0.01)
    assert flops["total_cached"] == pytest.approx(10.3e12, rel=0.01)

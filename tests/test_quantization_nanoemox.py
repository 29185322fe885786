"""Tests of `modeling_nanoemox/quantization_nanoemox.py` (CPU inference: dtype, threads, int8) and of
`benchmarks/bench_cpu_inference.py` at tiny size."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import make_batch
from modeling_nanoemox import NanoEmoXForConditionalGeneration
from modeling_nanoemox.quantization_nanoemox import (
    Float32OutputEmbedding,
    PackedBFloat16Linear,
    bfloat16_packing_available,
    compute_only_cls_in_last_vision_layer,
    configure_cpu_inference,
    configure_cpu_threads,
    default_inference_dtype,
    is_quantized_linear,
    pack_for_cpu,
    physical_cpu_cores,
    quantize_for_cpu,
    release_checkpoint_pages,
    split_batch_across_threads,
)
from modeling_nanoemox.tiny import build_tiny

PACKING = pytest.mark.skipif(
    not bfloat16_packing_available(), reason="packed bf16 needs a CPU with AMX or AVX512-BF16 and oneDNN"
)
EXACT = ("model.video_head", "model.audio_head", "model.face_head", "model.fusion_encoder", "model.fusion_projector")


@pytest.fixture(scope="module")
def tiny():
    model, _ = build_tiny(seed=0)
    return model


def _quantized(model) -> dict[str, torch.dtype]:
    # The packed weight's dtype: qint8, float16 for the fp16 kernels (`weight()` unpacks those to fp32), or bfloat16.
    return {
        name: module.weight_packed.dtype if isinstance(module, PackedBFloat16Linear) else module._packed_params.dtype
        for name, module in model.named_modules()
        if is_quantized_linear(module)
    }


@pytest.fixture
def no_packing(monkeypatch):
    """A CPU without native bf16, as far as this module can tell."""
    monkeypatch.setattr("modeling_nanoemox.quantization_nanoemox.bfloat16_packing_available", lambda: False)


def test_int8_quantizes_towers_and_keeps_exact_parts(tiny):
    model = quantize_for_cpu(copy.deepcopy(tiny).to(torch.bfloat16), "int8", language_model="float16")
    quantized = _quantized(model)
    towers = [name for name in quantized if name.startswith(("model.vision_tower", "model.audio_tower"))]
    assert towers and {quantized[name] for name in towers} == {torch.qint8}
    assert any(name.startswith("model.face_encoder") for name in quantized)
    llm = [name for name in quantized if name.startswith("model.language_model")]
    assert len(llm) == 7 * tiny.config.text_config.num_hidden_layers  # q k v o gate up down
    assert {quantized[name] for name in llm} == {torch.float16}
    assert not any(name.startswith(EXACT) for name in quantized)
    # lm_head: an fp16 copy of its own, untied; the embedding table keeps the checkpoint's bf16 values.
    assert quantized["lm_head"] == torch.float16 and not model.config.tie_word_embeddings
    reference = dict(tiny.named_parameters())
    embeddings = model.get_input_embeddings()
    assert isinstance(embeddings, Float32OutputEmbedding) and embeddings.weight.dtype == torch.bfloat16
    bf16_table = reference["model.language_model.embed_tokens.weight"].to(torch.bfloat16)
    torch.testing.assert_close(embeddings.weight, bf16_table, rtol=0, atol=0)
    lookup = embeddings(torch.tensor([[0, 5, embeddings.num_embeddings - 1]]))
    assert lookup.dtype == torch.float32
    torch.testing.assert_close(lookup[0], bf16_table[[0, 5, -1]].float(), rtol=0, atol=0)
    # fp16 holds the bf16 values exactly: the quantized head's weights are the table's.
    torch.testing.assert_close(model.lm_head.weight(), bf16_table.float(), rtol=0, atol=0)
    # Exact parts: fp32 and the same values (the bf16 round trip of this test aside).
    for name, parameter in model.named_parameters():
        if "embed_tokens" in name:
            continue
        assert parameter.dtype == torch.float32, name
        if name.startswith(EXACT):
            torch.testing.assert_close(parameter, reference[name].to(torch.bfloat16).float(), rtol=0, atol=0)
    assert type(model.model.fusion_encoder.experts[0].fc1) is nn.Linear


def test_fp16_lm_head_gives_the_logits_of_the_tied_fp32_head(tiny):
    bf16 = copy.deepcopy(tiny).to(torch.bfloat16)
    tied = quantize_for_cpu(copy.deepcopy(bf16), "int8", language_model="float16", lm_head=False)
    untied = quantize_for_cpu(copy.deepcopy(bf16), "int8", language_model="float16")
    assert tied.lm_head.weight is tied.get_input_embeddings().weight and tied.lm_head.weight.dtype == torch.float32
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"audio"}])
    with torch.no_grad():
        # Same weights, same fp32 activations: only the summation order of the fp16 kernel differs.
        torch.testing.assert_close(untied(**inputs).logits, tied(**inputs).logits, rtol=1e-5, atol=1e-5)


def test_quantized_model_generates_and_stays_close(tiny):
    model = quantize_for_cpu(copy.deepcopy(tiny), "int8")
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"audio"}])
    with torch.no_grad():
        reference = tiny(**inputs).logits
        logits = model(**inputs).logits
        output = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert output.shape == (2, inputs["input_ids"].shape[1] + 4)
    assert torch.isfinite(logits).all()
    assert (logits - reference).abs().max() < 0.25 * reference.abs().max()


def test_int8_language_model_and_lm_head(tiny):
    model = quantize_for_cpu(copy.deepcopy(tiny), "int8", language_model="int8", towers=False, lm_head=True)
    quantized = _quantized(model)
    assert (
        quantized["lm_head"] == torch.qint8 and quantized["model.language_model.layers.0.mlp.up_proj"] == torch.qint8
    )
    assert not any(name.startswith("model.vision_tower") for name in quantized)
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings, tiny.get_input_embeddings().weight, rtol=0, atol=0)  # untied, exact
    with torch.no_grad():
        model.generate(**make_batch(tiny.config, [{"video"}]), max_new_tokens=2, do_sample=False)


def _resident_file_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.fixture(scope="module")
def tiny_bf16_folder(tiny, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bf16")
    copy.deepcopy(tiny).to(torch.bfloat16).save_pretrained(folder)
    return folder


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="checkpoint pages are released on Linux only")
def test_release_checkpoint_pages_drops_mapped_pages_and_keeps_values(tiny_bf16_folder):
    model = NanoEmoXForConditionalGeneration.from_pretrained(tiny_bf16_folder, dtype="auto")
    embeddings = model.get_input_embeddings().weight.detach()  # a view of the checkpoint's mapping
    expected = embeddings.clone()
    before = _resident_file_kb()
    released = release_checkpoint_pages([embeddings])
    assert released >= embeddings.numel() * embeddings.element_size() - 2 * 4096  # all but the two edge pages
    assert _resident_file_kb() < before
    torch.testing.assert_close(embeddings, expected, rtol=0, atol=0)  # read back from the file
    # Ordinary memory is never released: MADV_DONTNEED would turn it into zeros.
    assert release_checkpoint_pages([expected]) == 0
    assert expected.abs().sum() > 0


def test_releasing_checkpoint_pages_while_quantizing_changes_no_value(tiny_bf16_folder, monkeypatch):
    def quantized():
        return quantize_for_cpu(
            NanoEmoXForConditionalGeneration.from_pretrained(tiny_bf16_folder, dtype="auto"), "int8"
        )

    released = quantized()
    monkeypatch.setattr("modeling_nanoemox.quantization_nanoemox.release_checkpoint_pages", lambda tensors: 0)
    kept = quantized()
    inputs = make_batch(released.config, [{"video", "face", "audio"}])
    with torch.no_grad():
        torch.testing.assert_close(released(**inputs).logits, kept(**inputs).logits, rtol=0, atol=0)
    reference = kept.state_dict()
    for name, tensor in released.state_dict().items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
            assert tensor.dtype == (torch.bfloat16 if "embed_tokens" in name else torch.float32), name
            torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)


def test_the_unread_last_vision_layer_is_dropped_and_features_are_unchanged(tiny, monkeypatch):
    # Without the CLS-only last layer (tested below), whose int8 activation scales differ.
    monkeypatch.setattr(
        "modeling_nanoemox.quantization_nanoemox.compute_only_cls_in_last_vision_layer", lambda t: None
    )
    dropped = quantize_for_cpu(copy.deepcopy(tiny), "int8")
    monkeypatch.setattr("modeling_nanoemox.quantization_nanoemox._drop_unread_vision_layers", lambda model: None)
    kept = quantize_for_cpu(copy.deepcopy(tiny), "int8")
    # Tiny: CLS tokens of layers -2, 1, 2, 3 of 4 are read; layer 4 is not.
    assert len(kept.model.vision_tower.encoder.layers) == 4
    assert len(dropped.model.vision_tower.encoder.layers) == 3
    assert (dropped.config.vision_feature_layer, dropped.config.vision_multiscale_layers) == (3, [1, 2, 3])
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}])
    with torch.no_grad():
        features = dropped.model.get_video_tower_features(inputs["pixel_values_videos"])
        torch.testing.assert_close(
            features, kept.model.get_video_tower_features(inputs["pixel_values_videos"]), rtol=0, atol=0
        )
        torch.testing.assert_close(dropped(**inputs).logits, kept(**inputs).logits, rtol=0, atol=0)


def test_quantize_rejects_unknown_modes(tiny):
    with pytest.raises(ValueError, match="mode must be one of"):
        quantize_for_cpu(tiny, "int4")
    with pytest.raises(ValueError, match="language_model must be one of"):
        quantize_for_cpu(tiny, "int8", language_model="bf16")


def test_language_model_auto_is_fp16_without_native_bf16(tiny, no_packing):
    model = quantize_for_cpu(copy.deepcopy(tiny).to(torch.bfloat16), "int8")
    assert model.nanoemox_quantization["language_model"] == "float16"
    assert _quantized(model)["model.language_model.layers.0.mlp.up_proj"] == torch.float16
    with pytest.raises(ValueError, match="native bf16"):
        quantize_for_cpu(copy.deepcopy(tiny), "int8", language_model="bfloat16")


def test_pack_for_cpu_without_native_bf16_changes_nothing(tiny, no_packing):
    model = copy.deepcopy(tiny).to(torch.bfloat16)
    assert pack_for_cpu(model) is model
    assert not any(isinstance(module, PackedBFloat16Linear) for module in model.modules())


@PACKING
def test_packed_bf16_linear_gives_the_bf16_linear_bit_for_bit():
    torch.manual_seed(0)
    linear = nn.Linear(48, 80).to(torch.bfloat16)
    packed = PackedBFloat16Linear(linear)
    with torch.no_grad():
        for shape in ((1, 48), (3, 7, 48), (130, 48)):
            x = torch.randn(shape)
            torch.testing.assert_close(packed(x.bfloat16()), linear(x.bfloat16()), rtol=0, atol=0)
            # fp32 in, fp32 out: the matmul of the bf16-rounded input.
            output = packed(x)
            assert output.dtype == torch.float32
            torch.testing.assert_close(output, linear(x.bfloat16()).float(), rtol=0, atol=0)
        assert PackedBFloat16Linear(nn.Linear(48, 8, bias=False).bfloat16())(torch.randn(2, 48)).shape == (2, 8)
    with pytest.raises(ValueError, match="expected 48 input features, got 40"):
        packed(torch.randn(2, 40))


@PACKING
def test_pack_for_cpu_gives_the_bf16_model_bit_for_bit(tiny):
    bf16 = copy.deepcopy(tiny).to(torch.bfloat16).eval()
    packed = pack_for_cpu(copy.deepcopy(bf16))
    kinds = {
        name: type(module)
        for name, module in packed.named_modules()
        if type(module) in (nn.Linear, PackedBFloat16Linear)
    }
    assert kinds["lm_head"] is PackedBFloat16Linear
    for part in ("vision_tower", "audio_tower", "face_encoder", "language_model"):
        assert {kind for name, kind in kinds.items() if name.startswith(f"model.{part}")} == {PackedBFloat16Linear}
    assert {kind for name, kind in kinds.items() if name.startswith(EXACT)} == {nn.Linear}
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"audio"}])
    inputs = {key: value.to(torch.bfloat16) if value.is_floating_point() else value for key, value in inputs.items()}
    with torch.no_grad():
        torch.testing.assert_close(packed(**inputs).logits, bf16(**inputs).logits, rtol=0, atol=0)
        expected = bf16.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert torch.equal(packed.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False), expected)


@PACKING
def test_int8_with_a_packed_bf16_language_model(tiny):
    bf16 = copy.deepcopy(tiny).to(torch.bfloat16)
    model = quantize_for_cpu(copy.deepcopy(bf16), "int8")  # auto: bf16 on this CPU
    fp16 = quantize_for_cpu(copy.deepcopy(bf16), "int8", language_model="float16")
    quantized = _quantized(model)
    assert model.nanoemox_quantization["language_model"] == "bfloat16"
    llm = [name for name in quantized if name.startswith("model.language_model")]
    assert len(llm) == 7 * tiny.config.text_config.num_hidden_layers
    assert {quantized[name] for name in llm} == {torch.bfloat16} and quantized["lm_head"] == torch.bfloat16
    assert isinstance(model.get_input_embeddings(), Float32OutputEmbedding)
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"audio"}])
    with torch.no_grad():
        logits, reference = model(**inputs).logits, fp16(**inputs).logits
    assert logits.dtype == torch.float32
    # The same bf16 weights; only the activations' rounding to bf16 at each matmul differs from the fp16 kernels.
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    assert (logits.argmax(-1) == reference.argmax(-1)).float().mean() > 0.9


def test_default_dtype_and_threads(monkeypatch):
    assert default_inference_dtype("cpu") in (torch.float32, torch.bfloat16)
    monkeypatch.setattr("modeling_nanoemox.quantization_nanoemox._cpu_flags", lambda: {"avx2", "fma"})
    assert default_inference_dtype("cpu") == torch.float32
    monkeypatch.setattr("modeling_nanoemox.quantization_nanoemox._cpu_flags", lambda: {"avx2", "amx_bf16"})
    if torch.backends.mkldnn.is_available():
        assert default_inference_dtype(torch.device("cpu")) == torch.bfloat16
    before = torch.get_num_threads()
    try:
        assert 1 <= physical_cpu_cores() <= (os.cpu_count() or 1)
        assert configure_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_cpu_inference(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


ALLOCATOR_PROBE = """
import resource, threading, torch
from modeling_nanoemox.quantization_nanoemox import configure_cpu_allocator

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def reuse(size):
    # Allocate, fill and free a 48 MB tensor (above glibc's largest mmap threshold) 20 times; count page faults.
    first = faults()
    for step in range(20):
        tensor = torch.full((size,), float(step))
        assert float(tensor[-1]) == step
        del tensor
    return faults() - first

size = 12 * 2**20
before = reuse(size)
applied = configure_cpu_allocator()
after = reuse(size)
results = []
thread = threading.Thread(target=lambda: results.append(float(torch.full((40 * 2**20,), 3.0).sum())))
thread.start(); thread.join()  # a worker thread's arena still serves (and maps) a 160 MB tensor
print(applied, before, after, results[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_cpu_allocator_reuses_large_buffers_instead_of_faulting_them_in_again():
    # In a child: the setting is process-wide.
    completed = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE], capture_output=True, text=True, check=True)
    applied, before, after, total = completed.stdout.split()
    assert applied == "True"
    pages = 12 * 2**20 * 4 // 4096
    assert int(before) > 15 * pages  # every allocation faulted in again
    assert int(after) < 3 * pages  # faulted in once, then reused
    assert float(total) == 3.0 * 40 * 2**20


def test_cpu_inference_benchmark_runs_at_tiny_size(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cpu_inference.py"
    completed = subprocess.run(
        [sys.executable, str(script), "--size", "tiny", "--new-tokens", "2", "--no-agreement",
         "--variants", "plain", "int8", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=script.parent,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| plain | " in completed.stdout and "| int8 | " in completed.stdout
    assert "greedy tokens == plain (timed model) True" in completed.stdout  # plain against itself
    assert "cpu: " in completed.stdout


def test_split_batch_across_threads_gives_the_whole_batch_result(tiny):
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"video", "face", "audio"}])
    split = copy.deepcopy(tiny).eval()
    for part in ("vision_tower", "audio_tower", "face_encoder"):
        split_batch_across_threads(getattr(split.model, part))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # 3 chunks of the 2 × 4 frames, and 3 threads back afterwards
        with torch.inference_mode():
            for name in ("get_video_tower_features", "get_face_tower_features", "get_audio_tower_features"):
                key = {"get_video_tower_features": "pixel_values_videos", "get_face_tower_features":
                       "face_pixel_values", "get_audio_tower_features": "audio_values"}[name]  # fmt: skip
                expected = getattr(tiny.model, name)(inputs[key])
                got = getattr(split.model, name)(inputs[key])
                assert got.shape == expected.shape and got.is_inference()
                torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
            outputs = split.model.vision_tower(inputs["pixel_values_videos"].flatten(0, 1), output_hidden_states=True)
            assert len(outputs.hidden_states) == tiny.config.vision_config.num_hidden_layers + 1
            assert outputs.hidden_states[0].shape[0] == inputs["pixel_values_videos"].shape[:2].numel()
            assert torch.get_num_threads() == 3
            # A failure in a chunk's thread surfaces in the caller, and the threads are still restored.
            with pytest.raises(ValueError, match="doesn't match model"):
                split.model.vision_tower(torch.zeros(3, 3, 5, 5))
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_cls_only_last_vision_layer_gives_the_same_features(tiny):
    inputs = make_batch(tiny.config, [{"video", "face", "audio"}, {"video", "face", "audio"}])
    cls_only = copy.deepcopy(tiny).eval()
    compute_only_cls_in_last_vision_layer(cls_only.model.vision_tower)
    pixels = inputs["pixel_values_videos"]
    with torch.no_grad():
        outputs = cls_only.model.vision_tower(pixels.flatten(0, 1), output_hidden_states=True)
        reference = tiny.model.vision_tower(pixels.flatten(0, 1), output_hidden_states=True)
        assert outputs.hidden_states[-1].shape[1] == 1 and outputs.hidden_states[-2].shape[1] > 1
        # The last layer's CLS token as the full layer computes it.
        torch.testing.assert_close(
            outputs.hidden_states[-1][:, 0], reference.hidden_states[-1][:, 0], rtol=1e-5, atol=1e-6
        )
        torch.testing.assert_close(outputs.pooler_output, reference.pooler_output, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(outputs.hidden_states[-1][:, 0], outputs.hidden_states[-2][:, 0])
        torch.testing.assert_close(
            cls_only.model.get_video_tower_features(pixels), tiny.model.get_video_tower_features(pixels),
            rtol=1e-5, atol=1e-6,
        )  # fmt: skip
        torch.testing.assert_close(cls_only(**inputs).logits, tiny(**inputs).logits, rtol=1e-4, atol=1e-5)

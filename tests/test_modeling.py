import copy

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM

from helpers import make_batch
from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration
from modeling_nanoemox.modeling_nanoemox import CACHE_NAME
from modeling_nanoemox.phases import PHASES, is_trainable


@pytest.fixture(scope="module")
def config(tiny_model):
    return tiny_model.config


@pytest.mark.parametrize(
    "modalities",
    [[set()], [{"audio"}], [{"video", "face"}], [{"video", "face", "audio"}], [{"video"}, {"audio"}, set()]],
    ids=["text-only", "audio-only", "frames+face", "all-four", "mixed"],
)
def test_forward_accepts_any_modality_subset(tiny_model, config, modalities):
    inputs = make_batch(config, modalities)
    with torch.no_grad():
        output = tiny_model(**inputs, labels=inputs["input_ids"])
    batch, length = inputs["input_ids"].shape
    assert output.logits.shape == (batch, length, config.text_config.vocab_size)
    assert torch.isfinite(output.loss)
    fused = [{"video", "audio"} <= m for m in modalities]
    if any(fused):
        gates = output.fusion_gate_weights
        assert gates.shape == (batch, 3)
        for row, is_fused in zip(gates, fused):
            assert torch.allclose(row.sum(), torch.tensor(1.0 if is_fused else 0.0), atol=1e-6)
    else:
        assert output.fusion_gate_weights is None


def test_a_sample_does_not_see_other_samples_media(tiny_model, config):
    mixed = make_batch(config, [{"video", "face", "audio"}, set(), {"audio"}], text_lengths=[5, 9, 7])
    with torch.no_grad():
        batched = tiny_model(**mixed).logits
        for index in range(3):
            alone = {k: v[index : index + 1] for k, v in mixed.items()}
            length = int(alone["attention_mask"].sum())
            alone = {k: (v[:, :length] if k in ("input_ids", "attention_mask") else v) for k, v in alone.items()}
            single = tiny_model(**alone).logits
            torch.testing.assert_close(batched[index, :length], single[0], atol=1e-5, rtol=1e-5)


def test_placeholders_receive_exactly_the_modality_embeddings(tiny_model, config):
    inputs = make_batch(config, [{"video", "audio"}, {"audio"}])
    captured = {}
    hook = tiny_model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            tiny_model(**inputs)
            model = tiny_model.model
            video = model.get_video_features(model.get_video_tower_features(inputs["pixel_values_videos"][:1]))
            audio = model.get_audio_features(model.get_audio_tower_features(inputs["audio_values"]))
            text = model.get_input_embeddings()(inputs["input_ids"])
    finally:
        hook.remove()
    embeds = captured["embeds"]
    ids = inputs["input_ids"]
    torch.testing.assert_close(embeds[0][ids[0] == config.video_token_id], video[0], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(embeds[1][ids[1] == config.audio_token_id], audio[1], atol=1e-6, rtol=1e-6)
    plain = ~torch.isin(ids, torch.tensor(list(config.modality_token_ids.values())))
    torch.testing.assert_close(embeds[plain], text[plain])


def test_placeholder_count_mismatch_names_modality_and_counts(tiny_model, config):
    inputs = make_batch(config, [{"video"}, {"video"}])
    first_video = (inputs["input_ids"][1] == config.video_token_id).nonzero()[0]
    inputs["input_ids"][1, first_video] = 7
    with pytest.raises(ValueError, match=r"video: the prompt has 15 video placeholder tokens but there are 16 video "
                                         r"features \(2 items × 8 tokens\).*batch indices \[1\]"):  # fmt: skip
        tiny_model(**inputs)


def test_media_without_placeholders_is_an_error(tiny_model, config):
    inputs = make_batch(config, [set()])
    inputs["audio_values"] = torch.randn(1, 2, 16000)
    with pytest.raises(ValueError, match="audio: the prompt has 0 audio placeholder tokens but there are 8"):
        tiny_model(**inputs)


def test_precomputed_tower_features_give_the_same_output(tiny_model, config):
    inputs = make_batch(config, [{"video", "face", "audio"}, {"audio"}])
    model = tiny_model.model
    with torch.no_grad():
        live = tiny_model(**inputs)
        cached = {
            k: v for k, v in inputs.items() if k not in ("pixel_values_videos", "face_pixel_values", "audio_values")
        }
        cached["video_tower_features"] = model.get_video_tower_features(inputs["pixel_values_videos"])
        cached["face_tower_features"] = model.get_face_tower_features(inputs["face_pixel_values"])
        cached["audio_tower_features"] = model.get_audio_tower_features(inputs["audio_values"])
        replay = tiny_model(**cached)
    assert cached["video_tower_features"].shape == (2, 4, 4, config.vision_config.hidden_size)
    assert cached["audio_tower_features"].shape == (2, 3, 4, config.audio_config.hidden_size)
    torch.testing.assert_close(live.logits, replay.logits)
    torch.testing.assert_close(live.fusion_gate_weights, replay.fusion_gate_weights)


def test_gradients_reach_only_trainable_modules_and_towers_build_no_graph(tiny_model, config):
    model = copy.deepcopy(tiny_model)
    phase = PHASES["1.2"]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, phase))
    model.train()  # as the Trainer does after the recipe froze the model
    tower_outputs = []
    hooks = [
        tower.register_forward_hook(lambda _m, _i, output: tower_outputs.append(output))
        for tower in (model.model.vision_tower, model.model.audio_tower, model.model.face_encoder)
    ]
    inputs = make_batch(config, [{"video", "face", "audio"}, {"video", "face"}])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    for hook in hooks:
        hook.remove()
    assert not model.model.vision_tower.training and not model.model.face_encoder.training
    assert model.model.video_head.qformer.training
    for output in tower_outputs:
        tensor = output if isinstance(output, torch.Tensor) else output.hidden_states[-1]
        assert not tensor.requires_grad
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name
    trained = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad}
    assert trained == {"video_head", "face_head"}


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(config):
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    tiny_config = NanoEmoXConfig.tiny(
        fusion_dropout=0.0,
        projector_dropout=0.0,
        video_qformer_config={**config.video_qformer_config.to_dict(), **no_dropout},
        audio_qformer_config={**config.audio_qformer_config.to_dict(), **no_dropout},
        **{f"{modality}_token_id": token_id for modality, token_id in config.modality_token_ids.items()},
    )
    torch.manual_seed(0)
    model = NanoEmoXForConditionalGeneration(tiny_config)
    for tower in (model.model.vision_tower, model.model.audio_tower, model.model.face_encoder):
        tower.requires_grad_(False)
    model.train()
    inputs = make_batch(tiny_config, [{"video", "face", "audio"}])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    plain_grad = model.model.video_head.projector.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert model.model.language_model.gradient_checkpointing
    torch.testing.assert_close(model.model.video_head.projector.weight.grad, plain_grad)


def test_generate_encodes_media_once_and_batched_equals_single(tiny_model, tiny_processor, rng):
    clips = [(rng.random((6, 40, 48, 3)) * 255).astype("uint8") for _ in range(3)]
    waves = [(rng.standard_normal(8000).astype("float32"), 16000) for _ in range(3)]
    requests = [
        {"videos": clips[0], "audio": waves[0], "text": "I am so happy today", "task": "mer"},
        {"videos": None, "audio": waves[1], "text": "no", "task": "msa"},
        {"videos": clips[2], "audio": None, "text": "Why would you do this to me, honestly?", "task": "ovmer"},
    ]
    tower_calls = []
    hook = tiny_model.model.audio_tower.register_forward_hook(lambda *_: tower_calls.append(1))
    try:
        singles = []
        for request in requests:
            inputs = tiny_processor(**request, use_faces=False)
            out = tiny_model.generate(**inputs, max_new_tokens=6, do_sample=False)
            singles.append(out[0, inputs["input_ids"].shape[1] :])
        assert len(tower_calls) == 2  # one prompt pass per sample with audio, none during decoding
        batched_inputs = tiny_processor(
            videos=[r["videos"] for r in requests], audio=[r["audio"] for r in requests],
            text=[r["text"] for r in requests], task=[r["task"] for r in requests], use_faces=False,
        )  # fmt: skip
        assert (batched_inputs["attention_mask"][:, 0] == 0).any()  # left padding happened
        batched = tiny_model.generate(**batched_inputs, max_new_tokens=6, do_sample=False)
    finally:
        hook.remove()
    prompt = batched_inputs["input_ids"].shape[1]
    for row, single in enumerate(singles):
        assert batched[row, prompt : prompt + len(single)].tolist() == single.tolist()


def test_save_and_load_round_trip(tiny_model, tiny_dir, config):
    inputs = make_batch(config, [{"video", "face", "audio"}, set()])
    loaded = AutoModel.from_pretrained(tiny_dir).eval()
    assert type(loaded) is NanoEmoXForConditionalGeneration
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(**inputs).logits, loaded(**inputs).logits, atol=1e-5, rtol=0)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    assert type(AutoModelForCausalLM.from_pretrained(tiny_dir)) is NanoEmoXForConditionalGeneration
    bf16 = AutoModel.from_pretrained(tiny_dir, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(bf16(**inputs).logits.float()).all()


def test_device_map_never_splits_a_no_split_module(tiny_model, tiny_dir, config):
    from accelerate import infer_auto_device_map

    no_split = tiny_model._no_split_modules
    assert {"NanoEmoXFusionEncoder", "Qwen2DecoderLayer", "CLIPEncoderLayer", "SwinStage"} <= set(no_split)
    size = sum(p.numel() * p.element_size() for p in tiny_model.parameters())
    device_map = infer_auto_device_map(
        tiny_model, max_memory={0: size // 3, 1: size // 3, "cpu": size * 4}, no_split_module_classes=list(no_split)
    )
    assert len(set(device_map.values())) >= 2
    unsplittable = [name for name, module in tiny_model.named_modules() if type(module).__name__ in no_split]
    for placed in device_map:
        assert not any(placed.startswith(name + ".") for name in unsplittable), placed
    inputs = make_batch(config, [{"video", "face", "audio"}])
    loaded = AutoModel.from_pretrained(tiny_dir, device_map="auto")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, tiny_model(**inputs).logits, atol=1e-5, rtol=0)


def test_attention_implementations_pass_through(tiny_dir, config):
    inputs = make_batch(config, [{"video", "face", "audio"}])
    eager = AutoModel.from_pretrained(tiny_dir, attn_implementation="eager").eval()
    sdpa = AutoModel.from_pretrained(tiny_dir, attn_implementation="sdpa").eval()
    assert eager.config.text_config._attn_implementation == "eager"
    assert sdpa.config.vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_model_card_is_written(tiny_dir):
    card = (tiny_dir / "README.md").read_text()
    header = card.split("---")[1]
    for key in ("library_name: transformers", "pipeline_tag:", "license:", "tags:"):
        assert key in header
    assert "| perception | `msa`" in card and "| interaction | `erg`" in card
    assert "trust_remote_code=True" in card


def test_full_size_parameter_counts_on_meta_device():
    from modeling_nanoemox.info import model_info

    info = model_info(NanoEmoXConfig())
    assert info["components"]["video_head.qformer"] == 19_691_520
    assert info["components"]["audio_head.qformer"] == 19_691_520
    assert abs(info["total"] - 2.30e9) / 2.30e9 < 0.01
    assert abs(info["total_without_swin_backbone"] - 2.21e9) / 2.21e9 < 0.01
    heads = sum(info["components"][name] for name in (
        "video_head", "audio_head", "face_head", "fusion_encoder", "fusion_projector"))  # fmt: skip
    assert abs(heads - 50.8e6) / 50.8e6 < 0.01
    assert abs(info["phases"]["3"]["lora"] - 18.5e6) / 18.5e6 < 0.01
    assert info["phases"]["2"]["trainable"] == heads
    assert info["phases"]["3"]["trainable"] == heads + info["phases"]["3"]["lora"]
    assert info["tokens_per_clip"]["total"] == 69


def test_a_sampled_placeholder_token_does_not_break_decoding(tiny_model, config):
    inputs = make_batch(config, [{"audio"}])
    with torch.no_grad():
        prefill = tiny_model(**inputs, use_cache=True)
        cache = prefill.cache if hasattr(prefill, "cache") else prefill.past_key_values
        step = torch.tensor([[config.audio_token_id]])
        mask = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = tiny_model(input_ids=step, attention_mask=mask, **{CACHE_NAME: cache})
    assert out.logits.shape == (1, 1, config.text_config.vocab_size)
    assert sorted(tiny_model.generation_config.suppress_tokens) == sorted(config.modality_token_ids.values())

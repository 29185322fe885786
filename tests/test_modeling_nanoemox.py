"""Tests of `modeling_nanoemox/modeling_nanoemox.py` in transformers' ModelTester style: a tester builds a tiny config
in code and inputs by hand (no processor, no tokenizer); the common checks come first, then the model's own."""

import copy
import inspect
import warnings

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, CompileConfig
from transformers.modeling_outputs import BaseModelOutputWithPooling

from helpers import MEDIA_KEYS, make_batch, select_sample
from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration
from modeling_nanoemox.modeling_nanoemox import CACHE_NAME
from modeling_nanoemox.phases import PHASES, is_trainable

ALL = {"video", "face", "audio"}
MIXED = [ALL, set(), {"audio"}, {"video", "face"}]


class NanoEmoXModelTester:
    """Tiny Nano-EmoX (LM hidden 64, 2 layers; towers 32 wide; 32×32 frames; 8 + 8 + 2 + 1 media tokens), with every
    dropout off so that train-mode checks are deterministic."""

    vocab_size = 512
    num_frames = 4
    num_clips = 3

    def get_config(self) -> NanoEmoXConfig:
        no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
        defaults = NanoEmoXConfig.tiny(vocab_size=self.vocab_size)
        config = NanoEmoXConfig.tiny(
            vocab_size=self.vocab_size,
            fusion_dropout=0.0,
            projector_dropout=0.0,
            video_qformer_config={**defaults.video_qformer_config.to_dict(), **no_dropout},
            audio_qformer_config={**defaults.audio_qformer_config.to_dict(), **no_dropout},
        )
        config.text_config.pad_token_id = 0
        return config

    def create_model(self, seed: int = 0) -> NanoEmoXForConditionalGeneration:
        torch.manual_seed(seed)
        model = NanoEmoXForConditionalGeneration(self.get_config()).eval()
        model.generation_config.pad_token_id = 0
        model.generation_config.eos_token_id = None
        return model

    def prepare_inputs(self, config, modalities=MIXED, **kwargs) -> dict:
        return make_batch(config, modalities, num_frames=self.num_frames, num_clips=self.num_clips, **kwargs)

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        return config, self.prepare_inputs(config)


@pytest.fixture(scope="module")
def tester():
    return NanoEmoXModelTester()


@pytest.fixture(scope="module")
def model(tester):
    """Shared eval-mode model: tests must not modify it in place (deepcopy first)."""
    return tester.create_model()


@pytest.fixture(scope="module")
def config(model):
    return model.config


@pytest.fixture(scope="module")
def saved_dir(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("nanoemox-tiny")
    model.save_pretrained(path)
    return path


# ---- common checks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "modalities",
    [[set()], [{"audio"}], [{"video", "face"}], [ALL], [{"video"}, {"audio"}, set()]],
    ids=["text-only", "audio-only", "frames+face", "all-four", "mixed"],
)
def test_forward_accepts_any_modality_subset(model, tester, config, modalities):
    inputs = tester.prepare_inputs(config, modalities)
    with torch.no_grad():
        output = model(**inputs, labels=inputs["input_ids"])
    batch, length = inputs["input_ids"].shape
    assert output.logits.shape == (batch, length, config.text_config.vocab_size)
    assert torch.isfinite(output.loss)
    fused = [{"video", "audio"} <= m for m in modalities]
    if any(fused):
        gates = output.fusion_gate_weights
        assert gates.shape == (batch, config.num_fusion_experts)
        for row, is_fused in zip(gates, fused):
            assert torch.allclose(row.sum(), torch.tensor(1.0 if is_fused else 0.0), atol=1e-6)
    else:
        assert output.fusion_gate_weights is None


def test_batched_equals_one_by_one(model, tester, config):
    inputs = tester.prepare_inputs(config, MIXED, text_lengths=[5, 9, 7, 3])
    with torch.no_grad():
        batched = model(**inputs)
        for index in range(len(MIXED)):
            single = model(**select_sample(inputs, MIXED, index))
            length = single.logits.shape[1]
            torch.testing.assert_close(batched.logits[index, :length], single.logits[0], atol=1e-5, rtol=1e-5)
            if single.fusion_gate_weights is not None:
                torch.testing.assert_close(batched.fusion_gate_weights[index], single.fusion_gate_weights[0])


def test_save_and_load_round_trip(model, tester, config, saved_dir):
    inputs = tester.prepare_inputs(config)
    loaded = AutoModel.from_pretrained(saved_dir).eval()
    assert type(loaded) is NanoEmoXForConditionalGeneration
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, loaded(**inputs).logits, atol=1e-5, rtol=0)
    assert loaded.lm_head.weight.data_ptr() == loaded.model.language_model.embed_tokens.weight.data_ptr()
    assert type(AutoModelForCausalLM.from_pretrained(saved_dir)) is NanoEmoXForConditionalGeneration
    bf16 = AutoModel.from_pretrained(saved_dir, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.isfinite(bf16(**inputs).logits.float()).all()


def test_state_dict_key_names_are_stable(model):
    # Converters and saved checkpoints rely on these names.
    keys = set(model.state_dict())
    for key in (
        "lm_head.weight",
        "model.video_head.query_tokens",
        "model.video_head.position_embedding.weight",
        "model.video_head.projector.weight",
        "model.audio_head.qformer.layernorm.weight",
        "model.face_head.queries",
        "model.face_head.projector.linear_2.weight",
        "model.fusion_encoder.experts.2.cross_attention.in_proj_weight",
        "model.fusion_encoder.gate.3.weight",
        "model.fusion_projector.weight",
        "model.face_encoder.fuse.weight",
        "model.vision_tower.embeddings.patch_embedding.weight",
        "model.language_model.embed_tokens.weight",
    ):
        assert key in keys, key


def test_return_dict_false_gives_a_tuple(model, tester, config):
    inputs = tester.prepare_inputs(config, [ALL])
    with torch.no_grad():
        output = model(**inputs, labels=inputs["input_ids"])
        as_tuple = model(**inputs, labels=inputs["input_ids"], return_dict=False)
        inner = model.model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and isinstance(inner, tuple)
    torch.testing.assert_close(as_tuple[0], output.loss)
    torch.testing.assert_close(as_tuple[1], output.logits)
    torch.testing.assert_close(as_tuple[-1], output.fusion_gate_weights)
    torch.testing.assert_close(inner[0], model.model(**inputs).last_hidden_state)


def test_inputs_embeds_with_media_equals_input_ids(model, tester, config):
    inputs = tester.prepare_inputs(config)
    media = {k: v for k, v in inputs.items() if k != "input_ids"}
    with torch.no_grad():
        from_ids = model(**inputs)
        from_embeds = model(inputs_embeds=model.get_input_embeddings()(inputs["input_ids"]), **media)
    torch.testing.assert_close(from_embeds.logits, from_ids.logits)
    torch.testing.assert_close(from_embeds.fusion_gate_weights, from_ids.fusion_gate_weights)


@pytest.mark.parametrize("modalities", [[set(), set()], [ALL, {"audio"}]], ids=["text-only", "with-media"])
def test_generate_from_inputs_embeds(model, tester, config, modalities):
    inputs = tester.prepare_inputs(config, modalities, padding_side="left", text_lengths=[6, 3])
    length = inputs["input_ids"].shape[1]
    embeds = model.get_input_embeddings()(inputs.pop("input_ids"))
    ids_inputs = tester.prepare_inputs(config, modalities, padding_side="left", text_lengths=[6, 3])
    expected = model.generate(**ids_inputs, max_new_tokens=4, do_sample=False)[:, length:]
    generated = model.generate(inputs_embeds=embeds, **inputs, max_new_tokens=4, do_sample=False)
    assert generated.tolist() == expected.tolist()


def test_generate_encodes_media_once_and_batched_equals_single(model, tester, config):
    modalities = [ALL, {"audio"}, {"video"}]
    inputs = tester.prepare_inputs(config, modalities, padding_side="left", text_lengths=[4, 9, 6])
    calls = []
    hook = model.model.audio_tower.register_forward_hook(lambda *_: calls.append(1))
    try:
        batched = model.generate(**inputs, max_new_tokens=5, do_sample=False)
        assert len(calls) == 1  # the prompt pass only, none during decoding
        prompt = inputs["input_ids"].shape[1]
        for index in range(len(modalities)):
            single_inputs = select_sample(inputs, modalities, index)
            single = model.generate(**single_inputs, max_new_tokens=5, do_sample=False)
            new = single[0, single_inputs["input_ids"].shape[1] :]
            assert batched[index, prompt:].tolist() == new.tolist()
    finally:
        hook.remove()


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tester, config):
    model = tester.create_model()
    for tower in (model.model.vision_tower, model.model.audio_tower, model.model.face_encoder):
        tower.requires_grad_(False)
    model.train()
    inputs = tester.prepare_inputs(config, [ALL, {"audio"}])
    loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    checkpointed = model(**inputs, labels=inputs["input_ids"]).loss
    checkpointed.backward()
    assert model.model.language_model.gradient_checkpointing
    torch.testing.assert_close(checkpointed, loss)
    for name in ("model.video_head.projector.weight", "model.fusion_projector.weight", "model.face_head.queries"):
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, plain[name])


def test_removing_a_placeholder_raises_naming_modality_and_counts(model, tester, config):
    inputs = tester.prepare_inputs(config, [{"video"}, {"video"}])
    first_video = (inputs["input_ids"][1] == config.video_token_id).nonzero()[0]
    inputs["input_ids"][1, first_video] = 7
    with pytest.raises(
        ValueError,
        match=r"^video: 15 placeholder tokens in the prompt but the features fill 16 \(2 items × 8 tokens\)",
    ):
        model(**inputs)


def test_placeholders_moved_between_samples_raise(model, tester, config):
    inputs = tester.prepare_inputs(config, [{"audio"}, {"audio"}])
    ids = inputs["input_ids"]
    ids[0, (ids[0] == config.audio_token_id).nonzero()[0]] = 7
    ids[1, -1] = config.audio_token_id  # the total still matches: 7 + 9
    with pytest.raises(ValueError, match=r"audio: a sample with audio has exactly 8 placeholder tokens, but samples "
                                         r"\[0, 1\] have \[7, 9\]"):  # fmt: skip
        model(**inputs)


def test_media_without_placeholders_raises(model, tester, config):
    inputs = tester.prepare_inputs(config, [set()])
    inputs["audio_values"] = torch.randn(1, 2, 16000)
    with pytest.raises(
        ValueError, match=r"audio: 0 placeholder tokens in the prompt but the features fill 8 \(1 item"
    ):
        model(**inputs)


# ---- regression tests for the defects of issue 10 -------------------------------------------------------------


def test_forward_signature_is_small_and_explicit():
    names = list(inspect.signature(NanoEmoXForConditionalGeneration.forward).parameters)
    assert names == [
        "self", "input_ids", "attention_mask", "position_ids", "cache", "inputs_embeds", "pixel_values_videos",
        "face_pixel_values", "audio_values", "tower_features", "labels", "use_cache", "logits_to_keep", "kwargs",
    ]  # fmt: skip
    prepare = inspect.signature(NanoEmoXForConditionalGeneration.prepare_inputs_for_generation).parameters
    assert {"input_ids", "inputs_embeds", "attention_mask", "cache", *MEDIA_KEYS.values(), "tower_features"} <= set(
        prepare
    )


def test_prepare_inputs_for_generation_passes_media_on_the_first_step_only(model, tester, config):
    inputs = tester.prepare_inputs(config, [ALL])
    first = model.prepare_inputs_for_generation(**inputs, is_first_iteration=True, use_cache=True)
    later = model.prepare_inputs_for_generation(**inputs, is_first_iteration=False, use_cache=True)
    for key in MEDIA_KEYS.values():
        assert first[key] is inputs[key] and later.get(key) is None


def test_placeholder_without_media_is_an_ordinary_token(model, tester, config):
    inputs = tester.prepare_inputs(config, [ALL])
    text_only = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with torch.no_grad():
        plain = model(**text_only)
        reference = model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(plain.logits, reference.logits)
    assert plain.fusion_gate_weights is None


def test_assisted_decoding_with_media(model, tester, config):
    # Generation drops the media for the assistant's later calls: its placeholders are ordinary tokens then.
    inputs = tester.prepare_inputs(config, [ALL])
    expected = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assisted = model.generate(**inputs, max_new_tokens=5, do_sample=False, assistant_model=copy.deepcopy(model))
    assert assisted.tolist() == expected.tolist()


def test_a_sampled_placeholder_token_does_not_break_decoding(model, tester, config):
    inputs = tester.prepare_inputs(config, [{"audio"}])
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        step = torch.tensor([[config.audio_token_id]])
        mask = torch.cat([inputs["attention_mask"], torch.ones(1, 1, dtype=torch.long)], dim=1)
        out = model(input_ids=step, attention_mask=mask, **{CACHE_NAME: getattr(prefill, CACHE_NAME)})
    assert out.logits.shape == (1, 1, config.text_config.vocab_size)


@pytest.mark.parametrize(
    ("method", "tower", "key", "tokens"),
    [
        ("get_video_features", "get_video_tower_features", "pixel_values_videos", "num_video_tokens"),
        ("get_audio_features", "get_audio_tower_features", "audio_values", "num_audio_tokens"),
        ("get_face_features", "get_face_tower_features", "face_pixel_values", "num_face_tokens"),
    ],
)
def test_get_features_take_raw_media_and_return_base_model_output_with_pooling(
    model, tester, config, method, tower, key, tokens
):
    raw = tester.prepare_inputs(config, [ALL, ALL])[key]
    with torch.no_grad():
        output = getattr(model, method)(raw)
        as_tuple = getattr(model.model, method)(raw, return_dict=False)
        tower_features = getattr(model.model, tower)(raw)
    assert isinstance(output, BaseModelOutputWithPooling)
    torch.testing.assert_close(output.last_hidden_state, tower_features)
    assert output.pooler_output.shape == (2, getattr(config, tokens), config.text_config.hidden_size)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[1], output.pooler_output)


def test_placeholders_receive_exactly_the_modality_embeddings(model, tester, config):
    modalities = [{"video", "audio"}, {"audio"}]
    inputs = tester.prepare_inputs(config, modalities)
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True
    )
    try:
        with torch.no_grad():
            model(**inputs)
            video = model.get_video_features(inputs["pixel_values_videos"])
            audio = model.get_audio_features(inputs["audio_values"])
            fusion, _ = model.model.get_fusion_features(video.last_hidden_state, audio.last_hidden_state[:1])
            text = model.get_input_embeddings()(inputs["input_ids"])
    finally:
        hook.remove()
    embeds, ids = captured["embeds"], inputs["input_ids"]
    torch.testing.assert_close(embeds[0][ids[0] == config.video_token_id], video.pooler_output[0])
    torch.testing.assert_close(embeds[0][ids[0] == config.audio_token_id], audio.pooler_output[0])
    torch.testing.assert_close(embeds[1][ids[1] == config.audio_token_id], audio.pooler_output[1])
    torch.testing.assert_close(embeds[0][ids[0] == config.fusion_token_id], fusion[0])
    plain = ~torch.isin(ids, torch.tensor(list(config.modality_token_ids.values())))
    torch.testing.assert_close(embeds[plain], text[plain])


def test_fusion_pairs_each_sample_with_its_own_video_and_audio(model, tester, config):
    modalities = [{"audio"}, {"video", "audio"}, {"video"}]
    inputs = tester.prepare_inputs(config, modalities)
    with torch.no_grad():
        output = model(**inputs)
        video = model.model.get_video_tower_features(inputs["pixel_values_videos"])
        audio = model.model.get_audio_tower_features(inputs["audio_values"])
        _, gates = model.model.get_fusion_features(video[0:1], audio[1:2])  # sample 1: video item 0, audio item 1
    torch.testing.assert_close(output.fusion_gate_weights[1], gates[0])
    assert output.fusion_gate_weights[[0, 2]].abs().sum() == 0


def test_fusion_placeholders_need_their_samples_video_and_audio(model, tester, config):
    inputs = tester.prepare_inputs(config, [{"audio"}, {"video"}])
    inputs["input_ids"][0, -1] = config.fusion_token_id
    with pytest.raises(ValueError, match=r"fusion: samples \[0\] have fusion placeholders but not both video and"):
        model(**inputs)
    only_audio = tester.prepare_inputs(config, [{"video", "audio"}])
    del only_audio["pixel_values_videos"]
    with pytest.raises(ValueError, match="fusion: 1 samples have fusion placeholders but no video media was given"):
        model(**only_audio)


def test_tower_features_give_the_same_output_as_raw_media(model, tester, config):
    inputs = tester.prepare_inputs(config, [ALL, {"audio"}])
    inner = model.model
    with torch.no_grad():
        live = model(**inputs)
        towers = {
            "video": inner.get_video_tower_features(inputs["pixel_values_videos"]),
            "face": inner.get_face_tower_features(inputs["face_pixel_values"]),
            "audio": inner.get_audio_tower_features(inputs["audio_values"]),
        }
        text = {k: inputs[k] for k in ("input_ids", "attention_mask")}
        replay = model(**text, tower_features=towers)
        partly = model(**text, tower_features={"audio": towers["audio"]}, **{
            k: inputs[k] for k in ("pixel_values_videos", "face_pixel_values")})  # fmt: skip
    assert towers["video"].shape == (1, 4, 1 + config.num_fusion_experts, config.vision_config.hidden_size)
    assert towers["audio"].shape == (2, 3, 1 + config.num_fusion_experts, config.audio_config.hidden_size)
    for output in (replay, partly):
        torch.testing.assert_close(live.logits, output.logits)
        torch.testing.assert_close(live.fusion_gate_weights, output.fusion_gate_weights)
    with pytest.raises(ValueError, match="audio: pass the raw media or its `tower_features`, not both"):
        model(**inputs, tower_features={"audio": towers["audio"]})
    with pytest.raises(ValueError, match=r"tower_features: unknown keys \['fusion'\]"):
        model(**text, tower_features={"fusion": towers["audio"]})


def test_can_compile_fullgraph_static_cache_generate(model, tester, config):
    assert NanoEmoXForConditionalGeneration._can_compile_fullgraph
    inputs = tester.prepare_inputs(config, [ALL, {"audio"}], padding_side="left")
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    compiled_model = copy.deepcopy(model)
    compile_config = CompileConfig(fullgraph=True, backend="eager", dynamic=False)
    compile_config._compile_all_devices = True
    torch._dynamo.reset()
    generated = compiled_model.generate(
        **inputs, max_new_tokens=4, do_sample=False, cache_implementation="static", compile_config=compile_config
    )
    assert hasattr(compiled_model, "_compiled_call")  # the decoding steps ran compiled, in one graph
    assert generated.tolist() == expected.tolist()


def test_tensor_parallel_plan_covers_the_tied_lm_head(model):
    assert model.tp_plan["lm_head"] == "colwise_gather_output"
    assert any(key.startswith("model.language_model.layers.") for key in model.tp_plan)


def test_past_key_values_gives_the_transformers_deprecation_warning(model, tester, config):
    inputs = tester.prepare_inputs(config, [set()])
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        step = {"input_ids": torch.tensor([[9]]), "attention_mask": torch.ones(1, inputs["input_ids"].shape[1] + 1)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            old = model(**step, past_key_values=copy.deepcopy(getattr(prefill, CACHE_NAME)))
        new = model(**step, **{CACHE_NAME: copy.deepcopy(getattr(prefill, CACHE_NAME))})
    torch.testing.assert_close(old.logits, new.logits)
    if CACHE_NAME == "cache":  # transformers >= 5.24, where its own models warn the same way
        assert any(
            issubclass(w.category, FutureWarning) and "`past_key_values` is deprecated" in str(w.message)
            for w in caught
        )


# ---- model-specific checks ----------------------------------------------------------------------------------


def test_gradients_reach_only_trainable_modules_and_towers_build_no_graph(tester, config):
    model = tester.create_model()
    phase = PHASES["1.2"]
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(is_trainable(name, phase))
    model.train()  # as the Trainer does after the recipe froze the model
    tower_outputs = []
    hooks = [
        tower.register_forward_hook(lambda _m, _i, output: tower_outputs.append(output))
        for tower in (model.model.vision_tower, model.model.audio_tower, model.model.face_encoder)
    ]
    inputs = tester.prepare_inputs(config, [ALL, {"video", "face"}])
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


def test_device_map_never_splits_a_no_split_module(model, tester, config, saved_dir):
    from accelerate import infer_auto_device_map

    no_split = model._no_split_modules
    assert {"NanoEmoXFusionEncoder", "Qwen2DecoderLayer", "CLIPEncoderLayer", "SwinStage"} <= set(no_split)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    device_map = infer_auto_device_map(
        model, max_memory={0: size // 3, 1: size // 3, "cpu": size * 4}, no_split_module_classes=list(no_split)
    )
    assert len(set(device_map.values())) >= 2
    unsplittable = [name for name, module in model.named_modules() if type(module).__name__ in no_split]
    for placed in device_map:
        assert not any(placed.startswith(name + ".") for name in unsplittable), placed
    inputs = tester.prepare_inputs(config, [ALL])
    loaded = AutoModel.from_pretrained(saved_dir, device_map="auto")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-5, rtol=0)


def test_attention_implementations_pass_through(tester, config, saved_dir):
    inputs = tester.prepare_inputs(config, [ALL])
    eager = AutoModel.from_pretrained(saved_dir, attn_implementation="eager").eval()
    sdpa = AutoModel.from_pretrained(saved_dir, attn_implementation="sdpa").eval()
    assert eager.config.text_config._attn_implementation == "eager"
    assert sdpa.config.vision_config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(eager(**inputs).logits, sdpa(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_model_card_is_written(saved_dir):
    card = (saved_dir / "README.md").read_text()
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


def test_audio_clip_feature_is_layers_21_22_23_and_the_final_layer_norm(model, tester, config):
    """Regression (issue 12, item 1). The authors average "the last four layers" of HuBERT-large,
    `torch.stack(hidden_states)[[-4, -3, -2, -1]].mean(0)` (models/encoder.py:576-580), under transformers 4.49. In 4.x
    the stable-layer-norm encoder appended the FINAL LAYERNORM's output as the last `hidden_states` entry; since
    transformers 5 the last entry is the last layer's raw output and the LayerNorm output is only `last_hidden_state`.
    So the clip feature must be hidden_states[-4], [-3], [-2] (full size: layers 21, 22, 23) and `last_hidden_state`
    — expressed in the config as `audio_feature_layers=[-4, -3, -2]` + `audio_feature_last_hidden_state=True`."""
    assert config.audio_feature_layers == [-4, -3, -2] and config.audio_feature_last_hidden_state
    assert NanoEmoXConfig().audio_feature_layers == [-4, -3, -2]  # full size: 24 layers → layers 21, 22, 23
    audio = tester.prepare_inputs(config, [{"audio"}])["audio_values"]
    tower = model.model.audio_tower
    with torch.no_grad():
        features = model.model.get_audio_tower_features(audio)
        outputs = tower(audio.flatten(0, 1), output_hidden_states=True)
    hidden = outputs.hidden_states
    assert len(hidden) == config.audio_config.num_hidden_layers + 1  # embeddings + one per layer
    # The transformers 4 → 5 change itself: the last entry is no longer the LayerNorm output.
    assert not torch.allclose(hidden[-1], outputs.last_hidden_state)
    torch.testing.assert_close(tower.encoder.layer_norm(hidden[-1]), outputs.last_hidden_state)
    expected = torch.stack([hidden[-4], hidden[-3], hidden[-2], outputs.last_hidden_state]).mean(0).mean(1)
    torch.testing.assert_close(features[:, :, 0].flatten(0, 1), expected)
    wrong = torch.stack([hidden[-4], hidden[-3], hidden[-2], hidden[-1]]).mean(0).mean(1)  # the old definition
    assert (features[:, :, 0].flatten(0, 1) - wrong).abs().max() > 1e-3

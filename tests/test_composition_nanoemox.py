"""Tests of `modeling_nanoemox/composition_nanoemox.py`: composing Nano-EmoX from released component checkpoints
(tiny random ones saved locally here) and the placeholder-token surgery on the tokenizer."""

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    HubertConfig,
    HubertModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from helpers import make_batch
from modeling_nanoemox import (
    DEFAULT_MODALITY_TOKENS,
    NanoEmoXConfig,
    NanoEmoXFaceEncoder,
    NanoEmoXForConditionalGeneration,
    add_modality_tokens,
    compose_from_components,
)
from modeling_nanoemox.tiny import build_tiny_tokenizer

TINY_LAYOUT = {"vision_multiscale_layers": [1, 2, 3], "audio_multiscale_layers": [1, 2, 3], "num_video_tokens": 8,
               "num_audio_tokens": 8, "num_face_tokens": 2, "face_num_heads": 2, "face_projector_hidden_size": 32,
               "fusion_hidden_size": 32, "fusion_num_heads": 4,
               "video_qformer_config": NanoEmoXConfig.tiny().video_qformer_config.to_dict(),
               "audio_qformer_config": NanoEmoXConfig.tiny().audio_qformer_config.to_dict()}  # fmt: skip


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """Tiny component checkpoints saved locally, as Hub checkpoints would be."""
    root = tmp_path_factory.mktemp("components")
    tokenizer = build_tiny_tokenizer(with_modality_tokens=False)
    text_config = Qwen2Config(vocab_size=1100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(1)
    Qwen2ForCausalLM(text_config).save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    # A vocabulary exactly as large as the tokenizer: adding the placeholders must grow the embeddings.
    Qwen2ForCausalLM(Qwen2Config(**{**text_config.to_dict(), "vocab_size": len(tokenizer)})).save_pretrained(
        root / "text-full"
    )
    tokenizer.save_pretrained(root / "text-full")
    Qwen2ForCausalLM(Qwen2Config(**{**text_config.to_dict(), "tie_word_embeddings": False})).save_pretrained(
        root / "text-untied"
    )
    tokenizer.save_pretrained(root / "text-untied")
    clip = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(clip).save_pretrained(root / "clip")
    base = NanoEmoXConfig.tiny()
    HubertModel(HubertConfig(**base.audio_config.to_dict())).save_pretrained(root / "hubert")
    NanoEmoXFaceEncoder(base.face_config).save_pretrained(root / "face")
    return root


def test_from_components_copies_weights_and_adds_placeholders(components):
    model, tokenizer = compose_from_components(
        text=components / "text", vision=components / "clip", audio=components / "hubert",
        face=components / "face", config_overrides=TINY_LAYOUT, return_tokenizer=True,
    )  # fmt: skip
    assert [tokenizer.convert_ids_to_tokens(getattr(model.config, f"{m}_token_id")) for m in ("video", "audio")] == [
        "<|emox_video|>",
        "<|emox_audio|>",
    ]
    assert tokenizer.fusion_token == "<|emox_fusion|>"
    assert model.get_input_embeddings().weight.shape[0] == 1100  # room left in the vocabulary: no resize
    text = Qwen2ForCausalLM.from_pretrained(components / "text")
    torch.testing.assert_close(
        model.model.language_model.layers[1].mlp.up_proj.weight, text.model.layers[1].mlp.up_proj.weight
    )
    clip = CLIPModel.from_pretrained(components / "clip")
    vision_tower = model.model.vision_tower
    torch.testing.assert_close(
        vision_tower.encoder.layers[3].self_attn.k_proj.weight,
        clip.vision_model.encoder.layers[3].self_attn.k_proj.weight,
    )
    assert not any("text_model" in name for name, _ in vision_tower.named_parameters())
    hubert = HubertModel.from_pretrained(components / "hubert")
    torch.testing.assert_close(model.model.audio_tower.encoder.layers[0].attention.q_proj.weight,
                               hubert.encoder.layers[0].attention.q_proj.weight)  # fmt: skip
    face = NanoEmoXFaceEncoder.from_pretrained(components / "face")
    torch.testing.assert_close(model.model.face_encoder.fuse.weight, face.fuse.weight)
    new = model.model.video_head.projector.weight
    assert 0.01 < new.std().item() < 0.03  # randomly initialised with initializer_range
    inputs = make_batch(model.config, [{"video", "face", "audio"}])
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_from_components_resizes_only_when_needed(components):
    model, tokenizer = compose_from_components(
        text=components / "text-full", vision=components / "clip", audio=components / "hubert",
        config_overrides=TINY_LAYOUT, return_tokenizer=True,
    )  # fmt: skip
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == model.config.text_config.vocab_size
    assert model.config.fusion_token_id == len(tokenizer) - 1


def test_composed_model_suppresses_placeholders_in_generation(components):
    model = compose_from_components(
        text=components / "text", vision=components / "clip", audio=components / "hubert",
        config_overrides=TINY_LAYOUT, dtype=torch.bfloat16,
    )  # fmt: skip
    assert model.dtype == torch.bfloat16
    assert sorted(model.generation_config.suppress_tokens) == sorted(model.config.modality_token_ids.values())


def test_add_modality_tokens_keeps_existing_ones_and_names_them():
    tokenizer = build_tiny_tokenizer(with_modality_tokens=False)
    size = len(tokenizer)
    ids = add_modality_tokens(tokenizer)
    assert set(ids) == set(DEFAULT_MODALITY_TOKENS) and len(tokenizer) == size + 4
    assert tokenizer.video_token == "<|emox_video|>" and tokenizer.video_token_id == ids["video"]
    assert add_modality_tokens(tokenizer) == ids and len(tokenizer) == size + 4  # idempotent
    assert tokenizer.encode("<|emox_face|>", add_special_tokens=False) == [ids["face"]]
    with pytest.raises(ValueError, match=r"modality_tokens: unknown modalities \['image'\]"):
        add_modality_tokens(tokenizer, {"image": "<image>"})


def eager_compose(text, vision, audio, face, config_overrides):
    """The composition before issue 16, kept as the reference: every component and a fully initialised model in
    memory together, weights copied across."""
    tokenizer = AutoTokenizer.from_pretrained(text)
    token_ids = add_modality_tokens(tokenizer)
    language_model = AutoModelForCausalLM.from_pretrained(text, dtype=torch.float32)
    vision_config = CLIPConfig.from_pretrained(vision).vision_config
    vision_tower = CLIPVisionModel.from_pretrained(vision, config=vision_config, dtype=torch.float32)
    audio_tower = AutoModel.from_pretrained(audio, dtype=torch.float32)
    face_encoder = NanoEmoXFaceEncoder.from_pretrained(face, dtype=torch.float32)
    if len(tokenizer) > language_model.config.vocab_size:
        language_model.resize_token_embeddings(len(tokenizer))
    config = NanoEmoXConfig(
        text_config=language_model.config.to_dict(),
        vision_config=vision_tower.config.to_dict(),
        audio_config={**audio_tower.config.to_dict(), "apply_spec_augment": False, "layerdrop": 0.0},
        face_config=face_encoder.config.to_dict(),
        **{f"{modality}_token_id": token_id for modality, token_id in token_ids.items()},
        **config_overrides,
    )
    model = NanoEmoXForConditionalGeneration(config)
    model.model.language_model.load_state_dict(language_model.model.state_dict())
    model.lm_head.load_state_dict(language_model.lm_head.state_dict())
    model.model.vision_tower.load_state_dict(vision_tower.state_dict())
    model.model.audio_tower.load_state_dict(audio_tower.state_dict())
    model.model.face_encoder.load_state_dict(face_encoder.state_dict())
    return model


def _architecture(config: dict) -> dict:
    return {key: _architecture(value) if isinstance(value, dict) else value for key, value in config.items()
            if key not in ("dtype", "_name_or_path")}  # fmt: skip


LOADED = ("model.language_model.", "model.vision_tower.", "model.audio_tower.", "model.face_encoder.", "lm_head.")


def test_meta_composition_equals_the_eager_composition(components):
    """Loaded parts bit-identical, buffers identical, the same tensors in the same dtypes, lm_head tied, and the parts
    no component supplies initialised by the model's `_init_weights` (same distribution as the eager path: zeros,
    ones and standard deviations match), not left as uninitialised memory."""
    paths = {"text": components / "text", "vision": components / "clip", "audio": components / "hubert",
             "face": components / "face"}  # fmt: skip
    reference = eager_compose(**paths, config_overrides=TINY_LAYOUT)
    model = compose_from_components(**paths, config_overrides=TINY_LAYOUT)
    # The eager path copied the loaded components' configs, which also record where and in what dtype they were
    # loaded; the architecture is what must agree.
    assert _architecture(model.config.to_diff_dict()) == _architecture(reference.config.to_diff_dict())
    ours = dict(model.state_dict())
    theirs = dict(reference.state_dict())
    assert ours.keys() == theirs.keys()
    assert model.lm_head.weight is model.get_input_embeddings().weight
    for name, tensor in theirs.items():
        mine = ours[name]
        assert mine.device.type == "cpu" and mine.dtype == tensor.dtype and mine.shape == tensor.shape, name
        if name.startswith(LOADED):
            torch.testing.assert_close(mine, tensor, rtol=0, atol=0, msg=name)
        elif torch.all(tensor == 0) or torch.all(tensor == 1):
            torch.testing.assert_close(mine, tensor, rtol=0, atol=0, msg=name)  # biases, norms
        else:
            assert torch.isfinite(mine).all(), name
            assert mine.std().item() == pytest.approx(tensor.std().item(), rel=0.35, abs=2e-3), name
    for (name, buffer), (_, reference_buffer) in zip(model.named_buffers(), reference.named_buffers()):
        torch.testing.assert_close(buffer, reference_buffer, rtol=0, atol=0, msg=name)  # incl. non-persistent ones
    inputs = make_batch(model.config, [{"video", "face", "audio"}])
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(**inputs).logits, reference.eval()(**inputs).logits)


def test_meta_composition_in_bfloat16_and_untied_head(components):
    model = compose_from_components(
        text=components / "text-untied", vision=components / "clip", audio=components / "hubert",
        config_overrides=TINY_LAYOUT, dtype=torch.bfloat16,
    )  # fmt: skip
    assert {tensor.dtype for tensor in model.parameters()} == {torch.bfloat16}
    text = Qwen2ForCausalLM.from_pretrained(components / "text-untied", dtype=torch.bfloat16)
    assert model.lm_head.weight is not model.get_input_embeddings().weight
    torch.testing.assert_close(model.lm_head.weight, text.lm_head.weight, rtol=0, atol=0)
    assert torch.isfinite(model.model.face_encoder.fuse.weight).all()  # random face encoder, really initialised
    assert 0.01 < model.model.face_encoder.fuse.weight.float().std().item() < 0.03


def test_meta_composition_rejects_a_component_of_another_architecture(components, tmp_path):
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                                     image_size=32, patch_size=8)).save_pretrained(tmp_path / "clip")  # fmt: skip
    overrides = {**TINY_LAYOUT, "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4,
                                                  "num_attention_heads": 4, "image_size": 32, "patch_size": 4}}  # fmt: skip
    with pytest.raises(ValueError, match="vision tower checkpoint does not match"):
        compose_from_components(text=components / "text", vision=tmp_path / "clip", audio=components / "hubert",
                                config_overrides=overrides)  # fmt: skip

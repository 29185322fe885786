"""Tests of `modeling_nanoemox/composition_nanoemox.py`: composing Nano-EmoX from released component checkpoints
(tiny random ones saved locally here) and the placeholder-token surgery on the tokenizer."""

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, HubertConfig, HubertModel, Qwen2Config, Qwen2ForCausalLM

from helpers import make_batch
from modeling_nanoemox import (
    DEFAULT_MODALITY_TOKENS,
    NanoEmoXConfig,
    NanoEmoXFaceEncoder,
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

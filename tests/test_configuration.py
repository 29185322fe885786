import json

import pytest
from transformers import Blip2QFormerConfig, CLIPVisionConfig, HubertConfig, Qwen2Config, SwinConfig

from modeling_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig


def test_defaults_describe_the_full_model():
    config = NanoEmoXConfig()
    assert isinstance(config.text_config, Qwen2Config)
    assert (config.text_config.hidden_size, config.text_config.num_hidden_layers) == (1536, 28)
    assert (config.text_config.num_attention_heads, config.text_config.num_key_value_heads) == (12, 2)
    assert config.tie_word_embeddings is True
    assert isinstance(config.vision_config, CLIPVisionConfig)
    assert (config.vision_config.hidden_size, config.vision_config.patch_size, config.vision_config.image_size) == (
        1024,
        14,
        224,
    )
    assert isinstance(config.audio_config, HubertConfig) and config.audio_config.num_hidden_layers == 24
    assert isinstance(config.face_config, NanoEmoXFaceConfig)
    swin = config.face_config.backbone_config
    assert isinstance(swin, SwinConfig)
    assert (swin.embed_dim, swin.depths, swin.num_heads, swin.window_size) == (128, [2, 2, 18, 2], [4, 8, 16, 32], 7)
    assert config.face_config.stage_hidden_sizes == [128, 256, 512, 1024]
    for qformer in (config.video_qformer_config, config.audio_qformer_config):
        assert isinstance(qformer, Blip2QFormerConfig)
        assert (qformer.hidden_size, qformer.num_hidden_layers, qformer.cross_attention_frequency) == (768, 2, 1)
        assert qformer.encoder_hidden_size == 1024
    assert (config.num_video_tokens, config.num_audio_tokens, config.num_face_tokens, config.num_fusion_tokens) == (
        32,
        32,
        4,
        1,
    )
    assert config.vision_feature_layer == -2
    assert config.vision_multiscale_layers == [12, 16, 22]
    # Layers 21, 22, 23 and the final layer-normed state (transformers 5's last_hidden_state; see DESIGN §6).
    assert config.audio_feature_layers == [-4, -3, -2] and config.audio_feature_last_hidden_state
    assert config.audio_multiscale_layers == [16, 18, 22]
    assert config.num_fusion_experts == 3
    assert (config.fusion_hidden_size, config.fusion_num_heads) == (512, 8)


@pytest.mark.parametrize("factory", [NanoEmoXConfig, NanoEmoXConfig.tiny])
def test_round_trip_through_dict_and_json(tmp_path, factory):
    config = factory()
    again = NanoEmoXConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    config.save_pretrained(tmp_path)
    loaded = NanoEmoXConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert type(loaded.face_config.backbone_config) is SwinConfig
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "nanoemox"


def test_sub_configs_accept_dicts_and_configs():
    config = NanoEmoXConfig.tiny(text_config={"model_type": "llama", "vocab_size": 1100, "hidden_size": 32,
                                              "intermediate_size": 64, "num_hidden_layers": 1,
                                              "num_attention_heads": 2, "num_key_value_heads": 1})  # fmt: skip
    assert config.text_config.model_type == "llama" and config.text_config.vocab_size == 1100
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
                              image_size=32, patch_size=8)  # fmt: skip
    assert NanoEmoXConfig.tiny(vision_config=vision).vision_config is vision


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"vision_multiscale_layers": [1, 2]}, "vision_multiscale_layers` has 2 entries"),
        ({"vision_multiscale_layers": [1, 2, 9]}, "contains layer 9, but the tower has 4 layers"),
        ({"audio_feature_layers": [-6]}, "contains layer -6"),
        ({"audio_feature_layers": [], "audio_feature_last_hidden_state": False}, "at least one layer"),
        ({"fusion_hidden_size": 30}, "divisible by `fusion_num_heads`"),
        ({"face_num_heads": 3}, "divisible by `face_num_heads`"),
        ({"num_face_tokens": 0}, "`num_face_tokens` must be a positive integer, got 0"),
        ({"video_token_id": 4000}, "outside the language model's vocabulary of 1024"),
        ({"audio_token_id": 508, "video_token_id": 508}, "must be distinct"),
        ({"text_config": {"model_type": "no-such-model"}}, "model_type='no-such-model'"),
    ],
)
def test_invalid_architectures_raise_readable_errors(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        NanoEmoXConfig.tiny(**overrides)


def test_qformer_width_must_match_its_tower():
    with pytest.raises(ValueError, match="encoder_hidden_size` must equal the tower width 32, got 64"):
        NanoEmoXConfig.tiny(video_qformer_config={"model_type": "blip_2_qformer", "hidden_size": 32,
                                                  "num_attention_heads": 4, "encoder_hidden_size": 64})  # fmt: skip


def test_wrong_sub_config_type_is_a_type_error():
    with pytest.raises(TypeError, match="`vision_config` must be a dict, a PreTrainedConfig or None, got str"):
        NanoEmoXConfig(vision_config="clip")


def test_face_config_needs_swin():
    with pytest.raises(ValueError, match="needs a Swin backbone"):
        NanoEmoXFaceConfig(backbone_config={"model_type": "vit"})

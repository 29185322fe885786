# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Nano-EmoX configuration.

The composite configuration mirrors the model's parts (DESIGN §2): a causal language model, a CLIP vision tower,
a HuBERT audio tower, a FaceXFormer face encoder, two Q-Formers, a multi-scale gated fusion encoder and four
adapters. Defaults describe the full 2.2 B model (Qwen2.5-1.5B-Instruct, CLIP ViT-L/14, chinese-hubert-large,
FaceXFormer Swin-B); [`NanoEmoXConfig.tiny`] gives a random model small enough for unit tests on a CPU.
"""

from dataclasses import field

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging

logger = logging.get_logger(__name__)


# Architectures of the released components the full model is composed from. The values are copied from the
# components' own `config.json` files so that `NanoEmoXConfig()` describes exactly what `from_components` builds.
QWEN2_5_1_5B_INSTRUCT = {
    "model_type": "qwen2",
    "vocab_size": 151936,
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 21,
    "tie_word_embeddings": True,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "pad_token_id": 151643,
}
CLIP_VIT_L_14 = {
    "model_type": "clip_vision_model",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "projection_dim": 768,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
CHINESE_HUBERT_LARGE = {
    "model_type": "hubert",
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "feat_extract_norm": "layer",
    "feat_extract_activation": "gelu",
    "conv_dim": [512, 512, 512, 512, 512, 512, 512],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_bias": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "do_stable_layer_norm": True,
    # The tower is a frozen feature extractor: SpecAugment-style masking would make features depend on the mode, and
    # LayerDrop would change which hidden states exist (Nano-EmoX reads layers by index).
    "apply_spec_augment": False,
    "layerdrop": 0.0,
    "vocab_size": 32,
}
SWIN_B = {
    "model_type": "swin",
    "image_size": 224,
    "patch_size": 4,
    "num_channels": 3,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
    "window_size": 7,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "hidden_act": "gelu",
    "drop_path_rate": 0.0,
    "layer_norm_eps": 1e-5,
}
# LAVIS' bert-base Q-Former reduced to the parts the authors keep: 2 layers, cross-attention in every layer,
# learned queries only (no word embeddings, no text feed-forward). `encoder_hidden_size` is the tower width.
QFORMER_2L = {
    "model_type": "blip_2_qformer",
    "hidden_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "cross_attention_frequency": 1,
    "encoder_hidden_size": 1024,
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
}


def _build_sub_config(name: str, value, defaults: dict, config_class=None) -> PreTrainedConfig:
    """`dict` (with or without `model_type`) / config / `None` → config instance, with a readable error otherwise."""
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        value = dict(defaults)
    if not isinstance(value, dict):
        raise TypeError(f"`{name}` must be a dict, a PreTrainedConfig or None, got {type(value).__name__}.")
    if config_class is not None:
        return config_class(**value)
    model_type = value.get("model_type", defaults["model_type"])
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"`{name}` has model_type={model_type!r}, which transformers does not know.")
    kwargs = {k: v for k, v in value.items() if k != "model_type"}
    return CONFIG_MAPPING[model_type](**kwargs)


def _check_layer_index(name: str, index: int, num_layers: int) -> None:
    # `output_hidden_states` returns num_layers + 1 tensors (the embeddings first), indexable from both ends.
    if not -(num_layers + 1) <= index <= num_layers:
        raise ValueError(
            f"`{name}` contains layer {index}, but the tower has {num_layers} layers "
            f"(valid hidden-state indices are {-(num_layers + 1)}..{num_layers})."
        )


class NanoEmoXFaceConfig(PreTrainedConfig):
    r"""
    Configuration of the FaceXFormer face encoder: a Swin backbone whose four stage outputs are projected to
    `hidden_size`, upsampled to the first stage's resolution, fused by a 1×1 convolution and average-pooled into one
    vector per face crop.

    Args:
        backbone_config (`dict` or `SwinConfig`, *optional*):
            The Swin backbone. Defaults to Swin-B (embed 128, depths 2/2/18/2, heads 4/8/16/32, window 7) at 224 px.
        hidden_size (`int`, *optional*, defaults to 256):
            Width of the multi-scale head and of the per-frame face feature.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser.
    """

    model_type = "nanoemox_face"
    sub_configs = {"backbone_config": AutoConfig}

    backbone_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 256
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self.backbone_config = _build_sub_config("backbone_config", self.backbone_config, SWIN_B)
        if self.backbone_config.model_type != "swin":
            raise ValueError(
                f"The face encoder needs a Swin backbone, got backbone_config.model_type="
                f"{self.backbone_config.model_type!r}."
            )
        if self.hidden_size <= 0:
            raise ValueError(f"`hidden_size` must be positive, got {self.hidden_size}.")
        super().__post_init__(**kwargs)

    @property
    def stage_hidden_sizes(self) -> list[int]:
        """Channel count of each Swin stage output, e.g. [128, 256, 512, 1024] for Swin-B."""
        embed_dim = self.backbone_config.embed_dim
        return [embed_dim * 2**stage for stage in range(len(self.backbone_config.depths))]


class NanoEmoXConfig(PreTrainedConfig):
    r"""
    Configuration of [`NanoEmoXForConditionalGeneration`]. The defaults build the full Nano-EmoX model.

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            The language model. Defaults to Qwen2.5-1.5B-Instruct.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The frame encoder. Defaults to the CLIP ViT-L/14 vision tower at 224 px.
        audio_config (`dict` or `HubertConfig`, *optional*):
            The audio encoder. Defaults to chinese-hubert-large.
        face_config (`dict` or [`NanoEmoXFaceConfig`], *optional*):
            The face encoder. Defaults to FaceXFormer's Swin-B encoder with its multi-scale head.
        video_qformer_config (`dict` or `Blip2QFormerConfig`, *optional*):
            Q-Former that turns per-frame features into `num_video_tokens` queries. Its `encoder_hidden_size` must
            equal the vision tower's width.
        audio_qformer_config (`dict` or `Blip2QFormerConfig`, *optional*):
            Q-Former that turns per-clip features into `num_audio_tokens` queries. Its `encoder_hidden_size` must
            equal the audio tower's width.
        vision_feature_layer (`int`, *optional*, defaults to -2):
            Hidden state of the vision tower whose CLS token represents a frame.
        vision_multiscale_layers (`list[int]`, *optional*, defaults to `[12, 16, 22]`):
            Vision hidden states whose CLS tokens feed the fusion encoder, one per fusion expert.
        audio_feature_layers (`list[int]`, *optional*, defaults to `[-4, -3, -2]`):
            Audio hidden states (indices into the tower's `hidden_states`) averaged, with the final state when
            `audio_feature_last_hidden_state` is set, then averaged over time to represent a clip. For the full
            model: layers 21, 22, 23 of chinese-hubert-large's 24.
        audio_feature_last_hidden_state (`bool`, *optional*, defaults to `True`):
            Also average the tower's `last_hidden_state` (HuBERT-large: layer 24 after the encoder's final
            LayerNorm). With the defaults this is the authors' "mean of the last four layers"
            (`stack(hidden_states)[[-4, -3, -2, -1]].mean(0)` under transformers 4.x, whose last `hidden_states`
            entry was the LayerNorm output; since transformers 5 it is layer 24's raw output, and the LayerNorm
            output is `last_hidden_state` only).
        audio_multiscale_layers (`list[int]`, *optional*, defaults to `[16, 18, 22]`):
            Audio hidden states, averaged over time, that feed the fusion encoder, one per fusion expert.
        max_video_frames (`int`, *optional*, defaults to 32):
            Number of learned frame position embeddings (frames per clip may not exceed it).
        max_audio_clips (`int`, *optional*, defaults to 8):
            Number of learned audio-clip position embeddings (clips per sample may not exceed it).
        num_video_tokens (`int`, *optional*, defaults to 32):
            Learned video queries, hence LLM tokens per video.
        num_audio_tokens (`int`, *optional*, defaults to 32):
            Learned audio queries, hence LLM tokens per audio track.
        num_face_tokens (`int`, *optional*, defaults to 4):
            Learned face queries attending over the frames' face features, hence LLM tokens per face track.
        num_fusion_tokens (`int`, *optional*, defaults to 1):
            LLM tokens carrying the fused audio-visual vector (the vector is repeated).
        face_num_heads (`int`, *optional*, defaults to 4):
            Heads of the face queries' attention over frames.
        face_projector_hidden_size (`int`, *optional*, defaults to 768):
            Hidden width of the face adapter MLP.
        fusion_hidden_size (`int`, *optional*, defaults to 512):
            Width of the fusion encoder.
        fusion_num_heads (`int`, *optional*, defaults to 8):
            Heads of each fusion expert's audio→video cross-attention.
        fusion_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside the fusion encoder.
        projector_dropout (`float`, *optional*, defaults to 0.1):
            Dropout inside the face adapter MLP.
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the face adapter, the fusion feed-forward networks and the fusion gate.
        video_token_id, audio_token_id, face_token_id, fusion_token_id (`int`, *optional*):
            Placeholder token ids that the processor expands and the model replaces with modality embeddings. The
            defaults are the ids the four placeholders get when appended to Qwen2.5's tokenizer.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the initialiser for the modules Nano-EmoX adds.
        tie_word_embeddings (`bool`, *optional*):
            Whether the LM head shares the input embeddings; follows `text_config` when not given.

    Example:

    ```python
    >>> from modeling_nanoemox import NanoEmoXConfig, NanoEmoXForConditionalGeneration

    >>> config = NanoEmoXConfig.tiny()
    >>> model = NanoEmoXForConditionalGeneration(config)
    ```
    """

    model_type = "nanoemox"
    sub_configs = {
        "text_config": AutoConfig,
        "vision_config": AutoConfig,
        "audio_config": AutoConfig,
        "face_config": NanoEmoXFaceConfig,
        "video_qformer_config": AutoConfig,
        "audio_qformer_config": AutoConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    face_config: dict | PreTrainedConfig | None = None
    video_qformer_config: dict | PreTrainedConfig | None = None
    audio_qformer_config: dict | PreTrainedConfig | None = None

    vision_feature_layer: int = -2
    vision_multiscale_layers: list[int] = field(default_factory=lambda: [12, 16, 22])
    audio_feature_layers: list[int] = field(default_factory=lambda: [-4, -3, -2])
    audio_feature_last_hidden_state: bool = True
    audio_multiscale_layers: list[int] = field(default_factory=lambda: [16, 18, 22])
    max_video_frames: int = 32
    max_audio_clips: int = 8

    num_video_tokens: int = 32
    num_audio_tokens: int = 32
    num_face_tokens: int = 4
    num_fusion_tokens: int = 1

    face_num_heads: int = 4
    face_projector_hidden_size: int = 768
    fusion_hidden_size: int = 512
    fusion_num_heads: int = 8
    fusion_dropout: float = 0.1
    projector_dropout: float = 0.1
    projector_hidden_act: str = "gelu"

    video_token_id: int = 151665
    audio_token_id: int = 151666
    face_token_id: int = 151667
    fusion_token_id: int = 151668

    initializer_range: float = 0.02
    tie_word_embeddings: bool | None = None

    def __post_init__(self, **kwargs):
        self.text_config = _build_sub_config("text_config", self.text_config, QWEN2_5_1_5B_INSTRUCT)
        self.vision_config = _build_sub_config("vision_config", self.vision_config, CLIP_VIT_L_14)
        self.audio_config = _build_sub_config("audio_config", self.audio_config, CHINESE_HUBERT_LARGE)
        self.face_config = _build_sub_config("face_config", self.face_config, {}, NanoEmoXFaceConfig)
        video_qformer_defaults = {**QFORMER_2L, "encoder_hidden_size": self.vision_config.hidden_size}
        audio_qformer_defaults = {**QFORMER_2L, "encoder_hidden_size": self.audio_config.hidden_size}
        self.video_qformer_config = _build_sub_config(
            "video_qformer_config", self.video_qformer_config, video_qformer_defaults
        )
        self.audio_qformer_config = _build_sub_config(
            "audio_qformer_config", self.audio_qformer_config, audio_qformer_defaults
        )
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        self.vision_multiscale_layers = list(self.vision_multiscale_layers)
        self.audio_feature_layers = list(self.audio_feature_layers)
        self.audio_multiscale_layers = list(self.audio_multiscale_layers)
        self._validate_architecture()
        super().__post_init__(**kwargs)

    def _validate_architecture(self) -> None:
        for name, qformer, tower in (
            ("video_qformer_config", self.video_qformer_config, self.vision_config),
            ("audio_qformer_config", self.audio_qformer_config, self.audio_config),
        ):
            if qformer.encoder_hidden_size != tower.hidden_size:
                raise ValueError(
                    f"`{name}.encoder_hidden_size` must equal the tower width {tower.hidden_size}, "
                    f"got {qformer.encoder_hidden_size}."
                )
        vision_layers = self.vision_config.num_hidden_layers
        audio_layers = self.audio_config.num_hidden_layers
        _check_layer_index("vision_feature_layer", self.vision_feature_layer, vision_layers)
        for index in self.vision_multiscale_layers:
            _check_layer_index("vision_multiscale_layers", index, vision_layers)
        for index in self.audio_feature_layers:
            _check_layer_index("audio_feature_layers", index, audio_layers)
        for index in self.audio_multiscale_layers:
            _check_layer_index("audio_multiscale_layers", index, audio_layers)
        if not self.audio_feature_layers and not self.audio_feature_last_hidden_state:
            raise ValueError(
                "`audio_feature_layers` must name at least one layer (or set `audio_feature_last_hidden_state`), "
                "got an empty list."
            )
        if (
            len(self.vision_multiscale_layers) != len(self.audio_multiscale_layers)
            or not self.vision_multiscale_layers
        ):
            raise ValueError(
                "The fusion encoder pairs one vision scale with one audio scale per expert: "
                f"`vision_multiscale_layers` has {len(self.vision_multiscale_layers)} entries and "
                f"`audio_multiscale_layers` has {len(self.audio_multiscale_layers)} (need the same, at least 1)."
            )
        for name in (
            "max_video_frames",
            "max_audio_clips",
            "num_video_tokens",
            "num_audio_tokens",
            "num_face_tokens",
            "num_fusion_tokens",
            "face_num_heads",
            "face_projector_hidden_size",
            "fusion_hidden_size",
            "fusion_num_heads",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if self.face_config.hidden_size % self.face_num_heads:
            raise ValueError(
                f"`face_config.hidden_size` ({self.face_config.hidden_size}) must be divisible by "
                f"`face_num_heads` ({self.face_num_heads})."
            )
        if self.fusion_hidden_size % self.fusion_num_heads:
            raise ValueError(
                f"`fusion_hidden_size` ({self.fusion_hidden_size}) must be divisible by "
                f"`fusion_num_heads` ({self.fusion_num_heads})."
            )
        token_ids = self.modality_token_ids
        if len(set(token_ids.values())) != len(token_ids):
            raise ValueError(f"The modality placeholder token ids must be distinct, got {token_ids}.")
        vocab_size = self.text_config.vocab_size
        for name, token_id in token_ids.items():
            if not 0 <= token_id < vocab_size:
                raise ValueError(
                    f"`{name}_token_id` is {token_id}, outside the language model's vocabulary of {vocab_size}."
                )

    @property
    def modality_token_ids(self) -> dict[str, int]:
        """Placeholder token id of each modality: `{"video": …, "audio": …, "face": …, "fusion": …}`."""
        return {
            "video": self.video_token_id,
            "audio": self.audio_token_id,
            "face": self.face_token_id,
            "fusion": self.fusion_token_id,
        }

    @property
    def num_fusion_experts(self) -> int:
        """One fusion expert per (vision scale, audio scale) pair."""
        return len(self.vision_multiscale_layers)

    @classmethod
    def tiny(cls, vocab_size: int = 1024, **kwargs) -> "NanoEmoXConfig":
        """
        A randomly-initialisable Nano-EmoX small enough for unit tests and CPU runs (well under a million
        parameters without the embeddings). Every part of the full architecture is present; only widths, depths,
        image sizes and token counts shrink. The placeholder ids default to the last four ids of the vocabulary.

        Args:
            vocab_size (`int`, *optional*, defaults to 1024): vocabulary of the tiny language model.
            kwargs: overrides of any [`NanoEmoXConfig`] argument.
        """
        defaults = {
            "text_config": {
                "model_type": "qwen2",
                "vocab_size": vocab_size,
                "hidden_size": 64,
                "intermediate_size": 128,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "max_position_embeddings": 2048,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
                "tie_word_embeddings": True,
                # A random LM with the usual 0.02 init predicts near-uniform next tokens whatever its input (its
                # largest logit is about 64 × std with frozen tied embeddings of width 64), so training the heads and
                # LoRA around it could not sharpen its answers; at 0.2 the tiny model can learn the six tasks.
                "initializer_range": 0.2,
            },
            "vision_config": {
                **CLIP_VIT_L_14,
                "hidden_size": 32,
                "intermediate_size": 64,
                "projection_dim": 32,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "image_size": 32,
                "patch_size": 8,
            },
            "audio_config": {
                **CHINESE_HUBERT_LARGE,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 4,
                "num_attention_heads": 4,
                "conv_dim": [16, 16, 16, 16, 16, 16, 16],
                "num_conv_pos_embeddings": 16,
                "num_conv_pos_embedding_groups": 4,
            },
            "face_config": {
                "backbone_config": {
                    **SWIN_B,
                    "image_size": 32,
                    "patch_size": 2,  # keeps the last stage at 2×2, no smaller than its window
                    "embed_dim": 8,
                    "depths": [1, 1, 1, 1],
                    "num_heads": [1, 1, 2, 2],
                    "window_size": 2,
                },
                "hidden_size": 16,
            },
            "video_qformer_config": {
                **QFORMER_2L,
                "hidden_size": 32,
                "num_attention_heads": 4,
                "intermediate_size": 64,
                "encoder_hidden_size": 32,
            },
            "audio_qformer_config": {
                **QFORMER_2L,
                "hidden_size": 32,
                "num_attention_heads": 4,
                "intermediate_size": 64,
                "encoder_hidden_size": 32,
            },
            "vision_multiscale_layers": [1, 2, 3],
            "audio_multiscale_layers": [1, 2, 3],
            "num_video_tokens": 8,
            "num_audio_tokens": 8,
            "num_face_tokens": 2,
            "num_fusion_tokens": 1,
            "face_num_heads": 2,
            "face_projector_hidden_size": 32,
            "fusion_hidden_size": 32,
            "fusion_num_heads": 4,
            "video_token_id": vocab_size - 4,
            "audio_token_id": vocab_size - 3,
            "face_token_id": vocab_size - 2,
            "fusion_token_id": vocab_size - 1,
        }
        defaults.update(kwargs)
        return cls(**defaults)


__all__ = ["NanoEmoXConfig", "NanoEmoXFaceConfig"]

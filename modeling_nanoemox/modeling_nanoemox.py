# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""PyTorch Nano-EmoX (Huang et al., "Nano-EmoX: Unifying Multimodal Emotional Intelligence from Perception to
Empathy", CVPR 2026).

One clip travels through the model like this (full-size shapes, N clips, T = 8 frames, C = 8 audio clips):

    frames  (N, T, 3, 224, 224) ─ CLIP ─ CLS of 4 hidden states ─ (N, T, 4, 1024) ┬ [:, :, 0] + pos ─ Q-Former ─ (N, 32, 768) ─ Linear ─ 32 video tokens
                                                                                   └ [:, :, 1:] multi-scale ─┐
    audio   (N, C, 32000)         ─ HuBERT ─ time means ──────── (N, C, 4, 1024) ┬ [:, :, 0] + pos ─ Q-Former ─ Linear ─ 32 audio tokens
                                                                                   └ [:, :, 1:] ────────────── fusion encoder ─ mean ─ Linear ─ 1 fusion token
    faces   (N, T, 3, 224, 224) ─ FaceXFormer ─ (N, T, 256) ─ 4 queries attend over frames ─ MLP ─ 4 face tokens

The modality embeddings replace the placeholder tokens of the chat-templated prompt, then the language model runs.
"""

import shutil
from dataclasses import dataclass
from functools import wraps
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, Blip2QFormerModel, SwinModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig

logger = logging.get_logger(__name__)

# transformers 5.24 renamed the KV cache argument and output field `past_key_values` → `cache`. The model speaks
# whichever name the installed version uses, so the same remote code runs on both sides of the rename.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

MODALITIES = ("video", "audio", "face", "fusion")
TOWER_MODALITIES = ("video", "face", "audio")
# Inputs used only when the prompt is first encoded; later decoding steps only extend the KV cache.
MEDIA_INPUT_NAMES = ("pixel_values_videos", "face_pixel_values", "audio_values", "tower_features")


def _accept_past_key_values(forward):
    """`past_key_values=` → `cache=`: with transformers' deprecation warning from 5.24 on (as its own models do),
    silently before the rename (where it is the name generation uses)."""
    if CACHE_NAME == "cache":
        return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)

    @wraps(forward)
    def wrapped(self, *args, past_key_values=None, **kwargs):
        if past_key_values is not None and kwargs.get("cache") is None:
            kwargs["cache"] = past_key_values
        return forward(self, *args, **kwargs)

    return wrapped


@dataclass
class NanoEmoXModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    fusion_gate_weights (`torch.FloatTensor` of shape `(batch_size, num_fusion_experts)`, *optional*):
        Softmax weights the fusion gate gave each expert (one per feature scale). Rows of samples without both audio
        and video are zero.
    """

    fusion_gate_weights: torch.FloatTensor | None = None


@dataclass
class NanoEmoXCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    fusion_gate_weights (`torch.FloatTensor` of shape `(batch_size, num_fusion_experts)`, *optional*):
        Softmax weights the fusion gate gave each expert (one per feature scale). Rows of samples without both audio
        and video are zero.
    """

    fusion_gate_weights: torch.FloatTensor | None = None


def _has_trainable_parameters(module: nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


# --------------------------------------------------------------------------------------------------------------
# Face encoder (FaceXFormer's encoder: Swin backbone + multi-scale head)
# --------------------------------------------------------------------------------------------------------------


class NanoEmoXFacePreTrainedModel(PreTrainedModel):
    config_class = NanoEmoXFaceConfig
    config: NanoEmoXFaceConfig
    base_model_prefix = "face_encoder"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["SwinStage"]
    _supports_sdpa = True


class NanoEmoXFaceEncoder(NanoEmoXFacePreTrainedModel):
    """
    FaceXFormer's encoder: the four Swin stage outputs are each projected to `hidden_size`, upsampled to the first
    stage's resolution, concatenated deepest-first, fused by a 1×1 convolution and average-pooled.
    """

    def __init__(self, config: NanoEmoXFaceConfig):
        super().__init__(config)
        self.backbone = SwinModel(config.backbone_config, add_pooling_layer=False)
        self.stage_projections = nn.ModuleList(
            nn.Linear(width, config.hidden_size) for width in config.stage_hidden_sizes
        )
        self.fuse = nn.Conv2d(config.hidden_size * len(config.stage_hidden_sizes), config.hidden_size, 1, bias=False)
        self.post_init()

    def forward(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_faces, 3, image_size, image_size)`): normalised crops.

        Returns:
            `torch.FloatTensor` of shape `(num_faces, hidden_size)`.
        """
        outputs = self.backbone(pixel_values, output_hidden_states=True, output_hidden_states_before_downsampling=True)
        stage_maps = outputs.reshaped_hidden_states[1:]  # one (N, C_s, H_s, W_s) map per stage, before merging
        target_size = stage_maps[0].shape[-2:]
        projected = []
        for stage_map, projection in zip(stage_maps, self.stage_projections):
            height, width = stage_map.shape[-2:]
            stage_map = projection(stage_map.flatten(2).transpose(1, 2))  # (N, H*W, hidden)
            stage_map = stage_map.transpose(1, 2).reshape(stage_map.shape[0], -1, height, width)
            projected.append(F.interpolate(stage_map, size=target_size, mode="bilinear", align_corners=False))
        fused = self.fuse(torch.cat(projected[::-1], dim=1))  # (N, hidden, H_0, W_0)
        return fused.mean(dim=(2, 3))


# --------------------------------------------------------------------------------------------------------------
# Trainable heads
# --------------------------------------------------------------------------------------------------------------


class NanoEmoXQueryHead(nn.Module):
    """
    A modality head in the BLIP-2 style: per-item tower features plus learned position embeddings are read by a
    Q-Former's learned queries, then the adapter projects the queries into the LLM.

    (N, L, tower_hidden) → (N, num_queries, text_hidden), with L frames or audio clips (at most `max_positions`).
    """

    def __init__(self, qformer_config, max_positions: int, num_queries: int, tower_hidden: int, text_hidden: int):
        super().__init__()
        self.position_embedding = nn.Embedding(max_positions, tower_hidden)
        self.query_tokens = nn.Parameter(torch.zeros(1, num_queries, qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel(qformer_config)
        self.projector = nn.Linear(qformer_config.hidden_size, text_hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        num_items, length = features.shape[:2]
        if length > self.position_embedding.num_embeddings:
            raise ValueError(
                f"Got {length} frames/clips per sample, but the model has {self.position_embedding.num_embeddings} "
                "position embeddings."
            )
        positions = torch.arange(length, device=features.device)
        hidden_states = features.to(self.position_embedding.weight.dtype) + self.position_embedding(positions)
        queries = self.query_tokens.expand(num_items, -1, -1)
        queried = self.qformer(query_embeds=queries, encoder_hidden_states=hidden_states).last_hidden_state
        return self.projector(queried.to(self.projector.weight.dtype))


class NanoEmoXFaceHead(nn.Module):
    """
    Learned queries attend over the per-frame face features, then the face adapter (an MLP) projects them into the
    LLM: (N, T, face_hidden) → (N, num_face_tokens, text_hidden).
    """

    def __init__(self, config: NanoEmoXConfig):
        super().__init__()
        hidden_size = config.face_config.hidden_size
        self.queries = nn.Parameter(torch.zeros(config.num_face_tokens, hidden_size))
        self.attention = nn.MultiheadAttention(hidden_size, config.face_num_heads, batch_first=True)
        self.projector = NanoEmoXFaceProjector(config)

    def forward(self, face_features: torch.Tensor) -> torch.Tensor:
        face_features = face_features.to(self.queries.dtype)
        queries = self.queries.unsqueeze(0).expand(face_features.shape[0], -1, -1)
        pooled, _ = self.attention(queries, face_features, face_features, need_weights=False)
        return self.projector(pooled)


class NanoEmoXFaceProjector(nn.Module):
    """The face adapter: MLP face_hidden → projector_hidden → LLM width."""

    def __init__(self, config: NanoEmoXConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.face_config.hidden_size, config.face_projector_hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.dropout = nn.Dropout(config.projector_dropout)
        self.linear_2 = nn.Linear(config.face_projector_hidden_size, config.text_config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(self.act(self.linear_1(hidden_states))))


class NanoEmoXFusionExpert(nn.Module):
    """One scale's expert: audio queries cross-attend to video (+ residual), then a pre-norm feed-forward (+ residual)."""

    def __init__(self, config: NanoEmoXConfig):
        super().__init__()
        hidden_size = config.fusion_hidden_size
        self.cross_attention = nn.MultiheadAttention(
            hidden_size, config.fusion_num_heads, dropout=config.fusion_dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, hidden_size)
        self.act = ACT2FN[config.projector_hidden_act]
        self.dropout = nn.Dropout(config.fusion_dropout)
        self.fc2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, audio: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        attended, _ = self.cross_attention(audio, video, video, need_weights=False)
        hidden_states = attended + audio
        return hidden_states + self.fc2(self.dropout(self.act(self.fc1(self.norm(hidden_states)))))


class NanoEmoXFusionEncoder(nn.Module):
    """
    The "multiscale" fusion encoder the authors train: both modalities' multi-scale features are projected by two
    shared linears; expert `s` fuses scale `s`; a gate over the time-averaged expert outputs mixes them.
    """

    def __init__(self, config: NanoEmoXConfig):
        super().__init__()
        hidden_size = config.fusion_hidden_size
        num_experts = config.num_fusion_experts
        self.audio_projection = nn.Linear(config.audio_config.hidden_size, hidden_size)
        self.video_projection = nn.Linear(config.vision_config.hidden_size, hidden_size)
        self.experts = nn.ModuleList(NanoEmoXFusionExpert(config) for _ in range(num_experts))
        self.gate = nn.Sequential(
            nn.Linear(hidden_size * num_experts, hidden_size),
            ACT2FN[config.projector_hidden_act],
            nn.Dropout(config.fusion_dropout),
            nn.Linear(hidden_size, num_experts),
        )

    def forward(
        self, audio_multiscale: torch.Tensor, video_multiscale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            audio_multiscale (`torch.Tensor` of shape `(N, num_clips, num_experts, audio_hidden)`)
            video_multiscale (`torch.Tensor` of shape `(N, num_frames, num_experts, vision_hidden)`)

        Returns:
            fused (`(N, num_clips, fusion_hidden)`) and gate weights (`(N, num_experts)`, rows sum to 1).
        """
        audio = self.audio_projection(audio_multiscale)
        video = self.video_projection(video_multiscale)
        expert_outputs = torch.stack(
            [expert(audio[:, :, scale], video[:, :, scale]) for scale, expert in enumerate(self.experts)], dim=2
        )  # (N, num_clips, num_experts, hidden)
        gate_weights = self.gate(expert_outputs.mean(dim=1).flatten(1)).softmax(dim=-1)  # (N, num_experts)
        fused = (expert_outputs * gate_weights[:, None, :, None]).sum(dim=2)
        return fused, gate_weights


# --------------------------------------------------------------------------------------------------------------
# Nano-EmoX
# --------------------------------------------------------------------------------------------------------------


class NanoEmoXPreTrainedModel(PreTrainedModel):
    config_class = NanoEmoXConfig
    config: NanoEmoXConfig
    base_model_prefix = "model"
    input_modalities = ("video", "audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["NanoEmoXFusionEncoder", "NanoEmoXFaceHead", "NanoEmoXQueryHead"]
    _skip_keys_device_placement = [CACHE_NAME]
    # Decoding steps only embed tokens and run the language model (media is encoded once, with the prompt), so
    # static-cache generation compiles without graph breaks.
    _can_compile_fullgraph = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def enable_input_require_grads(self) -> None:
        """
        Makes the language model's input embeddings require grad, so gradient checkpointing with a frozen LLM (and
        LoRA) still backpropagates into the modality adapters. Only the LLM's embeddings are hooked: the towers are
        frozen feature extractors run without autograd (and Swin's patch embedding returns a tuple the generic hook
        of `PreTrainedModel` cannot handle).
        """
        self.disable_input_require_grads()
        hook = self.get_input_embeddings().register_forward_hook(lambda _m, _i, output: output.requires_grad_(True))
        self._require_grads_hooks = [hook]
        self._require_grads_hook = hook

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, NanoEmoXQueryHead):
            init.normal_(module.query_tokens, mean=0.0, std=std)
        elif isinstance(module, NanoEmoXFaceHead):
            init.normal_(module.queries, mean=0.0, std=std)


class NanoEmoXModel(NanoEmoXPreTrainedModel):
    """
    The frozen towers; the trainable modality heads (video and audio Q-Former heads, face head, each ending in its
    adapter); the fusion encoder and its adapter; and the language model without its LM head.
    """

    def __init__(self, config: NanoEmoXConfig):
        super().__init__(config)
        text_hidden = config.text_config.hidden_size

        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.audio_tower = AutoModel.from_config(config.audio_config)
        self.face_encoder = NanoEmoXFaceEncoder(config.face_config)

        self.video_head = NanoEmoXQueryHead(
            config.video_qformer_config,
            config.max_video_frames,
            config.num_video_tokens,
            config.vision_config.hidden_size,
            text_hidden,
        )
        self.audio_head = NanoEmoXQueryHead(
            config.audio_qformer_config,
            config.max_audio_clips,
            config.num_audio_tokens,
            config.audio_config.hidden_size,
            text_hidden,
        )
        self.face_head = NanoEmoXFaceHead(config)
        self.fusion_encoder = NanoEmoXFusionEncoder(config)
        self.fusion_projector = nn.Linear(config.fusion_hidden_size, text_hidden)

        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def train(self, mode: bool = True):
        # A tower with no trainable parameter is a fixed feature extractor: it stays in eval mode (no dropout) so that
        # features computed live during training equal the ones a feature cache stores.
        super().train(mode)
        for tower in (self.vision_tower, self.audio_tower, self.face_encoder):
            if not _has_trainable_parameters(tower):
                tower.eval()
        return self

    # ---- frozen towers (their outputs are what a feature cache stores) ---------------------------------------

    def _run_tower(self, tower: nn.Module, *args, **kwargs):
        # Frozen towers never build an autograd graph.
        with torch.set_grad_enabled(torch.is_grad_enabled() and _has_trainable_parameters(tower)):
            return tower(*args, **kwargs)

    def get_video_tower_features(self, pixel_values_videos: torch.FloatTensor) -> torch.FloatTensor:
        """
        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(N, num_frames, 3, image_size, image_size)`).

        Returns:
            `torch.FloatTensor` of shape `(N, num_frames, 1 + num_fusion_experts, vision_hidden)`: per frame, the CLS
            token of `vision_feature_layer` followed by the CLS tokens of `vision_multiscale_layers`.
        """
        num_videos, num_frames = pixel_values_videos.shape[:2]
        outputs = self._run_tower(
            self.vision_tower,
            pixel_values_videos.flatten(0, 1).to(self.vision_tower.dtype),
            output_hidden_states=True,
        )
        layers = [self.config.vision_feature_layer, *self.config.vision_multiscale_layers]
        cls_tokens = torch.stack([outputs.hidden_states[layer][:, 0] for layer in layers], dim=1)
        return cls_tokens.reshape(num_videos, num_frames, len(layers), -1)

    def get_audio_tower_features(self, audio_values: torch.FloatTensor) -> torch.FloatTensor:
        """
        Args:
            audio_values (`torch.FloatTensor` of shape `(N, num_clips, num_samples)`): normalised 16 kHz clips.

        Returns:
            `torch.FloatTensor` of shape `(N, num_clips, 1 + num_fusion_experts, audio_hidden)`: per clip, the time
            average of the mean of `audio_feature_layers` (and `last_hidden_state` when
            `config.audio_feature_last_hidden_state`: full size, layers 21, 22, 23 and the final LayerNorm's output,
            the authors' "last four layers" of transformers 4.x), followed by the time averages of
            `audio_multiscale_layers`.
        """
        num_tracks, num_clips = audio_values.shape[:2]
        outputs = self._run_tower(
            self.audio_tower, audio_values.flatten(0, 1).to(self.audio_tower.dtype), output_hidden_states=True
        )
        hidden_states = outputs.hidden_states
        averaged = [hidden_states[layer] for layer in self.config.audio_feature_layers]
        if self.config.audio_feature_last_hidden_state:
            # Not `hidden_states[-1]`: since transformers 5 that is the last layer's raw output (issue 12).
            averaged.append(outputs.last_hidden_state)
        clip_feature = torch.stack(averaged).mean(dim=0)
        features = [clip_feature.mean(dim=1)]
        features += [hidden_states[layer].mean(dim=1) for layer in self.config.audio_multiscale_layers]
        return torch.stack(features, dim=1).reshape(num_tracks, num_clips, len(features), -1)

    def get_face_tower_features(self, face_pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """
        Args:
            face_pixel_values (`torch.FloatTensor` of shape `(N, num_frames, 3, face_size, face_size)`).

        Returns:
            `torch.FloatTensor` of shape `(N, num_frames, face_hidden)`.
        """
        num_tracks, num_frames = face_pixel_values.shape[:2]
        features = self._run_tower(self.face_encoder, face_pixel_values.flatten(0, 1).to(self.face_encoder.dtype))
        return features.reshape(num_tracks, num_frames, -1)

    # ---- media → LLM embeddings (tower, then trainable head) -------------------------------------------------

    def _embed_tower_features(self, modality: str, tower_features: torch.FloatTensor) -> torch.FloatTensor:
        # The Q-Former heads read the first feature of each frame / clip; the others are the fusion's scales.
        if modality == "video":
            return self.video_head(tower_features[:, :, 0])
        if modality == "audio":
            return self.audio_head(tower_features[:, :, 0])
        return self.face_head(tower_features)

    @can_return_tuple
    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """
        Args:
            pixel_values_videos (`torch.FloatTensor` of shape `(N_video, num_frames, 3, image_size, image_size)`).

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state` = tower features `(N_video, num_frames,
            1 + num_fusion_experts, vision_hidden)`; `pooler_output` = LLM embeddings `(N_video, num_video_tokens,
            text_hidden)`.
        """
        tower_features = self.get_video_tower_features(pixel_values_videos)
        return BaseModelOutputWithPooling(
            last_hidden_state=tower_features, pooler_output=self._embed_tower_features("video", tower_features)
        )

    @can_return_tuple
    def get_audio_features(self, audio_values: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """
        Args:
            audio_values (`torch.FloatTensor` of shape `(N_audio, num_clips, num_samples)`).

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state` = tower features `(N_audio, num_clips,
            1 + num_fusion_experts, audio_hidden)`; `pooler_output` = LLM embeddings `(N_audio, num_audio_tokens,
            text_hidden)`.
        """
        tower_features = self.get_audio_tower_features(audio_values)
        return BaseModelOutputWithPooling(
            last_hidden_state=tower_features, pooler_output=self._embed_tower_features("audio", tower_features)
        )

    @can_return_tuple
    def get_face_features(self, face_pixel_values: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """
        Args:
            face_pixel_values (`torch.FloatTensor` of shape `(N_face, num_frames, 3, face_size, face_size)`).

        Returns:
            [`BaseModelOutputWithPooling`]: `last_hidden_state` = tower features `(N_face, num_frames, face_hidden)`;
            `pooler_output` = LLM embeddings `(N_face, num_face_tokens, text_hidden)`.
        """
        tower_features = self.get_face_tower_features(face_pixel_values)
        return BaseModelOutputWithPooling(
            last_hidden_state=tower_features, pooler_output=self._embed_tower_features("face", tower_features)
        )

    def get_fusion_features(
        self, video_tower_features: torch.FloatTensor, audio_tower_features: torch.FloatTensor
    ) -> tuple[torch.FloatTensor, torch.FloatTensor]:
        """
        Args:
            video_tower_features (`(N, num_frames, 1 + S, vision_hidden)`) and audio_tower_features
            (`(N, num_clips, 1 + S, audio_hidden)`) of the same N samples.

        Returns:
            `(N, num_fusion_tokens, text_hidden)` embeddings and `(N, S)` gate weights.
        """
        dtype = self.fusion_projector.weight.dtype
        fused, gate_weights = self.fusion_encoder(
            audio_tower_features[:, :, 1:].to(dtype), video_tower_features[:, :, 1:].to(dtype)
        )
        embeddings = self.fusion_projector(fused.mean(dim=1))  # (N, text_hidden)
        return embeddings.unsqueeze(1).expand(-1, self.config.num_fusion_tokens, -1), gate_weights

    # ---- merging into the prompt --------------------------------------------------------------------------------

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor,
        modality: str,
        features: torch.FloatTensor | None = None,
    ) -> torch.BoolTensor:
        """
        Finds the placeholder tokens of `modality` and, when `features` `(N, tokens, hidden)` are given, checks that
        they fill exactly those placeholders (N × tokens in all, and each sample 0 or `tokens`).

        With `input_ids=None` the placeholders are found by comparing `inputs_embeds` with the placeholder's
        embedding, so `inputs_embeds` plus media works as in llava.

        Returns:
            `torch.BoolTensor` of shape `(batch_size, sequence_length, 1)`.

        Raises:
            `ValueError` naming the modality and both counts when they differ.
        """
        token_id = self.config.modality_token_ids[modality]
        if input_ids is None:
            placeholder = self.get_input_embeddings()(torch.tensor(token_id, device=inputs_embeds.device))
            is_placeholder = (inputs_embeds == placeholder.to(inputs_embeds.dtype)).all(-1)
        else:
            is_placeholder = input_ids == token_id
        if features is not None:
            num_items, tokens_per_item = features.shape[:2]
            found = int(is_placeholder.sum())
            if found != num_items * tokens_per_item:
                raise ValueError(
                    f"{modality}: {found} placeholder tokens in the prompt but the features fill "
                    f"{num_items * tokens_per_item} ({num_items} item{'' if num_items == 1 else 's'} × "
                    f"{tokens_per_item} tokens)."
                )
            per_sample = is_placeholder.sum(dim=-1)
            bad = ((per_sample != 0) & (per_sample != tokens_per_item)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(
                    f"{modality}: a sample with {modality} has exactly {tokens_per_item} placeholder tokens, but "
                    f"samples {bad[:10]} have {per_sample[bad[:10]].tolist()}."
                )
        return is_placeholder.unsqueeze(-1).to(inputs_embeds.device)

    def _fuse(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.FloatTensor,
        tower_features: dict[str, torch.FloatTensor],
        masks: dict[str, torch.BoolTensor],
    ) -> tuple[torch.FloatTensor | None, torch.FloatTensor | None]:
        """
        The fusion token of each sample that has fusion placeholders, from that sample's video and audio items (the
        k-th sample with video placeholders owns video item k; likewise for audio).

        Returns:
            `(N_fusion, num_fusion_tokens, text_hidden)` embeddings and `(batch_size, num_fusion_experts)` gate weights
            (zero rows where a sample has no fusion), or `(None, None)` when no sample asks for fusion.
        """
        fusion_rows = self.get_placeholder_mask(input_ids, inputs_embeds, "fusion")[..., 0].any(dim=-1)  # (B,)
        if not bool(fusion_rows.any()):
            return None, None
        missing = [modality for modality in ("video", "audio") if modality not in tower_features]
        if missing:
            raise ValueError(
                f"fusion: {int(fusion_rows.sum())} samples have fusion placeholders but no {' or '.join(missing)} "
                "media was given; a fusion token is computed from its sample's video and audio."
            )
        has_video, has_audio = masks["video"][..., 0].any(dim=-1), masks["audio"][..., 0].any(dim=-1)
        unpaired = (fusion_rows & ~(has_video & has_audio)).nonzero().flatten().tolist()
        if unpaired:
            raise ValueError(
                f"fusion: samples {unpaired[:10]} have fusion placeholders but not both video and audio placeholders; "
                "a fusion token is computed from its sample's video and audio."
            )
        video_items = (has_video.cumsum(0) - 1)[fusion_rows]
        audio_items = (has_audio.cumsum(0) - 1)[fusion_rows]
        video, audio = tower_features["video"], tower_features["audio"]
        embeddings, gates = self.get_fusion_features(
            video[video_items.to(video.device)], audio[audio_items.to(audio.device)]
        )
        gate_weights = gates.new_zeros(fusion_rows.shape[0], gates.shape[-1])
        gate_weights = gate_weights.masked_scatter(fusion_rows[:, None].to(gates.device), gates)
        return embeddings, gate_weights

    @can_return_tuple
    @_accept_past_key_values
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        face_pixel_values: torch.FloatTensor | None = None,
        audio_values: torch.FloatTensor | None = None,
        tower_features: dict[str, torch.FloatTensor] | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> NanoEmoXModelOutputWithPast:
        r"""
        Media tensors hold only the items that are present, in batch order (sample 0's items first); which sample
        has what is read from the placeholders. Placeholders of a modality whose media is not given are ordinary
        tokens (decoding steps, assisted decoding).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Chat-templated prompt in which each present modality occupies its placeholder tokens.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, text_hidden)`, *optional*):
                Instead of `input_ids`; placeholders are then found by their embeddings.
            pixel_values_videos (`torch.FloatTensor` of shape `(N_video, num_frames, 3, S, S)`, *optional*):
                CLIP-normalised frames.
            face_pixel_values (`torch.FloatTensor` of shape `(N_face, num_frames, 3, S_f, S_f)`, *optional*):
                ImageNet-normalised face crops, one per frame.
            audio_values (`torch.FloatTensor` of shape `(N_audio, num_clips, num_samples)`, *optional*):
                Per-clip normalised 16 kHz audio.
            tower_features (`dict[str, torch.FloatTensor]`, *optional*):
                Precomputed outputs of `get_<modality>_tower_features` (a feature cache) instead of the raw media of
                that modality, with keys among `video` `(N_video, T, 1 + S, D_v)`, `face` `(N_face, T, D_f)` and
                `audio` `(N_audio, C, 1 + S, D_a)`.
            cache (`Cache`, *optional*):
                KV cache (`past_key_values=` is accepted with transformers' deprecation warning).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        # 1. Towers: raw media → tower features, unless precomputed ones are given.
        tower_features = dict(tower_features or {})
        unknown = set(tower_features) - set(TOWER_MODALITIES)
        if unknown:
            raise ValueError(
                f"tower_features: unknown keys {sorted(unknown)}; expected keys among {TOWER_MODALITIES}."
            )
        for modality, raw, run_tower in (
            ("video", pixel_values_videos, self.get_video_tower_features),
            ("face", face_pixel_values, self.get_face_tower_features),
            ("audio", audio_values, self.get_audio_tower_features),
        ):
            if raw is not None and tower_features.get(modality) is not None:
                raise ValueError(f"{modality}: pass the raw media or its `tower_features`, not both.")
            if raw is not None:
                tower_features[modality] = run_tower(raw)
        tower_features = {modality: value for modality, value in tower_features.items() if value is not None}

        # 2. Heads: tower features → LLM embeddings, each checked against its placeholders, then one masked scatter
        # per modality. The masks are all read before any placeholder embedding is replaced.
        fusion_gate_weights = None
        if tower_features:
            embeddings = {m: self._embed_tower_features(m, tower_features[m]) for m in tower_features}
            masks = {m: self.get_placeholder_mask(input_ids, inputs_embeds, m, embeddings[m]) for m in embeddings}
            fusion, fusion_gate_weights = self._fuse(input_ids, inputs_embeds, tower_features, masks)
            if fusion is not None:
                embeddings["fusion"] = fusion
                masks["fusion"] = self.get_placeholder_mask(input_ids, inputs_embeds, "fusion", fusion)
            for modality, modality_embeddings in embeddings.items():
                modality_embeddings = modality_embeddings.to(inputs_embeds.device, inputs_embeds.dtype)
                inputs_embeds = inputs_embeds.masked_scatter(masks[modality], modality_embeddings)

        # 3. The language model.
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{CACHE_NAME: cache},
            **{**kwargs, "return_dict": True},
        )
        return NanoEmoXModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            fusion_gate_weights=fusion_gate_weights,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )


class NanoEmoXForConditionalGeneration(NanoEmoXPreTrainedModel, GenerationMixin):
    """Nano-EmoX with its language-modelling head: video, audio, faces and text in, text out."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: NanoEmoXConfig):
        super().__init__(config)
        self.model = NanoEmoXModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_video_features(self, pixel_values_videos: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """See [`NanoEmoXModel.get_video_features`]."""
        return self.model.get_video_features(pixel_values_videos, **kwargs)

    def get_audio_features(self, audio_values: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """See [`NanoEmoXModel.get_audio_features`]."""
        return self.model.get_audio_features(audio_values, **kwargs)

    def get_face_features(self, face_pixel_values: torch.FloatTensor, **kwargs) -> BaseModelOutputWithPooling:
        """See [`NanoEmoXModel.get_face_features`]."""
        return self.model.get_face_features(face_pixel_values, **kwargs)

    @can_return_tuple
    @_accept_past_key_values
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        face_pixel_values: torch.FloatTensor | None = None,
        audio_values: torch.FloatTensor | None = None,
        tower_features: dict[str, torch.FloatTensor] | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> NanoEmoXCausalLMOutputWithPast:
        r"""
        Same inputs as [`NanoEmoXModel.forward`], plus:

        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Target ids for the language-modelling loss; -100 marks positions that do not count (prompt, padding).
        logits_to_keep (`int` or `torch.Tensor`, *optional*):
            Compute logits for the last `logits_to_keep` positions only (0 keeps all).

        Returns:
            [`NanoEmoXCausalLMOutputWithPast`] with `loss`, `logits` `(batch_size, kept_length, vocab_size)`, the cache
            and `fusion_gate_weights` `(batch_size, num_fusion_experts)`; a tuple with `return_dict=False`.

        Example:

        ```python
        >>> inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
        ...                                        return_dict=True, return_tensors="pt")
        >>> output = model(**inputs)
        >>> output.fusion_gate_weights  # (batch_size, 3): how much each feature scale counted
        ```
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            pixel_values_videos=pixel_values_videos,
            face_pixel_values=face_pixel_values,
            audio_values=audio_values,
            tower_features=tower_features,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return NanoEmoXCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            fusion_gate_weights=outputs.fusion_gate_weights,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache=None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        face_pixel_values: torch.FloatTensor | None = None,
        audio_values: torch.FloatTensor | None = None,
        tower_features: dict[str, torch.FloatTensor] | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        if cache is not None:
            kwargs["cache"] = cache
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        # Media is encoded once, with the prompt; afterwards the KV cache holds it.
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["pixel_values_videos"] = pixel_values_videos
            model_inputs["face_pixel_values"] = face_pixel_values
            model_inputs["audio_values"] = audio_values
            model_inputs["tower_features"] = tower_features
        return model_inputs

    # ---- saving -----------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """
        `PreTrainedModel.save_pretrained` that also records every Auto class, copies the folder's pipeline and writes
        a model card if absent. `push_to_hub=True` then publishes through [`push_to_hub`] (the project's card, never
        transformers' generic one), with `repo_id` (default: the folder's name) and the Hub arguments given here.
        """
        hub_names = ("repo_id", "commit_message", "commit_description", "private", "token", "create_pr", "revision")
        hub_kwargs = {name: kwargs.pop(name) for name in hub_names if name in kwargs}
        self.register_for_auto_class("AutoModel")
        self.config.auto_map = {
            "AutoConfig": "configuration_nanoemox.NanoEmoXConfig",
            "AutoModel": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForImageTextToText": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForMultimodalLM": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
        }
        # The folder's own pipeline (`pipeline(model=folder, trust_remote_code=True)`) is pipeline_nanoemox.py, next
        # to this file in the package. A model loaded as remote code may lack it; then the folder names no pipeline.
        pipeline_file = Path(__file__).with_name("pipeline_nanoemox.py")
        self.config.custom_pipelines = (
            {"nanoemox": {"impl": "pipeline_nanoemox.NanoEmoXPipeline", "pt": ["AutoModel"], "type": "multimodal"}}
            if pipeline_file.is_file()
            else {}
        )
        if pipeline_file.is_file():  # before saving, so that `push_to_hub=True` uploads it too
            Path(save_directory).mkdir(parents=True, exist_ok=True)
            shutil.copy(pipeline_file, Path(save_directory) / pipeline_file.name)
        super().save_pretrained(save_directory, *args, **kwargs)
        card_path = Path(save_directory) / "README.md"
        if not card_path.exists():
            from .model_card_nanoemox import render_model_card

            card_path.write_text(render_model_card(self.config), encoding="utf-8")
        if push_to_hub:
            self.push_to_hub(hub_kwargs.pop("repo_id", Path(save_directory).name), **hub_kwargs)

    def push_to_hub(self, repo_id: str, **kwargs):
        """
        `PushToHubMixin.push_to_hub` (same arguments, plus `processor=`, `existing_card=` and `training_summary=`)
        that uploads the project's model card instead of transformers' generic one, and never silently overwrites a
        richer card already on the Hub: see `hub_nanoemox.push_with_card`.
        """
        from .hub_nanoemox import push_with_card

        return push_with_card(self, repo_id, **kwargs)


__all__ = [
    "NanoEmoXFaceEncoder",
    "NanoEmoXForConditionalGeneration",
    "NanoEmoXModel",
    "NanoEmoXPreTrainedModel",
]

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

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, AutoModelForCausalLM, Blip2QFormerModel, SwinModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import PreTrainedModel
from transformers.utils import logging

from .configuration_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig

logger = logging.get_logger(__name__)

# transformers 5.24 renamed the KV cache argument and output field `past_key_values` → `cache`. The model speaks
# whichever name the installed version uses, so the same remote code runs on both sides of the rename.
CACHE_NAME = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"

MODALITIES = ("video", "audio", "face", "fusion")
# Inputs used only when the prompt is first encoded (and the processor's face metadata, which the model ignores);
# later decoding steps only extend the KV cache.
MEDIA_INPUT_NAMES = (
    "pixel_values_videos",
    "face_pixel_values",
    "audio_values",
    "video_tower_features",
    "face_tower_features",
    "audio_tower_features",
    "video_mask",
    "face_mask",
    "audio_mask",
    "face_boxes",
    "face_detected",
)


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

    # Data-parallel training needs every rank to run every trainable module at every step: DDP expects a gradient for
    # each trainable parameter, and DeepSpeed ZeRO-3 / FSDP gather each module's weights collectively, so a rank whose
    # batch lacks a modality would hang the others. The P2E recipe turns this on; it only acts in training mode.
    encode_absent_modalities: bool = False

    def _absent_modalities_pass(self, tower_features: dict, features: dict, cached: bool, device) -> torch.Tensor:
        """
        Runs the branch of every modality this batch lacks on one all-zero item and returns 0 × its output sum: a
        zero that carries those modules into the step. With cached features the towers are skipped everywhere, so the
        dummy starts from zero tower features; otherwise the towers run too.
        """
        config = self.config
        dummies = {
            "video": (
                lambda: torch.zeros(1, 1, 1 + config.num_fusion_experts, config.vision_config.hidden_size),
                lambda: self.get_video_tower_features(torch.zeros(1, 1, 3, *(config.vision_config.image_size,) * 2)),
            ),
            "audio": (
                lambda: torch.zeros(1, 1, 1 + config.num_fusion_experts, config.audio_config.hidden_size),
                # 400 samples (25 ms) is the shortest input HuBERT's convolutions accept.
                lambda: self.get_audio_tower_features(torch.zeros(1, 1, 400)),
            ),
            "face": (
                lambda: torch.zeros(1, 1, config.face_config.hidden_size),
                lambda: self.get_face_tower_features(
                    torch.zeros(1, 1, 3, *(config.face_config.backbone_config.image_size,) * 2)
                ),
            ),
        }
        total = torch.zeros((), device=device)
        heads = {"video": self.get_video_features, "audio": self.get_audio_features, "face": self.get_face_features}
        towers = dict(tower_features)
        for modality, (from_cache, from_tower) in dummies.items():
            if modality in features:
                continue
            if modality not in towers:
                towers[modality] = (from_cache() if cached else from_tower()).to(device)
            total = total + heads[modality](towers[modality]).float().sum() * 0.0
        if "fusion" not in features:
            embeddings, gates = self.get_fusion_features(towers["video"][:1], towers["audio"][:1])
            total = total + (embeddings.float().sum() + gates.float().sum()) * 0.0
        return total

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
            average of the mean of `audio_feature_layers`, followed by the time averages of `audio_multiscale_layers`.
        """
        num_tracks, num_clips = audio_values.shape[:2]
        outputs = self._run_tower(
            self.audio_tower, audio_values.flatten(0, 1).to(self.audio_tower.dtype), output_hidden_states=True
        )
        hidden_states = outputs.hidden_states
        clip_feature = torch.stack([hidden_states[layer] for layer in self.config.audio_feature_layers]).mean(dim=0)
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

    # ---- trainable heads: tower features → LLM embeddings ---------------------------------------------------

    def get_video_features(self, video_tower_features: torch.FloatTensor) -> torch.FloatTensor:
        """`(N, num_frames, 1 + S, vision_hidden)` tower features → `(N, num_video_tokens, text_hidden)` embeddings."""
        return self.video_head(video_tower_features[:, :, 0])

    def get_audio_features(self, audio_tower_features: torch.FloatTensor) -> torch.FloatTensor:
        """`(N, num_clips, 1 + S, audio_hidden)` tower features → `(N, num_audio_tokens, text_hidden)` embeddings."""
        return self.audio_head(audio_tower_features[:, :, 0])

    def get_face_features(self, face_tower_features: torch.FloatTensor) -> torch.FloatTensor:
        """`(N, num_frames, face_hidden)` tower features → `(N, num_face_tokens, text_hidden)` embeddings."""
        return self.face_head(face_tower_features)

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

    def _merge_modalities(
        self,
        input_ids: torch.LongTensor,
        inputs_embeds: torch.FloatTensor,
        features: dict[str, torch.Tensor | None],
        masks: dict[str, torch.BoolTensor],
    ) -> torch.FloatTensor:
        """
        Replaces every placeholder token with its modality embedding in one masked scatter (a gather + `where`, so
        shapes stay static). `features[m]` holds `(N_m, tokens_m, hidden)` rows for the samples where `masks[m]` is
        set, in batch order; a sample carries exactly `tokens_m` placeholders of modality m if present, none otherwise.
        """
        batch_size = input_ids.shape[0]
        table, source = [], torch.zeros_like(input_ids)
        placeholder_mask = torch.zeros_like(input_ids, dtype=torch.bool)
        offset = 0
        for modality in MODALITIES:
            is_placeholder = input_ids == self.config.modality_token_ids[modality]
            modality_features = features.get(modality)
            tokens_per_item = getattr(self.config, f"num_{modality}_tokens")
            present = masks.get(modality)
            expected = present.long() * tokens_per_item if present is not None else torch.zeros_like(input_ids[:, 0])
            found = is_placeholder.sum(dim=-1)
            if not torch.equal(found, expected):
                bad = (found != expected).nonzero().flatten().tolist()
                raise ValueError(
                    f"{modality}: the prompt has {found.sum().item()} {modality} placeholder tokens but there are "
                    f"{expected.sum().item()} {modality} features ({int(expected.sum().item() // tokens_per_item)} "
                    f"items × {tokens_per_item} tokens); per-sample counts differ at batch indices {bad[:10]} "
                    f"(found {found[bad[:10]].tolist()}, expected {expected[bad[:10]].tolist()})."
                )
            if modality_features is None:
                continue
            flat_rank = is_placeholder.flatten().cumsum(0).reshape(batch_size, -1) - 1
            source = torch.where(is_placeholder, flat_rank + offset, source)
            placeholder_mask |= is_placeholder
            table.append(modality_features.reshape(-1, modality_features.shape[-1]))
            offset += table[-1].shape[0]
        if not table:
            return inputs_embeds
        table = torch.cat(table).to(inputs_embeds.device, inputs_embeds.dtype)
        return torch.where(placeholder_mask.unsqueeze(-1), table[source], inputs_embeds)

    def encode_modalities(
        self,
        batch_size: int,
        device: torch.device,
        pixel_values_videos: torch.FloatTensor | None = None,
        face_pixel_values: torch.FloatTensor | None = None,
        audio_values: torch.FloatTensor | None = None,
        video_tower_features: torch.FloatTensor | None = None,
        face_tower_features: torch.FloatTensor | None = None,
        audio_tower_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        face_mask: torch.BoolTensor | None = None,
        audio_mask: torch.BoolTensor | None = None,
    ) -> tuple[dict, dict, torch.FloatTensor | None]:
        """
        Runs the towers (unless tower features are given) and the heads on the samples that carry each modality.

        Media tensors are batch-aligned `(batch_size, …)`; `<modality>_mask` (`(batch_size,)` bool) says which rows
        are real and defaults to all rows when the media is given. Rows whose mask is unset are never encoded.

        Returns:
            `(features, masks, fusion_gate_weights, tower_features)`: per modality the `(N_m, tokens, text_hidden)`
            embeddings of the present samples in batch order and the `(batch_size,)` presence mask; gate weights are
            `(batch_size, num_fusion_experts)` with zero rows where fusion is absent, or `None` without fusion; the
            tower features of the present samples.
        """
        inputs = {
            "video": (pixel_values_videos, video_tower_features, video_mask, self.get_video_tower_features),
            "face": (face_pixel_values, face_tower_features, face_mask, self.get_face_tower_features),
            "audio": (audio_values, audio_tower_features, audio_mask, self.get_audio_tower_features),
        }
        tower_features, masks = {}, {}
        for modality, (raw, precomputed, mask, tower_fn) in inputs.items():
            if raw is not None and precomputed is not None:
                raise ValueError(f"{modality}: pass raw media or tower features, not both.")
            given = raw if raw is not None else precomputed
            if given is None:
                if mask is not None and bool(mask.any()):
                    raise ValueError(f"{modality}_mask marks samples as present but no {modality} input was given.")
                continue
            if given.shape[0] != batch_size:
                raise ValueError(
                    f"{modality}: inputs must be batch-aligned with input_ids (batch {batch_size}), got a leading "
                    f"dimension of {given.shape[0]}."
                )
            mask = torch.ones(batch_size, dtype=torch.bool, device=device) if mask is None else mask.to(device).bool()
            masks[modality] = mask
            if not bool(mask.any()):
                continue
            selected = given[mask.to(given.device)]
            tower_features[modality] = tower_fn(selected) if raw is not None else selected

        features = {}
        if "video" in tower_features:
            features["video"] = self.get_video_features(tower_features["video"])
        if "audio" in tower_features:
            features["audio"] = self.get_audio_features(tower_features["audio"])
        if "face" in tower_features:
            features["face"] = self.get_face_features(tower_features["face"])

        fusion_gate_weights = None
        if "video" in masks and "audio" in masks:
            both = masks["video"] & masks["audio"]
            masks["fusion"] = both
            if bool(both.any()):
                # Row of each fused sample inside the video / audio feature tensors (which hold present samples only).
                video_rows = (masks["video"].cumsum(0) - 1)[both]
                audio_rows = (masks["audio"].cumsum(0) - 1)[both]
                features["fusion"], gate = self.get_fusion_features(
                    tower_features["video"][video_rows.to(tower_features["video"].device)],
                    tower_features["audio"][audio_rows.to(tower_features["audio"].device)],
                )
                fusion_gate_weights = gate.new_zeros(batch_size, gate.shape[-1])
                fusion_gate_weights[both.to(gate.device)] = gate
        return features, masks, fusion_gate_weights, tower_features

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
        video_tower_features: torch.FloatTensor | None = None,
        face_tower_features: torch.FloatTensor | None = None,
        audio_tower_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        face_mask: torch.BoolTensor | None = None,
        audio_mask: torch.BoolTensor | None = None,
        face_boxes: torch.Tensor | None = None,
        face_detected: torch.BoolTensor | None = None,
        use_cache: bool | None = None,
        past_key_values=None,
        **kwargs,
    ) -> NanoEmoXModelOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Chat-templated prompt in which each present modality occupies its placeholder tokens.
            pixel_values_videos (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, H, W)`, *optional*):
                CLIP-normalised frames.
            face_pixel_values (`torch.FloatTensor` of shape `(batch_size, num_frames, 3, H_f, W_f)`, *optional*):
                ImageNet-normalised face crops, one per frame.
            audio_values (`torch.FloatTensor` of shape `(batch_size, num_clips, num_samples)`, *optional*):
                Per-clip normalised 16 kHz audio.
            video_tower_features / face_tower_features / audio_tower_features (*optional*):
                Precomputed outputs of `get_<modality>_tower_features`, batch-aligned, instead of the raw media.
            video_mask / face_mask / audio_mask (`torch.BoolTensor` of shape `(batch_size,)`, *optional*):
                Which samples carry the modality; all of them when omitted.
            face_boxes / face_detected (*optional*):
                The processor's record of the face crops it made, for display; accepted and ignored so that
                `model(**processor(...))` and `model.generate(**processor(...))` work.
            cache (`Cache`, *optional*):
                KV cache (`past_key_values` is accepted as the pre-5.24 name).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        cache = cache if cache is not None else past_key_values
        media = {
            "pixel_values_videos": pixel_values_videos,
            "face_pixel_values": face_pixel_values,
            "audio_values": audio_values,
            "video_tower_features": video_tower_features,
            "face_tower_features": face_tower_features,
            "audio_tower_features": audio_tower_features,
            "video_mask": video_mask,
            "face_mask": face_mask,
            "audio_mask": audio_mask,
        }
        fusion_gate_weights = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            features, masks, fusion_gate_weights, tower_features = self.encode_modalities(
                input_ids.shape[0], input_ids.device, **media
            )
            # Decoding steps extend a prompt whose media are in the cache already: a placeholder id there (sampled by
            # an undertrained model) is an ordinary token, not a slot waiting for features.
            # A one-token step is decided from shapes alone, which keeps compiled static-cache decoding free of
            # host syncs; longer continuations ask the cache.
            decoding = not masks and cache is not None and (input_ids.shape[1] == 1 or cache.get_seq_length() > 0)
            if not decoding:
                inputs_embeds = self._merge_modalities(input_ids, inputs_embeds, features, masks)
            if self.training and self.encode_absent_modalities:
                cached = any(media[f"{m}_tower_features"] is not None for m in ("video", "face", "audio"))
                absent = self._absent_modalities_pass(tower_features, features, cached, inputs_embeds.device)
                inputs_embeds = inputs_embeds + absent.to(inputs_embeds.dtype)
        elif any(value is not None for value in media.values()):
            raise ValueError("Media inputs need `input_ids` to locate their placeholder tokens, got `inputs_embeds`.")

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
        video_tower_features: torch.FloatTensor | None = None,
        face_tower_features: torch.FloatTensor | None = None,
        audio_tower_features: torch.FloatTensor | None = None,
        video_mask: torch.BoolTensor | None = None,
        face_mask: torch.BoolTensor | None = None,
        audio_mask: torch.BoolTensor | None = None,
        face_boxes: torch.Tensor | None = None,
        face_detected: torch.BoolTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values=None,
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
            and `fusion_gate_weights` `(batch_size, num_fusion_experts)`.
        """
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            pixel_values_videos=pixel_values_videos,
            face_pixel_values=face_pixel_values,
            audio_values=audio_values,
            video_tower_features=video_tower_features,
            face_tower_features=face_tower_features,
            audio_tower_features=audio_tower_features,
            video_mask=video_mask,
            face_mask=face_mask,
            audio_mask=audio_mask,
            use_cache=use_cache,
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

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        # Media is encoded once, with the prompt; afterwards the KV cache already holds it.
        media = {name: kwargs.pop(name) for name in MEDIA_INPUT_NAMES if name in kwargs}
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs.update(media)
        return model_inputs

    # ---- composition from released components ---------------------------------------------------------------

    @classmethod
    def from_components(
        cls,
        text: str | Path,
        vision: str | Path,
        audio: str | Path,
        face: str | Path | None = None,
        config_overrides: dict | None = None,
        modality_tokens: dict[str, str] | None = None,
        dtype: torch.dtype | None = None,
        return_tokenizer: bool = False,
        **hub_kwargs,
    ):
        """
        Composes Nano-EmoX from pretrained component checkpoints (local folders or Hub ids). The towers and the
        language model take the components' weights; the Q-Formers, heads, adapters and fusion encoder stay randomly
        initialised (that is what the P2E curriculum trains).

        Args:
            text: causal LM checkpoint, e.g. `Qwen/Qwen2.5-1.5B-Instruct`; its tokenizer is loaded too.
            vision: CLIP checkpoint, e.g. `openai/clip-vit-large-patch14`; only the vision tower is loaded.
            audio: HuBERT checkpoint, e.g. `TencentGameMate/chinese-hubert-large`.
            face: a FaceXFormer folder written by `convert_facexformer_to_nanoemox.py`; random when omitted (with a
                warning) so that a model can still be assembled before the conversion is done.
            config_overrides: extra [`NanoEmoXConfig`] arguments (token counts, fusion width, …).
            modality_tokens: placeholder strings, defaults to [`DEFAULT_MODALITY_TOKENS`].
            dtype: dtype of the returned model (float32 by default).
            return_tokenizer: also return the tokenizer extended with the placeholders.
            hub_kwargs: forwarded to every `from_pretrained` call (`revision`, `token`, `cache_dir`, …).

        Returns:
            The model, or `(model, tokenizer)` with `return_tokenizer=True`.
        """
        from transformers import AutoConfig, AutoTokenizer, CLIPVisionModel

        tokenizer = AutoTokenizer.from_pretrained(text, **hub_kwargs)
        token_ids = add_modality_tokens(tokenizer, modality_tokens)
        language_model = AutoModelForCausalLM.from_pretrained(text, dtype=torch.float32, **hub_kwargs)
        vision_config = AutoConfig.from_pretrained(vision, **hub_kwargs)
        vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIPConfig or a vision one
        # A full CLIP checkpoint also holds the text tower, which Nano-EmoX does not use: skip the loader's long
        # report of its "unexpected" weights.
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()
        try:
            vision_tower = CLIPVisionModel.from_pretrained(
                vision, config=vision_config, dtype=torch.float32, **hub_kwargs
            )
        finally:
            logging.set_verbosity(verbosity)
        audio_tower = AutoModel.from_pretrained(audio, dtype=torch.float32, **hub_kwargs)
        face_encoder = (
            NanoEmoXFaceEncoder.from_pretrained(face, dtype=torch.float32, **hub_kwargs) if face is not None else None
        )
        if face_encoder is None:
            logger.warning("No face encoder given: the face encoder stays randomly initialised.")

        text_config = language_model.config
        if len(tokenizer) > text_config.vocab_size:
            language_model.resize_token_embeddings(len(tokenizer))
        config_kwargs = {
            "text_config": text_config.to_dict(),
            "vision_config": vision_tower.config.to_dict(),
            "audio_config": {**audio_tower.config.to_dict(), "apply_spec_augment": False, "layerdrop": 0.0},
            **{f"{modality}_token_id": token_id for modality, token_id in token_ids.items()},
            **(config_overrides or {}),
        }
        if face_encoder is not None:
            config_kwargs["face_config"] = face_encoder.config.to_dict()
        config = NanoEmoXConfig(**config_kwargs)
        model = cls(config)
        model.model.language_model.load_state_dict(language_model.model.state_dict())
        model.lm_head.load_state_dict(language_model.lm_head.state_dict())
        model.model.vision_tower.load_state_dict(vision_tower.state_dict())
        model.model.audio_tower.load_state_dict(audio_tower.state_dict())
        if face_encoder is not None:
            model.model.face_encoder.load_state_dict(face_encoder.state_dict())
        model.generation_config = language_model.generation_config
        # A placeholder is an input slot, never an answer token.
        model.generation_config.suppress_tokens = sorted(config.modality_token_ids.values())
        if dtype is not None:
            model = model.to(dtype)
        return (model, tokenizer) if return_tokenizer else model

    # ---- saving -----------------------------------------------------------------------------------------------

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained` that also records every Auto class and writes a model card if absent."""
        self.register_for_auto_class("AutoModel")
        self.config.auto_map = {
            "AutoConfig": "configuration_nanoemox.NanoEmoXConfig",
            "AutoModel": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForCausalLM": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForImageTextToText": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
            "AutoModelForMultimodalLM": "modeling_nanoemox.NanoEmoXForConditionalGeneration",
        }
        super().save_pretrained(save_directory, *args, **kwargs)
        card_path = Path(save_directory) / "README.md"
        if not card_path.exists():
            from .model_card_nanoemox import render_model_card

            card_path.write_text(render_model_card(self.config), encoding="utf-8")


DEFAULT_MODALITY_TOKENS = {
    "video": "<|emox_video|>",
    "audio": "<|emox_audio|>",
    "face": "<|emox_face|>",
    "fusion": "<|emox_fusion|>",
}


def add_modality_tokens(tokenizer, modality_tokens: dict[str, str] | None = None) -> dict[str, int]:
    """
    Adds the four placeholders to `tokenizer` as named special tokens (`tokenizer.video_token`,
    `tokenizer.video_token_id`, …), keeping the ones it already has, and returns their ids by modality.
    """
    modality_tokens = {**DEFAULT_MODALITY_TOKENS, **(modality_tokens or {})}
    unknown = set(modality_tokens) - set(MODALITIES)
    if unknown:
        raise ValueError(f"modality_tokens: unknown modalities {sorted(unknown)}; expected keys among {MODALITIES}.")
    tokenizer.add_special_tokens(
        {"extra_special_tokens": list(modality_tokens.values())}, replace_extra_special_tokens=False
    )
    tokenizer._set_model_specific_special_tokens({f"{name}_token": token for name, token in modality_tokens.items()})
    return {name: tokenizer.convert_tokens_to_ids(token) for name, token in modality_tokens.items()}


__all__ = [
    "NanoEmoXFaceEncoder",
    "NanoEmoXForConditionalGeneration",
    "NanoEmoXModel",
    "NanoEmoXPreTrainedModel",
    "add_modality_tokens",
]

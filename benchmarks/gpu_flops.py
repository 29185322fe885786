# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""FLOPs of the Nano-EmoX training step and prefill, counted on paper per component (the MFU numerator of
`gpu_bench.py`), and `FlopCounterMode` formulas for the fused attention kernels (the cross-check on the real step).

Everything here reads a `NanoEmoXConfig` only: no model is built, no device is needed (`--sections flops`).
"""

import math

import torch

from modeling_nanoemox import phases

# Convention: 2 FLOPs per multiply-accumulate of every matmul and convolution; norms, softmax, activations, element-
# wise ops and gathers are not counted (they are memory-bound and a few % at most). Attention score and value
# matmuls are counted over the full (T × T) square, as PaLM's MFU does (causal kernels skip about half of it).
# Backward: a matmul whose weight trains needs an input-gradient and a weight-gradient matmul (2× its forward); a
# frozen weight needs only the input gradient (1×), and nothing at all where its input needs no gradient either
# (the towers, run without autograd). Gradient-checkpointing recomputation is not model work and is not counted,
# nor is flash attention's score recomputation in backward.


def clip_vision_flops(vc) -> int:
    """Forward FLOPs of the CLIP vision tower for one image: patch embedding + every encoder layer.
    n = (S/P)² + 1 tokens; per layer 2·n·(4·d² + 2·d·ff) for q, k, v, out and the MLP, + 4·n²·d for attention."""
    patches = (vc.image_size // vc.patch_size) ** 2
    n, d, ff = patches + 1, vc.hidden_size, vc.intermediate_size
    patch_embedding = 2 * patches * d * 3 * vc.patch_size**2
    per_layer = 2 * n * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    return patch_embedding + vc.num_hidden_layers * per_layer


def hubert_flops(ac, num_samples: int) -> int:
    """Forward FLOPs of HuBERT for one clip of `num_samples`: the 7 feature-extractor convolutions
    (2·L_out·C_out·C_in·k each), the feature projection, the grouped positional convolution and the encoder layers
    (per layer 2·T·(4·d² + 2·d·ff) + 4·T²·d)."""
    length, channels_in, convolutions = num_samples, 1, 0
    for channels_out, kernel, stride in zip(ac.conv_dim, ac.conv_kernel, ac.conv_stride):
        length = (length - kernel) // stride + 1
        convolutions += 2 * length * channels_out * channels_in * kernel
        channels_in = channels_out
    frames, d, ff = length, ac.hidden_size, ac.intermediate_size
    projection = 2 * frames * ac.conv_dim[-1] * d
    kernel = ac.num_conv_pos_embeddings
    positional_frames = frames + 2 * (kernel // 2) - kernel + 1  # "same" padding; one frame is trimmed if k is even
    positional = 2 * positional_frames * d * (d // ac.num_conv_pos_embedding_groups) * kernel
    per_layer = 2 * frames * (4 * d * d + 2 * d * ff) + 4 * frames * frames * d
    return convolutions + projection + positional + ac.num_hidden_layers * per_layer


def face_encoder_flops(fc) -> int:
    """Forward FLOPs of the FaceXFormer encoder for one crop: Swin (patch embedding; per block q, k, v and output
    projections and windowed attention on the window-padded map, MLP; patch merging 4C→2C between stages) + the
    multi-scale head (one Linear C_s→H per stage on its map, the 1×1 fusion convolution 4H→H at stage-1 resolution)."""
    bc = fc.backbone_config
    resolution = bc.image_size // bc.patch_size
    total = 2 * resolution**2 * bc.embed_dim * 3 * bc.patch_size**2
    head = 0
    for stage, depth in enumerate(bc.depths):
        channels, side = bc.embed_dim * 2**stage, math.ceil(resolution / 2**stage)
        tokens = side * side
        window = min(bc.window_size, side)  # transformers shrinks the window to a smaller map
        padded = (math.ceil(side / window) * window) ** 2
        mlp = int(bc.mlp_ratio * channels)
        block = 2 * padded * channels * 4 * channels + 4 * padded * window**2 * channels + 4 * tokens * channels * mlp
        total += depth * block
        if stage < len(bc.depths) - 1:
            total += 2 * math.ceil(side / 2) ** 2 * 4 * channels * 2 * channels
        head += 2 * tokens * channels * fc.hidden_size
    num_stages = len(bc.depths)
    head += 2 * resolution**2 * num_stages * fc.hidden_size * fc.hidden_size
    return total + head


def qformer_head_flops(qc, num_queries: int, num_items: int, text_hidden: int) -> int:
    """Forward FLOPs of one Q-Former head (queries Q, items L of width E): per layer self-attention
    2·Q·h·3h + 4·Q²·h + 2·Q·h², cross-attention 2·Q·h² + 4·L·E·h + 4·Q·L·h + 2·Q·h², FFN 4·Q·h·I; adapter 2·Q·h·d."""
    q, h, e, i = num_queries, qc.hidden_size, qc.encoder_hidden_size, qc.intermediate_size
    self_attention = 2 * q * h * 3 * h + 4 * q * q * h + 2 * q * h * h
    cross_attention = 2 * q * h * h + 4 * num_items * e * h + 4 * q * num_items * h + 2 * q * h * h
    per_layer = self_attention + cross_attention + 4 * q * h * i
    return qc.num_hidden_layers * per_layer + 2 * q * h * text_hidden


def head_flops(config, num_frames: int, num_clips: int) -> tuple[dict, dict]:
    """Forward FLOPs of the trainable heads for one sample, and per head the part whose input needs no gradient (the
    matmuls that read frozen tower features directly: their backward has no input-gradient matmul). The Q-Formers'
    cross-attention reads tower features + trainable position embeddings, so it does need input gradients."""
    d = config.text_config.hidden_size
    video = qformer_head_flops(config.video_qformer_config, config.num_video_tokens, num_frames, d)
    audio = qformer_head_flops(config.audio_qformer_config, config.num_audio_tokens, num_clips, d)
    # Face head: Q_f queries attend over T frames of width H, then the MLP H → P → d.
    h, q, p = config.face_config.hidden_size, config.num_face_tokens, config.face_projector_hidden_size
    face_key_value = 4 * num_frames * h * h
    face = 2 * q * h * h + face_key_value + 4 * q * num_frames * h + 2 * q * h * h + 2 * q * (h * p + p * d)
    # Fusion: shared projections of the S scales (A→F, V→F), S experts (audio queries over video frames + FFN), the
    # gate (S·F → F → S) and the adapter F → d on the time-averaged vector.
    f, s = config.fusion_hidden_size, config.num_fusion_experts
    projections = 2 * num_clips * s * config.audio_config.hidden_size * f
    projections += 2 * num_frames * s * config.vision_config.hidden_size * f
    expert = 2 * num_clips * f * f + 4 * num_frames * f * f + 4 * num_clips * num_frames * f
    expert += 2 * num_clips * f * f + 4 * num_clips * f * f
    fusion = projections + s * expert + 2 * (s * f * f + f * s) + 2 * f * d
    forward = {"video_head": video, "audio_head": audio, "face_head": face, "fusion": fusion}
    return forward, {"face_head": face_key_value, "fusion": projections}


def llm_flops(tc, tokens: int, logits_positions: int, lora_rank: int = 0, lora_targets=()) -> dict:
    """Forward FLOPs of the decoder on one sequence of `tokens`: linear 2·T·(d·q + 2·d·kv + q·d + 3·d·ff) per layer;
    attention 4·T²·q per layer; LoRA 2·T·r·Σ(in + out) per layer over the adapted projections; LM head 2·P·d·V over
    the P positions whose logits are computed."""
    d, ff, layers = tc.hidden_size, tc.intermediate_size, tc.num_hidden_layers
    head_dim = getattr(tc, "head_dim", None) or d // tc.num_attention_heads
    q, kv = tc.num_attention_heads * head_dim, tc.num_key_value_heads * head_dim
    shapes = {
        "q_proj": (d, q),
        "k_proj": (d, kv),
        "v_proj": (d, kv),
        "o_proj": (q, d),
        "gate_proj": (d, ff),
        "up_proj": (d, ff),
        "down_proj": (ff, d),
    }
    linear = layers * 2 * tokens * sum(i * o for i, o in shapes.values())
    attention = layers * 4 * tokens * tokens * q
    lora = layers * 2 * tokens * lora_rank * sum(sum(shapes[t]) for t in lora_targets)
    lm_head = 2 * logits_positions * d * tc.vocab_size
    return {"linear": linear, "attention": attention, "lora": lora, "lm_head": lm_head}


def training_flops(config, batch_size: int, tokens: int, frames: int, clips: int, clip_samples: int) -> dict:
    """Model FLOPs of one phase-3 training step (forward + backward of the batch), by component, for raw media and
    for cached tower features. Towers: forward only (frozen, no autograd). Heads (all trainable): 3× forward, less the
    input-gradient matmuls of those that read tower features. LLM (frozen base + LoRA): base linears and the LM head
    (frozen, tied) 2× forward (input gradients only); attention and LoRA 3× forward. Logits are computed at every
    position (the model's `logits_to_keep=0`), so the LM head counts all `tokens`."""
    towers = {
        "vision_tower": batch_size * frames * clip_vision_flops(config.vision_config),
        "audio_tower": batch_size * clips * hubert_flops(config.audio_config, clip_samples),
        "face_encoder": batch_size * frames * face_encoder_flops(config.face_config),
    }
    heads_forward, no_input_grad = head_flops(config, frames, clips)
    heads = {name: batch_size * (3 * value - no_input_grad.get(name, 0)) for name, value in heads_forward.items()}
    llm_forward = llm_flops(config.text_config, tokens, tokens, phases.LORA_RANK, phases.LORA_TARGET_MODULES)
    multiplier = {"linear": 2, "attention": 3, "lora": 3, "lm_head": 2}
    llm = {f"llm_{name}": batch_size * multiplier[name] * value for name, value in llm_forward.items()}
    cached = sum(heads.values()) + sum(llm.values())
    return {
        "components": {**towers, **heads, **llm},
        "towers_forward": sum(towers.values()),
        "heads_forward_backward": sum(heads.values()),
        "llm_forward_backward": sum(llm.values()),
        "total_raw": sum(towers.values()) + cached,
        "total_cached": cached,
    }


def prefill_flops(config, batch_size: int, tokens: int, frames: int, clips: int, clip_samples: int) -> dict:
    """Forward FLOPs of clip tensors → first token: towers, heads, the plain decoder (no LoRA) on the prompt, and the
    LM head at the last position only (what `generate` asks for)."""
    towers = batch_size * (
        frames * clip_vision_flops(config.vision_config)
        + clips * hubert_flops(config.audio_config, clip_samples)
        + frames * face_encoder_flops(config.face_config)
    )
    heads = batch_size * sum(head_flops(config, frames, clips)[0].values())
    llm = batch_size * sum(llm_flops(config.text_config, tokens, 1).values())
    return {"towers": towers, "heads": heads, "llm": llm, "total": towers + heads + llm}


def flop_counter_mapping() -> dict:
    """`FlopCounterMode` formulas for the fused attention kernels that follow the convention above — backward = 2×
    forward (no recomputation), grouped-query shapes accepted (k/v with fewer heads than q) — and that also cover the
    CPU flash kernels, which torch's registry lacks."""

    def attention(query_shape, key_shape, value_shape) -> int:
        batch, heads, queries, head_dim = query_shape
        keys, value_dim = key_shape[-2], value_shape[-1]
        return 2 * batch * heads * queries * keys * (head_dim + value_dim)  # Q·Kᵀ and P·V

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return attention(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return 2 * attention(query_shape, key_shape, value_shape)

    aten, mapping = torch.ops.aten, {}
    for kernel in ("efficient", "flash", "cudnn", "flash_attention_for_cpu"):
        name = f"_scaled_dot_product_{kernel}" if kernel.endswith("cpu") else f"_scaled_dot_product_{kernel}_attention"
        for op, formula in ((name, forward), (f"{name}_backward", backward)):
            if hasattr(aten, op):
                mapping[getattr(aten, op)] = formula
    return mapping

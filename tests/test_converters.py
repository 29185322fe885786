# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Tests of the two checkpoint converters on synthetic checkpoints that use the SOURCE names and shapes.

The source names are generated here independently of the converters (from the torchvision / FaceXFormer / LAVIS
layouts), so a wrong rule in a converter cannot be cancelled by the same rule in the test.
"""

import argparse
import json
import logging
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from modeling_nanoemox import NanoEmoXConfig, NanoEmoXFaceConfig, NanoEmoXFaceEncoder, NanoEmoXForConditionalGeneration
from modeling_nanoemox import convert_facexformer_to_nanoemox as facex
from modeling_nanoemox import convert_lavis_checkpoint_to_nanoemox as lavis

# --------------------------------------------------------------------------------------------------------------
# FaceXFormer
# --------------------------------------------------------------------------------------------------------------


def _window_index(window: int) -> torch.Tensor:
    # torchvision's flat relative-position index for a window × window window.
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (relative[..., 0] * (2 * window - 1) + relative[..., 1]).flatten()


def facexformer_state_dict(config: NanoEmoXFaceConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """FaceXFormer's `state_dict_backbone` layout for `config`, random values, a few decoder keys included."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator)

    swin = config.backbone_config
    embed, window, hidden = swin.embed_dim, swin.window_size, config.hidden_size
    state = {
        "backbone.0.0.0.weight": rand(embed, swin.num_channels, swin.patch_size, swin.patch_size),
        "backbone.0.0.0.bias": rand(embed),
        "backbone.0.0.2.weight": rand(embed),
        "backbone.0.0.2.bias": rand(embed),
    }
    num_stages = len(swin.depths)
    for stage, (depth, heads) in enumerate(zip(swin.depths, swin.num_heads)):
        dim = embed * 2**stage
        for block in range(depth):
            prefix = f"backbone.0.{2 * stage + 1}.{block}."
            for norm in ("norm1", "norm2"):
                state[f"{prefix}{norm}.weight"], state[f"{prefix}{norm}.bias"] = rand(dim), rand(dim)
            state[f"{prefix}attn.relative_position_bias_table"] = rand((2 * window - 1) ** 2, heads)
            state[f"{prefix}attn.relative_position_index"] = _window_index(window)
            state[f"{prefix}attn.qkv.weight"], state[f"{prefix}attn.qkv.bias"] = rand(3 * dim, dim), rand(3 * dim)
            state[f"{prefix}attn.proj.weight"], state[f"{prefix}attn.proj.bias"] = rand(dim, dim), rand(dim)
            state[f"{prefix}mlp.0.weight"], state[f"{prefix}mlp.0.bias"] = rand(4 * dim, dim), rand(4 * dim)
            state[f"{prefix}mlp.3.weight"], state[f"{prefix}mlp.3.bias"] = rand(dim, 4 * dim), rand(dim)
        if stage < num_stages - 1:
            prefix = f"backbone.0.{2 * stage + 2}."
            state[f"{prefix}reduction.weight"] = rand(2 * dim, 4 * dim)
            state[f"{prefix}norm.weight"], state[f"{prefix}norm.bias"] = rand(4 * dim), rand(4 * dim)
        state[f"linear_c.{stage}.proj.weight"], state[f"linear_c.{stage}.proj.bias"] = rand(hidden, dim), rand(hidden)
    last = embed * 2 ** (num_stages - 1)
    state["backbone.1.weight"], state["backbone.1.bias"] = rand(last), rand(last)
    state["linear_fuse.weight"] = rand(hidden, hidden * num_stages, 1, 1)
    # Parts of the full FaceXFormer that the converter must drop.
    state["pe_layer.positional_encoding_gaussian_matrix"] = rand(2, 128)
    state["face_decoder.landmarks_token.weight"] = rand(1, 256)
    state["face_decoder.mask_tokens.weight"] = rand(11, 256)
    state["face_decoder.transformer.layers.0.self_attn.q_proj.weight"] = rand(256, 256)
    state["face_decoder.output_upscaling.0.weight"] = rand(256, 64, 2, 2)
    state["face_decoder.race_prediction_head.layers.2.bias"] = rand(5)
    return state


@pytest.fixture
def face_config():
    return NanoEmoXConfig.tiny().face_config


def _save_facexformer(path, state):
    torch.save({"state_dict_backbone": state, "epoch": 11}, path)


def test_facexformer_conversion_copies_every_tensor(tmp_path, face_config):
    state = facexformer_state_dict(face_config)
    _save_facexformer(tmp_path / "model.pt", state)
    out = tmp_path / "out"
    assert (
        facex.main(["--checkpoint", str(tmp_path / "model.pt"), "--output_dir", str(out), "--image_size", "32"]) == 0
    )

    model = NanoEmoXFaceEncoder.from_pretrained(out)
    swin = model.config.backbone_config
    assert (swin.embed_dim, list(swin.depths), list(swin.num_heads), swin.window_size, swin.patch_size) == (
        8,
        [1, 1, 1, 1],
        [1, 1, 2, 2],
        2,
        2,
    )
    assert model.config.hidden_size == 16
    converted = model.state_dict()
    for stage in range(4):
        dim = 8 * 2**stage
        qkv_weight = state[f"backbone.0.{2 * stage + 1}.0.attn.qkv.weight"]
        qkv_bias = state[f"backbone.0.{2 * stage + 1}.0.attn.qkv.bias"]
        block = f"backbone.encoder.layers.{stage}.blocks.0."
        for part, name in enumerate(("q_proj", "k_proj", "v_proj")):
            rows = slice(part * dim, (part + 1) * dim)
            assert torch.equal(converted[f"{block}attention.{name}.weight"], qkv_weight[rows])
            assert torch.equal(converted[f"{block}attention.{name}.bias"], qkv_bias[rows])
        source = f"backbone.0.{2 * stage + 1}.0."
        pairs = {
            "layernorm_before.weight": "norm1.weight",
            "layernorm_after.bias": "norm2.bias",
            "attention.o_proj.weight": "attn.proj.weight",
            "attention.relative_position_bias.relative_position_bias_table": "attn.relative_position_bias_table",
            "mlp.fc1.weight": "mlp.0.weight",
            "mlp.fc2.bias": "mlp.3.bias",
        }
        for ours, theirs in pairs.items():
            assert torch.equal(converted[block + ours], state[source + theirs]), ours
        assert torch.equal(converted[f"stage_projections.{stage}.weight"], state[f"linear_c.{stage}.proj.weight"])
    for stage in range(3):  # torchvision's merging after stage s is transformers' downsample of stage s
        merging = f"backbone.0.{2 * stage + 2}."
        assert torch.equal(
            converted[f"backbone.encoder.layers.{stage}.downsample.reduction.weight"],
            state[merging + "reduction.weight"],
        )
        assert torch.equal(
            converted[f"backbone.encoder.layers.{stage}.downsample.norm.bias"], state[merging + "norm.bias"]
        )
    assert torch.equal(
        converted["backbone.embeddings.patch_embeddings.projection.weight"], state["backbone.0.0.0.weight"]
    )
    assert torch.equal(converted["backbone.embeddings.norm.weight"], state["backbone.0.0.2.weight"])
    assert torch.equal(converted["backbone.layernorm.bias"], state["backbone.1.bias"])
    assert torch.equal(converted["fuse.weight"], state["linear_fuse.weight"])


def test_facexformer_unknown_key_fails(tmp_path, face_config, caplog):
    state = facexformer_state_dict(face_config)
    state["face_decoder.new_task_head.weight"] = torch.zeros(3)
    _save_facexformer(tmp_path / "model.pt", state)
    with caplog.at_level(logging.ERROR):
        status = facex.main(["--checkpoint", str(tmp_path / "model.pt"), "--output_dir", str(tmp_path / "out")])
    assert status != 0
    assert "face_decoder.new_task_head.weight" in caplog.text
    assert not (tmp_path / "out").exists()


def test_facexformer_missing_key_fails(tmp_path, face_config, caplog):
    state = facexformer_state_dict(face_config)
    del state["backbone.0.3.0.attn.proj.bias"]
    _save_facexformer(tmp_path / "model.pt", state)
    with caplog.at_level(logging.ERROR):
        status = facex.main(["--checkpoint", str(tmp_path / "model.pt"), "--output_dir", str(tmp_path / "out")])
    assert status != 0
    assert "backbone.encoder.layers.1.blocks.0.attention.o_proj.bias" in caplog.text


def test_facexformer_shape_and_index_mismatches_fail(face_config):
    state = facexformer_state_dict(face_config)
    state["backbone.0.1.0.attn.relative_position_index"] = state["backbone.0.1.0.attn.relative_position_index"].flip(0)
    wider = NanoEmoXFaceConfig(backbone_config=face_config.backbone_config.to_dict(), hidden_size=32)
    with pytest.raises(ValueError) as error:
        facex.convert_facexformer_state_dict(state, wider)
    message = str(error.value)
    assert "relative position index differs" in message
    assert "stage_projections.0.weight: expected shape (32, 8), got (16, 8)" in message


def test_facexformer_matches_torchvision(face_config):
    pytest.importorskip("torchvision")
    from torch.nn import functional as F
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = face_config.backbone_config
    # Two blocks per stage, so shifted windows are exercised too.
    backbone = SwinTransformer(
        patch_size=[swin.patch_size, swin.patch_size],
        embed_dim=swin.embed_dim,
        depths=[2, 2, 2, 2],
        num_heads=list(swin.num_heads),
        window_size=[swin.window_size, swin.window_size],
        stochastic_depth_prob=0.0,
    )
    backbone = torch.nn.Sequential(*(list(backbone.children())[:-1])).eval()
    hidden = face_config.hidden_size
    widths = face_config.stage_hidden_sizes
    heads = torch.nn.ModuleList(torch.nn.Linear(width, hidden) for width in widths)
    fuse = torch.nn.Conv2d(hidden * 4, hidden, 1, bias=False)
    with torch.no_grad():
        for parameter in [*backbone.parameters(), *heads.parameters(), *fuse.parameters()]:
            parameter.add_(0.02 * torch.randn_like(parameter))  # LayerNorms too, so a swapped norm shows

    # FaceXFormer's encoder forward: stage maps from hooks on features[1, 3, 5, 7], per-stage Linear, bilinear upsample
    # to the first stage's size, concatenation deepest-first, 1×1 convolution, global average pool.
    maps = []
    for index in (1, 3, 5, 7):
        backbone[0][index].register_forward_hook(
            lambda module, inputs, output: maps.append(output.permute(0, 3, 1, 2))
        )
    pixels = torch.randn(2, 3, swin.image_size, swin.image_size)
    with torch.no_grad():
        backbone(pixels)
        projected = []
        for stage_map, head in zip(maps, heads):
            batch, _, height, width = stage_map.shape
            stage_map = head(stage_map.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(batch, -1, height, width)
            projected.append(F.interpolate(stage_map, size=maps[0].shape[2:], mode="bilinear", align_corners=False))
        expected = F.adaptive_avg_pool2d(fuse(torch.cat(projected[::-1], dim=1)), 1).flatten(1)

    state = {f"backbone.{key}": value for key, value in backbone.state_dict().items()}
    state |= {
        f"linear_c.{i}.proj.{name}": value for i, head in enumerate(heads) for name, value in head.state_dict().items()
    }
    state["linear_fuse.weight"] = fuse.weight.detach()
    config = facex.infer_face_config(state, image_size=swin.image_size)
    model = NanoEmoXFaceEncoder(config).eval()
    model.load_state_dict(facex.convert_facexformer_state_dict(state, config), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model(pixels), expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# LAVIS phase checkpoints
# --------------------------------------------------------------------------------------------------------------

# Our name → the authors' name, written from the authors' module layout (LAVIS BertModel, MultiScaleCrossModalFusion,
# FacialEncoderFxformer) independently of the converter's rules.
_TO_AUTHORS = [
    (r"model\.(video|audio)_head\.qformer\.layernorm\.(.+)", r"\1_Qformer.bert.embeddings.LayerNorm.\2"),
    (
        r"model\.(video|audio)_head\.qformer\.encoder\.layer\.(\d+)\.(attention|crossattention)\.attention\.(.+)",
        r"\1_Qformer.bert.encoder.layer.\2.\3.self.\4",
    ),
    (r"model\.(video|audio)_head\.qformer\.(encoder\.layer\.\d+\..+)", r"\1_Qformer.bert.\2"),
    (r"model\.(video|audio)_head\.query_tokens", r"\1_query_tokens"),
    (r"model\.video_head\.position_embedding\.(.+)", r"video_frame_position_embedding.\1"),
    (r"model\.audio_head\.position_embedding\.(.+)", r"audio_position_embedding.\1"),
    (r"model\.video_head\.projector\.(.+)", r"video_proj.\1"),
    (r"model\.audio_head\.projector\.(.+)", r"audio_llama_proj.\1"),
    (r"model\.fusion_projector\.(.+)", r"multi_llama_proj.\1"),
    (r"model\.fusion_encoder\.audio_projection\.(.+)", r"multi_multiscale_fusion.audio_proj.\1"),
    (r"model\.fusion_encoder\.video_projection\.(.+)", r"multi_multiscale_fusion.visual_proj.\1"),
    (r"model\.fusion_encoder\.experts\.(\d+)\.cross_attention\.(.+)", r"multi_multiscale_fusion.cross_attns.\1.\2"),
    (r"model\.fusion_encoder\.experts\.(\d+)\.norm\.(.+)", r"multi_multiscale_fusion.ffns.\1.0.\2"),
    (r"model\.fusion_encoder\.experts\.(\d+)\.fc1\.(.+)", r"multi_multiscale_fusion.ffns.\1.1.\2"),
    (r"model\.fusion_encoder\.experts\.(\d+)\.fc2\.(.+)", r"multi_multiscale_fusion.ffns.\1.4.\2"),
    (r"model\.fusion_encoder\.gate\.(\d+)\.(.+)", r"multi_multiscale_fusion.gate_mlp.\1.\2"),
    (r"model\.face_head\.queries", r"facial_encoder.query"),
    (r"model\.face_head\.attention\.(.+)", r"facial_encoder.attn.\1"),
    (r"model\.face_head\.projector\.linear_1\.(.+)", r"facial_encoder.face_proj.0.\1"),
    (r"model\.face_head\.projector\.linear_2\.(.+)", r"facial_encoder.face_proj.3.\1"),
]
_PHASE_MODULES = {
    "1.1": ["audio_head.qformer", "audio_head.query_tokens", "audio_head.position_embedding", "audio_head.projector"],
    "1.2": [
        "video_head.qformer",
        "video_head.query_tokens",
        "video_head.position_embedding",
        "video_head.projector",
        "face_head.queries",
        "face_head.attention",
        "face_head.projector",
    ],
}
_FACE_POOLER = ("face_head.queries", "face_head.attention")  # the authors' never-frozen query + attention


def _unit(key: str) -> str | None:
    if not key.startswith("model."):
        return None
    parts = key.split(".")
    return f"{parts[1]}.{parts[2]}" if parts[1] in ("video_head", "audio_head", "face_head") else parts[1]


_PHASE_MODULES["2"] = _PHASE_MODULES["1.1"] + _PHASE_MODULES["1.2"] + ["fusion_encoder", "fusion_projector"]
_PHASE_MODULES["3"] = _PHASE_MODULES["2"]
_PHASE_FLAGS = {  # the frozen_* flags of the authors' configs/phase*.yaml
    "1.1": dict(audio=False, video=True, face=True, fusion=True, llm=True),
    "1.2": dict(audio=True, video=False, face=False, fusion=True, llm=True),
    "2": dict(audio=False, video=False, face=False, fusion=False, llm=True),
    "3": dict(audio=False, video=False, face=False, fusion=False, llm=False),
}
LORA_RANK = 4
LORA_ALPHA = 16  # not the default 32, so the test sees that the checkpoint's config is used


def _authors_name(key: str) -> str:
    for pattern, template in _TO_AUTHORS:
        if match := re.fullmatch(pattern, key):
            return match.expand(template)
    raise KeyError(key)


def _authors_config(phase: str) -> dict:
    flags = _PHASE_FLAGS[phase]
    return {
        "model": {
            "arch": "nano_emox",
            "frozen_video_Qformer": flags["video"],
            "frozen_video_proj": flags["video"],
            "frozen_audio_Qformer": flags["audio"],
            "frozen_audio_proj": flags["audio"],
            "frozen_facial_llama_proj": flags["face"],
            "frozen_multi_multiscale": flags["fusion"],
            "frozen_multi_llama_proj": flags["fusion"],
            "frozen_multi_Qformer": flags["fusion"],
            "frozen_multi_MoE": flags["fusion"],
            "frozen_llm": flags["llm"],
            "multi_fusion_type": "multiscale",
            "video_fusion_type": "qformer",
            "audio_fusion_type": "qformer",
            "lora_r": LORA_RANK,
            "lora_alpha": LORA_ALPHA,
            "lora_dropout": 0.05,
        },
        "run": {"init_lr": 8e-6, "max_epoch": 60},
        "datasets": {"mintrec": {"data_type": "video"}},
    }


def lavis_state_dict(phase: str, source: dict[str, torch.Tensor], config: NanoEmoXConfig, seed: int = 1) -> dict:
    """The `model` entry of an authors' checkpoint of `phase`, built from our tensors `source`."""
    state = {}
    for key, value in source.items():
        module = _unit(key)
        # The authors never freeze their face pooler, so every phase's checkpoint carries it.
        if module in _PHASE_MODULES[phase] or module in _FACE_POOLER:
            state[_authors_name(key)] = value.clone()
    generator = torch.Generator().manual_seed(seed)
    text_hidden = config.text_config.hidden_size
    if phase == "3":
        for key, value in source.items():
            match = re.fullmatch(r"model\.language_model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight", key)
            if match:
                prefix = "llama_model.base_model.model.model.layers.{}.{}.{}.".format(*match.groups())
                out_features, in_features = value.shape
                state[prefix + "lora_A.default.weight"] = torch.randn(LORA_RANK, in_features, generator=generator)
                state[prefix + "lora_B.default.weight"] = torch.randn(out_features, LORA_RANK, generator=generator)
    # Always-trainable dead modules of the authors' model.
    vision, audio = config.vision_config.hidden_size, config.audio_config.hidden_size
    state["image_llama_proj.weight"] = torch.randn(text_hidden, vision, generator=generator)
    state["image_llama_proj.bias"] = torch.randn(text_hidden, generator=generator)
    state["multi_audio_embs.weight"] = torch.randn(max(vision, audio), audio, generator=generator)
    state["multi_video_embs.bias"] = torch.randn(max(vision, audio), generator=generator)
    state["facial_encoder.lynorm.weight"] = torch.ones(config.face_config.hidden_size)
    # Buffers of the whole model (the runner keeps every buffer).
    state["video_Qformer.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state["audio_Qformer.bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    state["visual_encoder.model.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    state["visual_encoder.model.vision_model.embeddings.position_ids"] = torch.arange(257).unsqueeze(0)
    state["facial_encoder.facexformer.backbone.0.1.0.attn.relative_position_index"] = _window_index(7)
    return state


def save_lavis_checkpoint(path, state: dict, phase: str, **overrides) -> None:
    checkpoint = {
        "model": state,
        "optimizer": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)}},
            "param_groups": [{"lr": 8e-6, "weight_decay": 0.05, "betas": (0.9, 0.999), "params": [0]}],
        },
        "config": _authors_config(phase),
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 10},
        "epoch": 3,
    }
    checkpoint.update(overrides)
    torch.save(checkpoint, path)


@pytest.fixture
def lavis_setup(tmp_path):
    """A saved tiny base model, and a second tiny model whose weights play the authors' trained ones."""
    config = NanoEmoXConfig.tiny()
    torch.manual_seed(0)
    base = NanoEmoXForConditionalGeneration(config).eval()
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    (base_dir / "special_tokens_map.json").write_text("{}")
    torch.manual_seed(1)
    trained = NanoEmoXForConditionalGeneration(config).state_dict()
    # Perturb everything (LayerNorms start at 1/0 in both models) so every overlaid tensor differs from the base.
    trained = {
        key: value + torch.randn_like(value) if value.is_floating_point() else value for key, value in trained.items()
    }
    return config, base_dir, base.state_dict(), trained


def _run(tmp_path, base_dir, phase, *extra):
    return lavis.main(
        [
            "--checkpoint",
            str(tmp_path / "checkpoint.pth"),
            "--phase",
            phase,
            "--base_model",
            str(base_dir),
            "--output_dir",
            str(tmp_path / "out"),
            *extra,
        ]
    )


def _in_modules(key: str, modules) -> bool:
    return _unit(key) in modules


def test_lavis_phase2_overlays_every_trainable_tensor(tmp_path, lavis_setup):
    config, base_dir, base, trained = lavis_setup
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", lavis_state_dict("2", trained, config), "2")
    assert _run(tmp_path, base_dir, "2") == 0

    out = NanoEmoXForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    assert out.keys() == base.keys()
    overlaid = 0
    for key, value in out.items():
        if _in_modules(key, _PHASE_MODULES["2"]):
            assert torch.equal(value, trained[key]), key
            assert not torch.equal(value, base[key]), key
            overlaid += 1
        else:  # towers and the language model come from the base folder
            assert torch.equal(value, base[key]), key
    assert overlaid > 100
    assert (tmp_path / "out" / "special_tokens_map.json").exists()


def test_lavis_phase1_1_leaves_untrained_face_pooler_alone(tmp_path, lavis_setup, caplog):
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("1.1", trained, config)
    assert "facial_encoder.query" in state
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "1.1")
    with caplog.at_level(logging.WARNING):
        assert _run(tmp_path, base_dir, "1.1") == 0
    assert "facial_encoder.query -> model.face_head.queries" in caplog.text

    out = NanoEmoXForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    for key, value in out.items():
        expected = trained if _in_modules(key, _PHASE_MODULES["1.1"]) else base
        assert torch.equal(value, expected[key]), key


def test_lavis_phase3_merges_lora(tmp_path, lavis_setup):
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("3", trained, config)
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "3")
    assert _run(tmp_path, base_dir, "3") == 0

    out = NanoEmoXForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    merged = 0
    for key, value in out.items():
        match = re.fullmatch(r"model\.language_model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+_proj)\.weight", key)
        if match:
            prefix = "llama_model.base_model.model.model.layers.{}.{}.{}.".format(*match.groups())
            lora_a, lora_b = state[prefix + "lora_A.default.weight"], state[prefix + "lora_B.default.weight"]
            expected = base[key] + (lora_b @ lora_a) * (LORA_ALPHA / LORA_RANK)
            assert torch.equal(value, expected), key
            merged += 1
        elif _in_modules(key, _PHASE_MODULES["3"]):
            assert torch.equal(value, trained[key]), key
        else:
            assert torch.equal(value, base[key]), key
    assert merged == 7 * config.text_config.num_hidden_layers


def test_lavis_phase3_writes_peft_adapter(tmp_path, lavis_setup):
    peft = pytest.importorskip("peft")
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("3", trained, config)
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "3")
    assert _run(tmp_path, base_dir, "3", "--lora", "adapter") == 0

    model = NanoEmoXForConditionalGeneration.from_pretrained(tmp_path / "out")
    for key, value in model.state_dict().items():  # nothing merged
        expected = trained if _in_modules(key, _PHASE_MODULES["3"]) else base
        assert torch.equal(value, expected[key]), key

    adapter_dir = tmp_path / "out" / "lora_adapter"
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (LORA_RANK, LORA_ALPHA)
    assert len(adapter_config["target_modules"]) == 7 * config.text_config.num_hidden_layers
    assert all(name.startswith("model.language_model.layers.") for name in adapter_config["target_modules"])
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    key = "base_model.model.model.language_model.layers.1.mlp.down_proj.lora_B.weight"
    assert torch.equal(
        tensors[key], state["llama_model.base_model.model.model.layers.1.mlp.down_proj.lora_B.default.weight"]
    )

    merged = peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().state_dict()
    weight = "model.language_model.layers.0.self_attn.q_proj.weight"
    prefix = "llama_model.base_model.model.model.layers.0.self_attn.q_proj."
    expected = base[weight] + (state[prefix + "lora_B.default.weight"] @ state[prefix + "lora_A.default.weight"]) * (
        LORA_ALPHA / LORA_RANK
    )
    torch.testing.assert_close(merged[weight], expected)


def test_lavis_unknown_key_fails(tmp_path, lavis_setup, caplog):
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("2", trained, config)
    state["multi_Qformer.bert.embeddings.LayerNorm.weight"] = torch.ones(32)
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "2")
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, base_dir, "2") != 0
    assert "multi_Qformer.bert.embeddings.LayerNorm.weight" in caplog.text
    assert not (tmp_path / "out").exists()


def test_lavis_missing_key_fails(tmp_path, lavis_setup, caplog):
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("2", trained, config)
    del state["multi_multiscale_fusion.ffns.1.4.bias"]
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "2")
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, base_dir, "2") != 0
    assert "model.fusion_encoder.experts.1.fc2.bias" in caplog.text


def test_lavis_phase3_missing_lora_fails(lavis_setup):
    config, _, _, trained = lavis_setup
    state = lavis_state_dict("3", trained, config)
    del state["llama_model.base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight"]
    with pytest.raises(ValueError, match=r"model\.language_model\.layers\.0\.mlp\.up_proj\.lora_A\.weight"):
        lavis.convert_lavis_state_dict(state, "3", config)


def test_lavis_strict_checks(lavis_setup):
    config, _, _, trained = lavis_setup
    state = lavis_state_dict("2", trained, config)

    wrong_shape = dict(state, video_query_tokens=torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match=r"model\.video_head\.query_tokens: the base model has shape \(1, 8, 32\)"):
        lavis.convert_lavis_state_dict(wrong_shape, "2", config)

    trained_tower = dict(state, **{"visual_encoder.model.vision_model.post_layernorm.weight": torch.ones(32)})
    with pytest.raises(ValueError, match="floating-point tensor of a frozen tower"):
        lavis.convert_lavis_state_dict(trained_tower, "2", config)

    with pytest.raises(ValueError, match=r"that is phase 1\.2"):
        lavis.convert_lavis_state_dict(state, "2", config, checkpoint_config=_authors_config("1.2"))

    other_variant = _authors_config("2")
    other_variant["model"]["multi_fusion_type"] = "densemoe"
    with pytest.raises(ValueError, match="multi_fusion_type='densemoe'"):
        lavis.convert_lavis_state_dict(state, "2", config, checkpoint_config=other_variant)

    with pytest.raises(ValueError, match="contradicts"):
        lavis.resolve_lora_alpha(_authors_config("3"), 32)
    assert lavis.resolve_lora_alpha(None, None) == 32


def test_lavis_phase_sets_follow_authors_flags():
    assert {phase: sorted(modules) for phase, modules in lavis.PHASE_MODULES.items()} == {
        "1.1": sorted(_PHASE_MODULES["1.1"]),
        "1.2": sorted(_PHASE_MODULES["1.2"]),
        "2": sorted(_PHASE_MODULES["2"]),
        "3": sorted(_PHASE_MODULES["3"] + [lavis.LORA]),
    }
    for phase in lavis.PHASES:
        assert lavis.trainable_modules(_authors_config(phase)["model"]) == lavis.PHASE_MODULES[phase]


def test_lavis_unsafe_config_is_refused_with_an_explanation(tmp_path, lavis_setup, caplog):
    config, base_dir, base, trained = lavis_setup
    state = lavis_state_dict("2", trained, config)
    # An arbitrary Python object in `config`: weights_only=True must refuse it, and the converter must say why.
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "2", config=argparse.Namespace(lora_alpha=32))
    with caplog.at_level(logging.ERROR):
        assert _run(tmp_path, base_dir, "2") != 0
    assert "weights_only=True" in caplog.text
    assert "model_only.pth" in caplog.text


def test_lavis_lora_shapes_are_checked(lavis_setup):
    config, _, _, trained = lavis_setup
    state = lavis_state_dict("3", trained, config)
    key = "llama_model.base_model.model.model.layers.1.self_attn.k_proj.lora_B.default.weight"
    state[key] = state[key][:, :2]  # rank 2 against A's rank 4
    with pytest.raises(ValueError, match=r"model\.language_model\.layers\.1\.self_attn\.k_proj: LoRA A \(4, 64\)"):
        lavis.convert_lavis_state_dict(state, "3", config)


def test_lavis_phase3_end_to_end_loads_strictly_renders_authors_prompts_and_generates(tmp_path, tiny):
    """Issue 12 item 6: a synthetic authors'-format phase-3 checkpoint (their key names, PEFT LoRA names
    `llama_model.base_model.model.model.layers.{i}.….lora_{A,B}.default.weight`, dead modules, buffers, optimizer,
    scaler and config as `runners/runner_base.py::_save_checkpoint` writes them) → converter → a folder that loads
    strictly, selects the authors' prompt style by itself, renders their prompt and generates."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    model, processor = tiny
    base_dir = tmp_path / "base"
    model.save_pretrained(base_dir)
    processor.save_pretrained(base_dir)
    generator = torch.Generator().manual_seed(3)
    trained = {k: v + 0.1 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
               for k, v in model.state_dict().items()}  # fmt: skip
    state = lavis_state_dict("3", trained, model.config)
    for key in [k for k in state if "lora_B" in k]:
        state[key] = state[key] * 0.01  # a trained LoRA is a small update
    assert any(k.startswith("llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A") for k in state)
    save_lavis_checkpoint(tmp_path / "checkpoint.pth", state, "3")
    assert _run(tmp_path, base_dir, "3") == 0
    out_dir = tmp_path / "out"

    config = json.loads((out_dir / "processor_config.json").read_text())
    assert config["prompt_style"] == "authors"
    converted, info = NanoEmoXForConditionalGeneration.from_pretrained(out_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    assert torch.equal(
        converted.state_dict()["model.fusion_projector.weight"], trained["model.fusion_projector.weight"]
    )
    remote = AutoModelForCausalLM.from_pretrained(out_dir, trust_remote_code=True).eval()
    loaded = AutoProcessor.from_pretrained(out_dir, trust_remote_code=True)
    assert loaded.prompt_style == "authors" and loaded.setting("frame_resize") == "squash"
    frames = (np.random.default_rng(0).random((8, 40, 72, 3)) * 255).astype(np.uint8)
    wave = (np.sin(np.arange(32000) / 7).astype(np.float32), 16000)
    messages = loaded.build_task_messages("ovmer", text="What a day.", video=frames, audio=wave)
    prompt = loaded.apply_chat_template(messages)
    assert prompt.startswith("<|im_start|>###Human: The audio and video merged info is: <Multi><|emox_fusion|>")
    assert prompt.endswith(
        "[Recogn_OV] Please recognize all possible emotional states of the character. ###Assistant: "
    )
    inputs = loaded.apply_chat_template(messages, tokenize=True, return_dict=True)
    with torch.no_grad():
        output = remote.generate(**inputs, max_new_tokens=4, do_sample=False, **loaded.generation_kwargs())
    assert output.shape[1] > inputs["input_ids"].shape[1]
    assert isinstance(loaded.batch_decode(output[:, inputs["input_ids"].shape[1] :])[0], str)

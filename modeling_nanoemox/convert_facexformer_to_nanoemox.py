# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Convert FaceXFormer's released checkpoint into a [`NanoEmoXFaceEncoder`] folder.

FaceXFormer (Narayan et al., github.com/Kartik-3004/facexformer) releases `model.pt`, a dict whose
`state_dict_backbone` entry holds the whole FaceXFormer model. Nano-EmoX keeps only its encoder:

    FaceXFormer name                              NanoEmoXFaceEncoder name
    backbone.0.*   torchvision Swin `features`    backbone.embeddings.* / backbone.encoder.layers.*   (transformers SwinModel)
    backbone.1.*   final LayerNorm                backbone.layernorm.*
    linear_c.{i}.proj.*                           stage_projections.{i}.*
    linear_fuse.weight                            fuse.weight

Inside torchvision's `features` Sequential, index 0 is the patch embedding (Conv2d, Permute, LayerNorm), the odd
indices 1, 3, 5, 7 are the stages (lists of Swin blocks) and the even indices 2, 4, 6 are the patch-merging layers
between them. transformers attaches the merging that follows stage `s` to stage `s` (`encoder.layers.{s}.downsample`).
torchvision fuses q, k and v into one `attn.qkv` Linear; transformers has three, so the fused weight and bias are
split in q, k, v order.

FaceXFormer's task decoder (`face_decoder.*`) and the random positional encoding that only feeds it (`pe_layer.*`)
are dropped through the explicit list `DROPPED_PREFIXES`; any other key the mapping does not know is an error, as is
any weight of the encoder that the checkpoint lacks.

Usage:

    python -m modeling_nanoemox.convert_facexformer_to_nanoemox --checkpoint model.pt --output_dir facexformer-nanoemox

The Swin size is read from the checkpoint's shapes (image size defaults to 224, FaceXFormer's); `--config` gives a
`NanoEmoXFaceConfig` JSON file (or a folder holding `config.json`) instead.
"""

import argparse
import pickle
import re
import sys
from pathlib import Path

import torch
from transformers.utils import logging

from .configuration_nanoemox import SWIN_B, NanoEmoXFaceConfig
from .modeling_nanoemox import NanoEmoXFaceEncoder

logger = logging.get_logger(__name__)

# FaceXFormer modules that are not part of its encoder. Listed one by one (not as a bare `face_decoder.`) so that a
# checkpoint of some other FaceXFormer variant fails loudly instead of losing weights silently.
DROPPED_PREFIXES = (
    # PositionEmbeddingRandom buffer: the decoder's positional encoding of the fused map.
    "pe_layer.positional_encoding_gaussian_matrix",
    # FaceDecoder: per-task query tokens (landmarks, head pose, attributes, visibility, age, gender, race, 11 masks).
    "face_decoder.landmarks_token.",
    "face_decoder.pose_token.",
    "face_decoder.attribute_token.",
    "face_decoder.visibility_token.",
    "face_decoder.age_token.",
    "face_decoder.gender_token.",
    "face_decoder.race_token.",
    "face_decoder.mask_tokens.",
    # FaceDecoder: the two-way transformer between task tokens and the fused map.
    "face_decoder.transformer.",
    # FaceDecoder: the segmentation upsampler and hypernetwork.
    "face_decoder.output_upscaling.",
    "face_decoder.output_hypernetwork_mlps.",
    # FaceDecoder: the task heads.
    "face_decoder.landmarks_prediction_head.",
    "face_decoder.pose_prediction_head.",
    "face_decoder.attribute_prediction_head.",
    "face_decoder.visibility_prediction_head.",
    "face_decoder.age_prediction_head.",
    "face_decoder.gender_prediction_head.",
    "face_decoder.race_prediction_head.",
)

# torchvision block parameter → transformers SwinLayer parameter. transformers renamed Swin's attention and MLP
# modules in v5 (`attention.self.query` → `attention.q_proj`, …); the first name the target model has is used, so the
# converter follows whichever transformers version is installed.
_BLOCK_NAMES = {
    "norm1": ("layernorm_before",),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "attn.relative_position_bias_table": (
        "attention.relative_position_bias.relative_position_bias_table",
        "attention.self.relative_position_bias_table",
    ),
    "norm2": ("layernorm_after",),
    "mlp.0": ("mlp.fc1", "intermediate.dense"),
    "mlp.3": ("mlp.fc2", "output.dense"),
}
_QKV_NAMES = (
    ("attention.q_proj", "attention.self.query"),
    ("attention.k_proj", "attention.self.key"),
    ("attention.v_proj", "attention.self.value"),
)
_INDEX_NAMES = (
    "attention.relative_position_bias.relative_position_index",
    "attention.self.relative_position_index",
)

# features[0] = Sequential(Conv2d, Permute, LayerNorm)
_EMBEDDING = re.compile(r"backbone\.0\.0\.(0|2)\.(weight|bias)")
_EMBEDDING_NAMES = {"0": "backbone.embeddings.patch_embeddings.projection", "2": "backbone.embeddings.norm"}
_BLOCK_MODULE = re.compile(
    r"backbone\.0\.(\d+)\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.0|mlp\.3)\.(weight|bias)"
)
_BLOCK_TENSOR = re.compile(r"backbone\.0\.(\d+)\.(\d+)\.attn\.(relative_position_bias_table|relative_position_index)")
_MERGING = re.compile(r"backbone\.0\.(\d+)\.(reduction\.weight|norm\.weight|norm\.bias)")
_FINAL_NORM = re.compile(r"backbone\.1\.(weight|bias)")
_HEAD = re.compile(r"linear_c\.(\d+)\.proj\.(weight|bias)")


def infer_face_config(state_dict: dict[str, torch.Tensor], image_size: int = 224) -> NanoEmoXFaceConfig:
    """
    Reads the Swin size (embedding width, patch size, depths, heads, window, MLP ratio) and the head width from a
    FaceXFormer state dict. The image size cannot be read from weights and is given.

    Raises:
        ValueError: when the state dict does not look like a FaceXFormer encoder.
    """
    try:
        patch_weight = state_dict["backbone.0.0.0.weight"]  # (embed_dim, channels, patch, patch)
        head_weight = state_dict["linear_c.0.proj.weight"]  # (hidden, embed_dim)
    except KeyError as error:
        raise ValueError(
            f"Cannot infer the Swin size: the checkpoint has no {error.args[0]!r}. Expected FaceXFormer's "
            "`state_dict_backbone` (keys `backbone.0.*`, `backbone.1.*`, `linear_c.*`, `linear_fuse.weight`); pass "
            "`--config` to give the configuration explicitly."
        ) from None
    embed_dim, num_channels, patch_size = patch_weight.shape[0], patch_weight.shape[1], patch_weight.shape[2]
    stage_blocks: dict[int, set[int]] = {}
    for key in state_dict:
        match = re.match(r"backbone\.0\.(\d+)\.(\d+)\.norm1\.weight$", key)
        if match and int(match.group(1)) % 2 == 1:
            stage_blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not stage_blocks or sorted(stage_blocks) != list(range(1, 2 * len(stage_blocks), 2)):
        raise ValueError(
            "Cannot infer the Swin depths: expected stages at torchvision feature indices 1, 3, 5, …, got "
            f"{sorted(stage_blocks)}."
        )
    depths, num_heads, window_sizes, mlp_ratios = [], [], [], []
    for stage, index in enumerate(sorted(stage_blocks)):
        blocks = sorted(stage_blocks[index])
        if blocks != list(range(len(blocks))):
            raise ValueError(f"Stage {stage} (backbone.0.{index}) has non-contiguous blocks {blocks}.")
        depths.append(len(blocks))
        try:
            table = state_dict[f"backbone.0.{index}.0.attn.relative_position_bias_table"]  # ((2w-1)², heads)
            mlp_width = state_dict[f"backbone.0.{index}.0.mlp.0.weight"].shape[0]
        except KeyError as error:
            raise ValueError(f"Cannot infer the Swin size: the checkpoint has no {error.args[0]!r}.") from None
        num_heads.append(table.shape[1])
        window_sizes.append((round(table.shape[0] ** 0.5) + 1) // 2)
        mlp_ratios.append(mlp_width / (embed_dim * 2**stage))
    if len(set(window_sizes)) != 1 or len(set(mlp_ratios)) != 1:
        raise ValueError(
            f"Stages disagree on the window size {window_sizes} or MLP ratio {mlp_ratios}; a Swin has one of each."
        )
    backbone_config = {
        **SWIN_B,
        "image_size": image_size,
        "patch_size": patch_size,
        "num_channels": num_channels,
        "embed_dim": embed_dim,
        "depths": depths,
        "num_heads": num_heads,
        "window_size": window_sizes[0],
        "mlp_ratio": mlp_ratios[0],
        "qkv_bias": f"backbone.0.{min(stage_blocks)}.0.attn.qkv.bias" in state_dict,
    }
    if head_weight.shape[1] != embed_dim:
        raise ValueError(f"linear_c.0 expects width {head_weight.shape[1]}, but the first Swin stage has {embed_dim}.")
    return NanoEmoXFaceConfig(backbone_config=backbone_config, hidden_size=head_weight.shape[0])


def _pick(target_names: set[str], prefix: str, candidates: tuple[str, ...]) -> str:
    # The first candidate the target model has; a block the model lacks keeps the current name and is then reported
    # as having no counterpart in NanoEmoXFaceEncoder.
    for candidate in candidates:
        if prefix + candidate in target_names or prefix + candidate + ".weight" in target_names:
            return prefix + candidate
    return prefix + candidates[0]


def _convert(
    state_dict: dict[str, torch.Tensor], model: NanoEmoXFaceEncoder
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Maps the keys; returns (converted, unexpected source keys, problems). Missing keys are checked by the caller."""
    target_state = model.state_dict()
    target_names = {name.rsplit(".", 1)[0] for name in target_state} | set(target_state)
    # Non-persistent buffers are not in the state dict but are what the target model actually uses.
    buffers = dict(model.named_buffers())
    converted: dict[str, torch.Tensor] = {}
    unexpected, problems = [], []

    def put(target: str, value: torch.Tensor, source: str) -> None:
        if target in converted:
            problems.append(f"{source}: maps onto {target}, which another key already provides")
        converted[target] = value

    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        if match := _EMBEDDING.fullmatch(key):
            put(f"{_EMBEDDING_NAMES[match.group(1)]}.{match.group(2)}", value, key)
        elif (match := _BLOCK_MODULE.fullmatch(key) or _BLOCK_TENSOR.fullmatch(key)) and int(match.group(1)) % 2:
            # Odd feature index 2s + 1 is stage s.
            prefix = f"backbone.encoder.layers.{int(match.group(1)) // 2}.blocks.{match.group(2)}."
            name = match.group(3)
            if name == "attn.qkv":
                # torchvision's fused projection stacks q, k, v along the output dimension.
                if value.shape[0] % 3:
                    problems.append(f"{key}: fused qkv of shape {tuple(value.shape)} is not divisible by 3")
                    continue
                for part, candidates in zip(value.chunk(3, dim=0), _QKV_NAMES):
                    put(f"{_pick(target_names, prefix, candidates)}.{match.group(4)}", part.clone(), key)
            elif name == "relative_position_index":
                # The index is a pure function of the window size. transformers 5.x recomputes it in a non-persistent
                # buffer (older versions saved it); either way it must equal torchvision's, or the learned bias table
                # would be read in a different order.
                target = _pick(set(buffers) | target_names, prefix, _INDEX_NAMES)
                if target not in buffers:
                    problems.append(f"{key}: the target model has no relative position index at {target}")
                elif not torch.equal(buffers[target].flatten().to(value.dtype), value.flatten()):
                    problems.append(f"{key}: relative position index differs from transformers' {target}")
                elif target in target_state:  # persistent in this transformers version: write it in its shape
                    put(target, value.reshape(target_state[target].shape), key)
            elif name == "relative_position_bias_table":
                put(_pick(target_names, prefix, _BLOCK_NAMES["attn." + name]), value, key)
            else:
                put(f"{_pick(target_names, prefix, _BLOCK_NAMES[name])}.{match.group(4)}", value, key)
        elif match := _MERGING.fullmatch(key):
            index = int(match.group(1))
            if index % 2 or index == 0:
                unexpected.append(key)
                continue
            # Even feature index 2s + 2 is the merging after stage s: transformers' `layers.{s}.downsample`.
            put(f"backbone.encoder.layers.{index // 2 - 1}.downsample.{match.group(2)}", value, key)
        elif match := _FINAL_NORM.fullmatch(key):
            put(f"backbone.layernorm.{match.group(1)}", value, key)
        elif match := _HEAD.fullmatch(key):
            put(f"stage_projections.{match.group(1)}.{match.group(2)}", value, key)
        elif key == "linear_fuse.weight":
            put("fuse.weight", value, key)
        else:
            unexpected.append(key)

    for target, value in converted.items():
        if target in target_state and target_state[target].shape != value.shape:
            problems.append(f"{target}: expected shape {tuple(target_state[target].shape)}, got {tuple(value.shape)}")
    unexpected += [
        f"{target} (no such weight in NanoEmoXFaceEncoder)" for target in converted if target not in target_state
    ]
    return converted, unexpected, problems


def _check(converted: dict, target_keys, unexpected: list[str], problems: list[str], what: str) -> None:
    missing = sorted(set(target_keys) - set(converted))
    if missing or unexpected or problems:
        lines = [f"Cannot convert the {what} strictly:"]
        lines += [f"  missing (not in the checkpoint): {key}" for key in missing]
        lines += [f"  unexpected (unknown to the converter): {key}" for key in sorted(unexpected)]
        lines += [f"  mismatch: {problem}" for problem in problems]
        lines.append(f"({len(missing)} missing, {len(unexpected)} unexpected, {len(problems)} mismatched)")
        raise ValueError("\n".join(lines))


def convert_facexformer_state_dict(
    state_dict: dict[str, torch.Tensor], config: NanoEmoXFaceConfig | None = None
) -> dict[str, torch.Tensor]:
    """
    Renames FaceXFormer's `state_dict_backbone` into [`NanoEmoXFaceEncoder`]'s state dict.

    Args:
        state_dict: FaceXFormer's state dict (`torch.load("model.pt")["state_dict_backbone"]`).
        config: the face encoder's configuration; inferred from the shapes (at 224 px) when omitted.

    Returns:
        A state dict that `NanoEmoXFaceEncoder(config).load_state_dict(..., strict=True)` accepts.

    Raises:
        ValueError: listing every missing, unexpected or mis-shaped key.
    """
    if config is None:
        config = infer_face_config(state_dict)
    model = NanoEmoXFaceEncoder(config)
    converted, unexpected, problems = _convert(state_dict, model)
    _check(converted, model.state_dict(), unexpected, problems, "FaceXFormer checkpoint")
    return converted


def load_facexformer_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Loads `model.pt` safely (`weights_only=True`) and returns its `state_dict_backbone` (or a bare state dict)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects that `torch.load(weights_only=True)` refuses to unpickle ({error}). This "
            "converter never unpickles arbitrary objects; re-save only the weights from a trusted environment: "
            "`torch.save({'state_dict_backbone': torch.load(path, weights_only=False)['state_dict_backbone']}, "
            "'model_weights.pt')`."
        ) from None
    if isinstance(checkpoint, dict) and "state_dict_backbone" in checkpoint:
        checkpoint = checkpoint["state_dict_backbone"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(
            f"{path}: expected a dict with `state_dict_backbone` (FaceXFormer's model.pt) or a state dict, got {found}."
        )
    return checkpoint


def _load_config(path: str) -> NanoEmoXFaceConfig:
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(
            f"--config: expected a NanoEmoXFaceConfig JSON file or a folder with config.json, got {path}."
        )
    return NanoEmoXFaceConfig.from_json_file(str(path))


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status (0 on success, 1 on any conversion error)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="FaceXFormer's model.pt.")
    parser.add_argument("--output_dir", required=True, help="Folder to write the NanoEmoXFaceEncoder into.")
    parser.add_argument(
        "--config", default=None, help="NanoEmoXFaceConfig JSON (or folder); default: inferred from the checkpoint."
    )
    parser.add_argument("--image_size", type=int, default=224, help="Input size when inferring the config.")
    args = parser.parse_args(argv)

    try:
        state_dict = load_facexformer_checkpoint(args.checkpoint)
        config = _load_config(args.config) if args.config else infer_face_config(state_dict, args.image_size)
        model = NanoEmoXFaceEncoder(config)
        converted, unexpected, problems = _convert(state_dict, model)
        _check(converted, model.state_dict(), unexpected, problems, f"FaceXFormer checkpoint {args.checkpoint}")
    except (ValueError, TypeError, OSError) as error:
        logger.error("%s", error)
        return 1
    model.load_state_dict(converted, strict=True)
    model.save_pretrained(args.output_dir)
    dropped = sum(key.startswith(DROPPED_PREFIXES) for key in state_dict)
    logger.info("Converted %d tensors (dropped %d decoder tensors) into %s.", len(converted), dropped, args.output_dir)
    return 0


if __name__ == "__main__":
    import logging as std_logging

    std_logging.basicConfig(level=std_logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())

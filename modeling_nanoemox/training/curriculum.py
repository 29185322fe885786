# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The pieces of one P2E phase: strict loading, freezing, LoRA, the trainer, and saving complete folders.

Phase chaining (DESIGN §4): 1.1 and 1.2 start from the same model; 2 starts from 1.2's folder with 1.1's audio head
copied in; 3 starts from 2. Every phase writes `final/` (a complete model + processor folder) and the next phase
loads it strictly: a missing, unexpected or mis-shaped weight is an error (the authors overlay partial checkpoints
with `strict=False`; we don't).
"""

import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import torch
from transformers.utils import logging
from trl import SFTTrainer

from ..modeling_nanoemox import NanoEmoXForConditionalGeneration
from ..phases import PHASES, Phase
from .sampler import MixtureSampler

logger = logging.get_logger(__name__)


def load_strict(path, **kwargs) -> NanoEmoXForConditionalGeneration:
    """Loads a Nano-EmoX folder, raising `ValueError` if any weight is missing, unexpected or of another shape."""
    model, info = NanoEmoXForConditionalGeneration.from_pretrained(path, output_loading_info=True, **kwargs)
    problems = {kind: sorted(keys) for kind, keys in info.items() if keys and kind != "error_msgs"}
    if problems:
        raise ValueError(f"{path} does not match the Nano-EmoX architecture exactly: {problems}")
    return model


def copy_head_weights(target, source, prefixes: tuple[str, ...]) -> int:
    """Copies every parameter whose name starts with one of `prefixes` from `source` into `target` (same
    architecture, both whole on this process); returns how many tensors were copied. For a phase start under a
    sharding engine use [`write_phase_start`], which works on the saved files."""
    source_state = {name: p for name, p in source.named_parameters() if name.startswith(prefixes)}
    if not source_state:
        raise ValueError(f"The source model has no parameters under {prefixes}.")
    target_parameters = dict(target.named_parameters())
    with torch.no_grad():
        for name, value in source_state.items():
            if target_parameters[name].shape != value.shape:
                raise ValueError(
                    f"{name}: shapes differ ({tuple(value.shape)} vs {tuple(target_parameters[name].shape)})."
                )
            target_parameters[name].copy_(value)
    return len(source_state)


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = Path(folder)
    index = next(iter(folder.glob("*.safetensors.index.json")), None)
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index else ["model.safetensors"]
    state = {}
    for name in files:
        state.update(load_file(folder / name))
    return state


def write_phase_start(base, heads, prefixes: tuple[str, ...], target) -> int:
    """
    Writes `target`: the folder `base` (model + processor) with the tensors under `prefixes` taken from the folder
    `heads` (phase 2's start: phase 1.2 with phase 1.1's audio head). Works on the safetensors files, never on a live
    model, so it is right under any engine (a ZeRO-3 or FSDP rank does not hold whole parameters); the recipe calls it
    on the main process and every rank then loads `target`. Atomic (see `save_folder_atomically`). Returns how many
    tensors came from `heads`.
    """
    from huggingface_hub import save_torch_state_dict

    base, heads = Path(base), Path(heads)
    state, donor = _read_weights(base), _read_weights(heads)
    copied = 0
    for name, tensor in donor.items():
        if not name.startswith(prefixes):
            continue
        if name not in state or state[name].shape != tensor.shape:
            found = None if name not in state else tuple(state[name].shape)
            raise ValueError(f"{name}: {heads} has {tuple(tensor.shape)}, {base} has {found}.")
        state[name] = tensor
        copied += 1
    if not copied:
        raise ValueError(f"{heads} has no weights under {prefixes}.")

    def write(folder: Path):
        folder.mkdir(parents=True)
        for path in base.iterdir():
            if path.is_file() and not path.name.endswith((".safetensors", ".safetensors.index.json")):
                shutil.copy2(path, folder / path.name)
        save_torch_state_dict(state, folder, max_shard_size="5GB", metadata={"format": "pt"})

    save_folder_atomically(Path(target), write)
    return copied


def save_phase(trainer, processor, phase_dir: Path, base=None) -> Path:
    """
    Writes `phase_dir/final` (a complete model + processor folder) through the Trainer: `trainer.save_model` gathers
    the weights on every rank (FSDP: a full state dict, switched to for this save if the run checkpoints sharded;
    ZeRO-3: the 16-bit gather) and the main process writes them. Collective: every rank calls it, and every rank
    returns only when the folder is complete, so the next phase can load it anywhere.

    A PEFT model is saved as `phase_dir/adapter` (LoRA + the `modules_to_save` heads, the Trainer's PEFT save), and
    `final` is the folder `base` (the phase's start) with that adapter merged, built on the main process from the
    files — never from sharded parameters. Folders are written as `<name>.partial` and renamed when complete.
    """
    from . import distributed

    phase_dir = Path(phase_dir)
    final = phase_dir / "final"
    model = trainer.accelerator.unwrap_model(trainer.model)
    is_peft = hasattr(model, "merge_and_unload")
    written = phase_dir / "adapter" if is_peft else final
    partial = written.with_name(written.name + ".partial")
    distributed.on_main_process(lambda: shutil.rmtree(partial, ignore_errors=True), f"Clearing {partial}")
    if trainer.is_fsdp_enabled:
        # transformers 5.24's save under FSDP2 (`Trainer._save` → `save_pretrained(state_dict=…)` on the main process)
        # touches the model's sharded DTensor parameters there, a collective only one rank joins (gloo aborts with
        # "collective mismatch"; NCCL would hang). So: the accelerator gathers the full state dict on every rank,
        # then the main process loads it into an unsharded copy of the phase's start and saves that.
        state = _full_state_dict(trainer.model)
        distributed.on_main_process(
            lambda: _save_unsharded(model, state, base, partial, processor), f"Writing {partial}"
        )
    else:
        trainer.save_model(str(partial))  # DDP / ZeRO (16-bit gather): the Trainer's own save, main writes
    distributed.barrier()

    def finish():
        (partial / "training_args.bin").unlink(missing_ok=True)  # the run's record is in its checkpoints
        if is_peft:
            if not weights_intact(partial):
                raise RuntimeError(f"{partial}: the Trainer saved no adapter weights.")
            _swap_in(partial, written)
            if base is None:
                raise ValueError("save_phase: a PEFT phase needs `base`, the folder it started from, to merge into.")
            merge_adapter(base, written, final, processor)
        else:
            if not saved_model_complete(partial):
                raise RuntimeError(f"{partial}: the Trainer's save is incomplete.")
            _swap_in(partial, final)

    distributed.on_main_process(finish, f"Saving {final}")
    return final


def _full_state_dict(model) -> dict:
    """The full (unsharded) state dict of an FSDP2 model, on every rank: torch's `get_model_state_dict`, then any
    parameter it leaves as a DTensor (those outside the wrapped units, on CPU ranks) gathered; collective, in the
    same key order everywhere."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    for key in sorted(state):
        if isinstance(state[key], DTensor):
            state[key] = state[key].full_tensor()
        state[key] = state[key].detach().cpu()
    return state


def _save_unsharded(model, state: dict, base, folder: Path, processor) -> None:
    """Main process: `state` (a full state dict of `model`, possibly PEFT-wrapped) in an unsharded copy of `base`,
    saved to `folder` with the processor (a PEFT model saves its adapter)."""
    if base is None:
        raise ValueError("save_phase under FSDP needs `base`, the folder the phase started from.")
    shadow = load_strict(base)
    if hasattr(model, "peft_config"):
        from peft import get_peft_model

        shadow = get_peft_model(shadow, model.peft_config["default"])
    missing, unexpected = shadow.load_state_dict(state, strict=False)
    tied = set(getattr(shadow, "all_tied_weights_keys", None) or ())
    missing = [key for key in missing if key not in tied and not key.endswith("lm_head.weight")]
    if missing or unexpected:
        raise ValueError(
            f"The gathered state dict does not match {base}: missing {missing[:5]}, unexpected {unexpected[:5]}."
        )
    shadow.save_pretrained(folder)
    processor.save_pretrained(folder)


def merge_adapter(base, adapter, target, processor=None) -> Path:
    """`target` = the model folder `base` with the PEFT adapter folder `adapter` merged into its weights (LoRA deltas
    added, `modules_to_save` copied in), saved with `processor` (default: `base`'s)."""
    from peft import PeftModel
    from transformers import AutoProcessor

    model = PeftModel.from_pretrained(load_strict(base), str(adapter)).merge_and_unload()
    processor = processor if processor is not None else AutoProcessor.from_pretrained(base)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return save_folder_atomically(
        Path(target), lambda folder: (model.save_pretrained(folder), processor.save_pretrained(folder))
    )


def save_folder_atomically(target: Path, write) -> Path:
    """Calls `write(folder)` on `target.partial`, then swaps it in for `target` (a rename: all or nothing)."""
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    write(partial)
    return _swap_in(partial, target)


def _swap_in(partial: Path, target: Path) -> Path:
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return target


# ---- what survives a kill ----------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors")
PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def safetensors_intact(path: Path) -> bool:
    """Whether a safetensors file is whole: its header parses and the tensors it lists end exactly at the file's end
    (a save killed half-way leaves a shorter file)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            if header_length <= 0 or 8 + header_length > size:
                return False
            header = json.loads(handle.read(header_length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError):
        return False
    ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    return 8 + header_length + max(ends, default=0) == size


def _json_file_intact(path: Path) -> bool:
    try:
        json.loads(Path(path).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def weights_intact(folder: Path) -> bool:
    """Whether `folder` holds complete weights: a single safetensors file or every shard of an index."""
    folder = Path(folder)
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError):
            return False
        return bool(shards) and all(safetensors_intact(folder / shard) for shard in shards)
    present = [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]
    return bool(present) and all(safetensors_intact(path) for path in present)


def saved_model_complete(folder: Path, need_processor: bool = True) -> bool:
    """A model folder a later phase can load: config, processor (when asked) and whole weights."""
    folder = Path(folder)
    if not folder.is_dir() or not _json_file_intact(folder / "config.json"):
        return False
    if need_processor and not any(_json_file_intact(folder / name) for name in PROCESSOR_FILES):
        return False
    return weights_intact(folder)


def checkpoint_intact(folder: Path) -> bool:
    """A Trainer checkpoint that can be resumed: `trainer_state.json` parses, the weights are whole and every torch
    file (optimizer, scheduler, RNG state) is a readable zip archive (a truncated one has no central directory)."""
    folder = Path(folder)
    if not _json_file_intact(folder / "trainer_state.json") or not weights_intact(folder):
        return False
    for path in [*folder.glob("*.pt"), *folder.glob("*.pth"), *folder.glob("*.bin")]:
        try:
            with zipfile.ZipFile(path):
                pass
        except (OSError, zipfile.BadZipFile):
            return False
    return True


def latest_intact_checkpoint(phase_dir: Path) -> Path | None:
    """
    The newest checkpoint of `phase_dir` that can be resumed. Newer ones that cannot (killed during their save) are
    renamed `broken-checkpoint-N` (kept for inspection, invisible to the Trainer) with a warning.
    """
    checkpoints = sorted(
        (path for path in Path(phase_dir).glob("checkpoint-*") if path.is_dir() and CHECKPOINT_NAME.match(path.name)),
        key=lambda path: int(CHECKPOINT_NAME.match(path.name).group(1)),
        reverse=True,
    )
    for checkpoint in checkpoints:
        if checkpoint_intact(checkpoint):
            return checkpoint
        aside = checkpoint.with_name("broken-" + checkpoint.name)
        if aside.exists():
            shutil.rmtree(aside)
        checkpoint.rename(aside)
        logger.warning(f"{checkpoint} is incomplete (killed during its save?); set aside as {aside.name}.")
    return None


MEDIA_KEYS = {"video": "pixel_values_videos", "face": "face_pixel_values", "audio": "audio_values"}


def _nanoemox_model(model):
    """The `NanoEmoXModel` inside a (PEFT-wrapped) `NanoEmoXForConditionalGeneration`."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.model


def absent_branches_pass(model, inputs: dict) -> torch.Tensor:
    """
    Runs the branch of every modality a batch lacks on one all-zero item and returns 0 × its output sum: a zero that
    carries those modules into the step.

    Data-parallel training needs every rank to run every trainable module at every step: DDP expects a gradient for
    each trainable parameter, and DeepSpeed ZeRO-3 / FSDP gather each module's weights collectively, so a rank whose
    batch lacks a modality would hang the others. With cached tower features (a feature cache skips the towers on
    every rank) the dummy starts from zero tower features; otherwise the towers run on zero media too.

    Args:
        model: a `NanoEmoXForConditionalGeneration`, possibly wrapped by PEFT (unwrap DDP / accelerate first).
        inputs: the batch the model is trained on (the collator's output).
    """
    inner = _nanoemox_model(model)
    config = inner.config
    tower_features = inputs.get("tower_features") or {}
    present = {m for m, key in MEDIA_KEYS.items() if inputs.get(key) is not None or m in tower_features}
    cached = bool(tower_features)
    device = inner.fusion_projector.weight.device
    vision, audio, face = config.vision_config, config.audio_config, config.face_config
    scales = 1 + config.num_fusion_experts
    zero_towers = {
        "video": lambda: torch.zeros(1, 1, scales, vision.hidden_size, device=device),
        "audio": lambda: torch.zeros(1, 1, scales, audio.hidden_size, device=device),
        "face": lambda: torch.zeros(1, 1, face.hidden_size, device=device),
    }
    run_towers = {
        "video": lambda: inner.get_video_tower_features(
            torch.zeros(1, 1, 3, *(vision.image_size,) * 2, device=device)
        ),
        # 400 samples (25 ms) is the shortest input HuBERT's convolutions accept.
        "audio": lambda: inner.get_audio_tower_features(torch.zeros(1, 1, 400, device=device)),
        "face": lambda: inner.get_face_tower_features(
            torch.zeros(1, 1, 3, *(face.backbone_config.image_size,) * 2, device=device)
        ),
    }
    heads = {
        "video": lambda t: inner.video_head(t[:, :, 0]),
        "audio": lambda t: inner.audio_head(t[:, :, 0]),
        "face": inner.face_head,
    }
    total = torch.zeros((), device=device)
    towers = {}
    for modality in ("video", "audio", "face"):
        if modality in present:
            continue
        towers[modality] = zero_towers[modality]() if cached else run_towers[modality]()
        total = total + heads[modality](towers[modality]).float().sum() * 0.0
    input_ids = inputs.get("input_ids")
    has_fusion = (
        {"video", "audio"} <= present and input_ids is not None and bool((input_ids == config.fusion_token_id).any())
    )
    if not has_fusion:
        video = towers["video"] if "video" in towers else zero_towers["video"]()
        audio = towers["audio"] if "audio" in towers else zero_towers["audio"]()
        embeddings, gates = inner.get_fusion_features(video, audio)
        total = total + (embeddings.float().sum() + gates.float().sum()) * 0.0
    return total


class NanoEmoXTrainer(SFTTrainer):
    """
    `SFTTrainer` drawing batches from the recipe's dataset mixture (see [`MixtureSampler`]).

    Args:
        mixture_weights: sampling weight of each dataset of the mixture; uniform shuffling when omitted.
        run_every_branch: add [`absent_branches_pass`] to each training loss, so that every trainable module takes
            part in every step on every rank. Defaults to on when training on more than one process.
        one_dataset_per_batch: draw every per-device batch from one dataset of the mixture ([`MixtureSampler`]'s
            `batch_size`): the same shares, less padding.
    """

    def __init__(
        self,
        *args,
        mixture_weights: dict[str, float] | None = None,
        run_every_branch: bool | None = None,
        one_dataset_per_batch: bool = False,
        **kwargs,
    ):
        self.mixture_weights = mixture_weights
        self.one_dataset_per_batch = one_dataset_per_batch
        super().__init__(*args, **kwargs)
        self.run_every_branch = self.args.world_size > 1 if run_every_branch is None else run_every_branch

    def create_accelerator_and_postprocess(self) -> None:
        """
        The Trainer's accelerator, with FSDP kept on CPU ranks. accelerate 1.15 turns FSDP on only for GPU-like
        distributed types (`AcceleratorState.__init__`: MULTI_GPU, MULTI_XPU, …); on CPU ranks (MULTI_CPU, gloo) it
        drops the Trainer's FSDP plugin without a word and the run silently trains with DDP. torch's FSDP2
        (`fully_shard`) runs on CPU with gloo, so the smallest change is to put the plugin back (FSDP2 only).
        """
        super().create_accelerator_and_postprocess()
        from accelerate.utils import FullyShardedDataParallelPlugin

        self._cpu_fsdp_plugin = None
        requested = self.args.fsdp_plugin_args
        if requested is None or self.accelerator.device.type != "cpu" or not self.accelerator.num_processes > 1:
            return
        if int(requested.get("fsdp_version", 2)) != 2:
            raise ValueError("FSDP on CPU ranks needs FSDP2: set fsdp_config {'version': 2} (the default).")
        self._cpu_fsdp_plugin = FullyShardedDataParallelPlugin(**requested)
        self._keep_fsdp_on_cpu()
        logger.warning("FSDP2 on CPU ranks (gloo): accelerate would have fallen back to DDP; FSDP kept.")

    def _keep_fsdp_on_cpu(self) -> None:
        from accelerate.utils import DistributedType

        if getattr(self, "_cpu_fsdp_plugin", None) is None:
            return
        state = self.accelerator.state
        state.fsdp_plugin = self._cpu_fsdp_plugin
        state.distributed_type = DistributedType.FSDP
        self.is_fsdp_enabled = True

    def train(self, *args, **kwargs):
        self._keep_fsdp_on_cpu()  # the shared AcceleratorState may have been reset by another phase's arguments
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if not (self.run_every_branch and model.training):
            return result
        absent = absent_branches_pass(self.accelerator.unwrap_model(model), inputs)
        if return_outputs:
            loss, outputs = result
            return loss + absent.to(loss.dtype), outputs
        return result + absent.to(result.dtype)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.mixture_weights:
            return super()._get_train_sampler(train_dataset)
        batch_size = self.args.per_device_train_batch_size if self.one_dataset_per_batch else None
        return MixtureSampler(dataset["dataset"], self.mixture_weights, seed=self.args.seed, batch_size=batch_size)


def phase_by_name(name: str) -> Phase:
    if name not in PHASES:
        raise ValueError(f"Unknown phase {name!r}; expected one of {sorted(PHASES)}.")
    return PHASES[name]

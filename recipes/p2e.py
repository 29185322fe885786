# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""
Perception-to-Empathy (P2E): the four-phase curriculum that trains Nano-EmoX (DESIGN §4), with TRL's SFTTrainer.

    1.1 audio alignment      audio head                                  (from the start model)
    1.2 visual alignment     video head, face head                       (from the start model)
    2   fusion pre-training  every head + fusion encoder                 (from 1.2, with 1.1's audio head copied in)
    3   instruction tuning   every head + fusion encoder + LoRA on the LLM (from 2)

Each phase writes `OUTPUT_DIR/phase_<name>/final` (complete model + processor) and the next phase loads it strictly;
phase 3 with LoRA (the full recipe) also writes its adapter (with the heads) to `phase_3/adapter`, and
`OUTPUT_DIR/final` is the result.

The embedded default generates a small multimodal dataset, trains a tiny model through all four phases on a CPU
(3 min 28 s on an idle 2-core AMD EPYC, measured; README, "Training"), evaluates it on a held-out split and writes
`OUTPUT_DIR/eval_results.json`:

    accelerate launch recipes/p2e.py --output_dir outputs/p2e

The full run (tried on: nothing yet — no GPU was available to this project; sized for 8×80 GB) starts from a model
composed of the released components (`compose_from_components`, importable from `modeling_nanoemox`) and manifests
written by `recipes/prepare_data.py`:

    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/p2e.py --recipe full \\
        --model_name_or_path nanoemox-start --data_root data/manifests --media_root data/media \\
        --output_dir outputs/p2e-full

A quick check that the embedded default starts (every phase stops after two steps, on a smaller generated set):

    accelerate launch recipes/p2e.py --output_dir /tmp/p2e-check --max_steps 2 --num_train_samples 24 \
        --num_test_samples 12

One phase with its YAML, TRL style (any SFTConfig / ModelConfig field can be overridden on the command line):

    accelerate launch recipes/p2e.py --config recipes/configs/full/phase_3.yaml --phase 3 \\
        --output_dir outputs/p2e-full --data_root data/manifests --per_device_train_batch_size 2

Phase 3's LoRA is TRL's `get_peft_config(ModelConfig)`: `lora_r`, `lora_alpha`, `lora_dropout`, `lora_target_modules`
and `lora_modules_to_save` (PEFT's name matching) take effect; left unset, LoRA adapts the LLM's q, k, v, o, gate, up
and down projections only and saves the heads with the adapter (`modeling_nanoemox.phases`).

`--push_to_hub --hub_model_id ORG/NAME` publishes each phase's `final` folder to `ORG/NAME-phase-<name>`, phase 3's
LoRA adapter (with the trained heads as `modules_to_save`) to `ORG/NAME-phase-3-adapter` and the final model to
`ORG/NAME`, with the project's model card (`modeling_nanoemox.hub_nanoemox.push_folder_with_card`). A killed run
resumes from the last checkpoint of the unfinished phase when relaunched with the same command.

Many ranks (README, "Training on many GPUs"): any launcher works (`accelerate launch --config_file
recipes/accelerate/…`, `torchrun`); two CPU ranks with gloo, all four phases:

    python -m torch.distributed.run --nproc_per_node 2 recipes/p2e.py --output_dir OUT --max_steps 6 \
        --num_train_samples 48 --num_test_samples 12 --save_steps 3            # DDP; add --fsdp "full_shard auto_wrap"

The embedded data, the start model, phase 2's start folder, the final copy and the evaluation are made by the main
process while the others wait; the feature cache is built once, sharded over the ranks; each phase is saved through
the Trainer (gathered on every rank, written by the main process) and every rank loads the finished folder.
At start each phase logs world size, per-device batch, accumulation, global batch and the samples it will see
against the authors' (global batch 3); `authors_global_batch: 3` in the full configs rescales `max_steps`,
`warmup_steps` and `save_steps` so that a phase sees the authors' number of samples at any global batch.
"""

import argparse
import collections
import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoProcessor
from transformers.utils import logging
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config, get_quantization_config

from modeling_nanoemox.data import load_manifest
from modeling_nanoemox.data.manifest import ManifestError
from modeling_nanoemox.hub_nanoemox import push_folder_with_card
from modeling_nanoemox.model_card_nanoemox import (
    phase_from_trainer_state,
    read_training_summary,
    write_training_summary,
)
from modeling_nanoemox.phases import AUDIO_HEAD, AUTHORS_GLOBAL_BATCH, HEAD_MODULES, PHASES
from modeling_nanoemox.training import (
    FeatureCache,
    NanoEmoXDataCollator,
    NanoEmoXTrainer,
    apply_lora,
    distributed,
    freeze_for_phase,
    load_strict,
    save_phase,
)
from modeling_nanoemox.training.curriculum import (
    latest_intact_checkpoint,
    save_folder_atomically,
    saved_model_complete,
    write_phase_start,
)

logger = logging.get_logger("p2e")
CONFIG_ROOT = Path(__file__).resolve().parent / "configs"
PHASE_ORDER = ("1.1", "1.2", "2", "3")


@dataclass
class P2EArguments:
    phase: str = field(default="all", metadata={"help": "Phase to run: 1.1, 1.2, 2, 3 or all (in order)."})
    recipe: str = field(
        default="embedded",
        metadata={
            "help": "Config set of `--phase all`: embedded (generated data, CPU) or full from recipes/configs/, or a "
            "folder holding phase_1.1.yaml … phase_3.yaml."
        },
    )
    data_root: str | None = field(
        default=None,
        metadata={"help": "Folder the mixture's manifest paths are relative to. Embedded default: generated data."},
    )
    media_root: str | None = field(
        default=None, metadata={"help": "Folder relative media paths start from (default: each manifest's folder)."}
    )
    on_missing: str = field(
        default="error", metadata={"help": "Samples whose media files are missing: 'error' (stop) or 'skip' (count)."}
    )
    mixture: list[dict] | None = field(
        default=None,
        metadata={
            "help": "Datasets of the phase: a list of {name, manifest, weight[, tasks]}; weights are sampling shares "
            "(`size`: the dataset's number of usable samples, i.e. the entries drawn as one merged dataset), `tasks` "
            "keeps only those tasks of that manifest."
        },
    )
    tasks: list[str] | None = field(default=None, metadata={"help": "Keep only these tasks of the manifests."})
    modalities: list[str] | None = field(
        default=None,
        metadata={
            "help": "Media the phase feeds (among video, face, audio; default all); the others are not read, so a "
            "phase without audio has no audio (not even a video's own track) and no fusion token."
        },
    )
    trainable: list[str] | None = field(
        default=None,
        metadata={
            "help": "Override of the parameter-name prefixes to train. Default: the phase's, defined only in "
            "modeling_nanoemox.phases (the YAML configs do not repeat them)."
        },
    )
    feature_cache: str | None = field(
        default="auto",
        metadata={
            "help": "Folder of the frozen-tower feature cache; 'auto' = OUTPUT_DIR/feature_cache, 'none' = off."
        },
    )
    evaluate: bool = field(
        default=False, metadata={"help": "After phase 3, evaluate OUTPUT_DIR/final on DATA_ROOT/test.jsonl."}
    )
    emotion_wheel: str | None = field(
        default=None,
        metadata={
            "help": "Emotion-wheel folder for the OV-MER / MER-hit-rate metrics of --evaluate (default: "
            "$NANOEMOX_EMOTION_WHEEL; without it OV-MER is scored on exact words)."
        },
    )
    build_feature_cache_only: bool = field(
        default=False,
        metadata={
            "help": "Pre-pass: build the feature cache of every selected phase's samples with the start model's "
            "(frozen, shared) towers, sharded over the ranks, then exit. Run it under plain data parallelism before a "
            "FSDP cpu_ram_efficient_loading / DeepSpeed ZeRO-3 run, whose ranks do not hold whole towers."
        },
    )
    feature_cache_batch_size: int = field(default=8, metadata={"help": "Samples per encoding batch of the cache."})
    authors_global_batch: int = field(
        default=0,
        metadata={
            "help": "When > 0, max_steps, warmup_steps and save_steps are counts at this global batch (the authors': "
            "3) and are rescaled to this run's (world size × per-device batch × accumulation), so the phase sees "
            "the same number of samples. 0: the counts are taken as they are."
        },
    )
    one_dataset_per_batch: bool = field(
        default=False,
        metadata={
            "help": "Draw every per-device batch from one dataset of the mixture (the same shares of samples): a "
            "batch is padded to its own task's longest sample, not to the longest dialogue of any task."
        },
    )
    num_train_samples: int = field(default=420, metadata={"help": "Embedded recipe: generated training samples."})
    num_test_samples: int = field(default=140, metadata={"help": "Embedded recipe: generated held-out samples."})


def parse(argv: list[str]):
    parser = TrlParser((P2EArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(args=argv)


# What `--help` shows of each phase's YAML (column → field): the values a run of that recipe actually uses.
HELP_FIELDS = {"tasks": "tasks", "modalities": "modalities", "LoRA": "use_peft", "steps": "max_steps",
               "batch": "per_device_train_batch_size", "lr": "learning_rate", "evaluate": "evaluate"}  # fmt: skip


def help_text(recipe: str = "embedded", full: bool = False) -> str:
    """`p2e.py --help`: the recipe's own options, then what each phase's YAML of `recipe` sets (the defaults a run
    without arguments really uses: argparse prints the dataclass defaults, which the YAMLs override per phase), then
    how to see the ~100 trainer options (`--help-all` prints them all)."""
    import yaml

    own = TrlParser((P2EArguments,), prog="p2e.py", description=__doc__.strip().split("\n\n")[0])
    rows = [("phase", *HELP_FIELDS)]
    for name in PHASE_ORDER:
        path = recipe_folder(recipe) / f"phase_{name}.yaml"
        if path.is_file():
            config = yaml.safe_load(path.read_text())
            tasks = sorted({t for entry in config.get("mixture") or [] for t in entry.get("tasks") or []})
            config |= {"tasks": ",".join(tasks) or "all", "modalities": ",".join(config.get("modalities") or ["all"])}
            rows.append((name, *(str(config.get(field, "-")) for field in HELP_FIELDS.values())))
    widths = [max(len(row[i]) for row in rows) + 2 for i in range(len(rows[0]))]
    lines = [own.format_help().rstrip(), "", f"What each phase of --recipe {recipe} sets ({recipe_folder(recipe)}):"]
    lines += ["  " + "".join(value.ljust(width) for value, width in zip(row, widths)).rstrip() for row in rows]
    lines += [
        "",
        "Every TRL SFTConfig / ModelConfig field (--learning_rate, --max_steps, --lora_r, ...) is accepted as well and",
        "overrides the YAML in every phase; `p2e.py --help-all` lists them.",
    ]
    if full:
        lines += ["", TrlParser((P2EArguments, SFTConfig, ModelConfig), prog="p2e.py").format_help()]
    return "\n".join(lines) + "\n"


def phase_configs(argv: list[str]) -> list[tuple[str, P2EArguments, SFTConfig, ModelConfig]]:
    """One parse per phase: the phase's YAML, then the command line on top (which therefore wins)."""
    selector = argparse.ArgumentParser(add_help=False)
    selector.add_argument("--phase", default="all")
    selector.add_argument("--recipe", default="embedded")
    selector.add_argument("--config")
    chosen, _ = selector.parse_known_args(argv)
    if chosen.config:
        if chosen.phase == "all":
            raise ValueError("--config describes one phase: pass --phase 1.1|1.2|2|3 with it.")
        return [(chosen.phase, *parse(argv))]
    if chosen.phase not in ("all", *PHASE_ORDER):
        raise ValueError(f"--phase must be one of all, {', '.join(PHASE_ORDER)}; got {chosen.phase!r}.")
    names = PHASE_ORDER if chosen.phase == "all" else (chosen.phase,)
    folder = recipe_folder(chosen.recipe)
    runs = []
    for name in names:
        path = folder / f"phase_{name}.yaml"
        if not path.is_file():
            known = sorted(p.name for p in CONFIG_ROOT.iterdir())
            raise FileNotFoundError(f"{path}: no such recipe config (built-in recipes: {known}, or give a folder).")
        runs.append((name, *parse(["--config", str(path), *argv, "--phase", name])))
    return runs


def recipe_folder(recipe: str) -> Path:
    """The folder of a `--recipe`: a built-in name (`embedded`, `full`) is always recipes/configs/<name>, even where
    the current directory has a folder of that name (recipes/ itself has `embedded/`, the embedded run's code);
    anything else is a folder path."""
    if (CONFIG_ROOT / recipe).is_dir() and "/" not in recipe and recipe not in (".", ".."):
        return CONFIG_ROOT / recipe
    return Path(recipe)


def training_dataset(args: P2EArguments) -> tuple[Dataset, dict[str, float], list]:
    """
    The phase's mixture as one dataset (its `dataset` column names the mixture entry), the weights, the samples.

    Every rank reads the manifests and checks the media (a rank may not see another's files: node-local disks); the
    missing samples of all ranks are exchanged, so `on_missing: error` stops every rank with the sample ids (no rank
    left waiting), and `skip` leaves out the same samples everywhere.
    """
    loaded_entries = []
    for entry in args.mixture or []:
        manifest = Path(args.data_root or ".") / entry["manifest"]
        tasks = entry.get("tasks", args.tasks)
        loaded, report = load_manifest(manifest, media_root=args.media_root, on_missing="skip", tasks=tasks)
        loaded_entries.append((entry, manifest, tasks, loaded, report.missing_media))
    missing_per_rank = distributed.all_gather_objects([missing for *_, missing in loaded_entries])
    rows, weights, samples = [], {}, []
    for position, (entry, manifest, tasks, loaded, _) in enumerate(loaded_entries):
        missing = {}
        for r, per_entry in enumerate(missing_per_rank):
            for sample_id, paths in per_entry[position].items():
                missing.setdefault(sample_id, (r, paths))
        if missing:
            where = "" if distributed.world_size() == 1 else " on rank {}"
            listing = "; ".join(
                f"{sid}{where.format(r)}: {', '.join(paths)}" for sid, (r, paths) in list(missing.items())[:10]
            )
            message = f"{manifest}: {len(missing)} samples name media files that do not exist (first 10 — {listing})"
            if args.on_missing == "error":
                raise ManifestError(f"{message}. Fix the paths or --media_root, or skip them with --on_missing skip.")
            logger.warning(f"{entry['name']}: {message}; skipped.")
            loaded = [sample for sample in loaded if sample.id not in missing]
        if not loaded:
            raise ValueError(f"{manifest}: no usable samples for tasks {tasks}.")
        # `weight: size` draws the entry in proportion to its size (the entries behave as one merged dataset).
        weights[entry["name"]] = float(len(loaded) if entry.get("weight", "size") == "size" else entry["weight"])
        for sample in loaded:
            row = sample.to_dict()
            row.pop("reference")  # evaluation only (and of mixed types, which Arrow cannot store in one column)
            row["dataset"] = entry["name"]
            rows.append(row)
            samples.append(sample)
    if not rows:
        raise ValueError("The phase has no training data: give a `mixture` of {name, manifest, weight}.")
    return Dataset.from_list(rows), weights, samples


LLM_ONLY_SKIP = ("vision_tower", "audio_tower", "face_encoder", *HEAD_MODULES, "lm_head")


def loading_kwargs(name: str, args: P2EArguments, model_args: ModelConfig) -> dict:
    """`from_pretrained` arguments from TRL's ModelConfig: dtype, attn_implementation, and for a LoRA phase with
    `--load_in_4bit` / `--load_in_8bit` (QLoRA) bitsandbytes quantization of the LLM only (the towers, heads and
    LM head stay in full precision: the heads train, and the feature cache fingerprints the towers)."""
    kwargs = {}
    if model_args.dtype not in (None, "auto"):
        kwargs["dtype"] = getattr(torch, model_args.dtype)
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        if not model_args.use_peft:
            logger.warning(f"Phase {name}: --load_in_4bit/8bit applies to LoRA phases only; loading unquantized.")
        else:
            quantization.llm_int8_skip_modules = list(LLM_ONLY_SKIP)
            kwargs["quantization_config"] = quantization
            # bitsandbytes quantizes on the GPU the weights land on: each rank loads onto its own (TRL's scripts do the
            # same with `get_kbit_device_map`, gone from TRL 1.16).
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    return kwargs


def start_folder(name: str, output_dir: Path, model_args: ModelConfig) -> Path | str:
    """The folder a phase starts from. Phase 2's (phase 1.2 with phase 1.1's audio head) is written from the two
    folders' files by the main process while the others wait; every rank then loads it."""
    if name in ("1.1", "1.2"):
        if model_args.model_name_or_path is None:
            raise ValueError(
                "Phases 1.1/1.2 need --model_name_or_path (a Nano-EmoX folder, e.g. from compose_from_components)."
            )
        return model_args.model_name_or_path
    previous = output_dir / ("phase_1.2" if name == "2" else "phase_2") / "final"
    if not previous.is_dir():
        raise FileNotFoundError(f"Phase {name} starts from {previous}, which does not exist: run the earlier phase.")
    if name != "2":
        return previous
    audio_phase = output_dir / "phase_1.1" / "final"
    if not audio_phase.is_dir():
        raise FileNotFoundError(f"Phase 2 also takes the audio head of {audio_phase}, which does not exist.")
    target = output_dir / "phase_2" / "start"

    def write():
        if saved_model_complete(target):
            return None
        return write_phase_start(previous, audio_phase, AUDIO_HEAD, target)

    copied = distributed.on_main_process(write, "Writing phase 2's start folder")
    if copied:
        say(f"Phase 2 starts from phase 1.2 with phase 1.1's audio head ({copied} tensors): {target}.")
    return target


def start_model(name: str, output_dir: Path, args: P2EArguments, model_args: ModelConfig):
    """The model a phase starts from, loaded strictly, its processor, and the folder they came from."""
    source = start_folder(name, output_dir, model_args)
    hub = {"revision": model_args.model_revision} if name in ("1.1", "1.2") and model_args.model_revision else {}
    model = load_strict(source, **loading_kwargs(name, args, model_args), **hub)
    return model, AutoProcessor.from_pretrained(source, **hub), source


def say(message: str) -> None:
    """A log line from the main process only (the other ranks would repeat it)."""
    if distributed.is_main_process():
        logger.warning(message)


def global_batch_plan(name: str, args: P2EArguments, training_args: SFTConfig) -> str:
    """Rescales the step counts when `authors_global_batch` is set; returns the parity line the phase logs."""
    world = training_args.world_size
    per_device, accumulation = training_args.per_device_train_batch_size, training_args.gradient_accumulation_steps
    global_batch = world * per_device * accumulation
    note = ""
    if args.authors_global_batch > 0 and global_batch != args.authors_global_batch:
        factor = args.authors_global_batch / global_batch
        scaled = {}
        for key in ("max_steps", "warmup_steps", "save_steps"):
            value = getattr(training_args, key)
            if isinstance(value, (int, float)) and value >= 1:
                setattr(training_args, key, max(1, math.ceil(value * factor)))
                scaled[key] = f"{value:g} → {getattr(training_args, key):g}"
        note = f"; counts given at global batch {args.authors_global_batch}, rescaled: " + ", ".join(
            f"{key} {change}" for key, change in scaled.items()
        )
    phase = PHASES[name]
    steps = training_args.max_steps
    samples = steps * global_batch if steps > 0 else None
    seen = f"{steps:,} steps → {samples:,} samples" if samples else "epochs (max_steps unset)"
    share = f", {100 * samples / phase.authors_samples:.3g} % of theirs" if samples else ""
    return (
        f"Phase {name}: world size {world} × per-device batch {per_device} × accumulation {accumulation} = global "
        f"batch {global_batch}; {seen} (the authors: global batch {AUTHORS_GLOBAL_BATCH} × {phase.authors_steps:,} "
        f"steps = {phase.authors_samples:,} samples{share}){note}."
    )


def build_cache(args: P2EArguments, root: Path, model, processor, samples, device) -> FeatureCache | None:
    if args.feature_cache in (None, "none"):
        return None
    cache = FeatureCache(root / "feature_cache" if args.feature_cache == "auto" else args.feature_cache)
    added = cache.build(model, processor, samples, batch_size=args.feature_cache_batch_size, device=device)
    say(
        f"Feature cache: {added} samples encoded over {distributed.world_size()} ranks, {len(cache.entries)} in {cache.root}."
    )
    return cache


def run_phase(name, args: P2EArguments, training_args: SFTConfig, model_args: ModelConfig) -> Path:
    root = Path(training_args.output_dir)
    phase_dir = root / f"phase_{name}"
    if saved_model_complete(phase_dir / "final"):
        say(f"Phase {name} is already done ({phase_dir / 'final'}); skipping it.")
        return phase_dir / "final"
    if (phase_dir / "final").exists():
        say(f"{phase_dir / 'final'} is incomplete (killed during the save?); the phase runs again.")
    model, processor, source = start_model(name, root, args, model_args)
    dataset, weights, samples = distributed.on_every_rank(lambda: training_dataset(args), f"Phase {name}: the data")
    cache = build_cache(args, root, model, processor, samples, training_args.device)
    # Phases that feed fewer modalities read only those features.
    if cache is not None and args.modalities is not None:
        cache = cache.restricted_to(args.modalities)

    phase = PHASES[name]
    if model_args.use_peft and (
        getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    ):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, training_args.gradient_checkpointing)
    counts = freeze_for_phase(model, phase, tuple(args.trainable) if args.trainable else None)
    if model_args.use_peft:
        model = apply_lora(model, get_peft_config(model_args))
        counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    say(f"Phase {name} ({phase.title}): {counts['trainable']:,} trainable, {counts['frozen']:,} frozen.")
    say(global_batch_plan(name, args, training_args))

    # SFTConfig's `max_length` is the token budget of one sample; the collator enforces it (never cutting a
    # placeholder), so TRL's own truncation is off.
    max_length = training_args.max_length
    training_args.output_dir = str(phase_dir)
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}
    training_args.max_length = None
    # The Trainer's own push would upload the whole phase folder with its generic card at every save; the recipe
    # publishes the finished `final` folder instead (below).
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    training_args.push_to_hub = False
    fsdp_settings(model, training_args)
    trainer = NanoEmoXTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=NanoEmoXDataCollator(processor, cache, max_length, modalities=args.modalities),
        processing_class=processor,
        mixture_weights=weights,
        one_dataset_per_batch=args.one_dataset_per_batch,
    )
    # Set aside checkpoints killed during their save (a rename: the main process only), then resume on every rank.
    checkpoint = distributed.on_main_process(lambda: latest_intact_checkpoint(phase_dir), "Finding the checkpoint")
    if checkpoint:
        say(f"Phase {name}: resuming from {checkpoint}.")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final = save_phase(trainer, processor, phase_dir, base=source)

    def record_and_publish():
        phases = []
        for previous in {"2": ("1.1", "1.2"), "3": ("2",)}.get(name, ()):  # the curriculum so far, in order
            for entry in (read_training_summary(root / f"phase_{previous}" / "final") or {}).get("phases", []):
                if entry["name"] not in {p["name"] for p in phases}:
                    phases.append(entry)
        per_dataset = collections.Counter(dataset["dataset"])
        phases.append(
            phase_from_trainer_state(
                name, dataclasses.asdict(trainer.state), title=phase.title,
                trainable=list(args.trainable or phase.trainable_prefixes), lora=bool(model_args.use_peft),
                trainable_parameters=counts["trainable"], frozen_parameters=counts["frozen"],
                learning_rate=training_args.learning_rate, lr_scheduler=str(training_args.lr_scheduler_type),
                warmup_steps=training_args.warmup_steps,
                batch_size=training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
                * training_args.world_size,
                data=[{k: v for k, v in {"name": e["name"], "weight": weights[e["name"]],
                                         "samples": per_dataset[e["name"]], "hub_id": e.get("hub_id"),
                                         "language": e.get("language")}.items() if v is not None}
                      for e in args.mixture or []],
            )
        )  # fmt: skip
        write_training_summary(final, {"recipe": "p2e", "variant": args.recipe, "phases": phases})
        if push and hub_model_id:
            hub = {"token": training_args.hub_token, "private": training_args.hub_private_repo,
                   "revision": training_args.hub_revision}  # fmt: skip
            push_folder_with_card(final, f"{hub_model_id}-phase-{name}", commit_message=f"P2E phase {name}", **hub)
            if (phase_dir / "adapter").is_dir():
                push_adapter(phase_dir / "adapter", f"{hub_model_id}-phase-{name}-adapter", name, **hub)

    distributed.on_main_process(record_and_publish, f"Phase {name}: recording and publishing")
    return final


def fsdp_settings(model, training_args: SFTConfig) -> None:
    """
    Two adjustments of the Trainer's FSDP plugin (`--fsdp ...`):
    - checkpoints as distributed-checkpoint shards (SHARDED_STATE_DICT): transformers 5.24's full-state-dict
      checkpoint runs `save_pretrained` on the main process over sharded parameters, a collective only one rank
      joins (gloo aborts, NCCL hangs); each phase's `final` is written whole by `save_phase` anyway.
    - FSDP's transformer auto-wrap defaults to the model's `_no_split_modules`, which names every class its
      sub-models might use (e.g. `HubertEncoderLayer` where the audio tower is `HubertEncoderLayerStableLayerNorm`),
      and accelerate refuses a name the model lacks: without an explicit `transformer_layer_cls_to_wrap`, wrap those
      present.
    """
    plugin = training_args.fsdp_plugin_args
    if not plugin:
        return
    plugin["state_dict_type"] = "SHARDED_STATE_DICT"
    if plugin.get("auto_wrap_policy") != "TRANSFORMER_BASED_WRAP" or plugin.get("transformer_cls_names_to_wrap"):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    present = {type(module).__name__ for module in base.modules()}
    plugin["transformer_cls_names_to_wrap"] = sorted(name for name in base._no_split_modules or () if name in present)


def push_adapter(adapter: Path, repo_id: str, name: str, **hub):
    """Publishes a LoRA adapter folder (its own repository, next to the merged model's) after checking it is not
    empty: LoRA tensors and the `modules_to_save` heads must be in it."""
    from safetensors import safe_open

    path = adapter / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as handle:
        keys = list(handle.keys())
    lora = [key for key in keys if "lora_" in key]
    heads = [key for key in keys if "modules_to_save" in key or key.split(".")[2:3] in ([h] for h in HEAD_MODULES)]
    if not lora:
        raise ValueError(f"{path}: {len(keys)} tensors and no LoRA weights; refusing to publish an empty adapter.")
    say(f"Publishing {adapter} ({len(lora)} LoRA tensors, {len(heads)} head tensors) to {repo_id}.")
    return push_folder_with_card(adapter, repo_id, commit_message=f"P2E phase {name}: LoRA adapter", **hub)


def build_feature_cache_only(runs, output_dir: Path) -> int:
    """The pre-pass: the cache of every selected phase's samples, with the start model's towers (frozen in all
    phases, so the same features serve every phase)."""
    _, args, training_args, model_args = runs[0]
    model = load_strict(model_args.model_name_or_path, **loading_kwargs("1.1", args, model_args))
    processor = AutoProcessor.from_pretrained(model_args.model_name_or_path)
    samples = []
    for name, phase_args, _, _ in runs:
        phase_args.data_root = phase_args.data_root or args.data_root
        samples += distributed.on_every_rank(lambda a=phase_args: training_dataset(a)[2], f"Phase {name}: the data")
    build_cache(args, output_dir, model, processor, samples, training_args.device)
    return 0


def evaluate(output_dir: Path, data_root: str, args: P2EArguments) -> dict:
    """Scores OUTPUT_DIR/final on the held-out split and puts the results next to chance levels."""
    from modeling_nanoemox.evaluation.run import run_evaluation
    from modeling_nanoemox.predict import load

    model, processor = load(str(output_dir / "final"), device=None, dtype="float32")
    test = Path(data_root) / "test.jsonl"
    samples, _ = load_manifest(test, media_root=args.media_root)
    chance_path = Path(data_root) / "chance.json"
    chance = json.loads(chance_path.read_text()) if chance_path.is_file() else {}
    wheel = args.emotion_wheel or os.environ.get("NANOEMOX_EMOTION_WHEEL")
    # Offline stand-ins where the benchmark needs outside resources: exact words without the emotion wheel, lexical
    # overlap instead of an LLM judge for ERI. Both are labelled as such in the results.
    score_kwargs = {
        "ovmer": {"emotion_wheel": wheel or "none"},
        "mer": {"emotion_wheel": wheel},
        "eri": {"judge": "none"},
    }
    results = {}
    for task in sorted({s.task for s in samples}):
        result = run_evaluation(
            model,
            processor,
            test,
            task,
            output_dir / "eval" / task,
            batch_size=8,
            plots=False,
            score_kwargs=score_kwargs.get(task),
            protocol="direct",
        )  # fmt: skip  (the task prompts the recipe trains; `nanoemox eval run --protocol paper` for the paper's)
        results[task] = {k: v for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    results["chance"] = chance
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    lines = [f"{'task':<8}{'metric':<22}{'model':>8}{'chance':>8}"]
    for task, metrics in results.items():
        if task == "chance":
            continue
        for metric, value in metrics.items():
            reference = chance.get(task, {}).get(metric)
            lines.append(f"{task:<8}{metric:<22}{value:>8.3f}{'' if reference is None else f'{reference:>8.3f}'}")
    sys.stdout.write("\n".join(lines) + "\n")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help", "--help-all"} & set(argv):
        selector = argparse.ArgumentParser(add_help=False)
        selector.add_argument("--recipe", default="embedded")
        sys.stdout.write(help_text(selector.parse_known_args(argv)[0].recipe, full="--help-all" in argv))
        return 0
    if not any(arg.startswith("--output_dir") for arg in argv):
        argv += ["--output_dir", "outputs/p2e"]
    runs = phase_configs(argv)
    # Initialises the process group under a distributed launcher (the same one the Trainer uses), so the steps
    # before the Trainer can synchronise.
    world = runs[0][2].world_size
    if distributed.is_main_process():
        logging.get_logger("transformers.trainer").setLevel(logging.INFO)  # its "Total train batch size" line
    say(f"P2E: {world} process(es), phases {', '.join(name for name, *_ in runs)}.")
    output_dir = Path(runs[0][2].output_dir)
    data_root = runs[0][1].data_root
    start = runs[0][3].model_name_or_path
    embedded = runs[0][1].recipe == "embedded" and "--config" not in argv and (data_root is None or start is None)
    if embedded:  # recipes/embedded/pipeline.py: data, towers and feature cache once; stage times; its evaluation
        from embedded.pipeline import CLOCK, evaluate_embedded, prepare_embedded

        generated_data, generated_start = distributed.on_main_process(
            lambda: prepare_embedded(output_dir, runs[0][1]), "Preparing the embedded data and start model"
        )
        data_root, start = data_root or generated_data, start or generated_start
    for _, args, _, model_args in runs:
        args.data_root = args.data_root or data_root
        model_args.model_name_or_path = model_args.model_name_or_path or start
    if runs[0][1].build_feature_cache_only:
        return build_feature_cache_only(runs, output_dir)
    pushes = [(training_args.push_to_hub, training_args.hub_model_id) for _, _, training_args, _ in runs]
    names = [name for name, *_ in runs]
    if embedded and distributed.world_size() == 1 and names[:2] == ["1.1", "1.2"]:
        # Phases 1.1 and 1.2 both start from the start model and train disjoint heads: one core each.
        from embedded.pipeline import run_alongside

        with CLOCK.stage("phases 1.1 + 1.2"):
            run_alongside(lambda: run_phase(*runs[0]), lambda: run_phase(*runs[1]))
        runs_left = runs[2:]
    else:
        runs_left = runs
    for name, args, training_args, model_args in runs_left:
        with CLOCK.stage(f"phase {name}") if embedded else contextlib.nullcontext():
            final = run_phase(name, args, training_args, model_args)
    if runs[-1][0] != "3":
        return 0
    target = output_dir / "final"

    def copy_final():
        if target.exists():
            shutil.rmtree(target)
        save_folder_atomically(target, lambda folder: shutil.copytree(final, folder))

    distributed.on_main_process(copy_final, "Copying the final model")
    if not distributed.is_main_process():
        return 0  # evaluation and publishing are the main process's; no collective follows
    evaluate_run = evaluate_embedded if embedded else evaluate
    results = (
        evaluate_run(output_dir, data_root, runs[-1][1]) if any(args.evaluate for _, args, _, _ in runs) else None
    )
    summary = read_training_summary(target) or {"recipe": "p2e", "variant": runs[-1][1].recipe, "phases": []}
    if results is not None:
        summary["evaluation"] = {"split": "test", "checkpoint": "final", "results": {k: v for k, v in results.items()
                                 if k != "chance"}, "chance": results.get("chance", {}),
                                 "notes": "Offline stand-ins: exact words without the emotion wheel; lexical overlap for ERI."}  # fmt: skip
        write_training_summary(target, summary)
    push, hub_model_id = pushes[-1]
    if push and hub_model_id:
        push_folder_with_card(target, hub_model_id, commit_message="P2E final model",
                              token=runs[-1][2].hub_token, private=runs[-1][2].hub_private_repo)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

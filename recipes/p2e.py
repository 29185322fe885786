# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""
Perception-to-Empathy (P2E): the four-phase curriculum that trains Nano-EmoX (DESIGN §4), with TRL's SFTTrainer.

    1.1 audio alignment      audio head                                  (from the start model)
    1.2 visual alignment     video head, face head                       (from the start model)
    2   fusion pre-training  every head + fusion encoder                 (from 1.2, with 1.1's audio head copied in)
    3   instruction tuning   every head + fusion encoder + LoRA on the LLM (from 2)

Each phase writes `OUTPUT_DIR/phase_<name>/final` (complete model + processor) and the next phase loads it strictly;
phase 3 also writes its LoRA adapter (with the heads) to `phase_3/adapter`, and `OUTPUT_DIR/final` is the result.

The embedded default generates a small multimodal dataset, trains a tiny model through all four phases on a CPU in
under ten minutes, evaluates it on a held-out split and writes `OUTPUT_DIR/eval_results.json`:

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

`--push_to_hub --hub_model_id ORG/NAME` publishes each phase's folder through the standard Trainer path. A killed run
resumes from the last checkpoint of the unfinished phase when relaunched with the same command.
"""

import argparse
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoProcessor
from transformers.utils import logging
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

from modeling_nanoemox.data import load_manifest
from modeling_nanoemox.phases import AUDIO_HEAD, PHASES
from modeling_nanoemox.training import (
    FeatureCache,
    NanoEmoXDataCollator,
    NanoEmoXTrainer,
    apply_lora,
    copy_head_weights,
    freeze_for_phase,
    load_strict,
    save_phase,
)
from modeling_nanoemox.training.curriculum import latest_intact_checkpoint, save_folder_atomically, saved_model_complete

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
            "help": "Datasets of the phase: a list of {name, manifest, weight[, tasks]}; weights are sampling shares, "
            "`tasks` keeps only those tasks of that manifest."
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
        metadata={"help": "Parameter-name prefixes to train (default: the phase's, modeling_nanoemox.phases)."},
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
    num_train_samples: int = field(default=420, metadata={"help": "Embedded recipe: generated training samples."})
    num_test_samples: int = field(default=140, metadata={"help": "Embedded recipe: generated held-out samples."})


def parse(argv: list[str]):
    parser = TrlParser((P2EArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(args=argv)


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
    folder = Path(chosen.recipe) if Path(chosen.recipe).is_dir() else CONFIG_ROOT / chosen.recipe
    runs = []
    for name in names:
        path = folder / f"phase_{name}.yaml"
        if not path.is_file():
            known = sorted(p.name for p in CONFIG_ROOT.iterdir())
            raise FileNotFoundError(f"{path}: no such recipe config (built-in recipes: {known}, or give a folder).")
        runs.append((name, *parse(["--config", str(path), *argv, "--phase", name])))
    return runs


def prepare_embedded(output_dir: Path, args: P2EArguments) -> tuple[str, str]:
    """Generates the embedded dataset and a tiny start model (once); returns (data_root, start model folder)."""
    from embedded.dataset import build_synthetic_dataset
    from embedded.towers import build_start_model, pretrain_towers

    data_root = output_dir / "data"
    if not (data_root / "train.jsonl").is_file():
        build_synthetic_dataset(data_root, num_train=args.num_train_samples, num_test=args.num_test_samples, seed=0)
    start = output_dir / "start"
    if not saved_model_complete(start):  # absent, or a build killed half-way: (re)build it
        # The released towers come pretrained; the tiny ones get a short supervised pre-training on the generated
        # training split instead (embedded.towers.pretrain_towers), then stay frozen like the real ones.
        model, processor = build_start_model(seed=0)
        samples, _ = load_manifest(data_root / "train.jsonl")
        cues = [json.loads(line) for line in (data_root / "cues.jsonl").read_text().splitlines()]
        accuracy = pretrain_towers(
            model, processor, samples, {c["id"]: c["face"] for c in cues}, {c["id"]: c["voice"] for c in cues}
        )
        logger.warning(f"Tiny towers pre-trained (probe accuracy on the training split: {accuracy}).")
        save_folder_atomically(start, lambda folder: (model.save_pretrained(folder), processor.save_pretrained(folder)))
    return str(data_root), str(start)


def training_dataset(args: P2EArguments) -> tuple[Dataset, dict[str, float], list]:
    """The phase's mixture as one dataset (its `dataset` column names the mixture entry), the weights, the samples."""
    rows, weights, samples = [], {}, []
    for entry in args.mixture or []:
        manifest = Path(args.data_root or ".") / entry["manifest"]
        tasks = entry.get("tasks", args.tasks)
        loaded, report = load_manifest(manifest, media_root=args.media_root, on_missing=args.on_missing, tasks=tasks)
        if report.skipped:
            logger.warning(f"{entry['name']}: skipped {report.skipped} samples with missing media.")
        if not loaded:
            raise ValueError(f"{manifest}: no usable samples for tasks {tasks}.")
        weights[entry["name"]] = float(entry["weight"])
        for sample in loaded:
            row = sample.to_dict()
            row.pop("reference")  # evaluation only (and of mixed types, which Arrow cannot store in one column)
            row["dataset"] = entry["name"]
            rows.append(row)
            samples.append(sample)
    if not rows:
        raise ValueError("The phase has no training data: give a `mixture` of {name, manifest, weight}.")
    return Dataset.from_list(rows), weights, samples


def start_model(name: str, output_dir: Path, args: P2EArguments, model_args: ModelConfig):
    """The model a phase starts from, loaded strictly, and its processor."""
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else None
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if name in ("1.1", "1.2"):
        source = model_args.model_name_or_path
        if source is None:
            raise ValueError(
                "Phases 1.1/1.2 need --model_name_or_path (a Nano-EmoX folder, e.g. from compose_from_components)."
            )
        return load_strict(source, **kwargs), AutoProcessor.from_pretrained(source)
    previous = output_dir / ("phase_1.2" if name == "2" else "phase_2") / "final"
    if not previous.is_dir():
        raise FileNotFoundError(f"Phase {name} starts from {previous}, which does not exist: run the earlier phase.")
    model = load_strict(previous, **kwargs)
    if name == "2":
        audio_phase = output_dir / "phase_1.1" / "final"
        if not audio_phase.is_dir():
            raise FileNotFoundError(f"Phase 2 also takes the audio head of {audio_phase}, which does not exist.")
        copied = copy_head_weights(model, load_strict(audio_phase), AUDIO_HEAD)
        logger.warning(f"Phase 2 starts from phase 1.2 with phase 1.1's audio head ({copied} tensors).")
    return model, AutoProcessor.from_pretrained(previous)


def run_phase(name, args: P2EArguments, training_args: SFTConfig, model_args: ModelConfig) -> Path:
    root = Path(training_args.output_dir)
    phase_dir = root / f"phase_{name}"
    if saved_model_complete(phase_dir / "final"):
        logger.warning(f"Phase {name} is already done ({phase_dir / 'final'}); skipping it.")
        return phase_dir / "final"
    if (phase_dir / "final").exists():
        logger.warning(f"{phase_dir / 'final'} is incomplete (killed during the save?); the phase runs again.")
    model, processor = start_model(name, root, args, model_args)
    dataset, weights, samples = training_dataset(args)
    cache = None
    if args.feature_cache not in (None, "none"):
        cache = FeatureCache(root / "feature_cache" if args.feature_cache == "auto" else args.feature_cache)
        added = cache.build(model, processor, samples)
        logger.warning(f"Feature cache: {added} samples encoded, {len(cache.entries)} cached in {cache.root}.")
        # Phases that feed fewer modalities read only those features.
        if args.modalities is not None:
            cache = cache.restricted_to(args.modalities)

    phase = PHASES[name]
    counts = freeze_for_phase(model, phase, tuple(args.trainable) if args.trainable else None)
    if model_args.use_peft:
        model = apply_lora(model, get_peft_config(model_args))
        counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.warning(f"Phase {name} ({phase.title}): {counts['trainable']:,} trainable, {counts['frozen']:,} frozen.")

    # SFTConfig's `max_length` is the token budget of one sample; the collator enforces it (never cutting a
    # placeholder), so TRL's own truncation is off.
    max_length = training_args.max_length
    training_args.output_dir = str(phase_dir)
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {"skip_prepare_dataset": True}
    training_args.max_length = None
    if training_args.push_to_hub and training_args.hub_model_id:
        training_args.hub_model_id = f"{training_args.hub_model_id}-phase-{name}"
    trainer = NanoEmoXTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=NanoEmoXDataCollator(processor, cache, max_length, modalities=args.modalities),
        processing_class=processor,
        mixture_weights=weights,
    )
    checkpoint = latest_intact_checkpoint(phase_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final = save_phase(trainer.model, processor, phase_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message=f"P2E phase {name}")
    return final


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
            model, processor, test, task, output_dir / "eval" / task, batch_size=8, plots=False,
            score_kwargs=score_kwargs.get(task),
        )  # fmt: skip
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
    if not any(arg.startswith("--output_dir") for arg in argv):
        argv += ["--output_dir", "outputs/p2e"]
    runs = phase_configs(argv)
    output_dir = Path(runs[0][2].output_dir)
    data_root = runs[0][1].data_root
    start = runs[0][3].model_name_or_path
    if runs[0][1].recipe == "embedded" and "--config" not in argv and (data_root is None or start is None):
        generated_data, generated_start = prepare_embedded(output_dir, runs[0][1])
        data_root, start = data_root or generated_data, start or generated_start
    for name, args, training_args, model_args in runs:
        args.data_root = args.data_root or data_root
        model_args.model_name_or_path = model_args.model_name_or_path or start
        final = run_phase(name, args, training_args, model_args)
    if runs[-1][0] == "3":
        target = output_dir / "final"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(final, target)
        if any(args.evaluate for _, args, _, _ in runs):
            evaluate(output_dir, data_root, runs[-1][1])
    return 0


if __name__ == "__main__":
    sys.exit(main())

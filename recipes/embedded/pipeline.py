# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""
The embedded default run (`accelerate launch recipes/p2e.py --output_dir OUT` with no data or model given):
`recipes/p2e.py` calls [`prepare_embedded`] before its phases, times each phase with `CLOCK.stage`, and calls
[`evaluate_embedded`] after phase 3.

Stages, each timed (wall and CPU seconds) with its own progress bar and ETA:

1. `data`: the generated dataset (`embedded.dataset`), rendered by two forked workers; each worker also decodes the
   clip it has just written through the processor's chat path (`embedded.towers.chat_media`), so the media are ready
   for the towers when the last clip is written, and are decoded only once for the whole run.
2. `towers`: the tiny towers' stand-in pre-training (`embedded.towers.pretrain_towers`) on the decoded media.
3. `features`: the frozen towers' outputs for every sample, train and test, written in the feature cache's format
   (`modeling_nanoemox.training.FeatureCache`); the phases and the evaluation read them, nothing is decoded again.
4. `phase 1.1`, `phase 1.2`, `phase 2`, `phase 3`: `p2e.run_phase` (the Trainer's bar).
5. `eval`: greedy answers for the held-out split (other people, other sentences) from the cached features, scored by
   `modeling_nanoemox.evaluation.scoring.score`; the samples with conflicting cues (masked smile, poker face, calm
   voice) are also scored on their own, and the whole evaluation runs a second time with the fusion token zeroed (a
   forward hook on the fusion projector), which shows what fusion adds.

`OUT/eval_results.json` holds the metrics per task, the conflicting-cue and fusion-ablation scores, the chance levels
and a `run` block (the machine, each stage's wall and CPU seconds). Everything outside `run` is the same for two runs
on one machine (seeded data, seeded training, fixed thread count, greedy decoding); `run` holds wall times.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers.utils import logging

logger = logging.get_logger("p2e")

CONFLICT_SCENES = ("masked_smile", "poker_face", "calm_voice")
# Scored classification metrics and the bar each has to clear: halfway from chance to perfect (issue 14).
HEADLINE_METRICS = {"msa": "accuracy", "mer": "accuracy", "mir": "accuracy", "erg": "emotion_accuracy"}
EVAL_MAX_NEW_TOKENS = {"msa": 4, "mer": 12, "ovmer": 24, "mir": 8, "eri": 96, "erg": 128}
NUM_WORKERS = 2
# One intra-op thread per process, in every stage. Where two processes share the two cores (data, towers, phases
# 1.1 and 1.2) a second thread only competes: a face-encoder training step took 0.29 s on two threads against 0.09 s
# on one (idle 2-core machine, measured). Where one process runs alone (phases 2 and 3), two threads made a phase-3
# step 1.5 times faster on the idle machine (0.13 vs 0.20 s) but 50 times slower on a busy one (10 s: the threads
# spin waiting for a core), and the results would depend on the thread count; one thread keeps the run's time and
# its eval_results.json the same whatever else the machine does.
THREADS = 1
# Tower pre-training, chosen on a validation split of training people (identity % 5 == 0, 87 samples; a fresh
# linear probe on the frozen features, trained on the other people): 150 steps at 3e-3 gave video 0.62, face 0.39,
# audio 0.75; 300 steps gave 0.77, 0.63, 0.84; the audio tower at 6e-3 then 0.98 (5e-3 everywhere collapsed the face
# encoder to 0.07).
TOWER_STEPS = 300
TOWER_LEARNING_RATES = {"video": 3e-3, "face": 3e-3, "audio": 6e-3}


# ---- timing and the machine -------------------------------------------------------------------------------------


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class StageClock:
    """Wall and CPU seconds (this process and its finished workers) of each named stage, and the intra-op threads
    (per process) it ended with."""

    def __init__(self):
        self.stages: dict[str, dict[str, float]] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        yield
        self.stages[name] = {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(_cpu_seconds() - cpu, 1),
                             "threads": torch.get_num_threads()}  # fmt: skip
        logger.warning(f"stage {name}: {self.stages[name]['wall_s']} s wall, {self.stages[name]['cpu_s']} s CPU")

    def total(self) -> dict[str, float]:
        return {"wall_s": round(time.perf_counter() - self._start, 1), "cpu_s": round(_cpu_seconds(), 1)}


def machine() -> dict:
    """What the run ran on (recorded with its times; results may differ across machines, see the README)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


# ---- data, towers, features ---------------------------------------------------------------------------------------

_PROCESSOR = None  # the processor the forked decoding workers use (inherited, not pickled)


def _decode_in_worker(path, faces_path) -> dict[str, np.ndarray]:
    from .towers import chat_media

    torch.set_num_threads(1)
    sample = SimpleNamespace(video=str(path), audio=None, faces=None if faces_path is None else str(faces_path))
    return {key: value[0].numpy() for key, value in chat_media(_PROCESSOR, [sample]).items()}


def _stack(rows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.stack([row[key] for row in rows])) for key in rows[0]}


def _decode_all(processor, samples) -> dict[str, torch.Tensor]:
    """The samples' media through the chat path, in two forked workers (when the data were generated earlier)."""
    global _PROCESSOR
    _PROCESSOR = processor
    try:
        jobs = [(s.video, s.faces) for s in samples]
        with tqdm(total=len(jobs), desc="decode media", unit="clip") as bar:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            rows = []
            with ProcessPoolExecutor(NUM_WORKERS, mp_context=multiprocessing.get_context("fork")) as pool:
                for row in pool.map(_decode_in_worker, *zip(*jobs), chunksize=4):
                    rows.append(row)
                    bar.update(1)
        return _stack(rows)
    finally:
        _PROCESSOR = None


# The face encoder's steps cost about as much as the vision and audio towers' together (0.11 vs 0.08 CPU-s per
# step, measured): one process trains it, a forked one the other two.
TOWER_SPLIT = (("face",), ("video", "audio"))
# (model, pretrain_towers kwargs, torch generator state) of the forked tower worker (inherited, not pickled)
_TOWER_JOB = None


def _pretrain_in_worker(towers: tuple[str, ...]):
    from .towers import pretrain_towers, tower_modules

    torch.set_num_threads(1)
    model, job, generator_state = _TOWER_JOB
    torch.set_rng_state(generator_state)  # the probes the parent draws
    accuracy = pretrain_towers(model, towers=towers, **job)
    modules = tower_modules(model)
    return accuracy, {name: modules[name].state_dict() for name in towers}


def _pretrain_towers_on_two_cores(model, job: dict, bar) -> dict[str, float]:
    """`pretrain_towers` with the towers of `TOWER_SPLIT` trained in two processes at once from one generator state;
    the same towers as one process training all three (each tower's loss reaches only its own weights, both processes
    draw the same batches and probes)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .towers import pretrain_towers, tower_modules

    global _TOWER_JOB
    _TOWER_JOB = (model, job, torch.get_rng_state())
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            other = pool.submit(_pretrain_in_worker, TOWER_SPLIT[1])
            accuracy = pretrain_towers(model, towers=TOWER_SPLIT[0], progress=bar, **job)
            other_accuracy, states = other.result()
    finally:
        _TOWER_JOB = None
    modules = tower_modules(model)
    for name, state in states.items():
        modules[name].load_state_dict(state)
    return {**accuracy, **other_accuracy}


_ALONGSIDE = None  # the function the forked process of `run_alongside` runs (inherited, not pickled)


def _run_alongside_in_worker() -> None:
    torch.set_num_threads(THREADS)
    _ALONGSIDE()


def run_alongside(first, second) -> None:
    """Runs `first()` in a forked process while `second()` runs in this one (each on its own core); returns when
    both are done and raises the first one's error, if any, after `second()` has finished. Results stay on disk (the
    phases' folders): nothing is sent back."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    global _ALONGSIDE
    _ALONGSIDE = first
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            other = pool.submit(_run_alongside_in_worker)
            second()
            other.result()
    finally:
        _ALONGSIDE = None


def _write_feature_cache(root: Path, model, processor, samples, features: dict[str, torch.Tensor]) -> None:
    """Writes the tower features in the feature cache's format (index + one safetensors file per sample), with the
    fingerprint of the towers and processor the phases will load."""
    from safetensors.torch import save_file

    from modeling_nanoemox.training import FeatureCache
    from modeling_nanoemox.training.feature_cache import fingerprint

    cache = FeatureCache(root)
    cache.fingerprint = fingerprint(model, processor)
    cache.entries = {}
    for row, sample in enumerate(samples):
        shard = cache._shard(sample.id)
        shard.parent.mkdir(parents=True, exist_ok=True)
        save_file({m: features[m][row].contiguous() for m in features}, shard)
        cache.entries[sample.id] = sorted(features)
    cache._save_index()


def carve_validation(data_root: Path) -> Path:
    """`DATA_ROOT/validation/`: the training split's people with identity % 5 == 0 as its `test.jsonl`, the others
    as its `train.jsonl` (absolute media paths), with cues and chance levels: settings are chosen by running the
    embedded default with `NANOEMOX_EMBEDDED_VALIDATION=1`, which trains and scores there, never on the test split."""
    from modeling_nanoemox.data import load_manifest, write_manifest

    from .dataset import chance_levels

    folder = data_root / "validation"
    train, _ = load_manifest(data_root / "train.jsonl")
    cues = [json.loads(line) for line in (data_root / "cues.jsonl").read_text().splitlines()]
    held = {c["id"] for c in cues if c["split"] == "train" and c["identity"] % 5 == 0}
    fit, validation = [s for s in train if s.id not in held], [s for s in train if s.id in held]
    write_manifest(fit, folder / "train.jsonl")
    write_manifest(validation, folder / "test.jsonl")
    (folder / "cues.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cues if c["split"] == "train"))
    (folder / "chance.json").write_text(json.dumps(chance_levels(fit, validation)["chance"], indent=2) + "\n")
    return folder


def prepare(output_dir: Path, args, clock: StageClock) -> tuple[str, str]:
    """Data, pre-trained start model and feature cache, each once (kept when a relaunch finds them complete);
    returns (data_root, start model folder)."""
    from transformers import AutoProcessor

    from modeling_nanoemox.data import load_manifest
    from modeling_nanoemox.training import load_strict
    from modeling_nanoemox.training.curriculum import save_folder_atomically, saved_model_complete

    from .dataset import build_synthetic_dataset
    from .towers import build_start_model, tower_features

    data_root, start = output_dir / "data", output_dir / "start"
    cache_root = None
    if args.feature_cache not in (None, "none"):
        cache_root = output_dir / "feature_cache" if args.feature_cache == "auto" else Path(args.feature_cache)
    if saved_model_complete(start) and (data_root / "test.jsonl").is_file():
        return str(data_root), str(start)

    model, processor = build_start_model(seed=0)
    rendered = None
    with clock.stage("data"):
        if not (data_root / "test.jsonl").is_file():
            global _PROCESSOR
            _PROCESSOR = processor
            total = args.num_train_samples + args.num_test_samples
            try:
                with tqdm(total=total, desc="generate + decode", unit="clip") as bar:
                    generated = build_synthetic_dataset(
                        data_root, num_train=args.num_train_samples, num_test=args.num_test_samples, seed=0,
                        image_size=64, fps=4, num_workers=NUM_WORKERS, after_render=_decode_in_worker, progress=bar,
                    )  # fmt: skip
            finally:
                _PROCESSOR = None
            rendered = generated["rendered"]
        train, _ = load_manifest(data_root / "train.jsonl")
        test, _ = load_manifest(data_root / "test.jsonl")
        samples = train + test
        media = _stack([rendered[s.id] for s in samples]) if rendered else _decode_all(processor, samples)
    with clock.stage("towers"):
        cues = {c["id"]: c for c in map(json.loads, (data_root / "cues.jsonl").read_text().splitlines())}
        train_media = {key: value[: len(train)] for key, value in media.items()}
        job = {"processor": processor, "samples": train, "face_labels": {i: c["face"] for i, c in cues.items()},
               "voice_labels": {i: c["voice"] for i, c in cues.items()}, "steps": TOWER_STEPS,
               "learning_rate": TOWER_LEARNING_RATES, "media": train_media}  # fmt: skip
        with tqdm(total=TOWER_STEPS, desc="tower pre-training", unit="step") as bar:
            accuracy = _pretrain_towers_on_two_cores(model, job, bar)
        logger.warning(f"Tiny towers pre-trained (probe accuracy on the last training batch: {accuracy}).")
        save_folder_atomically(
            start, lambda folder: (model.save_pretrained(folder), processor.save_pretrained(folder))
        )
    if cache_root is not None:
        with clock.stage("features"):
            # Fingerprinted with the model and processor as the phases load them from the saved folder.
            model, processor = load_strict(start), AutoProcessor.from_pretrained(start)
            features = {}
            with tqdm(total=len(samples), desc="tower features", unit="sample") as bar:
                for begin in range(0, len(samples), 64):
                    chunk = {key: value[begin : begin + 64] for key, value in media.items()}
                    for modality, values in tower_features(model, chunk).items():
                        features.setdefault(modality, []).append(values)
                    bar.update(len(chunk["pixel_values_videos"]))
            features = {m: torch.cat(v) for m, v in features.items()}
            if cache_root.exists():
                shutil.rmtree(cache_root)
            _write_feature_cache(cache_root, model, processor, samples, features)
    return str(data_root), str(start)


# ---- evaluation ---------------------------------------------------------------------------------------------------


@contextmanager
def fusion_zeroed(model):
    """The fusion token's embedding is zero inside this block (the fusion projector's output is replaced)."""
    inner = model.model
    handle = inner.fusion_projector.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
    try:
        yield
    finally:
        handle.remove()


def _generate(model, processor, cache, samples, task: str, batch_size: int = 32) -> list[str]:
    """Greedy answers from the cached tower features: the collator's prompt path, with a generation prompt."""
    from transformers.utils.chat_template_utils import render_jinja_template

    answers = []
    for begin in range(0, len(samples), batch_size):
        batch = samples[begin : begin + batch_size]
        declared = [cache.modalities(s.id) for s in batch]
        conversations = [
            processor.build_task_messages(
                task, text=s.text, history=s.history, candidates=s.candidates,
                modalities=["video"] if "video" in present else [], max_length=processor.max_length,
            )
            for s, present in zip(batch, declared)
        ]  # fmt: skip
        rendered, _ = render_jinja_template(
            conversations=conversations, chat_template=processor.chat_template, add_generation_prompt=True,
            **processor.tokenizer.special_tokens_map,
        )  # fmt: skip
        inputs = processor(text=rendered, modalities=declared, padding=True, padding_side="left", return_tensors="pt")
        loaded = [cache.load(s.id) for s in batch]
        inputs["tower_features"] = {m: torch.stack([entry[m] for entry in loaded]) for m in loaded[0]}
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=EVAL_MAX_NEW_TOKENS[task], do_sample=False)
        answers += processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return [answer.strip() for answer in answers]


def _score(task, samples, answers, score_kwargs) -> dict:
    from modeling_nanoemox.evaluation.scoring import score

    predictions = [{"id": s.id, "prediction": a} for s, a in zip(samples, answers)]
    references = [{"id": s.id, "reference": s.reference} for s in samples]
    kwargs = dict(score_kwargs.get(task) or {})
    if task in ("mer", "mir"):
        kwargs["labels"] = sorted({c for s in samples for c in (s.candidates or [])}) or None
    metrics = score(task, predictions, references, **kwargs)["metrics"]
    return {
        k: round(float(v), 4) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def evaluate(output_dir: Path, data_root: str, args, clock: StageClock) -> dict:
    """Scores OUTPUT_DIR/final on the held-out split (all samples, conflicting-cue samples, fusion zeroed) and writes
    OUTPUT_DIR/eval_results.json."""
    from transformers import AutoProcessor

    from modeling_nanoemox.data import load_manifest
    from modeling_nanoemox.training import FeatureCache, load_strict

    model = load_strict(output_dir / "final").eval()
    processor = AutoProcessor.from_pretrained(output_dir / "final")
    cache = FeatureCache(output_dir / "feature_cache" if args.feature_cache == "auto" else args.feature_cache)
    samples, _ = load_manifest(Path(data_root) / "test.jsonl")
    scenes = {
        c["id"]: c["scene_type"] for c in map(json.loads, (Path(data_root) / "cues.jsonl").read_text().splitlines())
    }
    chance = json.loads((Path(data_root) / "chance.json").read_text())
    wheel = args.emotion_wheel or os.environ.get("NANOEMOX_EMOTION_WHEEL")
    score_kwargs = {
        "ovmer": {"emotion_wheel": wheel or "none"},
        "mer": {"emotion_wheel": wheel},
        "eri": {"judge": "none"},
    }
    tasks = sorted({s.task for s in samples})
    results = {"tasks": {}, "conflicting_cues": {}, "fusion_zeroed": {}, "fusion_zeroed_conflicting_cues": {}}
    predictions_dir = output_dir / "eval"
    predictions_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=2 * len(samples), desc="eval (+ fusion zeroed)", unit="sample") as bar:
        for zeroed in (False, True):
            for task in tasks:
                task_samples = [s for s in samples if s.task == task]
                if zeroed:
                    with fusion_zeroed(model):
                        answers = _generate(model, processor, cache, task_samples, task)
                else:
                    answers = _generate(model, processor, cache, task_samples, task)
                bar.update(len(task_samples))
                suffix = "_fusion_zeroed" if zeroed else ""
                with (predictions_dir / f"{task}{suffix}.jsonl").open("w", encoding="utf-8") as handle:
                    for s, a in zip(task_samples, answers):
                        row = {"id": s.id, "scene": scenes.get(s.id), "prediction": a, "reference": s.reference}
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                results["fusion_zeroed" if zeroed else "tasks"][task] = _score(
                    task, task_samples, answers, score_kwargs
                )
                conflicting = [(s, a) for s, a in zip(task_samples, answers) if scenes.get(s.id) in CONFLICT_SCENES]
                if conflicting and task in HEADLINE_METRICS:
                    key = "fusion_zeroed_conflicting_cues" if zeroed else "conflicting_cues"
                    metrics = _score(task, [s for s, _ in conflicting], [a for _, a in conflicting], score_kwargs)
                    results[key][task] = {"samples": len(conflicting), **metrics}
    results["chance"] = chance
    results["bars"] = {
        task: {
            "metric": metric,
            "model": results["tasks"].get(task, {}).get(metric),
            "needed": round(chance[task][metric] + (1 - chance[task][metric]) / 2, 4),
        }
        for task, metric in HEADLINE_METRICS.items()
        if task in chance and metric in chance[task]
    }
    for bar in results["bars"].values():
        bar["passed"] = bar["model"] is not None and bar["model"] >= bar["needed"]
    return results


def _print_table(results: dict) -> None:
    lines = [f"{'task':<8}{'metric':<22}{'model':>8}{'chance':>8}{'conflict':>10}{'no fusion':>11}"]
    for task, metrics in results["tasks"].items():
        for metric, value in metrics.items():
            reference = results["chance"].get(task, {}).get(metric)
            conflict = results["conflicting_cues"].get(task, {}).get(metric)
            zeroed = results["fusion_zeroed"].get(task, {}).get(metric)
            lines.append(
                f"{task:<8}{metric:<22}{value:>8.3f}{'' if reference is None else f'{reference:>8.3f}':>8}"
                f"{'' if conflict is None else f'{conflict:>10.3f}':>10}{'' if zeroed is None else f'{zeroed:>11.3f}':>11}"
            )
    sys.stdout.write("\n".join(lines) + "\n")


# The README's results table: (task, label, metrics shown as "a / b") per row.
TABLE_ROWS = (
    ("mer", "accuracy / weighted F1", ("accuracy", "weighted_f1")),
    ("msa", "accuracy / weighted F1", ("accuracy", "weighted_f1")),
    ("mir", "accuracy / macro F1", ("accuracy", "macro_f1")),
    ("erg", "speaker-emotion accuracy / coarse hit rate", ("emotion_accuracy", "coarse_hit_rate")),
    ("ovmer", "exact-word F (no emotion wheel)", ("exact_f_score",)),
    ("eri", "ROUGE-L with the gold rationale (no LLM judge)", ("rouge_l",)),
)


def markdown_table(results: dict) -> str:
    """The results as the README's markdown table (written to OUTPUT_DIR/eval_results.md): per task the model, chance,
    the bar, the conflicting-cue samples alone (their count) and the fusion-zeroed ablation."""

    def values(block: dict, metrics) -> str:
        found = [block.get(metric) for metric in metrics]
        return "—" if any(v is None for v in found) else " / ".join(f"{v:.3f}" for v in found)

    lines = [
        "| task | metric | model | chance | bar | conflicting cues | fusion zeroed |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, label, metrics in TABLE_ROWS:
        if task not in results["tasks"]:
            continue
        bar = results["bars"].get(task)
        conflict = results["conflicting_cues"].get(task)
        conflict_text = "—" if conflict is None else f"{values(conflict, metrics[:1])} ({conflict['samples']})"
        needed = "—" if bar is None else f"{bar['needed']:.3f}" + (" ✓" if bar["passed"] else " ✗")
        lines.append(
            f"| {task.upper().replace('OVMER', 'OV-MER')} | {label} | {values(results['tasks'][task], metrics)} | "
            f"{values(results['chance'].get(task, {}), metrics)} | {needed} | {conflict_text} | "
            f"{values(results['fusion_zeroed'].get(task, {}), metrics)} |"
        )
    return "\n".join(lines) + "\n"


# ---- the calls recipes/p2e.py makes ----------------------------------------------------------------------------

CLOCK = StageClock()  # the run's stages; p2e times its phases with `CLOCK.stage(f"phase {name}")`
MACHINE: dict = {}


def prepare_embedded(output_dir: Path, args) -> tuple[str, str]:
    """p2e's embedded default, before the phases: one intra-op thread per process, the machine recorded, then
    [`prepare`];
    returns (data_root, start model folder). With `NANOEMOX_EMBEDDED_VALIDATION=1` the data root is the validation
    split carved from the training people ([`carve_validation`]), for choosing settings without the test split."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    MACHINE.update(machine())
    data_root, start = prepare(Path(output_dir), args, CLOCK)
    if os.environ.get("NANOEMOX_EMBEDDED_VALIDATION") == "1":
        data_root = str(carve_validation(Path(data_root)))
        logger.warning(f"Validation run: training and scoring on {data_root} (people of the training split).")
    return data_root, start


def evaluate_embedded(output_dir: Path, data_root: str, args) -> dict:
    """p2e's evaluation of the embedded default: [`evaluate`] timed as the `eval` stage, then OUTPUT_DIR/
    eval_results.json with the `run` block (machine, stage times) and the table on stdout; returns the metrics by
    task with the chance levels, as p2e's `evaluate` does."""
    output_dir = Path(output_dir)
    with CLOCK.stage("eval"):
        results = evaluate(output_dir, data_root, args, CLOCK)
    results["run"] = {"machine": MACHINE or machine(), "stages": CLOCK.stages, "total": CLOCK.total()}
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output_dir / "eval_results.md").write_text(markdown_table(results))
    _print_table(results)
    stages = ", ".join(f"{name} {times['wall_s']} s" for name, times in CLOCK.stages.items())
    sys.stdout.write(f"total {results['run']['total']['wall_s']} s wall ({stages})\n")
    # What p2e's own evaluation returns (the training summary's `evaluation`): {task: {metric: value}, "chance": …}.
    return {**results["tasks"], "chance": results["chance"]}

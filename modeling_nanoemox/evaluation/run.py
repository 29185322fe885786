# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox eval run`: generate answers for a manifest with a model folder, then score them.

Generation is deterministic (greedy, the task's one fixed prompt). Two protocols (`protocol=`):

- `"paper"` (the default for MSA and MER): as the paper scores them through MER-UniBench, every sample is asked the
  open-vocabulary (OV-MER) question (the authors' `--zeroshot`, inference_hybird.py:136-138), the emotion labels are
  extracted from the answer with the pluggable extractor (offline lexicon or an LLM), and scored as MER-UniBench: MER
  by the emotion-wheel hit rate, MSA by the sentiment of the extracted labels (evaluation-scoreonly.py:151-194).
- `"direct"` (the default for the other tasks, which have one protocol): the task's own prompt (MSA: "positive /
  negative / neutral", MER: the candidate labels) — prompts the full recipe never trains for MSA and MER.

With `prompt_style="authors"` the prompts are the authors' and generation stops on "###". Predictions are appended to
`RUN_DIR/predictions.jsonl` batch by batch, so a killed run resumes where it stopped: ids already there are skipped.

Bad samples stop the run by default. With `on_missing="skip"` (media files that do not exist) and `on_error="skip"`
(media that cannot be decoded, or a path that leaves the media root) they are left out, counted in the scores'
`meta` and listed in `RUN_DIR/skipped.jsonl`. Relative media paths must stay inside the media root:
`../../../etc/passwd` is refused, never opened.
"""

import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from ..data import load_manifest

logger = logging.get_logger(__name__)

# Enough for each task's answer format; the ERG chain of empathy plus a reply is the longest.
DEFAULT_MAX_NEW_TOKENS = {"msa": 8, "mer": 24, "ovmer": 48, "mir": 16, "eri": 192, "erg": 256}


def read_predictions(path: Path) -> dict[str, dict]:
    """Predictions already written; a line cut by a kill (the last one) is dropped and rewritten later."""
    done = {}
    if not path.exists():
        return done
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                logger.warning(f"{path}: dropping an incomplete last line left by an interrupted run.")
                continue
            raise ValueError(f"{path}:{number}: not valid JSON; delete the file to start over.") from None
        done[str(row["id"])] = row
    return done


# Errors one sample's input can cause (MediaError is a ValueError; a file that cannot be read is an OSError).
SAMPLE_ERRORS = (ValueError, OSError)


PROTOCOLS = ("paper", "direct")
# Tasks the paper scores through the OV-MER question and a label extractor (MER-UniBench).
PAPER_PROTOCOL_TASKS = ("msa", "mer")


def default_protocol(task: str) -> str:
    """`"paper"` for MSA and MER, `"direct"` for the rest."""
    return "paper" if task in PAPER_PROTOCOL_TASKS else "direct"


def prompt_task(task: str, protocol: str) -> str:
    """The task whose prompt is asked: OV-MER for MSA and MER under the paper's protocol, else the task itself."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    return "ovmer" if protocol == "paper" and task in PAPER_PROTOCOL_TASKS else task


def _generate_batch(model, processor, batch, task: str, max_new_tokens: int) -> list[str]:
    """The answers of one batch of samples (processor, greedy generation, decoding); `task` is the prompt's task."""
    conversations = [
        processor.build_task_messages(task, text=s.text, history=s.history,
                                      candidates=s.candidates if task in ("mer", "mir") else None,
                                      video=s.video, audio=s.audio, faces=s.faces, max_length=processor.max_length,
                                      **({"dataset": s.dataset} if s.dataset != "default" else {}))
        for s in batch
    ]  # fmt: skip
    inputs = processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
        padding=True, load_audio_from_video=True,
    ).to(model.device)  # fmt: skip
    extra = processor.generation_kwargs() if hasattr(processor, "generation_kwargs") else {}  # authors: stop on ###
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **extra)
    return processor.batch_decode(output[:, inputs["input_ids"].shape[1] :])


def generate_predictions(
    model,
    processor,
    samples,
    task: str,
    out_dir,
    batch_size: int = 4,
    max_new_tokens=None,
    *,
    on_error: str = "error",
    failures: dict[str, str] | None = None,
    protocol: str = "direct",
):
    """
    Generates an answer for every sample whose id is not yet in `out_dir/predictions.jsonl` and appends it there,
    asking the prompt of `prompt_task(task, protocol)`.

    With `on_error="skip"` a batch that fails is retried sample by sample and the samples whose input raises are
    left out (their id → reason goes into `failures`); with `"error"` the first such error stops the run, naming
    the batch's samples. Returns the prediction rows (old and new) in manifest order.
    """
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error must be 'error' or 'skip', got {on_error!r}.")
    failures = {} if failures is None else failures
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "predictions.jsonl"
    done = read_predictions(path)
    # Rewrite what survived so an interrupted last line does not stay in the file.
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in done.values())
    todo = [sample for sample in samples if sample.id not in done]
    if done:
        logger.warning(f"Resuming: {len(done)} predictions already in {path}, {len(todo)} to go.")
    task = prompt_task(task, protocol)
    max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    with path.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc=f"eval {task}", unit="sample") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            try:
                answers = _generate_batch(model, processor, batch, task, max_new_tokens)
            except SAMPLE_ERRORS as error:
                if on_error != "skip":
                    ids = ", ".join(sample.id for sample in batch)
                    message = f"sample(s) {ids}: {error} (leave unusable samples out with on_error='skip')"
                    try:
                        named = type(error)(message)
                    except Exception:  # an error type with another constructor
                        named = ValueError(message)
                    raise named from None
                batch, answers = _generate_one_by_one(model, processor, batch, task, max_new_tokens, failures)
            for sample, answer in zip(batch, answers):
                row = {"id": sample.id, "prediction": answer.strip()}
                done[sample.id] = row
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(min(batch_size, len(todo) - start))
    return [done[sample.id] for sample in samples if sample.id in done]


def _generate_one_by_one(model, processor, batch, task, max_new_tokens, failures) -> tuple[list, list[str]]:
    kept, answers = [], []
    for sample in batch:
        try:
            answers += _generate_batch(model, processor, [sample], task, max_new_tokens)
            kept.append(sample)
        except SAMPLE_ERRORS as error:
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            failures[sample.id] = reason
            logger.warning(f"Skipping sample {sample.id}: {reason}")
    return kept, answers


def media_outside_root(samples, manifest, media_root) -> dict[str, list[str]]:
    """
    Sample id → the media paths that climb out of the media root with `..` (`../../../etc/passwd`), compared after
    normalising. Absolute paths written in the manifest are the author's choice and are kept; symlinks inside the
    root are the dataset's own business and are not followed.
    """
    if media_root is None and isinstance(manifest, (str, os.PathLike)) and Path(manifest).is_file():
        media_root = Path(manifest).resolve().parent  # load_manifest's default
    root = os.path.abspath(media_root) if media_root is not None else None
    escaping = {}
    for sample in samples:
        for name in ("video", "audio", "faces"):
            path = getattr(sample, name)
            if not path or ".." not in Path(path).parts:
                continue
            resolved = os.path.abspath(path)  # normalises the `..`
            if root is None or os.path.commonpath([resolved, root]) != root:
                escaping.setdefault(sample.id, []).append(str(path))
    return escaping


def run_evaluation(
    model,
    processor,
    manifest,
    task: str,
    out_dir,
    *,
    media_root=None,
    on_missing: str = "error",
    on_error: str | None = None,
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    score_kwargs: dict | None = None,
    plots: bool = True,
    protocol: str | None = None,
) -> dict:
    """
    Generates, scores and writes `predictions.jsonl`, `references.jsonl`, `scores.json`, `scores.md` and plots.

    `protocol`: `"paper"` or `"direct"` (see the module docstring); `None` is `default_protocol(task)`. Under the
    paper's protocol MER needs the emotion wheel (`score_kwargs["emotion_wheel"]`) for its hit rate, MSA the wheel or
    an LLM extractor for the labels' sentiment.

    `on_missing` (media files that do not exist) and `on_error` (undecodable media, paths outside the media root;
    default: as `on_missing`) are `"error"` or `"skip"`; skipped samples are counted in `meta` and listed in
    `skipped.jsonl`.
    """
    from .reports import write_reports
    from .scoring import score

    protocol = default_protocol(task) if protocol is None else protocol
    prompt_task(task, protocol)  # validates
    on_error = on_missing if on_error is None else on_error
    if on_error not in ("error", "skip"):
        raise ValueError(f"on_error must be 'error' or 'skip', got {on_error!r}.")
    samples, report = load_manifest(manifest, media_root=media_root, on_missing=on_missing, tasks={task})
    skipped = {sid: "missing media: " + ", ".join(paths) for sid, paths in report.missing_media.items()}
    escaping = media_outside_root(samples, manifest, media_root)
    if escaping:
        listing = "; ".join(f"{sid}: {', '.join(paths)}" for sid, paths in list(escaping.items())[:10])
        message = f"{len(escaping)} samples name media outside the media root (first 10 — {listing})"
        if on_error != "skip":
            raise ValueError(message + "; refused. Fix the paths or --media-root, or skip them with on_error='skip'.")
        logger.warning(message + "; they are skipped.")
        skipped.update({sid: "outside the media root: " + ", ".join(paths) for sid, paths in escaping.items()})
        samples = [s for s in samples if s.id not in escaping]
    if not samples:
        raise ValueError(
            f"The manifest has no usable {task!r} samples." + (f" ({len(skipped)} skipped)" if skipped else "")
        )
    without_reference = [s.id for s in samples if s.reference is None]
    if without_reference:
        raise ValueError(
            f"{len(without_reference)} samples have no `reference` to score against (first 10: {without_reference[:10]})."
        )
    score_kwargs = dict(score_kwargs or {})
    llm_extractor = score_kwargs.get("extractor") not in (None, "lexicon")
    if protocol == "paper" and score_kwargs.get("emotion_wheel") is None and (task == "mer" or not llm_extractor):
        # Checked before generating: scoring would only find out after the whole run.
        raise ValueError(
            f"{task} under the paper's protocol needs --emotion-wheel (the AffectGPT / MER-UniBench wheel folder)"
            + ("" if task == "mer" else " or an LLM extractor")
            + "; or use --protocol direct."
        )
    failures: dict[str, str] = {}
    predictions = generate_predictions(
        model, processor, samples, task, out_dir, batch_size, max_new_tokens, on_error=on_error, failures=failures,
        protocol=protocol,
    )  # fmt: skip
    skipped.update(failures)
    with (Path(out_dir) / "skipped.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"id": i, "reason": r}, ensure_ascii=False) + "\n" for i, r in skipped.items())
    if not predictions:
        raise ValueError(f"No {task!r} sample could be used: all {len(skipped)} were skipped (see skipped.jsonl).")
    samples = [s for s in samples if s.id not in failures]
    references = [{"id": s.id, "reference": s.reference} for s in samples]
    with (Path(out_dir) / "references.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in references)
    if task in ("mer", "mir") and "labels" not in score_kwargs:
        candidates = sorted({c for s in samples for c in (s.candidates or [])})
        score_kwargs["labels"] = candidates or None
    if task in PAPER_PROTOCOL_TASKS:
        score_kwargs["protocol"] = protocol
    result = score(task, predictions, references, **score_kwargs)
    result["meta"]["protocol"] = protocol
    result["meta"]["prompt_task"] = prompt_task(task, protocol)
    result["meta"]["prompt_style"] = getattr(processor, "prompt_style", "chat")
    result["meta"]["skipped_missing_media"] = len(report.missing_media)
    result["meta"]["skipped_outside_media_root"] = len(escaping)
    result["meta"]["skipped_unusable_media"] = len(failures)
    result["skipped"] = skipped
    write_reports(out_dir, task, result, plots=plots)
    return result

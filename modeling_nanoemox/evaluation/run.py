# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox eval run`: generate answers for a manifest with a model folder, then score them.

Generation is deterministic (greedy, the task's one fixed prompt). Predictions are appended to
`RUN_DIR/predictions.jsonl` batch by batch, so a killed run resumes where it stopped: ids already there are skipped.
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


def generate_predictions(model, processor, samples, task: str, out_dir, batch_size: int = 4, max_new_tokens=None):
    """
    Generates an answer for every sample whose id is not yet in `out_dir/predictions.jsonl` and appends it there.

    Returns every prediction row (old and new) in manifest order.
    """
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
    max_new_tokens = max_new_tokens or DEFAULT_MAX_NEW_TOKENS[task]
    with path.open("a", encoding="utf-8") as handle, tqdm(total=len(todo), desc=f"eval {task}", unit="sample") as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            conversations = [
                processor.build_task_messages(task, text=s.text, history=s.history, candidates=s.candidates,
                                              video=s.video, audio=s.audio, faces=s.faces,
                                              max_length=processor.max_length)
                for s in batch
            ]  # fmt: skip
            inputs = processor.apply_chat_template(
                conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
                padding=True, load_audio_from_video=True,
            ).to(model.device)  # fmt: skip
            with torch.inference_mode():
                output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :])
            for sample, answer in zip(batch, answers):
                row = {"id": sample.id, "prediction": answer.strip()}
                done[sample.id] = row
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    return [done[sample.id] for sample in samples]


def run_evaluation(
    model,
    processor,
    manifest,
    task: str,
    out_dir,
    *,
    media_root=None,
    on_missing: str = "error",
    batch_size: int = 4,
    max_new_tokens: int | None = None,
    score_kwargs: dict | None = None,
    plots: bool = True,
) -> dict:
    """Generates, scores and writes `predictions.jsonl`, `references.jsonl`, `scores.json`, `scores.md` and plots."""
    from .reports import write_reports
    from .scoring import score

    samples, _ = load_manifest(manifest, media_root=media_root, on_missing=on_missing, tasks={task})
    if not samples:
        raise ValueError(f"The manifest has no {task!r} samples.")
    without_reference = [s.id for s in samples if s.reference is None]
    if without_reference:
        raise ValueError(
            f"{len(without_reference)} samples have no `reference` to score against (first 10: {without_reference[:10]})."
        )
    predictions = generate_predictions(model, processor, samples, task, out_dir, batch_size, max_new_tokens)
    references = [{"id": s.id, "reference": s.reference} for s in samples]
    with (Path(out_dir) / "references.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in references)
    score_kwargs = dict(score_kwargs or {})
    if task in ("mer", "mir") and "labels" not in score_kwargs:
        candidates = sorted({c for s in samples for c in (s.candidates or [])})
        score_kwargs["labels"] = candidates or None
    result = score(task, predictions, references, **score_kwargs)
    write_reports(out_dir, task, result, plots=plots)
    return result

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Fills the chain-of-empathy targets of ERG samples: templated from annotated steps, else by a teacher LLM.

    python recipes/build_cot_empathy.py --input INPUT --output manifest.jsonl \
        [--teacher openai --model NAME [--base_url URL] | --teacher transformers --model PATH] [--cache FILE]

INPUT is an AvaMERG-style JSON (`train.json`: conversations with turns; read with the AvaMERG adapter, which also
makes the speaker-emotion `mer` samples) or a JSONL manifest (e.g. the output of `recipes/prepare_data.py
avamerg`, or any manifest with `erg` samples; other tasks pass through unchanged). For each `erg` sample the
target becomes `<think>1. Event scenario: … 2. Speaker emotion: … 3. Emotion cause: … 4. Goal of the response:
…</think> reply` (format in `modeling_nanoemox/data/chain_of_empathy.py`):

- templated when the four steps are annotated (AvaMERG's `chain_of_empathy`, or the sample's `reference`);
- otherwise written by the teacher, validated (four steps, one of the 25 AvaMERG emotions, equal to the annotated
  emotion when there is one), retried with the reason up to --max_attempts, and cached in --cache (JSONL keyed by
  dialogue + prompt version + teacher identity) so a rerun does not ask the teacher again.

Samples that get no valid target are left out of the manifest and listed with the reason in
`<output>.failed.jsonl`; stdout gets one JSON summary (templated / teacher / cached / failed counts). Exact commands:

    # AvaMERG with its annotated steps: templating only, no teacher
    python recipes/build_cot_empathy.py --input data/avamerg/train.json --output manifests/avamerg_cot.jsonl

    # a manifest whose erg samples lack the steps, teacher behind an OpenAI-compatible endpoint (key in $OPENAI_API_KEY)
    python recipes/build_cot_empathy.py --input manifests/avamerg_train.jsonl --output manifests/avamerg_cot.jsonl \
        --teacher openai --model gpt-4o-mini

    # the same with a local vLLM / llama.cpp server
    python recipes/build_cot_empathy.py --input manifests/dialogues.jsonl --output manifests/dialogues_cot.jsonl \
        --teacher openai --model Qwen2.5-7B-Instruct --base_url http://localhost:8000/v1

    # a local transformers chat model (folder or Hub id)
    python recipes/build_cot_empathy.py --input manifests/dialogues.jsonl --output manifests/dialogues_cot.jsonl \
        --teacher transformers --model /models/Qwen2.5-7B-Instruct

Media paths are copied as they are (relative to the media root); `recipes/prepare_data.py` is the place that checks
the media exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from modeling_nanoemox.data import ManifestError, write_manifest
from modeling_nanoemox.data.adapters import read_avamerg
from modeling_nanoemox.data.chain_of_empathy import ChainOfEmpathyBuilder, fill_erg_targets
from modeling_nanoemox.data.manifest import iter_jsonl, parse_sample
from modeling_nanoemox.evaluation.backends import build_backend
from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS


def read_manifest_rows(path: Path) -> list:
    """The samples of a JSONL manifest, media paths left exactly as written (not resolved, not checked)."""
    samples, seen = [], set()
    for row in iter_jsonl(path):
        sample, _ = parse_sample(row, media_root=None)
        if sample.id in seen:
            raise ManifestError(f"sample id {sample.id!r} appears more than once in {path}.")
        seen.add(sample.id)
        samples.append(sample)
    return samples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fill chain-of-empathy targets of ERG samples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--input", required=True, help="AvaMERG-style JSON or a JSONL manifest with erg samples")
    parser.add_argument("--output", required=True, help="manifest to write (JSONL)")
    parser.add_argument("--teacher", choices=("openai", "transformers"), help="teacher LLM backend (default: none)")
    parser.add_argument("--model", help="teacher model name (openai) or folder / Hub id (transformers)")
    parser.add_argument("--base_url", help="OpenAI-compatible API root (default: $OPENAI_BASE_URL or api.openai.com)")
    parser.add_argument("--api_key_env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    parser.add_argument("--cache", help="teacher answer cache, JSONL (default: <output>.teacher_cache.jsonl)")
    parser.add_argument("--max_attempts", type=int, default=3, help="teacher calls per sample at most")
    parser.add_argument("--max_new_tokens", type=int, default=400, help="teacher generation budget per answer")
    parser.add_argument(
        "--labels", help="comma-separated speaker-emotion labels (default: the 25 AvaMERG labels)", default=None
    )
    avamerg = parser.add_argument_group("AvaMERG JSON input")
    avamerg.add_argument("--video_dir", default="video", help="clip folder relative to the media root")
    avamerg.add_argument(
        "--audio_dir", default="audio", help="audio folder relative to the media root; 'none' to omit"
    )
    avamerg.add_argument("--last_turn_only", action="store_true", help="keep the last turn of each conversation")
    avamerg.add_argument("--no_emotion_task", action="store_true", help="do not add the speaker-emotion mer samples")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    source, output = Path(args.input), Path(args.output)
    labels = tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else AVAMERG_LABELS
    try:
        if source.suffix.lower() == ".jsonl":
            samples = read_manifest_rows(source)
        else:
            samples = read_avamerg(
                source,
                video_dir=None if args.video_dir.lower() == "none" else args.video_dir,
                audio_dir=None if args.audio_dir.lower() == "none" else args.audio_dir,
                last_turn_only=args.last_turn_only,
                emotion_task=not args.no_emotion_task,
                labels=labels,
            )
        teacher = None
        if args.teacher:
            teacher = build_backend(
                args.teacher, model=args.model, base_url=args.base_url, api_key_env=args.api_key_env
            )
        elif args.model:
            raise ValueError("--model needs --teacher openai or --teacher transformers")
        cache = Path(args.cache) if args.cache else output.with_name(output.name + ".teacher_cache.jsonl")
        builder = ChainOfEmpathyBuilder(
            teacher,
            cache=cache if teacher is not None else None,
            labels=labels,
            max_attempts=args.max_attempts,
            max_new_tokens=args.max_new_tokens,
        )
    except (OSError, ValueError, TypeError) as error:
        sys.stderr.write(f"build_cot_empathy: {error}\n")
        return 1
    erg_count = sum(sample.task == "erg" for sample in samples)
    if erg_count == 0:
        sys.stderr.write(f"build_cot_empathy: {source} has no erg samples.\n")
        return 1
    kept, report = fill_erg_targets(samples, builder)
    write_manifest(kept, output)
    failures = output.with_name(output.name + ".failed.jsonl")
    if report.failed:
        with failures.open("w", encoding="utf-8") as handle:
            for sample_id, reason in report.failed.items():
                handle.write(json.dumps({"id": sample_id, "reason": reason}, ensure_ascii=False) + "\n")
    elif failures.exists():
        failures.unlink()  # a stale list from an earlier run would contradict this summary
    summary = {
        "input": str(source),
        "output": str(output),
        "samples": len(kept),
        "tasks": dict(Counter(sample.task for sample in kept)),
        "erg": erg_count,
        **report.counts(),
        "teacher_identity": getattr(teacher, "identity", None),
        "cache": str(cache) if teacher is not None else None,
        "failed_list": str(failures) if report.failed else None,
        "failed_ids": list(report.failed)[:20],
    }
    sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""`nanoemox eval`: generate with a model and score, or score existing predictions; prints one JSON object.

    nanoemox eval run --model DIR --data MANIFEST --task T --out RUN_DIR [--batch-size N] [--protocol paper|direct]
    nanoemox eval score --task ovmer --predictions P.jsonl --references R.jsonl --emotion-wheel DIR [--out DIR]

stdout carries exactly one JSON object (metric name → value, then the metadata); logs and the progress bar go to
stderr. Bad input gives one readable line on stderr and exit status 1.

The console script wires this in with [`register`]; `python -m modeling_nanoemox.evaluation.cli eval score ...` runs
it stand-alone through [`main`].
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from nanoemox_processing.prompts_nanoemox import MINTREC2_INTENTS, MINTREC_INTENTS, TASK_NAMES

from .backends import BackendError, build_backend
from .emotion_wheel import LEVELS
from .parsing import read_jsonl
from .reports import write_reports
from .scoring import flat_scores, score

_LABEL_PRESETS = {"mintrec": MINTREC_INTENTS, "mintrec2": MINTREC2_INTENTS}


def _add_score_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASK_NAMES, help="which task's metrics to compute")
    parser.add_argument("--predictions", required=True, help='JSONL rows {"id": ..., "prediction": ...}')
    parser.add_argument("--references", required=True, help='JSONL rows {"id": ..., "reference": ...}')
    parser.add_argument("--out", help="also write scores.json, scores.md and plots into this folder")
    parser.add_argument(
        "--protocol",
        choices=("paper", "direct"),
        default="direct",
        help="msa / mer: 'direct' (answers to the task's own prompt, default here) or 'paper' (answers to the "
        "OV-MER question, scored as MER-UniBench)",
    )
    _add_metric_arguments(parser)


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Nano-EmoX folder or Hub id")
    parser.add_argument("--data", required=True, help="manifest (JSONL or a `datasets` folder) with references")
    parser.add_argument("--task", required=True, choices=TASK_NAMES, help="which task to generate and score")
    parser.add_argument("--out", required=True, help="run folder: predictions.jsonl, scores.json, scores.md, plots")
    parser.add_argument("--batch-size", type=int, default=4, help="samples per generate() call")
    parser.add_argument("--max-new-tokens", type=int, help="generation budget (default: per task)")
    parser.add_argument("--media-root", help="folder relative media paths start from (default: the manifest's)")
    parser.add_argument(
        "--on-missing", choices=("error", "skip"), default="error", help="samples whose media files are missing"
    )
    parser.add_argument(
        "--on-error",
        choices=("error", "skip"),
        help="samples whose media cannot be decoded or leave the media root (default: as --on-missing)",
    )
    parser.add_argument(
        "--protocol",
        choices=("paper", "direct"),
        help="'paper' (default for msa and mer): ask the OV-MER question, extract the labels (--extractor) and score "
        "as MER-UniBench; 'direct': the task's own prompt (default for the other tasks)",
    )
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto")
    _add_metric_arguments(parser)


def _add_metric_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--emotion-wheel",
        default=os.environ.get("NANOEMOX_EMOTION_WHEEL"),
        help="folder with format.csv, synonym.xlsx, wheel1..5.xlsx (AffectGPT / MER-UniBench release); needed by "
        "mer and ovmer (default: $NANOEMOX_EMOTION_WHEEL)",
    )
    parser.add_argument("--level", default="level1", choices=LEVELS, help="headline wheel level for mer / ovmer")
    parser.add_argument("--no-plots", action="store_true", help="skip the matplotlib plots")
    parser.add_argument(
        "--labels",
        help="mir: the full label set, 'mintrec', 'mintrec2' or a comma-separated list (default: the gold labels)",
    )
    parser.add_argument(
        "--extractor",
        default="lexicon",
        choices=("lexicon", "openai", "transformers"),
        help="free text → emotion labels for mer / ovmer: the offline emotion-wheel lexicon (default) or an LLM",
    )
    parser.add_argument("--extractor-model", help="LLM for --extractor openai|transformers (name, folder or hub id)")
    parser.add_argument("--extractor-base-url", help="OpenAI-compatible API root for --extractor openai")
    parser.add_argument("--judge", choices=("openai", "transformers"), help="LLM judge backend (required for eri)")
    parser.add_argument("--judge-model", help="judge model (name, folder or hub id)")
    parser.add_argument("--judge-base-url", help="OpenAI-compatible API root for --judge openai")
    parser.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key of OpenAI-compatible backends (default: OPENAI_API_KEY)",
    )


def register(subparsers) -> argparse._SubParsersAction:
    """Add the `eval` command (with its `score` sub-command) to an argparse `subparsers` object.

    Each sub-command sets `handler`, a callable `handler(args) -> int` returning the exit status.
    """
    eval_parser = subparsers.add_parser(
        "eval",
        help="evaluate predictions with benchmark-compatible metrics",
        description="Evaluate Nano-EmoX predictions on the six tasks (DESIGN §5).",
    )
    commands = eval_parser.add_subparsers(dest="eval_command", metavar="COMMAND")
    commands.required = True
    score_parser = commands.add_parser(
        "score",
        help="score a predictions file against a references file",
        description="Score predictions against references; prints one JSON object of metric name → value.",
    )
    _add_score_arguments(score_parser)
    score_parser.set_defaults(handler=run_score)
    run_parser = commands.add_parser(
        "run",
        help="generate answers for a manifest with a model, then score them",
        description="Deterministic generation (greedy, one fixed prompt per task), resumable, then scoring.",
    )
    _add_run_arguments(run_parser)
    run_parser.set_defaults(handler=run_generate_and_score)
    return commands


def _labels(value: str | None):
    if not value:
        return None
    return _LABEL_PRESETS.get(value.lower()) or [label.strip() for label in value.split(",") if label.strip()]


def _scoring_kwargs(args: argparse.Namespace) -> dict:
    extractor = None
    protocol = getattr(args, "protocol", None)
    if protocol is None and args.task in ("msa", "mer"):
        protocol = "paper"  # eval run's default for msa and mer
    if args.extractor != "lexicon" and (args.task in ("mer", "ovmer") or (args.task == "msa" and protocol == "paper")):
        extractor = build_backend(
            args.extractor, model=args.extractor_model, base_url=args.extractor_base_url, api_key_env=args.api_key_env
        )
    judge = None
    if args.task == "eri":
        if not args.judge:
            raise ValueError("task eri needs an LLM judge: --judge openai|transformers --judge-model NAME")
        judge = build_backend(
            args.judge, model=args.judge_model, base_url=args.judge_base_url, api_key_env=args.api_key_env
        )
    kwargs = {"emotion_wheel": args.emotion_wheel, "level": args.level, "extractor": extractor, "judge": judge}
    if args.labels:
        kwargs["labels"] = _labels(args.labels)
    return kwargs


def _print_scores(result: dict) -> None:
    sys.stdout.write(json.dumps(flat_scores(result), ensure_ascii=False, allow_nan=False) + "\n")
    sys.stdout.flush()


def run_score(args: argparse.Namespace) -> int:
    """The `eval score` command: exit status 0 on success, 1 on bad input (one line on stderr)."""
    try:
        predictions = read_jsonl(args.predictions)
        references = read_jsonl(args.references)
        kwargs = _scoring_kwargs(args)
        if args.task in ("msa", "mer"):
            kwargs["protocol"] = args.protocol
        result = score(args.task, predictions, references, **kwargs)
        if args.out:
            write_reports(args.out, args.task, result, plots=not args.no_plots)
    except (ValueError, TypeError, OSError, ImportError, BackendError) as error:
        message = " ".join(str(error).split())
        sys.stderr.write(f"nanoemox eval score: error: {message}\n")
        return 1
    _print_scores(result)
    return 0


def run_generate_and_score(args: argparse.Namespace) -> int:
    """The `eval run` command (errors reach the console script's handler, which prints one line)."""
    from ..predict import load
    from .run import run_evaluation

    scoring = _scoring_kwargs(args)  # fail on a missing judge before loading the model
    model, processor = load(args.model, args.device, args.dtype)
    result = run_evaluation(
        model,
        processor,
        args.data,
        args.task,
        args.out,
        media_root=args.media_root,
        on_missing=args.on_missing,
        on_error=args.on_error,
        protocol=args.protocol,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        score_kwargs=scoring,
        plots=not args.no_plots,
    )
    _print_scores(result)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone `nanoemox`-style parser holding only the `eval` command."""
    parser = argparse.ArgumentParser(prog="nanoemox", description="Nano-EmoX command line.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `eval ...` from `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())

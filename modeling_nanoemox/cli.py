# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The `nanoemox` command line.

    nanoemox info [--size tiny|full] [--json]
    nanoemox create-tiny OUT_DIR [--seed N]
    nanoemox predict --model DIR_OR_HUB_ID --video F [--audio F] [--text S] [--history JSON] --task T [--json]
    nanoemox eval run --model DIR --data MANIFEST --task T --out RUN_DIR [--batch-size N]
    nanoemox eval score --task T --predictions P.jsonl --references R.jsonl [--emotion-wheel DIR] [--out DIR]

Errors print one readable line on stderr and exit with status 1 (2 for bad arguments); never a traceback.
"""

import argparse
import json
import logging
import sys

from transformers.utils import logging as transformers_logging

logger = transformers_logging.get_logger(__name__)


def _info(args: argparse.Namespace) -> int:
    from .configuration_nanoemox import NanoEmoXConfig
    from .info import format_info, model_info

    config = NanoEmoXConfig() if args.size == "full" else NanoEmoXConfig.tiny()
    info = model_info(config)
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if args.json else format_info(info, args.size))
    return 0


def _create_tiny(args: argparse.Namespace) -> int:
    from .tiny import create_tiny

    path = create_tiny(args.output_dir, seed=args.seed)
    sys.stdout.write(f"{path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nanoemox", description="Nano-EmoX: multimodal emotional intelligence.")
    parser.add_argument("--verbose", action="store_true", help="Show library log messages on stderr.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("info", help="Parameter counts per component and per training phase.")
    info.add_argument("--size", choices=("tiny", "full"), default="full", help="Which configuration to describe.")
    info.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    info.set_defaults(handler=_info)

    tiny = commands.add_parser("create-tiny", help="Write a random tiny model + processor folder (for tests/demos).")
    tiny.add_argument("output_dir", help="Folder to write.")
    tiny.add_argument("--seed", type=int, default=0, help="Seed of the random weights.")
    tiny.set_defaults(handler=_create_tiny)

    for register in _extra_commands():
        register(commands)
    return parser


def _extra_commands():
    from .evaluation.cli import register as register_eval
    from .predict import register as register_predict

    return [register_predict, register_eval]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # transformers' own chatter (progress bars, notices) would pollute output meant for pipes; --verbose brings it
    # back. The project's warnings (no face found, no audio track, ...) always reach stderr.
    transformers_logging.set_verbosity(logging.INFO if args.verbose else logging.ERROR)
    if not args.verbose:
        transformers_logging.disable_progress_bar()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="nanoemox: %(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        sys.stderr.write("nanoemox: interrupted\n")
        return 130
    except (ValueError, TypeError, OSError, RuntimeError, ImportError) as error:
        message = " ".join(str(error).split()) or type(error).__name__
        sys.stderr.write(f"nanoemox {args.command}: error: {message}\n")
        if args.verbose:
            logger.exception("details")
        return 1
    except Exception as error:  # anything else (a library's own error type): still one line, never a traceback
        message = " ".join(str(error).split())[:500]
        sys.stderr.write(f"nanoemox {args.command}: error: {type(error).__name__}: {message} (--verbose for details)\n")
        if args.verbose:
            logger.exception("details")
        return 1


if __name__ == "__main__":
    sys.exit(main())

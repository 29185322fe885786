# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The `nanoemox` command line.

A top-level module, not part of the `modeling_nanoemox` package: importing that package registers the Auto classes,
which loads torch and transformers (seconds), and `nanoemox --help` must not wait for that.

    nanoemox info [--size tiny|full] [--json]
    nanoemox create-tiny OUT_DIR [--seed N]
    nanoemox predict --model DIR_OR_HUB_ID --video F [--audio F] [--text S] [--history JSON] [--candidates A,B]
                     --task T [--json]
    nanoemox eval run --model DIR --data MANIFEST --task T --out RUN_DIR [--batch-size N]
    nanoemox eval score --task T --predictions P.jsonl --references R.jsonl [--emotion-wheel DIR] [--out DIR]

Errors print one readable line on stderr and exit with status 1 (2 for bad arguments); never a traceback.
"""

import argparse
import importlib
import json
import logging
import sys

# Imports of torch, transformers and the command modules happen inside the handlers, so `nanoemox --help` (and a
# mistyped command) answers without loading them.

# Commands whose arguments live in another module: (name, help, "module:register function"). The module is imported
# only when its command runs (or its own --help is asked for); the top-level help needs just the line.
_LAZY_COMMANDS = (
    ("predict", "Answer one task for one clip.", "predict:register"),
    ("eval", "Evaluate predictions with benchmark-compatible metrics.", "evaluation.cli:register"),
)


def _info(args: argparse.Namespace) -> int:
    from modeling_nanoemox.configuration_nanoemox import NanoEmoXConfig
    from modeling_nanoemox.info import format_info, model_info

    config = NanoEmoXConfig() if args.size == "full" else NanoEmoXConfig.tiny()
    info = model_info(config)
    sys.stdout.write(json.dumps(info, indent=2) + "\n" if args.json else format_info(info, args.size))
    return 0


def _create_tiny(args: argparse.Namespace) -> int:
    from modeling_nanoemox.tiny import create_tiny

    path = create_tiny(args.output_dir, seed=args.seed)
    sys.stdout.write(f"{path}\n")
    return 0


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; the arguments of lazily registered commands are added for `command` only (all when `None`)."""
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

    for name, help_text, target in _LAZY_COMMANDS:
        if command is None or command == name:
            module, function = target.split(":")
            getattr(importlib.import_module(f"modeling_nanoemox.{module}"), function)(commands)
        else:
            commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The command named on the command line (the first word that is not a top-level option)."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_in(argv)
    parser = build_parser(command if command in {name for name, _, _ in _LAZY_COMMANDS} else "")
    args = parser.parse_args(argv)
    from transformers.utils import logging as transformers_logging

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
    except Exception as error:  # one line, never a traceback (--verbose adds the details)
        message = " ".join(str(error).split())[:500] or type(error).__name__
        if not isinstance(error, (ValueError, TypeError, OSError, RuntimeError, ImportError)):
            # a library's own error type (KeyError, AssertionError, ...): name it
            message = f"{type(error).__name__}: {message} (--verbose for details)"
        sys.stderr.write(f"nanoemox {args.command}: error: {message}\n")
        if args.verbose:
            transformers_logging.get_logger(__name__).exception("details")
        return 1


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Turns one public corpus's released annotation files into a Nano-EmoX manifest (JSONL).

    python recipes/prepare_data.py CORPUS --annotations PATH --output manifest.jsonl \
        [--media_root DIR] [--on_missing skip|error] [corpus options]

It runs the corpus adapter (`modeling_nanoemox/data/adapters.py`), checks that every media file exists under
`--media_root` with `load_manifest` (`--on_missing error`, the default, stops and lists the samples; `skip` leaves
them out and counts them), and writes the manifest with media paths relative to the media root. `--media_root`
defaults to the manifest's folder, which is also where `load_manifest` looks when it is given no root. Rows the
adapter cannot use are logged with their ids on stderr; stdout gets one JSON summary.

Commands per corpus (the paths follow each release's layout; only --annotations/--media_root change per machine):

    # MIntRec / MIntRec2.0 — the authors' JSON; clips <root>/video/<stem>.mp4
    python recipes/prepare_data.py mintrec --annotations MIntRec/train_MIntRec_ann.json \
        --media_root /data/MIntRec --output manifests/mintrec_train.jsonl
    python recipes/prepare_data.py mintrec2 --annotations MIntRec2/test_MIntRec2_ann.json \
        --media_root /data/MIntRec2 --output manifests/mintrec2_test.jsonl

    # CREMA-D — labels from the file names in AudioWAV/
    python recipes/prepare_data.py crema_d --annotations /data/CREMA-D/AudioWAV \
        --media_root /data/CREMA-D --output manifests/crema_d.jsonl

    # M3ED — annotation.json, one split via splitInfo; speech <root>/modality_speech/<Speaker>_<utt>.wav
    python recipes/prepare_data.py m3ed --annotations /data/M3ED/annotation.json \
        --movies /data/M3ED/splitInfo/movie_list_train.txt --media_root /data/M3ED --output manifests/m3ed_train.jsonl

    # CAER — one split folder <root>/train/<Emotion>/<clip>.avi
    python recipes/prepare_data.py caer --annotations /data/CAER/train --media_root /data/CAER \
        --output manifests/caer_train.jsonl

    # FERV39k — setup list; clips are frame folders <root>/2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip>/
    python recipes/prepare_data.py ferv39k --annotations /data/FERV39k/4_setups/All_scenes/train_All.csv \
        --media_root /data/FERV39k --output manifests/ferv39k_train.jsonl

    # MER-Caption+ — the MER2025 folder (track2/track3 CSVs, subtitle_chieng.csv, video/)
    python recipes/prepare_data.py mer_caption_plus --annotations /data/mer2025-dataset \
        --media_root /data/mer2025-dataset --output manifests/mer_caption_plus.jsonl

    # MERR-Fine — MERR_fine_grained.json; clips <root>/video/<name>.mp4
    python recipes/prepare_data.py merr_fine --annotations data/MERR/MERR_fine_grained.json \
        --media_root /data/MERR --output manifests/merr_fine.jsonl

    # EMER — gt-eng.csv; clips <root>/video/<name>.mp4
    python recipes/prepare_data.py emer --annotations data/EMER/gt-eng.csv --media_root /data/EMER \
        --output manifests/emer_test.jsonl

    # AvaMERG — train.json; clips <root>/video/dia<c>utt<2t>_<speaker>.mp4 and <root>/audio/....wav
    python recipes/prepare_data.py avamerg --annotations data/avamerg/train.json --media_root /data/AvaMERG \
        --output manifests/avamerg_train.jsonl
    # AvaMERG test protocol: the last turn of each conversation, clips in test_video/ and test_audio/
    python recipes/prepare_data.py avamerg --annotations data/avamerg/v_test_v5_0.json --last_turn_only \
        --video_dir test_video --audio_dir test_audio --media_root /data/AvaMERG --output manifests/avamerg_test.jsonl

AvaMERG turns without the four chain-of-empathy steps are written without a target; fill them with
`recipes/build_cot_empathy.py --input manifests/avamerg_train.jsonl ...`. `--skip_media_check` writes the manifest
without looking for the media (e.g. on a machine that only has the annotations).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections import Counter
from pathlib import Path

from modeling_nanoemox.data import ManifestError, load_manifest, write_manifest
from modeling_nanoemox.data.adapters import ADAPTERS, read_corpus

# Command-line option → adapter keyword; each applies only to the adapters that take that keyword.
_OPTIONS = (
    "dataset",
    "video_dir",
    "audio_dir",
    "video_ext",
    "audio_ext",
    "movies",
    "label_types",
    "clips_dir",
    "media_field",
    "subtitles",
    "subtitle_language",
    "last_turn_only",
    "emotion_task",
    "with_sentence",
)
_FOLDER_OPTIONS = ("video_dir", "audio_dir", "clips_dir")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Build a Nano-EmoX manifest from a public corpus.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Corpus options apply only to the corpora whose adapter takes them; see the module docstring.",
    )
    parser.add_argument("corpus", choices=sorted(ADAPTERS), help="which corpus the annotations belong to")
    parser.add_argument("--annotations", required=True, help="annotation file or folder of the corpus release")
    parser.add_argument("--output", required=True, help="manifest to write (JSONL)")
    parser.add_argument("--media_root", help="folder the media paths start from (default: the manifest's folder)")
    parser.add_argument("--on_missing", choices=("error", "skip"), default="error", help="samples with missing media")
    parser.add_argument("--skip_media_check", action="store_true", help="write without checking that media exist")
    corpus = parser.add_argument_group("corpus options")
    corpus.add_argument("--dataset", help="dataset name written into the samples (default: the corpus name)")
    for name in _FOLDER_OPTIONS:
        corpus.add_argument(f"--{name}", help=f"{name.replace('_', ' ')} relative to the media root; 'none' to omit")
    corpus.add_argument("--video_ext", help="video file extension (e.g. .mp4, .avi; '' for frame folders)")
    corpus.add_argument("--audio_ext", help="audio file extension (MIntRec)")
    corpus.add_argument("--movies", help="M3ED: splitInfo/movie_list_<split>.txt to keep one split")
    corpus.add_argument(
        "--label_types", nargs="+", choices=("ovlabel", "description"), help="MER-Caption+ / MERR-Fine"
    )
    corpus.add_argument("--media_field", choices=("video", "faces"), help="FERV39k: where the clip folder goes")
    corpus.add_argument("--subtitles", help="MER-Caption+: subtitle CSV (default: subtitle_chieng.csv in the folder)")
    corpus.add_argument("--subtitle_language", choices=("english", "chinese"), help="MER-Caption+ subtitle column")
    corpus.add_argument("--last_turn_only", action="store_true", default=None, help="AvaMERG: last turn only (test)")
    corpus.add_argument(
        "--no_emotion_task", dest="emotion_task", action="store_false", default=None, help="AvaMERG: no mer samples"
    )
    corpus.add_argument(
        "--no_sentence", dest="with_sentence", action="store_false", default=None, help="CREMA-D: no sentence text"
    )
    return parser


def adapter_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The corpus options given on the command line, checked against what the corpus's adapter takes."""
    function, fixed = ADAPTERS[args.corpus]
    accepted = set(inspect.signature(function).parameters) - set(fixed)
    options = {}
    for name in _OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in accepted:
            parser.error(f"--{name} does not apply to {args.corpus}; it takes {sorted(accepted - {'annotations'})}")
        if name in _FOLDER_OPTIONS and value.strip().lower() == "none":
            value = None
        options[name] = value
    return options


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = adapter_options(args, parser)
    output = Path(args.output)
    try:
        samples = read_corpus(args.corpus, args.annotations, **options)
    except (OSError, ValueError) as error:
        sys.stderr.write(f"prepare_data: {error}\n")
        return 1
    if not samples:
        sys.stderr.write(f"prepare_data: {args.annotations} gave no samples ({len(samples.skipped)} rows skipped).\n")
        return 1
    media_root = Path(args.media_root) if args.media_root else output.resolve().parent
    missing: dict[str, list[str]] = {}
    if not args.skip_media_check:
        try:
            _, report = load_manifest(
                [s.to_dict() for s in samples], media_root=media_root, on_missing=args.on_missing
            )
        except ManifestError as error:
            sys.stderr.write(f"prepare_data: {error}\n")
            return 1
        missing = report.missing_media
    # Write the adapter's samples, not the loaded ones: their media paths stay relative to the media root.
    kept = [sample for sample in samples if sample.id not in missing]
    if not kept:
        sys.stderr.write(
            f"prepare_data: all {len(samples)} samples name missing media under {media_root}; nothing written. "
            "Check --media_root and the folder options (or use --skip_media_check).\n"
        )
        return 1
    write_manifest(kept, output)
    summary = {
        "corpus": args.corpus,
        "dataset": samples.dataset,
        "output": str(output),
        "media_root": None if args.skip_media_check else str(media_root),
        "samples": len(kept),
        "tasks": dict(Counter(sample.task for sample in kept)),
        "skipped_rows": len(samples.skipped),
        "skipped_missing_media": len(missing),
        "without_target": len([sid for sid in samples.untargeted if sid not in missing]),
    }
    sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

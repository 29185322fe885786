# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Time `score("ovmer", ...)` on synthetic samples drawn from the emotion-wheel vocabulary.

    python benchmarks/bench_eval_score.py --emotion-wheel ../shared/data/emotion_wheel [--n 100000]

Predictions mix the input shapes the scorer accepts: JSON lists, "[a, b]" strings, "a, b" strings and answers in
the training template ("The character's emotional state is a, b, c."); gold labels are "[a, b, c]" strings. The
timing includes loading the emotion wheel and building its maps (done once per process). Target: < 30 s for
100,000 samples on a 2-core CPU machine.
"""

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

from _machine import cpu_model

from modeling_nanoemox.evaluation import EmotionWheel, flat_scores, score


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def synthetic_rows(vocabulary: list[str], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    predictions, references = [], []
    for i in range(n):
        gold = rng.sample(vocabulary, rng.randint(1, 5))
        pred = rng.sample(vocabulary, rng.randint(0, 6))
        shape = i % 4
        if shape == 0:
            value = pred
        elif shape == 1:
            value = "[" + ", ".join(pred) + "]"
        elif shape == 2:
            value = ", ".join(pred)
        else:
            value = "The character's emotional state is " + ", ".join(pred) + "." if pred else "[]"
        predictions.append({"id": f"sample_{i:07d}", "prediction": value})
        references.append({"id": f"sample_{i:07d}", "reference": "[" + ", ".join(gold) + "]"})
    rng.shuffle(predictions)
    return predictions, references


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_wheel = Path(__file__).resolve().parents[2] / "shared" / "data" / "emotion_wheel"
    parser.add_argument("--emotion-wheel", default=str(default_wheel))
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # A private instance for the synthetic vocabulary, so `score` below still takes the cold path: it parses the
    # folder and builds the word -> cluster maps inside the timed call.
    vocabulary = sorted(w for w in EmotionWheel(args.emotion_wheel).vocabulary() if "," not in w)
    predictions, references = synthetic_rows(vocabulary, args.n, args.seed)

    start = time.perf_counter()
    result = score("ovmer", predictions, references, emotion_wheel=args.emotion_wheel)
    elapsed = time.perf_counter() - start
    flat = flat_scores(result)
    sys.stdout.write(
        f"CPU: {cpu_model()} ({platform.machine()}, {usable_cores()} usable cores)\n"
        f"score('ovmer') on {args.n:,} samples: {elapsed:.2f} s "
        f"(EW level-1 F = {flat['ew_level1_f_score']:.4f}, routes: json {flat['n_pred_json_list']}, "
        f"string {flat['n_pred_label_string']}, template {flat['n_pred_template']}, "
        f"extractor {flat['n_pred_extractor']})\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The authors' published prediction CSVs (output/ov-merd-eval/) read through our parsers.

They are EMER descriptions (the ERI task), not OV-MERD label lists, and their OV-MERD / ERI numbers were produced with
an LLM extractor / GPT-3.5 judge that cannot run here, so no published number is asserted (see the evaluation
report). What is checked: the multi-line CSVs parse, ids align with the EMER ground truth, and R1-Omni's
`<answer>X</answer>` answers take the template route. Reads the mirror of the authors' repository when present.
"""

import subprocess
from pathlib import Path

import pytest

from modeling_nanoemox.evaluation import read_csv_rows, read_emer_references, score

MIRROR = Path("/work/.mirror/waHAHJIAHAO+Nano-EmoX/repo")
WHEEL_DIR = Path(__file__).parents[2] / "shared" / "data" / "emotion_wheel"


def git_show(path: str, destination: Path) -> Path:
    if not MIRROR.exists():
        pytest.skip(f"mirror of the authors' repository not found at {MIRROR}")
    result = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{path}"], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"{path} not in the mirror: {result.stderr.decode(errors='replace').strip()}")
    destination.write_bytes(result.stdout)
    return destination


def test_published_r1omni_predictions_parse(tmp_path):
    if not (WHEEL_DIR / "format.csv").is_file():
        pytest.skip(f"emotion-wheel resources not found at {WHEEL_DIR}")
    gold = read_emer_references(git_show("output/ov-merd-eval/r1omni/gt-eng.csv", tmp_path / "gt.csv"))
    predictions = read_csv_rows(
        git_show("output/ov-merd-eval/r1omni/R1-Omni_for_EMER.csv", tmp_path / "pred.csv"),
        id_column="names",
        value_column="chi_reasons",
    )
    assert len(predictions) == len(gold) == 100
    assert all("<think>" in row["prediction"] for row in predictions)  # multi-line quoted fields survive
    references = [{"id": row["id"], "reference": row["reference"]["emotion"]} for row in gold]
    result = score("mer", predictions, references, emotion_wheel=WHEEL_DIR)
    assert result["meta"]["n_pred_template"] == 100 and result["meta"]["n_pred_extractor"] == 0
    assert 0.0 < result["metrics"]["hit_rate"] < 1.0

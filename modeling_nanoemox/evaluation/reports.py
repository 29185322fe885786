# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Score reports: `scores.json`, `scores.md` and plots (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from .emotion_wheel import LEVELS, WHEELS


def _format(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def markdown_table(task: str, scores: dict) -> str:
    """A Markdown report: one table of metrics, one of metadata."""
    lines = [f"# Scores — {task}", "", "| metric | value |", "|---|---|"]
    lines += [f"| {name} | {_format(value)} |" for name, value in scores["metrics"].items()]
    lines += ["", "| setting | value |", "|---|---|"]
    lines += [f"| {name} | {_format(value)} |" for name, value in scores["meta"].items()]
    return "\n".join(lines) + "\n"


def _plot_confusion(path: Path, labels: list[str], matrix: list[list[int]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    counts = np.asarray(matrix, dtype=float)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if len(labels) <= 12:
        for (row, col), count in np.ndenumerate(counts):
            if count:
                ax.text(col, row, f"{int(count)}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_bars(path: Path, groups: list[str], series: dict[str, list[float | None]], title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 4))
    for i, (name, values) in enumerate(series.items()):
        heights = [0.0 if v is None else v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_reports(out_dir: str | os.PathLike, task: str, scores: dict, *, plots: bool = True) -> list[Path]:
    """Write `scores.json` (everything [`score`] returned), `scores.md` and the task's plots into `out_dir`.

    Plots: `confusion_matrix.png` for the closed-set tasks (msa, mir; erg on coarse classes) and `per_wheel.png` for
    ovmer (F per wheel at both levels) and mer (hit rate per wheel). Returns the written paths.
    """
    if scores.get("task") not in (None, task):
        raise ValueError(f"write_reports got task {task!r} but scores for task {scores.get('task')!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    json_path = out / "scores.json"
    json_path.write_text(json.dumps(scores, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    written.append(json_path)
    md_path = out / "scores.md"
    md_path.write_text(markdown_table(task, scores), encoding="utf-8")
    written.append(md_path)
    if not plots:
        return written

    details, metrics = scores.get("details", {}), scores["metrics"]
    confusion = details.get("confusion")
    if confusion and any(any(row) for row in confusion["matrix"]):
        path = out / "confusion_matrix.png"
        _plot_confusion(path, confusion["labels"], confusion["matrix"], f"{task}: confusion matrix")
        written.append(path)
    if task == "ovmer":
        path = out / "per_wheel.png"
        series = {lev: [metrics.get(f"{w}_{lev}_f_score") for w in WHEELS] for lev in LEVELS}
        _plot_bars(path, list(WHEELS), series, "OV-MER: emotion-wheel F-score per wheel", "F-score")
        written.append(path)
    elif task == "mer":
        path = out / "per_wheel.png"
        series = {scores["meta"].get("level", "level1"): [metrics.get(f"{w}_hit_rate") for w in WHEELS]}
        _plot_bars(path, list(WHEELS), series, "MER: hit rate per wheel", "hit rate")
        written.append(path)
    return written

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Benchmark-compatible evaluation of the six Nano-EmoX tasks (DESIGN §5).

```python
from modeling_nanoemox.evaluation import score, flat_scores, write_reports

result = score("ovmer", predictions, references, emotion_wheel="path/to/emotion_wheel")
headline = flat_scores(result)["ew_level1_f_score"]
write_reports("run_dir", "ovmer", result)
```

Metric definitions are in [`modeling_nanoemox.evaluation.scoring`]; the emotion-wheel resources (not shipped; from
the AffectGPT / MER-UniBench releases) in [`modeling_nanoemox.evaluation.emotion_wheel`]; the LLM backends of the
ERI judge and the label extractor in [`modeling_nanoemox.evaluation.backends`].
"""

from .backends import BackendError, ChatBackend, OpenAIChatBackend, TransformersChatBackend, build_backend
from .emotion_wheel import GROUPINGS, LEVELS, WHEELS, EmotionWheel, load_emotion_wheel, split_label_string
from .extractors import LabelExtractor, LexiconExtractor, LLMLabelExtractor
from .judge import JUDGE_PROMPT_VERSION, ERIJudge, parse_judge_score
from .labels import COARSE_CLASS, COARSE_CLASSES
from .parsing import align_rows, read_csv_rows, read_emer_references, read_jsonl
from .reports import write_reports
from .scoring import flat_scores, score

__all__ = [
    "COARSE_CLASS",
    "COARSE_CLASSES",
    "GROUPINGS",
    "JUDGE_PROMPT_VERSION",
    "LEVELS",
    "WHEELS",
    "BackendError",
    "ChatBackend",
    "ERIJudge",
    "EmotionWheel",
    "LLMLabelExtractor",
    "LabelExtractor",
    "LexiconExtractor",
    "OpenAIChatBackend",
    "TransformersChatBackend",
    "align_rows",
    "build_backend",
    "flat_scores",
    "load_emotion_wheel",
    "parse_judge_score",
    "read_csv_rows",
    "read_emer_references",
    "read_jsonl",
    "score",
    "split_label_string",
    "write_reports",
]

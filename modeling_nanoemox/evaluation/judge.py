# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""LLM judge for emotion reason inference (ERI), after the EMER protocol.

Two scores on a 1–10 scale, as in the authors' `eval_ovmerd.py` (their prompts are Chinese and GPT-3.5 was the
judge; ours are English and the judge is whatever backend you pass, recorded by identity and prompt version):

- **clue overlap**: the judge compares the emotional clues of the gold rationale and the predicted one;
- **label overlap**: the judge first summarises each rationale to emotion words, then rates how much the two
  emotion summaries overlap.

A reply without a readable score in [1, 10] is a *parse failure*: it is counted and reported and left out of the
mean. (The authors' script scores it 0, which silently drags the mean down.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .backends import ChatBackend

JUDGE_PROMPT_VERSION = "eri-judge-v1"

_CLUE_PROMPT = """You compare two descriptions of the same person in a video.
Step 1: summarise what the REFERENCE description says about the person's emotional state and the clues for it.
Step 2: summarise what the PREDICTION says about the person's emotional state and the clues for it.
Step 3: rate how much the PREDICTION overlaps with the REFERENCE, from 1 (no overlap) to 10 (same emotional state \
and the same clues).
End your reply with a final line of the form: Score: <integer from 1 to 10>

REFERENCE: {gold}

PREDICTION: {pred}"""

_SUMMARY_PROMPT = """Read the description of a person in a video and name the person's most likely emotional \
state. Reply with emotion words only, separated by commas.

Example description: He looks happy on the surface, but in fact he is very anxious.
Example reply: anxious

Description: {text}"""

_LABEL_PROMPT = """Rate how much the PREDICTED emotions overlap with the REFERENCE emotions, from 1 (no overlap) \
to 10 (the same emotions). Synonyms count as overlap.
End your reply with a final line of the form: Score: <integer from 1 to 10>

REFERENCE emotions: {gold}

PREDICTED emotions: {pred}"""

_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_SCORE_AFTER_KEYWORD = re.compile(r"score(?:\s+of)?\W{0,6}?(\d+(?:\.\d+)?)", re.IGNORECASE)
_BARE_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\.?\s*$")


def parse_judge_score(reply: str | None) -> float | None:
    """The 1–10 score in a judge reply, or `None` when there is none.

    Accepted, in this order: a JSON object with a numeric "score"; the last "Score: N" (also "score = N/10",
    "**Score**: N"); a reply that is only a number. Values outside [1, 10] are rejected.
    """
    if not reply:
        return None
    candidates: list[str] = []
    for blob in _JSON_OBJECT.findall(reply):
        try:
            value = json.loads(blob).get("score")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            candidates.append(str(value))
    if not candidates:
        keyword = _SCORE_AFTER_KEYWORD.findall(reply)
        if keyword:
            candidates.append(keyword[-1])
    if not candidates:
        bare = _BARE_NUMBER.match(reply)
        if bare:
            candidates.append(bare.group(1))
    if not candidates:
        return None
    value = float(candidates[0])
    return value if 1.0 <= value <= 10.0 else None


class ERIJudge:
    """Scores predicted rationales against gold rationales with a chat LLM.

    `identity` is `<backend identity>|prompt=<JUDGE_PROMPT_VERSION>`.
    """

    prompt_version = JUDGE_PROMPT_VERSION

    def __init__(self, backend: ChatBackend, max_new_tokens: int = 384, summary_max_new_tokens: int = 64):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.summary_max_new_tokens = summary_max_new_tokens
        self.identity = backend.identity

    def _ask(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        batch = [[{"role": "user", "content": prompt}] for prompt in prompts]
        replies = self.backend.chat_batch(batch, max_new_tokens=max_new_tokens)
        if len(replies) != len(prompts):
            raise ValueError(f"The judge backend returned {len(replies)} replies for {len(prompts)} prompts")
        return replies

    def score(self, gold: Sequence[str], pred: Sequence[str]) -> dict:
        """Per-sample clue and label scores (`None` on parse failure) plus the raw replies.

        Returns `{"clue": [...], "label": [...], "clue_replies": [...], "label_replies": [...],
        "gold_emotions": [...], "pred_emotions": [...]}`.
        """
        if len(gold) != len(pred):
            raise ValueError(f"gold and pred must have the same length, got {len(gold)} and {len(pred)}")
        clue_replies = self._ask(
            [_CLUE_PROMPT.format(gold=g, pred=p) for g, p in zip(gold, pred)], self.max_new_tokens
        )
        # Gold rationales repeat across runs; summarise each distinct one once.
        unique_gold = list(dict.fromkeys(gold))
        summaries = self._ask(
            [_SUMMARY_PROMPT.format(text=t) for t in unique_gold + list(pred)], self.summary_max_new_tokens
        )
        gold_summary = dict(zip(unique_gold, (s.strip() for s in summaries[: len(unique_gold)])))
        gold_emotions = [gold_summary[g] for g in gold]
        pred_emotions = [s.strip() for s in summaries[len(unique_gold) :]]
        label_replies = self._ask(
            [_LABEL_PROMPT.format(gold=g, pred=p) for g, p in zip(gold_emotions, pred_emotions)],
            self.max_new_tokens,
        )
        return {
            "clue": [parse_judge_score(reply) for reply in clue_replies],
            "label": [parse_judge_score(reply) for reply in label_replies],
            "clue_replies": clue_replies,
            "label_replies": label_replies,
            "gold_emotions": gold_emotions,
            "pred_emotions": pred_emotions,
        }

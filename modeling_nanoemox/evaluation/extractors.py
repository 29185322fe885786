# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Free text → emotion-label list, for OV-MER / MER predictions that are not already label lists.

The benchmark protocol (MER-UniBench) asks an LLM to list the emotions a description attributes to the person;
[`LLMLabelExtractor`] does that with any [`ChatBackend`]. [`LexiconExtractor`] is the deterministic offline
default: it finds the emotion-wheel vocabulary in the text. It is exact on answers that name emotions and an
approximation on long descriptions (it cannot tell "she was not angry" from "anger" beyond a simple negation rule,
nor a scene word from an emotion word beyond a fixed stoplist) — report the extractor with the scores, as the scorer
does, and prefer the LLM extractor for numbers comparable with published ones.

Every extractor has an `identity` string that the scorer records.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from .backends import ChatBackend
from .emotion_wheel import EmotionWheel, load_emotion_wheel, split_label_string

# Words of the emotion-wheel vocabulary (format.csv generates many derived forms) that, in descriptions of a video,
# nearly always describe the scene, the speech or the reasoning rather than a felt emotion. Adjectives that
# annotators do use as OV-MER labels (calm, serious, relaxed, focused, ...) are deliberately NOT listed.
LEXICON_STOPWORDS = frozenset(
    """
    emotion emotions emotional emotionally sentiment sentiments feeling feelings mood state states
    person personal people facial face faces facing faced speech speaking spoken speak see seen sees seeing go goes
    going gone went open opens opening opened related information question questions questioning questioned
    considering consider evaluation support supports supporting supported certain use used using uses significant
    determine determined current currently left leave leaves quickly quick important importance intense intensity
    clear clearly lack lacking lacks include includes including involve involves involving involved involvement
    interest interests here directed direct direction directions responding respond reflects reflect reflecting
    reflected reflection observation observations observed observing focus reacting react sharp challenge
    challenges moving move moves moved thought thoughts thinking think closed close low lower receiving received
    receive regarding active actively analyze analyzing bit believe believes believing private forget help helps
    avoid rest less push bright meaning means present reveal reveals revealing revealed aware interesting play
    playing please expectations expectation arousal associated demand slight slightly engage engaging attention
    acknowledgment acknowledging responsibilities responsibility mistake mistakes strong stronger strongly soft
    gentle busy dare might shaking shook shake members member positive negative
    """.split()
)

# A match preceded (within the same clause) by one of these within three tokens is treated as negated and dropped.
_NEGATORS = frozenset({"not", "no", "never", "without", "nor", "neither", "hardly", "barely", "lacks", "lack"})
_TOKEN = re.compile(r"[a-z]+(?:['’-][a-z]+)*|[.,;:!?()\"]")
_CLAUSE_BREAK = frozenset('.,;:!?()"')


class LabelExtractor(ABC):
    """Free text → list of emotion words. Subclasses set `identity`."""

    identity: str = "unnamed-extractor"

    @abstractmethod
    def extract(self, texts: Sequence[str]) -> list[list[str]]:
        """One lower-case label list per text (possibly empty)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


class LexiconExtractor(LabelExtractor):
    """Deterministic extractor over the emotion-wheel vocabulary (all `format.csv` surface forms + wheel words).

    Scans the lower-cased text left to right, taking the longest vocabulary phrase at each position (phrases of up
    to four words, e.g. "fed up", "at ease"); drops [`LEXICON_STOPWORDS`] and matches negated within their clause
    ("not happy"); keeps the first occurrence of each word, in text order.
    """

    version = "lexicon-v1"

    def __init__(self, emotion_wheel: str | EmotionWheel, stopwords: frozenset[str] = LEXICON_STOPWORDS):
        wheel = load_emotion_wheel(emotion_wheel)
        self.vocabulary = frozenset(word for word in wheel.vocabulary() if word not in stopwords)
        self._phrases: dict[str, list[tuple[str, ...]]] = {}
        for word in self.vocabulary:
            tokens = tuple(_TOKEN.findall(word))
            if tokens and not any(t in _CLAUSE_BREAK for t in tokens):
                self._phrases.setdefault(tokens[0], []).append(tokens)
        for candidates in self._phrases.values():
            candidates.sort(key=len, reverse=True)
        self.identity = f"{self.version}:{wheel.folder.name}"

    def extract_one(self, text: str) -> list[str]:
        tokens = _TOKEN.findall(text.lower().replace("’", "'"))
        found: list[str] = []
        i = 0
        while i < len(tokens):
            match = None
            for phrase in self._phrases.get(tokens[i], ()):
                if tuple(tokens[i : i + len(phrase)]) == phrase:
                    match = phrase
                    break
            if match is None:
                i += 1
                continue
            if not self._negated(tokens, i):
                word = " ".join(match)
                if word not in found:
                    found.append(word)
            i += len(match)
        return found

    @staticmethod
    def _negated(tokens: list[str], position: int) -> bool:
        for back in range(1, 4):
            if position - back < 0:
                return False
            token = tokens[position - back]
            if token in _CLAUSE_BREAK:
                return False
            if token in _NEGATORS or token.endswith("n't"):
                return True
        return False

    def extract(self, texts: Sequence[str]) -> list[list[str]]:
        return [self.extract_one(text) for text in texts]


EXTRACT_PROMPT_VERSION = "extract-v1"
_EXTRACT_PROMPT = (
    "Below is a description of a person in a video. List every emotional state that the description attributes to "
    "the person, as English emotion words (adjectives or nouns, lower case) separated by commas. Reply with the list "
    "only, nothing else. If the description attributes no emotion to the person, reply: none\n\n"
    "Description: {text}"
)


class LLMLabelExtractor(LabelExtractor):
    """Asks a chat LLM for the emotion words of each text (the MER-UniBench protocol), parses a comma list."""

    def __init__(self, backend: ChatBackend, max_new_tokens: int = 64):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.identity = f"llm:{backend.identity}|prompt={EXTRACT_PROMPT_VERSION}"

    def extract(self, texts: Sequence[str]) -> list[list[str]]:
        batch = [[{"role": "user", "content": _EXTRACT_PROMPT.format(text=text)}] for text in texts]
        replies = self.backend.chat_batch(batch, max_new_tokens=self.max_new_tokens)
        return [parse_extractor_reply(reply) for reply in replies]


def parse_extractor_reply(reply: str) -> list[str]:
    """The label list in an extractor LLM's reply: first non-empty line, comma-split, "none" → []."""
    lines = [line.strip() for line in (reply or "").strip().splitlines() if line.strip()]
    if not lines:
        return []
    line = re.sub(r"^(?:output|answer|emotions?|labels?)\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    labels = [label.lower().strip(" .") for label in split_label_string(line)]
    return [label for label in labels if label and label != "none"]


# ---- emotion labels → sentiment (the paper's MSA protocol: openset → sentiment, evaluation-scoreonly.py:182-194) ----

# Level-1 clusters of the five emotion wheels by valence; "surprised" and "genius" count as neither.
POSITIVE_CLUSTERS = frozenset({"happy", "joyful", "joy", "peaceful", "powerful"})
NEGATIVE_CLUSTERS = frozenset(
    {"sad", "mad", "angry", "anger", "scared", "fearful", "fear", "disgusted", "disgust", "bad"}
)
SENTIMENTS = ("positive", "negative", "neutral")


class LabelSentiment(ABC):
    """Emotion-label list → "positive" / "negative" / "neutral". Subclasses set `identity`."""

    identity: str = "unnamed-sentiment"

    @abstractmethod
    def sentiment(self, label_lists: Sequence[Sequence[str]]) -> list[str]:
        """One of [`SENTIMENTS`] per label list."""


class LexiconSentiment(LabelSentiment):
    """Offline stand-in for the authors' LLM step: each label votes with the valence of its level-1 cluster on each of
    the five wheels ([`POSITIVE_CLUSTERS`] +1, [`NEGATIVE_CLUSTERS`] -1); a label's sign is that of its votes, the
    list's sentiment that of the sum of its labels' signs (0, or no label → "neutral", as the authors' `[]`)."""

    version = "wheel-valence-v1"

    def __init__(self, emotion_wheel: str | EmotionWheel):
        self.wheel = load_emotion_wheel(emotion_wheel)
        self.identity = f"{self.version}:{self.wheel.folder.name}"

    def label_sign(self, label: str) -> int:
        from .emotion_wheel import WHEELS

        votes = 0
        for wheel in WHEELS:
            cluster = self.wheel.map_word(label, wheel, "level1")
            votes += (cluster in POSITIVE_CLUSTERS) - (cluster in NEGATIVE_CLUSTERS)
        return (votes > 0) - (votes < 0)

    def sentiment(self, label_lists: Sequence[Sequence[str]]) -> list[str]:
        results = []
        for labels in label_lists:
            total = sum(self.label_sign(label) for label in labels)
            results.append("positive" if total > 0 else "negative" if total < 0 else "neutral")
        return results


# The authors' prompt, verbatim (utils/qwen.py:238-245 of waHAHJIAHAO/Nano-EmoX @ b08f985).
_SENTIMENT_PROMPT = (
    "Please act as an expert in the field of emotions.             We provide a few words to describe the emotions of "
    "a character.             Please choose the most likely sentiment from the given candidates: [positive, negative, "
    "neutral]             Please direct output answer without analyzing process.             Input: [joyful]; Output: "
    "positive             Input: []; Output: neutral             Input: {reason}; Output: "
)


class LLMSentiment(LabelSentiment):
    """The authors' step: an LLM picks positive / negative / neutral for the label list (their prompt); a reply
    without one of the three words counts as neutral, as their scorer does (0)."""

    def __init__(self, backend: ChatBackend, max_new_tokens: int = 8):
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.identity = f"llm:{backend.identity}|prompt=authors-openset-to-sentiment"

    def sentiment(self, label_lists: Sequence[Sequence[str]]) -> list[str]:
        batch = [[{"role": "user", "content": _SENTIMENT_PROMPT.format(reason="[" + ", ".join(labels) + "]")}]
                 for labels in label_lists]  # fmt: skip
        replies = self.backend.chat_batch(batch, max_new_tokens=self.max_new_tokens)
        results = []
        for reply in replies:
            match = re.search(r"\b(positive|negative|neutral)\b", (reply or "").lower())
            results.append(match.group(1) if match else "neutral")
        return results

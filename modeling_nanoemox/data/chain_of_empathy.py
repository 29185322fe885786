# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The chain of empathy: the ERG training target, built from AvaMERG's four annotated steps or by a teacher LLM.

## The target format (one format, everywhere)

```
<think>1. Event scenario: {event_scenario} 2. Speaker emotion: {speaker_emotion}. 3. Emotion cause: {emotion_cause} \
4. Goal of the response: {goal_to_response}</think> {reply}
```

(one line; the backslash above only wraps it here). For example:

```
<think>1. Event scenario: The speaker lost their job after ten years. 2. Speaker emotion: sadness. 3. Emotion \
cause: Losing a long-held job feels like losing part of who they are. 4. Goal of the response: Acknowledge the \
loss and offer support.</think> I'm so sorry. Ten years is a long time — how are you holding up?
```

- The four steps come in this order (DESIGN §1), numbered, separated by one space. Each value is one line (runs of
  whitespace, newlines included, collapse to one space) and ends with sentence punctuation (a period is added when
  it has none), so a step cannot run into the next one.
- Step 2 is exactly one emotion word in lower case, "2. Speaker emotion: sadness." — the form the ERG scorer
  (`modeling_nanoemox.evaluation.scoring.extract_speaker_emotion`, "Speaker emotion: X") reads. Do not write "Speaker
  emotion: the emotion of the speaker is X": that scorer would read "the".
- The reply follows `</think>` after one space and may span several lines.
- AvaMERG's field names are the authors': `turn["chain_of_empathy"]` with `event_scenario`, `speaker_emotion`,
  `emotion_cause`, `goal_to_response`, and the listener's reply in `turn["response"]`. In a manifest the same four
  names (the emotion also as `emotion`, the scorer's key) and `response` live in the `reference` object of an
  `erg` sample.

`format_chain_of_empathy(fields, response, style="authors")` writes the authors' target instead (base_dataset.py:
425-430 of github.com/waHAHJIAHAO/Nano-EmoX, paper Fig. 5), for training with `prompt_style="authors"`:

```
<think>Firstly, the event scenario of this conversation is: {event_scenario}
Secondly, the emotion of the speaker is {speaker_emotion}
Thirdly, the emotion cause is {emotion_cause}
Fourthly, the goal to response is {goal_to_response}</think>
 {reply}
```

(values verbatim, no period added; the reply after "</think>\n" and one space).

[`parse_chain_of_empathy`] reads both formats back (and tolerates what LLMs typically write instead: no numbers,
markdown bold, steps on one line, a missing reply).

## Teacher LLM, for dialogues without the four steps

[`ChainOfEmpathyBuilder`] templates the target when a turn carries all four steps. Otherwise a teacher — any
backend of `modeling_nanoemox.evaluation.backends` (OpenAI-compatible endpoint or local transformers model), or
any object with an `identity` string and `chat(messages, max_new_tokens=...)` — writes them, explaining the gold
reply of the dataset (the teacher never writes the reply itself). Its answer is accepted only when all four steps
are present and the speaker emotion is one of the label set (AvaMERG's 25 by default; equal to the gold emotion
when the turn has one). A rejected answer is retried, with the reason, up to `max_attempts` times in all; turns
that still fail are reported by id and reason and get no target — nothing is invented or silently dropped.

Accepted answers are cached in a JSONL file keyed by the SHA-256 of the dialogue (history, current input, reply,
context, gold emotion), the label set, [`TEACHER_PROMPT_VERSION`] and the teacher's `identity`: a rerun with the
same teacher does not call it again, and a different teacher or prompt never reuses another's answers.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from transformers.utils import logging

from nanoemox_processing.prompts_authors_nanoemox import format_chain_of_empathy_authors
from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS

from .manifest import Sample

logger = logging.get_logger(__name__)

CHAIN_FIELDS = ("event_scenario", "speaker_emotion", "emotion_cause", "goal_to_response")
STEP_TITLES = {
    "event_scenario": "Event scenario",
    "speaker_emotion": "Speaker emotion",
    "emotion_cause": "Emotion cause",
    "goal_to_response": "Goal of the response",
}
TEACHER_PROMPT_VERSION = "coe-teacher-v1"

# A step header: "Event scenario:" at the start of a line (optionally numbered / bulleted / in markdown bold), or a
# numbered header anywhere after whitespace ("... 2. Speaker emotion: ..."). Unnumbered headers in mid-line are not
# headers, so a step's text that happens to contain "speaker emotion:" is not split.
_STEP_NAMES = {
    "event_scenario": r"event[ _]scenarios?",
    "speaker_emotion": r"(?:(?:the[ _])?(?:speaker|user)(?:'s|’s)?[ _]emotions?|emotion[ _]of[ _]the[ _]speaker)",
    "emotion_cause": r"(?:the[ _])?emotions?[ _]causes?|cause[ _]of[ _](?:the[ _])?emotions?",
    "goal_to_response": r"(?:the[ _])?goal[ _](?:of|to|for)[ _](?:(?:the|your|my)[ _])?response",
}
_NAME_ALTERNATIVES = "|".join(f"(?:{pattern})" for pattern in _STEP_NAMES.values())
_HEADER = re.compile(
    r"(?:^[ \t]*(?:(?:\d[.)]|[-*•]|step[ \t]*\d[.):]?)[ \t]*)?|(?<=\s)\d[.)][ \t]*)"
    rf"(?:\*\*)?(?P<name>{_NAME_ALTERNATIVES})(?:\*\*)?[ \t]*:(?:\*\*)?",
    re.IGNORECASE | re.MULTILINE,
)
# The authors' chain: "Firstly, the event scenario of this conversation is: X\nSecondly, the emotion of the speaker is
# Y\nThirdly, the emotion cause is Z\nFourthly, the goal to response is W" (base_dataset.py:425-430), no colons after
# steps 2-4. Recognised by its ordinal words at the start of a line.
_AUTHORS_STEP = re.compile(
    r"^[ \t]*(?P<ordinal>firstly|secondly|thirdly|fourthly),[ \t]*(?:the[ \t]+)?(?:"
    r"event[ \t]+scenario(?:[ \t]+of[ \t]+this[ \t]+conversation)?|emotion[ \t]+of[ \t]+the[ \t]+speaker|"
    r"emotion[ \t]+cause|goal[ \t]+to[ \t]+response)[ \t]+is[ \t]*:?",
    re.IGNORECASE | re.MULTILINE,
)
_AUTHORS_ORDER = dict(zip(("firstly", "secondly", "thirdly", "fourthly"), CHAIN_FIELDS))
_STEP_PATTERNS = {name: re.compile(rf"^(?:{pattern})$", re.IGNORECASE) for name, pattern in _STEP_NAMES.items()}
_EMOTION_PREFIX = re.compile(
    r"^(?:the\s+)?(?:emotion\s+of\s+the\s+speaker|speaker(?:'s|’s)?\s+emotion|speaker)\s+"
    r"(?:is\s+feeling|is|feels|seems)\s*:?\s*",
    re.IGNORECASE,
)
_THINK_TAGS = re.compile(r"</?think>", re.IGNORECASE)


def _one_line(value) -> str:
    return " ".join(str(value).split()) if value is not None else ""


def _sentence(text: str) -> str:
    return text if text[-1] in ".!?…。！？" else text + "."


def normalize_emotion(value) -> str:
    """An emotion as a bare lower-case word: "The emotion of the speaker is Sadness." → "sadness"."""
    text = _one_line(value).strip("*").strip()
    text = _EMOTION_PREFIX.sub("", text)
    return text.strip(" \t\"'“”‘’*`.!,;:").lower()


CHAIN_STYLES = ("standard", "authors")


def format_chain_of_empathy(fields: Mapping, response: str, style: str = "standard") -> str:
    """The ERG target for the four steps in `fields` (keys [`CHAIN_FIELDS`]) and the listener's `response`.

    `style="standard"` (default): the one-line numbered format above. `style="authors"`: the authors' target
    (base_dataset.py:425-430): "<think>Firstly, the event scenario of this conversation is: …\nSecondly, the emotion
    of the speaker is …\nThirdly, the emotion cause is …\nFourthly, the goal to response is …</think>\n {reply}",
    values verbatim (`prompts_authors_nanoemox.format_chain_of_empathy_authors`).

    Raises:
        ValueError: a step or the reply is missing or empty, or contains a `<think>` tag; an unknown style.
    """
    if style == "authors":
        return format_chain_of_empathy_authors(fields, response)
    if style != "standard":
        raise ValueError(f"style must be one of {CHAIN_STYLES}, got {style!r}")
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping with the keys {CHAIN_FIELDS}, got {type(fields).__name__}")
    values = {name: _one_line(fields.get(name)) for name in CHAIN_FIELDS}
    values["speaker_emotion"] = normalize_emotion(values["speaker_emotion"])
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise ValueError(f"the chain of empathy needs all of {CHAIN_FIELDS}; missing or empty: {missing}")
    if not isinstance(response, str) or not response.strip():
        raise ValueError(f"the chain of empathy needs the listener's reply, got {response!r}")
    reply = response.strip()
    tagged = [name for name, value in (*values.items(), ("response", reply)) if _THINK_TAGS.search(value)]
    if tagged:
        raise ValueError(f"{tagged} contain a <think> tag, which would break the target format")
    steps = [
        f"1. {STEP_TITLES['event_scenario']}: {_sentence(values['event_scenario'])}",
        f"2. {STEP_TITLES['speaker_emotion']}: {values['speaker_emotion']}.",
        f"3. {STEP_TITLES['emotion_cause']}: {_sentence(values['emotion_cause'])}",
        f"4. {STEP_TITLES['goal_to_response']}: {_sentence(values['goal_to_response'])}",
    ]
    return "<think>" + " ".join(steps) + "</think> " + reply


def _split_think(text: str) -> tuple[str, str | None]:
    lowered = text.lower()
    if "</think>" in lowered:
        index = lowered.index("</think>")
        chain, reply = text[:index], text[index + len("</think>") :].strip()
        return _THINK_TAGS.sub("", chain), reply or None
    if "<think>" in lowered:
        return text[lowered.index("<think>") + len("<think>") :], None
    return text, None


def parse_chain_of_empathy(text) -> dict:
    """Reads a chain of empathy (the target format, or a teacher's / model's approximation of it) back.

    Returns:
        a dict with the keys [`CHAIN_FIELDS`] and `"response"`; a step that is absent is `None`, the reply is `None`
        when there is no text after `</think>` (or no `</think>`). `speaker_emotion` is normalised with
        [`normalize_emotion`] ("the emotion of the speaker is Sadness." → "sadness"). When a step occurs twice, the
        first occurrence counts.
    """
    result = dict.fromkeys((*CHAIN_FIELDS, "response"))
    if text is None:
        return result
    if not isinstance(text, str):
        raise TypeError(f"parse_chain_of_empathy expects a string, got {type(text).__name__}")
    chain, result["response"] = _split_think(text)
    steps = list(_AUTHORS_STEP.finditer(chain))
    if steps:  # the authors' "Firstly, … Fourthly, …" format
        for index, match in enumerate(steps):
            name = _AUTHORS_ORDER[match.group("ordinal").lower()]
            end = steps[index + 1].start() if index + 1 < len(steps) else len(chain)
            value = _one_line(chain[match.end() : end])
            if name == "speaker_emotion":
                value = normalize_emotion(value)
            if value and result[name] is None:
                result[name] = value
        return result
    headers = list(_HEADER.finditer(chain))
    for index, match in enumerate(headers):
        name = next(n for n, pattern in _STEP_PATTERNS.items() if pattern.match(match.group("name").strip()))
        end = headers[index + 1].start() if index + 1 < len(headers) else len(chain)
        value = _one_line(chain[match.end() : end]).strip("* ")
        if name == "speaker_emotion":
            value = normalize_emotion(value)
        if value and result[name] is None:
            result[name] = value
    return result


def chain_problems(fields: Mapping, labels: Sequence[str] | None = AVAMERG_LABELS, gold_emotion=None) -> list[str]:
    """Why `fields` is not a usable chain of empathy (an empty list when it is).

    Checks that all four steps are present and non-empty, that the speaker emotion is one of `labels` (skipped when
    `labels` is None) and, when `gold_emotion` is given, that it equals it.
    """
    problems = [f"step '{STEP_TITLES[name]}' is missing" for name in CHAIN_FIELDS if not _one_line(fields.get(name))]
    emotion = normalize_emotion(fields.get("speaker_emotion"))
    if emotion:
        if labels is not None and emotion not in {label.lower() for label in labels}:
            problems.append(f"speaker emotion {emotion!r} is not one of the {len(labels)} allowed labels")
        if gold_emotion and emotion != normalize_emotion(gold_emotion):
            problems.append(
                f"speaker emotion {emotion!r} differs from the annotated {normalize_emotion(gold_emotion)!r}"
            )
    return problems


@dataclass
class EmpathyTurn:
    """One dialogue turn to build an ERG target for.

    Args:
        id: the sample id.
        text: the speaker's current input.
        history: the dialogue before it, `{"role": "user" | "assistant", "content": str}` (user = the speaker).
        response: the listener's gold reply, which the chain of empathy leads to.
        context: the corpus's situation / context text, when it has one.
        fields: the steps the corpus annotates (any subset of [`CHAIN_FIELDS`]); all four → the target is templated.
    """

    id: str
    text: str
    history: list[dict] = field(default_factory=list)
    response: str | None = None
    context: str | None = None
    fields: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(_one_line(self.fields.get(name)) for name in CHAIN_FIELDS)

    @property
    def gold_emotion(self) -> str | None:
        return normalize_emotion(self.fields.get("speaker_emotion")) or None

    @classmethod
    def from_sample(cls, sample: Sample) -> EmpathyTurn:
        """The turn behind an `erg` manifest sample.

        Steps come from the sample's `reference` object (keys [`CHAIN_FIELDS`]; the emotion also as `emotion`, the
        ERG scorer's key) and, for steps it lacks, from a chain already in `target`. The reply comes from
        `reference["response"]` (or `"reply"`), else from `target` (the text after `</think>`, or the whole target
        when it has no `<think>` block). A string `reference` is the gold emotion.
        """
        if sample.task != "erg":
            raise ValueError(f"sample {sample.id!r}: a chain of empathy belongs to task 'erg', got {sample.task!r}")
        reference = sample.reference
        if isinstance(reference, str):
            reference = {"emotion": reference}
        elif not isinstance(reference, Mapping):
            reference = {}
        fields = {name: reference.get(name) for name in CHAIN_FIELDS}
        fields["speaker_emotion"] = reference.get("speaker_emotion") or reference.get("emotion")
        response = reference.get("response") or reference.get("reply")
        if sample.target:
            if "</think>" in sample.target.lower() or "<think>" in sample.target.lower():
                parsed = parse_chain_of_empathy(sample.target)
                for name in CHAIN_FIELDS:
                    fields[name] = fields[name] or parsed[name]
                response = response or parsed["response"]
            else:
                response = response or sample.target
        return cls(
            id=sample.id,
            text=sample.text or "",
            history=list(sample.history or []),
            response=response,
            context=reference.get("context"),
            fields={name: value for name, value in fields.items() if _one_line(value)},
        )


# ---- teacher ---------------------------------------------------------------------------------------------------

_TEACHER_SYSTEM = (
    "You annotate empathetic dialogues. You explain, step by step, how a caring listener understood the speaker "
    "before replying."
)
_TEACHER_INSTRUCTION = """Below is a conversation between a speaker, who talks about something that happened to them, \
and a listener. The listener's reply to the speaker's latest message is given. Explain that reply with a chain of \
empathy: exactly four numbered lines, in this format and order, and nothing else:
1. Event scenario: <what is happening to the speaker, in one or two sentences>
2. Speaker emotion: <exactly one word from this list: {labels}>
3. Emotion cause: <why the speaker feels this way>
4. Goal of the response: <what the listener's reply sets out to do for the speaker>"""


def teacher_messages(turn: EmpathyTurn, labels: Sequence[str] = AVAMERG_LABELS) -> list[dict]:
    """The chat messages asking a teacher LLM for the four steps of `turn` (prompt [`TEACHER_PROMPT_VERSION`])."""
    parts = [_TEACHER_INSTRUCTION.format(labels=", ".join(labels)), ""]
    if turn.context:
        parts.append(f"Context: {_one_line(turn.context)}")
    parts.append("Conversation:")
    for message in turn.history:
        who = "Speaker" if message.get("role") == "user" else "Listener"
        parts.append(f"{who}: {_one_line(message.get('content'))}")
    parts.append(f"Speaker (latest message): {_one_line(turn.text)}")
    parts.append(f"Listener's reply: {_one_line(turn.response)}")
    if turn.gold_emotion:
        parts.append(
            f'\nThe speaker\'s emotion is annotated as "{turn.gold_emotion}"; use exactly this word in line 2.'
        )
    return [{"role": "system", "content": _TEACHER_SYSTEM}, {"role": "user", "content": "\n".join(parts)}]


def _teacher_fields(answer: str) -> dict:
    """The four steps of a teacher answer. Reasoning models may write `<think>...</think>` before the answer: the
    steps after the last `</think>` are used when they are at least as complete as a parse of the whole text."""
    parsed = parse_chain_of_empathy(answer)
    lowered = answer.lower()
    if "</think>" in lowered:
        tail = parse_chain_of_empathy(answer[lowered.rindex("</think>") + len("</think>") :])
        if sum(bool(tail[n]) for n in CHAIN_FIELDS) >= sum(bool(parsed[n]) for n in CHAIN_FIELDS):
            parsed = tail
    return {name: parsed[name] for name in CHAIN_FIELDS}


def teacher_cache_key(turn: EmpathyTurn, teacher_identity: str, labels: Sequence[str] = AVAMERG_LABELS) -> str:
    """SHA-256 of everything the teacher's answer depends on: dialogue, label set, prompt version, teacher."""
    payload = {
        "prompt_version": TEACHER_PROMPT_VERSION,
        "teacher": teacher_identity,
        "labels": list(labels),
        "dialogue": {
            "history": [{"role": m.get("role"), "content": m.get("content")} for m in turn.history],
            "text": turn.text,
            "response": turn.response,
            "context": turn.context,
            "emotion": turn.gold_emotion,
        },
    }
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


class TeacherCache:
    """Accepted teacher answers in a JSONL file, one `{"key", "id", "teacher", "prompt_version", "fields"}` a line.

    Each accepted answer is appended (and flushed) as soon as it is accepted, so an interrupted run keeps its work.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, dict] = {}
        if self.path.is_file():
            unreadable = 0
            with self.path.open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                        self._entries[record["key"]] = record
                    except (json.JSONDecodeError, KeyError, TypeError):
                        unreadable += 1
            if unreadable:
                # A torn last line after a crash is expected; its turns are simply asked again.
                logger.warning(f"{self.path}: ignored {unreadable} unreadable cache lines; those turns are redone.")

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> dict | None:
        return self._entries.get(key)

    def put(self, key: str, record: dict) -> None:
        record = {"key": key, **record}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._entries[key] = record


@dataclass
class ChainBuildReport:
    """How each turn's target was obtained: ids per route, and the failures with their reasons."""

    templated: list[str] = field(default_factory=list)
    teacher: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    teacher_calls: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "templated": len(self.templated),
            "teacher": len(self.teacher),
            "cached": len(self.cached),
            "failed": len(self.failed),
            "teacher_calls": self.teacher_calls,
        }


def _batches_for_real(teacher) -> bool:
    """Whether `teacher.chat_batch` really batches (a local model) rather than looping over `chat`.

    Only such backends are asked for a batch: in the loop that `evaluation.backends.ChatBackend.chat_batch` provides,
    one failure would cost a second round of calls for the whole batch. That default is recognised without importing
    the evaluation package (data never imports it): it is defined on the class that declares `chat` abstract.
    """
    owner = next((klass for klass in type(teacher).__mro__ if "chat_batch" in vars(klass)), None)
    if owner is None or not callable(vars(owner)["chat_batch"]):
        return False
    return not getattr(vars(owner).get("chat"), "__isabstractmethod__", False)


class ChainOfEmpathyBuilder:
    """Builds ERG targets: templated from annotated steps, else written by a teacher LLM (validated, cached, retried).

    Args:
        teacher: a chat backend (`identity` + `chat(messages, max_new_tokens=...)`); None to template only.
        cache: a JSONL path or [`TeacherCache`] for accepted teacher answers; None keeps them in memory only.
        labels: the allowed speaker emotions (default: the 25 AvaMERG labels).
        max_attempts: teacher calls per turn at most (first try included).
        max_new_tokens: generation budget of one teacher answer.
    """

    def __init__(
        self,
        teacher=None,
        *,
        cache: str | Path | TeacherCache | None = None,
        labels: Sequence[str] = AVAMERG_LABELS,
        max_attempts: int = 3,
        max_new_tokens: int = 400,
    ):
        if teacher is not None:
            identity = getattr(teacher, "identity", None)
            if not isinstance(identity, str) or not identity.strip():
                raise ValueError(
                    f"the teacher needs a non-empty `identity` string (it keys the cache), got {identity!r}"
                )
            if not callable(getattr(teacher, "chat", None)):
                raise TypeError(f"the teacher needs a chat(messages, max_new_tokens=...) method, got {teacher!r}")
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, got {max_attempts!r}")
        if not labels:
            raise ValueError("labels must name at least one emotion")
        self.teacher = teacher
        self.cache = cache if isinstance(cache, TeacherCache) or cache is None else TeacherCache(cache)
        self._memory: dict[str, dict] = {}
        self.labels = tuple(label.lower() for label in labels)
        self.max_attempts = max_attempts
        self.max_new_tokens = max_new_tokens
        self._calls = 0

    def _cached(self, key: str) -> dict | None:
        record = self.cache.get(key) if self.cache is not None else self._memory.get(key)
        return record["fields"] if record and isinstance(record.get("fields"), dict) else None

    def _store(self, key: str, turn: EmpathyTurn, fields: dict, raw: str) -> None:
        record = {
            "id": turn.id,
            "teacher": self.teacher.identity,
            "prompt_version": TEACHER_PROMPT_VERSION,
            "fields": fields,
            "raw": raw,
        }
        if self.cache is not None:
            self.cache.put(key, record)
        else:
            self._memory[key] = record

    def _ask(self, conversations: list[list[dict]]) -> list[str | Exception]:
        """One teacher answer per conversation; an exception in place of an answer that could not be had."""
        self._calls += len(conversations)
        if len(conversations) > 1 and _batches_for_real(self.teacher):
            try:
                replies = self.teacher.chat_batch(conversations, max_new_tokens=self.max_new_tokens)
                if len(replies) == len(conversations):
                    return list(replies)
            except Exception as error:
                # Fall back to one call per turn so that a failure is attributed to the turn that caused it.
                logger.warning(f"teacher batch call failed ({error}); asking one turn at a time")
        answers: list[str | Exception] = []
        for messages in conversations:
            try:
                answers.append(self.teacher.chat(messages, max_new_tokens=self.max_new_tokens))
            except Exception as error:
                # Any backend failure (HTTP, parsing, CUDA OOM, ...) is one failed attempt of this turn, reported by id.
                answers.append(error)
        return answers

    def build(self, turns: Iterable[EmpathyTurn]) -> tuple[dict[str, str], ChainBuildReport]:
        """Targets for `turns`.

        Returns:
            `(targets, report)`: `targets` maps turn id → target string for every turn that got one; every other
            turn is in `report.failed` with the reason.
        """
        targets: dict[str, str] = {}
        report = ChainBuildReport()
        self._calls = 0
        pending: list[tuple[EmpathyTurn, str]] = []
        for turn in turns:
            if not _one_line(turn.response):
                report.failed[turn.id] = "no listener reply to explain"
                continue
            if turn.complete:
                try:
                    targets[turn.id] = format_chain_of_empathy(turn.fields, turn.response)
                    report.templated.append(turn.id)
                except ValueError as error:
                    report.failed[turn.id] = f"annotated steps unusable: {error}"
                continue
            if self.teacher is None:
                present = [name for name in CHAIN_FIELDS if _one_line(turn.fields.get(name))]
                report.failed[turn.id] = f"chain-of-empathy steps missing (has {present}) and no teacher given"
                continue
            key = teacher_cache_key(turn, self.teacher.identity, self.labels)
            fields = self._cached(key)
            if fields is not None and not chain_problems(fields, self.labels, turn.gold_emotion):
                targets[turn.id] = format_chain_of_empathy(fields, turn.response)
                report.cached.append(turn.id)
                continue
            pending.append((turn, key))

        # Rounds of teacher calls: every turn still pending gets one more attempt per round, with the reason its
        # previous answer was rejected (greedy backends would otherwise repeat the same answer).
        conversations = {turn.id: teacher_messages(turn, self.labels) for turn, _ in pending}
        last_problem: dict[str, str] = {}
        for _attempt in range(self.max_attempts):
            if not pending:
                break
            answers = self._ask([conversations[turn.id] for turn, _ in pending])
            still_pending = []
            for (turn, key), answer in zip(pending, answers):
                if isinstance(answer, Exception):
                    last_problem[turn.id] = f"teacher call failed: {answer}"
                    still_pending.append((turn, key))
                    continue
                answer = answer if isinstance(answer, str) else str(answer)
                fields = _teacher_fields(answer)
                problems = chain_problems(fields, self.labels, turn.gold_emotion)
                if problems:
                    last_problem[turn.id] = "; ".join(problems)
                    conversations[turn.id] = [
                        *conversations[turn.id],
                        {"role": "assistant", "content": answer},
                        {
                            "role": "user",
                            "content": f"That answer cannot be used: {'; '.join(problems)}. Answer again with "
                            "exactly the four numbered lines, and choose the emotion from the list.",
                        },
                    ]
                    still_pending.append((turn, key))
                    continue
                fields["speaker_emotion"] = normalize_emotion(fields["speaker_emotion"])
                self._store(key, turn, fields, answer)
                targets[turn.id] = format_chain_of_empathy(fields, turn.response)
                report.teacher.append(turn.id)
            pending = still_pending
        for turn, _ in pending:
            report.failed[turn.id] = (
                f"teacher gave no valid answer in {self.max_attempts} attempts ({last_problem[turn.id]})"
            )
        report.teacher_calls = self._calls
        if report.failed:
            listing = "; ".join(f"{sid}: {reason}" for sid, reason in list(report.failed.items())[:10])
            logger.warning(f"{len(report.failed)} turns got no chain-of-empathy target (first 10 — {listing})")
        return targets, report


def fill_erg_targets(
    samples: Iterable[Sample], builder: ChainOfEmpathyBuilder
) -> tuple[list[Sample], ChainBuildReport]:
    """Sets the chain-of-empathy target of every `erg` sample; other tasks pass through unchanged.

    Returns:
        `(samples, report)`: the samples in their order, the `erg` ones with their new target, minus the `erg`
        samples that got none — those are listed with the reason in `report.failed` (never kept with an empty or
        invented target).
    """
    samples = list(samples)
    turns = [EmpathyTurn.from_sample(sample) for sample in samples if sample.task == "erg"]
    targets, report = builder.build(turns)
    kept = []
    for sample in samples:
        if sample.task != "erg":
            kept.append(sample)
        elif sample.id in targets:
            kept.append(replace(sample, target=targets[sample.id]))
    return kept, report

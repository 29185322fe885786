# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The six Nano-EmoX tasks, their fixed prompts and the label sets (DESIGN §1, §4, §5).

This module is the one owner of task names and label sets: data adapters, training, evaluation and the demo import
them from here (it ships with the processor, so remote code has them too). Labels are lower case, one spelling.

One prompt per task, deterministic: evaluation numbers depend on the prompt, so it never changes at random (the
authors pick among paraphrases at random; we don't).
"""

from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You are Nano-EmoX, an assistant that perceives, understands and responds to human emotions from video, "
    "facial expressions, voice and words."
)

# The six task names, in the order of DESIGN §1 (perception, understanding, interaction).
TASK_NAMES = ("msa", "mer", "ovmer", "mir", "eri", "erg")

# MER2023 / MER2024 gold labels.
MER_LABELS = ("happy", "sad", "neutral", "angry", "worried", "surprise")
# CREMA-D's six acted emotions.
CREMA_D_LABELS = ("anger", "disgust", "fear", "happy", "neutral", "sad")
# MIntRec (20 intents) and MIntRec2.0 (30 intents); the released annotations capitalise them, we don't.
MINTREC_INTENTS = (
    "complain", "praise", "apologise", "thank", "criticize", "agree", "taunt", "flaunt", "joke", "oppose",
    "comfort", "care", "inform", "advise", "arrange", "introduce", "leave", "prevent", "greet", "ask for help",
)  # fmt: skip
MINTREC2_INTENTS = MINTREC_INTENTS + (
    "acknowledge", "asking for opinions", "confirm", "doubt", "emphasize", "explain", "invite", "plan", "refuse",
    "warn",
)  # fmt: skip
# The 25 speaker-emotion labels of the AvaMERG annotations (authors' `AvaMERG_Dataset.candidate_labels`).
AVAMERG_LABELS = (
    "conflicted", "sadness", "weary", "upset", "frustrated", "disappointment", "uneasy", "confused", "stressed",
    "burdened", "worry", "nervous", "confusion", "helpless", "overwhelm", "surprised", "proud", "lonely", "guilty",
    "hopeful", "anxious", "nostalgic", "content", "caring", "ashamed",
)  # fmt: skip

CHAIN_OF_EMPATHY = (
    "Before replying, think step by step inside <think></think>: (1) the event scenario, (2) the speaker's "
    "emotion, (3) the cause of that emotion, (4) the goal of your response. After </think>, write your reply to "
    "the speaker."
)


@dataclass(frozen=True)
class Task:
    """One of the six tasks: what it asks and how the answer looks."""

    name: str
    level: str
    title: str
    inputs: str
    answer_format: str
    instruction: str
    default_candidates: tuple[str, ...] = ()

    @property
    def uses_candidates(self) -> bool:
        return bool(self.default_candidates)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            name="msa",
            level="perception",
            title="Multimodal sentiment analysis",
            inputs="clip + subtitle",
            answer_format="positive / negative / neutral",
            instruction=(
                "What is the speaker's sentiment? Answer with exactly one word: positive, negative or neutral."
            ),
        ),
        Task(
            name="mer",
            level="perception",
            title="Emotion recognition (closed set)",
            inputs="clip (+ candidate labels)",
            answer_format='"The most likely label is X."',
            instruction="Which emotion does the person show? Choose exactly one of the candidate labels.",
            default_candidates=MER_LABELS,
        ),
        Task(
            name="ovmer",
            level="perception",
            title="Open-vocabulary emotion recognition",
            inputs="clip",
            answer_format='"The character\'s emotional state is a, b, c."',
            instruction=(
                "Describe the person's emotional state with as many fitting emotion words as the evidence supports, "
                "as a comma-separated list."
            ),
        ),
        Task(
            name="mir",
            level="understanding",
            title="Multimodal intention recognition",
            inputs="clip + utterance + candidate intents",
            answer_format="one intent label",
            instruction="What is the speaker's intent? Answer with exactly one of the candidate intents.",
            default_candidates=MINTREC2_INTENTS,
        ),
        Task(
            name="eri",
            level="understanding",
            title="Emotion reason inference",
            inputs="clip + subtitle",
            answer_format="a rationale ending in the emotion",
            instruction=(
                "Explain, from the facial expression, the voice and the words, why the person feels the way they "
                "do, and end with the emotion."
            ),
        ),
        Task(
            name="erg",
            level="interaction",
            title="Empathic response generation",
            inputs="clip + dialogue history + current user input",
            answer_format="<think> chain of empathy </think> then the reply",
            instruction="You are talking with the speaker in the video. " + CHAIN_OF_EMPATHY,
        ),
    )
}

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The AvaMERG coarse-class mapping used by the ERG hit rate.

The label sets themselves (AvaMERG's 25 speaker emotions, MIntRec's intents, ...) live in
`nanoemox_processing.prompts_nanoemox`, their one owner, in lower case.

## AvaMERG coarse classes

The ERG "hit rate" counts a predicted speaker emotion as a hit when it falls in the same coarse class as the gold
emotion. The coarse classes are the eight MEAD expression classes the avatar renderer of AvaMERG uses: neutral,
happy, surprised, angry, fear, sad, disgusted, contempt.

The authors' scorer (`evaluation/eval_merg_exp.py`, `emotion_projection_map_empathe_mead`) maps 36 words, but 15 of
the 25 gold labels of the AvaMERG test set are not among them, so it raises `KeyError` on conflicted, sadness, weary,
upset, frustrated, disappointment, uneasy, confused, stressed, burdened, worry, nervous, confusion, helpless and
overwhelm (and on any prediction outside its 36 words, e.g. its own fallback "unknown"). Their dataset class
(`datasets/datasets/avamerg_dataset.py`, `ed_emotion_projection`) projects these labels onto EmpatheticDialogues
labels that the scorer's map does cover, so we compose the two:

| gold label | → EmpatheticDialogues label (authors) | → coarse class |
|---|---|---|
| conflicted, uneasy, stressed, burdened, worry, nervous, confusion, overwhelm | anxious | sad |
| sadness | sad | sad |
| upset, disappointment | disappointed | sad |
| frustrated | sad | sad |
| helpless | afraid | fear |
| confused | jealous (!) | **sad** (ours) |
| weary | tired (has no coarse class) | **sad** (ours) |
| surprised | surprised | surprised |
| proud, hopeful, content, caring | — | happy |
| lonely, guilty, anxious, nostalgic, ashamed | — | sad |

Two cells are our decisions, not the authors': "confused" goes through "jealous" to *contempt* in their tables while
its sibling label "confusion" goes to *sad*; we send both to *sad*. "weary" projects to "tired", which neither table
maps; *sad* is the nearest class (low-arousal negative). The authors' scorer lists "embarrassed" twice (sad, then
disgusted); a Python dict keeps the last value, so it is *disgusted* there and here. Predicted words are mapped with
the same table extended by the EmpatheticDialogues labels and the synonyms their keyword extractor produces; a
prediction outside the table is a miss (counted and reported), never an exception.
"""

COARSE_CLASSES = ("neutral", "happy", "surprised", "angry", "fear", "sad", "disgusted", "contempt")

_COARSE_GROUPS = {
    "neutral": ("neutral",),
    "happy": (
        "happy",
        "joyful",
        "joy",
        "prepared",
        "content",
        "caring",
        "trusting",
        "faithful",
        "confident",
        "hopeful",
        "grateful",
        "proud",
        "excited",
        "anticipating",
    ),
    "surprised": ("surprised", "surprise", "impressed"),
    "angry": ("angry", "anger", "furious", "annoyed"),
    "fear": (
        "fear",
        "afraid",
        "terrified",
        "apprehensive",
        "helpless",
        "helplessness",
        "fearful",
        "scared",
        "vulnerable",
        "vulnerability",
        "fragile",
    ),
    "sad": (
        "sad",
        "sadness",
        "lonely",
        "loneliness",
        "guilty",
        "regret",
        "anxious",
        "anxiety",
        "nostalgic",
        "nostalgia",
        "disappointed",
        "disappointment",
        "sentimental",
        "pensive",
        "reflective",
        "thoughtful",
        "ashamed",
        "inadequacy",
        "devastated",
        "conflicted",
        "upset",
        "frustrated",
        "frustration",
        "uneasy",
        "confused",
        "confusion",
        "lost",
        "stressed",
        "stress",
        "burdened",
        "worry",
        "worried",
        "concern",
        "concerned",
        "nervous",
        "overwhelm",
        "overwhelmed",
        "weary",
        "tired",
        "tiredness",
        "fatigue",
        "exhausted",
        "exhaustion",
        "melancholy",
        "melancholic",
        "heavy-hearted",
    ),
    "disgusted": ("disgusted", "embarrassed"),
    "contempt": ("contempt", "jealous"),
}

# word → coarse class. Covers the 25 gold labels (`prompts_nanoemox.AVAMERG_LABELS`), the authors' 36-word map and
# the words their extractor emits.
COARSE_CLASS = {word: coarse for coarse, words in _COARSE_GROUPS.items() for word in words}

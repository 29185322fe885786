# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The small multimodal dataset the project generates itself for the embedded training run (`recipes/p2e.py`).

Recipe scaffolding, not library code: a user of a released checkpoint never needs it. Imported as `embedded.dataset`
with `recipes/` on `sys.path` (where a script in `recipes/` runs).

[`build_synthetic_dataset`] writes, under one folder:

| path                  | what                                                                                 |
|-----------------------|--------------------------------------------------------------------------------------|
| `train.jsonl`         | training manifest (`modeling_nanoemox.data.manifest`), media paths relative to the folder |
| `test.jsonl`          | held-out manifest: other people, and other slot words in every sentence              |
| `media/{split}/*.mkv` | one clip per sample: lossless FFV1 video, 16 kHz PCM voice (`.mp4`: H.264 + AAC)  |
| `media/{split}/*.faces.npy` | the clip's face track, cropped (the manifest's `faces`: no detector needed)     |
| `cues.jsonl`          | per sample what each modality shows (face, voice, utterance, intent) and the scene type |
| `chance.json`         | chance level of every classification metric on the test split (below)               |
| `summary.json`        | counts per split / task / label / scene type, the people, the chance baselines, the time |

## What a clip shows

- **Face.** A procedurally drawn frontal face on a plain background (default 112×112 px, 12 fps, 2 s) showing one of
  seven expressions — happy, sad, angry, worried (fear), surprise, disgust, neutral — through brow height and tilt,
  eye opening, mouth curve, opening and width, teeth, a brow furrow, nose wrinkles, a sneer and a flush. Every
  person has their own face shape, size, position, skin, hair, eye and lip colours and background; the head bobs,
  the eyes blink once and the mouth moves with the syllables. Expressions are drawn bold enough to stay legible in
  the 32×32 frames and face crops of the tiny model.
- **Voice.** [`emotional_voice`]: `synthetic_voice` with a prosody per emotion ([`PROSODY`]: pitch relative to the
  speaker's own, pitch range, syllable rate, loudness) plus a tremolo (worried), a pressed, clipped voice (angry) or
  breath noise (disgust). The processor normalises every audio clip to zero mean and unit variance, so loudness
  alone does not reach the model; pitch, range, rate and voice quality do.
- **Words.** An utterance from templated sentences of ten MIntRec intents ([`INTENTS`]) whose slot words ("the
  {gift}", "the {place}", ...) come from disjoint halves of each word bank for train and test; for ERG a dialogue of
  2 to 4 turns about an event of the speaker's emotion.

## Conflicting cues and the rule that resolves them

A share (`conflict_rate`) of the non-neutral samples shows cues that disagree:

| scene          | face    | voice          | words                                   | label              |
|----------------|---------|----------------|-----------------------------------------|--------------------|
| `congruent`    | E       | E              | an utterance of E                       | E                  |
| `masked_smile` | happy   | E (sad, angry) | praise or thanks, meant sarcastically   | E; intent "taunt"  |
| `poker_face`   | neutral | E              | an utterance of E                       | E                  |
| `calm_voice`   | E       | neutral        | an utterance of E                       | E                  |

**Rule** ([`label_from_cues`]): *the emotion is the voice's, unless the voice is neutral; then it is the face's.*
A face-only model fails the masked smiles and poker faces, a voice-only model fails the calm voices: only fusion
gets every sample right. The intent follows the words, except that praise or thanks said with a sad or angry voice
(the masked smile) is a taunt — the same words are "praise" or "thank" when the voice is not sad or angry, so words
and voice decide together. MSA's sentiment is the label's polarity (happy, surprise positive; the rest negative).

## Tasks, targets and references

| task    | inputs                     | target (authors' templates)                  | reference (`nanoemox eval`) |
|---------|----------------------------|----------------------------------------------|-----------------------------|
| `mer`   | clip                       | "The most likely label is X." (MER2023)      | "X"                         |
| `ovmer` | clip                       | "The character's emotional state is a, b."   | ["a", "b"], wheel words     |
| `msa`   | clip + subtitle            | "positive" / "negative"                      | valence in ±[1, 3], never 0 |
| `mir`   | clip + utterance + intents | the intent (one of the 10 candidates)        | the intent                  |
| `eri`   | clip + subtitle            | a rationale ending "… the person feels X."   | the same rationale          |
| `erg`   | clip + dialogue            | the chain of empathy, then the reply (below) | {"emotion", steps, reply}   |

The ERG target comes from `chain_of_empathy.format_chain_of_empathy`: `<think>1. Event scenario: … 2. Speaker
emotion: X. 3. Emotion cause: … 4. Goal of the response: …</think> reply`; its reference carries the four steps
under the names `chain_of_empathy` reads back, the emotion as `emotion` and the reply as `response` (the ERG
scorer's keys). MER never draws disgust (not a MER2023 label); OV-MER and MSA never draw neutral (unmappable on the
emotion wheel; zero valence is dropped by the MSA metric); MSA draws as many positive as negative samples; MIR
cycles through the intents. Every sample has its own clip; `dataset` is `synthetic-{task}`, so a recipe can weight
tasks. A clip's own audio track serves audio-only phases (pass the clip as `audio` and no `video`).

## Chance levels

`chance.json` is `{task: {metric: value}}` with the metric names of `evaluation.scoring.score` (`mer`: accuracy,
weighted_f1, macro_f1 and, given the emotion-wheel folder, hit_rate; `ovmer` (wheel only): f_score, precision,
recall; `msa`: weighted_f1, accuracy; `mir`: accuracy, weighted_f1, weighted_precision, macro_f1; `erg`:
emotion_accuracy, coarse_hit_rate). Each value is the **higher of two label-blind baselines**, scored on the test
split by the evaluation's own code as `nanoemox eval run` calls it: always answering the training split's most
frequent label (majority class), and answering uniformly at random among the task's labels (its exact expectation:
every test reference repeated once per label, each copy answered with one label). ERI is judged by an LLM and has
no chance level.
"""

from __future__ import annotations

import colorsys
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from transformers.utils import logging

from modeling_nanoemox.data.chain_of_empathy import format_chain_of_empathy
from modeling_nanoemox.data.manifest import Sample, write_manifest
from modeling_nanoemox.evaluation.scoring import score
from modeling_nanoemox.synthetic import synthetic_voice, write_clip
from nanoemox_processing.prompts_nanoemox import TASK_NAMES

logger = logging.get_logger(__name__)

EMOTIONS = ("happy", "sad", "angry", "worried", "surprise", "disgust", "neutral")
SCENE_TYPES = ("congruent", "masked_smile", "poker_face", "calm_voice")
SPLITS = ("train", "test")
SAMPLING_RATE = 16000
# Container → (video codec, audio codec). Matroska with lossless FFV1 and 16-bit PCM encodes several times faster
# than MP4 with H.264 and AAC (the generation budget is seconds) and keeps pictures and voice exact: lossy coding of
# these small frames costs the Haar face detector up to a seventh of its hits.
MEDIA_FORMATS = {"mkv": ("ffv1", "pcm_s16le"), "mp4": ("libx264", "aac")}
DEFAULT_TASK_WEIGHTS = {"mer": 0.2, "ovmer": 0.15, "msa": 0.2, "mir": 0.2, "eri": 0.1, "erg": 0.15}
# Which emotions each task draws (see the module docstring for why some are left out).
TASK_EMOTIONS = {
    "mer": ("happy", "sad", "angry", "worried", "surprise", "neutral"),
    "ovmer": ("happy", "sad", "angry", "worried", "surprise", "disgust"),
    # Positive emotions twice, so that positive and negative samples are as many.
    "msa": ("happy", "surprise", "happy", "surprise", "sad", "angry", "worried", "disgust"),
    "mir": EMOTIONS,
    "eri": EMOTIONS,
    "erg": EMOTIONS,
}
# The word each task's answers use for an emotion: MER2023 labels for mer, adjectives elsewhere (ERG's are all in the
# AvaMERG coarse-class table of the evaluation).
MER_LABEL = {e: e for e in EMOTIONS if e != "disgust"}
EMOTION_WORD = {e: {"surprise": "surprised", "disgust": "disgusted"}.get(e, e) for e in EMOTIONS}
# OV-MER words, all mapped by the emotion wheel (wheel 1 at least); the first is always listed.
OVMER_WORDS = {
    "happy": ("happy", "joyful", "cheerful", "delighted"),
    "sad": ("sad", "sorrowful", "unhappy", "gloomy"),
    "angry": ("angry", "furious", "annoyed", "irritated"),
    "worried": ("worried", "anxious", "nervous", "scared"),
    "surprise": ("surprised", "amazed", "astonished"),
    "disgust": ("disgusted", "revolted"),
}
POLARITY = {"happy": 1, "surprise": 1, "sad": -1, "angry": -1, "worried": -1, "disgust": -1, "neutral": 0}

# ---------------------------------------------------------------------------------------------------------------------
# The rule
# ---------------------------------------------------------------------------------------------------------------------


def label_from_cues(face_emotion: str, voice_emotion: str) -> str:
    """
    The emotion a sample is labelled with, from the expression its face shows and the prosody of its voice: the
    voice's emotion, unless the voice is neutral — then the face's. (Congruent samples have both equal.)
    """
    for name, value in (("face_emotion", face_emotion), ("voice_emotion", voice_emotion)):
        if value not in EMOTIONS:
            raise ValueError(f"{name} must be one of {EMOTIONS}, got {value!r}.")
    return face_emotion if voice_emotion == "neutral" else voice_emotion


def _cues_for(scene_type: str, label: str) -> tuple[str, str]:
    """(face emotion, voice emotion) that show `label` in a scene of `scene_type`."""
    return {
        "congruent": (label, label),
        "masked_smile": ("happy", label),
        "poker_face": ("neutral", label),
        "calm_voice": (label, "neutral"),
    }[scene_type]


# ---------------------------------------------------------------------------------------------------------------------
# Faces
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expression:
    """Facial action parameters; 0 is a relaxed face, signs say the direction."""

    brow_tilt: float = 0.0  # + inner ends raised (sad, worried), - drawn down (angry)
    brow_raise: float = 0.0  # + whole brows up (surprise), - lowered (angry, disgust)
    eye_open: float = 1.0  # relative eye height: < 1 squint, > 1 wide open
    mouth_curve: float = 0.0  # + corners up (smile), - corners down
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    mouth_width: float = 1.0  # relative width
    teeth: float = 0.0  # share of the open mouth filled by upper teeth
    furrow: float = 0.0  # vertical lines between the brows
    nose_wrinkle: float = 0.0
    sneer: float = 0.0  # one side of the upper lip raised
    flush: float = 0.0  # reddened skin

    def scaled(self, intensity: float) -> Expression:
        """This expression at `intensity` (0 = relaxed, 1 = full), interpolated from the relaxed face."""
        rest = Expression()
        return Expression(
            **{k: getattr(rest, k) + intensity * (v - getattr(rest, k)) for k, v in asdict(self).items()}
        )


EXPRESSIONS = {
    "neutral": Expression(),
    "happy": Expression(brow_raise=0.15, eye_open=0.55, mouth_curve=1.0, mouth_open=0.55, mouth_width=1.35, teeth=0.5),
    "sad": Expression(brow_tilt=1.0, brow_raise=0.1, eye_open=0.65, mouth_curve=-1.0, mouth_width=0.95),
    "angry": Expression(
        brow_tilt=-1.0,
        brow_raise=-0.6,
        eye_open=0.7,
        mouth_curve=-0.3,
        mouth_open=0.65,
        mouth_width=1.15,
        teeth=1.0,
        furrow=1.0,
        flush=0.6,
    ),
    "worried": Expression(
        brow_tilt=1.0, brow_raise=0.7, eye_open=1.4, mouth_curve=-0.45, mouth_open=0.6, mouth_width=1.3
    ),
    "surprise": Expression(brow_raise=1.1, eye_open=1.6, mouth_open=1.2, mouth_width=0.65),
    "disgust": Expression(
        brow_tilt=-0.4, brow_raise=-0.4, eye_open=0.6, mouth_curve=-0.6, mouth_open=0.15, nose_wrinkle=1.0, sneer=1.0
    ),
}

SKIN_TONES = ((248, 218, 190), (236, 192, 158), (214, 166, 124), (178, 126, 88), (132, 88, 58), (96, 64, 44))
HAIR_COLOURS = ((28, 24, 22), (64, 42, 26), (112, 70, 38), (196, 154, 92), (150, 62, 30), (160, 160, 164))


@dataclass(frozen=True)
class Identity:
    """A generated person: how the face looks and how the voice sounds at rest."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    lips: tuple[int, int, int]
    face_width: float  # half-width of the face as a fraction of the frame
    aspect: float  # face half-height / half-width
    offset: tuple[float, float]  # face centre offset from the frame centre, fractions of the frame
    eye_spacing: float  # eye centres at ± this fraction of the face half-width
    mouth_scale: float
    brow_weight: float
    hair_style: int  # 0 short, 1 long sides, 2 high top
    pitch_hz: float  # speaking pitch at rest

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Identity:
        skin = np.clip(np.array(SKIN_TONES[rng.integers(len(SKIN_TONES))]) + rng.integers(-10, 11, 3), 0, 255)
        # Muted backgrounds away from skin hues keep the face the brightest-contrast object in the frame.
        hue = (rng.uniform(0.25, 0.95)) % 1.0
        background = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.15, 0.45), rng.uniform(0.35, 0.75))) * 255
        # Lips are a darker, redder skin so they stay visible on every skin tone.
        lips = np.clip(skin * np.array([0.78, 0.45, 0.5]) + np.array([30, 0, 0]), 0, 255)
        return cls(
            background=tuple(int(v) for v in background),
            skin=tuple(int(v) for v in skin),
            hair=HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))],
            iris=tuple(int(v) for v in rng.integers(30, 110, 3)),
            lips=tuple(int(v) for v in lips),
            face_width=float(rng.uniform(0.27, 0.32)),
            aspect=float(rng.uniform(1.15, 1.3)),
            offset=(float(rng.uniform(-0.04, 0.04)), float(rng.uniform(-0.02, 0.03))),
            eye_spacing=float(rng.uniform(0.38, 0.46)),
            mouth_scale=float(rng.uniform(0.9, 1.1)),
            brow_weight=float(rng.uniform(0.8, 1.2)),
            hair_style=int(rng.integers(3)),
            pitch_hz=float(rng.uniform(115.0, 165.0)),
        )


_SUPERSAMPLE = 2  # draw at twice the size, then area-downsample: anti-aliased edges at small sizes
_SHIFT = 3  # OpenCV fixed-point bits: sub-pixel coordinates


def _colour(rgb) -> tuple[int, int, int]:
    return tuple(int(min(255.0, max(0.0, float(v)))) for v in rgb)


def render_face(
    identity: Identity,
    expression: Expression,
    size: int = 112,
    head: tuple[float, float] = (0.0, 0.0),
    eyelid: float = 1.0,
    talk: float = 0.0,
) -> np.ndarray:
    """
    Draws one frame.

    Args:
        identity: who (face shape, colours, position).
        expression: what the face shows.
        size: frame side in pixels.
        head: extra head offset `(dx, dy)` in fractions of the frame (head bob).
        eyelid: 1 open, 0 closed (blink).
        talk: extra mouth opening while speaking, 0..1.

    Returns:
        `np.ndarray` of shape `(size, size, 3)`, `uint8` RGB.
    """
    import cv2

    side = size * _SUPERSAMPLE
    unit = 1 << _SHIFT
    frame = np.empty((side, side, 3), np.uint8)
    frame[:] = identity.background
    cx = side * (0.5 + identity.offset[0] + head[0])
    cy = side * (0.52 + identity.offset[1] + head[1])
    fw = side * identity.face_width
    fh = fw * identity.aspect
    skin = np.array(identity.skin, float)
    if expression.flush > 0:
        skin = skin * (1 - 0.3 * expression.flush) + np.array([210.0, 40.0, 40.0]) * 0.3 * expression.flush
    hair = np.array(identity.hair, float)
    line = max(2, round(side * 0.014))

    def point(u: float, v: float) -> tuple[int, int]:
        # (u, v) in face units: u across the half-width, v down the half-height, from the face centre.
        return round((cx + u * fw) * unit), round((cy + v * fh) * unit)

    def ellipse(u, v, a, b, colour, thickness=-1, start=0, end=360, angle=0):
        axes = (max(unit, round(a * fw * unit)), max(unit, round(b * fh * unit)))
        cv2.ellipse(frame, point(u, v), axes, angle, start, end, _colour(colour), thickness, cv2.LINE_AA, _SHIFT)

    origin, scale = np.array([cx, cy]), np.array([fw, fh])

    def pixels(points) -> np.ndarray:
        # (N, 2) face units → (N, 2) fixed-point pixels
        return np.rint((origin + np.asarray(points, float) * scale) * unit).astype(np.int32)

    def polyline(points, colour, thickness, closed=False):
        cv2.polylines(frame, [pixels(points)], closed, _colour(colour), thickness, cv2.LINE_AA, _SHIFT)

    def polygon(points, colour):
        cv2.fillPoly(frame, [pixels(points)], _colour(colour), cv2.LINE_AA, _SHIFT)

    # Hair behind the head, neck and shoulders, the face, then the fringe over the forehead.
    if identity.hair_style == 1:
        ellipse(0, 0.15, 1.15, 1.05, hair)
    else:
        ellipse(0, -0.12, 1.07, 0.98, hair)
    neck = [(-0.38, 0.7), (0.38, 0.7), (0.42, 2.0), (-0.42, 2.0)]
    polygon(neck, skin * 0.82)
    ellipse(0, 1.55, 1.6, 0.55, np.array(identity.background) * 0.55)  # shoulders
    ellipse(0, 0, 1.0, 1.0, skin)
    top = -0.74 if identity.hair_style != 2 else -0.8
    ellipse(0, top, 0.97, 0.36, hair, start=180, end=360)
    ellipse(0, top + 0.05, 0.99, 0.28, hair, start=180, end=360)

    # Eyes: socket shade, white, iris, pupil, outline; the lids close for a blink and narrow for a squint.
    eye_v = -0.12
    eye_w = 0.22
    eye_h = 0.12 * expression.eye_open * max(eyelid, 0.05) / identity.aspect
    dark = np.array([28.0, 22.0, 22.0])
    for side_sign in (-1, 1):
        eu = side_sign * identity.eye_spacing
        ellipse(eu, eye_v + 0.01, eye_w * 1.25, 0.14, skin * 0.82)
        ellipse(eu, eye_v, eye_w, eye_h, (246, 244, 238))
        if eyelid > 0.3:
            iris_r = min(eye_w * 0.5, eye_h * identity.aspect * 0.95)
            ellipse(eu, eye_v, iris_r, iris_r / identity.aspect, identity.iris)
            ellipse(eu, eye_v, iris_r * 0.45, iris_r * 0.45 / identity.aspect, dark)
        ellipse(eu, eye_v, eye_w, eye_h, dark, thickness=line)
        # Brows: raised or lowered as a whole, inner end tilted up (sad, worried) or down (angry).
        brow_v = eye_v - 0.17 - 0.09 * expression.brow_raise
        inner = (eu - side_sign * eye_w * 1.1, brow_v - 0.1 * expression.brow_tilt)
        outer = (eu + side_sign * eye_w * 1.15, brow_v + 0.04 * expression.brow_tilt)
        brow_colour = hair * 0.55 if hair.mean() > 60 else hair
        polyline([inner, outer], brow_colour, max(3, round(side * 0.03 * identity.brow_weight)))
        if expression.furrow > 0:
            furrow = [(side_sign * 0.07, eye_v - 0.2), (side_sign * 0.05, eye_v - 0.06)]
            polyline(furrow, skin * (1 - 0.4 * expression.furrow), line)
        if expression.nose_wrinkle > 0:
            wrinkle = [(side_sign * 0.1, 0.0), (side_sign * 0.2, 0.1)]
            polyline(wrinkle, skin * (1 - 0.45 * expression.nose_wrinkle), line)
            polyline(
                [(side_sign * 0.08, 0.05), (side_sign * 0.17, 0.15)], skin * (1 - 0.45 * expression.nose_wrinkle), line
            )
        if expression.mouth_curve > 0.5:  # smile lines on the cheeks
            polyline([(side_sign * 0.5, 0.25), (side_sign * 0.55, 0.42)], skin * 0.75, line)

    # Nose: a shaded ridge and the tip.
    polyline([(0.0, -0.02), (-0.07, 0.2)], skin * 0.7, line)
    ellipse(0, 0.22, 0.13, 0.045, skin * 0.68)

    # Mouth: a lip line bent by the curve; opening parts the lips into an oval (dark inside, upper teeth showing).
    mouth_v = 0.5
    half_width = 0.38 * expression.mouth_width * identity.mouth_scale
    opening = min(1.4, expression.mouth_open + talk)
    us = np.linspace(-1.0, 1.0, 25)
    bulge = 1 - us * us  # 1 in the middle of the mouth, 0 at the corners
    line_v = mouth_v + 0.14 * expression.mouth_curve * (0.3 - us * us)
    if expression.sneer > 0:  # raise the upper lip on the left side only
        line_v = line_v - 0.14 * expression.sneer * np.maximum(0.0, -us) * bulge
    depth = 0.42 * opening
    upper = np.stack([half_width * us, line_v - 0.3 * depth * bulge], axis=1)
    lower = np.stack([half_width * us, line_v + 0.7 * depth * bulge], axis=1)
    lip_colour = np.array(identity.lips, float)
    if opening > 0.04:
        outline = np.concatenate([upper, lower[::-1]])
        polygon(outline, (62, 16, 22))
        if expression.teeth > 0:
            teeth = upper + np.stack([np.zeros_like(us), min(0.5, 0.45 * expression.teeth) * depth * bulge], axis=1)
            polygon(np.concatenate([upper, teeth[::-1]]), (242, 240, 232))
        polyline(outline, lip_colour, max(2, round(side * 0.014)), closed=True)
    else:
        polyline(np.stack([half_width * us, line_v], axis=1), lip_colour, max(3, round(side * 0.03)))
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)


def face_box(identity: Identity, size: int = 112, head: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Where [`render_face`] draws the face of `identity`: `(x, y, w, h)` in pixels of a `size` frame, the box of
    the face ellipse (forehead to chin, cheek to cheek), as a face detector would report it."""
    cx = size * (0.5 + identity.offset[0] + head[0])
    cy = size * (0.52 + identity.offset[1] + head[1])
    fw = size * identity.face_width
    fh = fw * identity.aspect
    return np.array([cx - fw, cy - fh, 2 * fw, 2 * fh], np.float32)


def expression_frames(
    identity: Identity,
    emotion: str,
    intensity: float = 1.0,
    num_frames: int = 24,
    fps: int = 12,
    size: int = 112,
    syllables_per_second: float = 4.0,
    seed: int = 0,
    return_boxes: bool = False,
):
    """
    A talking-head clip: the expression of `emotion` at `intensity`, with a head bob, one blink and the mouth
    moving at the voice's syllable rate.

    Returns:
        `np.ndarray` of shape `(num_frames, size, size, 3)`, `uint8` RGB; with `return_boxes`, also the face box of
        every frame ([`face_box`]), `(num_frames, 4)`.
    """
    if emotion not in EXPRESSIONS:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}.")
    rng = np.random.default_rng(seed)
    expression = EXPRESSIONS[emotion].scaled(intensity)
    phase_x, phase_y = rng.uniform(0, 2 * np.pi, 2)
    bob_hz = rng.uniform(0.8, 1.5)
    blink_at = int(rng.integers(2, max(3, num_frames - 2)))
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    boxes = np.empty((num_frames, 4), np.float32)
    for index in range(num_frames):
        t = index / fps
        head = (
            0.012 * math.sin(2 * math.pi * 0.6 * t + phase_x),
            0.015 * math.sin(2 * math.pi * bob_hz * t + phase_y),
        )
        eyelid = 0.0 if index == blink_at else (0.5 if abs(index - blink_at) == 1 else 1.0)
        # Same syllable envelope as `synthetic_voice`, so lips and voice move together.
        talk = 0.18 * min(1.0, 1.4 * math.sin(math.pi * syllables_per_second * t) ** 2)
        frames[index] = render_face(identity, expression, size, head, eyelid, talk)
        boxes[index] = face_box(identity, size, head)
    return (frames, boxes) if return_boxes else frames


# ---------------------------------------------------------------------------------------------------------------------
# Voices
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prosody:
    """How an emotion changes a voice: pitch factor on the speaker's own, contour range, syllable rate, peak
    loudness, and voice quality (tremolo depth, pressed-voice drive, breath noise)."""

    pitch: float = 1.0
    pitch_range: float = 0.05
    syllables_per_second: float = 4.0
    loudness: float = 0.3
    tremolo: float = 0.0
    drive: float = 0.0
    breath: float = 0.0


PROSODY = {
    "neutral": Prosody(),
    "happy": Prosody(pitch=1.3, pitch_range=0.3, syllables_per_second=5.5, loudness=0.5),
    "sad": Prosody(pitch=0.78, pitch_range=0.03, syllables_per_second=2.2, loudness=0.12),
    "angry": Prosody(pitch=1.1, pitch_range=0.12, syllables_per_second=6.5, loudness=0.85, drive=4.0),
    "worried": Prosody(pitch=1.4, pitch_range=0.08, syllables_per_second=4.5, loudness=0.28, tremolo=0.6),
    "surprise": Prosody(pitch=1.55, pitch_range=0.4, syllables_per_second=3.5, loudness=0.6),
    "disgust": Prosody(pitch=0.88, pitch_range=0.06, syllables_per_second=2.8, loudness=0.3, breath=0.25),
}


def prosody_for(emotion: str, intensity: float = 1.0) -> Prosody:
    """The prosody of `emotion` at `intensity` (0 = neutral, 1 = full), interpolated from neutral's."""
    if emotion not in PROSODY:
        raise ValueError(f"emotion must be one of {EMOTIONS}, got {emotion!r}.")
    rest, full = PROSODY["neutral"], PROSODY[emotion]
    return Prosody(**{k: getattr(rest, k) + intensity * (v - getattr(rest, k)) for k, v in asdict(full).items()})


def emotional_voice(
    emotion: str,
    pitch_hz: float = 140.0,
    seconds: float = 2.0,
    sampling_rate: int = 16000,
    intensity: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """
    A speech-like voice of a speaker whose pitch at rest is `pitch_hz`, with the prosody of `emotion`
    ([`PROSODY`]): `synthetic_voice` for pitch, range, rate and loudness, then the voice quality — a 7 Hz tremolo
    (worried), a pressed voice by soft clipping, which adds upper harmonics (angry), breath noise (disgust).

    Returns:
        `np.ndarray` of shape `(round(seconds * sampling_rate),)`, float32 in [-1, 1].
    """
    prosody = prosody_for(emotion, intensity)
    voice = synthetic_voice(
        seconds,
        sampling_rate=sampling_rate,
        pitch_hz=pitch_hz * prosody.pitch,
        pitch_range=prosody.pitch_range,
        syllables_per_second=prosody.syllables_per_second,
        loudness=1.0,
        seed=seed,
    ).astype(np.float64)
    t = np.arange(voice.shape[0]) / sampling_rate
    if prosody.tremolo > 0:
        voice *= 1 - prosody.tremolo * 0.5 * (1 + np.sin(2 * np.pi * 7.0 * t))
    if prosody.drive > 0:
        voice = np.tanh(prosody.drive * voice) / np.tanh(prosody.drive)
    if prosody.breath > 0:
        rng = np.random.default_rng(seed + 1)
        envelope = np.abs(voice) > 0.02  # breath only while voiced
        voice += prosody.breath * rng.standard_normal(voice.shape) * envelope
    peak = np.abs(voice).max()
    return (prosody.loudness * voice / (peak + 1e-9)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Words
# ---------------------------------------------------------------------------------------------------------------------

# Slot words; even positions go to train, odd positions to test, so no test sentence appears in training.
SLOT_WORDS = {
    "gift": ("flowers", "book", "birthday cake", "scarf", "concert tickets", "lamp", "chocolates", "postcard",
             "plant", "watch"),
    "task": ("report", "presentation", "garden", "kitchen", "website", "poster", "project", "budget"),
    "thing": ("printer", "heater", "laptop", "car", "bike", "phone", "washing machine", "camera"),
    "food": ("soup", "sandwich", "salad", "pasta", "fish", "cheese", "bread", "yoghurt"),
    "event": ("meeting", "party", "dinner", "rehearsal", "workshop", "interview", "match", "lecture"),
    "time": ("nine", "ten", "noon", "three", "five", "seven", "eight", "six"),
    "place": ("station", "library", "cafe", "park", "office", "museum", "bakery", "harbour"),
    "name": ("Anna", "Ben", "Clara", "David", "Emma", "Felix", "Grace", "Hugo", "Ivy", "Jonas"),
    "prize": ("lottery", "chess tournament", "baking contest", "poetry prize", "scholarship", "quiz night"),
    "pet": ("dog", "cat", "parrot", "rabbit", "hamster", "horse"),
}  # fmt: skip

INTENT_TEMPLATES = {
    "thank": ("Thank you so much for the {gift}.", "Thanks a lot for helping me with the {task}.",
              "I really appreciate the {gift}, thank you."),
    "praise": ("You did a wonderful job on the {task}.", "Your work on the {task} is really impressive.",
               "Great work on the {task}, well done."),
    "flaunt": ("Guess what, I won the {prize}!", "Look at my new {gift}, it cost a fortune.",
               "I finished the {task} before everyone else."),
    "greet": ("Hi {name}, it's good to see you.", "Good morning {name}, how are you?",
              "Hello {name}, welcome to the {place}."),
    "inform": ("The {event} starts at {time} tomorrow.", "Your {thing} is at the {place}.",
               "The {event} has moved to the {place}."),
    "complain": ("The {thing} is broken again and nobody fixed it.", "I have waited two hours for the {thing}.",
                 "This {food} tastes awful, I can't eat it."),
    "criticize": ("You ruined the {task} with your careless mistakes.", "That was a sloppy way to handle the {task}.",
                  "Your {task} is full of errors."),
    "apologise": ("I'm so sorry I broke your {thing}.", "Sorry, I forgot about the {event}.",
                  "I apologise for missing the {event}."),
    "ask for help": ("Could you please help me find my {pet}?", "I can't fix the {thing}, can you help me?",
                     "Please help me, I'm lost near the {place}."),
}  # fmt: skip
# A taunt is praise or thanks said with a sad or angry voice behind a smile (the masked smile): the words alone do
# not tell it from praise or thanks.
INTENT_TEMPLATES["taunt"] = INTENT_TEMPLATES["praise"] + INTENT_TEMPLATES["thank"]
INTENTS = tuple(INTENT_TEMPLATES)  # ten MIntRec intents, the MIR candidates
EMOTION_INTENTS = {
    "happy": ("thank", "praise", "flaunt", "greet"),
    "surprise": ("flaunt", "thank"),
    "sad": ("apologise", "ask for help"),
    "angry": ("complain", "criticize"),
    "worried": ("ask for help", "apologise"),
    "disgust": ("complain", "criticize"),
    "neutral": ("inform", "greet"),
}
# Who says what: the emotions an intent's utterance goes with (a taunt is always a masked smile).
INTENT_EMOTIONS = {intent: tuple(e for e in EMOTIONS if intent in EMOTION_INTENTS[e]) for intent in INTENTS}
INTENT_EMOTIONS["taunt"] = ("sad", "angry")

FACE_DESCRIPTIONS = {
    "happy": "a broad smile with raised cheeks and narrowed eyes",
    "sad": "raised inner brows, drooping eyes and a downturned mouth",
    "angry": "lowered, drawn-together brows, a flushed face and bared teeth",
    "worried": "raised, tilted brows, wide eyes and a stretched mouth",
    "surprise": "raised brows, wide-open eyes and a round, open mouth",
    "disgust": "a wrinkled nose, lowered brows and a raised upper lip",
    "neutral": "relaxed brows and a relaxed, closed mouth",
}
VOICE_DESCRIPTIONS = {
    "happy": "high, lively and fast",
    "sad": "low, flat, slow and quiet",
    "angry": "loud, fast and tense",
    "worried": "high and trembling",
    "surprise": "high, with wide rises and falls",
    "disgust": "low, slow and breathy",
    "neutral": "calm, steady and even",
}

# ERG: (what the speaker says happened, the event in the third person, the cause of the emotion).
EVENTS = {
    "happy": (
        ("I got the job at the {place}!", "The speaker got a job at the {place}.", "getting the job they wanted"),
        ("My {pet} won first prize at the show!", "The speaker's {pet} won a prize at a show.",
         "their {pet} winning first prize"),
        ("I finished the {task} and it went perfectly.", "The speaker finished the {task} successfully.",
         "the {task} going perfectly"),
    ),
    "sad": (
        ("My {pet} died last week.", "The speaker's {pet} died last week.", "losing their beloved {pet}"),
        ("{name} moved away and I miss them.", "The speaker's friend {name} moved away.",
         "missing their friend {name}"),
        ("Nobody came to my {event}.", "Nobody came to the speaker's {event}.",
         "feeling rejected at their own {event}"),
    ),
    "angry": (
        ("My neighbour broke my {thing} and refuses to pay.", "The speaker's neighbour broke their {thing}.",
         "the neighbour refusing to take responsibility for the {thing}"),
        ("The shop charged me twice for the {thing}.", "A shop charged the speaker twice for a {thing}.",
         "being overcharged for the {thing}"),
        ("{name} took the credit for my {task}.", "A colleague, {name}, took credit for the speaker's {task}.",
         "{name} taking credit for their {task}"),
    ),
    "worried": (
        ("I have an interview at the {place} tomorrow and I'm not ready.",
         "The speaker has an interview at the {place} tomorrow.", "feeling unprepared for the interview"),
        ("My {pet} is sick and the vet doesn't know why.", "The speaker's {pet} is sick with an unknown illness.",
         "not knowing what is wrong with their {pet}"),
        ("I can't find my {thing} and I need it for the {event}.",
         "The speaker lost their {thing} before the {event}.", "needing the lost {thing} for the {event}"),
    ),
    "surprise": (
        ("{name} showed up at my door after ten years!", "An old friend, {name}, visited the speaker unannounced.",
         "seeing {name} again so unexpectedly"),
        ("I just found out I won the {prize}!", "The speaker unexpectedly won the {prize}.",
         "winning the {prize} without expecting it"),
        ("My boss gave me a {gift} out of nowhere!", "The speaker's boss gave them a {gift} unexpectedly.",
         "an unexpected {gift} from their boss"),
    ),
    "disgust": (
        ("I found mould in my {food}.", "The speaker found mould in their {food}.", "the mouldy {food}"),
        ("Someone left rotten {food} in the office fridge.", "Rotten {food} was left in the speaker's office fridge.",
         "the smell of rotten {food}"),
        ("There was a hair in my {food} at the {place}.", "The speaker found a hair in their {food} at the {place}.",
         "finding a hair in their {food}"),
    ),
    "neutral": (
        ("The {event} moved to {time}.", "The speaker's {event} was rescheduled to {time}.",
         "a routine change of schedule"),
        ("I'm going to the {place} later.", "The speaker plans to go to the {place}.", "an ordinary plan for the day"),
        ("I need to buy a new {thing} this week.", "The speaker needs a new {thing}.", "an everyday errand"),
    ),
}  # fmt: skip
FEELINGS = {
    "happy": ("I'm so happy, I can't stop smiling.", "This is the best day I've had in months."),
    "sad": ("I just feel empty and down.", "I can't stop crying about it."),
    "angry": ("I'm so furious about it.", "It makes my blood boil."),
    "worried": ("I'm really nervous about it.", "I keep thinking something bad will happen."),
    "surprise": ("I still can't believe it happened!", "I never saw that coming!"),
    "disgust": ("It was so gross, I feel sick.", "Just thinking about it makes me gag."),
    "neutral": ("Just letting you know.", "Nothing special, really."),
}
# What a masked smile says in a dialogue: the words deny the feeling the voice gives away.
MASKED_FEELINGS = ("I'm fine, really, everything is great.", "Ha, it's all wonderful, don't worry about me.")
GOALS = {
    "happy": "share their joy and congratulate them",
    "sad": "comfort them and show that I understand",
    "angry": "acknowledge their frustration and help them calm down",
    "worried": "reassure them and offer support",
    "surprise": "share their excitement and ask for details",
    "disgust": "sympathise with their discomfort and suggest a fix",
    "neutral": "acknowledge the information and offer help",
}
REPLIES = {
    "happy": ("Congratulations! You really deserve this.", "That's wonderful news, I'm so happy for you!"),
    "sad": ("I'm so sorry. That must be really hard, and I'm here for you.",
            "That sounds painful. Take all the time you need."),
    "angry": ("That's really unfair, no wonder you're upset. Let's work out what to do.",
              "I understand why you're angry. Take a breath; we can sort this out."),
    "worried": ("It's normal to feel nervous. You're more prepared than you think.",
                "I'm here for you. Let's take it one step at a time."),
    "surprise": ("Wow, what a surprise! Tell me everything.", "No way! How did that happen?"),
    "disgust": ("Ugh, that's awful. Throw it away and let's get something fresh.",
                "That sounds disgusting. I'd complain about it."),
    "neutral": ("Thanks for letting me know. Do you need anything?", "Okay, noted. Tell me if I can help."),
}  # fmt: skip
OPENERS = ("Hi, how are you today?", "Hey, what's new with you?", "You look like something happened. Want to talk?")
FOLLOW_UPS = ("Oh, tell me more. How do you feel about it?", "And how are you taking it?")


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [text for item in value for text in _strings(item)] if isinstance(value, (list, tuple)) else []


def tokenizer_texts() -> list[str]:
    """Every string of the word banks above: the tiny tokenizer of the embedded run is trained on them too
    (`build_tiny(extra_texts=...)`), so its sequences stay short (about 150 tokens instead of 400, most of the run's
    speed on a CPU)."""
    banks = (SLOT_WORDS, INTENT_TEMPLATES, FACE_DESCRIPTIONS, VOICE_DESCRIPTIONS, EVENTS, FEELINGS, MASKED_FEELINGS,
             GOALS, REPLIES, OPENERS, FOLLOW_UPS, OVMER_WORDS)  # fmt: skip
    return [text for bank in banks for text in _strings(bank)]


def _slot_values(split: str, rng: np.random.Generator) -> dict[str, str]:
    """One word per slot from the split's own half of each bank (even positions train, odd positions test)."""
    offset = SPLITS.index(split)
    values = {}
    for slot, words in SLOT_WORDS.items():
        own = words[offset::2]
        values[slot] = own[rng.integers(len(own))]
    return values


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------------------------
# Scenes and samples
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """Everything about one generated sample: its cues (for the media) and its manifest row."""

    id: str
    split: str
    task: str
    label: str
    scene_type: str
    face: str
    voice: str
    intensity: float
    identity: int
    intent: str | None
    utterance: str
    seed: int
    text: str | None = None
    history: list[dict] | None = None
    candidates: list[str] | None = None
    target: str | None = None
    reference: object = None

    def cues(self) -> dict:
        return {
            "id": self.id, "split": self.split, "task": self.task, "label": self.label, "scene_type": self.scene_type,
            "face": self.face, "voice": self.voice, "intensity": self.intensity, "identity": self.identity,
            "intent": self.intent, "utterance": self.utterance, "seed": self.seed,
        }  # fmt: skip

    def to_sample(self, media_path: str, faces_path: str | None = None) -> Sample:
        return Sample(
            id=self.id,
            task=self.task,
            dataset=f"synthetic-{self.task}",
            video=media_path,
            faces=faces_path,
            text=self.text,
            history=self.history,
            candidates=self.candidates,
            target=self.target,
            reference=self.reference,
        )


def _task_counts(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Splits `total` by weight (largest remainder), at least one sample per task."""
    if total < len(weights):
        raise ValueError(
            f"Every task needs a sample: expected at least {len(weights)} samples per split, got {total}."
        )
    norm = sum(weights.values())
    raw = {task: (total - len(weights)) * w / norm for task, w in weights.items()}
    counts = {task: 1 + int(math.floor(v)) for task, v in raw.items()}
    leftover = total - sum(counts.values())
    for task in sorted(raw, key=lambda t: (-(raw[t] - math.floor(raw[t])), t))[:leftover]:
        counts[task] += 1
    return counts


def _cycle(values, count: int, rng: np.random.Generator) -> list:
    """`count` values taken from reshuffled copies of `values`: classes as balanced as `count` allows."""
    out = []
    while len(out) < count:
        out += [values[i] for i in rng.permutation(len(values))]
    return out[:count]


def _plan_split(total: int, weights: dict, conflict_rate: float, num_identities: int, rng) -> list[tuple]:
    """
    `(task, label, intent or None, scene type, identity)` of every sample of a split. Labels cycle through each
    task's emotions (MIR: through the intents) so that classes stay balanced; conflicts are then spread over the
    non-neutral congruent samples at `conflict_rate`.
    """
    plan = []
    for task, count in _task_counts(total, weights).items():
        if task == "mir":
            for intent in _cycle(INTENTS, count, rng):
                label = INTENT_EMOTIONS[intent][rng.integers(len(INTENT_EMOTIONS[intent]))]
                plan.append([task, label, intent, "masked_smile" if intent == "taunt" else "congruent"])
        else:
            plan += [[task, label, None, "congruent"] for label in _cycle(TASK_EMOTIONS[task], count, rng)]
    eligible = [i for i, (_, label, _, kind) in enumerate(plan) if label != "neutral" and kind == "congruent"]
    num_conflicts = round(conflict_rate * len(eligible))
    if conflict_rate > 0 and eligible:
        num_conflicts = max(1, num_conflicts)  # even a tiny split shows the rule
    for index in rng.choice(eligible, size=num_conflicts, replace=False) if num_conflicts else ():
        task, label = plan[index][0], plan[index][1]
        options = ["poker_face", "calm_voice"]
        # A masked smile turns the words into a taunt, so MIR plans its taunts by intent instead.
        if label in INTENT_EMOTIONS["taunt"] and task != "mir":
            options += ["masked_smile", "masked_smile"]
        plan[index][3] = options[rng.integers(len(options))]
    order = rng.permutation(len(plan))
    return [(*plan[i], int(k % num_identities)) for k, i in enumerate(order)]


def _scene(split: str, index: int, planned: tuple, seed: int) -> Scene:
    task, label, intent, scene_type, identity = planned
    rng = np.random.default_rng(seed)
    face, voice = _cues_for(scene_type, label)
    if intent is None:
        intent = (
            "taunt"
            if scene_type == "masked_smile"
            else EMOTION_INTENTS[label][rng.integers(len(EMOTION_INTENTS[label]))]
        )
    templates = INTENT_TEMPLATES[intent]
    utterance = _capitalised(templates[rng.integers(len(templates))].format(**_slot_values(split, rng)))
    scene = Scene(
        id=f"synthetic-{split}-{index:05d}",
        split=split,
        task=task,
        label=label,
        scene_type=scene_type,
        face=face,
        voice=voice,
        intensity=round(float(rng.uniform(0.8, 1.0)), 3),
        identity=identity,
        intent=intent,
        utterance=utterance,
        seed=seed,
    )
    if task == "mer":
        # MER and OV-MER read the clip alone (no subtitle), so face and voice carry the emotion.
        scene.target, scene.reference = f"The most likely label is {MER_LABEL[label]}.", MER_LABEL[label]
    elif task == "ovmer":
        words = OVMER_WORDS[label]
        num_extra = int(rng.integers(1, min(3, len(words))))
        extra = sorted(rng.choice(np.arange(1, len(words)), size=num_extra, replace=False))
        chosen = [words[0], *(words[i] for i in extra)]
        scene.target, scene.reference = f"The character's emotional state is {', '.join(chosen)}.", chosen
    elif task == "msa":
        # Valence in ±[1, 3] (CMU-MOSI's scale), stronger for a more intense expression; never 0.
        valence = round(POLARITY[label] * (1.0 + 2.0 * (scene.intensity - 0.8) / 0.2), 2)
        scene.text = utterance
        scene.target, scene.reference = ("positive" if valence > 0 else "negative"), valence
    elif task == "mir":
        scene.text, scene.candidates = utterance, list(INTENTS)
        scene.target = scene.reference = intent
    elif task == "eri":
        scene.text = utterance
        scene.target = scene.reference = _rationale(scene)
    else:
        _dialogue(scene, rng)
    return scene


def _rationale(scene: Scene) -> str:
    face, voice, said = FACE_DESCRIPTIONS[scene.face], VOICE_DESCRIPTIONS[scene.voice], scene.utterance
    feeling = f"Therefore, the person feels {EMOTION_WORD[scene.label]}."
    if scene.scene_type == "masked_smile":
        return (
            f'The person is smiling, but the voice is {voice}, and the words "{said}" sound sarcastic, so the smile '
            f"masks the real feeling. {feeling}"
        )
    if scene.scene_type == "poker_face":
        return f'The face stays neutral, but the voice is {voice} as they say "{said}"; it gives them away. {feeling}'
    if scene.scene_type == "calm_voice":
        return f'The voice is calm and even, but the face shows {face} as they say "{said}". {feeling}'
    return f'The person shows {face}, the voice is {voice}, and they say "{said}". {feeling}'


def _dialogue(scene: Scene, rng: np.random.Generator) -> None:
    """Fills an ERG scene: 2 to 4 turns (history plus the current input) about an event of the label's emotion, the
    chain-of-empathy target (`chain_of_empathy.format_chain_of_empathy`) and the reference."""
    label = scene.label
    said, scenario, cause = EVENTS[label][rng.integers(len(EVENTS[label]))]
    slots = _slot_values(scene.split, rng)  # one draw, so the three strings talk about the same thing
    said, scenario, cause = (_capitalised(part.format(**slots)) for part in (said, scenario, cause))
    feelings = MASKED_FEELINGS if scene.scene_type == "masked_smile" else FEELINGS[label]
    feeling = feelings[rng.integers(len(feelings))]
    opener, follow_up = OPENERS[rng.integers(len(OPENERS))], FOLLOW_UPS[rng.integers(len(FOLLOW_UPS))]
    turns = int(rng.integers(2, 5))
    if turns == 2:
        history, current = [{"role": "assistant", "content": opener}], f"{said} {feeling}"
    elif turns == 3:
        history, current = [{"role": "user", "content": said}, {"role": "assistant", "content": follow_up}], feeling
    else:
        history = [
            {"role": "assistant", "content": opener},
            {"role": "user", "content": said},
            {"role": "assistant", "content": follow_up},
        ]
        current = feeling
    emotion = EMOTION_WORD[label]
    fields = {
        "event_scenario": scenario,
        "speaker_emotion": emotion,
        "emotion_cause": f"The speaker feels {emotion} because of {cause[0].lower() + cause[1:]}."
        + (
            " The smile and the cheerful words hide it; the voice gives it away."
            if scene.scene_type == "masked_smile"
            else ""
        ),
        "goal_to_response": f"To {GOALS[label]}.",
    }
    reply = REPLIES[label][rng.integers(len(REPLIES[label]))]
    # The clip shows the speaker saying the current input; the intent banks play no part in a dialogue.
    scene.history, scene.text, scene.utterance, scene.intent = history, current, current, None
    scene.target = format_chain_of_empathy(fields, reply)
    # The scorer reads `emotion` and `response`; the four steps use the names `chain_of_empathy` reads back.
    scene.reference = {"emotion": emotion, **fields, "response": reply}


# Called in the worker with each written clip's path, set by `build_synthetic_dataset(after_render=...)` (a module
# global, which forked workers inherit: a closure could not be sent to them).
_AFTER_RENDER = None
FACE_CROP_SIZE = 48  # side of the stored face crops (the processor resizes them to its face encoder's size)
FACE_MARGIN = 0.25  # as the processor's default `face_margin`


def _render(job: tuple):
    """Writes one clip (and its face crops); a module-level function of plain arguments so that worker processes
    can run it. Returns `after_render(path)` when one is set."""
    face, voice, intensity, seed, identity, path, image_size, fps, seconds, media_format, faces_path = job
    prosody = prosody_for(voice, intensity)
    frames, boxes = expression_frames(
        identity,
        face,
        intensity,
        num_frames=max(1, round(seconds * fps)),
        fps=fps,
        size=image_size,
        syllables_per_second=prosody.syllables_per_second,
        seed=seed,
        return_boxes=True,
    )
    audio = emotional_voice(voice, identity.pitch_hz, seconds, SAMPLING_RATE, intensity, seed=seed)
    video_codec, audio_codec = MEDIA_FORMATS[media_format]
    write_clip(path, frames, fps, audio, SAMPLING_RATE, video_codec=video_codec, audio_codec=audio_codec)
    if faces_path is not None:
        from nanoemox_processing.face_detection_nanoemox import crop_faces

        # The face track the renderer knows (what OpenFace-style preprocessing gives real datasets), cropped as the
        # processor crops detected faces.
        np.save(faces_path, crop_faces(frames, list(boxes), FACE_CROP_SIZE, FACE_MARGIN).crops, allow_pickle=False)
    return None if _AFTER_RENDER is None else _AFTER_RENDER(path, faces_path)


def _render_all(jobs: list[tuple], num_workers: int, after_render=None, progress=None) -> list:
    """Renders every job (in `num_workers` forked processes); returns the `after_render` results in job order."""
    global _AFTER_RENDER
    _AFTER_RENDER = after_render
    try:
        if num_workers <= 1 or len(jobs) < 2 * num_workers:
            results = []
            for job in jobs:
                results.append(_render(job))
                if progress is not None:
                    progress.update(1)
            return results
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # Fork: workers inherit the imported modules (spawning would re-import torch and transformers in each). Clips
        # do not depend on which worker draws them (each has its own seed).
        context = multiprocessing.get_context("fork")
        results = []
        with ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            for result in pool.map(_render, jobs, chunksize=4):
                results.append(result)
                if progress is not None:
                    progress.update(1)
        return results
    finally:
        _AFTER_RENDER = None


# ---------------------------------------------------------------------------------------------------------------------
# Chance levels
# ---------------------------------------------------------------------------------------------------------------------


def _answer_label(task: str, sample: Sample) -> str:
    """The label a sample's answer names (the class a label-blind guesser would have to hit)."""
    if task == "ovmer":
        return sample.reference[0]
    if task == "msa":
        return "positive" if sample.reference > 0 else "negative"
    if task == "erg":
        return sample.reference["emotion"]
    return sample.reference


def _answer(task: str, label: str):
    """An answer naming `label`, written as a model trained on this data answers (ERG: the chain's emotion step)."""
    if task == "mer":
        return f"The most likely label is {label}."
    if task == "ovmer":
        emotion = next(e for e, words in OVMER_WORDS.items() if words[0] == label)
        return list(OVMER_WORDS[emotion][:2])
    if task == "erg":
        return f"<think>2. Speaker emotion: {label}.</think>"
    return label


CHANCE_METRICS = {
    "mer": ("accuracy", "weighted_f1", "macro_f1", "hit_rate"),
    "ovmer": ("f_score", "precision", "recall"),
    "msa": ("weighted_f1", "accuracy"),
    "mir": ("accuracy", "weighted_f1", "weighted_precision", "macro_f1"),
    "erg": ("emotion_accuracy", "coarse_hit_rate"),
}


def _score_answers(task: str, references: list, labels: list[str], candidates, wheel) -> dict:
    """The evaluation's metrics (`evaluation.scoring.score`, called as `nanoemox eval run` calls it) for answering
    `labels[i]` to `references[i]`."""
    predictions = [{"id": str(i), "prediction": _answer(task, label)} for i, label in enumerate(labels)]
    rows = [{"id": str(i), "reference": reference} for i, reference in enumerate(references)]
    kwargs = {"emotion_wheel": wheel} if task in ("mer", "ovmer") else {}
    if task in ("mer", "mir"):
        kwargs["labels"] = candidates
    metrics = score(task, predictions, rows, **kwargs)["metrics"]
    return {name: metrics[name] for name in CHANCE_METRICS[task] if name in metrics}


def chance_levels(train: list[Sample], test: list[Sample], emotion_wheel=None) -> dict:
    """
    Chance level of each classification metric on `test` (module docstring): per metric, the higher of the
    majority-class baseline (the most frequent label of `train`, ties broken alphabetically) and the expected score
    of a uniform guess among the task's labels (MER / MIR: the candidates; others: the labels seen in `train`).

    Args:
        train, test: manifest samples of the two splits.
        emotion_wheel: the emotion-wheel folder (or a loaded wheel); adds mer `hit_rate` and the ovmer metrics.

    Returns:
        `{"chance": {task: {metric: value}}, "majority": {...}, "uniform": {...}, "majority_label": {task: label}}`.
    """
    report = {"chance": {}, "majority": {}, "uniform": {}, "majority_label": {}}
    for task in CHANCE_METRICS:
        task_test = [s for s in test if s.task == task]
        task_train = [s for s in train if s.task == task]
        if not task_test or not task_train or (task == "ovmer" and emotion_wheel is None):
            continue
        references = [s.reference for s in task_test]
        counts = Counter(_answer_label(task, s) for s in task_train)
        majority = min(counts, key=lambda label: (-counts[label], label))
        # The labels `nanoemox eval run` hands the scorer: the samples' candidates (the prompt's defaults otherwise).
        candidates = sorted({c for s in task_test for c in (s.candidates or ())}) or None
        if task == "mer":
            guesses = sorted(set(candidates or MER_LABEL.values()))
        elif task == "mir":
            guesses = sorted(candidates or INTENTS)
        else:
            guesses = sorted(counts)
        majority_scores = _score_answers(task, references, [majority] * len(references), candidates, emotion_wheel)
        # Exact expectation of a uniform guess: every reference once per label, each copy answered with one label.
        repeated = [r for r in references for _ in guesses]
        uniform_scores = _score_answers(task, repeated, guesses * len(references), candidates, emotion_wheel)
        report["majority_label"][task] = majority
        report["majority"][task] = majority_scores
        report["uniform"][task] = uniform_scores
        report["chance"][task] = {
            name: max((v for v in (majority_scores[name], uniform_scores.get(name)) if v is not None), default=None)
            for name in majority_scores
        }
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def build_synthetic_dataset(
    output_dir: str | Path,
    num_train: int = 300,
    num_test: int = 100,
    seed: int = 0,
    conflict_rate: float = 0.25,
    task_weights: dict[str, float] | None = None,
    image_size: int = 112,
    fps: int = 12,
    seconds: float = 2.0,
    samples_per_identity: int = 8,
    emotion_wheel=None,
    media_format: str = "mkv",
    num_workers: int = 1,
    face_crops: bool = True,
    after_render=None,
    progress=None,
) -> dict:
    """
    Generates the embedded run's dataset (module docstring) under `output_dir`. Deterministic for a seed: the same
    arguments write the same manifests, cues and chance levels, and clips with the same pictures and samples (a
    Matroska header holds a random segment id), whatever `num_workers`.

    Args:
        output_dir: folder to write into (created; files of the same names are overwritten).
        num_train, num_test: samples per split (one clip each); at least one per task.
        seed: seed of everything random.
        conflict_rate: share of the non-neutral samples whose face and voice disagree (module docstring, rule); MIR's
            taunts are masked smiles on top of these, whatever the rate.
        task_weights: share of each task, defaults to `DEFAULT_TASK_WEIGHTS`.
        image_size: frame side in pixels (square frames; even, at least 32).
        fps, seconds: frame rate and length of each clip; the voice has the same length.
        samples_per_identity: about how many samples each generated person appears in; train and test draw separate
            people.
        emotion_wheel: emotion-wheel folder; given, the chance levels include mer `hit_rate` and ovmer.
        media_format: `"mkv"` (lossless FFV1 video + PCM audio, fast) or `"mp4"` (H.264 + AAC), see `MEDIA_FORMATS`.
        num_workers: processes rendering clips (default 1; more help only on an otherwise idle machine).
        face_crops: also write each clip's face track, cropped as the processor crops a detected face, as
            `media/{split}/<id>.faces.npy` `(frames, 48, 48, 3)` and name it in the manifest's `faces` field (real
            emotion datasets ship OpenFace crops the same way): the processor then needs no face detector, which on
            these drawn faces misses about a third of the frames.
        after_render: a function of a written clip's path and its face crops' path (or None), called in the worker right after the clip is written
            (e.g. to decode it while the next one is drawn); its results come back as `rendered`, by sample id.
        progress: a `tqdm`-like object whose `update(1)` is called per clip.

    Returns:
        `dict` with `train`, `test`, `cues`, `chance`, `summary` (paths), `counts` (`{split: {task: n}}`),
        `chance_levels` (`{task: {metric: value}}`, as in `chance.json`), `seconds` (generation time) and, with
        `after_render`, `rendered` (`{sample id: result}`).
    """
    start = time.perf_counter()
    weights = dict(DEFAULT_TASK_WEIGHTS if task_weights is None else task_weights)
    if not weights or set(weights) - set(TASK_NAMES) or any(w <= 0 for w in weights.values()):
        raise ValueError(f"task_weights must map tasks among {TASK_NAMES} to positive weights, got {weights!r}.")
    if not 0.0 <= conflict_rate <= 1.0:
        raise ValueError(f"conflict_rate must be in [0, 1], got {conflict_rate}.")
    if image_size < 32 or image_size % 2:
        raise ValueError(f"image_size must be an even number of pixels, at least 32, got {image_size}.")
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got seconds={seconds}, fps={fps}.")
    if samples_per_identity < 1:
        raise ValueError(f"samples_per_identity must be at least 1, got {samples_per_identity}.")
    if media_format not in MEDIA_FORMATS:
        raise ValueError(f"media_format must be one of {sorted(MEDIA_FORMATS)}, got {media_format!r}.")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}.")
    output_dir = Path(output_dir)
    scenes, samples, identities, jobs = {}, {}, {}, []
    for split_index, (split, total) in enumerate((("train", num_train), ("test", num_test))):
        rng = np.random.default_rng([seed, split_index])
        num_identities = max(2, math.ceil(total / samples_per_identity))
        identities[split] = [Identity.sample(rng) for _ in range(num_identities)]
        plan = _plan_split(total, weights, conflict_rate, num_identities, rng)
        seeds = rng.integers(2**31 - 1, size=len(plan))
        scenes[split] = [_scene(split, index, planned, int(s)) for index, (planned, s) in enumerate(zip(plan, seeds))]
        (output_dir / "media" / split).mkdir(parents=True, exist_ok=True)
        samples[split] = []
        for scene in scenes[split]:
            relative = f"media/{split}/{scene.id}.{media_format}"
            faces = f"media/{split}/{scene.id}.faces.npy" if face_crops else None
            samples[split].append(scene.to_sample(relative, faces))
            identity = identities[split][scene.identity]
            jobs.append((scene.face, scene.voice, scene.intensity, scene.seed, identity, output_dir / relative,
                         image_size, fps, seconds, media_format, faces and output_dir / faces))  # fmt: skip
    results = _render_all(jobs, num_workers, after_render, progress)
    paths = {split: write_manifest(samples[split], output_dir / f"{split}.jsonl") for split in SPLITS}
    paths["cues"] = output_dir / "cues.jsonl"
    with paths["cues"].open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(s.cues(), ensure_ascii=False) + "\n" for split in SPLITS for s in scenes[split])
    chance = chance_levels(samples["train"], samples["test"], emotion_wheel)
    paths["chance"] = output_dir / "chance.json"
    paths["chance"].write_text(json.dumps(chance["chance"], indent=2) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - start
    counts = {split: dict(sorted(Counter(s.task for s in samples[split]).items())) for split in SPLITS}
    summary = {
        "seed": seed,
        "counts": counts,
        "labels": {
            split: {
                task: dict(sorted(Counter(s.label for s in scenes[split] if s.task == task).items()))
                for task in counts[split]
            }
            for split in SPLITS
        },
        "scene_types": {split: dict(sorted(Counter(s.scene_type for s in scenes[split]).items())) for split in SPLITS},
        "rule": "label = the voice's emotion, unless the voice is neutral; then the face's emotion",
        # `identity` in cues.jsonl indexes these lists: train and test people are separate draws.
        "identities": {split: [asdict(identity) for identity in identities[split]] for split in SPLITS},
        "chance_baselines": {key: value for key, value in chance.items() if key != "chance"},
        "seconds": round(elapsed, 2),
    }
    # Only summary.json carries the timing, so it alone differs between two runs with the same seed.
    paths["summary"] = output_dir / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    logger.info(f"Generated {num_train} + {num_test} synthetic samples in {elapsed:.1f} s under {output_dir}.")
    rendered = {}
    if after_render is not None:
        ids = [scene.id for split in SPLITS for scene in scenes[split]]
        rendered = dict(zip(ids, results))
    return {**paths, "counts": counts, "chance_levels": chance["chance"], "seconds": elapsed, "rendered": rendered}


__all__ = [
    "EMOTIONS",
    "EXPRESSIONS",
    "INTENTS",
    "PROSODY",
    "SCENE_TYPES",
    "Expression",
    "Identity",
    "Prosody",
    "build_synthetic_dataset",
    "chance_levels",
    "emotional_voice",
    "expression_frames",
    "face_box",
    "label_from_cues",
    "render_face",
    "tokenizer_texts",
]

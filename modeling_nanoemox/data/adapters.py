# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Adapters: the released annotation files of public corpora → manifest [`Sample`]s.

One function per corpus, `read_<corpus>(annotations, **options)`. Each returns an [`AdapterSamples`] (a list of
samples that also lists, by id, the rows it could not use and why — they are logged, never dropped silently).
Media paths are *relative*: `<folder option>/<file>`, resolved later against the media root the user gives
`load_manifest` (which also reports missing files). Every folder option accepts `None` to leave that medium out.

| corpus (`dataset`) | annotations | task | target | reference |
|---|---|---|---|---|
| MIntRec, MIntRec2 | `*_MIntRec_ann.json` (`messages`, `videos`) | mir | the intent, spelled as in the candidate list | the gold intent as released |
| CREMA-D | `AudioWAV/` folder, a file list, or `messages`/`audios` JSON | mer | "The most likely label is anger." | `"anger"` |
| M3ED | `annotation.json` (+ `splitInfo/movie_list_*.txt`) | mer | "The most likely label is sad." | `"sad"` |
| CAER | a split folder `<split>/<Emotion>/<clip>.avi` | mer | "The most likely label is fear." | `"fear"` |
| FERV39k | `4_setups/All_scenes/{train,test}_All.csv` | mer | "The most likely label is happy." | `"happy"` |
| MER-Caption+ | `track2_train_mercaptionplus.csv` (+ track3, `subtitle_chieng.csv`) | ovmer / eri | "The character's emotional state is a, b, c." / the description | label list / `{"rationale"}` |
| MERR-Fine | `MERR_fine_grained.json` | eri (ovmer) | `smp_reason_caption` | `{"rationale", "emotion"}` |
| EMER | `gt-eng.csv` (names, emotions, subtitles, reasons) | eri | the reason | `{"rationale", "emotion", "subtitle"}` |
| AvaMERG | `train.json` / `v_test_v5_0.json` | erg + mer | chain of empathy + reply / "The most likely label is X." | `{"emotion", "response", ...}` / the emotion |

Answer templates are the authors' (DESIGN §4). Decisions of ours, each documented at its function: the seven-class
corpora (M3ED, CAER, FERV39k) use one label set `anger, disgust, fear, happy, neutral, sad, surprise` (FERV39k's
"Angry" → "anger") and always list their candidates (the authors ask M3ED without candidates, "The character's
emotional state is X."); MER-Caption+'s "hybird" label type (the authors draw description or label list at random
on every read) becomes one sample of each kind per clip, so the mixture weight draws both.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers.utils import logging

from nanoemox_processing.prompts_nanoemox import AVAMERG_LABELS, CREMA_D_LABELS, MINTREC2_INTENTS, MINTREC_INTENTS

from .chain_of_empathy import CHAIN_FIELDS, format_chain_of_empathy, normalize_emotion
from .manifest import Sample

logger = logging.get_logger(__name__)

SEVEN_LABELS = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")  # M3ED, CAER, FERV39k
CREMA_D_EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
# `<actor>_<sentence>_<emotion>_<level>` at the end of a file stem; the authors' copies prefix it ("Anger_1001_...").
# The level is two letters except in one file of the release, `1040_ITH_SAD_X.wav`.
_CREMA_D_NAME = re.compile(r"(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})$")
# Spellings the seven-class corpora use for the same emotions (FERV39k "Angry", CAER-S "Angry", M3ED "Anger").
_SEVEN_ALIASES = {
    "angry": "anger",
    "happiness": "happy",
    "joy": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "disgusted": "disgust",
    "fearful": "fear",
}
# A FERV39k setup line: the clip path (scene names may contain spaces), then the label after a space or a comma.
_FERV39K_LINE = re.compile(r"^(?P<clip>\S.*/.*?)[\s,]+(?P<label>[A-Za-z]+)$")
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".flv")


def mer_target(label: str) -> str:
    """The authors' closed-set MER answer: "The most likely label is X."."""
    return f"The most likely label is {label}."


def ovmer_target(labels: Sequence[str]) -> str:
    """The authors' OV-MER answer: "The character's emotional state is a, b, c."."""
    return f"The character's emotional state is {', '.join(labels)}."


def parse_label_list(value) -> list[str]:
    """An open-vocabulary label list from `"[a, b]"`, `"['a', 'b']"`, `"a, b"` or a list: lower case, no repeats."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).strip().strip("[]").split(",")
    labels = []
    for item in items:
        label = " ".join(str(item).strip().strip("'\"").split()).lower()
        if label and label not in labels:
            labels.append(label)
    return labels


class AdapterSamples(list):
    """The samples an adapter produced.

    Attributes:
        dataset: the corpus name written into every sample.
        skipped: row id → why it produced no sample (unparseable row, label outside the set, duplicate id, ...).
        untargeted: ids of samples that carry no target (AvaMERG turns without the chain-of-empathy steps; fill them
            with `recipes/build_cot_empathy.py`).
    """

    def __init__(self, samples=(), *, dataset: str = "", skipped=None, untargeted=None):
        super().__init__(samples)
        self.dataset = dataset
        self.skipped: dict[str, str] = dict(skipped or {})
        self.untargeted: list[str] = list(untargeted or [])


class _Collector:
    def __init__(self, dataset: str, source):
        self.dataset, self.source = dataset, source
        self.samples: list[Sample] = []
        self.skipped: dict[str, str] = {}
        self.untargeted: list[str] = []
        self._seen: set[str] = set()

    def add(self, sample: Sample) -> None:
        if sample.id in self._seen:
            self.skip(sample.id, "duplicate id; the first row with this id is kept")
            return
        self._seen.add(sample.id)
        self.samples.append(sample)
        if sample.target is None:
            self.untargeted.append(sample.id)

    def add_seven_class(self, sample_id: str, label, **fields) -> None:
        """Adds a `mer` sample over the seven-label set of M3ED / CAER / FERV39k, or skips the row when its label is
        not one of them."""
        emotion = _seven_class(label)
        if emotion is None:
            self.skip(sample_id, f"emotion {label!r} is not one of {SEVEN_LABELS}")
            return
        self.add(
            Sample(
                id=sample_id,
                task="mer",
                dataset=self.dataset,
                candidates=list(SEVEN_LABELS),
                target=mer_target(emotion),
                reference=emotion,
                **fields,
            )
        )

    def skip(self, row_id, reason: str) -> None:
        key, n = str(row_id), 2
        while key in self.skipped:
            key, n = f"{row_id} (#{n})", n + 1
        self.skipped[key] = reason

    def finish(self) -> AdapterSamples:
        logger.info(f"{self.dataset}: {len(self.samples)} samples from {self.source}")
        if self.skipped:
            listing = "; ".join(f"{rid}: {why}" for rid, why in list(self.skipped.items())[:10])
            logger.warning(
                f"{self.dataset}: {len(self.skipped)} rows of {self.source} gave no sample (first 10 — {listing})"
            )
        return AdapterSamples(self.samples, dataset=self.dataset, skipped=self.skipped, untargeted=self.untargeted)


def _media(folder, filename: str) -> str | None:
    """`folder/filename` as a relative POSIX path, or None when the medium is not used (`folder=None`)."""
    if folder is None:
        return None
    folder = str(folder).strip().replace(os.sep, "/").rstrip("/")
    return filename if folder in ("", ".") else f"{folder}/{filename}"


def _existing(path) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such annotation file or folder.")
    return path


def _load_json(path: Path):
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}).") from None


def _read_csv(path: Path, required: Iterable[str]) -> list[dict]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = set(required) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(
                f"{path}: expected the columns {sorted(required)}, missing {sorted(missing)}; it has {reader.fieldnames}."
            )
        return list(reader)


def _stem(path_text: str) -> tuple[str, str]:
    """(file name, stem) of a path written with either separator."""
    name = str(path_text).replace("\\", "/").rsplit("/", 1)[-1]
    return name, os.path.splitext(name)[0]


def _messages_rows(data, path: Path, media_key: str):
    """Rows of the `messages` JSON format (ms-swift style, the authors' preprocessed files).

    Yields `(row_label, user_text, assistant_text, media_path)`, or `(row_label, None, None, error)` for a row that
    does not have `messages[0..1].content` and `<media_key>[0]`.
    """
    if not isinstance(data, list):
        raise ValueError(
            f"{path}: expected a JSON list of {{'messages': [...], '{media_key}': [...]}}, got {type(data).__name__}."
        )
    for index, item in enumerate(data):
        try:
            user, assistant = item["messages"][0]["content"], item["messages"][1]["content"]
            media = item[media_key][0]
            if not isinstance(media, str) or not isinstance(assistant, str):
                raise TypeError
        except (KeyError, IndexError, TypeError):
            yield (
                f"row {index}",
                None,
                None,
                f"expected messages[0..1].content and {media_key}[0], got {str(item)[:120]}",
            )
            continue
        yield f"row {index}", user if isinstance(user, str) else "", assistant, media


def _seven_class(label) -> str | None:
    word = " ".join(str(label).split()).lower()
    word = _SEVEN_ALIASES.get(word, word)
    return word if word in SEVEN_LABELS else None


# ---- MIntRec / MIntRec2.0 ----------------------------------------------------------------------------------------


def read_mintrec(
    annotations,
    *,
    version: int = 1,
    video_dir: str | None = "video",
    audio_dir: str | None = None,
    audio_ext: str = ".wav",
    dataset: str | None = None,
) -> AdapterSamples:
    """MIntRec (20 intents, `version=1`) or MIntRec2.0 (30 intents, `version=2`) → `mir` samples.

    `annotations` is the authors' JSON (`test_MIntRec_ann.json`, `train_MIntRec2_ann.json`, ...): a list of
    `{"messages": [{"content": utterance}, {"content": intent}], "videos": [path]}`. Only the video's file name is
    used (`<video_dir>/<name>`); the id is its stem, e.g. `S06_E04_70`. `text` = the utterance, `candidates` = the
    20 / 30 intents, `target` = the intent spelled as in the candidates (lower case), `reference` = the gold intent
    as released. Rows whose intent is not in the set are skipped and reported.
    """
    if version not in (1, 2):
        raise ValueError(f"version must be 1 (MIntRec) or 2 (MIntRec2.0), got {version!r}")
    intents = MINTREC_INTENTS if version == 1 else MINTREC2_INTENTS
    dataset = dataset or ("MIntRec" if version == 1 else "MIntRec2")
    path = _existing(annotations)
    lookup = {intent.lower(): intent for intent in intents}
    out = _Collector(dataset, path)
    for row, user, label, media in _messages_rows(_load_json(path), path, "videos"):
        if user is None:
            out.skip(row, media)
            continue
        name, stem = _stem(media)
        intent = lookup.get(" ".join(label.split()).lower())
        if intent is None:
            out.skip(stem, f"intent {label!r} is not one of the {len(intents)} {dataset} intents")
            continue
        out.add(
            Sample(
                id=stem,
                task="mir",
                dataset=dataset,
                video=_media(video_dir, name),
                audio=_media(audio_dir, stem + audio_ext),
                text=user.strip() or None,
                candidates=list(intents),
                target=intent,
                reference=label.strip(),
            )
        )
    return out.finish()


# ---- CREMA-D ----------------------------------------------------------------------------------------------------


def read_crema_d(
    annotations,
    *,
    audio_dir: str | None = "AudioWAV",
    video_dir: str | None = None,
    video_ext: str = ".flv",
    with_sentence: bool = True,
    dataset: str = "CREMA-D",
) -> AdapterSamples:
    """CREMA-D → `mer` samples with the six CREMA-D labels.

    The label is in the file name `<actor>_<sentence>_<emotion>_<level>.wav` (e.g. `1001_DFA_ANG_XX.wav`: actor
    1001, "Don't forget a jacket.", anger, unspecified level); it is the *acted* emotion, as the authors use it
    (CREMA-D's crowd-perceived labels in `processedResults/` are not read). `annotations` is one of:

    - the `AudioWAV/` folder (its `*.wav` files are listed);
    - a text/CSV file with one file name per line (first column; a header line without such a name is ignored);
    - the authors' `crema_d_annotations.json` (`messages` / `audios`; their copies are prefixed, `Anger_1001_...`).

    id = the file stem; `audio` = `<audio_dir>/<file>`; `video` (off by default) = `<video_dir>/<stem><video_ext>`
    (CREMA-D's `VideoFlash/*.flv`); `text` = the spoken sentence (the same 12 emotionally neutral sentences occur
    with every emotion, so it gives nothing away); target "The most likely label is anger.".
    """
    path = _existing(annotations)
    out = _Collector(dataset, path)
    entries: list[tuple[str, str]] = []  # (row label, file name or path)
    header_allowed = False
    if path.is_dir():
        entries = [(file.name, file.name) for file in sorted(path.glob("*.wav"))]
        if not entries:
            raise ValueError(f"{path}: no .wav files; expected CREMA-D's AudioWAV folder.")
    elif path.suffix.lower() == ".json":
        for row, user, _, media in _messages_rows(_load_json(path), path, "audios"):
            if user is None:
                out.skip(row, media)
            else:
                entries.append((row, media))
    else:
        header_allowed = True
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, 1):
                first = line.strip().split(",")[0].strip().strip('"')
                if first:
                    entries.append((f"line {number}", first))
    for position, (_row, entry) in enumerate(entries):
        name, stem = _stem(entry)
        if not os.path.splitext(name)[1]:
            name = name + ".wav"
        match = _CREMA_D_NAME.search(stem)
        if match is None:
            if header_allowed and position == 0:
                continue  # the header line of a CSV list
            out.skip(stem, "file name is not <actor>_<sentence>_<emotion>_<level>")
            continue
        label = CREMA_D_EMOTIONS.get(match["emotion"])
        if label is None:
            out.skip(stem, f"unknown emotion code {match['emotion']!r}; expected one of {sorted(CREMA_D_EMOTIONS)}")
            continue
        sentence = CREMA_D_SENTENCES.get(match["sentence"])
        out.add(
            Sample(
                id=stem,
                task="mer",
                dataset=dataset,
                audio=_media(audio_dir, name),
                video=_media(video_dir, stem + video_ext),
                text=sentence if with_sentence else None,
                candidates=list(CREMA_D_LABELS),
                target=mer_target(label),
                reference=label,
            )
        )
    return out.finish()


# ---- M3ED -------------------------------------------------------------------------------------------------------


def _movie_list(movies) -> set[str] | None:
    if movies is None:
        return None
    if isinstance(movies, (str, os.PathLike)):
        path = _existing(movies)
        return {line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()}
    return {str(movie) for movie in movies}


def read_m3ed(
    annotations,
    *,
    movies=None,
    audio_dir: str | None = "modality_speech",
    video_dir: str | None = None,
    video_ext: str = ".mp4",
    dataset: str = "M3ED",
) -> AdapterSamples:
    """M3ED → `mer` samples with the seven labels `anger, disgust, fear, happy, neutral, sad, surprise`.

    `annotations` is the official `annotation.json`: `{movie: {dialogue: {"SpeakerInfo": ..., "Dialog": {utterance_id:
    {"Speaker": "A", "Text": ..., "EmoAnnotation": {"final_main_emo": "Sad", ...}}}}}}` (or the authors'
    `messages` / `audios` JSON). `movies`: a `splitInfo/movie_list_<split>.txt` path or a list of movie names, to
    keep one split. id = `<Speaker>_<utterance_id>`, the stem of the speech file `<audio_dir>/<id>.wav`; `text` =
    the (Chinese) transcript; target "The most likely label is sad." with the seven labels as candidates — the
    authors ask M3ED without candidates ("The character's emotional state is sad."); we keep one MER format.
    """
    path = _existing(annotations)
    data = _load_json(path)
    out = _Collector(dataset, path)
    if isinstance(data, list):
        for row, user, label, media in _messages_rows(data, path, "audios"):
            if user is None:
                out.skip(row, media)
                continue
            name, stem = _stem(media)
            out.add_seven_class(
                stem,
                label,
                audio=_media(audio_dir, name),
                video=_media(video_dir, stem + video_ext),
                text=user.strip() or None,
            )
        return out.finish()
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected M3ED's annotation.json (an object keyed by movie), got {type(data).__name__}."
        )
    keep = _movie_list(movies)
    if keep is not None and not keep & set(data):
        raise ValueError(f"none of the {len(keep)} requested movies occurs in {path}; check the movie list.")
    for movie, dialogues in data.items():
        if keep is not None and movie not in keep:
            continue
        if not isinstance(dialogues, dict):
            out.skip(movie, "movie entry is not an object of dialogues")
            continue
        for dialogue_id, dialogue in dialogues.items():
            utterances = dialogue.get("Dialog") if isinstance(dialogue, dict) else None
            if not isinstance(utterances, dict):
                out.skip(f"{movie}/{dialogue_id}", "dialogue has no 'Dialog' object")
                continue
            for utterance_id, utterance in utterances.items():
                try:
                    speaker = utterance["Speaker"]
                    label = utterance["EmoAnnotation"]["final_main_emo"]
                except (KeyError, TypeError):
                    out.skip(utterance_id, "utterance lacks 'Speaker' or 'EmoAnnotation.final_main_emo'")
                    continue
                sample_id = f"{speaker}_{utterance_id}"
                text = utterance.get("Text")
                out.add_seven_class(
                    sample_id,
                    label,
                    audio=_media(audio_dir, sample_id + ".wav"),
                    video=_media(video_dir, sample_id + video_ext),
                    text=text.strip() if isinstance(text, str) and text.strip() else None,
                )
    return out.finish()


# ---- CAER and FERV39k -------------------------------------------------------------------------------------------


def _video_messages(path: Path, out: _Collector, video_dir, dataset: str) -> AdapterSamples:
    """The authors' `caer_ferv39k_ann.json` (`messages` / `videos`): label in the reply, clip in `videos[0]`."""
    for row, _, label, media in _messages_rows(_load_json(path), path, "videos"):
        if label is None:
            out.skip(row, media)
            continue
        name, stem = _stem(media)
        out.add_seven_class(stem, label, video=_media(video_dir, name))
    return out.finish()


def read_caer(
    annotations,
    *,
    video_dir: str | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    dataset: str = "CAER",
) -> AdapterSamples:
    """CAER → `mer` samples with the seven labels (CAER's folders Anger/Angry, Disgust, ..., Surprise).

    `annotations` is one split folder of the release, `<split>/<Emotion>/<clip>.avi` (e.g. `CAER/train`), or the
    authors' `messages` / `videos` JSON. The label is the emotion folder; id = `<split>_<Emotion>_<clip stem>`
    (clip numbers repeat across folders); `video` = `<video_dir>/<Emotion>/<file>` with `video_dir` defaulting to the
    split folder's name, i.e. paths relative to the CAER root — pass `--media_root CAER`. Sub-folders that are not
    an emotion are reported; files without a video extension are ignored.
    """
    path = _existing(annotations)
    out = _Collector(dataset, path)
    if path.is_file():
        return _video_messages(path, out, "video" if video_dir is None else video_dir, dataset)
    split = path.name
    folder_prefix = split if video_dir is None else video_dir
    extensions = {ext.lower() for ext in extensions}
    folders = sorted(child for child in path.iterdir() if child.is_dir())
    if not folders:
        raise ValueError(f"{path}: no emotion sub-folders; expected a CAER split folder like CAER/train.")
    for folder in folders:
        emotion = _seven_class(folder.name)
        if emotion is None:
            out.skip(folder.name, f"folder is not one of the emotions {SEVEN_LABELS}")
            continue
        for clip in sorted(folder.iterdir()):
            if clip.suffix.lower() not in extensions:
                continue
            out.add(
                Sample(
                    id=f"{split}_{folder.name}_{clip.stem}",
                    task="mer",
                    dataset=dataset,
                    video=_media(folder_prefix, f"{folder.name}/{clip.name}"),
                    candidates=list(SEVEN_LABELS),
                    target=mer_target(emotion),
                    reference=emotion,
                )
            )
    return out.finish()


def read_ferv39k(
    annotations,
    *,
    clips_dir: str | None = "2_ClipsforFaceCrop",
    video_ext: str = "",
    media_field: str = "video",
    dataset: str = "FERV39k",
) -> AdapterSamples:
    """FERV39k → `mer` samples with the seven labels (FERV39k's "Angry" → "anger").

    `annotations` is a setup file of the release, e.g. `4_setups/All_scenes/train_All.csv`: one clip a line,
    `<Scene>/<Emotion>/<clip> <Emotion>` separated by a space (or the authors' `messages` / `videos` JSON). id = the
    clip path with `/` → `_`; the clip is `<clips_dir>/<clip path><video_ext>`. FERV39k ships clips as folders of
    frames, so by default the manifest names that folder (`video_ext=""`); a loader must then read image folders —
    or convert the clips to videos and pass `video_ext=".mp4"`. `media_field="faces"` puts the folder into `faces`
    (pre-cropped faces) instead of `video`.
    """
    if media_field not in ("video", "faces"):
        raise ValueError(f"media_field must be 'video' or 'faces', got {media_field!r}")
    path = _existing(annotations)
    out = _Collector(dataset, path)
    if path.suffix.lower() == ".json":
        return _video_messages(path, out, "video" if clips_dir is None else clips_dir, dataset)
    with path.open(encoding="utf-8-sig") as handle:
        lines = handle.read().splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _FERV39K_LINE.match(line.strip())
        if match is None:
            out.skip(f"line {number}", f"expected '<Scene>/<Emotion>/<clip> <Emotion>', got {line[:80]!r}")
            continue
        clip, label = match["clip"].strip("/"), match["label"]
        sample_id = clip.replace("/", "_")
        media = _media(clips_dir, clip + video_ext)
        out.add_seven_class(
            sample_id,
            label,
            video=media if media_field == "video" else None,
            faces=media if media_field == "faces" else None,
        )
    return out.finish()


# ---- MER-Caption+, MERR-Fine, EMER ------------------------------------------------------------------------------

_LABEL_TYPES = {"ovlabel": "ovmer", "description": "eri"}


def _check_label_types(label_types) -> tuple[str, ...]:
    label_types = (label_types,) if isinstance(label_types, str) else tuple(label_types)
    unknown = set(label_types) - set(_LABEL_TYPES)
    if not label_types or unknown:
        raise ValueError(f"label_types must be a non-empty subset of {tuple(_LABEL_TYPES)}, got {label_types!r}")
    return label_types


def _sample_id(name: str, task: str, several: bool) -> str:
    # One sample per clip keeps the clip name as id (benchmark ids); several get the task as suffix.
    return f"{name}-{task}" if several else name


def read_mer_caption_plus(
    annotations,
    *,
    label_types: Sequence[str] = ("ovlabel", "description"),
    ovlabels=None,
    descriptions=None,
    subtitles=None,
    subtitle_language: str = "english",
    video_dir: str | None = "video",
    audio_dir: str | None = None,
    video_ext: str = ".mp4",
    dataset: str = "MER-Caption+",
) -> AdapterSamples:
    """MER-Caption+ (MER2025 release) → `ovmer` and/or `eri` samples.

    `annotations` is the `mer2025-dataset` folder holding `track2_train_mercaptionplus.csv` (`name, openset`: the
    open-vocabulary labels), `track3_train_mercaptionplus.csv` (`name, reason`: the description) and
    `subtitle_chieng.csv` (`name, chinese, english`), or one of the two track CSVs; `ovlabels`, `descriptions`,
    `subtitles` name the files explicitly. `label_types`: `"ovlabel"` → task `ovmer`, target "The character's
    emotional state is a, b, c.", reference the label list (an empty list becomes ["neutral"], as the authors do);
    `"description"` → task `eri`, target the description, reference `{"rationale": description}`. Both (the
    default) reproduce the authors' "hybird" label type as two samples per clip, ids `<name>-ovmer` / `<name>-eri`;
    a single type keeps the clip name as id. `text` = the subtitle in `subtitle_language`.
    """
    label_types = _check_label_types(label_types)
    path = _existing(annotations)
    if path.is_dir():
        ovlabels = ovlabels or path / "track2_train_mercaptionplus.csv"
        descriptions = descriptions or path / "track3_train_mercaptionplus.csv"
        if subtitles is None and (path / "subtitle_chieng.csv").is_file():
            subtitles = path / "subtitle_chieng.csv"
    else:
        with path.open(encoding="utf-8-sig") as handle:
            header = handle.readline()
        if "openset" in header:
            ovlabels = ovlabels or path
        elif "reason" in header:
            descriptions = descriptions or path
        else:
            raise ValueError(
                f"{path}: expected a MER-Caption+ CSV with a 'openset' or 'reason' column, got {header.strip()!r}."
            )
    name_to_labels = name_to_reason = None
    if "ovlabel" in label_types:
        if ovlabels is None:
            raise ValueError("label_types includes 'ovlabel' but no track2 (openset) CSV was given")
        name_to_labels = {row["name"]: row["openset"] for row in _read_csv(_existing(ovlabels), ("name", "openset"))}
    if "description" in label_types:
        if descriptions is None:
            raise ValueError("label_types includes 'description' but no track3 (reason) CSV was given")
        name_to_reason = {row["name"]: row["reason"] for row in _read_csv(_existing(descriptions), ("name", "reason"))}
    name_to_subtitle = {}
    if subtitles is not None:
        rows = _read_csv(_existing(subtitles), ("name", subtitle_language))
        name_to_subtitle = {row["name"]: (row[subtitle_language] or "").strip() for row in rows}
    names = list(dict.fromkeys([*(name_to_labels or {}), *(name_to_reason or {})]))
    out = _Collector(dataset, path)
    several = len(label_types) > 1
    empty_lists = 0
    for name in names:
        common = {
            "dataset": dataset,
            "video": _media(video_dir, name + video_ext),
            "audio": _media(audio_dir, name + ".wav"),
            "text": name_to_subtitle.get(name) or None,
        }
        if "ovlabel" in label_types:
            sample_id = _sample_id(name, "ovmer", several)
            if name not in name_to_labels:
                out.skip(sample_id, "no open-vocabulary labels in the track2 CSV")
            else:
                labels = parse_label_list(name_to_labels[name])
                if not labels:
                    empty_lists += 1
                    labels = ["neutral"]
                out.add(Sample(id=sample_id, task="ovmer", target=ovmer_target(labels), reference=labels, **common))
        if "description" in label_types:
            sample_id = _sample_id(name, "eri", several)
            reason = (name_to_reason.get(name) or "").strip()
            if not reason:
                out.skip(sample_id, "no description in the track3 CSV")
            else:
                out.add(Sample(id=sample_id, task="eri", target=reason, reference={"rationale": reason}, **common))
    if empty_lists:
        logger.info(f"{dataset}: {empty_lists} clips with an empty label list got ['neutral'] (the authors' rule)")
    return out.finish()


def read_merr_fine(
    annotations,
    *,
    label_types: Sequence[str] = ("description",),
    video_dir: str | None = "video",
    audio_dir: str | None = None,
    video_ext: str = ".mp4",
    dataset: str = "MERR-Fine",
) -> AdapterSamples:
    """MERR-Fine (`MERR_fine_grained.json`) → `eri` samples (and `ovmer` with `label_types` including "ovlabel").

    The file maps a clip name to `{"AU_list", "visual_prior_list", "audio_prior_list", "pseu_emotion", "text",
    "smp_reason_caption", ...}`. `"description"` (the authors' phase-3 setting) → task `eri`, target
    `smp_reason_caption`, reference `{"rationale": caption, "emotion": pseu_emotion}`; `"ovlabel"` → task `ovmer`,
    target "The character's emotional state is <pseu_emotion>.". `text` = `text` (the subtitle). Media:
    `<video_dir>/<name><video_ext>`; MERR is built on MER2023, whose clips are partly `.avi` — set `video_ext`.
    """
    label_types = _check_label_types(label_types)
    path = _existing(annotations)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise ValueError(
            f"{path}: expected an object keyed by clip name (MERR_fine_grained.json), got {type(data).__name__}."
        )
    out = _Collector(dataset, path)
    several = len(label_types) > 1
    for name, record in data.items():
        if not isinstance(record, dict):
            out.skip(name, "entry is not an object")
            continue
        text = record.get("text")
        common = {
            "dataset": dataset,
            "video": _media(video_dir, name + video_ext),
            "audio": _media(audio_dir, name + ".wav"),
            "text": text.strip() if isinstance(text, str) and text.strip() else None,
        }
        emotion = (record.get("pseu_emotion") or "").strip().lower()
        if "description" in label_types:
            sample_id = _sample_id(name, "eri", several)
            caption = record.get("smp_reason_caption")
            if not isinstance(caption, str) or not caption.strip():
                out.skip(sample_id, "no smp_reason_caption")
            else:
                reference = {"rationale": caption.strip(), "emotion": emotion}
                out.add(Sample(id=sample_id, task="eri", target=caption.strip(), reference=reference, **common))
        if "ovlabel" in label_types:
            sample_id = _sample_id(name, "ovmer", several)
            labels = parse_label_list(emotion)
            if not labels:
                out.skip(sample_id, "no pseu_emotion")
            else:
                out.add(Sample(id=sample_id, task="ovmer", target=ovmer_target(labels), reference=labels, **common))
    return out.finish()


def read_emer(
    annotations,
    *,
    video_dir: str | None = "video",
    audio_dir: str | None = None,
    video_ext: str = ".mp4",
    dataset: str = "EMER",
) -> AdapterSamples:
    """EMER (`gt-eng.csv`: names, emotions, subtitles, reasons) → `eri` samples.

    id = `names`; `text` = `subtitles`; `target` = `reasons` (the gold rationale); `reference` =
    `{"rationale": reasons, "emotion": emotions, "subtitle": subtitles}` — the same object
    `modeling_nanoemox.evaluation.read_emer_references` builds, so the ERI judge scores against the rationale.
    """
    path = _existing(annotations)
    out = _Collector(dataset, path)
    for number, row in enumerate(_read_csv(path, ("names", "emotions", "subtitles", "reasons")), 2):
        name = (row["names"] or "").strip()
        reason = (row["reasons"] or "").strip()
        if not name:
            out.skip(f"line {number}", "no name")
            continue
        if not reason:
            out.skip(name, "no reason (gold rationale)")
            continue
        subtitle = (row["subtitles"] or "").strip()
        out.add(
            Sample(
                id=name,
                task="eri",
                dataset=dataset,
                video=_media(video_dir, name + video_ext),
                audio=_media(audio_dir, name + ".wav"),
                text=subtitle or None,
                target=reason,
                reference={"rationale": reason, "emotion": (row["emotions"] or "").strip(), "subtitle": subtitle},
            )
        )
    return out.finish()


# ---- AvaMERG ----------------------------------------------------------------------------------------------------

_USER_ROLES = {"speaker", "user", "human", "seeker"}
_ASSISTANT_ROLES = {"listener", "assistant", "bot", "supporter", "system"}


def _history_messages(entries: list) -> tuple[list[dict], int]:
    """AvaMERG `dialogue_history` entries before the current input → chat messages; also how many roles were guessed.

    Speaker → `user`, listener → `assistant`. An entry with an unknown role gets the role its position implies: the
    history alternates and the entry right before the current (speaker) input is the listener's.
    """
    messages, guessed = [], 0
    for index, entry in enumerate(entries):
        role = str(entry.get("role", "")).strip().lower()
        if role in _USER_ROLES:
            chat_role = "user"
        elif role in _ASSISTANT_ROLES:
            chat_role = "assistant"
        else:
            guessed += 1
            chat_role = "assistant" if (len(entries) - index) % 2 == 1 else "user"
        messages.append({"role": chat_role, "content": " ".join(str(entry.get("utterance", "")).split())})
    return messages, guessed


def read_avamerg(
    annotations,
    *,
    video_dir: str | None = "video",
    audio_dir: str | None = "audio",
    last_turn_only: bool = False,
    emotion_task: bool = True,
    labels: Sequence[str] = AVAMERG_LABELS,
    dataset: str = "AvaMERG",
) -> AdapterSamples:
    """AvaMERG (`train.json`, `v_test_v5_0.json`) → per dialogue turn an `erg` sample and a `mer` sample.

    The file is a list of conversations `{"conversation_id", "speaker_profile": {"ID", ...}, "listener_profile",
    "topic", "turns": [{"turn_id", "context", "dialogue_history": [{"role", "utterance"}, ...], "response",
    "chain_of_empathy": {"event_scenario", "speaker_emotion", "emotion_cause", "goal_to_response"}}]}` (field names
    from the authors' `avamerg_dataset.py`). For each turn, as the authors read it: the last `dialogue_history` entry
    is the speaker's current input (`text`); the entries before it are the `history` (speaker → `user`, listener →
    `assistant`), so the history grows turn by turn. The clip of the turn is
    `dia<conversation_id>utt<2·turn_id>_<speaker ID>` (`.mp4` in `video_dir`, `.wav` in `audio_dir`) — the authors'
    naming; it is also the sample name, with the suffix `-erg` / `-mer`.

    - `erg`: target = the chain of empathy + reply ([`format_chain_of_empathy`]); reference = `{"emotion",
      "response", "event_scenario", "emotion_cause", "goal_to_response", "context"}` (what is annotated). Turns
      without all four steps get no target (listed in `untargeted`; `recipes/build_cot_empathy.py` fills them).
    - `mer` (`emotion_task=True`): the speaker's emotion only; candidates = the 25 AvaMERG labels; target "The most
      likely label is X."; reference = X. Turns whose emotion is missing or outside `labels` get no `mer` sample
      (reported in `skipped`), since a candidate list without the answer would teach the wrong thing.

    `last_turn_only=True` keeps the last turn of each conversation, the authors' test protocol.
    """
    path = _existing(annotations)
    data = _load_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of AvaMERG conversations, got {type(data).__name__}.")
    label_set = {label.lower() for label in labels}
    out = _Collector(dataset, path)
    guessed_roles = 0
    for index, conversation in enumerate(data):
        try:
            conversation_id = str(conversation["conversation_id"])
            speaker_id = str(conversation["speaker_profile"]["ID"])
            turns = conversation["turns"]
            if not isinstance(turns, list):
                raise TypeError
        except (KeyError, TypeError):
            out.skip(f"conversation {index}", "lacks conversation_id, speaker_profile.ID or a list of turns")
            continue
        for turn in turns[-1:] if last_turn_only else turns:
            try:
                name = f"dia{conversation_id}utt{2 * int(turn['turn_id'])}_{speaker_id}"
            except (KeyError, TypeError, ValueError):
                out.skip(f"dia{conversation_id} turn {str(turn)[:40]}", "turn has no integer turn_id")
                continue
            entries = turn.get("dialogue_history")
            if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
                out.skip(name, "dialogue_history is missing or empty (it must end with the speaker's input)")
                continue
            if str(entries[-1].get("role", "")).strip().lower() in _ASSISTANT_ROLES:
                out.skip(name, "the last dialogue_history entry is the listener's, not the speaker's input")
                continue
            current = " ".join(str(entries[-1].get("utterance", "")).split())
            history, guessed = _history_messages(entries[:-1])
            guessed_roles += guessed
            chain = turn.get("chain_of_empathy") if isinstance(turn.get("chain_of_empathy"), dict) else {}
            fields = {key: " ".join(str(chain[key]).split()) for key in CHAIN_FIELDS if chain.get(key)}
            emotion = normalize_emotion(fields.get("speaker_emotion")) or None
            response = turn.get("response") if isinstance(turn.get("response"), str) else None
            response = response.strip() if response and response.strip() else None
            context = turn.get("context") if isinstance(turn.get("context"), str) else None
            reference = {
                "emotion": emotion,
                "response": response,
                "event_scenario": fields.get("event_scenario"),
                "emotion_cause": fields.get("emotion_cause"),
                "goal_to_response": fields.get("goal_to_response"),
                "context": context.strip() if context and context.strip() else None,
            }
            target = None
            if response and all(fields.get(key) for key in CHAIN_FIELDS):
                try:
                    target = format_chain_of_empathy(fields, response)
                except ValueError as error:
                    logger.warning(f"{name}: annotated chain of empathy unusable ({error}); left without a target")
            video = _media(video_dir, name + ".mp4")
            audio = _media(audio_dir, name + ".wav")
            out.add(
                Sample(
                    id=f"{name}-erg",
                    task="erg",
                    dataset=dataset,
                    video=video,
                    audio=audio,
                    text=current,
                    history=history or None,
                    target=target,
                    reference={key: value for key, value in reference.items() if value is not None},
                )
            )
            if not emotion_task:
                continue
            if emotion is None:
                out.skip(f"{name}-mer", "no annotated speaker emotion")
            elif emotion not in label_set:
                out.skip(f"{name}-mer", f"speaker emotion {emotion!r} is not one of the {len(label_set)} labels")
            else:
                out.add(
                    Sample(
                        id=f"{name}-mer",
                        task="mer",
                        dataset=dataset,
                        video=video,
                        audio=audio,
                        text=current,
                        candidates=list(labels),
                        target=mer_target(emotion),
                        reference=emotion,
                    )
                )
    if guessed_roles:
        logger.warning(
            f"{dataset}: {guessed_roles} dialogue_history entries had an unknown role; inferred from position"
        )
    result = out.finish()
    if result.untargeted:
        logger.warning(
            f"{dataset}: {len(result.untargeted)} erg samples lack the four chain-of-empathy steps or the reply and "
            f"have no target (first 10: {result.untargeted[:10]}); fill them with recipes/build_cot_empathy.py"
        )
    return result


ADAPTERS = {
    "mintrec": (read_mintrec, {"version": 1}),
    "mintrec2": (read_mintrec, {"version": 2}),
    "crema_d": (read_crema_d, {}),
    "m3ed": (read_m3ed, {}),
    "caer": (read_caer, {}),
    "ferv39k": (read_ferv39k, {}),
    "mer_caption_plus": (read_mer_caption_plus, {}),
    "merr_fine": (read_merr_fine, {}),
    "emer": (read_emer, {}),
    "avamerg": (read_avamerg, {}),
}
"""Corpus name (as `recipes/prepare_data.py` takes it) → (adapter, fixed keyword arguments)."""


def read_corpus(corpus: str, annotations, **options) -> AdapterSamples:
    """Runs the adapter of `corpus` (a key of [`ADAPTERS`]) on `annotations` with `options`."""
    if corpus not in ADAPTERS:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {sorted(ADAPTERS)}")
    function, fixed = ADAPTERS[corpus]
    return function(annotations, **fixed, **options)

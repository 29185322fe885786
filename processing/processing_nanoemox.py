# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Processor for Nano-EmoX: chat-templated prompts and raw video / audio in; token ids, frames, face crops and audio
clips out. The interface is the one of transformers' omni models (Qwen2.5-Omni, LLaVA-OneVision):

```python
conversation = [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                             {"type": "text", "text": "How does she feel?"}]}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt", load_audio_from_video=True)
# the same tensors, in two steps:
prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
inputs = processor(text=prompt, videos="clip.mp4", return_tensors="pt", load_audio_from_video=True)
```

1. The chat template (`chat_template.jinja`, ChatML) renders each media part as one placeholder line
   (`Video: <|emox_video|>`, `Audio: <|emox_audio|>`); a conversation without a system message gets the default one.
2. `__call__` decodes each video (frames sampled uniformly, CLIP preprocessing), finds and crops the main face in every
   frame (ImageNet normalisation), takes the audio (a separate part, or the video's own track with
   `load_audio_from_video=True`), and expands the placeholders through `ProcessorMixin`'s per-modality hooks
   (`replace_video_token`, `replace_audio_token`): one video becomes its video, face, (track audio) and — when the
   sample has audio — fusion tokens; one audio becomes its audio tokens. Counts are checked before and after
   tokenisation.
3. Media tensors hold only the items present, in batch order: `pixel_values_videos` `(N_video, T, 3, S, S)`,
   `face_pixel_values` `(N_face, T, 3, S_f, S_f)`, `audio_values` `(N_audio, C, samples)`.

The six tasks are helpers over the same path: `build_task_messages` writes the standard messages of a task (its fixed
instruction, the subtitle, candidate labels, the ERG dialogue trimmed to the token budget) and `prepare_task` runs them
through `apply_chat_template` in one call.

Media decoding (PyAV) and face detection (OpenCV) are imported when first used: importing this module costs neither.
"""

import os
import random
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .face_detection_nanoemox import DEFAULT_FACE_DETECTOR, FACE_SOURCES, FaceDetector, build_face_detector
from .prompts_authors_nanoemox import (
    AUTHORS_TARGET_END,
    AUTHORS_TASK_SPECS,
    authors_task_name,
    format_authors_target,
    render_authors_prompt,
)
from .prompts_nanoemox import SYSTEM_PROMPT, TASK_NAMES, TASKS

logger = logging.get_logger(__name__)

MODALITY_ORDER = ("video", "face", "audio", "fusion")
# `prompt_style`: "chat" (the Qwen chat template with our fixed task prompts) or "authors" (the text the authors'
# LAVIS checkpoints were trained on: `prompts_authors_nanoemox`).
PROMPT_STYLES = ("chat", "authors")
# `frame_resize`: "center_crop" keeps the aspect ratio and crops the centre (CLIP's own preprocessing); "squash"
# resizes the whole frame to the square input, as the authors' decord loader does.
FRAME_RESIZES = ("center_crop", "squash")
# `audio_normalization`: "per_clip" (zero mean, unit variance per 2 s clip) or "joint" (over all clips of the call at
# once, as the authors' encoder normalises a whole batch as one array).
AUDIO_NORMALIZATIONS = ("per_clip", "joint")
# Each style's default `frame_resize` / `audio_normalization` (used while those settings are None).
STYLE_DEFAULTS = {
    "chat": {"frame_resize": "center_crop", "audio_normalization": "per_clip"},
    "authors": {"frame_resize": "squash", "audio_normalization": "joint"},
}
# Audio files longer than this are read clip by clip (seeking) instead of whole.
AUDIO_SEEK_THRESHOLD_SECONDS = 120.0
# ERG dialogues keep at most this many of their newest turns (the budget usually keeps fewer).
MAX_HISTORY_TURNS = 32
IGNORE_INDEX = -100
_DETECTORS = threading.local()

# Keyword arguments of `__call__` besides the four inputs (pipelines and `apply_chat_template` pass some of them).
_CALL_OPTIONS = {
    "load_audio_from_video": False,
    "use_faces": True,
    "faces": None,
    "sampling_rate": None,
    "padding": "longest",
    "padding_side": "left",
    "return_tensors": "pt",
    "max_length": None,
    "truncation": None,
    "return_face_info": False,
    "modalities": None,
    "add_special_tokens": False,
    "return_offsets_mapping": False,
    "return_text_replacement_offsets": False,
    "sanitize_control_tokens": False,
    "frame_resize": None,
    # Passed by `ProcessorMixin.apply_chat_template` / pipelines; nothing to do with them here.
    "audio_from_video_indices": None,
    "return_mm_token_type_ids": False,
    "do_sample_frames": None,
}
# `__call__` options that `apply_chat_template` forwards to it rather than to the Jinja template.
_FORWARDED_OPTIONS = ("use_faces", "faces", "sampling_rate", "padding", "padding_side", "max_length", "truncation",
                      "return_face_info", "frame_resize")  # fmt: skip


def build_chat_template(
    system_prompt: str = SYSTEM_PROMPT, video_token: str = "<|emox_video|>", audio_token: str = "<|emox_audio|>"
) -> str:
    """
    The Nano-EmoX chat template (ChatML, as Qwen2.5's): a video (or image) part renders as `Video: <video_token>`, an
    audio part as `Audio: <audio_token>`, each on its own line before the text; without a system message of the
    user's the default one comes first. Assistant turns are wrapped in `{% generation %}` so
    `return_assistant_tokens_mask=True` marks the answer tokens (and their `<|im_end|>`).
    """
    quote = lambda text: text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")  # noqa: E731
    return (
        "{%- macro render(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- else -%}{%- for part in content -%}"
        "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
        f"{{%- elif part['type'] in ('video', 'image') -%}}{{{{- 'Video: {quote(video_token)}\\n' -}}}}"
        f"{{%- elif part['type'] == 'audio' -%}}{{{{- 'Audio: {quote(audio_token)}\\n' -}}}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- endmacro -%}"
        "{%- if not messages or messages[0]['role'] != 'system' -%}"
        f"{{{{- '<|im_start|>system\\n{quote(system_prompt)}<|im_end|>\\n' -}}}}"
        "{%- endif -%}"
        "{%- for message in messages -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
        "{%- if message['role'] == 'assistant' -%}"
        "{%- generation -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endgeneration -%}"
        "{%- else -%}{{- render(message['content']) + '<|im_end|>' -}}{%- endif -%}"
        "{{- '\\n' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


@dataclass
class _VideoItem:
    """One decoded video: what the model gets and what the caller may want to show."""

    pixel_values: np.ndarray | None = None  # (T, 3, S, S); None when the file has no decodable frames
    faces: np.ndarray | None = None  # (T, 3, S_f, S_f)
    face_boxes: np.ndarray | None = None  # (T, 4) face (x, y, w, h), original pixels
    crop_boxes: np.ndarray | None = None  # (T, 4) region cropped, original pixels
    face_source: np.ndarray | None = None  # (T,) codes into FACE_SOURCES
    audio: np.ndarray | None = None  # (C, samples): the file's own track, with load_audio_from_video=True
    notes: list[str] = field(default_factory=list)


class _InBackground:
    """`function(*args)` run on a second thread from construction; `result()` waits for it and returns its value or
    raises its error in the caller's thread, `wait()` only waits (no thread outlives the call that started it)."""

    def __init__(self, function, *args):
        self._outcome: dict = {}
        self._thread = threading.Thread(target=self._run, args=(function, args), name="nanoemox-media", daemon=True)
        self._thread.start()

    def _run(self, function, args) -> None:
        try:
            self._outcome["value"] = function(*args)
        except BaseException as error:  # raised again by result(), in the caller's thread
            self._outcome["error"] = error

    def wait(self) -> None:
        self._thread.join()

    def result(self):
        self._thread.join()
        if "error" in self._outcome:
            raise self._outcome.pop("error")
        return self._outcome["value"]


def _resize_each(frames: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """
    `cv2.resize` of each frame of `(T, H, W, 3)` to `size` (width, height) → `(T, height, width, 3)`, the first half
    of the frames on a second thread: OpenCV's area resampling at a non-integer factor (CLIP's shrink of HD frames,
    about 6 ms a 720p frame) runs on one core. Each frame's result is the one a single call gives.
    """
    import cv2

    def resize(part):
        return [cv2.resize(frame, size, interpolation=interpolation) for frame in part]

    half = len(frames) // 2
    first = _InBackground(resize, frames[:half])
    try:
        second = resize(frames[half:])
    finally:
        first.wait()
    return np.stack(first.result() + second)


class NanoEmoXProcessor(ProcessorMixin):
    r"""
    Builds Nano-EmoX inputs from chat-templated prompts and raw media.

    Args:
        image_processor ([`CLIPImageProcessorPil`]): frame preprocessing (CLIP's resize, centre crop, normalisation).
        face_image_processor ([`CLIPImageProcessorPil`]): face-crop normalisation (ImageNet statistics).
        feature_extractor ([`Wav2Vec2FeatureExtractor`]): per-clip audio normalisation at 16 kHz.
        tokenizer: the language model's tokenizer carrying the named placeholders `video_token`, `audio_token`,
            `face_token` and `fusion_token` (see `add_modality_tokens`).
        chat_template (`str`, *optional*): the Jinja chat template; defaults to [`build_chat_template`] with the
            tokenizer's placeholders and `system_prompt`. A template that renders no media (an LLM's plain one, as
            older saved folders carry) is replaced by the default one, with a warning.
        num_frames (`int`, defaults to 8): frames sampled per video.
        num_audio_clips (`int`, defaults to 8) and audio_clip_seconds (`float`, defaults to 2.0): audio windows.
        num_video_tokens, num_audio_tokens, num_face_tokens, num_fusion_tokens (`int`): placeholder expansion; must
            equal the model config's counts.
        face_detector (`str`, defaults to `"mtcnn"`): detector name, see `FACE_DETECTORS` (chosen by
            `benchmarks/bench_faces.py`).
        face_detection_max_side (`int`, defaults to 640): frames larger than this are shrunk to it for detection;
            smaller ones are searched at full resolution.
        face_margin (`float`, defaults to 0.25): margin around a face, as a fraction of its size on each side.
        max_frame_side (`int`, defaults to 1280): decoded frames are capped to this longest side (memory bound).
        max_length (`int`, defaults to 1024): token budget per sample, prompt and answer together.
        max_history_turns (`int`, defaults to 32): ERG dialogue turns kept at most (the newest).
        system_prompt (`str`): the default system message of the default chat template.
        prompt_style (`str`, defaults to `"chat"`): `"chat"` renders task prompts with the chat template and our
            fixed prompts (`prompts_nanoemox.TASKS`); `"authors"` renders the authors' `###Human: … ###Assistant: `
            text (`prompts_authors_nanoemox`: their tags, questions, modality blocks in the order fusion, audio, face,
            frames, subtitle, targets ending in `###`), what their LAVIS checkpoints were trained on. Saved in
            `processor_config.json`; `AutoProcessor.from_pretrained(dir, prompt_style="authors")` selects it.
        frame_resize (`str`, *optional*): `"center_crop"` (aspect ratio kept, the centre cropped: CLIP's own
            preprocessing) or `"squash"` (the whole frame resized to the square input, aspect ratio lost, as the
            authors decode). `None` (default): the style's choice, `center_crop` for "chat", `squash` for "authors".
        audio_normalization (`str`, *optional*): `"per_clip"` (zero mean / unit variance per clip) or `"joint"`
            (over all clips of all samples of one call together, as the authors' encoder does for a batch). `None`
            (default): the style's choice, `per_clip` for "chat", `joint` for "authors".
    """

    valid_kwargs = ["chat_template"]

    def __init__(
        self,
        image_processor=None,
        face_image_processor=None,
        feature_extractor=None,
        tokenizer=None,
        chat_template=None,
        num_frames: int = 8,
        num_audio_clips: int = 8,
        audio_clip_seconds: float = 2.0,
        num_video_tokens: int = 32,
        num_audio_tokens: int = 32,
        num_face_tokens: int = 4,
        num_fusion_tokens: int = 1,
        face_detector: str = DEFAULT_FACE_DETECTOR,
        face_detection_max_side: int = 640,
        face_margin: float = 0.25,
        max_frame_side: int = 1280,
        max_length: int = 1024,
        max_history_turns: int = MAX_HISTORY_TURNS,
        system_prompt: str = SYSTEM_PROMPT,
        prompt_style: str = "chat",
        frame_resize: str | None = None,
        audio_normalization: str | None = None,
        **kwargs,
    ):
        for name, value, allowed in (
            ("prompt_style", prompt_style, PROMPT_STYLES),
            ("frame_resize", frame_resize, (None, *FRAME_RESIZES)),
            ("audio_normalization", audio_normalization, (None, *AUDIO_NORMALIZATIONS)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {[a for a in allowed if a]}, got {value!r}.")
        self.prompt_style = prompt_style
        self.frame_resize = frame_resize
        self.audio_normalization = audio_normalization
        self.num_frames = num_frames
        self.num_audio_clips = num_audio_clips
        self.audio_clip_seconds = audio_clip_seconds
        self.num_video_tokens = num_video_tokens
        self.num_audio_tokens = num_audio_tokens
        self.num_face_tokens = num_face_tokens
        self.num_fusion_tokens = num_fusion_tokens
        self.face_detector = face_detector
        self.face_detection_max_side = face_detection_max_side
        self.face_margin = face_margin
        self.max_frame_side = max_frame_side
        self.max_length = max_length
        self.max_history_turns = max_history_turns
        self.system_prompt = system_prompt
        missing = [m for m in MODALITY_ORDER if not getattr(tokenizer, f"{m}_token", None)]
        if missing:
            raise ValueError(
                f"The tokenizer has no placeholder token for {missing}; add them with `add_modality_tokens(tokenizer)` "
                "(composing from components and create-tiny do)."
            )
        default_template = build_chat_template(system_prompt, tokenizer.video_token, tokenizer.audio_token)
        if chat_template is None:
            chat_template = default_template
        elif isinstance(chat_template, str) and tokenizer.video_token not in chat_template:
            logger.warning("The chat template renders no media placeholders; using the Nano-EmoX template instead.")
            chat_template = default_template
        super().__init__(
            image_processor, face_image_processor, feature_extractor, tokenizer, chat_template=chat_template
        )

    @classmethod
    def from_model_config(cls, config, tokenizer, image_processor=None, feature_extractor=None, **kwargs):
        """
        A processor matching a `NanoEmoXConfig`: CLIP preprocessing at the vision tower's size, ImageNet-normalised
        face crops at the face encoder's size, 16 kHz audio, and the config's token counts. Pass the components' own
        `image_processor` / `feature_extractor` to reuse their settings.
        """
        from transformers import CLIPImageProcessorPil, Wav2Vec2FeatureExtractor
        from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        image_size = config.vision_config.image_size
        face_size = config.face_config.backbone_config.image_size
        if image_processor is None:
            image_processor = CLIPImageProcessorPil(
                size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
            )
        face_image_processor = CLIPImageProcessorPil(
            size={"height": face_size, "width": face_size},
            do_center_crop=False,
            image_mean=list(IMAGENET_DEFAULT_MEAN),
            image_std=list(IMAGENET_DEFAULT_STD),
        )
        if feature_extractor is None:
            feature_extractor = Wav2Vec2FeatureExtractor(
                feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
            )
        counts = {f"num_{m}_tokens": getattr(config, f"num_{m}_tokens") for m in MODALITY_ORDER}
        return cls(image_processor, face_image_processor, feature_extractor, tokenizer, **counts, **kwargs)

    # ---- placeholders ------------------------------------------------------------------------------------------
    # `ProcessorMixin` finds the placeholders through `video_token` / `audio_token` (count checks, expansion).

    @property
    def video_token(self) -> str:
        return self.tokenizer.video_token

    @property
    def audio_token(self) -> str:
        return self.tokenizer.audio_token

    @property
    def video_token_id(self) -> int:
        return self.tokenizer.video_token_id

    @property
    def audio_token_id(self) -> int:
        return self.tokenizer.audio_token_id

    def placeholder(self, modality: str) -> str:
        """The placeholder string of a modality (one token; the processor repeats it `num_<modality>_tokens` times)."""
        return getattr(self.tokenizer, f"{modality}_token")

    def token_count(self, modality: str) -> int:
        return getattr(self, f"num_{modality}_tokens")

    def setting(self, name: str) -> str:
        """`frame_resize` / `audio_normalization` in effect: the processor's own, else its prompt style's default."""
        value = getattr(self, name, None)
        return value if value is not None else STYLE_DEFAULTS[getattr(self, "prompt_style", "chat")][name]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "face_pixel_values", "audio_values"]

    @property
    def detector(self) -> FaceDetector:
        """The face detector, built once per thread (detectors hold native state that is neither picklable nor
        guaranteed thread-safe, and the processor itself must stay serialisable)."""
        key = (self.face_detector, self.face_detection_max_side)
        cache = _DETECTORS.__dict__.setdefault("by_key", {})
        if key not in cache:
            cache[key] = build_face_detector(self.face_detector, max_side=self.face_detection_max_side)
        return cache[key]

    def replace_video_token(self, video_inputs: dict, video_idx: int, **kwargs) -> str:
        """One video's tokens: video, face (when its face branch is on), its own audio track (with
        `load_audio_from_video=True`) and fusion (when its sample has audio, from the track or an audio part)."""
        expansion = {
            "video": video_inputs.get("has_video", [True] * (video_idx + 1))[video_idx],
            "face": video_inputs["has_face"][video_idx],
            "audio": video_inputs["track_audio"][video_idx],
            "fusion": video_inputs["has_fusion"][video_idx],
        }
        return "".join(self.placeholder(m) * self.token_count(m) for m in MODALITY_ORDER if expansion[m])

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        """One audio part's tokens."""
        return self.audio_token * self.num_audio_tokens

    # ---- media -------------------------------------------------------------------------------------------------

    def _load_video(self, video):
        from .media_nanoemox import decode_frame_folder, decode_video, frames_from_array, sample_indices

        if isinstance(video, (str, os.PathLike)) and os.path.isdir(video):
            return decode_frame_folder(video, self.num_frames, self.max_frame_side)
        if isinstance(video, (str, os.PathLike, bytes, bytearray)):
            return decode_video(video, self.num_frames, self.max_frame_side)
        if isinstance(video, torch.Tensor):
            video = video.detach().cpu().numpy()
            # (T, 3, H, W) as torchvision / transformers' video utilities give them → (T, H, W, 3).
            if video.ndim == 4 and video.shape[1] in (1, 3, 4) and video.shape[-1] not in (1, 3, 4):
                video = video.transpose(0, 2, 3, 1)
        elif not isinstance(video, (np.ndarray, list, tuple)):
            video = np.asarray(video)  # a PIL image
        decoded = frames_from_array(video, self.max_frame_side)
        if len(decoded.frames) != self.num_frames:
            indices = sample_indices(len(decoded.frames), self.num_frames)
            decoded.frames, decoded.timestamps = decoded.frames[indices], decoded.timestamps[indices]
        return decoded

    def _load_audio(self, audio, sampling_rate: int | None) -> np.ndarray | None:
        """Any audio input → `(num_audio_clips, clip_samples)` raw 16 kHz clips, or None when a file has no audio."""
        from .media_nanoemox import audio_duration, clip_spans, decode_audio, resample_mono, split_clips

        target_rate = self.feature_extractor.sampling_rate
        if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            duration = audio_duration(audio)
            if duration is not None and duration > AUDIO_SEEK_THRESHOLD_SECONDS:
                spans = clip_spans(duration, self.num_audio_clips, self.audio_clip_seconds)
                waveform = decode_audio(audio, target_rate, spans)
                clip_samples = int(round(self.audio_clip_seconds * target_rate))
                clips = [waveform[i * clip_samples : (i + 1) * clip_samples] for i in range(self.num_audio_clips)]
                return np.stack([np.pad(c, (0, clip_samples - len(c))) for c in clips]).astype(np.float32)
            waveform = decode_audio(audio, target_rate)
            if waveform is None:
                return None
        else:
            if isinstance(audio, tuple) and len(audio) == 2:
                audio, sampling_rate = audio
            if sampling_rate is None:
                raise ValueError(
                    "An audio array needs its sampling rate: pass (waveform, sampling_rate), `sampling_rate=`, or "
                    'a part {"type": "audio", "audio": waveform, "sampling_rate": rate}.'
                )
            if isinstance(audio, torch.Tensor):
                audio = audio.detach().cpu().numpy()
            waveform = resample_mono(np.asarray(audio), sampling_rate, target_rate)
        return split_clips(waveform, target_rate, self.num_audio_clips, self.audio_clip_seconds)

    def _normalise_audio(self, clips: np.ndarray) -> np.ndarray:
        """Per-clip normalisation; with `audio_normalization="joint"` the clips stay raw here and
        [`_normalise_jointly`] normalises all of a call's clips together."""
        if self.setting("audio_normalization") == "joint":
            return clips.astype(np.float32)
        rate = self.feature_extractor.sampling_rate
        return self.feature_extractor(list(clips), sampling_rate=rate, return_tensors="np")["input_values"]

    def _normalise_jointly(self, tracks: list[np.ndarray]) -> list[np.ndarray]:
        """The authors' normalisation: the `(tracks · clips, samples)` batch goes to the feature extractor as ONE
        array (models/encoder.py:572-579), so the mean and variance are those of every clip of the call together."""
        if not tracks or not getattr(self.feature_extractor, "do_normalize", True):
            return tracks
        rate = self.feature_extractor.sampling_rate
        flat = np.concatenate([track.reshape(-1) for track in tracks]).astype(np.float32)
        normed = self.feature_extractor(flat, sampling_rate=rate, return_tensors="np")["input_values"][0]
        sizes = np.cumsum([track.size for track in tracks])[:-1]
        return [part.reshape(track.shape) for part, track in zip(np.split(normed, sizes), tracks)]

    def _prepare_faces(self, decoded, supplied_faces) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """
        Face crops of one video → `(pixel_values (T, 3, S, S), face_boxes (T, 4), crop_boxes (T, 4), face_source (T,))`:
        the face and the region cropped (x, y, w, h in original-frame pixels) and codes into `FACE_SOURCES`. The main
        face is tracked over the clip; frames where the detector missed it take the box completed from their
        neighbours (source "completed"); a clip with no face at all gives whole frames (source "none").
        """
        import cv2

        from .face_detection_nanoemox import detect_and_track
        from .media_nanoemox import load_face_crops, sample_indices

        size = self.face_image_processor.size["height"]
        if supplied_faces is not None:
            crops = load_face_crops(supplied_faces)
            crops = crops[sample_indices(len(crops), self.num_frames)]
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
            # The caller's crop is the face; where it lay in the frame is unknown, so both boxes are the whole frame.
            height, width = decoded.original_size
            face_boxes = crop_boxes = np.tile(np.array([0, 0, width, height], np.float32), (self.num_frames, 1))
            source = np.full(self.num_frames, FACE_SOURCES.index("detected"), np.int64)
        else:
            # The processor reports a clip without any face itself (one warning per batch, naming the samples).
            track = detect_and_track(decoded.frames, self.detector, size=size, margin=self.face_margin, warn=False)
            crops = track.crops
            face_boxes = (track.face_boxes * decoded.scale).astype(np.float32)
            crop_boxes = (track.crop_boxes * decoded.scale).astype(np.float32)
            source = np.array([FACE_SOURCES.index(kind) for kind in track.source], np.int64)
        pixel_values = self.face_image_processor(list(crops), return_tensors="np")["pixel_values"]
        return pixel_values, face_boxes, crop_boxes, source

    def _prepare_frames(self, decoded, frame_resize: str | None = None) -> np.ndarray:
        import cv2

        frame_resize = frame_resize or self.setting("frame_resize")
        if frame_resize not in FRAME_RESIZES:
            raise ValueError(f"frame_resize must be one of {list(FRAME_RESIZES)}, got {frame_resize!r}.")
        if frame_resize == "squash":
            # The whole frame to the square input, aspect ratio not kept (the authors' decord `VideoReader(uri,
            # height=224, width=224)`); CLIP's resize and centre crop are then no-ops.
            crop = self.image_processor.crop_size
            height, width = crop["height"], crop["width"]
            frames = decoded.frames
            shrinking = frames.shape[1] >= height and frames.shape[2] >= width
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            frames = _resize_each(frames, (width, height), interpolation)
            return self.image_processor(list(frames), return_tensors="np")["pixel_values"]
        # Shrinking with area averaging first makes CLIP's own resize cheap on HD frames.
        shortest = self.image_processor.size.get("shortest_edge") or min(self.image_processor.crop_size.values())
        height, width = decoded.frames.shape[1:3]
        factor = shortest / min(height, width)
        frames = decoded.frames
        if factor < 1:
            size = (max(shortest, round(width * factor)), max(shortest, round(height * factor)))
            frames = _resize_each(frames, size, cv2.INTER_AREA)
        return self.image_processor(list(frames), return_tensors="np")["pixel_values"]

    def _process_video(self, video, faces, use_faces: bool, load_audio_from_video: bool,
                       frame_resize: str | None = None) -> _VideoItem:  # fmt: skip
        """
        One video → its item; a file without decodable frames gives no frames (and still its audio track). A file's
        own audio track decodes on a second thread while the frames decode and are prepared (the frames' decoding
        leaves a core partly idle); its errors are raised where they were when the track came after the frames.
        """
        folder = isinstance(video, (str, os.PathLike)) and os.path.isdir(video)
        from_file = not folder and isinstance(video, (str, os.PathLike, bytes, bytearray))
        track = _InBackground(self._load_audio, video, None) if load_audio_from_video and from_file else None
        item = _VideoItem()
        try:
            decoded = self._load_video(video)
            if decoded is None:
                item.notes.append("the video has no decodable frames; continuing without video")
            else:
                item.pixel_values = self._prepare_frames(decoded, frame_resize)
                if use_faces:
                    item.faces, item.face_boxes, item.crop_boxes, item.face_source = self._prepare_faces(
                        decoded, faces
                    )
                    if not (item.face_source != FACE_SOURCES.index("none")).any():
                        item.notes.append("no face found in any frame; the face branch sees whole frames")
        finally:
            if track is not None:
                track.wait()
        if load_audio_from_video:
            if folder:
                item.notes.append("a folder of frames has no audio track; continuing without audio")
            elif from_file:
                clips = track.result()
                if clips is None:
                    item.notes.append("the video has no audio track; continuing without audio")
                else:
                    item.audio = self._normalise_audio(clips)
            else:
                item.notes.append("frames given as an array have no audio track; continuing without audio")
        return item

    def _process_audio(self, audio, sampling_rate: int | None) -> np.ndarray:
        from .media_nanoemox import MediaDecodeError

        clips = self._load_audio(audio, sampling_rate)
        if clips is None:
            raise MediaDecodeError("The audio input has no audio stream.")
        return self._normalise_audio(clips)

    # ---- main entry point --------------------------------------------------------------------------------------

    def __call__(self, images=None, text=None, videos=None, audio=None, **kwargs) -> BatchFeature:
        r"""
        Args:
            images: accepted so pipelines can call the processor: an image (path, array `(H, W, 3)`, PIL image) is a
                one-frame video (its frame repeated `num_frames` times); pass `images` or `videos`, not both.
            text (`str` or `list[str]`): the chat-templated prompt(s) (`apply_chat_template(..., tokenize=False)`)
                with one unexpanded `<|emox_video|>` per video and one `<|emox_audio|>` per separate audio; at most one
                of each per prompt.
            videos: the videos in prompt order: a path to a file, a folder of frame images, the file's bytes, an array
                `(T, H, W, 3)` (uint8, or float in [0, 1]), a tensor `(T, 3, H, W)` or `(T, H, W, 3)`, or a list of
                frames; a list of those (or per prompt a list) for several.
            audio: the separate audio inputs in prompt order: a path, bytes, `(waveform, sampling_rate)`, or a waveform
                with `sampling_rate=`.
            load_audio_from_video (`bool`, defaults to `False`): use each video file's own audio track (its tokens
                follow the video's) in samples without an audio part (an audio part takes precedence); as in
                Qwen2.5-Omni, off unless asked, so a phase without audio has none.
            use_faces (`bool`, defaults to `True`): the face branch for every video.
            faces: face crops made beforehand (e.g. OpenFace), one entry per video (None to detect): a folder of
                images, a `.npy` file, an array `(T, H, W, 3)` or a list of crops; skips detection.
            sampling_rate (`int`): rate of audio arrays given without one.
            padding (`bool` or `str`, defaults to `"longest"`), padding_side (`"left"` (default) or `"right"`).
            max_length (`int`, defaults to `self.max_length`) and truncation: a prompt longer than `max_length` is a
                `ValueError` unless `truncation=True` (which fails too if it would cut a placeholder).
            return_face_info (`bool`, defaults to `False`): also return `face_boxes` `(N_face, T, 4)` (face x, y, w, h
                in original pixels), `crop_boxes` `(N_face, T, 4)` (the region cropped) and `face_source`
                `(N_face, T)` codes into `FACE_SOURCES`; pop them before `model.generate`.
            modalities: prompt-only mode for callers that bring encoded media (a feature cache): per prompt the
                modalities its media have, among `video`, `face`, `audio`. No media is decoded or returned; a video
                placeholder expands to video (+ face) (+ audio when the prompt has no audio placeholder) (+ fusion
                when there is audio).
            return_tensors (defaults to `"pt"`).

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask` `(B, L)` and, for the items present only,
            `pixel_values_videos` `(N_video, T, 3, S, S)`, `face_pixel_values` `(N_face, T, 3, S_f, S_f)` and
            `audio_values` `(N_audio, C, samples)` (sample 0's items first).
        """
        unknown = sorted(set(kwargs) - set(_CALL_OPTIONS))
        if unknown:
            raise TypeError(f"Unexpected arguments {unknown}.")
        options = {**_CALL_OPTIONS, **kwargs}
        if text is None:
            raise ValueError(
                "Pass `text=`: the chat-templated prompt(s), e.g. `processor.apply_chat_template(conversation, "
                "add_generation_prompt=True)`, or use `apply_chat_template(..., tokenize=True)` / `prepare_task`."
            )
        texts = [text] if isinstance(text, str) else list(text)
        if not texts:
            raise ValueError("Got an empty batch.")
        if not all(isinstance(sample, str) for sample in texts):
            raise ValueError("`text` must be a string or a list of strings (the chat-templated prompts).")
        if options["padding_side"] not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {options['padding_side']!r}.")
        if images is not None:
            if videos is not None:
                raise ValueError("Pass `images` or `videos`, not both: an image is a one-frame video.")
            videos = _flatten_images(images)
        video_items, audio_items = _flatten_videos(videos), _flatten_audio(audio)
        if self.prompt_style == "authors":
            return self._call_blocks(texts, video_items, audio_items, options)
        video_counts = [sample.count(self.video_token) for sample in texts]
        audio_counts = [sample.count(self.audio_token) for sample in texts]
        self._check_counts(texts, video_counts, audio_counts, video_items, audio_items, videos, options["modalities"])

        if options["modalities"] is not None:
            video_inputs, audio_rows, media = self._declared_media(options["modalities"], video_counts, audio_counts)
        else:
            video_inputs, audio_rows, media = self._decode_media(
                video_items, audio_items, video_counts, audio_counts, options
            )
        video_replacements = [self.replace_video_token(video_inputs, i) for i in range(sum(video_counts))]
        audio_replacements = [self.replace_audio_token({}, i) for i in range(sum(audio_counts))]
        expanded, offsets = self.get_text_with_replacements(texts, [], video_replacements, audio_replacements)
        data = self._tokenize(expanded, options)
        if options["return_text_replacement_offsets"]:
            data["text_replacement_offsets"] = offsets
        data.update(media)
        if not options["return_face_info"]:
            for key in ("face_boxes", "crop_boxes", "face_source"):
                data.pop(key, None)
        return BatchFeature(
            data=data, tensor_type=options["return_tensors"], skip_tensor_conversion=["text_replacement_offsets"]
        )

    def _call_blocks(self, texts, video_items, audio_items, options) -> BatchFeature:
        """`__call__` for authors-style prompts: each placeholder stands alone in its own block (`<Video><|emox_video|>
        </Video>`, `<Video><|emox_face|></Video>`, `<Audio><|emox_audio|></Audio>`, `<Multi><|emox_fusion|></Multi>`)
        and expands on its own to its token count. A sample with a frames or face block owns one video item (the
        face crops come from it); an audio block is fed by a separate audio item or, with
        `load_audio_from_video=True`, by the sample's video track."""
        if options["return_text_replacement_offsets"]:
            raise ValueError("return_text_replacement_offsets is not available with prompt_style='authors'.")
        blocks = []
        for index, sample in enumerate(texts):
            present = set()
            for modality in MODALITY_ORDER:
                found = sample.count(self.placeholder(modality))
                if found > 1:
                    raise ValueError(
                        f"sample {index}: {found} {modality} placeholders; an authors-style prompt has one block per "
                        "modality at most (render it with apply_chat_template / build_task_messages)."
                    )
                if found:
                    present.add(modality)
            if "fusion" in present and not {"video", "audio"} <= present:
                raise ValueError(f"sample {index}: a fusion block needs the frames and audio blocks too.")
            blocks.append(present)
        needs_video = [bool(present & {"video", "face"}) for present in blocks]
        needs_audio = [("audio" in present) for present in blocks]
        if options["modalities"] is not None:
            if video_items or audio_items:
                raise ValueError("Pass media or `modalities`, not both.")
            media, video_inputs = {}, None
        else:
            if len(video_items) != sum(needs_video):
                raise ValueError(
                    f"The prompts have {sum(needs_video)} samples with a frames or face block but {len(video_items)} "
                    "videos were passed (one video per such sample)."
                )
            separate = list(needs_audio)
            if len(audio_items) != sum(needs_audio):
                without_video = [a and not v for a, v in zip(needs_audio, needs_video)]
                if not (options["load_audio_from_video"] and len(audio_items) == sum(without_video)):
                    raise ValueError(
                        f"The prompts have {sum(needs_audio)} audio blocks but {len(audio_items)} audio inputs were "
                        "passed: give one audio per audio block, or pass load_audio_from_video=True so that samples "
                        "with a video hear its own track (then audio inputs only for audio blocks without a video)."
                    )
                separate = without_video
            video_counts, audio_counts = [int(v) for v in needs_video], [int(a) for a in separate]
            owners = [index for index, needed in enumerate(needs_video) if needed]
            faces_on = [("face" in blocks[index]) for index in owners]
            tracks = [needs_audio[index] and not separate[index] for index in owners]
            video_inputs, _, media = self._decode_media(
                video_items, audio_items, video_counts, audio_counts, options, faces_on=faces_on, tracks=tracks
            )
            for position, index in enumerate(owners):
                if not video_inputs["has_video"][position]:
                    raise ValueError(f"sample {index}: the video has no decodable frames for its blocks.")
                if tracks[position] and not video_inputs["track_audio"][position]:
                    raise ValueError(
                        f"sample {index}: the prompt has an audio block but the video has no audio track."
                    )
            # Frames only for the samples whose prompt has a frames block (a face-only layout uses the crops).
            keep = [position for position, index in enumerate(owners) if "video" in blocks[index]]
            if "pixel_values_videos" in media:
                if keep:
                    media["pixel_values_videos"] = media["pixel_values_videos"][keep]
                else:
                    del media["pixel_values_videos"]
        expanded = []
        for sample in texts:
            for modality in MODALITY_ORDER:
                token = self.placeholder(modality)
                sample = sample.replace(token, token * self.token_count(modality))
            expanded.append(sample)
        data = self._tokenize(expanded, options)
        data.update(media)
        if not options["return_face_info"]:
            for key in ("face_boxes", "crop_boxes", "face_source"):
                data.pop(key, None)
        return BatchFeature(data=data, tensor_type=options["return_tensors"])

    def _check_counts(self, texts, video_counts, audio_counts, video_items, audio_items, videos, modalities) -> None:
        for index, sample in enumerate(texts):
            for modality in ("face", "fusion"):
                if self.placeholder(modality) in sample:
                    raise ValueError(
                        f"sample {index}: the prompt contains {self.placeholder(modality)!r}; face and fusion tokens "
                        "are written by the processor when it expands a video, pass the unexpanded prompt."
                    )
            if video_counts[index] > 1 or audio_counts[index] > 1:
                raise ValueError(
                    f"sample {index}: the prompt has {video_counts[index]} videos and {audio_counts[index]} separate "
                    "audio inputs; Nano-EmoX takes at most one video and one audio per sample."
                )
        if modalities is not None:
            if video_items or audio_items:
                raise ValueError("Pass media or `modalities`, not both.")
            return
        if (
            isinstance(videos, list)
            and videos
            and all(isinstance(v, list) for v in videos)
            and len(videos) != len(texts)
        ):
            raise ValueError(
                f"Batched inputs disagree on the batch size: {len(texts)} prompts but videos for {len(videos)}."
            )
        # ProcessorMixin's messages, for the same checks.
        for token, found, given, what in (
            (self.video_token, sum(video_counts), len(video_items), "videos"),
            (self.audio_token, sum(audio_counts), len(audio_items), "audio inputs"),
        ):
            if found != given:
                raise ValueError(
                    f"The total number of {token} tokens in the prompts should be the same as the number of {what} "
                    f"passed. Found total {found} {token} tokens and {given} {what}."
                )

    def _declared_media(self, modalities, video_counts, audio_counts):
        """Prompt-only mode: which placeholders each prompt expands to, from the declared modalities."""
        declared = [modalities] if len(video_counts) == 1 and _is_modality_set(modalities) else list(modalities)
        if len(declared) != len(video_counts):
            raise ValueError(
                f"Batched inputs disagree on the batch size: {len(video_counts)} prompts, {len(declared)} modalities."
            )
        video_inputs = {"has_face": [], "track_audio": [], "has_fusion": []}
        for index, present in enumerate(declared):
            present = set(present or ())
            unknown = present - {"video", "face", "audio"}
            if unknown:
                raise ValueError(f"sample {index}: unknown modalities {sorted(unknown)}; use video/face/audio.")
            if audio_counts[index] and "audio" not in present:
                raise ValueError(f"sample {index}: the prompt has an audio placeholder but no audio is declared.")
            if video_counts[index] and "video" not in present:
                raise ValueError(f"sample {index}: the prompt has a video placeholder but no video is declared.")
            if not video_counts[index] and present & {"video", "face"}:
                raise ValueError(f"sample {index}: video/face declared but the prompt has no video placeholder.")
            if not audio_counts[index] and "audio" in present and not video_counts[index]:
                raise ValueError(f"sample {index}: audio declared but the prompt has no audio or video placeholder.")
            if video_counts[index]:
                video_inputs["has_face"].append("face" in present)
                video_inputs["track_audio"].append("audio" in present and not audio_counts[index])
                video_inputs["has_fusion"].append("audio" in present)
        return video_inputs, None, {}

    def _decode_media(self, video_items, audio_items, video_counts, audio_counts, options, faces_on=None,
                      tracks=None):  # fmt: skip
        """Decodes the media. `faces_on` / `tracks` (per video: face branch, own audio track) default to
        `use_faces` for every video and `load_audio_from_video` where the sample has no audio part."""
        from .media_nanoemox import MediaError

        faces = _faces_per_video(options["faces"], len(video_items))
        use_faces, from_video = options["use_faces"], options["load_audio_from_video"]
        # A sample's audio part takes precedence over its video's own track (which is then not read).
        has_audio_part = [bool(n) for n, v in zip(audio_counts, video_counts) for _ in range(v)]
        faces_on = [use_faces] * len(video_items) if faces_on is None else faces_on
        tracks = [from_video and not part for part in has_audio_part] if tracks is None else tracks
        decoded_videos, decoded_audio = [], []
        for index, (video, crops) in enumerate(zip(video_items, faces)):
            try:
                decoded_videos.append(
                    self._process_video(video, crops, faces_on[index], tracks[index], options["frame_resize"])
                )
            except MediaError as error:
                raise type(error)(f"video {index}: {error}") from None
        for index, item in enumerate(audio_items):
            try:
                decoded_audio.append(self._process_audio(item, options["sampling_rate"]))
            except MediaError as error:
                raise type(error)(f"audio {index}: {error}") from None
        # Per sample, in batch order: which video and audio items it owns.
        video_iter, audio_iter = iter(decoded_videos), iter(decoded_audio)
        video_inputs = {"has_video": [], "has_face": [], "track_audio": [], "has_fusion": []}
        videos_out, faces_out, audio_out, info = [], [], [], {"face_boxes": [], "crop_boxes": [], "face_source": []}
        notes: dict[str, list[int]] = {}
        for index, (num_videos, num_audio) in enumerate(zip(video_counts, audio_counts)):
            video = next(video_iter) if num_videos else None
            separate = next(audio_iter) if num_audio else None
            if video is not None:
                if video.pixel_values is not None:
                    videos_out.append(video.pixel_values)
                if video.faces is not None:
                    faces_out.append(video.faces)
                    info["face_boxes"].append(video.face_boxes)
                    info["crop_boxes"].append(video.crop_boxes)
                    info["face_source"].append(video.face_source)
                has_audio = video.audio is not None or separate is not None
                video_inputs["has_video"].append(video.pixel_values is not None)
                video_inputs["has_face"].append(video.faces is not None)
                video_inputs["track_audio"].append(video.audio is not None)
                video_inputs["has_fusion"].append(video.pixel_values is not None and has_audio)
                for note in video.notes:
                    notes.setdefault(note, []).append(index)
            sample_audio = separate if separate is not None else (video.audio if video is not None else None)
            if sample_audio is not None:
                audio_out.append(sample_audio)
                if not np.any(sample_audio):
                    notes.setdefault("the audio is silent", []).append(index)
        # One warning per kind of fallback for the whole batch, naming the samples it concerns.
        for note, indices in notes.items():
            where = f"sample {indices[0]}" if len(indices) == 1 else f"samples {indices}"
            logger.warning(f"{where}: {note}.")
        if self.setting("audio_normalization") == "joint":
            audio_out = self._normalise_jointly(audio_out)
        media = {}
        for key, items in (("pixel_values_videos", videos_out), ("face_pixel_values", faces_out),
                           ("audio_values", audio_out)):  # fmt: skip
            if items:
                media[key] = np.stack(items).astype(np.float32)
        if faces_out:
            media.update({key: np.stack(values) for key, values in info.items()})
        return video_inputs, None, media

    def _tokenize(self, expanded: list[str], options: dict) -> dict:
        max_length = options["max_length"] or self.max_length
        truncate = bool(options["truncation"]) and options["truncation"] != "do_not_truncate"
        extra = {"sanitize_control_tokens": True} if options["sanitize_control_tokens"] else {}
        encoded = self.tokenizer(
            expanded,
            add_special_tokens=options["add_special_tokens"],
            padding=options["padding"],
            padding_side=options["padding_side"],
            truncation=truncate or None,
            max_length=max_length if truncate else None,
            return_offsets_mapping=options["return_offsets_mapping"],
            return_attention_mask=True,
            **extra,
        )
        for index, mask in enumerate(encoded["attention_mask"]):
            if sum(mask) > max_length:
                raise ValueError(
                    f"sample {index}: the prompt needs {sum(mask)} tokens, {sum(mask) - max_length} over "
                    f"max_length={max_length} (pass a larger max_length or shorten the text; task prompts are trimmed "
                    "to it by `build_task_messages`)."
                )
        self._check_special_mm_tokens(expanded, encoded, modalities=["video", "audio"])
        for modality in ("face", "fusion"):
            token, token_id = self.placeholder(modality), getattr(self.tokenizer, f"{modality}_token_id")
            if [list(ids).count(token_id) for ids in encoded["input_ids"]] != [s.count(token) for s in expanded]:
                raise ValueError(f"Mismatch in `{modality}` token count between text and `input_ids` (truncation?).")
        return dict(encoded)

    # ---- chat template -----------------------------------------------------------------------------------------

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """
        `ProcessorMixin.apply_chat_template` for Nano-EmoX's parts: `{"type": "video", "video": path | folder |
        array | tensor, "faces": crops (optional)}`, `{"type": "image", "image": …}` (a one-frame video),
        `{"type": "audio", "audio": path | array, "sampling_rate": rate}` and `{"type": "text", "text": …}`; one
        conversation or a list of them (`padding=True`). With `tokenize=False` it returns the prompt, and
        `processor(text=prompt, videos=…, audio=…, load_audio_from_video=…)` then gives exactly the tensors of
        `tokenize=True`. A system message of the user's replaces the default one. User text never produces a
        special token: control and placeholder strings are removed from every text before rendering.
        `load_audio_from_video`, `use_faces`, `faces`, `padding`, `padding_side`, `max_length`, `truncation`,
        `return_face_info` and `sampling_rate` go to `__call__`.
        """
        processor_kwargs = dict(kwargs.pop("processor_kwargs", None) or {})
        for name in _FORWARDED_OPTIONS:
            if name in kwargs:
                processor_kwargs[name] = kwargs.pop(name)
        batched = isinstance(conversation, (list, tuple)) and bool(conversation) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
        )  # fmt: skip
        conversations = conversation if batched else [conversation]
        cleaned = [self._clean_conversation(getattr(c, "messages", c), index) for index, c in enumerate(conversations)]
        if self.prompt_style == "authors" and chat_template is None:
            return self._apply_authors_template(cleaned, batched, processor_kwargs, kwargs)
        return super().apply_chat_template(
            cleaned if batched else cleaned[0],
            chat_template=chat_template,
            processor_kwargs=processor_kwargs,
            **kwargs,
        )

    # ---- the authors' prompt style --------------------------------------------------------------------------------

    def _apply_authors_template(self, conversations, batched: bool, processor_kwargs: dict, kwargs: dict):
        """`apply_chat_template` with `prompt_style="authors"`: no Jinja template, no system prompt. Each conversation's
        task message (from `build_task_messages`) becomes the authors' prompt, which already ends with
        "###Assistant: " (`add_generation_prompt` is implicit); a final assistant turn becomes the authors' target
        (`format_authors_target`: "…###" + eos). Tokenised, prompt and target are tokenised separately and
        concatenated, as the authors do (base_dataset.py:828-834); `assistant_masks` then marks target + eos."""
        tokenize = kwargs.pop("tokenize", False)
        return_dict = kwargs.pop("return_dict", False)
        return_tensors = kwargs.pop("return_tensors", "pt")
        return_tensors = "pt" if return_tensors == "auto" else return_tensors
        load_audio_from_video = kwargs.pop("load_audio_from_video", False)
        assistant_mask = kwargs.pop("return_assistant_tokens_mask", False)
        kwargs.pop("add_generation_prompt", None)
        if kwargs.pop("continue_final_message", False):
            raise ValueError("continue_final_message is not available with prompt_style='authors'.")
        for name in ("tools", "documents"):
            if kwargs.pop(name, None):
                raise ValueError(f"`{name}` is not available with prompt_style='authors'.")
        call = {**processor_kwargs, **kwargs}
        use_faces = call.get("use_faces", True)
        rendered = [
            self._render_authors(c, index, use_faces=use_faces, load_audio_from_video=load_audio_from_video)
            for index, c in enumerate(conversations)
        ]
        if not tokenize:
            texts = [prompt + (target or "") for prompt, target in rendered]
            return texts if batched else texts[0]
        _, videos, audios, extra = self._multimodal_inputs_from_conversations(
            conversations, None, load_audio_from_video
        )
        call.update(extra)
        prompts, targets = [p for p, _ in rendered], [t for _, t in rendered]
        if not any(t is not None for t in targets) and not assistant_mask:
            out = self(text=prompts, videos=videos, audio=audios, return_tensors=return_tensors, **call)
            return out if return_dict else out["input_ids"]
        padding_side = call.pop("padding_side", "left")
        max_length = call.pop("max_length", None) or self.max_length
        call.pop("padding", None)
        out = self(text=prompts, videos=videos, audio=audios, return_tensors=None, padding=False,
                   max_length=max_length, **call)  # fmt: skip
        target_ids = self.tokenizer([t or "" for t in targets], add_special_tokens=False)["input_ids"]
        rows, masks = [], []
        for index, (ids, extra_ids) in enumerate(zip(out["input_ids"], target_ids)):
            if len(ids) + len(extra_ids) > max_length:
                raise ValueError(
                    f"sample {index}: prompt and target need {len(ids) + len(extra_ids)} tokens, over max_length="
                    f"{max_length} (build_task_messages(max_length=…) trims the text and dialogue to fit)."
                )
            rows.append(list(ids) + list(extra_ids))
            masks.append([0] * len(ids) + [1] * len(extra_ids))
        width = max(len(row) for row in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        data = {key: value for key, value in out.items() if key not in ("input_ids", "attention_mask")}
        data["input_ids"], data["attention_mask"], data["assistant_masks"] = [], [], []
        for row, mask in zip(rows, masks):
            fill = width - len(row)
            before, after = (fill, 0) if padding_side == "left" else (0, fill)
            data["input_ids"].append([pad] * before + row + [pad] * after)
            data["attention_mask"].append([0] * before + [1] * len(row) + [0] * after)
            data["assistant_masks"].append([0] * before + mask + [0] * after)
        if not assistant_mask:
            del data["assistant_masks"]
        out = BatchFeature(data=data, tensor_type=return_tensors)
        return out if return_dict else out["input_ids"]

    def _render_authors(self, conversation, index: int, *, use_faces: bool, load_audio_from_video: bool,
                        budget: bool = False) -> tuple[str, str | None]:  # fmt: skip
        """(prompt, target or None) of one conversation in the authors' style. The blocks follow the task message's
        parts: a video gives frames (+ face crops with `use_faces`), an audio part or — with `load_audio_from_video`
        and a file that has an audio track — the video's own track gives audio, and video with audio gives the fusion
        block. `budget=True` (token counting) assumes the largest layout without opening any file."""
        position = next(
            (i for i in range(len(conversation) - 1, -1, -1)
             if conversation[i].get("role") == "user" and "nanoemox_task" in conversation[i]),
            None,
        )  # fmt: skip
        if position is None:
            raise ValueError(
                f"conversation {index}: prompt_style='authors' renders task prompts only; build them with "
                "build_task_messages(task, …) (free chat needs prompt_style='chat')."
            )
        request, content = conversation[position]["nanoemox_task"], conversation[position]["content"]
        history = [m for m in conversation[:position] if m.get("role") in ("user", "assistant")]
        after = conversation[position + 1 :]
        if after and (len(after) != 1 or after[0].get("role") != "assistant"):
            raise ValueError(
                f"conversation {index}: only one assistant turn (the target) may follow the task message."
            )
        parts = [part for part in content if isinstance(part, dict)] if isinstance(content, list) else []
        video_part = next((part for part in parts if part.get("type") in ("video", "image")), None)
        has_audio_part = any(part.get("type") == "audio" for part in parts)
        modalities = set()
        if video_part is not None:
            modalities |= {"video", "face"} if (use_faces or budget) else {"video"}
            if budget or (not has_audio_part and load_audio_from_video and _has_audio_track(video_part)):
                modalities.add("audio")
        if has_audio_part:
            modalities.add("audio")
        if {"video", "audio"} <= modalities:
            modalities.add("fusion")
        # The request was cleaned by build_task_messages; a hand-made one gets the same treatment.
        clean = lambda value, what: self._clean_text(value, what) if isinstance(value, str) else value  # noqa: E731
        request = {**request, "text": clean(request.get("text"), "text"), "context": clean(request.get("context"),
                   "context"), "question": clean(request.get("question"), "question")}  # fmt: skip
        if request.get("candidates") is not None:
            request["candidates"] = [clean(c, "candidate label") for c in request["candidates"]]
        name = authors_task_name(request["task"], dataset=request.get("dataset"), candidates=request.get("candidates"))
        dialogue = AUTHORS_TASK_SPECS[name].layouts == "avamerg"
        prompt = render_authors_prompt(
            name,
            modalities,
            text=request.get("text") or None,
            history=(history or None) if dialogue else None,
            context=(request.get("context") or "") if dialogue else None,
            candidates=request.get("candidates"),
            question=request.get("question"),
            placeholders={m: self.placeholder(m) for m in MODALITY_ORDER},
        )
        target = None
        if after:
            answer = after[0]["content"]
            if isinstance(answer, list):
                answer = "".join(part.get("text", "") for part in answer if isinstance(part, dict))
            target = format_authors_target(name, answer, eos=self.tokenizer.eos_token)
        return prompt, target

    def generation_kwargs(self) -> dict:
        """Extra `generate` arguments of the prompt style: in the authors' style, stop on "###" (their stopping
        criterion, conversation/conversation_video.py:116-123); nothing in the chat style."""
        if self.prompt_style == "authors":
            return {"stop_strings": [AUTHORS_TARGET_END], "tokenizer": self.tokenizer}
        return {}

    def _clean_conversation(self, conversation, index: int) -> list[dict]:
        """A copy of the conversation with every text stripped of special tokens and the parts checked."""
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise ValueError(f"conversation {index}: expected a non-empty list of messages, got {conversation!r}.")
        cleaned = []
        for message in conversation:
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"Each message must be a dict with 'role' and 'content', got {message!r}.")
            content = message["content"]
            if isinstance(content, (list, tuple)):
                parts = []
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind == "text":
                        parts.append({**part, "text": self._clean_text(part.get("text"), "message text")})
                    elif kind in ("video", "image", "audio"):
                        parts.append(dict(part))
                    else:
                        raise ValueError(f"Unknown message part {part!r}; expected type text/video/image/audio.")
                content = parts
            else:
                content = self._clean_text(content, "message text")
            cleaned.append({**message, "content": content})
        return cleaned

    def _multimodal_inputs_from_conversations(self, conversations, audio_loading_params, load_audio_from_video=False):
        """The media of the parts, in order, undecoded (this processor decodes them itself with PyAV): videos (and
        images, as one-frame videos) per conversation, audio flat with each part's sampling rate."""
        batch_videos, batch_audios, faces = [], [], []
        for conversation in conversations:
            videos = []
            for message in conversation:
                if isinstance(message.get("content"), str):
                    continue
                for part in message["content"]:
                    kind = part["type"]
                    value = next((part[k] for k in (kind, "url", "path") if part.get(k) is not None), None)
                    if kind in ("video", "image"):
                        if value is None:
                            raise ValueError(f"A {kind} part without media: {part!r}; pass `{kind}`.")
                        videos.append([np.asarray(value)] if _is_image(value) else value)
                        faces.append(part.get("faces"))
                    elif kind == "audio":
                        if value is None:
                            raise ValueError(f"An audio part without media: {part!r}; pass `audio`.")
                        rate = part.get("sampling_rate")
                        batch_audios.append((value, rate) if rate is not None and not _is_audio_file(value) else value)
            batch_videos.append(videos)
        extra = {"load_audio_from_video": load_audio_from_video}
        if any(f is not None for f in faces):
            extra["faces"] = faces
        return [[] for _ in conversations], batch_videos, batch_audios, extra

    # ---- tasks -------------------------------------------------------------------------------------------------

    def build_task_messages(
        self,
        task: str,
        text=None,
        history: list[dict] | None = None,
        candidates=None,
        target: str | None = None,
        video=None,
        audio=None,
        faces=None,
        modalities=None,
        max_length: int | None = None,
        context=None,
        dataset: str | None = None,
        question=None,
    ) -> list[dict]:
        """
        The standard messages of one of the six tasks (`TASK_NAMES`), for `apply_chat_template`.

        The messages are the same in both prompt styles; the task's user message also carries its request as
        `message["nanoemox_task"]` (task, text, candidates, context, dataset, question), which the "authors" style
        renders into the authors' prompt (see `apply_chat_template`), and the chat template ignores.

        Args:
            task: `msa`, `mer`, `ovmer`, `mir`, `eri` or `erg` (prompts in `prompts_nanoemox.TASKS`).
            text: subtitle / utterance (ERG: the user's current input), `str` or bytes.
            history: ERG dialogue so far, `[{"role": "user" | "assistant", "content": str}, …]`.
            candidates: labels to choose from (MER, MIR); defaults to the task's standard set.
            target: the answer, for training: appended as the assistant turn.
            video, audio, faces: media for the parts (`{"type": "video", "video": video, "faces": faces}`,
                `{"type": "audio", "audio": audio}`; an `(waveform, rate)` audio becomes `audio` + `sampling_rate`).
            modalities: parts to write without media (`("video",)`, `("video", "audio")`), for prompt-only use.
            max_length: token budget of the whole sample (media tokens counted at most); the oldest dialogue turns
                go first (never more than `max_history_turns` are kept), then the text is trimmed.
            context: ERG: AvaMERG's `context` field (the authors' prompts carry it; the chat prompts do not).
            dataset: the sample's dataset; `"avamerg"` makes `mer` the authors' AvaMERG emotion sub-task (no candidate
                list, answer "The emotion of the speaker is X.") in the authors' style.
            question: authors' style only — which of the authors' questions: `None` the fixed evaluation one (the
                first of the list), an index, a `random.Random` (drawn now, like the authors' `random.choice` per
                training sample), or a question text.

        Returns:
            `list[dict]`: `[*history, {"role": "user", "content": [media parts…, {"type": "text", …}]},
            ({"role": "assistant", …})]`.
        """
        if task is None:
            raise ValueError(f"Pass a task (one of {list(TASK_NAMES)}) or use free-chat messages.")
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}.")
        spec = TASKS[task]
        candidates = self._check_candidates(spec, candidates, target)
        history = self._check_history(history, task)
        text = self._clean_text(text, "text")
        context = self._clean_text(context, "context") if context is not None else None
        authors_name = authors_task_name(task, dataset=dataset, candidates=candidates)
        authors_spec = AUTHORS_TASK_SPECS[authors_name]
        if isinstance(question, random.Random):
            # = `question.choice(questions)` (both draw `_randbelow(len)`), resolved once so that measuring the
            # prompt for the token budget and rendering it use the same question.
            question = question.randrange(len(authors_spec.questions))
        elif isinstance(question, str):
            question = self._clean_text(question, "question")
        elif question is not None and (isinstance(question, bool) or not isinstance(question, int)):
            raise TypeError(f"question must be None, an index, a random.Random or a string, got {question!r}.")
        target = self._clean_text(target, "target") if target is not None else None
        parts = []
        wanted = list(modalities or ())
        unknown = set(wanted) - {"video", "audio"}
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; parts are video/audio.")
        if video is not None or "video" in wanted:
            part = {"type": "video"} if video is None else {"type": "video", "video": video}
            if faces is not None:
                part["faces"] = faces
            parts.append(part)
        if audio is not None or "audio" in wanted:
            if audio is None:
                parts.append({"type": "audio"})
            elif isinstance(audio, tuple) and len(audio) == 2:
                parts.append({"type": "audio", "audio": audio[0], "sampling_rate": audio[1]})
            else:
                parts.append({"type": "audio", "audio": audio})

        def build(current_text: str, current_history: list[dict]) -> list[dict]:
            lines = []
            if current_text:
                label = {"mir": "Utterance", "erg": "Current input"}.get(task, "Subtitle")
                lines.append(f'{label}: "{current_text}"')
            if candidates:
                lines.append("Candidate labels: " + ", ".join(candidates) + ".")
            lines.append(spec.instruction)
            request = {"task": task, "text": current_text, "dataset": dataset, "question": question,
                       "candidates": candidates if authors_spec.uses_candidates else None,
                       "context": context if authors_spec.layouts == "avamerg" else None}  # fmt: skip
            messages = [
                *current_history,
                {"role": "user", "content": [*parts, {"type": "text", "text": "\n".join(lines)}],
                 "nanoemox_task": request},
            ]  # fmt: skip
            if target is not None:
                messages.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
            return messages

        if max_length is None:
            return build(text, history)
        return self._fit(build, text, history, max_length, media_tokens=self._media_budget(parts))

    def prepare_task(self, task: str, video=None, audio=None, text=None, history=None, candidates=None, faces=None,
                     **kwargs) -> BatchFeature:  # fmt: skip
        """
        One call for one clip: `build_task_messages(task, …)` then `apply_chat_template(…, tokenize=True,
        add_generation_prompt=True, return_dict=True)`. Keyword arguments go to `apply_chat_template` / `__call__`
        (`load_audio_from_video`, `use_faces`, `return_face_info`, `max_length`, `return_tensors`, …).
        """
        max_length = kwargs.get("max_length") or self.max_length
        messages = self.build_task_messages(task, text=text, history=history, candidates=candidates, video=video,
                                            audio=audio, faces=faces, max_length=max_length)  # fmt: skip
        kwargs.setdefault("return_tensors", "pt")
        return self.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, **kwargs
        )

    def _media_budget(self, parts: list[dict]) -> int:
        """The most tokens the media parts can expand to."""
        kinds = {part["type"] for part in parts}
        budget = 0
        if "video" in kinds:
            budget += self.num_video_tokens + self.num_face_tokens + self.num_fusion_tokens
            budget += 0 if "audio" in kinds else self.num_audio_tokens  # the video's own track
        if "audio" in kinds:
            budget += self.num_audio_tokens
        return budget

    def _count_tokens(self, messages: list[dict], media_tokens: int) -> int:
        if self.prompt_style == "authors":
            prompt, target = self._render_authors(
                messages, 0, use_faces=True, load_audio_from_video=False, budget=True
            )
            rendered = prompt + (target or "")
        else:
            rendered = super().apply_chat_template(messages, add_generation_prompt=messages[-1]["role"] != "assistant")
        placeholders = sum(rendered.count(self.placeholder(m)) for m in MODALITY_ORDER)
        return len(self.tokenizer(rendered, add_special_tokens=False)["input_ids"]) - placeholders + media_tokens

    def _fit(self, build, text: str, history: list[dict], budget: int, media_tokens: int) -> list[dict]:
        """`build(text, history)` within `budget` tokens: oldest dialogue turns first, then the text. Linear in the
        dialogue: each turn is tokenised once and the cut found from running sums."""
        if len(history) > self.max_history_turns:
            logger.warning(f"Kept the newest {self.max_history_turns} of {len(history)} dialogue turns.")
            history = history[-self.max_history_turns :]
        needed = self._count_tokens(build(text, history), media_tokens)
        if needed > budget and history:
            # Tokens a turn adds: its content plus the turn's frame (`<|im_start|>role\n … <|im_end|>\n`).
            frame = self._count_tokens(build(text, history[:1]), 0) - self._count_tokens(build(text, []), 0)
            frame -= len(self.tokenizer(history[0]["content"], add_special_tokens=False)["input_ids"])
            costs = [frame + len(ids) for ids in self.tokenizer([t["content"] for t in history], add_special_tokens=False)["input_ids"]]  # fmt: skip
            excess, start = needed - budget, 0
            while start < len(history) and excess > 0:
                excess -= costs[start]
                start += 1
            history = history[start:]
            needed = self._count_tokens(build(text, history), media_tokens)
            while needed > budget and history:  # the estimate is exact for ChatML; this is a safety net
                history = history[1:]
                needed = self._count_tokens(build(text, history), media_tokens)
        if needed > budget and text:
            text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = max(0, len(text_ids) - (needed - budget))
            while True:
                trimmed = self.tokenizer.decode(text_ids[:keep]).strip()
                needed = self._count_tokens(build(trimmed, history), media_tokens)
                if needed <= budget or keep == 0:
                    break
                keep = max(0, keep - (needed - budget))
            text = trimmed
            logger.warning(f"Trimmed the text to {keep} of {len(text_ids)} tokens to fit max_length.")
        if needed > budget:
            raise ValueError(
                f"The prompt needs {needed} tokens without any subtitle or dialogue, {needed - budget} over the "
                f"budget of {budget} (max_length minus the answer)."
            )
        return build(text, history)

    def _check_candidates(self, spec, candidates, target) -> list[str]:
        if candidates is None:
            candidates = list(spec.default_candidates)
        elif not spec.uses_candidates:
            raise ValueError(f"task {spec.name!r} takes no candidate labels, got {candidates!r}.")
        elif not isinstance(candidates, (list, tuple)) or not candidates:
            raise ValueError(f"candidates must be a non-empty list of non-empty strings, got {candidates!r}.")
        if not all(isinstance(c, str) and c.strip() for c in candidates):
            raise ValueError(f"candidates must be a list of non-empty strings, got {candidates!r}.")
        cleaned = [self._clean_text(c, "candidate label") for c in candidates]
        if not all(cleaned):
            raise ValueError(f"candidates must be a list of non-empty strings, got {candidates!r}.")
        if len({c.lower() for c in cleaned}) != len(cleaned):
            raise ValueError(f"candidate labels repeat: {cleaned}.")
        if (
            target is not None
            and spec.name == "mir"
            and self._clean_text(target, "target").lower() not in {c.lower() for c in cleaned}
        ):
            raise ValueError(f"the target {target!r} is not among the candidate labels {cleaned}.")
        return cleaned

    def _check_history(self, history, task) -> list[dict]:
        if history is None:
            return []
        if task != "erg":
            raise ValueError(f"a dialogue history only applies to the 'erg' task, got task {task!r}.")
        if not isinstance(history, (list, tuple)):
            raise ValueError(f"history must be a list of turns, got {type(history).__name__}.")
        turns = []
        # The newest turns only: the rest would be trimmed anyway, and cleaning them would cost time.
        for turn in list(history)[-self.max_history_turns :]:
            if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
                raise ValueError(
                    f"history turns must be {{'role': 'user'|'assistant', 'content': str}}, got {turn!r}."
                )
            turns.append({"role": turn["role"], "content": self._clean_text(turn.get("content"), "history turn")})
        if len(history) > self.max_history_turns:
            logger.warning(f"Kept the newest {self.max_history_turns} of {len(history)} dialogue turns.")
        return turns

    # ---- text --------------------------------------------------------------------------------------------------

    def _clean_text(self, text, what: str) -> str:
        """User text as plain text: bytes decoded (invalid UTF-8 replaced), every special-token string removed —
        including ones that appear only once an inner one is removed (`<|emox_<|emox_video|>video|>`)."""
        if text is None:
            return ""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                logger.warning(f"The {what} is not valid UTF-8; undecodable bytes were replaced with U+FFFD.")
                text = bytes(text).decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise TypeError(f"The {what} must be a string or bytes, got {type(text).__name__}.")
        cleaned, removed = strip_special_tokens(text, self._special_strings())
        if removed:
            logger.warning(f"Removed special tokens {sorted(removed)} from the {what}.")
        return cleaned.strip()

    def _special_strings(self) -> tuple[str, ...]:
        tokens = set(self.tokenizer.all_special_tokens)
        tokens |= {t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special}
        tokens |= {self.placeholder(m) for m in MODALITY_ORDER} | {"<|im_start|>", "<|im_end|>"}
        return tuple(sorted(t for t in tokens if t))

    def batch_decode(self, sequences, skip_special_tokens: bool = True, **kwargs) -> list[str]:
        """Decodes generated ids (slice off the prompt first: `out[:, inputs["input_ids"].shape[1]:]`). Each answer
        is decoded whole, so what is still not valid UTF-8 (a character cut off by the token budget, stray bytes of
        an untrained model) is dropped rather than shown as U+FFFD."""
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)
        texts = [text.replace("\ufffd", "") for text in texts]
        if self.prompt_style == "authors":
            # The authors' answers end with "###" (conversation_video.py:279-280 cut there).
            texts = [text.split(AUTHORS_TARGET_END, 1)[0].strip() for text in texts]
        return texts

    def decode(self, token_ids, skip_special_tokens: bool = True, **kwargs) -> str:
        """One answer's ids as text, as [`batch_decode`] decodes them."""
        if isinstance(token_ids, torch.Tensor):
            token_ids = token_ids.tolist()
        return self.batch_decode([token_ids], skip_special_tokens=skip_special_tokens, **kwargs)[0]

    def push_to_hub(self, repo_id: str, **kwargs):
        """
        `ProcessorMixin.push_to_hub` that never uploads transformers' generic model card: with the project installed,
        the project's card (`modeling_nanoemox.hub_nanoemox.push_with_card`; an existing card on the Hub is kept);
        loaded as remote code without it, the processor's files only, leaving the Hub's README.md as it is.
        """
        try:
            from modeling_nanoemox.hub_nanoemox import push_with_card
        except ImportError:
            push_with_card = None
        if push_with_card is not None:
            return push_with_card(self, repo_id, **kwargs)
        import tempfile

        from transformers.utils.hub import hf_api

        repo_id = hf_api().create_repo(repo_id, private=kwargs.pop("private", None), token=kwargs.get("token"),
                                       exist_ok=True).repo_id  # fmt: skip
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)  # no README.md: ProcessorMixin writes none
            kwargs.pop("tags", None)
            kwargs.pop("max_shard_size", None)
            return self._upload_modified_files(folder, repo_id, files_timestamps={}, **kwargs)

    @staticmethod
    def split_chain_of_empathy(answer: str) -> tuple[str, str]:
        """Splits an ERG answer into `(chain of empathy, reply)`; the chain is empty when there is no `<think>`."""
        if "</think>" not in answer:
            return "", answer.strip()
        thinking, reply = answer.split("</think>", 1)
        return thinking.replace("<think>", "").strip(), reply.strip()


def strip_special_tokens(text: str, tokens) -> tuple[str, set[str]]:
    """
    Removes every occurrence of `tokens` from `text` until none remains, in one linear pass: characters go on a stack
    and a token is popped as soon as the stack ends with it, so a token that appears only once an inner one is gone
    (`<|emox_<|emox_video|>video|>`) goes too. Returns the text and the tokens removed.
    """
    by_last: dict[str, list[str]] = {}
    for token in tokens:
        by_last.setdefault(token[-1], []).append(token)
    if not any(char in by_last for char in text):
        return text, set()
    stack: list[str] = []
    removed: set[str] = set()
    for char in text:
        stack.append(char)
        for token in by_last.get(char, ()):
            size = len(token)
            if len(stack) >= size and "".join(stack[-size:]) == token:
                del stack[-size:]
                removed.add(token)
                break
    return "".join(stack), removed


def _has_audio_track(part: dict) -> bool:
    """Whether a video part's media is a file with an audio stream (frames, arrays and folders have none)."""
    value = next((part[k] for k in ("video", "url", "path") if part.get(k) is not None), None)
    if not isinstance(value, (str, os.PathLike)) or os.path.isdir(value):
        return False
    from .media_nanoemox import open_container

    with open_container(value) as container:
        return bool(container.streams.audio)


# ---- input layouts ---------------------------------------------------------------------------------------------------


def _is_frame(value) -> bool:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim in (2, 3)
    return _is_image(value)


def _is_image(value) -> bool:
    return type(value).__module__.startswith("PIL.")


def _is_audio_file(value) -> bool:
    return isinstance(value, (str, os.PathLike, bytes, bytearray))


def _is_modality_set(value) -> bool:
    return isinstance(value, (set, frozenset, tuple, list)) and all(isinstance(v, str) for v in value)


def _flatten_videos(videos) -> list:
    """Videos in prompt order: one video, a flat list of videos, or per prompt a list (None entries are skipped); a
    list of frames (2-D/3-D arrays, PIL images) is one video."""
    if videos is None:
        return []
    if not isinstance(videos, (list, tuple)):
        return [videos]
    if videos and all(_is_frame(v) for v in videos):
        return [list(videos)]
    flat = []
    for entry in videos:
        if entry is None:
            continue
        if isinstance(entry, (list, tuple)) and not (entry and all(_is_frame(v) for v in entry)):
            flat.extend(v for v in entry if v is not None)
        else:
            flat.append(entry)
    return flat


def _flatten_images(images) -> list:
    """Images as one-frame videos, in prompt order."""
    items = images if isinstance(images, (list, tuple)) else [images]
    flat = []
    for entry in items:
        if isinstance(entry, (list, tuple)):
            flat.extend(entry)
        elif entry is not None:
            flat.append(entry)
    return [v if isinstance(v, (str, os.PathLike)) else [np.asarray(v)] for v in flat]


def _flatten_audio(audio) -> list:
    """Audio inputs in prompt order: one input (a path, bytes, an array or `(waveform, rate)`), a list of them, or per
    prompt a list (None entries are skipped)."""
    if audio is None:
        return []
    if isinstance(audio, tuple) and len(audio) == 2 and isinstance(audio[1], (int, np.integer)):
        return [audio]
    if not isinstance(audio, list):
        return [audio]
    flat = []
    for entry in audio:
        if entry is None:
            continue
        if isinstance(entry, list):
            flat.extend(v for v in entry if v is not None)
        else:
            flat.append(entry)
    return flat


def _faces_per_video(faces, num_videos: int) -> list:
    if faces is None:
        return [None] * num_videos
    per_video = isinstance(faces, (list, tuple)) and len(faces) == num_videos and all(
        f is None or isinstance(f, (str, os.PathLike, list, tuple)) or (isinstance(f, np.ndarray) and f.ndim == 4)
        for f in faces
    )  # fmt: skip
    if per_video:
        return list(faces)
    if num_videos == 1:
        return [faces]
    raise ValueError(f"`faces` must have one entry per video ({num_videos}), got {type(faces).__name__}.")


# Saving writes `auto_map` and copies this file and its relative imports, so the folder loads with
# `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` where this package is not installed.
NanoEmoXProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["FACE_SOURCES", "NanoEmoXProcessor", "build_chat_template", "strip_special_tokens"]

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
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .face_detection_nanoemox import FaceDetector, build_face_detector
from .prompts_nanoemox import SYSTEM_PROMPT, TASK_NAMES, TASKS

logger = logging.get_logger(__name__)

MODALITY_ORDER = ("video", "face", "audio", "fusion")
# `face_source` codes: where each frame's face crop comes from.
FACE_SOURCES = ("none", "detected", "completed")
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
    # Passed by `ProcessorMixin.apply_chat_template` / pipelines; nothing to do with them here.
    "audio_from_video_indices": None,
    "return_mm_token_type_ids": False,
    "do_sample_frames": None,
}
# `__call__` options that `apply_chat_template` forwards to it rather than to the Jinja template.
_FORWARDED_OPTIONS = ("use_faces", "faces", "sampling_rate", "padding", "padding_side", "max_length", "truncation",
                      "return_face_info")  # fmt: skip


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
        face_detector (`str`, defaults to `"opencv-haar"`): detector name, see `FACE_DETECTORS`.
        face_detection_max_side (`int`, defaults to 320): frames are shrunk to this longest side for detection.
        face_margin (`float`, defaults to 0.25): margin around a face, as a fraction of its size on each side.
        max_frame_side (`int`, defaults to 1280): decoded frames are capped to this longest side (memory bound).
        max_length (`int`, defaults to 1024): token budget per sample, prompt and answer together.
        max_history_turns (`int`, defaults to 32): ERG dialogue turns kept at most (the newest).
        system_prompt (`str`): the default system message of the default chat template.
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
        face_detector: str = "opencv-haar",
        face_detection_max_side: int = 320,
        face_margin: float = 0.25,
        max_frame_side: int = 1280,
        max_length: int = 1024,
        max_history_turns: int = MAX_HISTORY_TURNS,
        system_prompt: str = SYSTEM_PROMPT,
        **kwargs,
    ):
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

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values_videos", "face_pixel_values", "audio_values"]

    @property
    def detector(self) -> FaceDetector:
        """The face detector, built once per thread (detectors hold native state that is neither picklable nor
        guaranteed thread-safe, and the processor itself must stay serialisable)."""
        kwargs = {"max_side": self.face_detection_max_side} if self.face_detector == "opencv-haar" else {}
        key = (self.face_detector, tuple(sorted(kwargs.items())))
        cache = _DETECTORS.__dict__.setdefault("by_key", {})
        if key not in cache:
            cache[key] = build_face_detector(self.face_detector, **kwargs)
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
        rate = self.feature_extractor.sampling_rate
        return self.feature_extractor(list(clips), sampling_rate=rate, return_tensors="np")["input_values"]

    def _prepare_faces(self, decoded, supplied_faces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face crops → `(pixel_values (T, 3, S, S), crop boxes (T, 4) in original pixels, detected (T,))`."""
        import cv2

        from .face_detection_nanoemox import crop_faces, track_main_face
        from .media_nanoemox import load_face_crops, sample_indices

        size = self.face_image_processor.size["height"]
        if supplied_faces is not None:
            crops = load_face_crops(supplied_faces)
            crops = crops[sample_indices(len(crops), self.num_frames)]
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
            # The caller cropped: the boxes cover the whole frame since where the face was is unknown.
            height, width = decoded.original_size
            boxes = np.tile(np.array([0, 0, width, height], np.float32), (self.num_frames, 1))
            detected = np.ones(self.num_frames, dtype=bool)
        else:
            detections = [self.detector.detect(frame) for frame in decoded.frames]
            face_crops = crop_faces(decoded.frames, track_main_face(detections), size, self.face_margin)
            crops, boxes, detected = face_crops.crops, face_crops.boxes * decoded.scale, face_crops.detected
        pixel_values = self.face_image_processor(list(crops), return_tensors="np")["pixel_values"]
        return pixel_values, boxes, detected

    @staticmethod
    def _face_info(crop_boxes: np.ndarray, detected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(face_boxes (T, 4), face_source (T,))` of a video's crops. For now the face box is the cropped region and
        the source says only whether the detector (or the caller) found the face there."""
        source = np.where(detected, FACE_SOURCES.index("detected"), FACE_SOURCES.index("none")).astype(np.int64)
        return crop_boxes.astype(np.float32), source

    def _prepare_frames(self, decoded) -> np.ndarray:
        import cv2

        # Shrinking with area averaging first makes CLIP's own resize cheap on HD frames.
        shortest = self.image_processor.size.get("shortest_edge") or min(self.image_processor.crop_size.values())
        height, width = decoded.frames.shape[1:3]
        factor = shortest / min(height, width)
        frames = decoded.frames
        if factor < 1:
            size = (max(shortest, round(width * factor)), max(shortest, round(height * factor)))
            frames = np.stack([cv2.resize(frame, size, interpolation=cv2.INTER_AREA) for frame in frames])
        return self.image_processor(list(frames), return_tensors="np")["pixel_values"]

    def _process_video(self, video, faces, use_faces: bool, load_audio_from_video: bool) -> _VideoItem:
        """One video → its item; a file without decodable frames gives no frames (and still its audio track)."""
        decoded = self._load_video(video)
        item = _VideoItem()
        if decoded is None:
            item.notes.append("the video has no decodable frames; continuing without video")
        else:
            item.pixel_values = self._prepare_frames(decoded)
            if use_faces:
                item.faces, item.crop_boxes, detected = self._prepare_faces(decoded, faces)
                item.face_boxes, item.face_source = self._face_info(item.crop_boxes, detected)
                if not detected.any():
                    item.notes.append("no face found in any frame; the face branch sees whole frames")
                elif not detected.all():
                    item.notes.append(f"no face found in {int((~detected).sum())} of {len(detected)} frames")
        if load_audio_from_video:
            if isinstance(video, (str, os.PathLike)) and os.path.isdir(video):
                item.notes.append("a folder of frames has no audio track; continuing without audio")
            elif isinstance(video, (str, os.PathLike, bytes, bytearray)):
                clips = self._load_audio(video, None)
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

    def _decode_media(self, video_items, audio_items, video_counts, audio_counts, options):
        from .media_nanoemox import MediaError

        faces = _faces_per_video(options["faces"], len(video_items))
        use_faces, from_video = options["use_faces"], options["load_audio_from_video"]
        # A sample's audio part takes precedence over its video's own track (which is then not read).
        has_audio_part = [bool(n) for n, v in zip(audio_counts, video_counts) for _ in range(v)]
        decoded_videos, decoded_audio = [], []
        for index, (video, crops) in enumerate(zip(video_items, faces)):
            try:
                track = from_video and not has_audio_part[index]
                decoded_videos.append(self._process_video(video, crops, use_faces, track))
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
        return super().apply_chat_template(
            cleaned if batched else cleaned[0],
            chat_template=chat_template,
            processor_kwargs=processor_kwargs,
            **kwargs,
        )

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
    ) -> list[dict]:
        """
        The standard messages of one of the six tasks (`TASK_NAMES`), for `apply_chat_template`.

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
            messages = [
                *current_history,
                {"role": "user", "content": [*parts, {"type": "text", "text": "\n".join(lines)}]},
            ]
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
        rendered = super().apply_chat_template(messages, add_generation_prompt=messages[-1]["role"] != "assistant")
        placeholders = rendered.count(self.video_token) + rendered.count(self.audio_token)
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
        """Decodes generated ids (slice off the prompt first: `out[:, inputs["input_ids"].shape[1]:]`)."""
        return self.tokenizer.batch_decode(sequences, skip_special_tokens=skip_special_tokens, **kwargs)

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

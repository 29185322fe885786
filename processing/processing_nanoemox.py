# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Processor for Nano-EmoX: raw video, audio and text in; frames, face crops, audio clips and chat-templated tokens out.

For each sample the processor
1. samples `num_frames` frames uniformly over the video (PyAV, seeking on long files) and applies CLIP's
   preprocessing;
2. finds the main face in every frame, crops it with a margin and applies ImageNet normalisation (a frame without a
   face contributes the whole frame and is flagged);
3. takes the audio (given, or the video's own track), downmixes to mono, resamples to 16 kHz and cuts
   `num_audio_clips` clips of `audio_clip_seconds`, each normalised by the feature extractor;
4. writes the prompt with the LLM's chat template: a system prompt, one placeholder per present modality (fusion when
   audio and video are both there) expanded to the model's token count, the subtitle / dialogue and the task's fixed
   instruction (or free chat `messages`);
5. tokenises, truncating the subtitle and the oldest dialogue turns first, pads (left for generation, right for
   training) and, given target answers, returns `labels` with everything but the answers masked to -100.
"""

import os
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin
from transformers.utils import logging

from .face_detection_nanoemox import FaceDetector, build_face_detector, crop_faces, track_main_face
from .media_nanoemox import (
    DecodedVideo,
    MediaDecodeError,
    MediaError,
    audio_duration,
    clip_spans,
    decode_audio,
    decode_frame_folder,
    decode_video,
    frames_from_array,
    load_face_crops,
    resample_mono,
    sample_indices,
    split_clips,
)
from .prompts_nanoemox import SYSTEM_PROMPT, TASKS

logger = logging.get_logger(__name__)

MODALITY_ORDER = ("video", "face", "audio", "fusion")
MODALITY_LABELS = {"video": "Video", "face": "Face", "audio": "Audio", "fusion": "Audio-visual"}
# Audio files longer than this are read clip by clip (seeking) instead of whole.
AUDIO_SEEK_THRESHOLD_SECONDS = 120.0
IGNORE_INDEX = -100
_DETECTORS = threading.local()


@dataclass
class _Sample:
    """Everything the processor derives for one sample before batching."""

    video: np.ndarray | None = None  # (T, 3, S, S)
    faces: np.ndarray | None = None  # (T, 3, S_f, S_f)
    face_boxes: np.ndarray | None = None  # (T, 4) original pixels
    face_detected: np.ndarray | None = None  # (T,)
    audio: np.ndarray | None = None  # (C, samples)
    notes: list[str] = field(default_factory=list)
    declared: tuple[str, ...] | None = None  # modalities stated by the caller instead of media (prompt-only mode)

    @property
    def present(self) -> list[str]:
        """Modalities among video / face / audio that the sample has."""
        if self.declared is not None:
            return [name for name in ("video", "face", "audio") if name in self.declared]
        return [
            name
            for name, value in (("video", self.video), ("face", self.faces), ("audio", self.audio))
            if value is not None
        ]

    @property
    def modalities(self) -> list[str]:
        """The present modalities plus fusion, which exists whenever both video and audio do."""
        present = self.present
        return present + ["fusion"] if {"video", "audio"} <= set(present) else present


class NanoEmoXProcessor(ProcessorMixin):
    r"""
    Builds Nano-EmoX inputs from raw media and text.

    Args:
        image_processor ([`CLIPImageProcessorPil`]): frame preprocessing (CLIP's resize, centre crop, normalisation).
        face_image_processor ([`CLIPImageProcessorPil`]): face-crop normalisation (ImageNet statistics).
        feature_extractor ([`Wav2Vec2FeatureExtractor`]): per-clip audio normalisation at 16 kHz.
        tokenizer: the language model's tokenizer carrying the named placeholders `video_token`, `audio_token`,
            `face_token` and `fusion_token` (see `modeling_nanoemox.add_modality_tokens`).
        chat_template (`str`, *optional*): the LLM's chat template; defaults to the tokenizer's.
        num_frames (`int`, defaults to 8): frames sampled per video.
        num_audio_clips (`int`, defaults to 8) and audio_clip_seconds (`float`, defaults to 2.0): audio windows.
        num_video_tokens, num_audio_tokens, num_face_tokens, num_fusion_tokens (`int`): placeholder expansion; must
            equal the model config's counts.
        face_detector (`str`, defaults to `"opencv-haar"`): detector name, see `FACE_DETECTORS`.
        face_detection_max_side (`int`, defaults to 320): frames are shrunk to this longest side for detection.
        face_margin (`float`, defaults to 0.25): margin around a face, as a fraction of its size on each side.
        max_frame_side (`int`, defaults to 1280): decoded frames are capped to this longest side (memory bound).
        max_length (`int`, defaults to 1024): token budget per sample, prompt and answer together.
        system_prompt (`str`): the system message of every prompt.
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
        self.system_prompt = system_prompt
        if chat_template is None and tokenizer is not None:
            chat_template = tokenizer.chat_template
        super().__init__(
            image_processor, face_image_processor, feature_extractor, tokenizer, chat_template=chat_template
        )
        missing = [m for m in MODALITY_ORDER if not getattr(tokenizer, f"{m}_token", None)]
        if missing:
            raise ValueError(
                f"The tokenizer has no placeholder token for {missing}; add them with "
                "`modeling_nanoemox.add_modality_tokens(tokenizer)` (from_components and create-tiny do)."
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

    # ---- small helpers -------------------------------------------------------------------------------------

    def placeholder(self, modality: str) -> str:
        """The placeholder string of a modality (one token; the processor repeats it `num_<modality>_tokens` times)."""
        return getattr(self.tokenizer, f"{modality}_token")

    def token_count(self, modality: str) -> int:
        return getattr(self, f"num_{modality}_tokens")

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

    @property
    def model_input_names(self) -> list[str]:
        return [
            "input_ids",
            "attention_mask",
            "pixel_values_videos",
            "video_mask",
            "face_pixel_values",
            "face_mask",
            "audio_values",
            "audio_mask",
        ]

    # ---- media ---------------------------------------------------------------------------------------------

    def _load_video(self, video) -> DecodedVideo | None:
        if isinstance(video, (str, os.PathLike)) and os.path.isdir(video):
            return decode_frame_folder(video, self.num_frames, self.max_frame_side)
        if isinstance(video, (str, os.PathLike, bytes, bytearray)):
            return decode_video(video, self.num_frames, self.max_frame_side)
        decoded = frames_from_array(video, self.max_frame_side)
        if len(decoded.frames) != self.num_frames:
            indices = sample_indices(len(decoded.frames), self.num_frames)
            decoded.frames, decoded.timestamps = decoded.frames[indices], decoded.timestamps[indices]
        return decoded

    def _load_audio(self, audio, sampling_rate: int | None) -> np.ndarray | None:
        """Any audio input → `(num_audio_clips, clip_samples)` raw 16 kHz clips, or None when a file has no audio."""
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
                    "An audio array needs its sampling rate: pass (waveform, sampling_rate) or `sampling_rate=`."
                )
            waveform = resample_mono(
                audio if isinstance(audio, np.ndarray) else np.asarray(audio), sampling_rate, target_rate
            )
        return split_clips(waveform, target_rate, self.num_audio_clips, self.audio_clip_seconds)

    def _prepare_faces(
        self, decoded: DecodedVideo | None, supplied_faces
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face crops → `(pixel_values (T, 3, S, S), boxes (T, 4) in original pixels, detected (T,))`."""
        import cv2

        size = self.face_image_processor.size["height"]
        if supplied_faces is not None:
            crops = load_face_crops(supplied_faces)
            crops = crops[sample_indices(len(crops), self.num_frames)]
            crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
            # The caller cropped: the boxes cover the whole frame (or crop) since where the face was is unknown.
            height, width = decoded.original_size if decoded is not None else crops.shape[1:3]
            boxes = np.tile(np.array([0, 0, width, height], np.float32), (self.num_frames, 1))
            detected = np.ones(self.num_frames, dtype=bool)
        else:
            detections = [self.detector.detect(frame) for frame in decoded.frames]
            face_crops = crop_faces(decoded.frames, track_main_face(detections), size, self.face_margin)
            crops, boxes, detected = face_crops.crops, face_crops.boxes * decoded.scale, face_crops.detected
        pixel_values = self.face_image_processor(list(crops), return_tensors="np")["pixel_values"]
        return pixel_values, boxes, detected

    def _prepare_frames(self, decoded: DecodedVideo) -> np.ndarray:
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

    def _process_media(self, video, audio, sampling_rate, faces, use_faces: bool) -> _Sample:
        sample = _Sample()
        decoded = self._load_video(video) if video is not None else None
        if video is not None and decoded is None:
            sample.notes.append("the video has no decodable frames; continuing without video")
        if decoded is None and faces is not None and use_faces:
            sample.faces, sample.face_boxes, sample.face_detected = self._prepare_faces(None, faces)
        if decoded is not None:
            sample.video = self._prepare_frames(decoded)
            if use_faces:
                sample.faces, sample.face_boxes, sample.face_detected = self._prepare_faces(decoded, faces)
                if not sample.face_detected.any():
                    sample.notes.append("no face found in any frame; the face branch sees whole frames")
                elif not sample.face_detected.all():
                    missing = int((~sample.face_detected).sum())
                    sample.notes.append(f"no face found in {missing} of {len(sample.face_detected)} frames")
        if audio is None and isinstance(video, (str, os.PathLike)) and os.path.isdir(video):
            sample.notes.append("no audio given for a folder of frames; continuing without audio")
        elif audio is None and isinstance(video, (str, os.PathLike, bytes, bytearray)):
            sample.audio = self._load_audio(video, None)
            if sample.audio is None:
                sample.notes.append("no audio given and the video has no audio track; continuing without audio")
        elif audio is not None:
            sample.audio = self._load_audio(audio, sampling_rate)
            if sample.audio is None:
                raise MediaDecodeError("The audio input has no audio stream.")
        if sample.audio is not None:
            if not np.any(sample.audio):
                sample.notes.append("the audio is silent")
            sample.audio = self.feature_extractor(
                list(sample.audio), sampling_rate=self.feature_extractor.sampling_rate, return_tensors="np"
            )["input_values"]
        return sample

    # ---- text ----------------------------------------------------------------------------------------------

    def _clean_text(self, text, what: str) -> str:
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
        # Special tokens typed by a user are text, not control tokens (a stray placeholder would misalign media).
        for token in self.tokenizer.all_special_tokens:
            if token and token in text:
                logger.warning(f"Removed the special token {token!r} from the {what}.")
                text = text.replace(token, "")
        return text.strip()

    def _media_block(self, modalities: list[str]) -> str:
        return "\n".join(f"{MODALITY_LABELS[m]}: {self.placeholder(m)}" for m in MODALITY_ORDER if m in modalities)

    def _task_messages(self, task: str, text: str, history: list[dict], candidates, modalities) -> list[dict]:
        spec = TASKS[task]
        lines = [self._media_block(modalities)] if modalities else []
        if text:
            label = {"mir": "Utterance", "erg": "Current input"}.get(task, "Subtitle")
            lines.append(f'{label}: "{text}"')
        if candidates:
            lines.append("Candidate labels: " + ", ".join(candidates) + ".")
        lines.append(spec.instruction)
        return [*history, {"role": "user", "content": "\n".join(lines)}]

    def _chat_messages(self, messages: list[dict], modalities: list[str]) -> list[dict]:
        """Free chat: typed media parts become placeholders; media without a part goes before the last user turn."""
        rendered, placed = [], set()
        for message in messages:
            if not isinstance(message, dict) or "role" not in message or "content" not in message:
                raise ValueError(f"Each message must be a dict with 'role' and 'content', got {message!r}.")
            content = message["content"]
            if isinstance(content, list):
                pieces = []
                for part in content:
                    kind = part.get("type") if isinstance(part, dict) else None
                    if kind == "text":
                        pieces.append(self._clean_text(part.get("text", ""), "message text"))
                    elif kind in MODALITY_ORDER:
                        if kind not in modalities:
                            raise ValueError(f"A message has a {kind} part but the sample has no {kind} input.")
                        pieces.append(self._media_block([kind]))
                        placed.add(kind)
                    else:
                        raise ValueError(f"Unknown message part {part!r}; expected type text/video/audio/face/fusion.")
                content = "\n".join(piece for piece in pieces if piece)
            else:
                content = self._clean_text(content, "message text")
            rendered.append({"role": message["role"], "content": content})
        remaining = [m for m in modalities if m not in placed]
        if remaining:
            user_turns = [i for i, m in enumerate(rendered) if m["role"] == "user"]
            if not user_turns:
                raise ValueError("Free-chat `messages` need at least one user message.")
            last = user_turns[-1]
            block = self._media_block(remaining)
            rendered[last] = {**rendered[last], "content": f"{block}\n{rendered[last]['content']}".strip()}
        return rendered

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        conversation = [{"role": "system", "content": self.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(
            conversation, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _expand(self, prompt: str) -> str:
        for modality in MODALITY_ORDER:
            token = self.placeholder(modality)
            prompt = prompt.replace(token, token * self.token_count(modality))
        return prompt

    def _encode(self, messages: list[dict]) -> list[int]:
        return self.tokenizer(self._expand(self._render(messages, True)), add_special_tokens=False)["input_ids"]

    def _fit(self, build, text: str, history: list[dict], budget: int) -> list[int]:
        """Tokenises `build(text, history)`, dropping the oldest dialogue turns then trimming the text to fit."""
        ids = build(text, history)
        while len(ids) > budget and history:
            history = history[1:]
            ids = build(text, history)
        if len(ids) > budget and text:
            text_ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            keep = max(0, len(text_ids) - (len(ids) - budget))
            while True:
                trimmed = self.tokenizer.decode(text_ids[:keep]).strip()
                ids = build(trimmed, history)
                if len(ids) <= budget or keep == 0:
                    break
                keep = max(0, keep - (len(ids) - budget))
            logger.warning(f"Trimmed the text to {keep} of {len(text_ids)} tokens to fit max_length.")
        if len(ids) > budget:
            raise ValueError(
                f"The prompt needs {len(ids)} tokens without any subtitle or dialogue, {len(ids) - budget} over the "
                f"budget of {budget} (max_length minus the answer)."
            )
        return ids

    # ---- main entry point ----------------------------------------------------------------------------------

    def __call__(
        self,
        videos=None,
        audio=None,
        text=None,
        task=None,
        history=None,
        candidates=None,
        messages=None,
        targets=None,
        faces=None,
        modalities=None,
        sampling_rate: int | None = None,
        use_faces: bool = True,
        padding_side: str | None = None,
        max_length: int | None = None,
        return_tensors: str = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            videos: per sample a video path, a folder of frame images, the file's bytes, an array
                `(num_frames, H, W, 3)` or a list of frames, or `None`; a list of those for a batch.
            audio: per sample a path, bytes, `(waveform, sampling_rate)`, or a waveform with `sampling_rate=`; `None`
                uses the video's own audio track when it has one.
            text: subtitle / utterance (ERG: the user's current input), `str` or bytes.
            task: one of `msa`, `mer`, `ovmer`, `mir`, `eri`, `erg` (the prompts of `prompts_nanoemox.TASKS`).
            history: ERG dialogue so far, a list of `{"role": "user" | "assistant", "content": str}`.
            candidates: labels to choose from (MER, MIR); defaults to the task's standard set.
            messages: free chat instead of a task: a list of `{"role", "content"}` where content is text or a list
                of parts (`{"type": "text", "text": …}`, `{"type": "video"}`, …).
            targets: answers for training; turns on right padding and `labels`.
            faces: face crops supplied by the caller (e.g. OpenFace), per sample an array or list of crops; skips
                detection.
            modalities: prompt-only mode, for callers that bring encoded media themselves (a feature cache): per sample
                the modalities present (among `video`, `face`, `audio`); the prompt gets their placeholders and the
                output their masks, but no media is decoded and no media tensor returned.
            use_faces: set False to leave the face branch out.
            padding_side: `"left"` (default for generation) or `"right"` (default with `targets`).
            max_length: token budget per sample (defaults to `self.max_length`).

        Returns:
            [`BatchFeature`] with `input_ids`, `attention_mask`, (`labels`), and for the modalities present in the
            batch `pixel_values_videos` `(B, T, 3, S, S)` + `video_mask` `(B,)`, `face_pixel_values`
            `(B, T, 3, S_f, S_f)` + `face_mask` + `face_boxes` `(B, T, 4)` (x, y, w, h in original frame pixels) +
            `face_detected` `(B, T)`, `audio_values` `(B, C, samples)` + `audio_mask`.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        batch = _batch_size(videos=videos, audio=audio, text=text, task=task, history=history, candidates=candidates,
                            messages=messages, targets=targets, faces=faces)  # fmt: skip
        videos, audio, faces = _per_sample(videos, batch, _is_media_batch), _per_sample(audio, batch, _is_audio_batch), _per_sample(faces, batch, _is_media_batch)  # fmt: skip
        texts, tasks, targets = _per_sample(text, batch, _is_list), _per_sample(task, batch, _is_list), _per_sample(targets, batch, _is_list)  # fmt: skip
        histories = _per_sample(history, batch, _is_nested_list)
        candidate_sets = _per_sample(candidates, batch, _is_nested_list)
        message_sets = _per_sample(messages, batch, _is_nested_list)
        declared = _per_sample(modalities, batch, _is_nested_list)
        if padding_side is None:
            padding_side = "right" if targets[0] is not None else "left"
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        max_length = max_length or self.max_length

        samples, all_ids, all_labels = [], [], []
        for index in range(batch):
            if declared[index] is not None:
                if any(value is not None for value in (videos[index], audio[index], faces[index])):
                    raise ValueError(f"sample {index}: pass media or `modalities`, not both.")
                unknown = set(declared[index]) - {"video", "face", "audio"}
                if unknown:
                    raise ValueError(f"sample {index}: unknown modalities {sorted(unknown)}; use video/face/audio.")
                sample = _Sample(declared=tuple(declared[index]))
            else:
                try:
                    sample = self._process_media(videos[index], audio[index], sampling_rate, faces[index], use_faces)
                except MediaError as error:
                    raise type(error)(f"sample {index}: {error}") from None
            samples.append(sample)
            ids, labels = self._tokenize_sample(
                sample.modalities, texts[index], tasks[index], histories[index], candidate_sets[index],
                message_sets[index], targets[index], max_length, index,
            )  # fmt: skip
            all_ids.append(ids)
            all_labels.append(labels)
        # One warning per kind of fallback for the whole batch, naming the samples it concerns.
        notes: dict[str, list[int]] = {}
        for index, sample in enumerate(samples):
            for note in sample.notes:
                notes.setdefault(note, []).append(index)
        for note, indices in notes.items():
            where = f"sample {indices[0]}" if len(indices) == 1 else f"samples {indices}"
            logger.warning(f"{where}: {note}.")
        return self._collate(
            samples, all_ids, all_labels if targets[0] is not None else None, padding_side, return_tensors
        )

    def _tokenize_sample(self, modalities, text, task, history, candidates, messages, target, max_length, index):
        if messages is not None and task is not None:
            raise ValueError(f"sample {index}: pass either a task or free-chat messages, not both.")
        answer_ids = []
        if target is not None:
            answer = self._clean_text(target, "target")
            answer_ids = self.tokenizer(answer + self.tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        budget = max_length - len(answer_ids)
        if messages is not None:
            ids = self._encode(self._chat_messages(messages, modalities))
            if len(ids) > budget:
                raise ValueError(f"sample {index}: the chat needs {len(ids)} tokens, {len(ids) - budget} over budget.")
        else:
            if task is None:
                raise ValueError(f"sample {index}: pass a task (one of {sorted(TASKS)}) or free-chat messages.")
            if task not in TASKS:
                raise ValueError(f"sample {index}: unknown task {task!r}; expected one of {sorted(TASKS)}.")
            spec = TASKS[task]
            candidates = self._check_candidates(spec, candidates, target, index)
            history = self._check_history(history, task, index)
            text = self._clean_text(text, "text")

            def build(current_text, current_history):
                return self._encode(self._task_messages(task, current_text, current_history, candidates, modalities))

            ids = self._fit(build, text, history, budget)
        labels = [IGNORE_INDEX] * len(ids) + answer_ids
        return ids + answer_ids, labels

    def _check_candidates(self, spec, candidates, target, index) -> list[str]:
        if candidates is None:
            candidates = list(spec.default_candidates)
        elif not spec.uses_candidates:
            raise ValueError(f"sample {index}: task {spec.name!r} takes no candidate labels, got {candidates!r}.")
        if not isinstance(candidates, (list, tuple)) or not all(isinstance(c, str) and c.strip() for c in candidates):
            raise ValueError(f"sample {index}: candidates must be a list of non-empty strings, got {candidates!r}.")
        cleaned = [self._clean_text(c, "candidate label") for c in candidates]
        if len({c.lower() for c in cleaned}) != len(cleaned):
            raise ValueError(f"sample {index}: candidate labels repeat: {cleaned}.")
        if (
            target is not None
            and spec.name == "mir"
            and self._clean_text(target, "target").lower() not in {c.lower() for c in cleaned}
        ):
            raise ValueError(f"sample {index}: the target {target!r} is not among the candidate labels {cleaned}.")
        return cleaned

    def _check_history(self, history, task, index) -> list[dict]:
        if history is None:
            return []
        if task != "erg":
            raise ValueError(f"sample {index}: a dialogue history only applies to the 'erg' task, got task {task!r}.")
        turns = []
        for turn in history:
            if not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant"):
                raise ValueError(
                    f"sample {index}: history turns must be {{'role': 'user'|'assistant', 'content': str}}, got {turn!r}."
                )
            turns.append({"role": turn["role"], "content": self._clean_text(turn.get("content"), "history turn")})
        return turns

    def _collate(self, samples, all_ids, all_labels, padding_side, return_tensors) -> BatchFeature:
        batch = len(samples)
        length = max(len(ids) for ids in all_ids)
        pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        input_ids = np.full((batch, length), pad_id, np.int64)
        attention_mask = np.zeros((batch, length), np.int64)
        labels = np.full((batch, length), IGNORE_INDEX, np.int64)
        for row, ids in enumerate(all_ids):
            span = slice(length - len(ids), length) if padding_side == "left" else slice(0, len(ids))
            input_ids[row, span] = ids
            attention_mask[row, span] = 1
            if all_labels is not None:
                labels[row, span] = all_labels[row]
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        if all_labels is not None:
            data["labels"] = labels
        for key, attribute, mask_key, modality in (
            ("pixel_values_videos", "video", "video_mask", "video"),
            ("face_pixel_values", "faces", "face_mask", "face"),
            ("audio_values", "audio", "audio_mask", "audio"),
        ):
            present = [modality in s.present for s in samples]
            if not any(present):
                continue
            data[mask_key] = np.asarray(present)
            if any(s.declared is not None for s in samples):
                continue  # prompt-only: the caller supplies the encoded media
            reference = next(getattr(s, attribute) for s in samples if getattr(s, attribute) is not None)
            stacked = np.zeros((batch, *reference.shape), np.float32)
            for row, sample in enumerate(samples):
                if present[row]:
                    stacked[row] = getattr(sample, attribute)
            data[key] = stacked
            if attribute == "faces":
                boxes = np.zeros((batch, self.num_frames, 4), np.float32)
                detected = np.zeros((batch, self.num_frames), bool)
                for row, sample in enumerate(samples):
                    if present[row]:
                        boxes[row], detected[row] = sample.face_boxes, sample.face_detected
                data["face_boxes"], data["face_detected"] = boxes, detected
        return BatchFeature(data=data, tensor_type=return_tensors)

    # ---- chat template and decoding ------------------------------------------------------------------------

    def apply_chat_template(
        self,
        conversation: list[dict],
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        return_dict: bool = False,
        **kwargs,
    ):
        """
        Renders free-chat `conversation` with the chat template (placeholders not yet expanded) or, with
        `tokenize=True`, returns model inputs; media come from the parts (`{"type": "video", "video": path}`,
        `{"type": "audio", "audio": path}`) or from `videos=` / `audio=` keyword arguments.
        """
        if tokenize:
            if not add_generation_prompt:
                raise ValueError(
                    "Tokenised chat prompts end with the assistant's turn: pass add_generation_prompt=True."
                )
            parts = [p for m in conversation if isinstance(m.get("content"), list) for p in m["content"]]
            media = {kind: next((p.get(kind) or p.get("path") for p in parts if p.get("type") == kind), None)
                     for kind in ("video", "audio")}  # fmt: skip
            inputs = self(
                videos=kwargs.pop("videos", media["video"]),
                audio=kwargs.pop("audio", media["audio"]),
                messages=conversation,
                **kwargs,
            )
            return inputs if return_dict else inputs["input_ids"]
        modalities = [p["type"] for m in conversation if isinstance(m.get("content"), list) for p in m["content"]
                      if isinstance(p, dict) and p.get("type") in MODALITY_ORDER]  # fmt: skip
        rendered = self._chat_messages(conversation, modalities)
        template = chat_template or self.chat_template
        return self.tokenizer.apply_chat_template(
            [{"role": "system", "content": self.system_prompt}, *rendered],
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )

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


# ---- batching rules ------------------------------------------------------------------------------------------


def _is_list(value) -> bool:
    return isinstance(value, list)


def _is_nested_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(v is None or isinstance(v, (list, tuple)) for v in value)


def _is_media_batch(value) -> bool:
    # A list of paths/bytes/None or of whole clips (4-D arrays, lists of frames) is a batch; a list of 3-D frames
    # is one clip.
    if not isinstance(value, list) or not value:
        return False
    return all(
        v is None
        or isinstance(v, (str, os.PathLike, bytes, bytearray, list, tuple))
        or (isinstance(v, np.ndarray) and v.ndim == 4)
        or (isinstance(v, torch.Tensor) and v.ndim == 4)
        for v in value
    )


def _is_audio_batch(value) -> bool:
    return isinstance(value, list)


_BATCH_RULES = {
    "videos": _is_media_batch,
    "audio": _is_audio_batch,
    "faces": _is_media_batch,
    "text": _is_list,
    "task": _is_list,
    "targets": _is_list,
    "history": _is_nested_list,
    "candidates": _is_nested_list,
    "messages": _is_nested_list,
}


def _batch_size(**inputs) -> int:
    sizes = {name: len(value) for name, value in inputs.items() if _BATCH_RULES[name](value)}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Batched inputs disagree on the batch size: {sizes}.")
    size = next(iter(sizes.values()), 1)
    if size == 0:
        raise ValueError("Got an empty batch.")
    return size


def _per_sample(value, batch: int, is_batch) -> list:
    return list(value) if is_batch(value) else [value] * batch


# Saving writes `auto_map` and copies this file and its relative imports, so the folder loads with
# `AutoProcessor.from_pretrained(dir, trust_remote_code=True)` where this package is not installed.
NanoEmoXProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["NanoEmoXProcessor"]

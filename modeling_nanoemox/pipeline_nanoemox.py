# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""The `nanoemox` pipeline: one clip and a task in; the answer, the face track and the fusion gates out.

Saved next to the model (`config.json` → `custom_pipelines`), so it loads with remote code and, unlike transformers'
`any-to-any` pipeline, needs no torchvision. `nanoemox predict` and the demo run through it.

```python
from transformers import pipeline

pipe = pipeline(model="path/or/hub-id", trust_remote_code=True)  # the folder's only custom task: "nanoemox"
pipe("clip.mp4", task="mer")
# {"task": "mer", "answer": "The most likely label is happy.", "modalities": ["video", "face", "audio"],
#  "face_boxes": [[x, y, w, h], ...], "crop_boxes": [...], "face_source": ["detected", ...],
#  "fusion_gate_weights": [0.3, 0.4, 0.3], "timings": {...}}
pipe({"video": "clip.mp4", "task": "erg", "text": "I lost my job today", "history": [...]})
pipe([{"role": "user", "content": [{"type": "video", "video": "clip.mp4"}, {"type": "text", "text": "Why?"}]}])
```

This file is shipped with the model, so it imports nothing from the project (only torch and transformers).
"""

import time
import unicodedata

import torch
from transformers import GenerationConfig, Pipeline
from transformers.utils import logging

logger = logging.get_logger(__name__)

# The processor's `face_source` codes (`nanoemox_processing.FACE_SOURCES`; a test keeps the two equal).
FACE_SOURCES = ("none", "detected", "completed")
FACE_INFO = ("face_boxes", "crop_boxes", "face_source")
TASK_INPUTS = ("video", "audio", "text", "history", "candidates", "faces")
MEDIA = (("video", "pixel_values_videos"), ("face", "face_pixel_values"), ("audio", "audio_values"))


def generate_with_fusion_gates(model, inputs, **generate_kwargs) -> tuple[torch.LongTensor, torch.Tensor | None]:
    """
    `model.generate(**inputs, **generate_kwargs)` that also returns the prompt's fusion gate weights, without encoding
    anything twice: `model(...)` encodes the prompt minus its last token once (media included; its output carries
    `fusion_gate_weights`), and `generate` continues from that KV cache with the last token. The last prompt token
    ends the assistant header, so it is never a placeholder and `generate` needs no media.

    Args:
        inputs: the processor's output (`input_ids`, `attention_mask` and media tensors) on the model's device.

    Returns:
        `(sequences (B, L + new), fusion_gate_weights (B, num_fusion_experts) or None)`; `sequences` are the tokens
        plain `model.generate(**inputs, **generate_kwargs)` gives.
    """
    inputs = dict(inputs)
    input_ids, attention_mask = inputs.pop("input_ids"), inputs.pop("attention_mask", None)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    # Positions as `generate` derives them from the mask (left padding counts from each row's first real token).
    position_ids = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    with torch.inference_mode():
        prefill = model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=position_ids[:, :-1],
            use_cache=True,
            logits_to_keep=1,
            **inputs,
        )
        # transformers 5.24 renamed `past_key_values` → `cache`; the model speaks the installed version's name.
        cache_name = "cache" if "cache" in prefill else "past_key_values"
        sequences = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, **{cache_name: prefill[cache_name]}, **generate_kwargs
        )
    return sequences, prefill.fusion_gate_weights


def generation_budget(model, prompt_length: int, max_new_tokens: int) -> int:
    """`max_new_tokens`, clamped (with a warning) so the prompt plus the answer fit the LLM's context length."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    text_config = getattr(model.config, "text_config", model.config)
    context = getattr(text_config, "max_position_embeddings", None)
    if not context:
        return max_new_tokens
    room = context - prompt_length
    if room < 1:
        raise ValueError(f"The prompt takes {prompt_length} tokens: no room left in the {context}-token context.")
    if max_new_tokens > room:
        logger.warning(
            f"max_new_tokens {max_new_tokens} goes past the {context}-token context ({prompt_length} in the prompt); "
            f"generating at most {room}."
        )
        return room
    return max_new_tokens


def decode_answer(tokenizer, token_ids) -> str:
    """
    The generated ids as text, decoded all at once (byte-level pieces decoded alone would each be invalid UTF-8).
    What still is not valid UTF-8 — a character cut off by the token budget, stray bytes of an untrained model — is
    dropped rather than shown as U+FFFD, and so are control characters other than newline and tab.
    """
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    return "".join(c for c in text if c != "\ufffd" and (c in "\n\t" or unicodedata.category(c) != "Cc")).strip()


class NanoEmoXPipeline(Pipeline):
    """
    Answers one of the six Nano-EmoX tasks (or a free-chat conversation) for one clip.

    Call with a video (path, folder of frames, array) and `task=` (`msa`, `mer`, `ovmer`, `mir`, `eri`, `erg`) plus
    the task's `text` / `history` / `candidates` (and `audio`, `faces`); or with a dict holding those keys; or with a
    conversation (a list of `{"role", "content"}` messages with `{"type": "video", "video": …}` parts). The video's
    own audio track is used unless `audio=` is given or `load_audio_from_video=False`. Generation parameters
    (`max_new_tokens`, `do_sample`, …) go to `generate`; decoding is greedy unless asked otherwise.

    Returns a dict: `task` (`None` for a conversation), `answer` (ERG also `chain_of_empathy` and `reply`),
    `modalities` (what the model saw, among `video`, `face`, `audio`), `face_boxes` (per frame the face's x, y, w, h in
    original-frame pixels), `crop_boxes` (the regions the face encoder saw), `face_source` (per frame `detected`,
    `completed` or `none`), `fusion_gate_weights` (one per expert; `None` without both audio and video) and `timings`
    in seconds.
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False
    _pipeline_calls_generate = True
    _default_generation_config = GenerationConfig(max_new_tokens=128)

    def _sanitize_parameters(self, max_new_tokens=None, generate_kwargs=None, load_audio_from_video=None, **kwargs):
        unknown = sorted(set(kwargs) - {"task", *TASK_INPUTS})
        if unknown:
            raise TypeError(
                f"Unexpected arguments {unknown}; expected task, {', '.join(TASK_INPUTS)}, load_audio_from_video, "
                "max_new_tokens, generate_kwargs."
            )
        preprocess = dict(kwargs)
        if load_audio_from_video is not None:
            preprocess["load_audio_from_video"] = load_audio_from_video
        forward = dict(generate_kwargs or {})
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        return preprocess, forward, {}

    def preprocess(self, inputs, task=None, load_audio_from_video=True, **task_inputs):
        start = time.perf_counter()
        options = {"load_audio_from_video": load_audio_from_video, "return_face_info": True, "return_tensors": "pt"}
        messages = getattr(inputs, "messages", inputs)  # `Pipeline.__call__` wraps a conversation in a `Chat`
        if (
            isinstance(messages, (list, tuple))
            and messages
            and isinstance(messages[0], dict)
            and "role" in messages[0]
        ):
            if task is not None or task_inputs:
                raise ValueError("Pass a conversation, or a clip with task=…, not both.")
            continue_final = messages[-1]["role"] == "assistant"
            model_inputs = self.processor.apply_chat_template(
                list(messages),
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                tokenize=True,
                return_dict=True,
                **options,
            )
        else:
            if isinstance(inputs, dict):
                unknown = sorted(set(inputs) - {"task", *TASK_INPUTS})
                if unknown:
                    raise ValueError(f"Unknown input keys {unknown}; expected task, {', '.join(TASK_INPUTS)}.")
                task_inputs = {**task_inputs, **{k: v for k, v in inputs.items() if k != "task"}}
                task = inputs.get("task", task)
            elif inputs is not None:
                task_inputs["video"] = inputs
            if task is None:
                raise ValueError(
                    "Pass task= (one of msa, mer, ovmer, mir, eri, erg) with the clip, or a conversation."
                )
            model_inputs = self.processor.prepare_task(task, **task_inputs, **options)
        face_info = {key: model_inputs.pop(key) for key in FACE_INFO if key in model_inputs}
        model_inputs = model_inputs.to(dtype=self.dtype)  # media follow the model's dtype (ids stay integers)
        return {
            "model_inputs": dict(model_inputs),
            "face_info": face_info,
            "task": task,
            "preprocess_s": time.perf_counter() - start,
        }

    def _forward(self, model_inputs, **generate_kwargs):
        start = time.perf_counter()
        inputs = model_inputs["model_inputs"]  # already on the model's device (`Pipeline.forward`)
        # The prompt style's own stopping rule (the authors' style stops on "###") unless the caller sets one.
        generate_kwargs = {**self.processor.generation_kwargs(), **self._prepare_generate_kwargs(generate_kwargs)}
        generate_kwargs.setdefault("do_sample", False)
        if generate_kwargs.get("max_new_tokens") is not None:
            prompt_length = inputs["input_ids"].shape[1]
            generate_kwargs["max_new_tokens"] = generation_budget(
                self.model, prompt_length, generate_kwargs["max_new_tokens"]
            )
        sequences, gates = generate_with_fusion_gates(self.model, inputs, **generate_kwargs)
        return {
            "task": model_inputs["task"],
            "face_info": model_inputs["face_info"],
            "modalities": [name for name, key in MEDIA if key in inputs],
            "new_tokens": sequences[:, inputs["input_ids"].shape[1] :],
            "fusion_gate_weights": None if gates is None else gates.float(),
            "preprocess_s": model_inputs["preprocess_s"],
            "generate_s": time.perf_counter() - start,
        }

    def postprocess(self, model_outputs):
        answer = decode_answer(self.processor.tokenizer, model_outputs["new_tokens"][0])
        result = {"task": model_outputs["task"], "answer": answer}
        if model_outputs["task"] == "erg":
            result["chain_of_empathy"], result["reply"] = self.processor.split_chain_of_empathy(answer)
        result["modalities"] = model_outputs["modalities"]
        face_info = model_outputs["face_info"]
        if face_info.get("face_boxes") is not None and len(face_info["face_boxes"]):
            result["face_boxes"] = [[round(v, 1) for v in box] for box in face_info["face_boxes"][0].tolist()]
            result["crop_boxes"] = [[round(v, 1) for v in box] for box in face_info["crop_boxes"][0].tolist()]
            result["face_source"] = [FACE_SOURCES[code] for code in face_info["face_source"][0].tolist()]
        gates = model_outputs["fusion_gate_weights"]
        has_gates = gates is not None and bool(gates[0].abs().sum() > 0)
        result["fusion_gate_weights"] = [round(v, 4) for v in gates[0].tolist()] if has_gates else None
        result["timings"] = {
            "preprocess_s": round(model_outputs["preprocess_s"], 4),
            "generate_s": round(model_outputs["generate_s"], 4),
        }
        return result

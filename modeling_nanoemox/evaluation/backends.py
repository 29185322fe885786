# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Pluggable chat LLM backends for the ERI judge and the free-text label extractor.

A backend turns chat messages (`[{"role": "user", "content": "..."}]`) into the reply text, deterministically where
the backend allows it (temperature 0 / greedy). Its `identity` string names the model and where it ran; the scorer
records it next to every score that depends on it. Two backends ship:

- [`OpenAIChatBackend`]: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server, ...),
  over plain HTTP with the standard library.
- [`TransformersChatBackend`]: a local `AutoModelForCausalLM` with its chat template, greedy decoding.

To plug in something else, subclass [`ChatBackend`] and implement `chat` (and `identity`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence

from transformers.utils import logging

logger = logging.get_logger(__name__)

Messages = list[dict[str, str]]


class BackendError(RuntimeError):
    """The backend could not produce a reply (network failure, HTTP error, malformed response)."""


class ChatBackend(ABC):
    """One chat LLM. Subclasses set `identity` and implement [`chat`]."""

    identity: str = "unnamed-backend"

    @abstractmethod
    def chat(self, messages: Messages, *, max_new_tokens: int = 256) -> str:
        """The assistant's reply to `messages`."""

    def chat_batch(self, batch: Sequence[Messages], *, max_new_tokens: int = 256) -> list[str]:
        """Replies to several conversations; backends that can batch override this."""
        return [self.chat(messages, max_new_tokens=max_new_tokens) for messages in batch]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


class OpenAIChatBackend(ChatBackend):
    """An OpenAI-compatible chat-completions endpoint.

    Args:
        model: model name sent in the request.
        base_url: API root, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`. Default: the
            `OPENAI_BASE_URL` environment variable, else `https://api.openai.com/v1`.
        api_key: bearer token. Default: the environment variable named by `api_key_env` (unset is fine for local
            servers that need no key). The key is never part of `identity`.
        api_key_env: where to read the key from when `api_key` is not given.
        timeout: seconds per HTTP request.
        max_retries: retries on HTTP 429 / 5xx and connection errors, with exponential back-off.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        temperature: float = 0.0,
    ):
        if not model:
            raise ValueError("OpenAIChatBackend needs a model name, got an empty string")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        if not urllib.parse.urlparse(self.base_url).scheme.startswith("http"):
            raise ValueError(f"base_url must be an http(s) URL, got {self.base_url!r}")
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.identity = f"openai-compatible:{model}@{self.base_url}"

    def chat(self, messages: Messages, *, max_new_tokens: int = 256) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": max_new_tokens,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read().decode("utf-8"))
                break
            except urllib.error.HTTPError as error:
                retriable = error.code == 429 or error.code >= 500
                if not retriable or attempt == self.max_retries:
                    detail = error.read().decode("utf-8", "replace")[:200]
                    raise BackendError(f"{url} answered HTTP {error.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
                if attempt == self.max_retries:
                    raise BackendError(f"Could not reach {url}: {error}") from None
            except json.JSONDecodeError as error:
                raise BackendError(f"{url} did not answer JSON: {error}") from None
            delay = 2.0**attempt
            logger.warning("%s failed (attempt %d), retrying in %.0f s", url, attempt + 1, delay)
            time.sleep(delay)
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{url} answered without choices[0].message.content: {str(payload)[:200]}") from None
        return content or ""


class TransformersChatBackend(ChatBackend):
    """A local causal LM with a chat template, decoded greedily.

    Pass either `model_name_or_path` (loaded with `AutoTokenizer` / `AutoModelForCausalLM`) or ready `model` and
    `tokenizer` objects. `identity` is `transformers:<name_or_path>` plus the hub commit when known.
    """

    def __init__(
        self,
        model_name_or_path: str | None = None,
        *,
        model=None,
        tokenizer=None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        **from_pretrained_kwargs,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if model is None:
            if not model_name_or_path:
                raise ValueError("TransformersChatBackend needs model_name_or_path or a model object")
            model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=dtype, **from_pretrained_kwargs)
        if tokenizer is None:
            source = model_name_or_path or getattr(model, "name_or_path", None)
            if not source:
                raise ValueError("Pass a tokenizer when the model object has no name_or_path")
            tokenizer = AutoTokenizer.from_pretrained(source)
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(f"The tokenizer of {model_name_or_path or model.name_or_path!r} has no chat template")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        name = model_name_or_path or getattr(model, "name_or_path", "") or type(model).__name__
        commit = getattr(model.config, "_commit_hash", None)
        self.identity = f"transformers:{name}" + (f"@{commit}" if commit else "")

    def chat(self, messages: Messages, *, max_new_tokens: int = 256) -> str:
        return self.chat_batch([messages], max_new_tokens=max_new_tokens)[0]

    def chat_batch(self, batch: Sequence[Messages], *, max_new_tokens: int = 256) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        replies: list[str] = []
        for start in range(0, len(batch), self.batch_size):
            prompts = [
                tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                for messages in batch[start : start + self.batch_size]
            ]
            # Left padding keeps every prompt's last token at the end, where generation continues.
            encoded = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
            width = max(len(ids) for ids in encoded)
            input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, ids in enumerate(encoded):
                input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, width - len(ids) :] = 1
            with torch.no_grad():
                output = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=attention_mask.to(self.device),
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad_id,
                )
            for row in output[:, width:]:
                replies.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        return replies


def build_backend(
    kind: str,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
) -> ChatBackend:
    """A backend from command-line style settings: `kind` is `"openai"` or `"transformers"`."""
    if kind == "openai":
        model = model or os.environ.get("NANOEMOX_LLM_MODEL")
        if not model:
            raise ValueError("The openai backend needs a model name (--*-model or NANOEMOX_LLM_MODEL)")
        return OpenAIChatBackend(model, base_url=base_url, api_key_env=api_key_env)
    if kind == "transformers":
        if not model:
            raise ValueError("The transformers backend needs a model folder or hub id (--*-model)")
        return TransformersChatBackend(model)
    raise ValueError(f"Unknown LLM backend {kind!r}; expected 'openai' or 'transformers'")

# Copyright 2026 The Nano-EmoX project authors. Licensed under the Apache License, Version 2.0.
"""Pluggable chat LLM backends for the ERI judge and the free-text label extractor.

A backend turns chat messages (`[{"role": "user", "content": "..."}]`) into the reply text, deterministically where
the backend allows it (temperature 0 / greedy). Its `identity` string names the model and where it ran; the scorer
records it next to every score that depends on it. Two backends ship:

- [`OpenAIChatBackend`]: any OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM, llama.cpp server, ...),
  over HTTP(S) with the standard library: an overall deadline, a body size cap, typed errors, no credentials sent
  across origins. (The `openai` client would add a dependency and still read whole bodies with per-read timeouts.)
- [`TransformersChatBackend`]: a local `AutoModelForCausalLM` with its chat template, greedy decoding.

To plug in something else, subclass [`ChatBackend`] and implement `chat` (and `identity`).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence

from transformers.utils import logging

logger = logging.get_logger(__name__)

Messages = list[dict[str, str]]


class BackendError(RuntimeError):
    """The backend could not produce a reply (network failure, HTTP error, malformed response)."""


class BackendTimeoutError(BackendError, TimeoutError):
    """The call's overall deadline passed (slow or stalled server), retries included."""


class BackendHTTPError(BackendError):
    """The server answered an HTTP error status (after retries for 429 / 5xx)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class BackendRedirectError(BackendError):
    """The server answered with a redirect the client does not follow (another origin, a downgrade, or a POST
    turned into a GET): the API key stays with the origin it was given for."""


class BackendResponseError(BackendError):
    """The reply is unusable: not UTF-8, not JSON, incomplete, too large, or without a string `content`."""


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


def redact_url(url: str) -> str:
    """`url` without user info, query or fragment (where credentials hide): safe for logs and score records."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _origin(parts: urllib.parse.SplitResult) -> tuple[str, str, int]:
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class OpenAIChatBackend(ChatBackend):
    """An OpenAI-compatible chat-completions endpoint, over `http.client` from the standard library.

    Hostile servers are bounded: one call (retries included) ends by `deadline`, whatever the server trickles; the
    body is read up to `max_response_bytes`; malformed replies raise a typed [`BackendError`]. Redirects are
    followed only within the same origin and only where the POST survives (307 / 308); anything else (another host,
    https → http, 301/302/303) raises [`BackendRedirectError`], so the key never reaches another origin and a reply
    is never scored under the wrong host's name. `HTTPS_PROXY` / `HTTP_PROXY` (and `NO_PROXY`) are honoured.

    Args:
        model: model name sent in the request.
        base_url: API root, e.g. `https://api.openai.com/v1` or `http://localhost:8000/v1`. Default: the
            `OPENAI_BASE_URL` environment variable, else `https://api.openai.com/v1`. User info in it
            (`https://user:pass@host/v1`) is sent as HTTP Basic auth when no key is given; it, and any query
            string, never appear in `identity` or in error messages.
        api_key: bearer token. Default: the environment variable named by `api_key_env` (unset is fine for local
            servers that need no key). The key is never part of `identity`.
        api_key_env: where to read the key from when `api_key` is not given.
        timeout: seconds allowed for connecting and for each read.
        max_retries: retries on HTTP 429 / 5xx and connection errors, with exponential back-off (or the server's
            `Retry-After`, within the deadline).
        deadline: seconds one `chat` call may take in all. Default: `timeout * (max_retries + 1)`.
        max_response_bytes: largest reply body read.
    """

    MAX_REDIRECTS = 5

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
        deadline: float | None = None,
        max_response_bytes: int = 8 * 2**20,
    ):
        if not model:
            raise ValueError("OpenAIChatBackend needs a model name, got an empty string")
        self.model = model
        raw_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        parts = urllib.parse.urlsplit(raw_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {redact_url(raw_url)!r}")
        self._basic_auth = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._basic_auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._url = raw_url  # with its query (some gateways need one), never shown
        self.base_url = redact_url(raw_url)
        self.api_key = api_key if api_key is not None else os.environ.get(api_key_env)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.temperature = temperature
        self.deadline = float(deadline) if deadline is not None else self.timeout * (self.max_retries + 1)
        self.max_response_bytes = int(max_response_bytes)
        self.identity = f"openai-compatible:{model}@{self.base_url}"

    # ---- one call ------------------------------------------------------------------------------------------

    def chat(self, messages: Messages, *, max_new_tokens: int = 256) -> str:
        body = json.dumps(
            {
                "model": self.model,
                "messages": messages,
                "temperature": self.temperature,
                "max_tokens": max_new_tokens,
            }
        ).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif self._basic_auth:
            headers["Authorization"] = self._basic_auth
        parts = urllib.parse.urlsplit(self._url)
        url = urllib.parse.urlunsplit(parts._replace(path=parts.path + "/chat/completions"))
        shown = redact_url(url)
        end = time.monotonic() + self.deadline
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                status, response_headers, data = self._post(url, body, headers, end)
            except BackendError:
                raise
            except (OSError, http.client.HTTPException) as error:
                if time.monotonic() >= end:
                    raise BackendTimeoutError(f"{shown} did not answer within {self.deadline:g} s") from None
                if attempt == self.max_retries:
                    raise BackendError(f"Could not reach {shown}: {type(error).__name__}: {error}") from None
            else:
                if status == 200:
                    return self._content(shown, data)
                detail = data[:200].decode("utf-8", "replace")
                if not (status == 429 or status >= 500) or attempt == self.max_retries:
                    raise BackendHTTPError(f"{shown} answered HTTP {status}: {detail}", status)
                retry_after = _retry_after(response_headers.get("Retry-After"))
            delay = retry_after if retry_after is not None else 2.0**attempt
            remaining = end - time.monotonic()
            if delay >= remaining:
                raise BackendTimeoutError(
                    f"{shown} failed and the next retry (in {delay:.0f} s) would pass the {self.deadline:g} s deadline"
                )
            logger.warning("%s failed (attempt %d), retrying in %.0f s", shown, attempt + 1, delay)
            time.sleep(delay)
        raise BackendError(f"{shown}: no attempt left")  # not reached

    def _content(self, shown: str, data: bytes) -> str:
        try:
            payload = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise BackendResponseError(f"{shown} answered a body that is not UTF-8 ({error.reason})") from None
        except json.JSONDecodeError as error:
            raise BackendResponseError(f"{shown} did not answer JSON: {error}") from None
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise BackendResponseError(
                f"{shown} answered without choices[0].message.content: {str(payload)[:200]}"
            ) from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise BackendResponseError(
                f"{shown} answered a {type(content).__name__} as message content, expected a string"
            )
        return content

    def _post(self, url: str, body: bytes, headers: dict, end: float) -> tuple[int, dict, bytes]:
        """POSTs `body` (following same-origin 307/308 only); returns status, headers and the capped body."""
        first = urllib.parse.urlsplit(url)
        for _ in range(self.MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            status, response_headers, data = self._post_once(parts, body, headers, end)
            if status not in (301, 302, 303, 307, 308):
                return status, response_headers, data
            location = response_headers.get("Location")
            target = urllib.parse.urlsplit(urllib.parse.urljoin(url, location or ""))
            shown = redact_url(urllib.parse.urlunsplit(target))
            if not location:
                raise BackendRedirectError(f"{redact_url(url)} answered HTTP {status} without a Location")
            if first.scheme == "https" and target.scheme != "https":
                raise BackendRedirectError(f"{redact_url(url)} redirects to {shown}: an https → http downgrade, refused")
            if _origin(target) != _origin(first):
                raise BackendRedirectError(
                    f"{redact_url(url)} redirects to another origin ({shown}); refused so the credentials stay with "
                    "the host they were given for. Set base_url to the final address if you trust it."
                )
            if status not in (307, 308):
                raise BackendRedirectError(
                    f"{redact_url(url)} answered HTTP {status} (to {shown}), which turns the POST into a GET; "
                    "set base_url to the final address"
                )
            url = urllib.parse.urlunsplit(target)
        raise BackendRedirectError(f"{redact_url(url)}: more than {self.MAX_REDIRECTS} redirects")

    def _post_once(self, parts, body: bytes, headers: dict, end: float) -> tuple[int, dict, bytes]:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise BackendTimeoutError(f"{redact_url(parts.geturl())} did not answer within {self.deadline:g} s")
        connection = _connection(parts, min(self.timeout, remaining))
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if getattr(connection, "_nanoemox_absolute", False):  # plain-HTTP proxy: absolute URL
            path = urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], path, "", ""))
        watchdog = None
        try:
            connection.connect()  # bounded by the connection's timeout
            # The watchdog shuts the socket at the deadline, so a server trickling bytes cannot stretch the call.
            watchdog = threading.Timer(max(end - time.monotonic(), 0.0), _abort, (connection.sock,))
            watchdog.daemon = True
            watchdog.start()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.max_response_bytes:
                raise BackendResponseError(
                    f"{redact_url(parts.geturl())} announced a {int(declared):,}-byte reply "
                    f"(limit {self.max_response_bytes:,})"
                )
            chunks, size = [], 0
            while chunk := response.read1(min(65536, self.max_response_bytes + 1 - size)):
                chunks.append(chunk)
                size += len(chunk)
                if size > self.max_response_bytes:
                    raise BackendResponseError(
                        f"{redact_url(parts.geturl())} sent a reply over {self.max_response_bytes:,} bytes"
                    )
                if time.monotonic() >= end:
                    raise BackendTimeoutError(f"{redact_url(parts.geturl())} did not finish within {self.deadline:g} s")
            if time.monotonic() >= end - 0.01:  # the watchdog ended the read
                raise BackendTimeoutError(f"{redact_url(parts.geturl())} did not finish within {self.deadline:g} s")
            if declared and declared.isdigit() and size < int(declared):
                raise http.client.IncompleteRead(b"".join(chunks), int(declared) - size)
            return response.status, {k.title(): v for k, v in response.getheaders()}, b"".join(chunks)
        except http.client.IncompleteRead as error:
            if time.monotonic() >= end - 0.01:
                raise BackendTimeoutError(f"{redact_url(parts.geturl())} did not finish within {self.deadline:g} s") from None
            raise BackendResponseError(
                f"{redact_url(parts.geturl())} closed the connection mid-reply ({len(error.partial)} bytes read)"
            ) from None
        except (OSError, http.client.HTTPException):
            if time.monotonic() >= end - 0.01:
                raise BackendTimeoutError(
                    f"{redact_url(parts.geturl())} did not answer within {self.deadline:g} s"
                ) from None
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            connection.close()


def _connection(parts, timeout: float) -> http.client.HTTPConnection:
    """A connection to the URL's host, through the environment's proxy when one applies."""
    host, port = parts.hostname, parts.port
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                proxy_parts.hostname, proxy_parts.port or 80, timeout=timeout, context=ssl.create_default_context()
            )
            connection.set_tunnel(host, port or 443)
            return connection
        connection = http.client.HTTPConnection(proxy_parts.hostname, proxy_parts.port or 80, timeout=timeout)
        connection._nanoemox_absolute = True
        return connection
    if parts.scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _abort(sock) -> None:
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds form; an HTTP date is ignored)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


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

"""The OpenAI-compatible judge/extractor/teacher client against hostile endpoints on 127.0.0.1 (issue 17, causes 2
and 8): redirects never carry the key to another origin, one call has an overall deadline, replies are capped and
malformed ones raise typed errors, credentials in `base_url` never reach a score record."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modeling_nanoemox.evaluation import backends
from modeling_nanoemox.evaluation.backends import (
    BackendError,
    BackendHTTPError,
    BackendRedirectError,
    BackendResponseError,
    BackendTimeoutError,
    OpenAIChatBackend,
)

MESSAGES = [{"role": "user", "content": "hi"}]
GOOD = json.dumps({"choices": [{"message": {"role": "assistant", "content": "fine"}}]}).encode()


class HostileServer:
    """An HTTP server on 127.0.0.1 whose reply is `behaviour(handler)`; it records every request it gets."""

    def __init__(self, behaviour):
        server = self
        self.requests = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                length = int(self.headers.get("Content-Length") or 0)
                server.requests.append((self.path, dict(self.headers), self.rfile.read(length)))
                try:
                    behaviour(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(behaviour):
        servers.append(HostileServer(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def reply(handler, body=GOOD, status=200, headers=()):
    handler.send_response(status)
    for name, value in headers:
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def redirect(location, status=302):
    return lambda handler: reply(handler, b"", status, [("Location", location)])


# ---- cause 2: redirects -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_to_another_origin_is_refused_and_the_key_stays_home(serve, status):
    elsewhere = serve(reply)
    first = serve(redirect(elsewhere.url + "/v1/chat/completions", status))
    backend = OpenAIChatBackend("m", base_url=first.url + "/v1", api_key="sk-secret", max_retries=0)
    with pytest.raises(BackendRedirectError, match="another origin") as raised:
        backend.chat(MESSAGES)
    assert elsewhere.requests == []  # the other origin never saw the request, let alone the key
    assert "sk-secret" not in str(raised.value)
    assert first.requests[0][1]["Authorization"] == "Bearer sk-secret"


def test_a_same_origin_307_is_followed_with_the_post_and_its_reply_is_this_hosts(serve):
    def behaviour(handler):
        if handler.path == "/v1/chat/completions":
            return redirect("/v2/chat/completions", 307)(handler)
        reply(handler)

    server = serve(behaviour)
    backend = OpenAIChatBackend("m", base_url=server.url + "/v1", api_key="sk-secret", max_retries=0)
    assert backend.chat(MESSAGES) == "fine"
    (first_path, _, _), (second_path, headers, body) = server.requests
    assert (first_path, second_path) == ("/v1/chat/completions", "/v2/chat/completions")
    assert headers["Authorization"] == "Bearer sk-secret" and json.loads(body)["model"] == "m"


def test_a_same_origin_302_that_would_turn_the_post_into_a_get_is_refused(serve):
    server = serve(redirect("/elsewhere", 302))
    backend = OpenAIChatBackend("m", base_url=server.url + "/v1", max_retries=0)
    with pytest.raises(BackendRedirectError, match="turns the POST into a GET"):
        backend.chat(MESSAGES)


def test_an_https_to_http_downgrade_is_refused(monkeypatch):
    backend = OpenAIChatBackend("m", base_url="https://api.example.invalid/v1", api_key="sk-secret", max_retries=0)
    calls = []

    def fake_post_once(parts, body, headers, end):
        calls.append(parts.geturl())
        return 308, {"Location": "http://api.example.invalid/v1/chat/completions"}, b""

    monkeypatch.setattr(backend, "_post_once", fake_post_once)
    with pytest.raises(BackendRedirectError, match="downgrade"):
        backend.chat(MESSAGES)
    assert calls == ["https://api.example.invalid/v1/chat/completions"]


def test_a_redirect_loop_ends(serve):
    server = serve(redirect("/v1/chat/completions", 307))
    with pytest.raises(BackendRedirectError, match="more than"):
        OpenAIChatBackend("m", base_url=server.url + "/v1", max_retries=0).chat(MESSAGES)


# ---- cause 8: deadline, typed errors, size cap, credentials ------------------------------------------------------


def test_a_server_trickling_bytes_cannot_stretch_the_call_past_its_deadline(serve):
    def trickle(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        for _ in range(200):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)

    server = serve(trickle)
    backend = OpenAIChatBackend("m", base_url=server.url, timeout=1, max_retries=3, deadline=1.5)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="within 1.5 s"):
        backend.chat(MESSAGES)
    assert time.monotonic() - start < 3.0


def test_a_server_that_never_answers_times_out_within_the_deadline(serve):
    server = serve(lambda handler: time.sleep(5))
    backend = OpenAIChatBackend("m", base_url=server.url, timeout=0.5, max_retries=5, deadline=1.2)
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError):
        backend.chat(MESSAGES)
    assert time.monotonic() - start < 2.5
    assert backend.deadline == 1.2
    assert OpenAIChatBackend("m", timeout=2, max_retries=3).deadline == 8.0  # default: timeout × attempts


@pytest.mark.parametrize(
    "body, match",
    [
        (b'{"choices": [{"message": {"content": "caf\xe9"}}]}', "not UTF-8"),
        (b"<html>busy</html>", "did not answer JSON"),
        (json.dumps({"choices": [{"message": {"content": ["a", "b"]}}]}).encode(), "list as message content"),
        (json.dumps({"choices": [{"message": {"content": 7}}]}).encode(), "int as message content"),
        (json.dumps({"choices": []}).encode(), "without choices"),
        (json.dumps(["not", "an", "object"]).encode(), "without choices"),
    ],
)
def test_malformed_replies_raise_typed_errors(serve, body, match):
    server = serve(lambda handler: reply(handler, body))
    with pytest.raises(BackendResponseError, match=match):
        OpenAIChatBackend("m", base_url=server.url, max_retries=0).chat(MESSAGES)


def test_an_incomplete_read_is_a_typed_error(serve):
    def cut(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(GOOD[:20])
        handler.wfile.flush()
        handler.close_connection = True

    server = serve(cut)
    with pytest.raises(BackendResponseError, match="mid-reply"):
        OpenAIChatBackend("m", base_url=server.url, max_retries=0, timeout=2).chat(MESSAGES)


def test_huge_replies_are_refused_without_reading_them(serve):
    announced = serve(_announce)
    with pytest.raises(BackendResponseError, match="announced a 200,000,000-byte reply"):
        OpenAIChatBackend("m", base_url=announced.url, max_retries=0).chat(MESSAGES)

    def unannounced(handler):  # no Content-Length: the body runs until the connection closes
        handler.send_response(200)
        handler.end_headers()
        chunk = b"x" * 65536
        for _ in range(64):  # 4 MiB
            handler.wfile.write(chunk)

    streaming = serve(unannounced)
    with pytest.raises(BackendResponseError, match="over 1,048,576 bytes"):
        OpenAIChatBackend("m", base_url=streaming.url, max_retries=0, max_response_bytes=2**20).chat(MESSAGES)


def _announce(handler):
    handler.send_response(200)
    handler.send_header("Content-Length", "200000000")
    handler.end_headers()
    handler.wfile.write(b"x" * 1000)


def test_retry_after_is_honoured_within_the_deadline(serve, monkeypatch):
    answers = [429, 200]

    def busy(handler):
        status = answers.pop(0)
        reply(handler, GOOD if status == 200 else b"{}", status, [("Retry-After", "0")])

    server = serve(busy)
    assert OpenAIChatBackend("m", base_url=server.url, max_retries=2).chat(MESSAGES) == "fine"
    slow = serve(lambda handler: reply(handler, b"{}", 503, [("Retry-After", "3600")]))
    start = time.monotonic()
    with pytest.raises(BackendTimeoutError, match="would pass"):
        OpenAIChatBackend("m", base_url=slow.url, max_retries=2, deadline=5).chat(MESSAGES)
    assert time.monotonic() - start < 2
    failing = serve(lambda handler: reply(handler, b'{"error": "no"}', 401))
    with pytest.raises(BackendHTTPError, match="HTTP 401") as raised:
        OpenAIChatBackend("m", base_url=failing.url, max_retries=2).chat(MESSAGES)
    assert raised.value.status == 401 and len(failing.requests) == 1
    assert issubclass(BackendTimeoutError, BackendError) and issubclass(BackendResponseError, BackendError)


def test_credentials_in_base_url_are_used_but_never_recorded(serve, tmp_path):
    server = serve(lambda handler: reply(handler, b"{}", 500))
    host = server.url.removeprefix("http://")
    backend = OpenAIChatBackend("m", base_url=f"http://judge:hunter2@{host}/v1?api-key=topsecret", max_retries=0)
    assert backend.identity == f"openai-compatible:m@http://{host}/v1"
    assert backend.base_url == f"http://{host}/v1"
    with pytest.raises(BackendHTTPError) as raised:
        backend.chat(MESSAGES)
    path, headers, _ = server.requests[0]
    assert path == "/v1/chat/completions?api-key=topsecret"  # the gateway still gets its query
    assert headers["Authorization"].startswith("Basic ")
    for text in (str(raised.value), backend.identity, repr(backend)):
        assert "hunter2" not in text and "topsecret" not in text and "judge:" not in text

    from modeling_nanoemox.evaluation.judge import ERIJudge

    judge = ERIJudge(backend)
    assert "hunter2" not in judge.identity and "topsecret" not in judge.identity
    assert backends.redact_url("https://u:p@h:8443/v1?k=v#f") == "https://h:8443/v1"

"""Errors never carry credentials: ctxmem._redact, and both model clients end to end.

The clients run with the real SDKs against loopback servers, with a password in the base
URL (``http://user:pw@127.0.0.1:PORT``) and an API key; every way a request can fail is
provoked, and neither secret may appear in the error's text, its chain or the client's repr.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ctxmem._redact import MASK, redact, redact_url, url_secrets
from ctxmem.clients.base import RetryPolicy
from ctxmem.clients.loopback import Fault, LoopbackServer
from ctxmem.errors import CtxmemError
from ctxmem.messages import Message

PASSWORD = "Pw-S3cret-7f3a9"
API_KEY = "sk-ant-api03-TESTKEY0123456789abcdef"
NO_RETRY = RetryPolicy(max_retries=0)


# --------------------------------------------------------------------------- the function


@pytest.mark.parametrize(
    ("text", "must_not_contain"),
    [
        ("could not connect to http://alice:hunter22@127.0.0.1:8080/v1", "hunter22"),
        ("proxy https://bob:p%40ss%2Fword@proxy.example:3128", "p%40ss"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGci"),
        ("{'x-api-key': 'abcd-1234-efgh-5678', 'accept': 'json'}", "abcd-1234"),
        ('{"password": "two words"}', "words"),
        ("GET /v1/models?key=1&api_key=AIzaSyD-abcdefghijkl&x=1", "AIzaSy"),
        ("invalid x-api-key: sk-proj-1234567890abcdefghij provided", "1234567890abcdef"),
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz was revoked", "abcdefghijklmnop"),
        ("Proxy-Authorization: Basic YWxpY2U6aHVudGVyMjI=", "YWxpY2U6"),
    ],
)
def test_redact_masks_each_credential_shape(text: str, must_not_contain: str) -> None:
    out = redact(text)
    assert must_not_contain not in out and MASK in out
    assert redact(out) == out  # idempotent


def test_redact_masks_known_secrets_in_any_form_and_leaves_ordinary_text() -> None:
    secret = "correct horse/battery"
    text = f"server said: {secret!r} (quoted: correct%20horse%2Fbattery)"
    out = redact(text, [secret, None, "ab"])  # None and too-short secrets are ignored
    assert "horse" not in out
    for plain in (
        "prompt is too long: 1234 tokens > 1000 maximum",
        "max_tokens: Field required (a positive integer)",
        "Anthropic API error 500 (api_error) from http://127.0.0.1:9/v1 (model m): boom",
        "the kernel reads 4096 tokens: ok",
    ):
        assert redact(plain) == plain


def test_url_helpers() -> None:
    assert redact_url("http://u:p@h:1/x") == "http://***@h:1/x"
    assert redact_url("http://h:1/x") == "http://h:1/x"
    assert sorted(url_secrets("http://us%40er:p%2Fw@h:1/")) == ["p%2Fw", "p/w", "us%40er", "us@er"]
    assert url_secrets("http://h/") == [] and url_secrets(None) == []


# --------------------------------------------------------------------------- the clients


def _with_password(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://alice:{PASSWORD}@{rest}"


def _anthropic(url: str) -> Any:
    pytest.importorskip("anthropic")
    from ctxmem.clients.anthropic import AnthropicClient

    return AnthropicClient("claude-test", base_url=_with_password(url), api_key=API_KEY, retry=NO_RETRY, timeout=5)


def _openai(url: str) -> Any:
    pytest.importorskip("openai")
    from ctxmem.clients.openai_compat import OpenAICompatClient

    return OpenAICompatClient("qwen3", base_url=_with_password(url + "/v1"), api_key=API_KEY, retry=NO_RETRY, timeout=5)


CLIENTS: dict[str, Callable[[str], Any]] = {"anthropic": _anthropic, "openai": _openai}


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)


def _assert_clean(err: BaseException, client: Any) -> str:
    assert isinstance(err, CtxmemError), f"{type(err).__name__}: {err}"
    for e in _chain(err):
        text = f"{e!s} {e!r}"
        assert PASSWORD not in text and API_KEY not in text, text
    assert PASSWORD not in repr(client) and "***@127.0.0.1" in repr(client)
    return str(err)


def _fail(client: Any) -> BaseException:
    with pytest.raises(Exception) as info:
        client.request_sync([Message.user("hi")], max_tokens=16)
    return info.value


@pytest.mark.parametrize("kind", list(CLIENTS))
@pytest.mark.parametrize(
    "fault",
    [Fault.server_error(), Fault.rate_limit(), Fault.overloaded(), Fault.prompt_too_long(), Fault.malformed_json(), Fault.malformed_shape()],
    ids=lambda f: f.kind,
)
def test_loopback_faults_never_show_the_password(kind: str, fault: Fault) -> None:
    with LoopbackServer(policy=lambda req: "ok") as server:
        client = CLIENTS[kind](server.url)
        assert client.request_sync([Message.user("hi")], max_tokens=16).text == "ok"  # the URL works
        server.fail_next(fault)
        text = _assert_clean(_fail(client), client)
        assert "***@127.0.0.1" in text or "127.0.0.1" not in text


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_connection_refused_names_the_host_not_the_password(kind: str) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = CLIENTS[kind](f"http://127.0.0.1:{port}")
    text = _assert_clean(_fail(client), client)
    assert f"***@127.0.0.1:{port}" in text


class _EchoAuth(BaseHTTPRequestHandler):
    """A misbehaving proxy: answers 401 quoting every auth header it received."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        seen = {k: v for k, v in self.headers.items() if k.lower() in ("x-api-key", "authorization")}
        body = json.dumps(
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": f"rejected credentials {seen}; key={API_KEY}"},
                "message": f"rejected credentials {seen}",
            }
        ).encode()
        self.send_response(401)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_a_server_that_echoes_the_key_does_not_leak_it(kind: str) -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = CLIENTS[kind](f"http://127.0.0.1:{httpd.server_address[1]}")
        text = _assert_clean(_fail(client), client)
        assert "401" in text and MASK in text
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("kind", list(CLIENTS))
def test_the_network_guard_names_the_host_not_the_password(kind: str) -> None:
    from ctxmem.errors import NetworkBlockedError

    client = CLIENTS[kind]("https://api.example.com")  # not loopback: the suite's guard refuses it
    err = _fail(client)
    assert isinstance(err, NetworkBlockedError)
    text = str(err)
    assert PASSWORD not in text and "***@api.example.com" in text

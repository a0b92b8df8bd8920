from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from typing import Any

import pytest

from ctxmem.clients import FunctionClient, ModelClient, ModelRequest, ScriptedClient, get_client
from ctxmem.clients import testing as guard
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.openai_compat import OpenAICompatClient
from ctxmem.errors import ContextLengthExceeded, NetworkBlockedError, ProviderError
from ctxmem.messages import Message, TextBlock, ToolSpec, ToolUseBlock


def test_scripted_client_answers_in_order_and_records_requests() -> None:
    tool = ToolSpec("read", "read a file")
    client = ScriptedClient(
        [[TextBlock("reading"), ToolUseBlock("t1", "read", {"path": "a"})], "done"]
    )
    assert isinstance(client, ModelClient)
    r1 = client.request_sync([Message.user("go")], max_tokens=10, system="sys", tools=[tool])
    assert r1.stop_reason == "tool_use"
    assert r1.usage.input_tokens > 0 and r1.usage.output_tokens > 0
    r2 = client.request_sync([Message.user("go"), r1.message], max_tokens=10)
    assert (r2.text, r2.stop_reason) == ("done", "end_turn")
    assert [len(r.messages) for r in client.requests] == [1, 2]
    assert client.requests[0].system == "sys" and client.requests[0].tools == (tool,)
    assert client.pending == 0


def test_scripted_client_raises_queued_errors_and_reports_an_empty_queue() -> None:
    client = ScriptedClient([ContextLengthExceeded("too long", status=400), "ok"])
    with pytest.raises(ContextLengthExceeded):
        client.request_sync([Message.user("x")], max_tokens=5)
    assert client.request_sync([Message.user("x")], max_tokens=5).text == "ok"
    with pytest.raises(ProviderError, match="queue is empty"):
        client.request_sync([Message.user("x")], max_tokens=5)
    assert len(client.requests) == 3


def test_function_client_sync_and_async_policies() -> None:
    def echo(req: ModelRequest) -> str:
        return req.messages[-1].text.upper()

    async def aecho(req: ModelRequest) -> str:
        await asyncio.sleep(0)
        return req.messages[-1].text[::-1]

    assert FunctionClient(echo).request_sync([Message.user("abc")], max_tokens=5).text == "ABC"
    assert FunctionClient(aecho).request_sync([Message.user("abc")], max_tokens=5).text == "cba"
    client = get_client("function", fn=echo)
    assert client.model == "function"


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8000", True),
        ("http://127.5.0.1/v1", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000", True),
        ("https://api.anthropic.com", False),
        ("https://127.0.0.1.example.com", False),
        ("http://10.0.0.5:8000", False),
    ],
)
def test_is_loopback_url(url: str, loopback: bool) -> None:
    assert guard.is_loopback_url(url) is loopback


@pytest.fixture
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) any name lookup or connection attempt."""
    attempts: list[Any] = []

    def refuse(*args: Any, **kw: Any) -> Any:
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    return attempts


def test_guard_blocks_real_hosts_without_network_traffic(no_sockets: list[Any]) -> None:
    assert guard.ALLOW_MODEL_REQUESTS is False  # the autouse fixture
    anthropic = AnthropicClient("claude-sonnet-4-5", api_key="sk-test")
    assert anthropic.base_url == "https://api.anthropic.com"
    with pytest.raises(NetworkBlockedError, match=r"api\.anthropic\.com blocked"):
        anthropic.request_sync([Message.user("hi")], max_tokens=5)
    with pytest.raises(NetworkBlockedError):
        asyncio.run(anthropic.count_tokens([Message.user("hi")]))
    openai = OpenAICompatClient("gpt-x", api_key="sk-test")
    with pytest.raises(NetworkBlockedError, match=r"api\.openai\.com"):
        openai.request_sync([Message.user("hi")], max_tokens=5)
    hosted = get_client("openai:qwen3", base_url="https://dashscope.example.com/v1")
    with pytest.raises(NetworkBlockedError):
        asyncio.run(hosted.request([Message.user("hi")], max_tokens=5))
    assert no_sockets == []


def test_guard_can_be_lifted_and_reads_the_environment() -> None:
    with guard.override_allow_model_requests(True):
        guard.check_network_allowed("https://api.anthropic.com", "anthropic")
    with pytest.raises(NetworkBlockedError):
        guard.check_network_allowed("https://api.anthropic.com", "anthropic")
    code = "import ctxmem.clients.testing as t; print(t.ALLOW_MODEL_REQUESTS)"
    for value, expected in (("0", "False"), ("false", "False"), ("1", "True")):
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={"CTXMEM_ALLOW_MODEL_REQUESTS": value, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == expected

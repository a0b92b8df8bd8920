from __future__ import annotations

import asyncio

import pytest

from ctxmem.clients import ScriptedClient, request_sync
from ctxmem.clients.base import (
    Response,
    Retryable,
    RetryPolicy,
    Usage,
    parse_retry_after,
    run_sync,
    with_retries,
)
from ctxmem.errors import RateLimitError
from ctxmem.messages import Message, TextBlock, ToolUseBlock


def test_usage_adds_and_totals() -> None:
    a = Usage(10, 2, cache_read_tokens=100, cache_write_tokens=5)
    b = Usage(1, 1, 1, 1)
    assert a + b == Usage(11, 3, 101, 6)
    assert a.prompt_tokens == 115
    assert a.total_tokens == 117
    assert sum([a, b], Usage()) == a + b
    assert a.to_dict() == {
        "input_tokens": 10,
        "output_tokens": 2,
        "cache_read_tokens": 100,
        "cache_write_tokens": 5,
    }


def test_response_views() -> None:
    r = Response((TextBlock("a"), ToolUseBlock("t1", "read", {}), TextBlock("b")), "tool_use")
    assert r.text == "ab"
    assert [u.id for u in r.tool_uses] == ["t1"]
    assert r.message == Message("assistant", r.content)


def test_retry_policy_backoff_is_exponential_and_capped() -> None:
    p = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.0)
    assert [p.delay(i) for i in range(4)] == [1.0, 2.0, 4.0, 5.0]
    assert p.delay(0, retry_after=3.0) == 3.0
    assert p.delay(0, retry_after=99.0) == 5.0


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert parse_retry_after(None) is None


def test_with_retries_sleeps_then_gives_up_with_attempt_count() -> None:
    slept: list[float] = []
    calls = 0

    async def fake_sleep(s: float) -> None:
        slept.append(s)

    async def always_429() -> int:
        nonlocal calls
        calls += 1
        raise Retryable(RateLimitError("rate limited", status=429), retry_after=0.5)

    policy = RetryPolicy(max_retries=2)
    with pytest.raises(RateLimitError, match="gave up after 3 attempts"):
        asyncio.run(with_retries(always_429, policy, sleep=fake_sleep))
    assert calls == 3
    assert slept == [0.5, 0.5]


def test_request_sync_works_inside_a_running_loop() -> None:
    client = ScriptedClient(["one", "two"])

    async def inner() -> str:
        # a notebook calling the sync wrapper from inside its own loop must not deadlock
        return request_sync(client, [Message.user("hi")], max_tokens=5).text

    assert asyncio.run(inner()) == "one"
    assert client.request_sync([Message.user("hi")], max_tokens=5).text == "two"


def test_run_sync_propagates_exceptions() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_sync(boom)

"""The loopback server's own wire behaviour, driven with raw HTTP (no SDK)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from ctxmem.clients.loopback import LoopbackServer, byte_estimate


def post(url: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_anthropic_validation_errors(loopback: LoopbackServer) -> None:
    url = loopback.url + "/v1/messages"
    ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert post(url, ok)[0] == 200
    cases = [
        (b"{not json", "not valid JSON"),
        ({**ok, "max_tokens": 0}, "max_tokens"),
        ({**ok, "model": ""}, "model"),
        ({**ok, "messages": []}, "at least one message"),
        ({**ok, "messages": [{"role": "robot", "content": "x"}]}, "unknown role"),
        ({**ok, "stream": True}, "does not stream"),
        (
            {
                **ok,
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "x", "input": {}}]},
                    {"role": "user", "content": "forgot the result"},
                ],
            },
            "has no tool_result",
        ),
    ]
    for body, expected in cases:
        status, err = post(url, body)
        assert status == 400, body
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
        assert expected in err["error"]["message"]
    assert len(loopback.rejected) == len(cases)
    assert len(loopback.accepted) == 1


def test_openai_rejects_tool_message_without_a_call(loopback: LoopbackServer) -> None:
    status, err = post(
        loopback.openai_base_url + "/chat/completions",
        {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "tool", "tool_call_id": "c1", "content": "x"}]},
    )
    assert status == 400 and "c1" in err["error"]["message"] and err["error"]["type"] == "invalid_request_error"


def test_count_tokens_and_default_estimate(loopback: LoopbackServer) -> None:
    status, body = post(
        loopback.url + "/v1/messages/count_tokens", {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert status == 200
    assert body["input_tokens"] == byte_estimate(json.dumps({"content": "hi", "role": "user"}, separators=(",", ":")))
    assert byte_estimate("abc") == 1 and byte_estimate("abcd") == 2 and byte_estimate("é") == 1


def test_unknown_route_and_recording(loopback: LoopbackServer) -> None:
    assert post(loopback.url + "/v2/nothing", {})[0] == 404
    post(loopback.openai_base_url + "/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "x"}]})
    [rec] = loopback.requests
    assert rec.protocol == "openai" and rec.status == 200 and rec.parsed is not None
    assert rec.parsed.messages[0].text == "x" and rec.usage is not None


def test_policy_bug_answers_500_and_keeps_serving() -> None:
    def broken(req: Any) -> str:
        raise KeyError("oops")

    with LoopbackServer(broken) as server:
        ok = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        status, body = post(server.url + "/v1/messages", ok)
        assert status == 500 and "policy raised KeyError" in body["error"]["message"]
        assert post(server.url + "/v1/messages/count_tokens", ok)[0] == 200


def test_url_requires_a_running_server() -> None:
    from ctxmem.errors import CtxmemError

    with pytest.raises(CtxmemError, match="not running"):
        _ = LoopbackServer().url

from __future__ import annotations

import subprocess
import sys

import pytest

from ctxmem.clients import CLIENTS, ScriptedClient, get_client
from ctxmem.clients.anthropic import AnthropicClient
from ctxmem.clients.openai_compat import OpenAICompatClient
from ctxmem.errors import ConfigError, UnknownNameError


def test_get_client_specs() -> None:
    a = get_client("anthropic:claude-sonnet-4-5", api_key="k", base_url="http://127.0.0.1:9")
    assert isinstance(a, AnthropicClient) and a.model == "claude-sonnet-4-5"
    assert get_client("anthropic", api_key="k").model == "claude-sonnet-4-6"
    o = get_client("openai:qwen3:8b", base_url="http://localhost:11434/v1")
    assert isinstance(o, OpenAICompatClient) and o.model == "qwen3:8b" and o.base_url == "http://localhost:11434/v1"
    s = get_client("scripted", replies=["hi"])
    assert isinstance(s, ScriptedClient) and s.model == "scripted"
    assert set(CLIENTS.names()) >= {"anthropic", "openai", "local", "scripted", "function"}


def test_unknown_prefix_suggests() -> None:
    with pytest.raises(UnknownNameError, match=r"unknown client 'antropic'\. Did you mean 'anthropic'\?"):
        get_client("antropic:claude")
    with pytest.raises(ConfigError, match="needs a model"):
        get_client("openai")
    with pytest.raises(ConfigError, match="fn="):
        get_client("function")


def test_importing_ctxmem_loads_no_sdk() -> None:
    code = (
        "import sys, ctxmem, ctxmem.clients, ctxmem.clients.anthropic, ctxmem.clients.openai_compat, "
        "ctxmem.clients.transformers_local, ctxmem.clients.loopback; "
        "print([m for m in ('anthropic', 'openai', 'torch', 'transformers') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

"""Every example of the README's "Use with …" section runs as written, offline.

Each example is a fenced block preceded by ``<!-- example: NAME -->``. They run in order,
in one fresh folder (``agent.db`` written by the first is read by the MCP one; a worker of
pytest-xdist that did not run the Agents SDK example runs it first), each in its own process, with the providers' standard environment variables pointing at ctxmem's
loopback server (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, dummy keys); nothing is
added to the code. The loopback speaks the Responses API, so the Agents SDK example runs on
the SDK's default model path (``OpenAIResponsesModel``) and LangChain's ``ChatOpenAI`` on
Chat Completions.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ctxmem.clients.base import ModelRequest
from ctxmem.clients.loopback import LoopbackServer
from ctxmem.messages import Message, ToolUseBlock

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"<!-- example: ([\w-]+) -->\n```(python|bash)\n(.*?)```", re.S)
EXAMPLES = BLOCK.findall(README.read_text(encoding="utf-8"))
ANSWER = "The build hit the shared memory limit: 101376 bytes."


class Policy:
    """Calls the offered read_log tool once per question, then answers from its output."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: ModelRequest) -> Any:
        last = request.messages[-1]
        if last.tool_results:
            return ANSWER
        if any(t.name == "read_log" for t in request.tools):
            self.n += 1
            return Message.assistant(ToolUseBlock(f"call_{self.n}", "read_log", {"name": "build"}))
        return ANSWER


#: examples that read what another one wrote (the MCP server searches the Agents SDK run's session)
NEEDS = {"mcp": ("agents-sdk",)}
#: per folder, the examples that ran there
RAN: dict[Path, set[str]] = {}


def _run(name: str, folder: Path, env: dict[str, str]) -> str:
    (lang, code), = [(lang, code) for n, lang, code in EXAMPLES if n == name]  # names are unique
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-e", "-c", code]
    proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    RAN.setdefault(folder, set()).add(name)
    return proc.stdout


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str], LoopbackServer]]:
    folder = tmp_path_factory.mktemp("readme")
    with LoopbackServer(policy=Policy()) as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.openai_base_url, "OPENAI_API_KEY": "test-key",
               "ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "test-key",
               "INSPECT_LOG_DIR": str(folder / "logs"), "OPENAI_AGENTS_DISABLE_TRACING": "1"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        yield folder, env, server


def test_every_integration_has_a_short_example() -> None:
    names = [n for n, _, _ in EXAMPLES]
    assert len(names) == len(set(names)), "two README examples share a name"
    assert {"agents-sdk", "langchain", "mcp", "inspect", "anthropic-native", "otel"} <= set(names)
    for name, _, code in EXAMPLES:
        assert len(code.strip().splitlines()) <= 15, f"the {name} example is longer than 15 lines"


@pytest.mark.parametrize(("name", "lang", "code"), EXAMPLES, ids=[n for n, _, _ in EXAMPLES])
def test_readme_example_runs(name: str, lang: str, code: str,
                             workdir: tuple[Path, dict[str, str], LoopbackServer]) -> None:
    folder, env, server = workdir
    for needed in NEEDS.get(name, ()):
        # under pytest-xdist the examples can land on different workers, each with its own
        # folder: the one this example reads from runs here first when it has not yet
        if needed not in RAN.setdefault(folder, set()):
            _run(needed, folder, env)
    before = len(server.requests)
    out = _run(name, folder, env)
    assert not server.rejected
    if name in ("agents-sdk", "langchain", "anthropic-native", "otel"):
        assert len(server.requests) > before and ANSWER in out  # it really asked the (loopback) model
    if name == "agents-sdk":  # the SDK's default API, not a chat-completions fallback
        assert {r.path for r in server.requests[before:]} == {"/v1/responses"}
    if name == "mcp":
        assert "build_context" in out and "101376 bytes exceeded" in out  # found the agents-sdk run's tool output
    if name == "inspect":
        assert list((folder / "logs").glob("*.eval"))
    if name == "anthropic-native":
        assert "'input_tokens'" in out and "context-management-2025-06-27" in server.requests[-1].headers.get(
            "anthropic-beta", "")
    if name == "anthropic-native-cost":
        assert "masking-200k → anthropic server" in out
    if name == "otel":
        assert '"gen_ai.usage.cache_read.input_tokens"' in out and "ctxmem.build masking" in out
        assert '"name": "ctxmem.turn"' in out and '"name": "invoke_agent ctxmem"' in out

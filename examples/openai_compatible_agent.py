"""The same small agent on any OpenAI-compatible server (vLLM, Ollama, llama.cpp, hosted Qwen).

    python examples/openai_compatible_agent.py "What is 2 ** 10 - 24?" \\
        --base-url http://localhost:8000/v1 --model Qwen/Qwen3-8B

The tool, the loop and the session are ctxmem's; only the client differs from
``anthropic_agent.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctxmem import Agent, AgentResult, Session, SQLiteStore, get_client

sys.path.insert(0, str(Path(__file__).parent))
from anthropic_agent import CALCULATOR  # the tool is shared with the sibling example


def main(argv: list[str] | None = None) -> AgentResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--model", default="qwen3")
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    parser.add_argument("--api-key", default=None, help="defaults to $OPENAI_API_KEY; local servers need none")
    parser.add_argument("--db", default="agent.db")
    args = parser.parse_args(argv)

    session = Session.create(SQLiteStore(args.db), title="calculator agent (openai-compatible)")
    client = get_client(f"openai:{args.model}", base_url=args.base_url, api_key=args.api_key)
    agent = Agent(client, session, tools=[CALCULATOR], system="Use the calculator for arithmetic.",
                  max_tokens=1024, max_turns=8, context_window=32_768)
    result = agent.run_sync(args.question)
    print(result.text)
    print(f"[{result.turns} turns, {result.usage.total_tokens} tokens; session {session.id} in {args.db}]")
    return result


if __name__ == "__main__":
    main()

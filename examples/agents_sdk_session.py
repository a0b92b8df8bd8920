"""An OpenAI Agents SDK agent whose memory is a ctxmem session, on any OpenAI-compatible server.

    python examples/agents_sdk_session.py "Why did the build fail?" "What limit did it hit?" \\
        --base-url http://localhost:8000/v1 --model Qwen/Qwen3-8B --preset masking-200k

Each question is one ``Runner.run`` on the same :class:`CtxmemSession`: later runs see the
earlier ones, every item lands in the SQLite store (``ctxmem sessions show/export``), and
with ``--preset`` the model gets what the preset builds instead of the whole history.
Chat Completions is used so that vLLM, Ollama, llama.cpp and hosted endpoints all work.
"""

from __future__ import annotations

import argparse
import asyncio

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from ctxmem.integrations.agents_sdk import CtxmemSession


@function_tool
def read_log(name: str) -> str:
    """Read a build log by name."""
    return f"{name}: compiled 41 kernels\nerror: shared memory limit 101376 bytes exceeded (requested 163840)"


async def ask(args: argparse.Namespace) -> list[str]:
    set_tracing_disabled(True)  # the SDK would otherwise upload traces to OpenAI
    client = AsyncOpenAI(base_url=args.base_url, api_key=args.api_key or "not-needed")
    agent = Agent(name="builder", instructions="Answer from the build logs; call read_log first.",
                  tools=[read_log], model=OpenAIChatCompletionsModel(model=args.model, openai_client=client))
    session = CtxmemSession(args.session, store=args.db, preset=args.preset, context_window=args.window)
    answers = []
    for question in args.questions:
        result = await Runner.run(agent, question, session=session)
        answers.append(str(result.final_output))
        print(f"> {question}\n{result.final_output}")
    stored = await session.get_items(limit=-1)
    report = session.last_report
    sent = f"; the preset sent {report.tokens_out} of {report.tokens_in} tokens" if report is not None else ""
    print(f"[{len(stored)} items in session {args.session!r} of {args.db}{sent}]")
    return answers


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("questions", nargs="+")
    parser.add_argument("--model", default="qwen3")
    parser.add_argument("--base-url", default="http://localhost:8000/v1")
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--db", default="agent.db")
    parser.add_argument("--session", default="builder")
    parser.add_argument("--preset", default=None, help="e.g. masking-200k (default: every item, verbatim)")
    parser.add_argument("--window", type=int, default=None, help="override the preset's context window")
    return asyncio.run(ask(parser.parse_args(argv)))


if __name__ == "__main__":
    main()

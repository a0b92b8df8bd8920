"""A small tool-using agent on the Anthropic Messages API, recorded in a ctxmem session.

    export ANTHROPIC_API_KEY=...
    python examples/anthropic_agent.py "What is (12 * 34 + 5) / 7?"

Any server that speaks the Messages API works: pass --base-url (or set ANTHROPIC_BASE_URL).
The whole exchange — messages, tool calls and results, usage — lands in --db (SQLite), so
``ctxmem sessions show`` can replay it afterwards.
"""

from __future__ import annotations

import argparse
import ast
import operator
from typing import Any

from ctxmem import Agent, AgentResult, Session, SQLiteStore, Tool, get_client

OPS: dict[type, Any] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
       ast.Pow: operator.pow, ast.USub: operator.neg}


def calculate(args: dict[str, Any]) -> str:
    """Evaluate arithmetic safely (no eval): numbers, + - * / ** and parentheses."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return float(OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and type(node.op) in OPS:
            return float(OPS[type(node.op)](ev(node.operand)))
        raise ValueError(f"unsupported expression: {ast.dump(node)}")

    return str(ev(ast.parse(args["expression"], mode="eval").body))


CALCULATOR = Tool(
    "calculate",
    calculate,
    "Evaluate an arithmetic expression exactly.",
    {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
)


def main(argv: list[str] | None = None) -> AgentResult:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("question")
    parser.add_argument("--model", default="claude-sonnet-4-6")
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--db", default="agent.db")
    args = parser.parse_args(argv)

    session = Session.create(SQLiteStore(args.db), title="calculator agent")
    client = get_client(f"anthropic:{args.model}", base_url=args.base_url)
    agent = Agent(client, session, tools=[CALCULATOR], system="Use the calculator for arithmetic.",
                  max_tokens=1024, max_turns=8)
    result = agent.run_sync(args.question)
    print(result.text)
    print(f"[{result.turns} turns, {result.usage.total_tokens} tokens, "
          f"{result.usage.cache_read_tokens} read from cache; session {session.id} in {args.db}]")
    return result


if __name__ == "__main__":
    main()

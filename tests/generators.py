"""Hypothesis strategies for content blocks, messages and provider-valid conversations.

Reusable by every test that needs transcripts (store round trips, strategy property tests):

* leaves: :func:`texts`, :func:`json_objects`, :func:`log_text` (realistic, seeded, any size);
* blocks: :func:`text_blocks`, :func:`thinking_blocks`, :func:`redacted_thinking_blocks`,
  :func:`tool_use_blocks`, :func:`tool_result_blocks`, :func:`any_blocks`;
* :func:`messages` — arbitrary messages (any role, any block order, empties): for
  record/view and codec round trips, which must be lossless for *any* message;
* :func:`conversations` — provider-valid alternating conversations: a user task, then
  assistant turns with optional thinking, text, zero or more (parallel) tool calls, each
  answered in the next user message (results in any order, empty, huge or error outputs,
  string or text-part content), sometimes followed by user text in the same message.
  Options select what a round trip can represent (``openai_compatible``) and whether the
  last tool call may be left pending (an interrupted session).

Tool ids are unique within a conversation. Valid conversations never contain an empty
text block (the Anthropic API rejects those); tool outputs may be empty.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

from ctxmem.messages import (
    ContentBlock,
    Message,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)

TOOL_NAMES = ("read_file", "edit_file", "compile", "check", "benchmark", "profile", "bash", "git_log")

# --------------------------------------------------------------------------- leaves

_WORDS = (
    "kernel", "tile", "warp", "occupancy", "register", "spill", "shared", "memory", "error",
    "latency", "BLOCK_M", "softmax", "mask", "fp16", "timeout", "config", "PASS", "FAIL",
)
_LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARNING", "ERROR")


def log_text(seed: int, n_lines: int) -> str:
    """Realistic log-like text (timestamps, levels, paths, numbers, stack traces), seeded."""
    rng = random.Random(seed)
    out = []
    t = 1_700_000_000.0 + seed
    for i in range(n_lines):
        t += rng.expovariate(20)
        kind = rng.random()
        if kind < 0.7:
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 14)))
            out.append(
                f"{t:.6f} {rng.choice(_LEVELS):<7} [worker-{rng.randint(0, 15)}] {words} "
                f"value={rng.uniform(-1e3, 1e3):.4g} step={i}"
            )
        elif kind < 0.85:
            out.append(
                f'  File "/src/pkg/mod_{rng.randint(0, 99)}.py", line {rng.randint(1, 900)}, '
                f"in fn_{rng.randint(0, 50)}"
            )
        elif kind < 0.95:
            out.append(
                " | ".join(f"{rng.uniform(0, 100):8.3f}" for _ in range(rng.randint(3, 8)))
            )
        else:
            out.append(f"{rng.getrandbits(160):040x} {rng.choice(_WORDS)}")
    return "\n".join(out)


# Text with the characters that break naive code: newlines, tabs, quotes, backslashes,
# JSON punctuation, non-ASCII (accents, CJK, emoji), NUL and other control characters,
# and strings that look like special tokens.
_TRICKY = st.sampled_from(
    ["\n", "\t", '"', "\\", "{", "}", "[", "]", ",", ":", "é", "中文", "🚀", "\x00", "\x1b[31m",
     "<|endoftext|>", "<|im_start|>", "  ", "\r\n", "null", "'"]
)


def _splice(a: str, t1: str, b: str, t2: str, c: str) -> str:
    return a + t1 + b + t2 + c


def texts(*, min_size: int = 0, max_size: int = 200) -> st.SearchStrategy[str]:
    """Text of any Unicode (no surrogates), often with tricky fragments spliced in."""
    plain = st.text(min_size=min_size, max_size=max_size)
    part = st.text(max_size=max(1, max_size // 4))
    tricky = st.builds(_splice, part, _TRICKY, part, _TRICKY, part).filter(
        lambda s: min_size <= len(s) <= max(max_size, min_size)
    )
    return st.one_of(plain, tricky)


def nonempty_texts(max_size: int = 200) -> st.SearchStrategy[str]:
    return texts(min_size=1, max_size=max_size).filter(lambda s: s != "")


def huge_outputs(min_lines: int = 500, max_lines: int = 3000) -> st.SearchStrategy[str]:
    """Large tool outputs (tens to hundreds of KB) built from seeded log text."""
    return st.builds(log_text, st.integers(0, 2**32), st.integers(min_lines, max_lines))


def tool_outputs() -> st.SearchStrategy[str]:
    """Tool output text: usually short, sometimes empty, sometimes log-like or huge."""
    return st.one_of(
        texts(max_size=300),
        st.just(""),
        st.builds(log_text, st.integers(0, 2**32), st.integers(1, 40)),
        huge_outputs(),
    )


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    return st.recursive(
        _json_scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text(max_size=10), inner, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 8) -> st.SearchStrategy[dict[str, Any]]:
    """Tool inputs: JSON objects (finite floats only, so equality survives a JSON round trip)."""
    return st.dictionaries(texts(max_size=16), json_values(max_leaves), max_size=4)


# --------------------------------------------------------------------------- blocks


def text_blocks(*, allow_empty: bool = True) -> st.SearchStrategy[TextBlock]:
    return st.builds(TextBlock, texts() if allow_empty else nonempty_texts())


def thinking_blocks() -> st.SearchStrategy[ThinkingBlock]:
    return st.builds(
        ThinkingBlock,
        nonempty_texts(300),
        st.one_of(st.just(""), st.text(alphabet="abcdef0123456789", min_size=8, max_size=64)),
    )


def redacted_thinking_blocks() -> st.SearchStrategy[RedactedThinkingBlock]:
    return st.builds(RedactedThinkingBlock, st.text(alphabet="ABCDEFabcdef0123456789+/=", min_size=1, max_size=80))


def tool_ids() -> st.SearchStrategy[str]:
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=24).map(
        lambda s: "toolu_" + s
    )


def tool_use_blocks(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[ToolUseBlock]:
    return st.builds(
        ToolUseBlock,
        ids if ids is not None else tool_ids(),
        st.one_of(st.sampled_from(TOOL_NAMES), st.text(min_size=1, max_size=20)),
        json_objects(),
    )


def result_contents(outputs: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str | tuple[TextBlock, ...]]:
    out = outputs if outputs is not None else tool_outputs()
    return st.one_of(
        out,
        out,
        st.lists(st.builds(TextBlock, texts(max_size=200)), max_size=3).map(tuple),
    )


def tool_result_blocks(
    tool_use_id: str | st.SearchStrategy[str] | None = None,
    outputs: st.SearchStrategy[str] | None = None,
) -> st.SearchStrategy[ToolResultBlock]:
    if tool_use_id is None:
        ids: st.SearchStrategy[str] = tool_ids()
    elif isinstance(tool_use_id, str):
        ids = st.just(tool_use_id)
    else:
        ids = tool_use_id
    return st.builds(ToolResultBlock, ids, result_contents(outputs), st.booleans())


def _small_outputs() -> st.SearchStrategy[str]:
    return st.one_of(texts(max_size=200), st.builds(log_text, st.integers(0, 2**32), st.integers(1, 20)))


def any_blocks(role: str | None = None) -> st.SearchStrategy[ContentBlock]:
    """Any block a message of ``role`` may hold, unrelated to its neighbours.

    Tool calls belong to assistant messages and tool results to user messages (the roles
    the providers give them); ``role=None`` draws from both.
    """
    common: list[st.SearchStrategy[Any]] = [text_blocks(), thinking_blocks(), redacted_thinking_blocks()]
    if role in (None, "assistant"):
        common.append(tool_use_blocks())
    if role in (None, "user"):
        common.append(tool_result_blocks(outputs=_small_outputs()))
    return st.one_of(*common)


@st.composite
def messages(draw: st.DrawFn, *, max_blocks: int = 6) -> Message:
    """Arbitrary messages: any role, any role-appropriate blocks in any order, even none.

    Not necessarily provider-valid (orphan results, empty texts, thinking after text):
    for codec and record/view round trips, which must be lossless for any of these.
    """
    role = draw(st.sampled_from(("user", "assistant")))
    return Message(role, tuple(draw(st.lists(any_blocks(role), max_size=max_blocks))))


def message_lists(*, max_size: int = 8) -> st.SearchStrategy[list[Message]]:
    return st.lists(messages(), max_size=max_size)


# --------------------------------------------------------------------------- conversations


@st.composite
def conversations(
    draw: st.DrawFn,
    *,
    min_turns: int = 1,
    max_turns: int = 6,
    openai_compatible: bool = False,
    allow_pending: bool = False,
    max_parallel: int = 4,
    outputs: st.SearchStrategy[str] | None = None,
) -> list[Message]:
    """A provider-valid conversation (see the module docstring).

    ``openai_compatible=True`` keeps each message in the block order chat-completions can
    express (assistant: thinking, redacted thinking, text, tool calls; user: results, then
    text) and at most one user text part after results. Otherwise assistant text and
    tool calls may interleave. ``allow_pending=True`` may end on an assistant message whose
    tool calls have no results yet.
    """
    out_strategy = outputs if outputs is not None else tool_outputs()
    prefix = draw(st.text(alphabet="abcdefghij", max_size=4))
    next_id = 0

    def new_id() -> str:
        nonlocal next_id
        next_id += 1
        return f"toolu_{prefix}{next_id:04d}"

    msgs: list[Message] = [Message("user", tuple(draw(st.lists(text_blocks(allow_empty=False), min_size=1, max_size=2))))]
    turns = draw(st.integers(min_turns, max_turns))
    for turn in range(turns):
        blocks: list[ContentBlock] = []
        if draw(st.integers(0, 4)) == 0:
            blocks.extend(draw(st.lists(thinking_blocks(), min_size=1, max_size=2)))
        if draw(st.integers(0, 9)) == 0:
            blocks.append(draw(redacted_thinking_blocks()))
        n_calls = draw(st.sampled_from([0, 1, 1, 1, 2, max_parallel]))
        n_texts = draw(st.integers(0 if n_calls else 1, 2))
        text_part = [draw(text_blocks(allow_empty=False)) for _ in range(n_texts)]
        calls = [draw(tool_use_blocks(st.just(new_id()))) for _ in range(n_calls)]
        if openai_compatible or not (text_part and calls):
            tail: list[ContentBlock] = [*text_part, *calls]
        else:
            tail = list(draw(st.permutations([*text_part, *calls])))
        blocks.extend(tail)
        msgs.append(Message("assistant", tuple(blocks)))
        last = turn == turns - 1
        if calls:
            if last and allow_pending and draw(st.booleans()):
                break
            order = draw(st.permutations(calls))
            results: list[ContentBlock] = [
                draw(tool_result_blocks(c.id, out_strategy)) for c in order
            ]
            if draw(st.integers(0, 4)) == 0:
                results.append(draw(text_blocks(allow_empty=False)))
            msgs.append(Message("user", tuple(results)))
        elif not last or draw(st.booleans()):
            msgs.append(Message("user", (draw(text_blocks(allow_empty=False)),)))
    return msgs


def tool_ids_in(conversation: list[Message]) -> list[str]:
    return [u.id for m in conversation for u in m.tool_uses]

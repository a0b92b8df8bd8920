"""A local Hugging Face ``transformers`` model as a :class:`~ctxmem.clients.base.ModelClient`.

Loads a causal LM and its tokenizer from a local path or a hub name (``local_files_only``
by default: ctxmem never downloads unless asked), renders the conversation with the
tokenizer's chat template, and generates on CPU or GPU. torch and transformers are imported
when the client is constructed.

**Tool calls** use the JSON convention of Qwen/Hermes-style templates: the model writes
``<tool_call>{"name": "...", "arguments": {...}}</tool_call>`` (several allowed). A reply
that is nothing but such a JSON object (optionally in a ```json fence) also counts. Text
outside the tags becomes text blocks; ``<think>…</think>`` becomes a thinking block. Tool
specs go to the template's ``tools`` argument when the template uses it; otherwise the
convention and the tool list are appended to the system prompt. Tool-call ids are derived
from the prompt, so the same conversation yields the same ids.

Usage is exact: ``input_tokens`` is the rendered prompt's length, ``output_tokens`` the
number of generated tokens. There is no prompt cache. Generation runs in a worker thread,
one request at a time per client, so the event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ctxmem.clients.base import BaseClient, CacheBreakpoints, Response, ThinkingConfig, Usage
from ctxmem.errors import ConfigError, MissingDependencyError, ProviderError
from ctxmem.messages import (
    ContentBlock,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolSpec,
    ToolUseBlock,
    to_openai,
    tool_to_openai,
)

PROVIDER = "local"

TOOL_INSTRUCTIONS = (
    "You can call tools. To call one, reply with "
    '<tool_call>{{"name": "<tool name>", "arguments": {{...}}}}</tool_call>. Tools:\n{tools}'
)

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def _call_from_json(text: str) -> tuple[str, dict[str, Any]] | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("input", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return obj["name"], args


def parse_tool_calls(text: str, *, id_prefix: str = "call") -> tuple[ContentBlock, ...]:
    """Generated text → content blocks, following the JSON tool-call convention above.

    A ``<tool_call>`` whose body is not a JSON object with a string ``name`` stays text,
    so a malformed call is visible to the agent rather than dropped.
    """
    blocks: list[ContentBlock] = []
    for m in _THINK.finditer(text):
        blocks.append(ThinkingBlock(m.group(1).strip()))
    text = _THINK.sub("", text)
    calls: list[tuple[str, dict[str, Any]]] = []
    pieces: list[str] = []
    last = 0
    for m in _TOOL_CALL.finditer(text):
        call = _call_from_json(m.group(1))
        if call is None:
            continue
        pieces.append(text[last : m.start()])
        last = m.end()
        calls.append(call)
    pieces.append(text[last:])
    rest = "".join(pieces).strip()
    if not calls and rest:
        fenced = _FENCE.match(rest)
        call = _call_from_json(fenced.group(1) if fenced else rest)
        if call is not None:
            calls.append(call)
            rest = ""
    if rest:
        blocks.append(TextBlock(rest))
    blocks.extend(ToolUseBlock(f"{id_prefix}_{i}", name, args) for i, (name, args) in enumerate(calls))
    return tuple(blocks)


def template_messages(messages: Sequence[Message], system: str | None) -> list[dict[str, Any]]:
    """Chat-completions dicts as HF chat templates expect them (arguments as dicts, text content)."""
    out = to_openai(messages, system)
    for m in out:
        if isinstance(m.get("content"), list):
            m["content"] = "".join(p.get("text", "") for p in m["content"])
        if m["role"] == "assistant" and m.get("content") is None:
            m["content"] = ""
        for call in m.get("tool_calls") or ():
            fn = call["function"]
            fn["arguments"] = json.loads(fn["arguments"])
    return out


class TransformersClient(BaseClient):
    """Generate with a local transformers causal LM.

    ``device``: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``…
    ``local_files_only``: never download (the default); set False to allow the hub.
    ``seed``: seeds torch before each sampled generation, for reproducible runs.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        local_files_only: bool = True,
        seed: int | None = 0,
        trust_remote_code: bool = False,
    ):
        try:
            import torch
            import transformers
        except ImportError:
            raise MissingDependencyError("transformers", "hf", "The local transformers client") from None
        self._torch = torch
        self.model = str(model)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.seed = seed
        try:
            auto_tokenizer: Any = transformers.AutoTokenizer
            auto_model: Any = transformers.AutoModelForCausalLM
            self.tokenizer: Any = auto_tokenizer.from_pretrained(
                self.model, local_files_only=local_files_only, trust_remote_code=trust_remote_code
            )
            torch_dtype: Any = dtype if dtype == "auto" else getattr(torch, dtype)
            self.lm: Any = auto_model.from_pretrained(
                self.model,
                dtype=torch_dtype,
                local_files_only=local_files_only,
                trust_remote_code=trust_remote_code,
            ).to(device)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"could not load a transformers model from {self.model!r}: {exc}. Give a local "
                "directory with config.json, weights and a tokenizer, or pass local_files_only=False "
                "to allow a download.",
                field="model",
            ) from None
        self.lm.eval()
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer of {self.model!r} has no chat template; set tokenizer.chat_template",
                field="model",
            )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersClient(model={self.model!r}, device={self.device!r})"

    def render(
        self, messages: Sequence[Message], system: str | None = None, tools: Sequence[ToolSpec] | None = None
    ) -> str:
        """The prompt string the model sees (chat template, generation prompt appended)."""
        template = str(self.tokenizer.chat_template)
        kwargs: dict[str, Any] = {}
        if tools and "tools" in template:
            kwargs["tools"] = [tool_to_openai(t) for t in tools]
        elif tools:
            listing = "\n".join(json.dumps(tool_to_openai(t)["function"]) for t in tools)
            extra = TOOL_INSTRUCTIONS.format(tools=listing)
            system = f"{system}\n\n{extra}" if system else extra
        prompt = self.tokenizer.apply_chat_template(
            template_messages(messages, system), tokenize=False, add_generation_prompt=True, **kwargs
        )
        return str(prompt)

    def _generate(self, prompt: str, max_tokens: int, temperature: float | None) -> tuple[str, int, int]:
        torch = self._torch
        with self._lock, torch.inference_mode():
            enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
            sample = bool(temperature)
            if sample and self.seed is not None:
                torch.manual_seed(self.seed)
            kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "do_sample": sample}
            if sample:
                kwargs["temperature"] = temperature
            pad = self.tokenizer.pad_token_id
            kwargs["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
            out = self.lm.generate(**enc, **kwargs)
            n_in = int(enc["input_ids"].shape[1])
            new = out[0, n_in:]
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            return str(text), n_in, int(new.shape[0])

    async def request(
        self,
        messages: Sequence[Message],
        *,
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
        max_tokens: int,
        temperature: float | None = None,
        cache_breakpoints: CacheBreakpoints | None = None,
        thinking: ThinkingConfig | None = None,
    ) -> Response:
        """Generate locally with the transformers model (the contract: :meth:`~ctxmem.clients.ModelClient.request`).

        The prompt is rendered with the model's chat template and counted by its own
        tokenizer (usage has no cache part); tool calls are parsed from the generated text.
        A generation failure (out of memory, a shape error) raises
        :class:`~ctxmem.errors.ProviderError`.
        """
        prompt = self.render(messages, system, tools)
        try:
            text, n_in, n_out = await asyncio.to_thread(self._generate, prompt, max_tokens, temperature)
        except RuntimeError as exc:  # CUDA OOM, shape errors, …
            raise ProviderError(f"local generation with {self.model!r} failed: {exc}", provider=PROVIDER) from exc
        prefix = "call_" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:10]
        blocks = parse_tool_calls(text, id_prefix=prefix)
        if any(isinstance(b, ToolUseBlock) for b in blocks):
            stop = "tool_use"
        elif n_out >= max_tokens:
            stop = "max_tokens"
        else:
            stop = "end_turn"
        return Response(content=blocks, stop_reason=stop, usage=Usage(n_in, n_out), model=self.model)

    async def count_tokens(
        self,
        messages: Sequence[Message],
        system: str | None = None,
        tools: Sequence[ToolSpec] | None = None,
    ) -> int:
        """Exact prompt length in this model's tokens."""
        prompt = self.render(messages, system, tools)
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

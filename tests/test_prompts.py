"""Prompts fit the engine's context window with room for the answer, best passages first."""

from __future__ import annotations

from privatellm.config import EngineSettings
from privatellm.engines.fake import FakeEngine
from privatellm.prompts import build_messages
from privatellm.types import Chunk, ScoredChunk


def _engine(context_tokens: int) -> FakeEngine:
    """An engine counting a token per word: enough to check the budget arithmetic."""
    return FakeEngine(EngineSettings(kind="fake", context_tokens=context_tokens))


def _hit(n: int, words: int) -> ScoredChunk:
    chunk = Chunk(f"c{n}", "d", "/docs/a.pdf", 1, n, 0, 1, " ".join([f"w{n}"] * words))
    return ScoredChunk(chunk, 1.0 - n / 10)


def test_passages_stop_before_the_window_overflows() -> None:
    engine = _engine(500)
    hits = [_hit(n, 100) for n in range(5)]
    messages, used = build_messages("what is w1?", hits, engine, answer_tokens=100)
    assert [h.chunk.id for h in used] == ["c0", "c1"]
    prompt = messages[-1]["content"]
    assert prompt.startswith("[1] w0") and "[2] w1" in prompt and "w2" not in prompt
    assert engine.count_tokens(prompt) + 100 <= engine.context_tokens


def test_no_passage_fits_gives_a_question_only_prompt() -> None:
    messages, used = build_messages("q?", [_hit(0, 5000)], _engine(300), answer_tokens=100)
    assert used == [] and "Question: q?" in messages[-1]["content"]

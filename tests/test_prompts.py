"""Prompts fit the engine's context window with room for the answer, best passages first, cut
to the prompt budget around the sentences that share the question's words."""

from __future__ import annotations

from privatellm.config import AnswerSettings, EngineSettings
from privatellm.engines import Message
from privatellm.engines.fake import FakeEngine
from privatellm.prompts import INSTRUCTION, MIN_PASSAGE_TOKENS, build_messages, excerpt
from privatellm.types import Chunk, ScoredChunk


def _engine(context_tokens: int) -> FakeEngine:
    """An engine counting a token per word: enough to check the budget arithmetic."""
    return FakeEngine(EngineSettings(kind="fake", context_tokens=context_tokens))


def _hit(n: int, words: int) -> ScoredChunk:
    return _text_hit(n, " ".join([f"w{n}"] * words))


def _text_hit(n: int, text: str) -> ScoredChunk:
    return ScoredChunk(Chunk(f"c{n}", "d", "/docs/a.pdf", 1, n, 0, 1, text), 1.0 - n / 10)


def _filler(n: int) -> str:
    """Returns n sentences of eight words that share nothing with the questions below."""
    return " ".join(f"Filler sentence number {i} says nothing useful here." for i in range(n))


def _passages(messages: list[Message]) -> list[str]:
    return [p for p in messages[-1]["content"].split("\n\n") if p.startswith("[")]


def test_passages_stop_before_the_window_overflows() -> None:
    engine = _engine(500)
    hits = [_hit(n, 100) for n in range(5)]
    messages, used = build_messages("what is w1?", hits, engine, 100, passage_tokens=0)
    assert [h.chunk.id for h in used] == ["c0", "c1"]
    prompt = messages[-1]["content"]
    assert [p[:6] for p in _passages(messages)] == ["[1] w0", "[2] w1"] and "w2" not in prompt
    assert engine.count_tokens(prompt) + 100 <= engine.context_tokens


def test_no_passage_fits_gives_a_question_only_prompt() -> None:
    messages, used = build_messages("q?", [_hit(0, 5000)], _engine(300), 100, passage_tokens=0)
    assert used == [] and "Question: q?" in messages[-1]["content"]


def test_the_default_budget_is_the_setting_default() -> None:
    engine = _engine(2048)
    hits = [_text_hit(n, _filler(40)) for n in range(3)]
    by_default, _ = build_messages("q?", hits, engine, 100)
    default = AnswerSettings().prompt_tokens
    as_set, _ = build_messages("q?", hits, engine, 100, passage_tokens=default)
    assert by_default == as_set


def test_passages_are_cut_to_the_budget_around_the_sentence_asked_about() -> None:
    engine = _engine(2048)
    answer = "The harbour bridge opened in 1932 after eight years of work."
    hits = [_text_hit(0, f"{_filler(20)} {answer} {_filler(20)}"), _text_hit(1, _filler(40))]
    question = "When did the harbour bridge open?"
    messages, used = build_messages(question, hits, engine, 100, passage_tokens=120)
    assert used == hits  # the chunks themselves: citations are resolved against their full text
    first, second = _passages(messages)
    assert first.startswith("[1] ") and answer in first and second.startswith("[2] Filler")
    assert sum(engine.count_tokens(p) + 2 for p in (first, second)) <= 120


def test_a_short_passage_is_whole_and_leaves_its_share_to_the_next() -> None:
    engine = _engine(2048)
    hits = [_text_hit(0, "A short title."), _text_hit(1, _filler(40))]
    messages, _ = build_messages("q?", hits, engine, 100, passage_tokens=200)
    short, long = _passages(messages)
    assert short == "[1] A short title." and engine.count_tokens(long) > 150


def test_a_small_budget_gives_fewer_passages_not_slivers() -> None:
    hits = [_text_hit(n, _filler(40)) for n in range(5)]
    _, used = build_messages("q?", hits, _engine(2048), 100, passage_tokens=2 * MIN_PASSAGE_TOKENS)
    assert used == hits[:2]


def test_the_context_window_still_caps_a_large_budget() -> None:
    engine = _engine(500)
    messages, used = build_messages("q?", [_hit(0, 5000)], engine, 100, passage_tokens=10_000)
    assert used and engine.count_tokens(messages[-1]["content"]) + 100 <= engine.context_tokens


def test_excerpt_of_one_long_sentence_is_its_start() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    assert excerpt("word7?", text, 50, _engine(2048)) == " ".join(f"word{i}" for i in range(50))


def test_excerpt_finds_the_chinese_sentence_asked_about() -> None:
    filler = "这一句和问题没有关系。" * 20
    text = f"{filler}天水围河位于元朗区。{filler}"
    assert "天水围河位于元朗区。" in excerpt("天水围河在哪里？", text, 40, _engine(2048))


def test_the_fixed_instruction_comes_first_so_every_prompt_shares_its_start() -> None:
    engine = _engine(2048)
    one, _ = build_messages("q1?", [_text_hit(0, "Alpha.")], engine, 100)
    two, _ = build_messages("q2?", [_text_hit(1, "Beta.")], engine, 100)
    assert one[-1]["content"].startswith(INSTRUCTION) and two[-1]["content"].startswith(INSTRUCTION)
    assert one[-1]["content"].endswith("Question: q1?")


def test_a_budget_too_small_for_any_text_gives_no_passage() -> None:
    _, used = build_messages("q?", [_hit(0, 50)], _engine(2048), 100, passage_tokens=3)
    assert used == []

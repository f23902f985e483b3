"""The scripted engine tests run on: chosen by settings, replays its script, records its calls."""

from __future__ import annotations

import threading
import time
from collections.abc import Generator

import pytest

from privatellm.config import EngineSettings
from privatellm.engines import Message, Sampling, build_engine
from privatellm.engines.fake import FakeEngine
from privatellm.errors import ModelError

QUESTION: list[Message] = [{"role": "user", "content": "Question: how high?"}]


def _engine(**settings: object) -> FakeEngine:
    engine = build_engine(EngineSettings.model_validate({"kind": "fake", **settings}))
    assert isinstance(engine, FakeEngine)
    return engine


def test_the_script_is_replayed_in_order_word_by_word() -> None:
    engine = _engine(script=["First reply [1].", "Second\nreply."])
    first = list(engine.stream(QUESTION))
    assert first == ["First", " reply", " [1]."]
    assert "".join(engine.stream(QUESTION)) == "Second\nreply."


def test_an_exhausted_script_fails_with_a_model_error() -> None:
    engine = _engine(script=["Only one."])
    assert "".join(engine.stream(QUESTION)) == "Only one."
    with pytest.raises(ModelError, match="script is exhausted"):
        list(engine.stream(QUESTION))


def test_without_a_script_it_quotes_the_first_sentence_of_the_first_passage() -> None:
    prompt = "[1] It was 3.5 m long. It rained.\n\n[2] Other.\n\nQuestion: how long?"
    engine = _engine()
    assert "".join(engine.stream([{"role": "user", "content": prompt}])) == "It was 3.5 m long. [1]"
    chinese = "[1] 长城很长。故宫在北京。\n\nQuestion: 长城?"
    assert "".join(engine.stream([{"role": "user", "content": chinese}])) == "长城很长。 [1]"
    assert "".join(engine.stream(QUESTION)) == "I don't know."


def test_calls_are_recorded_with_their_sampling() -> None:
    engine = _engine(script=["a b c d e", "one. two"])
    sampling = Sampling(max_tokens=3, temperature=0.7)
    assert "".join(engine.stream(QUESTION, sampling)) == "a b c"  # max_tokens counts words
    assert "".join(engine.stream(QUESTION, Sampling(stop=(". ",)))) == "one"
    assert engine.prompts == [QUESTION, QUESTION]
    assert engine.samplings == [sampling, Sampling(stop=(". ",))]


def test_settings_max_tokens_apply_when_sampling_leaves_it() -> None:
    engine = _engine(script=["a b c d e"], max_tokens=2)
    assert "".join(engine.stream(QUESTION)) == "a b"


def test_tokens_are_words_plus_cjk_characters() -> None:
    engine = _engine()
    assert engine.count_tokens("two words") == 2
    assert engine.count_tokens("长城 很长") == 2 + 4
    assert engine.count_tokens("カタカナ 한국") == 2 + 6


def test_delay_makes_overlapping_replies_visible() -> None:
    engine = _engine(script=["a b c", "a b c"], delay_seconds=0.05)
    started = time.monotonic()
    threads = [threading.Thread(target=lambda: list(engine.stream(QUESTION))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert time.monotonic() - started >= 0.15  # three words, each after the delay
    assert engine.most_active == 2 and engine.active == 0


def test_an_abandoned_reply_is_no_longer_active() -> None:
    engine = _engine(script=["a b c"])
    reply = engine.stream(QUESTION)
    assert isinstance(reply, Generator)  # what a caller closes to abandon the reply
    next(reply)
    assert engine.active == 1
    reply.close()
    assert engine.active == 0

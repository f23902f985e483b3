"""Answers: citations resolved from markers or attributed, abstention, follow-ups, summaries."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import write_texts

from privatellm.answering import ABSTAIN
from privatellm.citations import attribute, render
from privatellm.config import EngineSettings, Settings
from privatellm.embeddings import Embedder
from privatellm.engines import Message, Sampling
from privatellm.engines.fake import FakeEngine
from privatellm.service import Service
from privatellm.summaries import split_windows
from privatellm.text import split_sentences
from privatellm.types import Chunk, ScoredChunk

PASSAGES = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Llama 2 was released by Meta in July 2023 with 7, 13 and 70 billion parameters.",
    "Mount Everest is 8,849 metres high and lies on the border of Nepal and China.",
]


def _hits(texts: Sequence[str]) -> list[ScoredChunk]:
    return [
        ScoredChunk(Chunk(f"c{n}", "d", "/docs/a.pdf", n + 1, n, 0, len(t), t), 0.9 - n / 10)
        for n, t in enumerate(texts)
    ]


def test_split_sentences_english_and_chinese() -> None:
    assert split_sentences("It was 3.5 m long. It rained! 长城很长。故宫在北京。") == [
        "It was 3.5 m long.",
        "It rained!",
        "长城很长。",
        "故宫在北京。",
    ]


def test_sentences_are_tied_to_the_passage_that_supports_them(real_embedder: Embedder) -> None:
    answer = (
        "Llama 2 was released in July 2023. [7] "
        "The Eiffel Tower was finished in 1889 [2]. "
        "The tower is painted bright green by volunteers every spring."
    )
    sentences = attribute(answer, _hits(PASSAGES), real_embedder, min_support=0.5)
    assert [s.cited for s in sentences] == [(2,), (1,), ()]  # [7] invented, [2] wrong: fixed
    assert [s.supported for s in sentences] == [True, True, False]
    text = render(sentences)
    assert "July 2023 [2]." in text and "1889 [1]." in text and "[7]" not in text


def _scripted(settings: Settings, *replies: str, **engine: object) -> Service:
    """Returns a service whose engine, chosen by settings, replays replies and records calls."""
    chosen = EngineSettings.model_validate({"kind": "fake", "script": list(replies), **engine})
    return Service(settings.model_copy(update={"engine": chosen}))


def _fake(service: Service) -> FakeEngine:
    engine = service.engine
    assert isinstance(engine, FakeEngine)  # built from engine.kind: fake
    return engine


def _prompts(service: Service) -> list[str]:
    """Returns the last message of each call the model got."""
    return [messages[-1]["content"] for messages in _fake(service).prompts]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_texts(tmp_path / "docs", PASSAGES)


def test_weak_evidence_abstains_without_calling_the_model(
    fake_settings: Settings, corpus: Path
) -> None:
    service = _scripted(fake_settings)
    service.ingest([corpus])
    reply = service.ask("Who painted the Sistine Chapel ceiling?")
    assert "".join(reply) == ABSTAIN
    answer = reply.answer()
    assert answer.abstained and answer.citations == [] and _fake(service).prompts == []


def test_answer_cites_the_passage_the_model_marked(fake_settings: Settings, corpus: Path) -> None:
    service = _scripted(fake_settings, "Mount Everest is 8,849 metres high [1].")
    service.ingest([corpus])
    reply = service.ask("How high is Mount Everest?")
    assert "".join(reply) == "Mount Everest is 8,849 metres high [1]."
    answer = reply.answer()
    assert not answer.abstained
    assert [Path(c.source).name for c in answer.citations] == ["p2.txt"]
    assert "\n\n[1] Mount Everest" in _prompts(service)[0]  # after the instruction


def test_follow_up_is_rewritten_before_retrieval(fake_settings: Settings, corpus: Path) -> None:
    service = _scripted(
        fake_settings, "How high is Mount Everest in feet?", "About 29,032 feet [1]."
    )
    service.ingest([corpus])
    history: list[Message] = [
        {"role": "user", "content": "How high is Mount Everest?"},
        {"role": "assistant", "content": "8,849 metres [1]."},
    ]
    answer = service.ask("And in feet?", history=history).answer()
    assert answer.standalone == "How high is Mount Everest in feet?"
    rewrite = _prompts(service)[0]
    assert "Mount Everest" in rewrite and "And in feet?" in rewrite
    assert _fake(service).samplings[0].temperature == 0.0  # a rewrite is not sampled
    assert Path(answer.passages[0].chunk.source).name == "p2.txt"


def test_a_rambling_rewrite_falls_back_to_the_previous_question(
    fake_settings: Settings, corpus: Path
) -> None:
    service = _scripted(fake_settings, "Sure!\n" + "blah " * 200, "It is 8,849 metres high [1].")
    service.ingest([corpus])
    history: list[Message] = [{"role": "user", "content": "Tell me about Mount Everest."}]
    answer = service.ask("How high?", history=history).answer()
    assert answer.standalone == "Tell me about Mount Everest. How high?"


def test_windows_respect_the_budget() -> None:
    texts = ["a " * 40, "b " * 40, "c " * 40, "d " * 300]
    windows = split_windows(texts, lambda t: len(t.split()), budget=100)
    assert [w.split()[0] for w in windows] == ["a", "c", "d"]  # a+b fit one window
    assert all(len(w.split()) <= 100 for w in windows)


def test_summarize_maps_then_combines(fake_settings: Settings, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long.txt").write_text(
        "\n\n".join(f"Paragraph {n} says something about topic {n}. " * 12 for n in range(30)),
        encoding="utf-8",
    )
    service = _scripted(fake_settings, *[f"partial {n}." for n in range(50)], context_tokens=600)
    service.ingest([docs])
    summary = "".join(service.summarize(str(docs / "long.txt")))
    assert summary.startswith("partial")
    prompts = _prompts(service)
    maps = [p for p in prompts if p.endswith("at most three sentences.")]
    assert len(maps) >= 2  # the document did not fit one prompt
    assert prompts[-1].endswith("at most five sentences.")
    assert all(service.engine.count_tokens(p) < 600 for p in prompts)


def test_a_looping_answer_is_cut_at_the_first_repeat(fake_settings: Settings, corpus: Path) -> None:
    loop = "Mount Everest is 8,849 metres high. " * 6
    service = _scripted(fake_settings, loop)  # streamed word by word
    service.ingest([corpus])
    reply = service.ask("How high is Mount Everest?")
    streamed = "".join(reply)
    assert streamed.count("8,849") == 2  # stopped as soon as the repeat was complete
    assert reply.answer().text.count("8,849") == 1


def test_a_rewrite_that_is_not_a_question_falls_back(fake_settings: Settings, corpus: Path) -> None:
    said = "Mount Everest is 8,849 metres high [1]."
    service = _scripted(fake_settings, said, "It lies on the border of Nepal and China [1].")
    service.ingest([corpus])
    history: list[Message] = [
        {"role": "user", "content": "How high is Mount Everest?"},
        {"role": "assistant", "content": said},
    ]
    answer = service.ask("Where is it?", history=history).answer()
    assert answer.standalone == "How high is Mount Everest? Where is it?"


def test_an_echo_of_the_question_is_not_cited(real_embedder: Embedder) -> None:
    question = "When was the Eiffel Tower completed?"
    answer = "When was the Eiffel Tower completed? It was completed in 1889 for a fair."
    sentences = attribute(answer, _hits(PASSAGES), real_embedder, 0.5, question)
    assert [s.cited for s in sentences] == [(), (1,)]


TOWER = "The tower was finished in 1889 [1]."


def test_concurrent_questions_get_whole_answers_one_at_a_time(
    fake_settings: Settings, corpus: Path
) -> None:
    service = _scripted(fake_settings, *[TOWER] * 4, delay_seconds=0.01)
    service.ingest([corpus])
    texts: list[str] = []

    def ask(temperature: float) -> None:
        question = "When was the Eiffel Tower completed?"
        reply = service.ask(question, sampling=Sampling(temperature=temperature))
        texts.append("".join(reply))

    threads = [threading.Thread(target=ask, args=(t / 10,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    engine = _fake(service)
    assert engine.most_active == 1  # never two replies interleaved on one model
    assert texts == [TOWER] * 4
    assert sorted(s.temperature or 0 for s in engine.samplings) == [0, 0.1, 0.2, 0.3]


@pytest.mark.timeout(60)  # a model left held would block the second answer forever
def test_an_abandoned_answer_frees_the_model(fake_settings: Settings, corpus: Path) -> None:
    service = _scripted(fake_settings, TOWER, TOWER, delay_seconds=0.01)
    service.ingest([corpus])
    first = service.ask("When was the Eiffel Tower completed?")
    next(iter(first))  # the model is now busy with this answer
    assert _fake(service).active == 1
    first.close()  # the page's user asked something else instead
    assert _fake(service).active == 0
    second = service.ask("When was the Eiffel Tower completed?")
    assert "".join(second) == TOWER


def test_the_prompt_budget_setting_reaches_the_prompt(
    fake_settings: Settings, tmp_path: Path
) -> None:
    filler = " ".join(f"Filler sentence number {n} says nothing." for n in range(60))
    docs = write_texts(
        tmp_path / "long", [f"{filler} Mount Everest is 8,849 metres high. {filler}"]
    )
    prompts = []
    for budget in (0, 80):
        answer = fake_settings.answer.model_copy(update={"prompt_tokens": budget, "abstain": False})
        settings = fake_settings.model_copy(
            update={"answer": answer, "data_dir": tmp_path / f"d{budget}"}
        )
        service = _scripted(settings, "Mount Everest is 8,849 metres high [1].")
        service.ingest([docs])
        service.ask("How high is Mount Everest?", answer_mode="generate").answer()
        prompts.append(_prompts(service)[0])
    whole, cut = prompts
    assert "8,849 metres" in whole and "8,849 metres" in cut  # cut around what is asked
    assert "number 0 says" in whole and len(cut) < len(whole) / 3

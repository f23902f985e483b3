"""Extractive answers and answer modes: the sentence that answers, quoted with its span."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES, run_cli, write_texts

from privatellm.config import Settings
from privatellm.embeddings import Embedder
from privatellm.extract import Quote, agrees, asks_for, best_quote, holds_asked, supporting_span
from privatellm.service import Service
from privatellm.text import sentence_spans
from privatellm.types import Chunk, ScoredChunk

PASSAGES = [
    "Eiffel Tower. The tower stands on the Champ de Mars in Paris.\nIt was completed in 1889 "
    "for the World's Fair. Gustave Eiffel's company designed and built it.",
    "故宫位于北京市中心。它始建于1406年，1420年建成。故宫是明清两代的皇家宫殿；现在是博物院。",
]


def _hits(texts: list[str]) -> list[ScoredChunk]:
    return [
        ScoredChunk(Chunk(f"c{n}", f"d{n}", f"/docs/{n}.txt", None, 0, 0, len(t), t), 1.0)
        for n, t in enumerate(texts)
    ]


def test_wrapped_lines_are_not_sentence_ends_in_documents() -> None:
    text = "A 4-bit model needs a quarter\nof the memory.\n\nNext paragraph."
    assert [text[a:b] for a, b in sentence_spans(text, wrapped=True)] == [
        "A 4-bit model needs a quarter\nof the memory.",
        "Next paragraph.",
    ]
    assert len(sentence_spans(text)) == 3  # an answer's own line breaks do end sentences


def test_what_the_question_asks_for() -> None:
    assert asks_for("When was the tower completed?") == "date"
    assert asks_for("故宫哪一年建成？") == "date"
    assert asks_for("How many floors does it have?") == "number"
    assert asks_for("故宫有多少间房？") == "number"
    assert asks_for("Who designed it?") is None
    assert holds_asked("It was completed in 1889.", "date")
    assert not holds_asked("It was completed long ago.", "date")
    assert holds_asked("有九千多间房", "number")


def test_extract_quotes_the_sentence_that_answers(real_embedder: Embedder) -> None:
    hits = _hits(PASSAGES)
    quote = best_quote(WHEN, hits, real_embedder)
    assert quote is not None and quote.n == 1
    assert quote.text == "It was completed in 1889 for the World's Fair."
    assert PASSAGES[0][quote.start : quote.end] == quote.text  # offsets into the passage


def test_extract_answers_chinese(real_embedder: Embedder) -> None:
    quote = best_quote("故宫是哪一年建成的？", _hits(PASSAGES), real_embedder)
    assert quote is not None and quote.n == 2 and "1420年建成" in quote.text


def test_a_sentence_that_only_restates_the_question_cannot_win(real_embedder: Embedder) -> None:
    hits = _hits(["Where is the tower?\nThe tower stands in Paris."])
    quote = best_quote("Where is the tower?", hits, real_embedder)
    assert quote is not None and quote.text == "The tower stands in Paris."


def test_a_question_no_sentence_shares_a_word_with_gets_a_quote_or_none(
    real_embedder: Embedder,
) -> None:
    # Every overlap is 0 here (once a crash: numpy refused to divide an int array in place).
    quote = best_quote("Xylophones?", _hits(PASSAGES), real_embedder)
    assert quote is None or quote.n in (1, 2)


def test_a_short_best_sentence_is_completed_by_the_next(real_embedder: Embedder) -> None:
    hits = _hits(["Height: 330 m. That is the height with antennas, measured in 2022."])
    quote = best_quote("What is the height?", hits, real_embedder, max_sentences=2)
    assert quote is not None and quote.text == hits[0].chunk.text
    one = best_quote("What is the height?", hits, real_embedder, max_sentences=1)
    assert one is not None and one.text == "Height: 330 m."


def test_supporting_span_is_the_sentence_closest_to_the_claims() -> None:
    start, end = supporting_span(PASSAGES[0], ["The tower was finished in 1889."])
    assert PASSAGES[0][start:end] == "It was completed in 1889 for the World's Fair."


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_texts(tmp_path / "docs", PASSAGES)


WHEN = "When was the Eiffel Tower completed?"


def _service(tmp_path: Path, embedder: Embedder, corpus: Path, script: list[str]) -> Service:
    """Returns a service over corpus whose model gives the scripted replies, then fails."""
    engine = {"kind": "fake", "script": script}
    settings = Settings(data_dir=tmp_path / "data", engine=engine)  # type: ignore[arg-type]
    service = Service(settings, embedder=embedder)
    service.ingest([corpus])
    return service


def test_extract_calls_no_model(tmp_path: Path, corpus: Path, real_embedder: Embedder) -> None:
    service = _service(tmp_path, real_embedder, corpus, [])  # a model call would fail
    answer = service.ask(WHEN, answer_mode="extract").answer()
    assert answer.kind == "quoted" and answer.text.endswith("[1]") and "1889" in answer.text
    assert [c.quote for c in answer.citations] == ["It was completed in 1889 for the World's Fair."]


def test_auto_keeps_a_supported_answer(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    service = _service(tmp_path, real_embedder, corpus, ["The tower was completed in 1889 [1]."])
    answer = service.ask(WHEN, answer_mode="auto").answer()
    assert answer.kind == "generated" and answer.text == "The tower was completed in 1889 [1]."
    assert "1889" in answer.citations[0].quote  # the span of [1] that backs it


def test_auto_quotes_when_the_model_says_nothing_supported(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    script = ["The answer to this question is: the answer to this question is"]
    service = _service(tmp_path, real_embedder, corpus, script)
    answer = service.ask(WHEN, answer_mode="auto").answer()
    assert answer.kind == "quoted" and "1889" in answer.text


def test_auto_quotes_when_the_answer_lacks_the_asked_date(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    script = ["Gustave Eiffel's company designed and built the tower [1]."]  # supported, no date
    service = _service(tmp_path, real_embedder, corpus, script)
    answer = service.ask(WHEN, answer_mode="auto").answer()
    assert answer.kind == "quoted" and "1889" in answer.text
    generate = _service(tmp_path / "g", real_embedder, corpus, script)
    kept = generate.ask(WHEN, answer_mode="generate").answer()
    assert kept.kind == "generated" and "Gustave" in kept.text  # generate keeps the model's


def test_ask_json_reports_the_kind_and_the_quote_in_english_and_chinese(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli("--data-dir", data, "ingest", SAMPLES).returncode == 0
    for question, expected in [
        ("How much memory does a 4-bit quantized 7 billion parameter model need?", "4 GB"),
        ("4 比特量化可以把模型体积缩小到多少？", "四分之一"),
    ]:
        done = run_cli("--data-dir", data, "ask", "--answer", "extract", "--json", question)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        assert answer["answer_kind"] == "quoted", answer
        quote = answer["citations"][0]["quote"]
        assert expected in quote["text"] and expected in answer["answer"]
        cited = answer["citations"][0]
        assert cited["text"][quote["start"] : quote["end"]] == quote["text"]
        # the passages consulted but not cited are listed apart
        assert answer["consulted"] and cited["n"] not in {p["n"] for p in answer["consulted"]}
    shown = run_cli(
        "--data-dir", data, "ask", "--answer", "extract", "4 比特量化可以把模型体积缩小到多少？"
    )
    assert shown.returncode == 0, shown.stderr
    sources, consulted = shown.stdout.split("Sources:")[1].split("Also consulted (not cited):")
    assert sources.count("[") == 1 and consulted.count("(") >= 1


def test_one_generation_finishes_as_generate_and_as_auto(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    script = ["Gustave Eiffel's company designed and built the tower [1]."]  # supported, no date
    service = _service(tmp_path, real_embedder, corpus, script)  # one reply: a second call fails
    reply = service.ask(WHEN, answer_mode="auto")
    assert reply.answer().kind == "quoted" and "1889" in reply.answer().text
    assert (
        reply.answer("generate").kind == "generated" and "Gustave" in reply.answer("generate").text
    )
    assert reply.answer("extract").kind == "quoted"


def test_eval_compares_generate_and_auto_on_one_generation(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    from privatellm.engines.fake import FakeEngine
    from privatellm.evaluate import Item, evaluate

    script = ["Gustave Eiffel's company designed and built the tower [1]."]
    service = _service(tmp_path, real_embedder, corpus, script)
    item = Item("1", WHEN, "1889", "p0.txt", frozenset(), "en",
                "d", True)  # fmt: skip
    runs = evaluate(service, [item], corpus, "default", "hybrid", ["generate", "auto", "extract"])
    assert [r.kind for r in runs["generate"]] == ["generated"]
    assert [r.contains for r in runs["generate"]] == [False]
    assert [(r.kind, r.contains) for r in runs["auto"]] == [("quoted", True)]
    assert [(r.kind, r.contains) for r in runs["extract"]] == [("quoted", True)]
    engine = service.chat_model.engine
    assert isinstance(engine, FakeEngine) and len(engine.prompts) == 1


def test_auto_quotes_when_the_model_says_something_else_than_the_best_quote(
    tmp_path: Path, corpus: Path, real_embedder: Embedder
) -> None:
    # Supported by passage [1] and holding a date, yet not what the sentence that answers says.
    script = ["The tower stands on the Champ de Mars in Paris, built by 1889 [1]."]
    service = _service(tmp_path, real_embedder, corpus, script)
    reply = service.ask(WHEN, answer_mode="auto")
    assert reply.answer("generate").kind == "generated" and reply.answer("generate").citations
    answer = reply.answer()
    assert answer.kind == "quoted" and answer.text.startswith("It was completed in 1889")


def test_a_claim_agrees_with_a_quote_when_it_says_what_the_quote_says() -> None:
    quote = Quote(1, 0, 46, "It was completed in 1889 for the World's Fair.", 1.0)
    question = WHEN
    assert agrees("The tower was completed in 1889 [1].", quote, question)
    assert not agrees("It stands on the Champ de Mars in Paris since 1889 [1].", quote, question)
    assert not agrees("The tower was completed [1].", quote, question)  # the answer dropped

"""End to end with the real bundled models: a multi-page PDF in, answers citing the right page."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_pdf, run_cli

from privatellm.config import Settings, StoreSettings
from privatellm.embeddings import Embedder
from privatellm.service import Service

PAGES = [
    "Project Falcon annual report. This report describes the Falcon research station, its "
    "history, its equipment and its staff. It was prepared by the station office.",
    "History. The Falcon research station was opened in March 2019 in Tromso, Norway. "
    "Building it took four years and cost 212 million euros.",
    "Equipment. The station's main telescope has a mirror 3.6 metres wide. It observes the "
    "aurora borealis every winter night from October to March.",
    "Finances. Running costs rose by eight percent last year, mostly because of heating. "
    "The board approved a new budget in December.",
    "Staff. The station director is Ingrid Solberg, a physicist appointed in 2021. "
    "Forty-two people work at the station, eleven of them all year round.",
]
QUESTIONS = [
    ("When was the Falcon research station opened?", 2),
    ("How wide is the mirror of the station's main telescope?", 3),
    ("Who is the director of the Falcon station?", 5),
]


@pytest.fixture(scope="module")
def falcon(
    tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder, store_settings: StoreSettings
) -> Service:
    """The report ingested into each store kind in turn (embedded Chroma, a Chroma server)."""
    root = tmp_path_factory.mktemp("falcon")
    docs = root / "docs"
    docs.mkdir()
    make_pdf(docs / "falcon-report.pdf", PAGES)
    settings = Settings(data_dir=root / "data", store=store_settings)
    service = Service(settings, embedder=real_embedder)
    report = service.ingest([docs])
    assert report.paths("added") and not report.paths("failed")
    return service


@pytest.mark.parametrize(("question", "page"), QUESTIONS)
def test_answer_cites_the_page_that_holds_it(falcon: Service, question: str, page: int) -> None:
    reply = falcon.ask(question)
    streamed = "".join(reply)
    answer = reply.answer()
    assert streamed.strip() and not answer.abstained
    assert answer.passages[0].chunk.page == page  # retrieval put the right page first
    cited = [c.page for c in answer.citations]
    assert cited and cited[0] == page, (answer.text, cited)
    assert all(f"[{c.n}]" in answer.text for c in answer.citations)


def test_question_the_report_cannot_answer_is_declined(falcon: Service) -> None:
    answer = falcon.ask("What is the population of Lima, the capital of Peru?").answer()
    assert answer.abstained and answer.citations == []


def test_ask_json_through_the_cli(falcon: Service) -> None:
    data = falcon.settings.data_dir
    store = falcon.settings.store
    config = data.parent / "store.yaml"  # the CLI reaches the same store through its settings
    config.write_text(f"store: {{kind: {store.kind}, host: '{store.host}', port: {store.port}}}\n")
    result = run_cli(
        "--data-dir", data, "--config", config, "ask", "Who is the station director?", "--json"
    )
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) >= {"answer", "citations", "abstained"}
    assert body["abstained"] is False
    first = body["citations"][0]
    assert set(first) == {"n", "source", "doc_id", "page", "text", "score", "quote"}
    quote = first["quote"]
    assert first["text"][quote["start"] : quote["end"]] == quote["text"] != ""
    assert body["answer_kind"] in ("generated", "quoted")
    assert Path(first["source"]).name == "falcon-report.pdf" and first["page"] == 5

"""The Streamlit page, headless (streamlit.testing.v1.AppTest), on the fast fake models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import REPO, make_pdf
from streamlit.testing.v1 import AppTest

from privatellm.config import Settings
from privatellm.service import Service

EIFFEL = b"The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
EVEREST = b"Mount Everest is 8,849 metres high and lies on the border of Nepal and China."


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The page's settings, from the environment like the CLI's: a tmp data dir, fake models."""
    data = tmp_path / "data"
    monkeypatch.setenv("PRIVATELLM_DATA_DIR", str(data))
    monkeypatch.setenv("PRIVATELLM_EMBEDDING__KIND", "fake")
    monkeypatch.setenv("PRIVATELLM_ENGINE__KIND", "fake")
    monkeypatch.delenv("PRIVATELLM_CONFIG", raising=False)
    monkeypatch.setattr(sys, "argv", ["ui/app.py"])  # the page reads flags after `--` from argv
    return data


@pytest.fixture
def page(data_dir: Path) -> AppTest:
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    return at


def _upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader[0].set_value(list(files)).run()
    at.button(key="ingest").click().run()
    assert not at.exception
    return at


def _document_names(at: AppTest) -> list[str]:
    return [m.value.split("**")[1] for m in at.sidebar.markdown if "  \n" in m.value]


def _status(at: AppTest) -> str:
    return str(at.caption[0].value)


def test_page_shows_models_and_an_empty_collection(page: AppTest) -> None:
    assert "Engine **fake**" in _status(page)
    assert "collection **default**: 0 documents, 0 chunks" in _status(page)
    assert not page.error


def test_question_gets_a_streamed_answer_with_citations(page: AppTest) -> None:
    _upload(page, ("eiffel.txt", EIFFEL, "text/plain"), ("everest.txt", EVEREST, "text/plain"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    assert not page.exception and not page.error
    user, assistant = page.chat_message
    assert user.name == "user" and assistant.name == "assistant"
    assert "1889" in assistant.markdown[0].value and "[1]" in assistant.markdown[0].value
    labels = [e.label for e in assistant.expander]
    assert labels and labels[0].startswith("[1] eiffel.txt · score ")
    cited = assistant.expander[0].markdown[0].value  # the passage, its quote highlighted
    assert "Eiffel Tower was completed in 1889" in cited and ":orange-background[" in cited


def test_citation_names_the_page_of_a_pdf(page: AppTest, tmp_path: Path) -> None:
    pdf = make_pdf(
        tmp_path / "report.pdf",
        ["Introduction to bridges and towers.", EIFFEL.decode(), "Appendix on paint colours."],
    )
    _upload(page, ("report.pdf", pdf.read_bytes(), "application/pdf"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    assistant = page.chat_message[-1]
    assert assistant.expander[0].label.startswith("[1] report.pdf, p. 2 · score ")


def test_follow_up_keeps_the_conversation(page: AppTest) -> None:
    _upload(page, ("eiffel.txt", EIFFEL, "text/plain"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    page.chat_input[0].set_value("For which fair?").run()
    assert [m.name for m in page.chat_message] == ["user", "assistant"] * 2
    # retrieval saw the earlier question with the follow-up (the fake engine cannot rewrite)
    assert "Searched for: When was the Eiffel Tower completed" in page.chat_message[-1].caption[
        -1
    ].value.replace("\\", "")


def test_unanswerable_question_says_not_in_your_documents(page: AppTest) -> None:
    _upload(page, ("eiffel.txt", EIFFEL, "text/plain"))
    page.chat_input[0].set_value("zebra quantum saxophone?").run()
    assistant = page.chat_message[-1]
    assert "Not in your documents" in assistant.info[0].value
    assert not [e for e in assistant.expander if e.label.startswith("[")]  # nothing cited


def test_upload_lists_the_file_and_delete_removes_it(page: AppTest, data_dir: Path) -> None:
    _upload(page, ("本地笔记.txt", EIFFEL, "text/plain"))
    assert _document_names(page) == ["本地笔记\\.txt"]
    assert "1 document, 1 chunk" in _status(page)
    copy = data_dir / "uploads" / "default" / "本地笔记.txt"
    assert copy.read_bytes() == EIFFEL
    [remove] = [b for b in page.sidebar.button if b.key.startswith("remove-")]
    remove.click().run()
    assert _document_names(page) == []
    assert "0 documents, 0 chunks" in _status(page)
    assert not copy.exists()  # the uploaded copy goes with the document
    assert "Deleted 本地笔记.txt." in [s.value for s in page.success]


def test_bad_upload_shows_its_reason_and_good_ones_are_ingested(page: AppTest) -> None:
    _upload(
        page,
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", "application/pdf"),
        ("eiffel.txt", EIFFEL, "text/plain"),
        ("empty.txt", b"   \n", "text/plain"),
    )
    lines = [m.value for m in page.sidebar.markdown]
    assert any(
        "broken\\.pdf** — failed: " in line and "not a readable PDF" in line for line in lines
    )
    assert any("empty\\.txt** — failed: " in line for line in lines)
    assert any("eiffel\\.txt** — added" in line for line in lines)
    assert _document_names(page) == ["eiffel\\.txt"]


def test_collections_are_created_switched_and_deleted(page: AppTest, data_dir: Path) -> None:
    _upload(page, ("eiffel.txt", EIFFEL, "text/plain"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    page.text_input(key="new_collection").set_value("mountains").run()
    page.button(key="create").click().run()
    assert page.selectbox(key="collection").value == "mountains"
    assert _document_names(page) == [] and not page.chat_message  # its own documents and chat
    _upload(page, ("everest.txt", EVEREST, "text/plain"))
    assert _document_names(page) == ["everest\\.txt"]

    page.selectbox(key="collection").set_value("default").run()
    assert _document_names(page) == ["eiffel\\.txt"]
    assert len(page.chat_message) == 2  # the conversation in 'default' is still there

    page.selectbox(key="collection").set_value("mountains").run()
    assert page.button(key="delete_collection").disabled  # not without confirming
    page.checkbox(key="confirm_delete").check().run()
    page.button(key="delete_collection").click().run()
    assert page.selectbox(key="collection").value == "default"
    assert "mountains" not in page.selectbox(key="collection").options
    assert not (data_dir / "uploads" / "mountains").exists()
    assert not (data_dir / "lexical" / "mountains.npz").exists()


def test_service_errors_are_messages_not_tracebacks(page: AppTest) -> None:
    page.text_input(key="new_collection").set_value("no/slashes").run()
    page.button(key="create").click().run()
    assert not page.exception
    assert "invalid collection name 'no/slashes'" in page.error[0].value


def test_model_picker_offers_registered_models_only(page: AppTest) -> None:
    # No free-text path: the configured model (the fake engine, named as the bundled model it
    # stands in for) and the registered ones; tests/test_model_registry.py switches between two
    # with the real engine.
    assert page.selectbox(key="model").options == ["SmolLM2-135M-Instruct"]
    assert "model **SmolLM2-135M-Instruct**" in _status(page)  # as /v1/models names it


def test_page_reads_what_the_cli_ingested(data_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "everest.txt").write_bytes(EVEREST)
    Service(Settings(data_dir=data_dir, embedding={"kind": "fake"})).ingest([docs])  # type: ignore[arg-type]
    at = AppTest.from_file(str(REPO / "ui" / "app.py"), default_timeout=120).run()
    assert _document_names(at) == ["everest\\.txt"]
    assert "1 document, 1 chunk" in _status(at)


def _render(answer_code: str) -> AppTest:
    """Runs the page's answer view alone on an Answer built by answer_code."""
    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from privatellm.types import Answer, Chunk, Citation, ScoredChunk
from ui.app import _show_answer
hit = ScoredChunk(Chunk("c", "d", "/docs/report.pdf", 4, 0, 0, 9, "Passage text."), 0.51)
_show_answer({answer_code})
"""
    return AppTest.from_string(script, default_timeout=30).run()


def test_answer_citing_nothing_lists_the_sources_consulted() -> None:
    at = _render('Answer("q?", "q?", "Some words.", [], [hit], abstained=False)')
    assert "Some words." in at.markdown[0].value
    assert at.caption[0].value.startswith("The answer cites no passage. Sources consulted")
    assert at.expander[0].label == "(1) report.pdf, p. 4 · score 0.51"


def test_unsupported_sentences_are_flagged() -> None:
    at = _render(
        'Answer("q?", "q?", "Cited [1]. Invented.", [Citation.of(1, hit)], [hit], False, '
        '["Invented."])'
    )
    assert at.expander[0].label == "[1] report.pdf, p. 4 · score 0.51"
    assert "1 sentence(s) of this answer are not supported" in at.caption[0].value


def test_show_page_draws_the_cited_pdf_page(page: AppTest, tmp_path: Path) -> None:
    pdf = make_pdf(
        tmp_path / "report.pdf",
        ["Introduction to bridges and towers.", EIFFEL.decode(), "Appendix on paint colours."],
    )
    _upload(page, ("report.pdf", pdf.read_bytes(), "application/pdf"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    assert not page.get("image")
    # Keyed by collection, place of the answer in the conversation and citation number.
    page.chat_message[-1].expander[0].toggle(key="page-default-1-1").set_value(True).run()
    assert not page.exception and not page.error
    (image,) = page.chat_message[-1].expander[0].get("image")
    assert page.chat_message[-1].expander[0].proto.expanded  # stays open on the rerun
    assert image.value[0].endswith(".png") and "report.pdf, p. 2" in image.captions[0]
    page.chat_input[0].set_value("And where is it?").run()  # the page stays open on later turns
    assert not page.exception and len(page.chat_message[1].expander[0].get("image")) == 1


def test_a_text_citation_has_no_page_to_show(page: AppTest) -> None:
    _upload(page, ("eiffel.txt", EIFFEL, "text/plain"))
    page.chat_input[0].set_value("When was the Eiffel Tower completed?").run()
    assert not page.chat_message[-1].expander[0].toggle

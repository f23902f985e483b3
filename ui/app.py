"""privatellm's page: chat with your documents, with citations, in the browser.

    streamlit run ui/app.py [-- --config FILE ... --data-dir DIR]

Settings come from the same places as the CLI's (PRIVATELLM_CONFIG, PRIVATELLM_DATA_DIR and the
other PRIVATELLM_* variables, or the flags after `--`), so the page answers from what
`privatellm ingest` stored. The page only lays things out: every operation is a Service call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import streamlit as st

from privatellm.config import AnswerMode, Settings, config_files_from_env, load_settings
from privatellm.engines import Sampling
from privatellm.errors import PrivateLLMError
from privatellm.loaders import suffixes
from privatellm.pages import has_page_images
from privatellm.retrieval import Mode
from privatellm.uploads import Upload

if TYPE_CHECKING:
    from privatellm.engines import Message
    from privatellm.service import Service
    from privatellm.types import Answer, Citation, FileOutcome, ScoredChunk
    from privatellm.watching import FolderWatcher

log = logging.getLogger("privatellm.ui")

MODES: tuple[Mode, ...] = get_args(Mode)
ANSWER_MODES: tuple[AnswerMode, ...] = get_args(AnswerMode)
HISTORY_MESSAGES = 6  # earlier turns given to follow-up condensing
WATCH_REFRESH_SECONDS = 2.0  # how often the sidebar redraws the watched folders' state
# Streamlit's bundled Material icons: they render without emoji fonts on the machine.
ICONS = {
    "added": ":green[:material/check_circle:]",
    "updated": ":green[:material/check_circle:]",
    "unchanged": ":material/sync:",
    "duplicate": ":orange[:material/content_copy:]",
    "skipped": ":orange[:material/warning:]",
    "failed": ":red[:material/error:]",
    "removed": ":material/delete:",
}


@dataclass
class Turn:
    role: str  # "user" | "assistant"
    content: str
    answer: Answer | None = None


@dataclass(frozen=True)
class Choices:
    """What the user set in the sidebar for the next answers."""

    top_k: int
    mode: Mode
    temperature: float
    max_tokens: int
    model: str
    answer_mode: AnswerMode


@dataclass
class _Bar:
    """Ingest progress as a Streamlit progress bar (the Progress protocol)."""

    widget: Any
    total: int = 0
    files: int = 0
    chunks: int = 0
    ocr_pages: int = 0
    notes: list[str] = field(default_factory=list)

    def start(self, total: int) -> None:
        self.total = total
        self.widget.progress(0.0, text=f"Reading {total} file(s)…")

    def advance(self, files: int, chunks: int, ocr_pages: int = 0) -> None:
        self.files += files
        self.chunks += chunks
        self.ocr_pages += ocr_pages
        done = self.files / max(self.total, 1)
        text = f"{self.files}/{self.total} files, {self.chunks} chunks"
        if self.ocr_pages:
            text += f", {self.ocr_pages} pages read by OCR"
        self.widget.progress(min(done, 1.0), text=text)

    def close(self) -> None:
        self.widget.empty()


# -- services (built once per process, shared by every browser tab) -------------------------


def _arguments(argv: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    parser = argparse.ArgumentParser(prog="streamlit run ui/app.py --")
    parser.add_argument("--config", action="append", default=[], help="YAML settings file")
    parser.add_argument("--data-dir", default=None, help="data directory")
    args = parser.parse_args(list(argv))
    return tuple(args.config), args.data_dir


def _settings_json(argv: Sequence[str]) -> str:
    configs, data_dir = _arguments(argv)
    files = [Path(c) for c in configs] or config_files_from_env()
    overrides = {"data_dir": data_dir} if data_dir else {}
    return load_settings(files, overrides).model_dump_json()


@st.cache_resource(show_spinner="Opening the document store…")
def _base_service(settings_json: str) -> Service:
    from privatellm.service import Service

    return Service(Settings.model_validate_json(settings_json))


def _stop_watchers(watchers: list[FolderWatcher]) -> None:
    from privatellm.watchfolders import stop_watchers

    stop_watchers(watchers)


# Once per process, like the service: every tab sees the same watchers, and clearing the cache
# (or a changed settings file) stops them.
@st.cache_resource(show_spinner="Starting the folder watchers…", on_release=_stop_watchers)
def _watchers(settings_json: str) -> list[FolderWatcher]:
    from privatellm.watchfolders import start_watchers

    return start_watchers(_base_service(settings_json))


# -- page ------------------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="privatellm", page_icon=":material/lock:", layout="wide")
    st.session_state.setdefault("history", {})
    st.session_state.setdefault("flash", [])
    st.session_state.setdefault("uploader", 0)
    try:
        settings_json = _settings_json(_script_args())
        base = _base_service(settings_json)
    except PrivateLLMError as e:
        st.error(f"privatellm cannot start: {e}")
        return
    except SystemExit:
        st.error("privatellm cannot start: unknown arguments after `--` (see --help)")
        return
    watchers: list[FolderWatcher] = _guarded(lambda: _watchers(settings_json)) or []
    top, uploads, documents, watched, options = (st.sidebar.container() for _ in range(5))
    with options:
        choices = _choices(base)
    # Each model keeps its own engine (engine.max_loaded of them in memory) in the base service.
    service = _guarded(lambda: base.for_model(choices.model))
    if service is None:
        return
    with top:
        collection = _collection_picker(service)
    with uploads:
        _uploader(service, collection)
    with documents:
        _document_list(service, collection)
    if watchers:
        with watched:
            _watched_folders(watchers)
    _flash()
    _status_line(service, collection)
    _chat(service, collection, choices)


def _script_args() -> list[str]:
    # Streamlit passes what follows `--` as sys.argv[1:].
    return sys.argv[1:]


def _guarded(call: Callable[[], Any]) -> Any:
    """Returns call(), or None after showing its error on the page (never a traceback)."""
    try:
        return call()
    except PrivateLLMError as e:
        st.error(str(e))
    except Exception as e:  # a bug: say so on the page, keep the traceback for the console
        log.exception("unexpected error")
        st.error(f"Unexpected error ({type(e).__name__}): {e}. Details are in the server log.")
    return None


def _flash() -> None:
    """Shows messages left by the sidebar's buttons (they run before the page is drawn)."""
    for kind, text in st.session_state["flash"]:
        (st.error if kind == "error" else st.success)(text)
    st.session_state["flash"] = []


def _say(kind: str, text: str) -> None:
    st.session_state["flash"].append((kind, text))


# -- sidebar ---------------------------------------------------------------------------------------


def _choices(base: Service) -> Choices:
    settings = base.settings
    engine, retrieval = settings.engine, settings.retrieval
    with st.expander("Answer settings"):
        top_k = st.slider(
            "Passages per answer (top-k)", 1, 20, min(retrieval.top_k, 20), key="top_k"
        )
        mode = st.selectbox("Retrieval", MODES, index=MODES.index(retrieval.mode), key="mode")
        answer_mode = st.selectbox(
            "Answer",
            ANSWER_MODES,
            index=ANSWER_MODES.index(settings.answer.mode),
            key="answer_mode",
            help="auto: the model's sentences the passages support, else a quote; generate: "
            "the model's answer as written; extract: a quote of the passages, no model.",
        )
        temperature = st.slider(
            "Temperature", 0.0, 1.5, float(engine.temperature), 0.05, key="temperature"
        )
        longest = max(16, min(2048, engine.context_tokens // 2))
        max_tokens = st.number_input(
            "Max answer tokens", 16, longest, min(engine.max_tokens, longest), 16, key="max_tokens"
        )
        names = _guarded(base.chat_models.names) or [base.chat_models.default]
        model = st.selectbox(
            "Model",
            names,
            key="model",
            help="The configured model and every registered one (`privatellm models pull`, "
            "`privatellm models import`); switching needs no restart.",
        )
    return Choices(top_k, mode, temperature, int(max_tokens), model, answer_mode)


def _collection_picker(service: Service) -> str:
    names = _guarded(service.collections) or []
    default = service.settings.collection
    current = st.session_state.get("collection") or default
    options = sorted({*names, default, current})
    st.session_state["collection"] = current
    collection: str = st.selectbox("Collection", options, key="collection")
    with st.popover("New or delete collection", width="stretch"):
        st.text_input("Name", key="new_collection", placeholder="letters, digits, . _ -")
        st.button("Create", on_click=_create_collection, args=(service,), key="create")
        st.divider()
        sure = st.checkbox(f"Delete {collection!r} and all its documents", key="confirm_delete")
        st.button(
            "Delete collection",
            disabled=not sure or collection not in names,
            on_click=_delete_collection,
            args=(service, collection),
            key="delete_collection",
        )
    return collection


def _create_collection(service: Service) -> None:
    name = st.session_state.get("new_collection", "").strip()
    try:
        service.create_collection(name)
    except PrivateLLMError as e:
        _say("error", str(e))
        return
    st.session_state["collection"] = name
    st.session_state["new_collection"] = ""
    _say("success", f"Created collection {name!r}.")


def _delete_collection(service: Service, name: str) -> None:
    try:
        service.delete_collection(name)
    except PrivateLLMError as e:
        _say("error", str(e))
        return
    st.session_state["history"].pop(name, None)
    st.session_state["collection"] = service.settings.collection
    st.session_state["confirm_delete"] = False
    _say("success", f"Deleted collection {name!r}.")


def _uploader(service: Service, collection: str) -> None:
    files = st.file_uploader(
        "Add documents",
        type=suffixes(),
        accept_multiple_files=True,
        key=f"uploader-{st.session_state['uploader']}",
    )
    if files and st.button(f"Ingest {len(files)} file(s)", type="primary", key="ingest"):
        bar = _Bar(st.empty())
        uploads = [Upload(f.name, f.getvalue()) for f in files]
        report = _guarded(lambda: service.ingest_uploads(uploads, collection, progress=bar))
        if report is not None:
            st.session_state["results"] = report.outcomes
            st.session_state["uploader"] += 1  # a fresh, empty uploader
            st.rerun()
    for outcome in st.session_state.get("results", []):
        st.markdown(_outcome_line(outcome))


def _outcome_line(outcome: FileOutcome) -> str:
    text = f"{ICONS[outcome.outcome]} **{_escape(outcome.path)}** — {outcome.outcome}"
    if outcome.chunks:
        text += f", {_count(outcome.chunks, 'chunk')}"
    if outcome.detail:
        text += f": {_escape(outcome.detail)}"
    return text


def _document_list(service: Service, collection: str) -> None:
    records = _guarded(lambda: _documents(service, collection)) or []
    with st.expander(f"Documents ({len(records)})", expanded=bool(records)):
        if not records:
            st.caption("Nothing ingested yet: add files above, or run `privatellm ingest DIR`.")
        for record in records:
            text, remove = st.columns([4, 1], vertical_alignment="center")
            sizes = f"{_count(record.pages, 'page')} · {_count(record.chunks, 'chunk')}"
            text.markdown(f"**{_escape(_name(record.source))}**  \n{sizes}")
            remove.button(
                "",
                icon=":material/delete:",
                type="tertiary",
                key=f"remove-{record.id}",
                help=f"Delete {_name(record.source)} from {collection!r}",
                on_click=_remove_document,
                args=(service, collection, record.id),
            )


def _documents(service: Service, collection: str) -> list[Any]:
    return service.documents(collection) if collection in service.collections() else []


def _remove_document(service: Service, collection: str, doc_id: str) -> None:
    try:
        record = service.remove(doc_id, collection)
    except PrivateLLMError as e:
        _say("error", str(e))
        return
    _say("success", f"Deleted {_name(record.source)}.")


@st.fragment(run_every=WATCH_REFRESH_SECONDS)
def _watched_folders(watchers: Sequence[FolderWatcher]) -> None:
    """Shows one line per watched folder: where it is, its collection, and how it stands."""
    from privatellm.watchfolders import describe

    st.caption("**Watched folders**")
    for watcher in watchers:
        state = watcher.state()
        icon = ":red[:material/error:]" if state.state == "error" else ":material/folder:"
        st.caption(
            f"{icon} {_escape(state.path)} → {_escape(state.collection)}: "
            f"{_escape(describe(state))}"
        )


# -- main area -------------------------------------------------------------------------------------


def _status_line(service: Service, collection: str) -> None:
    status = _guarded(lambda: service.status(collection))
    if status is not None:
        st.caption(
            f":material/lock: Engine **{status.engine}** · model **{status.model}** · "
            f"embeddings **{status.embedding}** · collection **{status.collection}**: "
            f"{_count(status.documents, 'document')}, {_count(status.chunks, 'chunk')}"
        )


def _chat(service: Service, collection: str, choices: Choices) -> None:
    turns: list[Turn] = st.session_state["history"].setdefault(collection, [])
    for n, turn in enumerate(turns):
        with st.chat_message(turn.role):
            if turn.answer is not None:
                _show_answer(turn.answer, service, collection, key=f"{collection}-{n}")
            else:
                st.markdown(_escape(turn.content))
    question = st.chat_input(f"Ask about the documents in {collection!r}")
    if not question:
        return
    with st.chat_message("user"):
        st.markdown(_escape(question))
    history: list[Message] = [{"role": t.role, "content": t.content} for t in turns]
    with st.chat_message("assistant"):
        # Keyed by the place the answer will have in turns, so its widgets keep their state.
        key = f"{collection}-{len(turns) + 1}"
        answer = _answer(service, collection, question, history[-HISTORY_MESSAGES:], choices, key)
    if answer is not None:
        turns += [Turn("user", question), Turn("assistant", answer.text, answer)]


def _answer(
    service: Service,
    collection: str,
    question: str,
    history: list[Message],
    choices: Choices,
    key: str,
) -> Answer | None:
    """Streams the answer into the page, then replaces it with the finished, cited one."""

    def ask() -> Answer:
        with st.spinner("Searching your documents…"):
            reply = service.ask(
                question,
                collection,
                history,
                top_k=choices.top_k,
                mode=choices.mode,
                sampling=Sampling(max_tokens=choices.max_tokens, temperature=choices.temperature),
                answer_mode=choices.answer_mode,
            )
        box = st.empty()
        try:
            with box.container():
                st.write_stream(reply)
            answer = reply.answer()
        finally:
            reply.close()
        with box.container():
            _show_answer(answer, service, collection, key)
        return answer

    result: Answer | None = _guarded(ask)
    return result


def _show_answer(
    answer: Answer, service: Service | None = None, collection: str | None = None, key: str = ""
) -> None:
    """Shows an answer and its citations; with a service, a cited PDF page can be shown too
    (key: unique to this answer on the page, for its widgets)."""
    if answer.abstained:
        st.info(
            "**Not in your documents.** Nothing retrieved is close enough to the question to "
            "answer it from them."
        )
        _passages("Closest passages (not close enough)", answer.passages)
        return
    st.markdown(answer.text)
    if answer.quoted:
        st.caption("Quoted from the documents: the model's answer was not supported by them.")
    if answer.citations:
        for citation in answer.citations:
            _citation(citation, service, collection, f"{key}-{citation.n}")
        _passages("Other passages consulted (not cited)", [p for _, p in answer.uncited])
    else:
        _passages("The answer cites no passage. Sources consulted", answer.passages)
    if answer.unsupported:
        st.caption(
            f"{len(answer.unsupported)} sentence(s) of this answer are not supported by any "
            "passage: check them."
        )
    if answer.standalone != answer.question:
        st.caption(f"Searched for: {_escape(answer.standalone)}")


def _citation(
    citation: Citation, service: Service | None, collection: str | None, key: str
) -> None:
    label = f"[{citation.n}] {_where(citation.source, citation.page)} · score {citation.score:.2f}"
    # Open while its page is shown: the toggle's rerun draws the answer anew (from the history,
    # not the stream), and a new expander starts closed.
    with st.expander(label, expanded=bool(st.session_state.get(f"page-{key}"))):
        st.markdown(_highlighted(citation))
        page = citation.page
        if service is None or page is None or not has_page_images(citation.source):
            return
        if st.toggle("Show page", key=f"page-{key}"):
            # The quote is marked: its offsets into the page's text.
            highlight = (citation.start + citation.quote_start, citation.start + citation.quote_end)
            png = _guarded(lambda: service.page_image(citation.doc_id, page, highlight, collection))
            if png is not None:
                st.image(
                    png,
                    caption=f"{_where(citation.source, page)}, cited passage marked",
                    output_format="PNG",  # not JPEG, Streamlit's default, which blurs small print
                )


def _highlighted(citation: Citation) -> str:
    """Returns the cited passage as Markdown with its quote highlighted."""
    text = citation.text
    before, quote = text[: citation.quote_start], text[citation.quote_start : citation.quote_end]
    after = text[citation.quote_end :]
    marked = f":orange-background[{_escape(' '.join(quote.split()))}]" if quote.strip() else ""
    return f"{_escape(' '.join(before.split()))} {marked} {_escape(' '.join(after.split()))}"


def _passages(title: str, passages: Sequence[ScoredChunk]) -> None:
    if not passages:
        return
    st.caption(title)
    for n, hit in enumerate(passages, 1):
        label = f"({n}) {_where(hit.chunk.source, hit.chunk.page)} · score {hit.score:.2f}"
        with st.expander(label):
            st.text(hit.chunk.text)


# -- formatting ------------------------------------------------------------------------------------


def _name(source: str) -> str:
    return Path(source).name


def _where(source: str, page: int | None) -> str:
    return f"{_name(source)}, p. {page}" if page is not None else _name(source)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _escape(text: str) -> str:
    """Returns text that Markdown shows as written (file names and questions are not markup)."""
    return "".join(f"\\{c}" if c in _MARKDOWN else c for c in text)


_MARKDOWN = set("\\`*_{}[]()#+-.!|<>~$")


if __name__ == "__main__":  # `streamlit run` runs the page as __main__; tests import its parts
    main()

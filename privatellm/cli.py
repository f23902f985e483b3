"""The `privatellm` command. torch, chromadb and llama_cpp load only in the commands using them."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, get_args

import click

from privatellm.config import AnswerMode, Settings, config_files_from_env, load_settings
from privatellm.errors import PrivateLLMError
from privatellm.finetunecommand import finetune
from privatellm.modelcommands import models
from privatellm.types import Outcome

if TYPE_CHECKING:
    from tqdm import tqdm

    from privatellm.engines import Message
    from privatellm.retrieval import Mode
    from privatellm.service import Service
    from privatellm.types import Answer, IngestReport, ScoredChunk


F = TypeVar("F", bound=Callable[..., Any])
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)  # in the order the summary prints them
COLLECTION = click.option(
    "--collection", "-c", default=None, help="Collection to use (default: 'default')."
)


class _Context:
    def __init__(
        self, settings: Settings, config_files: list[Path], overrides: dict[str, Any]
    ) -> None:
        self.settings = settings
        self.config_files = config_files  # what the settings came from, to load them again
        self.overrides = overrides
        self._service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            from privatellm.service import Service

            self._service = Service(self.settings)
        return self._service


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PRIVATELLM_DATA_DIR",
    help="Where everything is stored (env PRIVATELLM_DATA_DIR; default ~/.local/share/privatellm).",
)
@click.option(
    "--config",
    "config_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML settings file, repeatable; later ones win (env PRIVATELLM_CONFIG).",
)
@click.version_option(package_name="privatellm")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None, config_files: Sequence[Path]) -> None:
    """Offline, private question answering over your own documents."""
    overrides: dict[str, Any] = {"data_dir": data_dir} if data_dir else {}
    files = list(config_files) or config_files_from_env()
    ctx.obj = _Context(load_settings(files, overrides), files, overrides)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@COLLECTION
@click.option("--prune", is_flag=True, help="Remove documents whose files vanished from PATHS.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_obj
def ingest(
    ctx: _Context, paths: tuple[Path, ...], collection: str | None, prune: bool, as_json: bool
) -> None:
    """Add files and folders (recursively) to a collection.

    Unchanged files are skipped, changed ones replaced. Exit status: 0 when every file was
    ingested, 1 when some failed (the rest were ingested), 2 on usage or configuration errors.
    """
    started = time.perf_counter()
    report = ctx.service.ingest(list(paths), collection, prune=prune, progress=_Bar())
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
    else:
        _summarise(report, collection or ctx.settings.collection, time.perf_counter() - started)
    if report.paths("failed"):
        sys.exit(1)


def _summarise(report: IngestReport, collection: str, seconds: float) -> None:
    for o in report.outcomes:
        if o.outcome in ("failed", "skipped", "duplicate"):
            click.echo(f"{o.outcome:9} {o.path}: {o.detail}", err=True)
            continue
        ocr = f"{o.ocr_pages} of {o.pages} page(s) read by OCR" if o.ocr_pages else ""
        if o.detail:
            click.echo(f"warning   {o.path}: {'; '.join(filter(None, [ocr, o.detail]))}", err=True)
        elif ocr:
            click.echo(f"{o.outcome:9} {o.path}: {ocr}", err=True)
    counts = {kind: len(report.paths(kind)) for kind in OUTCOMES}
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
    click.echo(
        f"{summary or 'nothing to do'}; {report.total_chunks} chunks in collection "
        f"{collection!r} ({seconds:.1f} s)"
    )


def _progress(total: int, transient: bool = False, **options: Any) -> tqdm[Any]:
    """Returns a tqdm bar on stderr, shown in a terminal and in a log alike.

    A terminal redraws it ten times a second (and wipes it when done, if transient); a log (stderr
    not a TTY: CI, `2> file`) gets an update at most every 30 s and keeps the last one.
    """
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        file=sys.stderr,
        mininterval=0.1 if tty else 30,
        leave=not (tty and transient),
        **options,
    )


class _Bar:
    """A live progress bar on stderr: files done, chunks written, chunks per second, pages
    read by OCR (when there are any)."""

    def __init__(self, desc: str | None = None) -> None:
        self._desc = desc

    def start(self, total: int) -> None:
        self._bar = _progress(total, transient=True, unit="file", desc=self._desc)
        self._chunks = 0
        self._ocr_pages = 0
        self._started = time.perf_counter()

    def advance(self, files: int, chunks: int, ocr_pages: int = 0) -> None:
        self._chunks += chunks
        self._ocr_pages += ocr_pages
        rate = self._chunks / max(time.perf_counter() - self._started, 1e-9)
        shown: dict[str, object] = {"chunks": self._chunks, "chunks_per_s": f"{rate:.0f}"}
        if self._ocr_pages:
            shown["ocr_pages"] = self._ocr_pages
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(files)

    def close(self) -> None:
        self._bar.close()


@cli.command("config")
@click.pass_obj
def show_config(ctx: _Context) -> None:
    """Print the settings in effect, as YAML with a description of each key."""
    from privatellm.config import to_yaml

    click.echo(f"data_dir: {ctx.settings.data_dir}\n")
    click.echo(to_yaml(ctx.settings).rstrip())


@cli.group()
def docs() -> None:
    """List and remove ingested documents."""


@docs.command("list")
@COLLECTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def docs_list(ctx: _Context, collection: str | None, as_json: bool) -> None:
    """List the documents in a collection."""
    records = ctx.service.documents(collection)
    if as_json:
        rows = [
            {
                "id": r.id,
                "source": r.source,
                "pages": r.pages,
                "chunks": r.chunks,
                "ingested_at": r.ingested_at,
            }
            for r in records
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for r in records:
        click.echo(f"{r.id}  {r.pages:5} pages {r.chunks:6} chunks  {r.ingested_at}  {r.source}")
    click.echo(f"{len(records)} documents, {sum(r.chunks for r in records)} chunks", err=True)


@docs.command("rm")
@click.argument("id_or_path")
@COLLECTION
@click.pass_obj
def docs_rm(ctx: _Context, id_or_path: str, collection: str | None) -> None:
    """Remove one document, given its id (or a unique prefix) or its path."""
    record = ctx.service.remove(id_or_path, collection)
    click.echo(f"removed {record.id} {record.source} ({record.chunks} chunks)")


MODE = click.option(
    "--mode",
    type=click.Choice(["dense", "lexical", "hybrid"]),
    default=None,
    help="Retrieval mode (default: setting retrieval.mode, hybrid).",
)
TOP_K = click.option(
    "--top-k",
    "-k",
    default=None,
    type=click.IntRange(1, 100),
    help="Passages to retrieve (default: setting retrieval.top_k).",
)
ANSWER = click.option(
    "--answer",
    "answer_mode",
    type=click.Choice(["auto", "generate", "extract"]),
    default=None,
    help="generate: the model's answer; extract: quote the passages, no model; auto: the "
    "model's supported sentences, else a quote (default: setting answer.mode, auto).",
)
SOURCE = click.option(
    "--source",
    "sources",
    multiple=True,
    help="Only search this document (id, id prefix or path); repeatable.",
)


def _where(hit: ScoredChunk) -> str:
    return hit.chunk.source + (f" p.{hit.chunk.page}" if hit.chunk.page else "")


@cli.command()
@click.argument("question")
@COLLECTION
@TOP_K
@MODE
@SOURCE
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def retrieve(
    ctx: _Context,
    question: str,
    collection: str | None,
    top_k: int | None,
    mode: Mode | None,
    sources: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show the passages that best match QUESTION, best first."""
    hits = ctx.service.retrieve(question, collection, top_k, mode, sources)
    if as_json:
        rows = [
            {
                "source": h.chunk.source,
                "page": h.chunk.page,
                "text": h.chunk.text,
                "score": h.score,
                "dense": h.dense,
                "lexical": h.lexical,
            }
            for h in hits
        ]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    for n, h in enumerate(hits, start=1):
        text = " ".join(h.chunk.text.split())
        click.echo(f"[{n}] {h.score:.3f} {_where(h)}\n    {text[:300]}")


def _show(answer: Answer, streamed: str) -> None:
    """Prints an answer's citations, and its text again if it is not what was streamed (a
    quote instead of the model's words, or only their supported sentences)."""
    label = "Quoted from the documents" if answer.quoted else "Supported by the documents"
    if " ".join(answer.text.split()) != " ".join(streamed.split()):
        click.echo(f"{label}: {answer.text}")
    elif answer.quoted:
        click.echo(f"({label}.)")
    if answer.abstained:
        if answer.passages:
            click.echo("Closest passages (not close enough to answer from):")
            for n, hit in enumerate(answer.passages[:3], start=1):
                click.echo(f"  ({n}) {_where(hit)} ({hit.score:.2f})")
        return
    if answer.citations:
        click.echo("Sources:")
        for c in answer.citations:
            page = f" p.{c.page}" if c.page else ""
            click.echo(f"  [{c.n}] {c.source}{page} ({c.score:.2f})")
            click.echo(f"      \u201c{' '.join(c.quote.split())}\u201d")
        if answer.uncited:
            click.echo("Also consulted (not cited):")
            for n, hit in answer.uncited:
                click.echo(f"  ({n}) {_where(hit)} ({hit.score:.2f})")
    else:
        click.echo("No passage supports this answer; passages consulted:")
        for n, hit in enumerate(answer.passages, start=1):
            click.echo(f"  [{n}] {_where(hit)} ({hit.score:.2f})")
    for sentence in answer.unsupported:
        click.echo(f"  not in the documents: {sentence}")


@cli.command()
@click.argument("question")
@COLLECTION
@TOP_K
@MODE
@SOURCE
@ANSWER
@click.option("--json", "as_json", is_flag=True, help="Print the answer and citations as JSON.")
@click.pass_obj
def ask(
    ctx: _Context,
    question: str,
    collection: str | None,
    top_k: int | None,
    mode: Mode | None,
    sources: tuple[str, ...],
    answer_mode: AnswerMode | None,
    as_json: bool,
) -> None:
    """Answer QUESTION from your documents, with citations and the span each one quotes.

    The answer streams to the terminal, then its sources. When nothing retrieved is close
    enough to the question, it says the documents don't say, without calling the model.
    """
    reply = ctx.service.ask(
        question, collection, top_k=top_k, mode=mode, sources=sources, answer_mode=answer_mode
    )
    if as_json:
        click.echo(json.dumps(reply.answer().to_json(), ensure_ascii=False, indent=2))
        return
    streamed = _stream(reply)
    _show(reply.answer(), streamed)


def _stream(pieces: Iterable[str]) -> str:
    """Returns the text of pieces after printing them as they come."""
    text = []
    for piece in pieces:
        click.echo(piece, nl=False)
        text.append(piece)
    click.echo()
    return "".join(text)


@cli.command()
@COLLECTION
@TOP_K
@MODE
@ANSWER
@click.pass_obj
def chat(
    ctx: _Context,
    collection: str | None,
    top_k: int | None,
    mode: Mode | None,
    answer_mode: AnswerMode | None,
) -> None:
    """Ask questions about your documents, one per line; Ctrl-D ends.

    Follow-up questions may refer to earlier ones ("and in 2021?"): each is rewritten into a
    standalone question before retrieval. Answers stream, then their sources.
    """
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about your documents (Ctrl-D to quit).")
    history: list[Message] = []
    while True:
        try:
            question = input("> " if interactive else "").strip()
        except EOFError:
            break
        if not question:
            continue
        reply = ctx.service.ask(
            question, collection, history, top_k=top_k, mode=mode, answer_mode=answer_mode
        )
        streamed = _stream(reply)
        answer = reply.answer()
        if answer.standalone != question:
            click.echo(f"  (searched for: {answer.standalone})")
        _show(answer, streamed)
        history += [{"role": "user", "content": question}]
        history += [{"role": "assistant", "content": answer.text}]


@cli.command()
@click.argument("source")
@COLLECTION
@click.pass_obj
def summarize(ctx: _Context, source: str, collection: str | None) -> None:
    """Summarize one ingested document, named by id, id prefix or path.

    Long documents are summarized window by window and the summaries combined.
    """
    for piece in ctx.service.summarize(source, collection):
        click.echo(piece, nl=False)
    click.echo()


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default api.host: 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Default api.port: 8001.")
@click.pass_obj
def serve(ctx: _Context, host: str | None, port: int | None) -> None:
    """Serve the OpenAI- and PrivateGPT-compatible HTTP API (docs at /docs).

    Models load before the server starts listening, so a missing model is an error here, not
    on the first request. The folders in ingest.watch are kept in step meanwhile, one line per
    change on stderr; GET /v1/ingest/watch tells how each stands.
    """
    import uvicorn

    from privatellm.api import create_app
    from privatellm.watchfolders import start_watchers, stop_watchers

    api = ctx.settings.api
    host, port = host or api.host, port or api.port
    if host not in ("127.0.0.1", "localhost", "::1") and not api.api_key:
        click.echo(
            f"warning: serving {host} without an API key: anyone who can reach this port reads "
            "your documents (set PRIVATELLM_API__API_KEY)",
            err=True,
        )
    service = ctx.service
    service.embedder, service.engine  # noqa: B018  load both now
    watchers = start_watchers(service, on_event=lambda line: click.echo(line, err=True))
    try:
        uvicorn.run(create_app(service, watchers), host=host, port=port, log_level="info")
    finally:
        stop_watchers(watchers)


@cli.command()
@click.argument(
    "paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path)
)
@COLLECTION
@click.option(
    "--polling", is_flag=True, help="Poll for changes (network shares) instead of OS events."
)
@click.option(
    "--debounce",
    type=click.FloatRange(0, min_open=True),
    default=1.0,
    show_default=True,
    help="Seconds a file must stay unchanged before it is read.",
)
@click.pass_obj
def watch(
    ctx: _Context, paths: tuple[Path, ...], collection: str | None, polling: bool, debounce: float
) -> None:
    """Keep a collection in step with folders until Ctrl-C.

    Ingests each folder once (unchanged files are only read), then ingests new and changed files
    and removes deleted ones as they happen, one line per change. Hidden and temporary files
    (name~, .swp, .part, ...) are ignored; a file is read once it has stayed unchanged for
    --debounce seconds. Ctrl-C stops it (exit status 0).
    """
    from privatellm.watching import FolderWatcher

    name = collection or ctx.settings.collection
    watchers = [
        FolderWatcher(
            ctx.service, p, name, polling=polling, debounce_seconds=debounce, on_event=click.echo
        )
        for p in paths
    ]
    try:
        for watcher in watchers:
            watcher.start()
        for watcher in watchers:
            while watcher.state().state == "starting":
                time.sleep(0.1)
            click.echo(f"watching {watcher.path} (collection {name!r}); Ctrl-C stops")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        click.echo("stopping", err=True)
    finally:
        for watcher in watchers:
            watcher.stop()


@cli.command()
@click.option(
    "--embedding",
    "-e",
    required=True,
    help="A registered embedding model's name (`privatellm models list`) or the path of a "
    "sentence-transformers folder.",
)
@COLLECTION
@click.pass_obj
def reindex(ctx: _Context, embedding: str, collection: str | None) -> None:
    """Move a collection to another embedding model.

    Re-embeds the chunks already stored (no file is read again) into a new collection, then
    switches to it in one step: until then, and if it is interrupted, the collection answers
    with its old model. It holds the write lock: an ingest started meanwhile is refused.
    """
    done = ctx.service.reindex(collection, embedding, progress=_ChunkBar())
    what = f"{done.model} ({done.dimension} dims)"
    if not done.changed:
        click.echo(f"{done.collection!r} already uses {what}: nothing to do")
        return
    click.echo(
        f"reindexed {done.collection!r}: {done.chunks:,} chunks with {what} in {done.seconds:.1f} s"
    )


class _ChunkBar:
    """A live progress bar on stderr counting the chunks re-embedded."""

    def start(self, total: int) -> None:
        self._bar = _progress(total, transient=True, unit="chunk", desc="re-embedding")

    def advance(self, files: int, chunks: int, ocr_pages: int = 0) -> None:
        self._bar.update(chunks)

    def close(self) -> None:
        self._bar.close()


cli.add_command(models)  # privatellm/modelcommands.py
cli.add_command(finetune)  # privatellm/finetunecommand.py


def _repeatable(flag: str, name: str, choices: list[str], what: str) -> Callable[[F], F]:
    return click.option(
        flag,
        name,
        multiple=True,
        type=click.Choice(choices),
        help=f"{what} to evaluate side by side, repeatable (default: the configured one).",
    )


@cli.command("eval")
@click.argument("qa_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--docs",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder the QA file's gold_source paths are relative to; ingested first.",
)
@click.option("--collection", "-c", default="eval", show_default=True)
@_repeatable("--mode", "modes", ["dense", "lexical", "hybrid"], "Retrieval mode(s)")
@click.option("--retrieval-only", is_flag=True, help="Do not answer (fast).")
@_repeatable("--answer", "answer_modes", ["auto", "generate", "extract"], "Answer mode(s)")
@click.option(
    "--per-dataset",
    type=click.IntRange(1),
    default=None,
    help="Use up to N questions of each dataset, evenly (a stratified sample).",
)
@click.option("--sample", type=click.IntRange(1), default=None, help="Use N questions, evenly.")
@click.option("--json", "as_json", is_flag=True, help="Print summaries and per-question rows.")
@click.pass_obj
def eval_(
    ctx: _Context,
    qa_file: Path,
    docs: Path,
    collection: str,
    modes: tuple[Mode, ...],
    retrieval_only: bool,
    answer_modes: tuple[AnswerMode, ...],
    per_dataset: int | None,
    sample: int | None,
    as_json: bool,
) -> None:
    """Measure retrieval, abstention and answers on a QA set (JSONL, dev-set schema).

    Reports hit@1/3/5, MRR, page hit@5, unanswerable declined, answerable answered, answer
    contains reference, token F1, share quoted, citation precision and latency, overall, per
    language and per dataset; one run per retrieval mode and answer mode.
    """
    from privatellm import evaluate

    items = evaluate.sample(evaluate.stratified(evaluate.load_items(qa_file), per_dataset), sample)
    report = ctx.service.ingest([docs], collection, progress=_Bar(desc="ingest"))
    failed = len(report.paths("failed"))
    click.echo(f"{report.total_chunks} chunks in {collection!r}; {failed} files failed", err=True)
    summaries: dict[str, dict[str, dict[str, float | int | None]]] = {}
    rows: dict[str, object] = {}
    answers = () if retrieval_only else answer_modes or (ctx.settings.answer.mode,)
    for mode in modes or (ctx.settings.retrieval.mode,):
        with _progress(len(items), unit="question", desc=mode) as bar:
            runs = evaluate.evaluate(
                ctx.service, items, docs, collection, mode, answers, bar.update
            )
        for answer, results in runs.items():
            run = f"{mode}/{answer}" if answer else mode
            summaries[run] = evaluate.report(results)
            rows[run] = evaluate.to_json(results)
    if as_json:
        click.echo(json.dumps({"summary": summaries, "items": rows}, ensure_ascii=False))
    else:
        click.echo(evaluate.table(summaries))


def main(argv: Sequence[str] | None = None) -> None:
    """Runs the CLI; expected failures become one line on stderr and a non-zero exit."""
    try:
        cli.main(args=argv, prog_name="privatellm", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted: documents written so far are complete", err=True)
        sys.exit(130)
    except PrivateLLMError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)

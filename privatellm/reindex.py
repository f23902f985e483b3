"""Embedding models per collection: which model a collection needs, and moving a collection to
another model (`privatellm reindex`), switched in whole or not at all.

Every collection records the model that built it (store.py `EmbeddingModel`: name, dimension,
and the embedding.kind and embedding.model values that build it again), and is searched and
written with that model; `embedding.model` only decides which model a new collection gets.
`Embedders` builds each model once.

`reindex` re-embeds the chunks the store already holds: nothing is parsed again. Chroma has no
transactions, but renames a collection in one step, so the move is:

1. Write every chunk, with its id, text and metadata unchanged and a vector from the new model,
   into a hidden collection `C--reindex` whose metadata marks it incomplete. Nothing reads it;
   a crash here leaves C answering with the old model, and the next writer deletes the leftover.
2. Mark it complete, rename C to `C--old`, `C--reindex` to C, delete `C--old`. A crash between
   two steps leaves a state that `ChromaStore.open` already serves whole (the new version once it
   is complete, else the old one) and the next writer (`ChromaStore.settle`) finishes.

All of it runs under the write lock, so no ingest changes C meanwhile. Since ids and metadata are
copied as they are, the document records on head chunks (content hash, chunk count, ingest
time) stay the same: incremental ingest still skips unchanged files, and the lexical index,
keyed by collection name and by each document's id, chunk count and ingest time, stays valid
without a rebuild.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from privatellm.chunking import chunk_id
from privatellm.config import EmbeddingSettings
from privatellm.embeddings import Embedder, build_embedder
from privatellm.errors import ConfigError, ModelError, NotFoundError, StoreError
from privatellm.registry import Registry, card_languages
from privatellm.store import ChromaStore, Collection, EmbeddingModel
from privatellm.types import DocumentRecord, Progress


@dataclass(frozen=True)
class Reindexed:
    """What a reindex did."""

    collection: str
    chunks: int  # in the collection afterwards
    model: str
    dimension: int
    seconds: float
    changed: bool  # False: the collection had this model already


def choose_embedding(registry: Registry, model: str, base: EmbeddingSettings) -> EmbeddingSettings:
    """Returns base's settings for embedding model `model`: a registered embedding model's name
    or a sentence-transformers folder; raises NotFoundError naming the registered ones."""
    found = registry.find(model)
    if found is not None and found.role != "embedding":
        raise ConfigError(f"{model!r} is a registered {found.role} model, not an embedding model")
    if found is not None:
        return base.model_copy(update={"kind": "sentence-transformers", "model": found.path})
    folder = Path(model).expanduser()
    if not folder.is_dir():
        names = ", ".join(m.name for m in registry.all() if m.role == "embedding")
        raise NotFoundError(
            f"no embedding model named {model!r} (registered: {names}) and no folder {model!r}"
        )
    # A folder is recorded by its absolute path: the collection must find it from anywhere.
    return base.model_copy(update={"kind": "sentence-transformers", "model": str(folder.resolve())})


def declared_languages(registry: Registry, settings: EmbeddingSettings) -> tuple[str, ...]:
    """Returns the languages the model the settings name declares: the registry's entry, else
    its model card's; () when neither says (taken as English only)."""
    if settings.kind == "fake":
        return ()
    registered = registry.by_path(settings.model)
    if registered is not None and registered.languages:
        return registered.languages
    folder = Path(settings.model).expanduser()
    return card_languages(folder) if folder.is_dir() else ()


class Embedders:
    """The embedding models one service's collections need, each built once, on first use."""

    def __init__(
        self,
        registry: Registry,
        configured: EmbeddingSettings,
        configured_embedder: Callable[[], Embedder],
    ) -> None:
        """configured_embedder: the service's own embedder (which a test may have handed in)."""
        self._registry = registry
        self._configured = configured
        self._configured_embedder = configured_embedder
        self._built: dict[tuple[str, str], Embedder] = {}
        self._lock = threading.Lock()  # the API's threads ask at once; build each model once

    def get(self, settings: EmbeddingSettings) -> Embedder:
        """Returns the model these settings build, with the languages it declares."""
        key = (settings.kind, settings.model)
        with self._lock:
            if key not in self._built:
                embedder = build_embedder(settings)
                embedder.languages = declared_languages(self._registry, settings)
                self._built[key] = embedder
            return self._built[key]

    def for_collection(self, collection: Collection) -> Embedder:
        """Returns the model collection was built with; raises ModelError naming the fix if it
        cannot be loaded, EmbeddingMismatchError if it is no longer that model."""
        recorded = collection.embedding
        configured = (self._configured.kind, self._configured.model)
        if not recorded.kind or (recorded.kind, recorded.ref) == configured:
            embedder = self._configured_embedder()  # collections from before refs were recorded
        elif "openai" in (recorded.kind, self._configured.kind) and self._configured_is(recorded):
            # An embedding server's address is not recorded, and the model it serves may run in
            # process too: the configured model serves a collection it gives the same vectors.
            embedder = self._configured_embedder()
        else:
            embedder = self._load(collection.name, recorded)
        collection.check_model(embedder.name, embedder.dimension)
        return embedder

    def _configured_is(self, recorded: EmbeddingModel) -> bool:
        """Returns whether the configured model is the recorded one (same name and dimension)."""
        embedder = self._configured_embedder()
        return (embedder.name, embedder.dimension) == (recorded.name, recorded.dimension)

    def _load(self, name: str, recorded: EmbeddingModel) -> Embedder:
        settings = self._configured.model_copy(
            update={"kind": recorded.kind, "model": recorded.ref}
        )
        try:
            return self.get(settings)
        except ModelError as e:
            raise ModelError(
                f"collection {name!r} was built with embedding model {recorded.name}, which "
                f"cannot be loaded ({e}): register it again (`privatellm models import`), or move "
                f"the collection to another model: `privatellm reindex --embedding NAME -c {name}`"
            ) from e


def reindex(
    store: ChromaStore,
    name: str,
    embedder: Embedder,
    model: EmbeddingModel,
    batch: int,
    progress: Progress | None = None,
) -> Reindexed:
    """Returns what was done after re-embedding collection name's chunks with embedder (which is
    model) and switching the collection to them; the caller holds the write lock."""
    started = time.perf_counter()
    store.settle(name)
    source = store.open(name)
    if source.model == (model.name, model.dimension):
        if (source.embedding.kind, source.embedding.ref) != (model.kind, model.ref):
            source.record_model(model)  # the same model, found somewhere else now
        return Reindexed(name, source.count(), model.name, model.dimension, 0.0, changed=False)
    records = source.documents()
    source.repair(records)  # chunks a crashed ingest left without their document
    staged = store.staging(name, model)
    copied = _copy(source, staged, records, embedder, batch, progress)
    if staged.count() != copied:
        raise StoreError(
            f"reindexing {name!r}: wrote {copied} chunks but the new collection holds "
            f"{staged.count()}; {name!r} still answers with {source.model[0]}"
        )
    store.switch(name)
    seconds = time.perf_counter() - started
    return Reindexed(name, copied, model.name, model.dimension, seconds, changed=True)


def _copy(
    source: Collection,
    target: Collection,
    records: Sequence[DocumentRecord],
    embedder: Embedder,
    batch: int,
    progress: Progress | None,
) -> int:
    """Returns how many chunks were copied from source into target with embedder's vectors.

    Read by id, document by document, rather than by offset: the order is the records', and
    orphaned chunks stay behind."""
    ids = [chunk_id(r.id, i) for r in records for i in range(r.chunks)]
    if progress is not None:
        progress.start(len(ids))
    copied = 0
    for start in range(0, len(ids), batch):
        rows = source.stored(ids[start : start + batch])
        if rows:
            target.put(rows, embedder.embed_batch([r.text for r in rows]))
        copied += len(rows)
        if progress is not None:
            progress.advance(0, len(rows))
    if progress is not None:
        progress.close()
    return copied

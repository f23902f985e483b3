"""privatellm's retrieval as a LangChain retriever, so it plugs into any LangChain chain.

from privatellm.langchain import PrivateLLMRetriever
retriever = PrivateLLMRetriever(service=Service(load_settings()), k=4)
retriever.invoke("When was Llama 2 released?")  # -> list[Document]
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from privatellm.retrieval import Mode
from privatellm.service import Service


class PrivateLLMRetriever(BaseRetriever):
    """Hybrid (or dense / lexical) search over one privatellm collection."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    service: Service
    collection: str | None = None
    k: int = 4
    mode: Mode | None = None
    sources: list[str] | None = None

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        hits = self.service.retrieve(query, self.collection, self.k, self.mode, self.sources)
        return [
            Document(
                page_content=h.chunk.text,
                id=h.chunk.id,
                metadata=_metadata(h.chunk.source, h.chunk.page, h.chunk.doc_id, h.score),
            )
            for h in hits
        ]


def _metadata(source: str, page: int | None, doc_id: str, score: float) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": source, "doc_id": doc_id, "score": score}
    if page is not None:
        meta["page"] = page
    return meta

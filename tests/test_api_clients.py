"""Real clients against a real `privatellm serve` on a loopback port, with the bundled models:
the official openai package and LangChain's ChatOpenAI, unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import SAMPLES, free_port, wait_healthy

from privatellm.config import Settings
from privatellm.embeddings import Embedder
from privatellm.errors import ModelError
from privatellm.service import Service

KEY = "test-key-123"
QUESTION = "Who started the llama.cpp project?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Iterator[str]:
    """`privatellm serve` over ingest/, with an API key; yields its /v1 base URL."""
    tmp = tmp_path_factory.mktemp("serve")
    data = tmp / "data"
    Service(Settings(data_dir=data), embedder=real_embedder).ingest([SAMPLES])
    port = free_port()
    env = {**os.environ, "PRIVATELLM_API__API_KEY": KEY}
    env.pop("PRIVATELLM_CONFIG", None)
    log = (tmp / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "privatellm", "--data-dir", str(data), "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(f"{base}/health", process, b'"ok"')
        yield f"{base}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server, api_key=KEY, max_retries=0, timeout=300)


def _file_pages(sources: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [
        (s["document"]["doc_metadata"]["file_name"], s["document"]["doc_metadata"]["page_label"])  # type: ignore[index]
        for s in sources
    ]


def test_openai_chat_with_context(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="privatellm",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"use_context": True},
    )
    choice = completion.choices[0]
    assert "Gerganov" in (choice.message.content or "")
    extra = choice.model_extra or {}
    assert ("llama-history.pdf", "3") in _file_pages(extra["sources"])
    assert extra["cited"] and not extra["abstained"]
    assert completion.usage is not None and completion.usage.prompt_tokens > 50


def test_openai_chat_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="privatellm",
        messages=[{"role": "user", "content": QUESTION}],
        extra_body={"use_context": True},
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() and len(chunks) > 3  # the model's words, streamed piece by piece
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The finished answer comes with the last chunk: auto quotes the passage when the bundled
    # model's words do not say what it says.
    assert "Gerganov" in (chunks[-1].choices[0].model_extra or {})["text"]
    sources = (chunks[0].choices[0].model_extra or {})["sources"]
    assert ("llama-history.pdf", "3") in _file_pages(sources)


def test_openai_chat_without_context(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="privatellm",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
    )
    assert completion.choices[0].message.content
    assert (completion.choices[0].model_extra or {}).get("sources") is None


def test_openai_embeddings_and_models(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=["hello", "本地运行"])
    assert [len(d.embedding) for d in result.data] == [384, 384]
    assert abs(sum(x * x for x in result.data[0].embedding) - 1.0) < 1e-2  # unit length (bf16)
    assert [m.id for m in client.models.list()] == ["SmolLM2-135M-Instruct"]


def test_openai_client_with_a_wrong_key_is_refused(server: str) -> None:
    wrong = openai.OpenAI(base_url=server, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_langchain_chat_openai(server: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        base_url=server,
        api_key=KEY,  # type: ignore[arg-type]
        model="privatellm",
        temperature=0,
        max_retries=0,
        extra_body={"use_context": True},
        include_response_headers=True,
    )
    message = llm.invoke(QUESTION)
    assert "Gerganov" in str(message.content)
    sources = json.loads(message.response_metadata["headers"]["x-privatellm-sources"])
    assert {"file_name": "llama-history.pdf", "page": "3"}.items() <= sources[0].items()
    streamed = [str(chunk.content) for chunk in llm.stream(QUESTION)]
    assert len(streamed) > 3 and "".join(streamed).strip()  # the model's words, piece by piece


def test_server_answers_privategpt_style_ingest(server: str, tmp_path: Path) -> None:
    import httpx

    headers = {"Authorization": KEY}  # PrivateGPT clients send the raw secret
    base = server.removesuffix("/v1")
    with httpx.Client(base_url=base, headers=headers, timeout=300) as http:
        note = tmp_path / "falcon.txt"
        note.write_text("The Falcon 9 first stage landed on 21 December 2015.", encoding="utf-8")
        with note.open("rb") as f:
            ingested = http.post("/v1/ingest/file", files={"file": ("falcon.txt", f)})
        assert ingested.status_code == 200
        doc_id = ingested.json()["data"][0]["doc_id"]
        chunks = http.post("/v1/chunks", json={"text": "When did the Falcon 9 land?", "limit": 2})
        assert chunks.json()["data"][0]["document"]["doc_id"] == doc_id
        assert http.delete(f"/v1/ingest/{doc_id}").status_code == 200


def test_openai_engine_answers_through_a_remote_server(
    server: str, tmp_path: Path, real_embedder: Embedder
) -> None:
    """engine.kind openai: retrieval and citations here, the model behind `privatellm serve`."""
    settings = Settings(
        data_dir=tmp_path / "data",
        engine={  # type: ignore[arg-type]
            "kind": "openai",
            "base_url": server,
            "api_key": KEY,
            "model": "SmolLM2-135M-Instruct",
        },
    )
    service = Service(settings, embedder=real_embedder)
    service.ingest([SAMPLES])
    reply = service.ask(QUESTION)
    pieces = list(reply)
    answer = reply.answer()
    assert len(pieces) > 3 and "Gerganov" in answer.text  # streamed from the server
    assert (Path(answer.citations[0].source).name, answer.citations[0].page) == (
        "llama-history.pdf",
        3,
    )
    wrong = Service(
        settings.model_copy(update={"engine": settings.engine.model_copy(update={"api_key": "x"})}),
        embedder=real_embedder,
    )
    with pytest.raises(ModelError, match="HTTP 401"):
        "".join(wrong.ask(QUESTION))

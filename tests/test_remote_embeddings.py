"""embedding.kind openai: embeddings from an OpenAI-compatible server, all on loopback.

privatellm's own API (the real bundled model behind it) serves the end-to-end tests; a scripted
server answers with rate limits, failures and shuffled batches for the rest.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from conftest import free_port, write_texts

from privatellm.api import create_app
from privatellm.config import EmbeddingSettings, Settings
from privatellm.embeddings import (
    Embedder,
    OpenAIEmbedder,
    TokenizerCounter,
    WordCounter,
    build_embedder,
    remote_token_counter,
)
from privatellm.errors import ConfigError, ModelError
from privatellm.service import Service

LLAMA = (
    "llama.cpp is a C++ library for running large language models on ordinary CPUs. "
    "Georgi Gerganov started the project in March 2023, shortly after Meta released LLaMA."
)
GARDEN = (
    "Tomatoes need six to eight hours of direct sunlight a day. Water them deeply twice a "
    "week, and stake the vines so that the fruit stays off the wet soil."
)


# -- privatellm's own /v1/embeddings, served in a thread -------------------------------------------


@contextlib.contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Yields the base URL of app served by uvicorn on a free loopback port; stops it after."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws="none", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Iterator[str]:
    """`privatellm serve`'s app with the bundled embedding model; yields its /v1 root."""
    data = tmp_path_factory.mktemp("served") / "data"
    service = Service(Settings(data_dir=data), embedder=real_embedder)
    with serve_in_thread(create_app(service)) as url:
        yield f"{url}/v1"


def test_remote_vectors_equal_the_local_ones(served: str, real_embedder: Embedder) -> None:
    texts = [LLAMA, GARDEN, "short", "Quel temps fait-il à Paris ?", "x " * 300]
    remote = OpenAIEmbedder(EmbeddingSettings(kind="openai", base_url=served))
    assert (remote.name, remote.dimension) == (real_embedder.name, real_embedder.dimension)
    vectors = remote.embed_batch(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (len(texts), remote.dimension)
    np.testing.assert_allclose(vectors, real_embedder.embed_batch(texts), atol=1e-5)
    np.testing.assert_allclose(
        remote.embed_query(GARDEN), real_embedder.embed_query(GARDEN), atol=1e-5
    )


def test_ingest_through_the_server_then_search(
    served: str, tmp_path: Path, real_embedder: Embedder
) -> None:
    folder = write_texts(tmp_path / "docs", [LLAMA, GARDEN])
    embedding = {"kind": "openai", "base_url": served, "tokenizer": "bundled:all-MiniLM-L6-v2"}
    data = tmp_path / "data"
    remote = Service(Settings(data_dir=data, embedding=embedding))  # type: ignore[arg-type]
    report = remote.ingest([folder])
    assert len(report.paths("added")) == 2 and not report.paths("failed")
    hits = remote.retrieve("how much sun does a tomato plant want", top_k=1, mode="dense")
    assert Path(hits[0].chunk.source).name == "p1.txt"
    # The collection records the served model's name and dimension: the bundled model in this
    # process reads it as its own.
    local = Service(Settings(data_dir=data), embedder=real_embedder)
    assert local.store.open("default").model == ("all-MiniLM-L6-v2", 384)
    hits = local.retrieve("who started llama.cpp", top_k=1, mode="dense")
    assert Path(hits[0].chunk.source).name == "p0.txt"


# -- a scripted server: failures, shuffled answers ------------------------------------------------


class Script:
    """What the scripted server answers, in turn, and what it was sent."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.answers = list(answers or [])  # (status, headers); when used up, every answer is 200
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str] = []
        self.shuffle = False  # send `data` in reverse order
        self.delay = 0.0  # seconds before each answer
        self.padding = 0  # zeros added to each vector: another dimension

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        if status != 200:
            return status, headers, {"error": {"message": f"scripted\n{status}", "type": "x"}}
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t) + [0.0] * self.padding}
            for i, t in enumerate(texts)
        ]
        if self.shuffle:
            data.reverse()
        return 200, headers, {"object": "list", "data": data, "model": "scripted-model"}


def _vector(text: str) -> list[float]:
    """Returns a vector that tells texts apart, deliberately not of unit length."""
    return [float(len(text)), float(sum(map(ord, text)) % 97), 3.0]


def _unit(text: str) -> np.ndarray[Any, Any]:
    vector = np.array(_vector(text), dtype=np.float32)
    return vector / np.linalg.norm(vector)


@contextlib.contextmanager
def scripted_server(script: Script) -> Iterator[str]:
    """Yields the /v1 root of a server answering POST /v1/embeddings as the script says."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            script.authorizations.append(self.headers.get("Authorization", ""))
            time.sleep(script.delay)
            status, headers, answer = script.answer(body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            for key, value in {**headers, "Content-Type": "application/json"}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _remote(url: str, **settings: Any) -> OpenAIEmbedder:
    return OpenAIEmbedder(EmbeddingSettings(kind="openai", base_url=url, **settings))


def test_retries_429_then_503_then_succeeds() -> None:
    script = Script([(429, {"Retry-After": "0"}), (503, {})])
    with scripted_server(script) as url:
        embedder = _remote(url, max_retries=2)  # the probe meets both failures
        assert len(script.requests) == 3
        assert (embedder.name, embedder.dimension) == ("scripted-model", 3)
        np.testing.assert_allclose(embedder.embed_batch(["abc"])[0], _unit("abc"), rtol=1e-6)


def test_honours_retry_after() -> None:
    # Without Retry-After the first retry comes within 0.5 s.
    script = Script([(429, {"Retry-After": "1"})])
    with scripted_server(script) as url:
        started = time.monotonic()
        _remote(url, max_retries=1)
        assert time.monotonic() - started >= 1.0 and len(script.requests) == 2


def test_gives_up_on_5xx_after_max_retries() -> None:
    script = Script([(500, {}), (500, {}), (500, {})])
    with scripted_server(script) as url, pytest.raises(ModelError) as failed:
        _remote(url, max_retries=1)
    message = str(failed.value)
    assert len(script.requests) == 2
    assert "\n" not in message and url in message and "HTTP 500" in message
    assert "embedding.max_retries" in message


def test_400_is_not_retried() -> None:
    script = Script([(400, {})])
    with scripted_server(script) as url, pytest.raises(ModelError) as failed:
        _remote(url, max_retries=3)
    message = str(failed.value)
    assert len(script.requests) == 1
    assert "\n" not in message and url in message and "HTTP 400: scripted 400" in message


def test_401_names_the_api_key_setting() -> None:
    script = Script([(401, {})])
    with scripted_server(script) as url, pytest.raises(ModelError, match=r"embedding\.api_key"):
        _remote(url)


def test_connection_refused_is_one_line_naming_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(ModelError) as failed:
        _remote(url, max_retries=0)
    message = str(failed.value)
    assert "\n" not in message and url in message and "embedding.base_url" in message


def test_a_server_too_slow_to_answer_is_one_line_naming_the_setting() -> None:
    script = Script()
    with scripted_server(script) as url:
        embedder = _remote(url, timeout_seconds=0.3, max_retries=0)
        script.delay = 1.0
        with pytest.raises(ModelError) as failed:
            embedder.embed_batch(["slow"])
    message = str(failed.value)
    assert "\n" not in message and url in message and "embedding.timeout_seconds" in message


def test_batches_requests_and_keeps_order_when_the_server_shuffles() -> None:
    script = Script()
    with scripted_server(script) as url:
        embedder = _remote(url, batch_size=4, api_key="sekrit")
        script.requests.clear()
        script.shuffle = True
        texts = [f"text number {n} " + "z" * n for n in range(10)]
        vectors = embedder.embed_batch(texts)
    assert [len(r["input"]) for r in script.requests] == [4, 4, 2]
    assert len(script.requests) == math.ceil(len(texts) / 4)
    assert [t for r in script.requests for t in r["input"]] == texts
    assert {r["model"] for r in script.requests} == {"all-MiniLM-L6-v2"}  # 'bundled:' dropped
    assert set(script.authorizations) == {"Bearer sekrit"}
    np.testing.assert_allclose(vectors, np.stack([_unit(t) for t in texts]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    assert embedder.embed_batch([]).shape == (0, 3)


def test_a_server_sending_too_few_vectors_is_an_error() -> None:
    class Short(Script):
        def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
            status, headers, answer = super().answer(body)
            answer["data"] = answer["data"][:-1] if len(answer["data"]) > 1 else answer["data"]
            return status, headers, answer

    with scripted_server(Short()) as url:
        embedder = _remote(url)
        with pytest.raises(ModelError, match="1 vectors for 2 texts"):
            embedder.embed_batch(["a", "b"])


def test_a_server_switching_dimension_is_an_error() -> None:
    script = Script()
    with scripted_server(script) as url:
        embedder = _remote(url, batch_size=1)
        script.padding = 1
        with pytest.raises(ModelError, match="sent 4-dim vectors, 3 before"):
            embedder.embed_batch(["a", "b"])


def test_kind_openai_without_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"embedding\.base_url"):
        build_embedder(EmbeddingSettings(kind="openai"))


def test_token_counter_of_a_remote_model(tmp_path: Path, real_embedder: Embedder) -> None:
    assert isinstance(remote_token_counter(""), WordCounter)
    bundled = remote_token_counter("bundled:all-MiniLM-L6-v2")
    assert isinstance(bundled, TokenizerCounter)
    assert bundled(LLAMA) == real_embedder.count_tokens(LLAMA) != WordCounter()(LLAMA)
    with pytest.raises(ConfigError, match=r"embedding\.tokenizer"):
        remote_token_counter(str(tmp_path / "missing.json"))
    (tmp_path / "tokenizer.json").write_text("{not a tokenizer", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"not a tokenizer\.json"):
        remote_token_counter(str(tmp_path))  # a folder: its tokenizer.json

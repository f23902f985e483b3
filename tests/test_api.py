"""The HTTP API through FastAPI's TestClient, on the fast fake models: every route, its errors,
auth, limits, hostile file names and concurrent requests."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from privatellm.api import create_app
from privatellm.config import Settings
from privatellm.engines.fake import FakeEngine
from privatellm.service import Service

EIFFEL = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."
EVEREST = "Mount Everest is 8,849 metres high and lies on the border of Nepal and China."
QUESTION = "When was the Eiffel Tower completed?"


def _settings(tmp_path: Path, engine: dict[str, object] | None = None, **api: object) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        embedding={"kind": "fake"},  # type: ignore[arg-type]
        # The API names the model by its setting, as for a real one: here "fake".
        engine={"kind": "fake", "model": "fake", **(engine or {})},  # type: ignore[arg-type]
        api=api,  # type: ignore[arg-type]
    )


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return Service(_settings(tmp_path))


@pytest.fixture
def client(service: Service) -> Iterator[TestClient]:
    with TestClient(create_app(service)) as c:
        yield c


@pytest.fixture
def loaded(client: TestClient) -> TestClient:
    for name, text in (("eiffel.txt", EIFFEL), ("everest.txt", EVEREST)):
        assert client.post("/v1/ingest/text", json={"file_name": name, "text": text}).is_success
    return client


def _sse(body: str) -> list[dict[str, object]]:
    lines = [line.removeprefix("data: ") for line in body.split("\n\n") if line.strip()]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


# -- health, models, docs ----------------------------------------------------------------------


def test_health_models_and_docs(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "fake"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn.jsdelivr" not in docs.text  # served from here
    assert "swagger-ui-bundle.js" in docs.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/chunks", "/v1/ingest/file", "/v1/summarize"} <= set(paths)


# -- chat and completions ----------------------------------------------------------------------


def test_chat_with_context_answers_with_sources(loaded: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": QUESTION}], "use_context": True}
    raw = loaded.post("/v1/chat/completions", json=body)
    brief = json.loads(raw.headers["x-privatellm-sources"])
    assert brief[0]["n"] == 1 and brief[0]["file_name"] == "eiffel.txt"
    response = raw.json()
    assert response["object"] == "completion" and response["id"]
    choice = response["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert "1889" in choice["message"]["content"] and "[1]" in choice["message"]["content"]
    assert choice["cited"] == [1] and choice["abstained"] is False
    first = choice["sources"][0]
    assert first["object"] == "context.chunk" and first["text"] == EIFFEL
    assert first["document"]["object"] == "ingest.document"
    assert first["document"]["doc_metadata"]["file_name"] == "eiffel.txt"
    usage = response["usage"]
    assert usage["prompt_tokens"] > 10 and usage["total_tokens"] > usage["prompt_tokens"]


def test_chat_streams_deltas_then_stop_then_done(loaded: TestClient) -> None:
    body = {
        "messages": [{"role": "user", "content": QUESTION}],
        "use_context": True,
        "stream": True,
    }
    with loaded.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response.read().decode())
    assert all(e["object"] == "completion.chunk" for e in events)
    text = "".join(str(e["choices"][0]["delta"].get("content") or "") for e in events)  # type: ignore[index]
    assert "1889" in text and "[1]" in text
    last = events[-1]["choices"][0]  # type: ignore[index]
    assert last["finish_reason"] == "stop" and last["cited"] == [1]
    assert last["sources"][0]["document"]["doc_metadata"]["file_name"] == "eiffel.txt"
    assert events[0]["choices"][0]["sources"]  # type: ignore[index]  sources ride on every chunk


def test_chat_without_context_talks_to_the_model_alone(loaded: TestClient) -> None:
    body = {"messages": [{"role": "user", "content": "Hello there."}], "include_sources": False}
    choice = loaded.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert choice["message"]["content"] == "I don't know."  # the fake engine saw no passages
    assert choice["sources"] is None


def test_chat_honours_openai_fields(loaded: TestClient) -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        "use_context": True,
        "answer_mode": "generate",  # max_tokens bounds the model's words, not a quote
        "max_tokens": 3,
        "stop": ["never"],
        "temperature": 0.3,
        "top_p": 0.5,
        "seed": 7,  # unknown to us, accepted like OpenAI's server does
    }
    response = loaded.post("/v1/chat/completions", json=body).json()
    assert response["model"] == "fake"
    assert response["choices"][0]["message"]["content"].startswith("The Eiffel Tower")
    assert len(response["choices"][0]["message"]["content"].split()) <= 4  # 3 words, maybe [1]


def test_answer_modes_report_what_the_user_got_and_the_quoted_span(loaded: TestClient) -> None:
    question = {"messages": [{"role": "user", "content": QUESTION}], "use_context": True}
    quoted = loaded.post("/v1/chat/completions", json={**question, "answer_mode": "extract"})
    choice = quoted.json()["choices"][0]
    assert choice["answer_kind"] == "quoted" and choice["cited"] == [1]
    span = choice["citations"][0]
    passage = choice["sources"][0]["document"]["doc_metadata"]
    assert "1889" in span["quote"] and span["quote"] in choice["message"]["content"]
    assert span["end"] > span["start"] and span["page_end"] - span["page_start"] == len(
        span["quote"]
    )
    assert passage is not None
    generated = loaded.post("/v1/chat/completions", json={**question, "answer_mode": "generate"})
    assert generated.json()["choices"][0]["answer_kind"] == "generated"
    streamed = loaded.post(
        "/v1/chat/completions", json={**question, "answer_mode": "extract", "stream": True}
    )
    last = [e for e in _sse(streamed.text) if e["choices"][0].get("finish_reason")][-1]
    assert last["choices"][0]["answer_kind"] == "quoted"  # type: ignore[index]
    assert "1889" in last["choices"][0]["text"]  # type: ignore[index]  # the finished answer
    bad = loaded.post("/v1/chat/completions", json={**question, "answer_mode": "guess"})
    assert bad.status_code == 422 and "answer_mode" in bad.json()["error"]["message"]


def test_follow_up_uses_the_history_and_abstains_honestly(loaded: TestClient) -> None:
    body = {
        "messages": [
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "In 1889 [1]."},
            {"role": "user", "content": "zebra quantum saxophone?"},
        ],
        "use_context": True,
    }
    choice = loaded.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert isinstance(choice["abstained"], bool)
    unrelated = {"messages": [{"role": "user", "content": "zebra quantum?"}], "use_context": True}
    choice = loaded.post("/v1/chat/completions", json=unrelated).json()["choices"][0]
    assert choice["abstained"] is True and choice["cited"] == []
    assert choice["message"]["content"].startswith("The documents don't say")


def test_context_filter_limits_the_documents(loaded: TestClient) -> None:
    ids = {d["doc_metadata"]["file_name"]: d["doc_id"] for d in _documents(loaded)}
    body = {
        "messages": [{"role": "user", "content": "How high is Mount Everest?"}],
        "use_context": True,
        "context_filter": {"docs_ids": [ids["eiffel.txt"]]},
    }
    choice = loaded.post("/v1/chat/completions", json=body).json()["choices"][0]
    assert {s["document"]["doc_id"] for s in choice["sources"] or []} <= {ids["eiffel.txt"]}
    body["context_filter"] = {"docs_ids": ["0123456789abcdef"]}
    response = loaded.post("/v1/chat/completions", json=body)
    assert response.status_code == 404 and "0123456789abcdef" in response.json()["error"]["message"]


def test_completions_with_system_prompt(loaded: TestClient) -> None:
    body = {"prompt": QUESTION, "system_prompt": "Answer briefly.", "use_context": True}
    choice = loaded.post("/v1/completions", json=body).json()["choices"][0]
    assert "1889" in choice["message"]["content"] and choice["text"] == choice["message"]["content"]
    body["stream"] = True
    with loaded.stream("POST", "/v1/completions", json=body) as response:
        events = _sse(response.read().decode())
    assert events[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


def test_chat_errors_are_openai_error_bodies(loaded: TestClient) -> None:
    missing = loaded.post("/v1/chat/completions", json={"use_context": True})
    assert missing.status_code == 422
    error = missing.json()["error"]
    assert error["type"] == "invalid_request_error" and "messages" in error["message"]
    no_user = {"messages": [{"role": "system", "content": "x"}]}
    assert loaded.post("/v1/chat/completions", json=no_user).status_code == 400
    bad = {"messages": [{"role": "user", "content": "x"}], "temperature": 5}
    assert loaded.post("/v1/chat/completions", json=bad).status_code == 422
    empty_filter = {
        "messages": [{"role": "user", "content": "x"}],
        "use_context": True,
        "context_filter": {"docs_ids": []},
    }
    assert loaded.post("/v1/chat/completions", json=empty_filter).status_code == 400
    wrong_collection = {"messages": [{"role": "user", "content": "x"}], "use_context": True}
    response = loaded.post("/v1/chat/completions?collection=nope", json=wrong_collection)
    assert response.status_code == 404 and "nope" in response.json()["error"]["message"]


# -- chunks ------------------------------------------------------------------------------------


def test_chunks_by_score_with_neighbours(client: TestClient) -> None:
    text = " ".join(f"Sentence number {n} is about the topic {n}." for n in range(400))
    client.post("/v1/ingest/text", json={"file_name": "long", "text": text})
    response = client.post(
        "/v1/chunks", json={"text": "Sentence number 200", "limit": 3, "prev_next_chunks": 1}
    ).json()
    assert response["object"] == "list" and len(response["data"]) == 3
    scores = [c["score"] for c in response["data"]]
    assert scores == sorted(scores, reverse=True)
    middle = [c for c in response["data"] if c["previous_texts"] and c["next_texts"]]
    assert middle and len(middle[0]["previous_texts"]) == 1
    plain = client.post("/v1/chunks", json={"text": "Sentence number 200"}).json()["data"][0]
    assert plain["previous_texts"] is None and plain["next_texts"] is None


# -- ingestion ---------------------------------------------------------------------------------


def _documents(client: TestClient, collection: str | None = None) -> list[dict[str, object]]:
    query = f"?collection={collection}" if collection else ""
    listed = client.get(f"/v1/ingest/list{query}").json()
    assert listed["object"] == "list"
    return listed["data"]  # type: ignore[no-any-return]


def test_ingest_file_list_and_delete(client: TestClient, tmp_path: Path) -> None:
    response = client.post(
        "/v1/ingest/file", files={"file": ("notes.md", b"# Notes\n\n" + EIFFEL.encode())}
    )
    assert response.status_code == 200
    [doc] = response.json()["data"]
    assert doc["object"] == "ingest.document" and doc["doc_metadata"]["file_name"] == "notes.md"
    assert [d["doc_id"] for d in _documents(client)] == [doc["doc_id"]]
    again = client.post(
        "/v1/ingest/file", files={"file": ("notes.md", b"# Notes\n\n" + EIFFEL.encode())}
    )
    assert again.json()["data"][0]["doc_id"] == doc["doc_id"]  # unchanged: same document
    deleted = client.delete(f"/v1/ingest/{doc['doc_id']}")
    assert deleted.status_code == 200 and deleted.json()["data"][0]["doc_id"] == doc["doc_id"]
    assert _documents(client) == []
    assert client.delete(f"/v1/ingest/{doc['doc_id']}").status_code == 404
    assert client.delete("/v1/ingest/..%2F..%2Fetc").status_code == 404


def test_several_files_in_one_request_and_partial_failure(client: TestClient) -> None:
    files = [
        ("file", ("a.txt", EIFFEL.encode())),
        ("file", ("broken.pdf", b"%PDF-1.4 junk")),
        ("file", ("b.txt", EVEREST.encode())),
    ]
    response = client.post("/v1/ingest/file", files=files).json()
    assert sorted(d["doc_metadata"]["file_name"] for d in response["data"]) == ["a.txt", "b.txt"]
    [error] = response["errors"]
    assert error["file_name"] == "broken.pdf" and "not a readable PDF" in error["error"]


def test_bad_uploads_get_4xx_with_the_reason(client: TestClient, service: Service) -> None:
    broken = client.post("/v1/ingest/file", files={"file": ("x.pdf", b"%PDF-1.4 junk")})
    assert broken.status_code == 422 and "not a readable PDF" in broken.json()["error"]["message"]
    unsupported = client.post("/v1/ingest/file", files={"file": ("x.exe", b"MZ\x90\x00")})
    assert unsupported.status_code == 415
    empty = client.post("/v1/ingest/text", json={"file_name": "e", "text": "  "})
    assert empty.status_code == 422
    assert _documents(client) == []
    uploads = service.settings.data_dir / "uploads" / "default"
    assert not uploads.exists() or list(uploads.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize(
    "name",
    ["../../escape.txt", "/etc/passwd.txt", "..\\..\\win.txt", "...notes.txt", "a/../../b.txt"],
)
def test_hostile_file_names_stay_in_the_data_dir(
    client: TestClient, service: Service, tmp_path: Path, name: str
) -> None:
    response = client.post("/v1/ingest/file", files={"file": (name, EIFFEL.encode())})
    assert response.status_code == 200
    data_dir = service.settings.data_dir.resolve()
    written = [p for p in tmp_path.rglob("*.txt")]
    assert written and all(p.resolve().is_relative_to(data_dir / "uploads") for p in written)
    assert not Path("/etc/passwd.txt").exists()


def test_ingest_text_adds_a_text_suffix(client: TestClient) -> None:
    response = client.post("/v1/ingest/text", json={"file_name": "plain name", "text": EIFFEL})
    assert response.json()["data"][0]["doc_metadata"]["file_name"] == "plain name.txt"
    assert client.post("/v1/ingest/text", json={"text": EIFFEL}).status_code == 422


def test_upload_limits(tmp_path: Path) -> None:
    service = Service(_settings(tmp_path, max_upload_mb=0.01, max_files=2))
    with TestClient(create_app(service)) as client:
        big = client.post("/v1/ingest/file", files={"file": ("big.txt", b"a " * 10_000)})
        assert big.status_code == 413 and "big.txt" in big.json()["error"]["message"]
        many = [("file", (f"{n}.txt", f"File {n} text.".encode())) for n in range(3)]
        assert client.post("/v1/ingest/file", files=many).status_code == 413
        huge = client.post(
            "/v1/ingest/file",
            content=b"x" * 64,
            headers={"content-length": str(50 * 1024 * 1024), "content-type": "text/plain"},
        )
        assert huge.status_code == 413
        assert _documents(client) == []


def test_collections_are_chosen_per_request(client: TestClient) -> None:
    body = {"file_name": "everest", "text": EVEREST, "collection": "mountains"}
    assert client.post("/v1/ingest/text", json=body).status_code == 200
    assert [d["doc_metadata"]["file_name"] for d in _documents(client, "mountains")] == [
        "everest.txt"
    ]
    assert _documents(client) == []  # nothing in the default one
    assert client.get("/v1/ingest/list?collection=nope").status_code == 404
    chat = {
        "messages": [{"role": "user", "content": "How high is Mount Everest?"}],
        "use_context": True,
    }
    response = client.post("/v1/chat/completions?collection=mountains", json=chat).json()
    assert "8,849" in response["choices"][0]["message"]["content"]
    bad = client.post("/v1/ingest/text?collection=../x", json={"file_name": "a", "text": "b"})
    assert bad.status_code == 400 and "invalid collection name" in bad.json()["error"]["message"]


# -- summaries and embeddings ------------------------------------------------------------------


def test_summarize_text_documents_and_stream(loaded: TestClient) -> None:
    text = loaded.post("/v1/summarize", json={"text": EVEREST}).json()
    assert text["summary"]  # the fake engine answers "I don't know." without numbered passages
    ids = [d["doc_id"] for d in _documents(loaded)]
    body = {"use_context": True, "context_filter": {"docs_ids": ids[:1]}}
    assert loaded.post("/v1/summarize", json=body).json()["summary"]
    body["stream"] = True
    with loaded.stream("POST", "/v1/summarize", json=body) as response:
        events = _sse(response.read().decode())
    assert events[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert loaded.post("/v1/summarize", json={}).status_code == 400


def test_embeddings_float_and_base64(client: TestClient, service: Service) -> None:
    one = client.post("/v1/embeddings", json={"input": "hello world"}).json()
    assert one["object"] == "list" and one["data"][0]["object"] == "embedding"
    vector = one["data"][0]["embedding"]
    assert len(vector) == service.embedder.dimension
    assert one["usage"]["prompt_tokens"] == 2
    both = client.post(
        "/v1/embeddings", json={"input": ["hello world", "bye"], "encoding_format": "base64"}
    ).json()
    decoded = np.frombuffer(base64.b64decode(both["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vector, atol=1e-6) and both["data"][1]["index"] == 1
    assert client.post("/v1/embeddings", json={"input": []}).status_code == 400


# -- auth --------------------------------------------------------------------------------------


def test_api_key(tmp_path: Path) -> None:
    service = Service(_settings(tmp_path, api_key="s3cret"))
    with TestClient(create_app(service)) as client:
        assert client.get("/health").status_code == 200  # no key needed
        refused = client.get("/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["type"] == (
            "authentication_error"
        )
        assert (
            client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).is_success
        assert client.get(
            "/v1/models", headers={"Authorization": "s3cret"}
        ).is_success  # PrivateGPT
        assert (
            client.post("/v1/ingest/text", json={"file_name": "a", "text": EIFFEL}).status_code
            == 401
        )


def test_no_key_configured_means_no_auth(client: TestClient) -> None:
    assert client.get("/v1/models", headers={"Authorization": "Bearer anything"}).is_success


# -- concurrency -------------------------------------------------------------------------------


# Says what the passage's answering sentence says, so auto (the default) keeps these words.
TOWER = "The Eiffel Tower was completed in 1889 for the World's Fair [1]."


def _slow(tmp_path: Path, replies: int, delay_seconds: float, **engine: object) -> Service:
    """Returns a service whose fake engine takes its time over each word and notices
    overlapping replies."""
    script = {"script": [TOWER] * replies, "delay_seconds": delay_seconds}
    return Service(_settings(tmp_path, engine={**script, **engine}))


def _fake(service: Service) -> FakeEngine:
    engine = service.engine
    assert isinstance(engine, FakeEngine)  # built from engine.kind: fake
    return engine


def test_concurrent_requests_get_whole_answers(tmp_path: Path) -> None:
    service = _slow(tmp_path, replies=8, delay_seconds=0.02)
    with TestClient(create_app(service)) as client:
        client.post("/v1/ingest/text", json={"file_name": "eiffel", "text": EIFFEL})
        answers: list[str] = []
        statuses: list[int] = []

        def ask(stream: bool) -> None:
            body = {
                "messages": [{"role": "user", "content": QUESTION}],
                "use_context": True,
                "stream": stream,
            }
            response = client.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)
            if stream:
                events = _sse(response.text)
                answers.append(
                    "".join(str(e["choices"][0]["delta"].get("content") or "") for e in events)  # type: ignore[index]
                )
            else:
                answers.append(response.json()["choices"][0]["message"]["content"])

        def ingest() -> None:
            for n in range(5):
                text = f"Document {n} talks about bridges number {n}."
                client.post("/v1/ingest/text", json={"file_name": f"d{n}", "text": text})

        threads = [threading.Thread(target=ask, args=(n % 2 == 0,)) for n in range(8)]
        threads.append(threading.Thread(target=ingest))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert statuses == [200] * 8
    assert _fake(service).most_active == 1  # one reply at a time on the model
    assert all(a == TOWER for a in answers), answers
    assert len(_documents_of(service)) == 6  # ingestion went on beside the questions


def _documents_of(service: Service) -> list[object]:
    return list(service.documents())


def test_saturated_model_answers_busy_with_retry_after(tmp_path: Path) -> None:
    service = _slow(tmp_path, replies=4, delay_seconds=0.2, wait_seconds=0.3, max_waiting=1)
    with TestClient(create_app(service)) as client:
        client.post("/v1/ingest/text", json={"file_name": "eiffel", "text": EIFFEL})
        body = {"messages": [{"role": "user", "content": QUESTION}], "use_context": True}
        results: list[tuple[int, str | None]] = []

        def ask() -> None:
            response = client.post("/v1/chat/completions", json=body)
            results.append((response.status_code, response.headers.get("retry-after")))

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    codes = sorted(code for code, _ in results)
    assert codes[0] == 200 and set(codes[1:]) <= {200, 429, 503} and set(codes) != {200}
    assert all(retry is not None and int(retry) >= 1 for code, retry in results if code != 200)
    assert _fake(service).most_active == 1


def test_the_api_cannot_be_made_to_read_server_paths(loaded: TestClient) -> None:
    for path in ("/etc/passwd", "../../etc/passwd", str(Path.home())):
        body = {"text": "root", "context_filter": {"docs_ids": [path]}}
        response = loaded.post("/v1/chunks", json=body)
        assert response.status_code == 404 and "root:" not in response.text
        summary = {"use_context": True, "context_filter": {"docs_ids": [path]}}
        assert loaded.post("/v1/summarize", json=summary).status_code == 404

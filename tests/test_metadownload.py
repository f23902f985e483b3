"""Meta's download flow against a server in this test that answers as Meta's CloudFront
distribution does: files under /PATH?Policy=...&Signature=...&Key-Pair-Id=..., 403 for a wrong
or expired signature and for a key that does not exist, Range requests answered with 206."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from conftest import free_port

from privatellm.convert import is_meta_checkpoint
from privatellm.errors import ModelError
from privatellm.metadownload import ATTEMPTS, download_meta
from privatellm.models import verify

# what Meta's e-mail carries: the policy, a signature with percent-encoded '~', the key pair
SIGNATURE = "Qx5%7EAlxkS3qXOlD0ed64P4rM2Pphfl9XVyWoZ-Ypit"
QUERY = (
    "Policy=eyJTdGF0ZW1lbnQiOlt7InVuaXF1ZV9oYXNoIjoiYWluOTV3OHZxNjdq__"
    f"&Signature={SIGNATURE}&Key-Pair-Id=K15QRJLYKIFSLZ&Download-Request-ID=407224952137338"
)
SECRETS = (QUERY, SIGNATURE, "eyJTdGF0ZW1lbnQiOlt7InVuaXF1ZV9oYXNoIjoiYWluOTV3OHZxNjdq__")


@dataclass
class Site:
    """What the server holds and how it misbehaves."""

    files: dict[str, bytes] = field(default_factory=dict)
    expired: bool = False
    ignore_range: bool = False
    cuts: dict[str, int] = field(default_factory=dict)  # path -> answers still to cut short
    corrupt: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            raw_path, _, query = self.path.partition("?")
            path = unquote(raw_path.lstrip("/"))
            site.requests.append((path, self.headers.get("Range")))
            body = site.files.get(path)
            if query != QUERY or site.expired or body is None:
                self._answer(403, b"<Error><Code>AccessDenied</Code></Error>")
                return
            if path in site.corrupt:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            start = 0
            wanted = self.headers.get("Range")
            if wanted and not site.ignore_range:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self._answer(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    return
            rest = body[start:]
            headers = {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"}
            status = 206 if start or (wanted and not site.ignore_range) else 200
            if site.cuts.get(path):  # announce it all, send half, hang up
                site.cuts[path] -= 1
                self._answer(status, rest, headers if status == 206 else {}, len(rest) // 2)
                return
            self._answer(status, rest, headers if status == 206 else {})

        def _answer(
            self, status: int, body: bytes, headers: dict[str, str] | None = None, send: int = -1
        ) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:send] if send >= 0 else body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def site() -> Iterator[tuple[Site, str]]:
    """Yields the server's contents and Meta's link to it (the '*' where a file's path goes)."""
    state = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/*?{QUERY}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _checklist(files: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.md5(b).hexdigest()}  {n}\n" for n, b in files.items()).encode()


def publish_llama3(site: Site, shard: bytes) -> dict[str, bytes]:
    """Puts Meta-Llama-3-8B-Instruct on the server, laid out as Meta's llama3 download.sh
    fetches it; returns its model files by name."""
    model = {"consolidated.00.pth": shard, "params.json": b'{"dim": 64}', "tokenizer.model": b"tk"}
    site.files |= {"LICENSE": b"license", "USE_POLICY": b"policy"}
    site.files |= {f"8b_instruction_tuned/{n}": b for n, b in model.items()}
    site.files["8b_instruction_tuned/checklist.chk"] = _checklist(model)
    return model


def assert_secret_free(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text and unquote(secret) not in text


def test_llama2_download_gives_one_checkpoint_folder_with_its_tokenizer(
    site: tuple[Site, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A real (tiny) Meta checkpoint with two shards, served as llama-2-13b-chat is: the
    tokenizer at the top with its own checklist, the model's files in its folder. They land in
    one folder, the layout tests/test_torch_engine.py runs (converting it here costs 15 s)."""
    from test_convert import make_meta_checkpoint

    server, url = site
    original = tmp_path / "original"
    make_meta_checkpoint(original)
    model = {p.name: p.read_bytes() for p in sorted(original.iterdir())}
    tokenizer = model.pop("tokenizer.model")
    server.files |= {"LICENSE": b"license", "USE_POLICY.md": b"policy"}
    server.files |= {"tokenizer.model": tokenizer}
    server.files["tokenizer_checklist.chk"] = _checklist({"tokenizer.model": tokenizer})
    server.files |= {f"llama-2-13b-chat/{n}": b for n, b in model.items()}
    server.files["llama-2-13b-chat/checklist.chk"] = _checklist(model)
    caplog.set_level(logging.INFO, logger="httpx")

    folder = download_meta(url, "llama-2-13b-chat", tmp_path / "models" / "llama2", False)

    assert is_meta_checkpoint(folder)
    top = ["LICENSE", "USE_POLICY.md", "tokenizer.model", "tokenizer_checklist.chk"]
    model_files = ["checklist.chk", "consolidated.00.pth", "consolidated.01.pth", "params.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(top + model_files)
    assert (folder / "tokenizer.model").read_bytes() == tokenizer
    assert all((folder / n).read_bytes() == b for n, b in model.items())
    assert [c.status for c in verify(folder)] == ["OK"] * 3
    assert "HTTP Request: GET" in caplog.text and "<redacted>" in caplog.text
    assert_secret_free(caplog.text)
    # a second run finds everything there and asks the server for nothing
    asked = len(server.requests)
    assert download_meta(url, "LLAMA-2-13B-CHAT", folder, False) == folder
    assert len(server.requests) == asked


def test_an_interrupted_download_resumes_where_it_stopped(
    site: tuple[Site, str], tmp_path: Path
) -> None:
    server, url = site
    shard = bytes(range(256)) * 4096  # 1 MiB
    model = publish_llama3(server, shard)
    path = "8b_instruction_tuned/consolidated.00.pth"
    server.cuts[path] = ATTEMPTS + 1  # more than one run retries

    with pytest.raises(ModelError, match="run the same command again to resume") as failed:
        download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)
    assert_secret_free(str(failed.value))
    part = tmp_path / "consolidated.00.pth.part"
    assert 0 < part.stat().st_size < len(shard)
    assert part.read_bytes() == shard[: part.stat().st_size]
    assert not (tmp_path / "consolidated.00.pth").exists()
    held = part.stat().st_size

    download_meta(url, "meta-llama-3-8b-instruct", tmp_path, False)

    ranges = [r for p, r in server.requests if p == path]
    assert ranges[0] is None and len(ranges) == ATTEMPTS + 2
    assert f"bytes={held}-" in ranges  # the second run went on from what the first one kept
    assert (tmp_path / "consolidated.00.pth").read_bytes() == shard
    assert not part.exists()
    assert all((tmp_path / n).read_bytes() == b for n, b in model.items())


def test_a_server_that_ignores_range_restarts_the_file(
    site: tuple[Site, str], tmp_path: Path
) -> None:
    server, url = site
    shard = b"weights" * 1000
    publish_llama3(server, shard)
    server.ignore_range = True
    (tmp_path / "consolidated.00.pth.part").write_bytes(b"stale bytes of another file")

    download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)

    assert ("8b_instruction_tuned/consolidated.00.pth", "bytes=27-") in server.requests
    assert (tmp_path / "consolidated.00.pth").read_bytes() == shard


def test_a_corrupted_shard_is_deleted_and_fetched_again_next_time(
    site: tuple[Site, str], tmp_path: Path
) -> None:
    server, url = site
    shard = b"\x01\x02" * 5000
    publish_llama3(server, shard)
    server.corrupt.add("8b_instruction_tuned/consolidated.00.pth")

    with pytest.raises(ModelError, match=r"^consolidated.00.pth failed checklist.chk \(md5 "):
        download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)
    assert not (tmp_path / "consolidated.00.pth").exists()
    assert (tmp_path / "params.json").is_file()

    server.corrupt.clear()
    server.requests.clear()
    download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)
    assert [p for p, _ in server.requests] == ["8b_instruction_tuned/consolidated.00.pth"]
    assert (tmp_path / "consolidated.00.pth").read_bytes() == shard


def test_unknown_shard_count_is_asked_of_the_server(site: tuple[Site, str], tmp_path: Path) -> None:
    server, url = site
    shards = {f"consolidated.{n:02d}.pth": bytes([n]) * 100 for n in range(3)}
    model = shards | {"params.json": b"{}", "tokenizer.model": b"tk"}
    server.files |= {"LICENSE": b"l", "USE_POLICY.md": b"p"}
    server.files |= {f"CodeLlama-70b-Instruct/{n}": b for n, b in model.items()}
    server.files["CodeLlama-70b-Instruct/checklist.chk"] = _checklist(model)

    folder = download_meta(url, "CodeLlama-70b-Instruct", tmp_path, False)

    assert sorted(p.name for p in folder.glob("consolidated.*")) == sorted(shards)
    asked = [p for p, _ in server.requests if "consolidated" in p]
    assert asked[-1] == "CodeLlama-70b-Instruct/consolidated.03.pth"  # answered 403: the end


def test_an_expired_link_says_to_request_a_new_one(site: tuple[Site, str], tmp_path: Path) -> None:
    server, url = site
    publish_llama3(server, b"x")
    server.expired = True
    with pytest.raises(ModelError) as refused:
        download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)
    message = str(refused.value)
    assert message.startswith("Meta's download link was refused (403): links expire after 24")
    assert "https://llama.meta.com/llama-downloads" in message and "\n" not in message
    assert_secret_free(message)


def test_a_wrong_signature_is_refused_too(site: tuple[Site, str], tmp_path: Path) -> None:
    server, url = site
    publish_llama3(server, b"x")
    with pytest.raises(ModelError, match=r"refused \(403\)"):
        download_meta(url.replace("Signature=", "Signature=0"), "Meta-Llama-3-8B", tmp_path, False)


def test_no_network_is_one_line(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/*?{QUERY}"
    with pytest.raises(ModelError, match=r"^cannot reach 127.0.0.1: no network\?") as failed:
        download_meta(url, "llama-2-7b", tmp_path / "m", False)
    assert_secret_free(str(failed.value))
    assert "\n" not in str(failed.value)


def test_not_enough_disk_space_is_found_before_downloading(
    site: tuple[Site, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    server, url = site
    publish_llama3(server, b"w" * 50_000)
    real = shutil.disk_usage
    monkeypatch.setattr(
        shutil, "disk_usage", lambda p: real(p)._replace(free=10_000)
    )  # room for the small files, not for the shard
    with pytest.raises(ModelError, match=r"^not enough disk space for consolidated.00.pth"):
        download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)
    assert not (tmp_path / "consolidated.00.pth.part").exists()


def test_unknown_model_and_bad_link(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"unknown Meta model 'llama-9'; known: llama-2-7b, "):
        download_meta(f"https://x.example/*?{QUERY}", "llama-9", tmp_path, False)
    with pytest.raises(ModelError, match=r"^not a Meta download link") as bad:
        download_meta(f"https://x.example/file?{QUERY}", "llama-2-7b", tmp_path, False)
    assert_secret_free(str(bad.value))


def test_a_whole_part_file_left_by_a_crash_is_kept(site: tuple[Site, str], tmp_path: Path) -> None:
    """A run that died between the last byte and the rename: the server answers 416 to the Range
    past the end, and the part becomes the file."""
    server, url = site
    shard = b"complete" * 100
    publish_llama3(server, shard)
    (tmp_path / "consolidated.00.pth.part").write_bytes(shard)

    download_meta(url, "Meta-Llama-3-8B-Instruct", tmp_path, False)

    asked = [r for p, r in server.requests if p.endswith("consolidated.00.pth")]
    assert asked == [f"bytes={len(shard)}-"]
    assert (tmp_path / "consolidated.00.pth").read_bytes() == shard


def test_models_pull_meta_url_registers_the_folder(site: tuple[Site, str], tmp_path: Path) -> None:
    from conftest import run_cli

    from privatellm.registry import Registry

    server, url = site
    publish_llama3(server, b"\x80\x02weights" * 100)
    data = tmp_path / "data"
    pull = ["--data-dir", data, "models", "pull", "--meta-url", url, "--model"]
    pulled = run_cli(*pull, "Meta-Llama-3-8B-Instruct")
    assert pulled.returncode == 0, pulled.stderr
    assert "registered Meta-Llama-3-8B-Instruct: chat model (meta" in pulled.stdout
    assert_secret_free(pulled.stdout + pulled.stderr)
    model = Registry(data).get("Meta-Llama-3-8B-Instruct")
    assert model.kind == "meta" and model.owned and is_meta_checkpoint(Path(model.path))
    server.files.clear()  # an expired link: one line, no traceback, nothing registered
    again = run_cli(*pull, "llama-2-7b", "--name", "x")
    assert again.returncode != 0 and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and Registry(data).find("x") is None

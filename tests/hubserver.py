"""A fake Hugging Face Hub on 127.0.0.1: the routes huggingface_hub 2.4 uses to pull a model.

GET  /api/models/REPO[/revision/REV]   model info: sha (the commit), siblings (with ?blobs=true:
                                       size, blobId, lfs.sha256), cardData (README's front
                                       matter), config (config.json's architectures), gated
HEAD /REPO/resolve/REV/PATH            the headers hf_hub_download reads: X-Repo-Commit, ETag,
GET  /REPO/resolve/REV/PATH            X-Linked-Etag and X-Linked-Size (LFS files),
                                       Content-Length; GET answers a Range with 206
GET  /cdn/SHA256                       an LFS file's bytes, when redirect_lfs sends them here

No X-Xet-* header is ever sent, so huggingface_hub takes no Xet path. Errors carry the
X-Error-Code headers huggingface_hub maps to its exceptions: RepoNotFound (401 without a token,
404 with one, as the hub does), RevisionNotFound, EntryNotFound, GatedRepo (401, or 403 for a
token without access). Every request is logged in `requests`.

    with FakeHub({"me/tiny-GGUF": {"tiny-Q4_K_M.gguf": data}}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

# What the hub keeps in LFS (its default .gitattributes): weights. The rest is plain git.
LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx", ".h5", ".msgpack")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<revision>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")


def git_blob_id(data: bytes) -> str:
    """Returns git's hash of a file: sha1 of "blob SIZE\\0" and the content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """Returns the pointer file git keeps in place of an LFS file."""
    sha256 = hashlib.sha256(data).hexdigest()
    lines = (
        "version https://git-lfs.github.com/spec/v1",
        f"oid sha256:{sha256}",
        f"size {len(data)}",
    )
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names

    @property
    def range(self) -> str | None:
        return self.headers.get("range")


class FakeHub:
    """A hub serving repos ({repo_id: {path: bytes}}), one commit each, until stopped.

    gated: repos whose files need `Authorization: Bearer <token>` (their info stays public).
    corrupt: (repo_id, path) served with the last byte flipped, while the info advertises the
        true hashes and size.
    interrupt_after: (repo_id, path) -> n: the first GET of that file from its start sends n
        bytes, then interrupts this process's main thread as Ctrl-C would (SIGINT) and breaks off.
    redirect_lfs: LFS files answer 302 to /cdn/SHA256, as the hub sends them to its CDN.
    api_config: give config.json's architectures in the model info (the hub does).
    """

    def __init__(
        self,
        repos: dict[str, dict[str, bytes]],
        *,
        gated: Iterable[str] = (),
        token: str = "hf_test_token",
        corrupt: Iterable[tuple[str, str]] = (),
        interrupt_after: dict[tuple[str, str], int] | None = None,
        redirect_lfs: bool = False,
        api_config: bool = True,
    ) -> None:
        self.repos = repos
        self.gated = set(gated)
        self.token = token
        self.corrupt = set(corrupt)
        self.interrupt_after = dict(interrupt_after or {})
        self.redirect_lfs = redirect_lfs
        self.api_config = api_config
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.hub = self  # type: ignore[attr-defined]
        # a short poll: stop() waits for serve_forever to notice, 0.5 s by default
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._main = threading.main_thread().ident

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops serving and closes the socket; returns once the serving thread has ended."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()

    def commit(self, repo_id: str) -> str:
        """Returns the repo's one commit: a hash of its files."""
        digest = hashlib.sha1(repo_id.encode())
        for path, data in sorted(self.repos[repo_id].items()):
            digest.update(path.encode() + b"\0" + hashlib.sha256(data).digest())
        return digest.hexdigest()

    def requests_for(self, path: str) -> list[Request]:
        """Returns the logged requests whose path ends with path."""
        return [r for r in self.requests if r.path.endswith(path)]

    # -- what the routes answer

    def info(self, repo_id: str, blobs: bool) -> dict[str, Any]:
        """Returns the model info the hub's API gives for repo_id."""
        files = self.repos[repo_id]
        siblings = [self._sibling(path, data, blobs) for path, data in sorted(files.items())]
        info: dict[str, Any] = {
            "_id": self.commit(repo_id)[:24],
            "id": repo_id,
            "modelId": repo_id,
            "sha": self.commit(repo_id),
            "private": False,
            "gated": "manual" if repo_id in self.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
        card = _front_matter(files.get("README.md", b""))
        if card:
            info["cardData"] = card
        if self.api_config and "config.json" in files:
            config = json.loads(files["config.json"])
            info["config"] = {k: config[k] for k in ("architectures", "model_type") if k in config}
        return info

    def _sibling(self, path: str, data: bytes, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": path}
        if not path.endswith(LFS_SUFFIXES):
            return {"rfilename": path, "blobId": git_blob_id(data), "size": len(data)}
        pointer = lfs_pointer(data)
        return {
            "rfilename": path,
            "blobId": git_blob_id(pointer),
            "size": len(data),
            "lfs": {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": len(pointer),
            },
        }

    def served(self, repo_id: str, path: str) -> bytes:
        """Returns the bytes the hub sends for a file (corrupted where asked)."""
        data = self.repos[repo_id][path]
        if (repo_id, path) in self.corrupt and data:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data

    def blob(self, sha256: str) -> tuple[str, str, bytes] | None:
        """Returns (repo, path, bytes served) of the LFS file whose content hashes to sha256."""
        for repo_id, files in self.repos.items():
            for path, data in files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return repo_id, path, self.served(repo_id, path)
        return None

    def interrupting(self, repo_id: str, path: str) -> int | None:
        """Returns after how many bytes this GET is to be broken off (once per file), or None."""
        return self.interrupt_after.pop((repo_id, path), None)

    def interrupt(self) -> None:
        """Interrupts the main thread (where the pull runs) as Ctrl-C would."""
        assert self._main is not None
        signal.pthread_kill(self._main, signal.SIGINT)


def _front_matter(readme: bytes) -> dict[str, Any]:
    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return {}
    loaded = yaml.safe_load(text[3:].split("\n---", 1)[0])
    return loaded if isinstance(loaded, dict) else {}


class _Handler(BaseHTTPRequestHandler):
    server_version = "FakeHub/1.0"

    @property
    def hub(self) -> FakeHub:
        return self.server.hub  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def do_GET(self) -> None:
        self._answer(head=False)

    def _answer(self, head: bool) -> None:
        split = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        query = parse_qs(split.query)
        self.hub.requests.append(Request(self.command, unquote(split.path), query, headers))
        # matched before unquoting: a revision may hold a quoted '/' (refs%2Fpr%2F1)
        if match := _API.match(split.path):
            repo, revision = unquote(match["repo"]), match["revision"]
            self._api(repo, unquote(revision) if revision else None, "blobs" in query)
        elif match := _RESOLVE.match(split.path):
            repo, revision, path = (unquote(match[k]) for k in ("repo", "revision", "path"))
            self._resolve(repo, revision, path, head)
        elif match := _CDN.match(split.path):
            found = self.hub.blob(match["sha256"])
            if found is None:
                self._error(404, "EntryNotFound", "Entry not found")
            else:
                self._file(*found, extra={}, head=head)
        else:
            self._error(404, None, "Not found")

    def _api(self, repo_id: str, revision: str | None, blobs: bool) -> None:
        if not self._repo_visible(repo_id) or not self._revision_known(repo_id, revision):
            return
        self._json(200, self.hub.info(repo_id, blobs))

    def _resolve(self, repo_id: str, revision: str, path: str, head: bool) -> None:
        if not self._repo_visible(repo_id) or not self._revision_known(repo_id, revision):
            return
        if repo_id in self.hub.gated and not self._authorized(repo_id):
            return
        files = self.hub.repos[repo_id]
        if path not in files:
            self._error(404, "EntryNotFound", "Entry not found", repo_id)
            return
        data = files[path]
        extra = {"X-Repo-Commit": self.hub.commit(repo_id)}
        if path.endswith(LFS_SUFFIXES):
            sha256 = hashlib.sha256(data).hexdigest()
            extra |= {"X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))}
            if self.hub.redirect_lfs:
                self._redirect(f"/cdn/{sha256}", extra | {"ETag": f'"{git_blob_id(data)}"'})
                return
            extra["ETag"] = f'"{sha256}"'
        else:
            extra["ETag"] = f'"{git_blob_id(data)}"'
        self._file(repo_id, path, self.hub.served(repo_id, path), extra, head)

    def _file(
        self, repo_id: str, path: str, data: bytes, extra: dict[str, str], head: bool
    ) -> None:
        start = _range_start(self.headers.get("Range"))
        if start is not None and start >= len(data) > 0:
            self._error(416, None, "Range not satisfiable")
            return
        body = data[start or 0 :]
        self.send_response(206 if start is not None else 200)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        if start is not None:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if head:
            return
        cut = self.hub.interrupting(repo_id, path) if start is None else None
        if cut is None:
            self.wfile.write(body)
            return
        self.wfile.write(body[:cut])
        self.wfile.flush()
        time.sleep(0.3)  # the client writes what it got before the "Ctrl-C"
        self.hub.interrupt()
        time.sleep(0.2)
        self.close_connection = True

    def _repo_visible(self, repo_id: str) -> bool:
        if repo_id in self.hub.repos:
            return True
        # the hub does not tell a missing repo from a private one: 401 to strangers, 404 to users
        status = 404 if self.headers.get("Authorization") else 401
        self._error(status, "RepoNotFound", "Repository not found", None)
        return False

    def _revision_known(self, repo_id: str, revision: str | None) -> bool:
        if revision is None or revision in ("main", self.hub.commit(repo_id)):
            return True
        self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", repo_id)
        return False

    def _authorized(self, repo_id: str) -> bool:
        given = self.headers.get("Authorization")
        if given == f"Bearer {self.hub.token}":
            return True
        status = 403 if given else 401
        message = f"Access to model {repo_id} is restricted and you are not in the authorized list."
        self._error(status, "GatedRepo", message, repo_id)
        return False

    def _error(
        self, status: int, code: str | None, message: str, repo_id: str | None = None
    ) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if repo_id is not None and repo_id in self.hub.repos:
            headers["X-Repo-Commit"] = self.hub.commit(repo_id)
        self._json(status, {"error": message}, headers)

    def _redirect(self, location: str, headers: dict[str, str]) -> None:
        self.send_response(302)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _json(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _range_start(header: str | None) -> int | None:
    """Returns where a `Range: bytes=N-` asks the file to start, None without one."""
    match = re.fullmatch(r"bytes=(\d+)-", header or "")
    return int(match[1]) if match else None

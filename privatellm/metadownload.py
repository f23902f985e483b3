"""Meta's own download flow for Llama weights, as its `download.sh` scripts run it, in Python.

Meta's e-mail holds one presigned CloudFront URL with a `*` in its path: each file's path takes
the `*`'s place (the query string, the signature, stays the same). Per model the scripts fetch
LICENSE and the use policy, the tokenizer (Llama 2: once for all models, with
tokenizer_checklist.chk; Llama 3 and Code Llama: in each model's folder), `consolidated.NN.pth`
per model-parallel shard, `params.json` and `checklist.chk`, then run `md5sum -c`.

Unlike the scripts, everything lands in one folder: the torch engine (and the conversion) need
tokenizer.model beside params.json, and `models rm` deletes one folder. Each file is written to
NAME.part and renamed when complete, so a re-run skips finished files and resumes a partial one
with an HTTP Range request. The query string is a credential (anyone holding it can download
until it expires): no message, progress bar or log line shows it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from privatellm.errors import ModelError
from privatellm.models import parse_sums, verify

if TYPE_CHECKING:
    from tqdm import tqdm

REQUEST_PAGE = "https://llama.meta.com/llama-downloads"
ATTEMPTS = 4  # per file: wget's --tries is 20, but each attempt here resumes where one stopped
TIMEOUT = httpx.Timeout(30.0, read=120.0)


@dataclass(frozen=True)
class MetaModel:
    name: str  # the folder download.sh writes, and what --model takes
    remote: str  # the model's folder under the presigned URL
    shards: int | None  # consolidated.NN.pth files; None: ask the server until it has no more
    policy: str  # the use policy's file name (Llama 3 dropped the .md)
    shared_tokenizer: bool  # Llama 2: tokenizer.model at the top, not in the model's folder


def _table() -> dict[str, MetaModel]:
    models = []
    for size, shards in (("7b", 1), ("13b", 2), ("70b", 8)):
        for variant in ("", "-chat"):
            name = f"llama-2-{size}{variant}"
            models.append(MetaModel(name, name, shards, "USE_POLICY.md", True))
    for size, shards in (("8B", 1), ("70B", 8)):
        for variant, remote in (("", "pre_trained"), ("-Instruct", "instruction_tuned")):
            remote_path = f"{size.lower()}_{remote}"
            models.append(
                MetaModel(f"Meta-Llama-3-{size}{variant}", remote_path, shards, "USE_POLICY", False)
            )
    for size, shards in (("7b", 1), ("13b", 2), ("34b", 4), ("70b", 8)):
        for variant in ("", "-Python", "-Instruct"):
            name = f"CodeLlama-{size}{variant}"
            # codellama's download.sh asks for 71 shards of 70b-Instruct (a typo for 7): ask the
            # server instead of trusting either number
            count = None if name == "CodeLlama-70b-Instruct" else shards
            models.append(MetaModel(name, name, count, "USE_POLICY.md", False))
    return {m.name.lower(): m for m in models}


MODELS = _table()


def meta_model(name: str) -> MetaModel:
    """Returns the known model called name (any case); raises ModelError listing the known ones."""
    found = MODELS.get(name.lower())
    if found is None:
        known = ", ".join(m.name for m in MODELS.values())
        raise ModelError(f"unknown Meta model {name!r}; known: {known}")
    return found


def download_meta(url: str, model: str, dest: Path, progress: bool = True) -> Path:
    """Downloads one model by Meta's presigned URL into dest (created) and returns the folder
    that engine.kind torch loads (params.json, consolidated.*.pth, tokenizer.model together);
    every file is resumed from where an earlier run stopped (HTTP Range), and the folder is
    verified against checklist.chk with privatellm.models.verify before returning."""
    chosen = meta_model(model)
    link = PresignedURL(url)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create {dest}: {e.strerror}") from e
    tokenizer_at = "" if chosen.shared_tokenizer else f"{chosen.remote}/"
    files = ["LICENSE", chosen.policy, f"{tokenizer_at}tokenizer.model"]
    if chosen.shared_tokenizer:
        files.append("tokenizer_checklist.chk")
    files += [f"{chosen.remote}/params.json", f"{chosen.remote}/checklist.chk"]
    with _client() as client, _redacted_logs(link):
        fetcher = _Fetcher(client, link, dest, progress)
        for remote in files:
            fetcher.fetch(remote)
        _fetch_shards(fetcher, chosen)
    if chosen.shared_tokenizer:
        _check_tokenizer(dest)
    _check(dest, progress)
    return dest


def _fetch_shards(fetcher: _Fetcher, model: MetaModel) -> None:
    if model.shards is not None:
        for n in range(model.shards):
            fetcher.fetch(f"{model.remote}/consolidated.{n:02d}.pth")
        return
    n = 0  # CloudFront answers 403 (or 404) for a key that does not exist: the shards end there
    while fetcher.fetch(f"{model.remote}/consolidated.{n:02d}.pth", optional=n > 0):
        n += 1


def _check(folder: Path, progress: bool) -> None:
    """Raises ModelError naming the first file checklist.chk rejects (deleted, to be fetched
    again by a re-run)."""
    for check in verify(folder, progress=progress):
        if check.status == "MISMATCH":
            (folder / check.name).unlink(missing_ok=True)
            raise ModelError(
                f"{check.name} failed checklist.chk ({check.detail}); it was deleted: "
                "run the same command again to download it anew"
            )
        if check.status != "OK":
            raise ModelError(f"{check.name}: {check.status} in checklist.chk {check.detail}")


def _check_tokenizer(folder: Path) -> None:
    """Raises ModelError (and deletes the file) if tokenizer.model fails
    tokenizer_checklist.chk, which Llama 2 ships beside the one tokenizer of all its models."""
    source = folder / "tokenizer_checklist.chk"
    for digest, name in parse_sums(source.read_text(encoding="utf-8"), source.name):
        path = folder / Path(name).name
        with path.open("rb") as f:
            actual = hashlib.file_digest(f, "md5").hexdigest()
        if actual != digest:
            path.unlink()
            raise ModelError(
                f"{path.name} failed {source.name} (md5 {actual}, expected {digest}); it was "
                "deleted: run the same command again to download it anew"
            )


class PresignedURL:
    """Meta's link: FILE's address is the link with FILE in place of its `*`."""

    def __init__(self, url: str) -> None:
        url = url.strip().strip("'\"")
        base, _, self.query = url.partition("?")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname or "*" not in parts.path:
            raise ModelError(
                "not a Meta download link: copy the whole URL from Meta's e-mail (it starts "
                "with https:// and has a '*' where each file's path goes)"
            )
        self.base = base
        self.host = parts.hostname
        # the values too, in case a message quotes them decoded or one by one
        self._secrets = [self.query] + [v for _, v in parse_qsl(self.query) if len(v) >= 8]

    def file(self, path: str) -> str:
        """Returns the address of path (e.g. 'llama-2-7b/params.json')."""
        address = self.base.replace("*", path, 1)
        return f"{address}?{self.query}" if self.query else address

    def redact(self, text: str) -> str:
        """Returns text with the link's query string (its credential) and its values removed."""
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "<redacted>")
        return text


class _Fetcher:
    """Downloads files named by their path under a presigned URL into one folder."""

    def __init__(self, client: httpx.Client, link: PresignedURL, dest: Path, progress: bool):
        self.client, self.link, self.dest, self.progress = client, link, dest, progress

    def fetch(self, remote: str, optional: bool = False) -> bool:
        """Returns True once dest holds remote's file whole (at once if an earlier run finished
        it); False only when optional and the server has no such file."""
        target = self.dest / Path(remote).name
        if target.is_file():
            return True
        part = target.with_name(target.name + ".part")
        for attempt in range(1, ATTEMPTS + 1):
            before = part.stat().st_size if part.exists() else 0
            try:
                done = self._attempt(remote, part, optional)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.UnsupportedProtocol) as e:
                reason = self.link.redact(str(e))
                raise ModelError(f"cannot reach {self.link.host}: no network? ({reason})") from None
            except httpx.TransportError as e:  # the connection broke off, or went silent
                error: Exception = e
            else:
                if done is None:
                    return False
                if done:
                    os.replace(part, target)
                    return True
                error = ModelError("the answer stopped short of the file's end")
            now = part.stat().st_size if part.exists() else 0
            if attempt < ATTEMPTS and now == before:
                time.sleep(attempt)  # no progress: give the network a moment
        reason = self.link.redact(f"{type(error).__name__}: {error}")
        raise ModelError(
            f"the download of {remote} broke off {ATTEMPTS} times ({reason}); run the same "
            "command again to resume it"
        )

    def _attempt(self, remote: str, part: Path, optional: bool) -> bool | None:
        """Returns True when part now holds the whole file, False when the transfer stopped
        short, None when optional and the server has no such file."""
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self.client.stream("GET", self.link.file(remote), headers=headers) as response:
            if response.status_code == 416:  # Range past the end: the part is complete already
                return _range_total(response) == offset or _restart(part)
            if optional and response.status_code in (403, 404):
                return None
            self._refuse(remote, response)
            if response.status_code == 200:  # the server ignored Range: start over
                offset = 0
            elif _range_start(response) != offset:
                return _restart(part)
            total = _announced(response)
            _check_space(self.dest, remote, total - offset if total else 0)
            with part.open("r+b" if offset else "wb") as f, self._bar(remote, total, offset) as bar:
                f.seek(offset)
                f.truncate()
                # as they arrive: a chunk size would hold back what a broken-off answer did send
                for block in response.iter_bytes():
                    f.write(block)
                    bar.update(len(block))
        return total is None or part.stat().st_size == total

    def _refuse(self, remote: str, response: httpx.Response) -> None:
        """Raises ModelError for an answer that is not the file (or its rest)."""
        status = response.status_code
        if status in (200, 206):
            return
        if status == 403:
            raise ModelError(
                "Meta's download link was refused (403): links expire after 24 hours and allow "
                f"5 downloads; request a new one at {REQUEST_PAGE} (refused: {remote})"
            )
        if status == 404:
            raise ModelError(
                f"{self.link.host} has no {remote} (404): is this link for that model?"
            )
        raise ModelError(f"{self.link.host} answered {status} for {remote}")

    @contextmanager
    def _bar(self, remote: str, total: int | None, offset: int) -> Iterator[tqdm[Any]]:
        from tqdm import tqdm

        with tqdm(
            total=total,
            initial=offset,
            desc=Path(remote).name,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=sys.stderr,
            disable=None if self.progress else True,
        ) as bar:
            yield bar


def _announced(response: httpx.Response) -> int | None:
    """Returns the whole file's size the answer announces (Content-Range or Content-Length)."""
    if response.status_code == 206:
        return _range_total(response)
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


def _range_total(response: httpx.Response) -> int | None:
    """Returns SIZE of a 'Content-Range: bytes A-B/SIZE' (or 'bytes */SIZE') header."""
    size = response.headers.get("content-range", "").rpartition("/")[2]
    return int(size) if size.isdigit() else None


def _range_start(response: httpx.Response) -> int | None:
    """Returns A of a 'Content-Range: bytes A-B/SIZE' header."""
    start = response.headers.get("content-range", "").removeprefix("bytes ").partition("-")[0]
    return int(start) if start.isdigit() else None


def _restart(part: Path) -> bool:
    """Deletes a part file the server's answer does not fit; returns False (try again)."""
    part.unlink(missing_ok=True)
    return False


def _check_space(folder: Path, remote: str, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise ModelError(
            f"not enough disk space for {Path(remote).name}: it needs {needed / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB are free in {folder}"
        )


def _client() -> httpx.Client:
    # trust_env: the proxy settings a user's wget would use (HTTPS_PROXY, NO_PROXY) apply too
    # identity: Range offsets count the bytes as stored, which a compressed answer would not be
    headers = {"Accept-Encoding": "identity"}
    return httpx.Client(timeout=TIMEOUT, follow_redirects=True, trust_env=True, headers=headers)


@contextmanager
def _redacted_logs(link: PresignedURL) -> Iterator[None]:
    """Removes the link's credential from httpx's request log lines (INFO, 'HTTP Request: GET
    URL'), which a server's log configuration would otherwise write out."""

    class Redact(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = link.redact(record.getMessage()), None
            return True

    logger = logging.getLogger("httpx")
    redact = Redact()
    logger.addFilter(redact)
    try:
        yield
    finally:
        logger.removeFilter(redact)

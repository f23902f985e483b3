"""Models from the Hugging Face Hub: what to take from a repository (`plan`), and taking it
(`fetch`), every file checked against the hash the hub publishes for it.

privatellm keeps huggingface_hub offline (privatellm/__init__.py sets HF_HUB_OFFLINE=1); a pull is
the one online action, asked for explicitly, so its requests run inside `online()`, which lifts
offline mode for their duration only. HF_ENDPOINT (a mirror) and HF_TOKEN are read at each call:
huggingface_hub reads HF_ENDPOINT once, at import.

Files are fetched with huggingface_hub's own `http_get` (its retries, Range resumption, progress
bar) into DEST/PATH.<hash>.incomplete, and renamed into place once their hash checks out.
`hf_hub_download` is not used for them: in 2.4 it writes to a temporary file unique to the process
and deletes it when interrupted, so a 5 GB pull stopped by Ctrl-C would start over; here the
partial file stays, and the next pull asks for the rest with a Range header.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from privatellm.errors import ConfigError, ModelError
from privatellm.registry import Kind, Role, role_of_config

if TYPE_CHECKING:
    from huggingface_hub.hf_api import ModelInfo

DEFAULT_ENDPOINT = "https://huggingface.co"
BLOCK = 1024 * 1024
# llama.cpp's split models: NAME-00001-of-00003.gguf; llama.cpp loads the rest from the first.
_SPLIT = re.compile(r"^(?P<base>.+)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$", re.IGNORECASE)
_QUANTIZATION = re.compile(r"[-_.]((?:I|T)?Q\d(?:_[A-Z0-9]+)*|BF16|F16|F32)$", re.IGNORECASE)
# What a folder pull takes besides README.md (the card, for its languages) and the licence:
# configs, tokenizers, chat templates and safetensors weights. Exports of the same weights for
# other runtimes are left.
_FOLDER_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".safetensors")
_LEGAL = ("LICENSE", "LICENCE", "NOTICE", "USE_POLICY")
_OTHER_RUNTIMES = {"onnx", "openvino", "coreml", "tflite"}


@dataclass(frozen=True)
class RemoteFile:
    path: str  # in the repository, '/'-separated
    size: int
    sha256: str | None  # LFS files: the hub's sha256 of the content
    blob_id: str | None  # git's blob sha1; the content's own only for files not in LFS


@dataclass(frozen=True)
class Plan:
    repo_id: str
    commit: str  # the revision resolved: every file comes from this one commit
    files: tuple[RemoteFile, ...]  # GGUF: the model's parts, first part first
    role: Role
    kind: Kind
    default_name: str  # GGUF: the file's stem (without -00001-of-00003); a folder: the repo name
    languages: tuple[str, ...]  # the model card's `language:`; () if it declares none

    @property
    def size(self) -> int:
        """Returns the bytes the pull downloads (all files, whatever is there already)."""
        return sum(f.size for f in self.files)


def endpoint() -> str:
    """Returns the hub's address: HF_ENDPOINT (a mirror, e.g. https://hf-mirror.com) or the hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@contextmanager
def online() -> Iterator[None]:
    """Lifts huggingface_hub's offline mode for the calls made inside, and restores it after.

    huggingface_hub checks `constants.HF_HUB_OFFLINE` before each request; the variable is the
    process's, so a thread doing other hub calls meanwhile would be online too (none does: the
    rest of privatellm loads models from local files only).
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


# -- what to take ---------------------------------------------------------------------------------


def plan(repo_id: str, pattern: str | None = None, revision: str | None = None) -> Plan:
    """Returns what pulling repo_id takes at revision (default: main): the GGUF model the pattern
    (or the repository) holds, or else the model folder; raises ModelError or ConfigError."""
    with online(), _hub_errors(repo_id, revision):
        info, commit = _model_info(repo_id, revision)
        files = [
            RemoteFile(s.rfilename, s.size or 0, s.lfs.sha256 if s.lfs else None, s.blob_id)
            for s in info.siblings or []
        ]
        chosen = _choose(repo_id, files, pattern)
        role, kind = _kind(info, chosen)
    if kind == "gguf":
        first = PurePosixPath(chosen[0].path).name
        name = _split_base(first) or first.removesuffix(".gguf")
    else:
        name = info.id.rsplit("/", 1)[-1]
    return Plan(
        repo_id=info.id,
        commit=commit,
        files=tuple(chosen),
        role=role,
        kind=kind,
        default_name=_model_name(name),
        languages=_card_languages(info),
    )


def _model_info(repo_id: str, revision: str | None) -> tuple[ModelInfo, str]:
    """Returns the hub's model info, each file's size and hashes in it, and the commit."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    try:
        info = HfApi(endpoint=endpoint()).model_info(
            repo_id, revision=revision, files_metadata=True
        )
    except HFValidationError as e:
        raise ConfigError(f"{repo_id!r} is not a repository id: give owner/name") from e
    except HfHubHTTPError:
        raise  # _hub_errors words it
    except (ValueError, KeyError, TypeError) as e:  # not JSON, or JSON of something else
        raise ModelError(f"{endpoint()} does not answer as a Hugging Face hub: {e}") from e
    if info.sha is None or info.siblings is None:
        raise ModelError(
            f"{endpoint()} does not answer as a Hugging Face hub (no commit or file list for "
            f"{repo_id}): check HF_ENDPOINT"
        )
    if info.gated and not get_token():
        raise ModelError(_gated(repo_id))
    return info, info.sha


def _choose(repo_id: str, files: list[RemoteFile], pattern: str | None) -> list[RemoteFile]:
    """Returns the files to pull: one GGUF model (all its parts), or a model folder's files."""
    matched = files if pattern is None else [f for f in files if _matches(f.path, pattern)]
    if not matched:
        raise ConfigError(f"no file in {repo_id} matches {pattern!r}; it has {_some(files)}")
    models = _gguf_models(matched)
    if len(models) > 1:
        raise ConfigError(_several(repo_id, sorted(models), pattern))
    if models:
        (base,) = models
        return _gguf_models(files)[base]  # every part, also those the pattern did not name
    chosen = matched if pattern is not None else _folder_files(files)
    if not any(f.path.endswith((".safetensors", ".bin")) for f in chosen):
        raise ModelError(
            f"{repo_id}: no GGUF file and no safetensors or PyTorch weights among {_some(chosen)}"
        )
    return chosen


def _matches(path: str, pattern: str) -> bool:
    """Returns whether pattern (a shell pattern, any case) matches the path or the file name."""
    path, pattern = path.lower(), pattern.lower()
    return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(
        path.rsplit("/", 1)[-1], pattern
    )


def _gguf_models(files: list[RemoteFile]) -> dict[str, list[RemoteFile]]:
    """Returns the GGUF models among files: base path -> its parts in order (one if unsplit)."""
    models: dict[str, list[RemoteFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        if f.path.lower().endswith(".gguf"):
            models.setdefault(_split_base(f.path) or f.path, []).append(f)
    return models


def _split_base(path: str) -> str | None:
    """Returns the path of a split GGUF's part without -NNNNN-of-NNNNN.gguf, None if unsplit."""
    match = _SPLIT.match(path)
    return match["base"] if match else None


def _several(repo_id: str, models: list[str], pattern: str | None) -> str:
    """Returns the message for a choice between GGUF models: their quantizations, and a --file."""
    stems = [PurePosixPath(m).name.removesuffix(".gguf") for m in models]
    labels = [(q[1].upper() if (q := _QUANTIZATION.search(s)) else s) for s in stems]
    if len(set(labels)) < len(labels):  # two models in one quantization: name the files
        labels = stems
    shown = ", ".join(labels[:12]) + (f" and {len(labels) - 12} more" if len(labels) > 12 else "")
    suggestion = "Q4_K_M" if "Q4_K_M" in labels else labels[0]
    if pattern is None:
        return (
            f"{repo_id} holds {len(models)} GGUF models ({shown}): "
            f"pick one with --file '*{suggestion}*'"
        )
    return (
        f"--file {pattern!r} matches {len(models)} GGUF models in {repo_id} ({shown}): "
        f"give a narrower one, e.g. --file '*{suggestion}*'"
    )


def _some(files: list[RemoteFile], shown: int = 8) -> str:
    """Returns a few of the files' paths, and how many more there are."""
    paths = [f.path for f in files if not f.path.startswith(".")]
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return (", ".join(paths[:shown]) + more) or "no files"


def _folder_files(files: list[RemoteFile]) -> list[RemoteFile]:
    """Returns what a model folder needs: configs, tokenizer, README.md, licence and the
    safetensors weights, or pytorch_model*.bin where a folder has no safetensors
    (sentence-transformers' 2_Dense often has only that); not the ONNX, OpenVINO, TensorFlow or
    Flax exports."""
    usable = [f for f in files if not _OTHER_RUNTIMES & set(PurePosixPath(f.path).parts[:-1])]
    with_safetensors = {_parent(f.path) for f in usable if f.path.endswith(".safetensors")}

    def wanted(path: str) -> bool:
        name = PurePosixPath(path).name
        if name.startswith("pytorch_model") and name.endswith((".bin", ".bin.index.json")):
            return _parent(path) not in with_safetensors
        return path == "README.md" or name.startswith(_LEGAL) or name.endswith(_FOLDER_SUFFIXES)

    return [f for f in usable if wanted(f.path)]


def _parent(path: str) -> str:
    return str(PurePosixPath(path).parent)


def _kind(info: ModelInfo, chosen: list[RemoteFile]) -> tuple[Role, Kind]:
    """Returns what the chosen files make: a GGUF chat model, a sentence-transformers folder, or
    a Hugging Face folder whose config.json says which (as registry.detect says of a folder)."""
    names = {f.path for f in chosen}
    if any(name.lower().endswith(".gguf") for name in names):
        return "chat", "gguf"
    if names & {"modules.json", "sentence_bert_config.json"}:
        return "embedding", "sentence-transformers"
    if "config.json" not in names:
        raise ModelError(f"{info.id} has no config.json: not a model folder privatellm can run")
    config = (
        info.config if isinstance(info.config, dict) and "architectures" in info.config else None
    )
    return role_of_config(config if config is not None else _remote_json(info, "config.json"))


def _remote_json(info: ModelInfo, path: str) -> dict[str, Any]:
    """Returns a JSON file of the repository, read from the hub (for when its API leaves it out)."""
    from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    url = hf_hub_url(info.id, path, revision=info.sha, endpoint=endpoint())
    response = get_session().get(url, headers=build_hf_headers())
    hf_raise_for_status(response)
    try:
        value = response.json()
    except ValueError as e:
        raise ModelError(f"{info.id}: {path} is not JSON ({e})") from e
    return value if isinstance(value, dict) else {}


def _card_languages(info: ModelInfo) -> tuple[str, ...]:
    """Returns the languages the model card declares (`language:` in its front matter)."""
    languages = getattr(info.card_data, "language", None) if info.card_data else None
    if isinstance(languages, str):
        languages = [languages]
    if not isinstance(languages, list):
        return ()
    return tuple(x.lower() for x in languages if isinstance(x, str))


def _model_name(stem: str) -> str:
    """Returns stem as a registry name: runs of other characters become '-', 128 at most."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).lstrip("._-")[:128]
    return name or "model"


# -- taking it ------------------------------------------------------------------------------------


def fetch(plan: Plan, dest: Path, progress: bool = True) -> Path:
    """Returns the pulled GGUF file (kind gguf) or dest (a folder), every file checked.

    The files go below dest (created). One already there and intact is kept; a partial one left
    by an interrupted pull is resumed. Ctrl-C (KeyboardInterrupt) is let through and leaves the
    partial files for the next pull. Free space is checked first against what is still missing.
    """
    _check_space(plan, dest)
    dest.mkdir(parents=True, exist_ok=True)
    with online(), _hub_errors(plan.repo_id, plan.commit):
        for remote in plan.files:
            _fetch_file(plan, remote, dest, progress)
    return dest / plan.files[0].path if plan.kind == "gguf" else dest


def _fetch_file(plan: Plan, remote: RemoteFile, dest: Path, progress: bool) -> None:
    """Puts remote at dest/remote.path, downloaded (or resumed) and checked, unless it is there."""
    target = dest / remote.path
    if target.is_file():
        if target.stat().st_size == remote.size and _mismatch(target, remote) is None:
            return
        target.unlink()  # another version of the file, or a damaged one
    partial = target.with_name(
        f"{target.name}.{(remote.sha256 or remote.blob_id or '')[:12]}.incomplete"
    )
    partial.parent.mkdir(parents=True, exist_ok=True)
    if partial.is_file() and partial.stat().st_size > remote.size:
        partial.unlink()
    _download(plan, remote, partial, progress)
    mismatch = _mismatch(partial, remote)
    if mismatch is not None:
        partial.unlink()
        raise ModelError(
            f"{remote.path} from {plan.repo_id} is corrupt: {mismatch}; deleted it, pull again"
        )
    os.replace(partial, target)
    for stale in _partials(target):
        stale.unlink(missing_ok=True)  # left by a pull of another version of the file


def _partials(target: Path) -> list[Path]:
    """Returns the partial downloads of target there are (one per version of the file)."""
    if not target.parent.is_dir():
        return []
    return list(target.parent.glob(f"{glob.escape(target.name)}.*.incomplete"))


def _download(plan: Plan, remote: RemoteFile, partial: Path, progress: bool) -> None:
    """Appends to partial the bytes of remote it does not have yet (a Range request)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]
    from huggingface_hub.utils.tqdm import silent_tqdm

    url = hf_hub_url(plan.repo_id, remote.path, revision=plan.commit, endpoint=endpoint())
    # identity: a Range counts bytes of the file, not of a gzip stream the server might send
    headers = build_hf_headers(headers={"Accept-Encoding": "identity"})
    try:
        with partial.open("ab") as f:
            http_get(
                url,
                f,
                resume_size=f.tell(),
                headers=headers,
                expected_size=remote.size,
                displayed_filename=remote.path,
                tqdm_class=None if progress else silent_tqdm,  # type: ignore[arg-type]
            )
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ModelError(
                f"disk full while writing {partial}: free some space and pull again"
            ) from e
        raise


def _mismatch(path: Path, remote: RemoteFile) -> str | None:
    """Returns how path differs from the hub's hash of remote ("sha256 X, the hub says Y"), or
    None if it matches (or the hub gives no hash)."""
    if remote.sha256:
        algorithm, expected, header = "sha256", remote.sha256, b""
    elif remote.blob_id:  # git's own hash of a small file: sha1 of "blob SIZE\0" + content
        algorithm, expected = "sha1", remote.blob_id
        header = b"blob %d\0" % path.stat().st_size
    else:
        return None
    hasher = hashlib.new(algorithm, header)
    with path.open("rb") as f:
        while block := f.read(BLOCK):
            hasher.update(block)
    actual = hasher.hexdigest()
    return None if actual == expected.lower() else f"{algorithm} {actual}, the hub says {expected}"


def _check_space(plan: Plan, dest: Path) -> None:
    """Raises ModelError if the disk holding dest has less free space than the pull still needs."""
    needed = sum(remote.size - _have(dest, remote) for remote in plan.files)
    existing = next(p for p in (dest, *dest.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise ModelError(
            f"{plan.repo_id} needs {_size(needed)}, {_size(free)} free on {dest}: "
            "free some space, or set data_dir to a larger disk"
        )


def _have(dest: Path, remote: RemoteFile) -> int:
    """Returns the bytes of remote already below dest (the file, or a partial download)."""
    target = dest / remote.path
    if target.is_file() and target.stat().st_size == remote.size:
        return remote.size
    return min(remote.size, max((p.stat().st_size for p in _partials(target)), default=0))


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.1f} MB"


# -- errors ---------------------------------------------------------------------------------------


@contextmanager
def _hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Turns huggingface_hub's and httpx's failures into one-line ModelErrors naming the fix."""
    import httpx2
    from huggingface_hub import errors

    here = endpoint()
    try:
        yield
    except errors.GatedRepoError as e:
        raise ModelError(_gated(repo_id)) from e
    except errors.RevisionNotFoundError as e:
        raise ModelError(f"{repo_id} has no revision {revision!r} on {here}") from e
    except errors.RepositoryNotFoundError as e:
        raise ModelError(_not_found(repo_id, e.response.status_code)) from e
    except errors.RemoteEntryNotFoundError as e:
        raise ModelError(f"{e.response.url} is gone from {here}: pull again") from e
    except errors.HfHubHTTPError as e:
        status = e.response.status_code
        if status in (401, 403):
            raise ModelError(_gated(repo_id)) from e
        raise ModelError(f"{here} answered HTTP {status} for {repo_id}: try again later") from e
    except httpx2.UnsupportedProtocol as e:
        raise ConfigError(
            f"HF_ENDPOINT {here!r} is no URL: give one like https://hf-mirror.com"
        ) from e
    except (httpx2.ConnectError, httpx2.TimeoutException) as e:
        raise ModelError(
            f"cannot reach {here}: no network? (HF_ENDPOINT sets a mirror, e.g. https://hf-mirror.com)"
        ) from e
    except httpx2.TransportError as e:
        raise ModelError(f"the connection to {here} broke ({e}): pull again to resume") from e


def _gated(repo_id: str) -> str:
    return (
        f"{repo_id} is gated or private: accept its licence at {endpoint()}/{repo_id} "
        "and set HF_TOKEN (a read token)"
    )


def _not_found(repo_id: str, status: int) -> str:
    """Returns the message for a repository the hub does not show: without a token the hub
    answers 401 both for one that does not exist and for a private one."""
    from huggingface_hub import get_token

    if status == 404 and get_token():
        return f"no repository {repo_id} on {endpoint()}"
    return (
        f"no repository {repo_id} on {endpoint()}, or it is private "
        "(then set HF_TOKEN to a read token that can see it)"
    )

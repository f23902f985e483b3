"""Pulling models from a Hugging Face Hub: the fake one in hubserver.py, reached through
HF_ENDPOINT, with huggingface_hub's real client code doing the requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import free_port
from hubserver import FakeHub
from huggingface_hub import constants

from privatellm import hub
from privatellm.errors import ConfigError, ModelError
from privatellm.registry import detect

Serve = Callable[..., FakeHub]
GGUF_REPO = "bartowski/Tiny-Instruct-GGUF"
ST_REPO = "intfloat/tiny-e5"


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Serve]:
    """Starts fake hubs (HF_ENDPOINT points at the last one), stopped when the test ends; no
    token from the environment or from ~/.cache/huggingface/token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    started: list[FakeHub] = []

    def start(repos: dict[str, dict[str, bytes]], **options: Any) -> FakeHub:
        fake = FakeHub(repos, **options).__enter__()
        started.append(fake)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        return fake

    yield start
    for fake in started:
        fake.stop()


def tiny_gguf(tmp_path: Path, values: int = 16384, name: str = "tiny.gguf") -> bytes:
    """Returns the bytes of a real GGUF file (llama.cpp's own writer) of about 4 * values bytes."""
    import gguf

    path = tmp_path / name
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_tensor("weights", np.arange(values, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def safetensors_bytes(**tensors: np.ndarray[Any, Any]) -> bytes:
    from safetensors.numpy import save

    return save(tensors)


def st_folder() -> dict[str, bytes]:
    """Returns a small sentence-transformers repository, with the ONNX export and PyTorch
    duplicates real ones carry."""
    weights = safetensors_bytes(embeddings=np.ones((8, 4), dtype=np.float32))
    return {
        ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
        "README.md": b"---\nlanguage:\n- en\n- zh\nlicense: mit\n---\n# tiny e5\n",
        "modules.json": json.dumps(
            [
                {
                    "idx": 0,
                    "name": "0",
                    "path": "",
                    "type": "sentence_transformers.models.Transformer",
                },
                {
                    "idx": 1,
                    "name": "1",
                    "path": "1_Pooling",
                    "type": "sentence_transformers.models.Pooling",
                },
            ]
        ).encode(),
        "sentence_bert_config.json": b'{"max_seq_length": 512, "do_lower_case": false}',
        "config.json": b'{"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 4}',
        "1_Pooling/config.json": json.dumps(
            {"word_embedding_dimension": 4, "pooling_mode_mean_tokens": True}
        ).encode(),
        "tokenizer.json": b'{"version": "1.0", "model": {"type": "WordPiece"}}',
        "tokenizer_config.json": b'{"do_lower_case": true}',
        "vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n",
        "model.safetensors": weights,
        "pytorch_model.bin": b"PK\x03\x04 a pickled copy of the same weights" * 50,
        "LICENSE": b"MIT License",
        "onnx/model.onnx": b"\x08\x07 onnx export" * 50,
        "onnx/config.json": b"{}",
    }


def incomplete(dest: Path) -> list[Path]:
    return sorted(dest.rglob("*.incomplete"))


# -- pulling --------------------------------------------------------------------------------------


def test_a_gguf_lands_with_its_bytes(serve: Serve, tmp_path: Path) -> None:
    data = tiny_gguf(tmp_path)
    readme = b"---\nlanguage: [en, de]\n---\n"
    fake = serve({GGUF_REPO: {"Tiny-Q4_K_M.gguf": data, "README.md": readme}}, redirect_lfs=True)

    plan = hub.plan(GGUF_REPO)
    assert (plan.role, plan.kind, plan.default_name) == ("chat", "gguf", "Tiny-Q4_K_M")
    assert plan.commit == fake.commit(GGUF_REPO)
    assert plan.languages == ("en", "de")
    assert [f.path for f in plan.files] == ["Tiny-Q4_K_M.gguf"]
    assert plan.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert plan.size == len(data)

    path = hub.fetch(plan, tmp_path / "models" / "tiny", progress=False)
    assert path == tmp_path / "models" / "tiny" / "Tiny-Q4_K_M.gguf"
    assert path.read_bytes() == data
    assert detect(path) == ("chat", "gguf")
    assert incomplete(path.parent) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["Tiny-Q4_K_M.gguf"]
    # the file came from the commit planned, through the redirect to the "CDN"
    assert fake.requests_for(f"/resolve/{plan.commit}/Tiny-Q4_K_M.gguf")
    assert [r.method for r in fake.requests if r.path.startswith("/cdn/")] == ["GET"]


def test_a_sentence_transformers_folder_without_the_duplicates(
    serve: Serve, tmp_path: Path
) -> None:
    files = st_folder()
    serve({ST_REPO: files})

    plan = hub.plan(ST_REPO)
    assert (plan.role, plan.kind, plan.default_name) == (
        "embedding",
        "sentence-transformers",
        "tiny-e5",
    )
    assert plan.languages == ("en", "zh")
    taken = {f.path for f in plan.files}
    assert taken == set(files) - {
        ".gitattributes",
        "pytorch_model.bin",
        "onnx/model.onnx",
        "onnx/config.json",
    }
    assert plan.size == sum(len(files[p]) for p in taken)
    lfs = {f.path for f in plan.files if f.sha256}
    assert lfs == {"model.safetensors"}
    assert all(f.blob_id for f in plan.files)

    dest = tmp_path / "e5"
    assert hub.fetch(plan, dest, progress=False) == dest
    for path in taken:
        assert (dest / path).read_bytes() == files[path], path
    assert not (dest / "pytorch_model.bin").exists()
    assert not (dest / "onnx").exists()
    assert detect(dest) == ("embedding", "sentence-transformers")
    assert incomplete(dest) == []


def test_a_folder_without_safetensors_takes_the_pytorch_weights_and_reads_config_json(
    serve: Serve, tmp_path: Path
) -> None:
    """A causal LM folder whose hub leaves `config` out of the model info: plan reads
    config.json itself to tell chat from embedding."""
    files = {
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}',
        "generation_config.json": b"{}",
        "tokenizer.json": b"{}",
        "chat_template.jinja": b"{% for m in messages %}{{ m.content }}{% endfor %}",
        "pytorch_model.bin": b"\x80\x02 weights" * 100,
        "tf_model.h5": b"HDF weights" * 100,
        "flax_model.msgpack": b"msgpack weights" * 100,
        "training_args.bin": b"\x80\x02 args",
    }
    fake = serve({"me/tiny-llama": files}, api_config=False)

    plan = hub.plan("me/tiny-llama")
    assert (plan.role, plan.kind) == ("chat", "hf")
    assert fake.requests_for("/resolve/" + plan.commit + "/config.json")
    assert {f.path for f in plan.files} == {
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "pytorch_model.bin",
    }
    dest = hub.fetch(plan, tmp_path / "llama", progress=False)
    assert detect(dest) == ("chat", "hf")


def test_a_split_gguf_is_pulled_whole(serve: Serve, tmp_path: Path) -> None:
    part1, part2 = b"GGUF" + b"1" * 3000, b"2" * 2000
    serve(
        {
            GGUF_REPO: {
                "Q8_0/Tiny-Q8_0-00001-of-00002.gguf": part1,
                "Q8_0/Tiny-Q8_0-00002-of-00002.gguf": part2,
            }
        }
    )
    plan = hub.plan(GGUF_REPO, "*00001-of-00002.gguf")  # names one part: both are taken
    assert [f.path for f in plan.files] == [
        "Q8_0/Tiny-Q8_0-00001-of-00002.gguf",
        "Q8_0/Tiny-Q8_0-00002-of-00002.gguf",
    ]
    assert plan.default_name == "Tiny-Q8_0"
    first = hub.fetch(plan, tmp_path / "split", progress=False)
    assert first == tmp_path / "split" / "Q8_0" / "Tiny-Q8_0-00001-of-00002.gguf"
    assert first.read_bytes() == part1
    assert first.with_name("Tiny-Q8_0-00002-of-00002.gguf").read_bytes() == part2


def test_a_second_pull_downloads_nothing(serve: Serve, tmp_path: Path) -> None:
    data = tiny_gguf(tmp_path, values=1024)
    fake = serve({GGUF_REPO: {"Tiny-Q4_K_M.gguf": data}})
    plan = hub.plan(GGUF_REPO)
    hub.fetch(plan, tmp_path / "m", progress=False)
    gets = len(fake.requests_for("Tiny-Q4_K_M.gguf"))
    assert hub.fetch(plan, tmp_path / "m", progress=False).read_bytes() == data
    assert len(fake.requests_for("Tiny-Q4_K_M.gguf")) == gets


# -- interrupted, corrupted ------------------------------------------------------------------------


def test_an_interrupted_pull_resumes_where_it_stopped(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub writes what it received in blocks of this size (10 MB as shipped)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    data = tiny_gguf(tmp_path)  # 64 KB
    fake = serve(
        {GGUF_REPO: {"Tiny-Q4_K_M.gguf": data}},
        interrupt_after={(GGUF_REPO, "Tiny-Q4_K_M.gguf"): 32768},
    )
    plan = hub.plan(GGUF_REPO)
    dest = tmp_path / "tiny"

    with pytest.raises(KeyboardInterrupt):
        hub.fetch(plan, dest, progress=False)
    (partial,) = incomplete(dest)
    kept = partial.stat().st_size
    assert 0 < kept < len(data)
    assert partial.read_bytes() == data[:kept]
    assert not (dest / "Tiny-Q4_K_M.gguf").exists()
    assert constants.HF_HUB_OFFLINE is True  # restored on the way out of the interrupt too

    path = hub.fetch(plan, dest, progress=False)
    assert path.read_bytes() == data
    assert incomplete(dest) == []
    gets = [r for r in fake.requests_for("Tiny-Q4_K_M.gguf") if r.method == "GET"]
    assert [r.range for r in gets] == [None, f"bytes={kept}-"]


@pytest.mark.parametrize(
    ("path", "algorithm"), [("model.safetensors", "sha256"), ("tokenizer.json", "sha1")]
)
def test_a_corrupted_file_is_deleted_and_reported(
    serve: Serve, tmp_path: Path, path: str, algorithm: str
) -> None:
    files = st_folder()
    serve({ST_REPO: files}, corrupt=[(ST_REPO, path)])
    plan = hub.plan(ST_REPO)
    dest = tmp_path / "e5"

    with pytest.raises(ModelError) as caught:
        hub.fetch(plan, dest, progress=False)
    message = str(caught.value)
    expected = next(f for f in plan.files if f.path == path)
    assert f"{path} from {ST_REPO} is corrupt: {algorithm} " in message
    assert f"the hub says {expected.sha256 or expected.blob_id}" in message
    assert "\n" not in message
    assert not (dest / path).exists()
    assert incomplete(dest) == []


# -- errors ---------------------------------------------------------------------------------------


def test_a_gated_repo_names_hf_token(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tiny_gguf(tmp_path, values=256)
    repo = "meta-llama/Llama-Tiny-GGUF"
    fake = serve({repo: {"llama-Q4_K_M.gguf": data}}, gated=[repo], token="hf_right")
    expected = (
        f"{repo} is gated or private: accept its licence at {fake.url}/{repo} "
        "and set HF_TOKEN (a read token)"
    )
    with pytest.raises(ModelError) as without_token:
        hub.plan(repo)
    assert str(without_token.value) == expected

    monkeypatch.setenv("HF_TOKEN", "hf_wrong")  # read at call time
    plan = hub.plan(repo)
    with pytest.raises(ModelError) as wrong_token:
        hub.fetch(plan, tmp_path / "llama", progress=False)
    assert str(wrong_token.value) == expected
    assert fake.requests_for("llama-Q4_K_M.gguf")[-1].headers["authorization"] == "Bearer hf_wrong"

    monkeypatch.setenv("HF_TOKEN", "hf_right")
    assert hub.fetch(plan, tmp_path / "llama", progress=False).read_bytes() == data


def test_an_unknown_repo_or_revision(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = serve({ST_REPO: st_folder()})
    with pytest.raises(ModelError) as anonymous:
        hub.plan("nobody/nothing")
    assert str(anonymous.value) == (
        f"no repository nobody/nothing on {fake.url}, or it is private "
        "(then set HF_TOKEN to a read token that can see it)"
    )
    monkeypatch.setenv("HF_TOKEN", "hf_any")  # with a token the hub answers 404: no doubt left
    with pytest.raises(ModelError) as known:
        hub.plan("nobody/nothing")
    assert str(known.value) == f"no repository nobody/nothing on {fake.url}"

    with pytest.raises(ModelError, match=f"^{ST_REPO} has no revision 'v9' on "):
        hub.plan(ST_REPO, revision="v9")
    assert hub.plan(ST_REPO, revision="main").commit == fake.commit(ST_REPO)
    with pytest.raises(ConfigError, match="is not a repository id"):
        hub.plan("not a repo")


def test_no_network_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    with pytest.raises(ModelError) as caught:
        hub.plan(GGUF_REPO)
    assert str(caught.value) == (
        f"cannot reach {endpoint}: no network? (HF_ENDPOINT sets a mirror, e.g. https://hf-mirror.com)"
    )
    assert constants.HF_HUB_OFFLINE is True

    monkeypatch.setenv("HF_ENDPOINT", "hf-mirror.com")
    with pytest.raises(ConfigError, match=r"HF_ENDPOINT 'hf-mirror\.com' is no URL"):
        hub.plan(GGUF_REPO)


def test_file_patterns(serve: Serve, tmp_path: Path) -> None:
    quantizations = ("Q4_K_M", "Q8_0", "IQ2_XXS")
    files = {f"Tiny-{q}.gguf": b"GGUF" + q.encode() * 100 for q in quantizations}
    serve({GGUF_REPO: {**files, "README.md": b"# tiny"}})

    with pytest.raises(ConfigError) as several:
        hub.plan(GGUF_REPO)
    assert str(several.value) == (
        f"{GGUF_REPO} holds 3 GGUF models (IQ2_XXS, Q4_K_M, Q8_0): pick one with --file '*Q4_K_M*'"
    )
    with pytest.raises(ConfigError) as broad:
        hub.plan(GGUF_REPO, "*Q*")
    assert str(broad.value).startswith(f"--file '*Q*' matches 3 GGUF models in {GGUF_REPO} (")
    assert "give a narrower one" in str(broad.value)
    with pytest.raises(ConfigError) as nothing:
        hub.plan(GGUF_REPO, "*Q5_K_M*")
    assert str(nothing.value) == (
        f"no file in {GGUF_REPO} matches '*Q5_K_M*'; it has README.md, Tiny-IQ2_XXS.gguf, "
        "Tiny-Q4_K_M.gguf, Tiny-Q8_0.gguf"
    )
    plan = hub.plan(GGUF_REPO, "*q8_0*")  # any case
    assert [f.path for f in plan.files] == ["Tiny-Q8_0.gguf"]
    assert plan.languages == ()


def test_disk_full_is_caught_before_downloading(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    from collections import namedtuple

    data = tiny_gguf(tmp_path, values=1024)
    fake = serve({GGUF_REPO: {"Tiny-Q4_K_M.gguf": data}})
    plan = hub.plan(GGUF_REPO)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    dest = tmp_path / "models" / "tiny"
    with pytest.raises(ModelError) as caught:
        hub.fetch(plan, dest, progress=False)
    assert str(caught.value).startswith(
        f"{GGUF_REPO} needs {len(data) / 2**20:.1f} MB, 0.0 MB free on {dest}: "
    )
    assert not dest.exists()
    assert not fake.requests_for("Tiny-Q4_K_M.gguf")


def test_offline_mode_is_back_after_a_pull(serve: Serve, tmp_path: Path) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    assert constants.HF_HUB_OFFLINE is True  # privatellm's default
    fake = serve({GGUF_REPO: {"Tiny-Q4_K_M.gguf": tiny_gguf(tmp_path, values=256)}})
    hub.fetch(hub.plan(GGUF_REPO), tmp_path / "m", progress=False)
    assert constants.HF_HUB_OFFLINE is True
    seen = len(fake.requests)
    with pytest.raises(OfflineModeIsEnabled):
        HfApi(endpoint=fake.url).model_info(GGUF_REPO)
    assert len(fake.requests) == seen


# -- through the CLI ------------------------------------------------------------------------------


def pull(*args: str) -> int:
    """Returns the exit status of `privatellm models pull ARGS`, run in this process."""
    from privatellm.cli import main

    try:
        main(["models", "pull", *args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_models_pull_registers_a_gguf(
    serve: Serve,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from privatellm.registry import Registry

    data = tiny_gguf(tmp_path)
    readme = b"---\nlanguage: [en, zh]\n---\n"
    fake = serve(
        {GGUF_REPO: {"Tiny-Q4_K_M.gguf": data, "Tiny-Q8_0.gguf": data, "README.md": readme}}
    )
    monkeypatch.setenv("PRIVATELLM_DATA_DIR", str(tmp_path / "data"))

    assert pull(GGUF_REPO, "--file", "*Q4_K_M*", "--name", "tiny") == 0
    model = Registry(tmp_path / "data").get("tiny")
    assert (model.role, model.kind, model.owned, model.languages) == (
        "chat",
        "gguf",
        True,
        ("en", "zh"),
    )
    assert model.source == f"hf:{GGUF_REPO}@{fake.commit(GGUF_REPO)[:12]}"
    assert Path(model.path).read_bytes() == data
    assert "registered tiny" in capsys.readouterr().out


def test_models_pull_of_a_corrupted_file_registers_nothing(
    serve: Serve,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from privatellm.registry import Registry

    serve(
        {GGUF_REPO: {"Tiny-Q4_K_M.gguf": tiny_gguf(tmp_path)}},
        corrupt=[(GGUF_REPO, "Tiny-Q4_K_M.gguf")],
    )
    monkeypatch.setenv("PRIVATELLM_DATA_DIR", str(tmp_path / "data"))

    assert pull(GGUF_REPO, "--name", "tiny") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: Tiny-Q4_K_M.gguf from {GGUF_REPO} is corrupt: sha256 ")
    assert Registry(tmp_path / "data").find("tiny") is None
    assert not list((tmp_path / "data").rglob("*.gguf"))

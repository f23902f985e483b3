"""engine.kind torch: a Meta checkpoint folder runs on the CPU (converted once, cached), and the
bundled GGUF dequantized into torch agrees with llama.cpp's greedy continuation."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli
from test_convert import make_meta_checkpoint

from privatellm.config import EngineSettings
from privatellm.engines import Sampling, build_engine
from privatellm.errors import ModelError

GREEDY = Sampling(max_tokens=10, temperature=0.0)
# Prompts whose greedy continuations the two engines are compared on. (On "What is the capital
# of France?" they part at the first token: two near-equal candidates that Q4_1 arithmetic in
# llama.cpp and fp32 arithmetic in torch rank differently.)
PROMPTS = ["Name three colours.", "Who wrote Hamlet?", "Say hello to the reader."]


def test_meta_checkpoint_folder_runs_without_cuda(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    meta = tmp_path / "llama-tiny"
    make_meta_checkpoint(meta)
    settings = EngineSettings(kind="torch", model=str(meta), device="cpu", dtype="fp32")
    engine = build_engine(settings)
    assert engine.count_tokens("Llama 2 followed in July 2023.") > 5
    messages = [{"role": "user", "content": "Llama"}]
    ids = engine.prompt_ids(messages)  # type: ignore[attr-defined]
    assert int(ids[0, 0]) == 1  # BOS, as Meta's generation code starts
    text = "".join(engine.stream(messages, Sampling(max_tokens=6)))  # type: ignore[arg-type]
    assert isinstance(text, str)
    early = engine.stream(messages, Sampling(max_tokens=2000))  # type: ignore[arg-type]
    next(early, None)
    early.close()  # returns at once: the generation thread is told to stop
    [converted] = list((tmp_path / "cache" / "privatellm" / "converted").iterdir())
    stamp = (converted / "model.safetensors").stat().st_mtime_ns
    build_engine(settings)  # a second load reuses the conversion
    assert (converted / "model.safetensors").stat().st_mtime_ns == stamp


def test_not_a_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a GGUF file, a Hugging Face model folder"):
        build_engine(EngineSettings(kind="torch", model=str(tmp_path)))


@pytest.fixture(scope="module")
def llama_cpp_replies() -> list[str]:
    engine = build_engine(EngineSettings(kind="llamacpp"))
    return ["".join(engine.stream([{"role": "user", "content": p}], GREEDY)) for p in PROMPTS]


def test_torch_and_llama_cpp_agree_on_the_bundled_gguf(llama_cpp_replies: list[str]) -> None:
    engine = build_engine(EngineSettings(kind="torch", device="cpu", dtype="fp32"))
    replies = ["".join(engine.stream([{"role": "user", "content": p}], GREEDY)) for p in PROMPTS]
    assert replies == llama_cpp_replies
    assert all(engine.count_tokens(r) >= 8 for r in replies)  # at least 8 tokens compared


@pytest.mark.parametrize("options", [{"dtype": "bf16"}, {"quantize": "int8", "dtype": "fp32"}])
def test_bf16_and_int8_generate(options: dict[str, str]) -> None:
    engine = build_engine(EngineSettings(kind="torch", device="cpu", **options))  # type: ignore[arg-type]
    reply = "".join(engine.stream([{"role": "user", "content": PROMPTS[1]}], GREEDY))
    assert "Shakespeare" in reply or "Bard" in reply  # still the model, not noise


def test_models_convert_command(tmp_path: Path) -> None:
    meta = tmp_path / "meta"
    make_meta_checkpoint(meta)
    done = run_cli("models", "convert", meta, tmp_path / "hf")
    assert done.returncode == 0, done.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in (tmp_path / "hf").iterdir()
    }
    refused = run_cli("models", "convert", tmp_path / "hf", tmp_path / "again")
    assert refused.returncode == 2 and "no params.json" in refused.stderr

"""LoRA adapters on both engines: an adapter made with PEFT on the bundled model and exported to
llama.cpp's GGUF gives the same greedy text on llama.cpp (Q4_1 base + adapter.gguf), on torch (fp32,
base + PEFT files) and merged into a Hugging Face folder; what cannot be exported or loaded is a
one-line error."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from privatellm.config import BUNDLED_LLM, EngineSettings
from privatellm.engines import Sampling, build_engine
from privatellm.engines.llamacpp import resolve_gguf
from privatellm.engines.torch import load_pretrained, resolve_source
from privatellm.errors import ConfigError, ModelError
from privatellm.lora import ADAPTER_GGUF, GGUF_TENSORS, base_config, export_gguf, merge

GREEDY = Sampling(max_tokens=10, temperature=0.0)
# Prompts the engines are compared on: with this adapter, torch's first two candidates stay at
# least 0.15 apart (logits) at every step of these. On others the engines part at near-equal
# candidates that Q4_1 arithmetic (llama.cpp) and fp32 (torch) rank differently: "Say hello to
# the reader." at the first token, "Tell me a fact about dogs." at the sixth.
PROMPTS = [
    "What is two plus two?",
    "What is water made of?",
    "What colour is the sky?",
    "What is the capital of France?",
]
TARGETS = list(GGUF_TENSORS)
# Standard deviation of lora_B: at 0.03 the adapter moves the greedy text of several prompts
# and the text stays sensible (at 0.2 the model starts to ramble).
LORA_B_STD = 0.03


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Silences what peft (0.21) warns about on this path, nothing a test can act on."""
    with warnings.catch_warnings():
        # peft asks transformers (5.x) for a property transformers has renamed
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        # the bundled base is a GGUF, without a config.json for peft to compare vocabularies
        warnings.filterwarnings("ignore", "Could not find a config file")
        # a LoRA on lm_head or embed_tokens also saves the whole layer: the refusals below
        warnings.filterwarnings("ignore", "Setting `save_embedding_layers` to `True`")
        yield


def randomize(peft_model: Any, std: float) -> None:
    """Gives every lora_A and lora_B seeded random values (peft starts lora_B at zero)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_A" in name:  # [rank, in]: peft's own scale, 1/sqrt(in)
                scale = parameter.shape[1] ** -0.5
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
            elif "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter folder (PEFT files + adapter.gguf) of seeded random LoRA weights on every
    projection of the bundled model."""
    folder = tmp_path_factory.mktemp("lora") / "noisy"
    source, gguf_name = resolve_source(BUNDLED_LLM)
    _, model = load_pretrained(source, gguf_name, torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, lora_dropout=0.0)
    with quiet_peft():
        peft_model = get_peft_model(model, config)
        randomize(peft_model, LORA_B_STD)
        peft_model.save_pretrained(folder)
    export_gguf(folder, base_config(BUNDLED_LLM))
    return folder


def replies(settings: EngineSettings) -> tuple[str, list[str]]:
    """Returns (engine name, greedy replies to PROMPTS) of the engine settings describe."""
    engine = build_engine(settings)
    texts = ["".join(engine.stream([{"role": "user", "content": p}], GREEDY)) for p in PROMPTS]
    return engine.name, texts


@pytest.fixture(scope="module")
def torch_replies(adapter: Path) -> list[str]:
    name, texts = replies(
        EngineSettings(kind="torch", device="cpu", dtype="fp32", lora=str(adapter))
    )
    assert name == "SmolLM2-135M-Instruct.Q4_1+noisy"
    return texts


def test_gguf_holds_what_llama_cpp_reads(adapter: Path) -> None:
    reader = gguf.GGUFReader(adapter / ADAPTER_GGUF)
    fields = {name: reader.fields[name].contents() for name in reader.fields if "." in name}
    assert fields["general.architecture"] == "llama"
    assert fields["general.type"] == "adapter"
    assert fields["adapter.type"] == "lora"
    assert fields["adapter.lora.alpha"] == 16.0
    tensors = {t.name: t for t in reader.tensors}
    blocks = [f"blk.{i}.{t}.weight" for i in range(30) for t in GGUF_TENSORS.values()]
    assert set(tensors) == {f"{b}.lora_{ab}" for b in blocks for ab in "ab"}
    base = {t.name: t for t in gguf.GGUFReader(resolve_gguf(BUNDLED_LLM)).tensors}
    for block in blocks:  # llama.cpp's own check (ggml order: ne[0] is the row length)
        lora_a, lora_b = tensors[f"{block}.lora_a"], tensors[f"{block}.lora_b"]
        assert lora_a.tensor_type == lora_b.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(lora_a.shape) == [base[block].shape[0], 8]
        assert list(lora_b.shape) == [8, base[block].shape[1]]


def test_lora_b_of_q_and_k_is_permuted_as_llama_cpp_orders_heads(adapter: Path) -> None:
    peft = load_file(adapter / "adapter_model.safetensors")
    reader = gguf.GGUFReader(adapter / ADAPTER_GGUF)
    exported = {t.name: torch.from_numpy(t.data.copy()) for t in reader.tensors}
    prefix = "base_model.model.model.layers.0."

    def hf(module: str, ab: str) -> torch.Tensor:
        return peft[f"{prefix}{module}.lora_{ab}.weight"]

    assert torch.equal(exported["blk.0.attn_v.weight.lora_b"], hf("self_attn.v_proj", "B"))
    assert torch.equal(exported["blk.0.attn_q.weight.lora_a"], hf("self_attn.q_proj", "A"))
    for module, heads in (("q_proj", 9), ("k_proj", 3)):
        rows = hf(f"self_attn.{module}", "B")
        head = rows[:64]  # head 0: llama.cpp pairs row i with row i + 32 (rotate-half), in turn
        assert torch.equal(exported[f"blk.0.attn_{module[0]}.weight.lora_b"][:64:2], head[:32])
        assert torch.equal(exported[f"blk.0.attn_{module[0]}.weight.lora_b"][1:64:2], head[32:])
        assert rows.shape[0] == heads * 64


def test_llama_cpp_and_torch_agree_with_the_adapter(
    adapter: Path, torch_replies: list[str]
) -> None:
    name, llama_cpp = replies(EngineSettings(kind="llamacpp", lora=str(adapter)))
    assert name == "SmolLM2-135M-Instruct.Q4_1+noisy"
    assert llama_cpp == torch_replies
    engine = build_engine(EngineSettings(kind="llamacpp"))
    assert all(engine.count_tokens(r) >= 8 for r in torch_replies)  # at least 8 tokens compared
    _, without = replies(EngineSettings(kind="torch", device="cpu", dtype="fp32"))
    assert sum(a != b for a, b in zip(without, torch_replies, strict=True)) >= 3


def test_merged_folder_answers_as_base_plus_adapter(
    adapter: Path, torch_replies: list[str], tmp_path: Path
) -> None:
    out = merge(BUNDLED_LLM, adapter, tmp_path / "merged")
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert "quantization_config" not in config
    assert {"model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    _, texts = replies(EngineSettings(kind="torch", model=str(out), device="cpu", dtype="fp32"))
    assert texts == torch_replies
    assert not [p for p in tmp_path.iterdir() if p.name != "merged"]  # no partial folder left
    with pytest.raises(ConfigError, match="already exists and is not an empty folder"):
        merge(BUNDLED_LLM, adapter, out)


@pytest.mark.parametrize(
    ("kind", "lora", "message"),
    [
        ("llamacpp", "missing", "missing: no such LoRA adapter"),
        ("llamacpp", "peft-only", "no adapter.gguf in this adapter folder"),
        ("torch", "missing", "not a LoRA adapter folder .no adapter_config.json"),
        ("torch", "adapter.gguf", "engine.kind torch needs the adapter folder .PEFT files., not"),
    ],
)
def test_wrong_adapter_is_a_one_line_error(
    tmp_path: Path, adapter: Path, kind: str, lora: str, message: str
) -> None:
    (tmp_path / "peft-only").mkdir()
    (tmp_path / "peft-only" / "adapter_config.json").write_bytes(
        (adapter / "adapter_config.json").read_bytes()
    )
    (tmp_path / "adapter.gguf").write_bytes((adapter / ADAPTER_GGUF).read_bytes())
    settings = EngineSettings(kind=kind, lora=str(tmp_path / lora))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=message) as raised:
        build_engine(settings)
    assert "\n" not in str(raised.value)


def tiny_adapter(folder: Path, **options: Any) -> Path:
    """Returns folder, holding a PEFT adapter of a tiny random llama built with options."""
    config = LlamaConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    with quiet_peft():
        peft_model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, **options))
        randomize(peft_model, 0.1)
        peft_model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"target_modules": ["q_proj", "lm_head"]}, "cannot export .*lm_head"),
        ({"target_modules": ["embed_tokens"]}, "cannot export .*embed_tokens"),
        ({"target_modules": ["v_proj"], "use_dora": True}, "cannot export DoRA"),
        ({"target_modules": ["v_proj"], "modules_to_save": ["lm_head"]}, "modules_to_save"),
    ],
)
def test_what_llama_cpp_cannot_run_is_not_exported(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    folder = tiny_adapter(tmp_path / "tiny", **options)
    base = {"model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2}
    with pytest.raises(ModelError, match=message):
        export_gguf(folder, base)
    assert not list(folder.glob("*.gguf*"))  # nothing half-written left


def test_rslora_scale_is_carried_by_lora_b(tmp_path: Path) -> None:
    # llama.cpp scales by alpha / rank, rsLoRA by alpha / sqrt(rank): lora_b takes sqrt(rank)
    folder = tiny_adapter(tmp_path / "tiny", target_modules=["v_proj"], use_rslora=True)
    out = export_gguf(folder, {"num_attention_heads": 4}, tmp_path / "elsewhere.gguf")
    exported = {t.name: t.data for t in gguf.GGUFReader(out).tensors}
    peft = load_file(folder / "adapter_model.safetensors")
    expected = peft["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"] * 2.0
    assert torch.allclose(torch.from_numpy(exported["blk.1.attn_v.weight.lora_b"].copy()), expected)


def test_adapter_of_another_base_is_refused_by_llama_cpp(tmp_path: Path) -> None:
    folder = tiny_adapter(tmp_path / "tiny", target_modules=["q_proj", "v_proj"])
    export_gguf(folder, {"num_attention_heads": 4, "num_key_value_heads": 2})
    with pytest.raises(
        ModelError, match=r"cannot apply the LoRA adapter .*tiny: llama.cpp refused it"
    ) as raised:
        build_engine(EngineSettings(kind="llamacpp", lora=str(folder)))
    assert "\n" not in str(raised.value)

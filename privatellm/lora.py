"""LoRA adapters: a PEFT adapter folder exported to llama.cpp's GGUF LoRA format, or merged into
its base model as a plain Hugging Face folder.

An adapter folder holds what `PeftModel.save_pretrained` writes (adapter_config.json and
adapter_model.safetensors: LoRA on a LlamaForCausalLM's attention and MLP projections) and
adapter.gguf, the same adapter as llama.cpp reads it. engine.lora names such a folder: the torch
engine merges the PEFT files into the weights at load, llama.cpp adds the GGUF's product at run
time. The file names are defined by the engine that reads each file and re-exported here.

The GGUF follows llama.cpp's convert_lora_to_gguf.py: general.type "adapter", adapter.type
"lora", adapter.lora.alpha; per projection "blk.{i}.<tensor>.weight.lora_a" [rank, in] and
".lora_b" [out, rank] (numpy order; ggml's ne is the reverse), in F32.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from privatellm.engines.llamacpp import ADAPTER_GGUF
from privatellm.engines.torch import PEFT_CONFIG, PEFT_WEIGHTS, load_pretrained, resolve_source
from privatellm.errors import ConfigError, ModelError

__all__ = [
    "ADAPTER_GGUF",
    "GGUF_TENSORS",
    "PEFT_CONFIG",
    "PEFT_WEIGHTS",
    "base_config",
    "export_gguf",
    "merge",
]

# PEFT's target module -> llama.cpp's tensor of a llama block (gguf-py's TENSOR_NAMES)
GGUF_TENSORS = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight -> (3, q_proj, A)
_PEFT_TENSOR = re.compile(
    r"base_model\.model\.model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight"
)


def base_config(model: str) -> dict[str, Any]:
    """Returns the Hugging Face config (as a dict) of an engine.model setting, read the way the
    torch engine reads the model: from a GGUF's metadata, an HF folder, a converted Meta one."""
    from transformers import AutoConfig

    folder, gguf = resolve_source(model)
    extra = {"gguf_file": gguf} if gguf else {}
    try:
        config: dict[str, Any] = AutoConfig.from_pretrained(folder, **extra).to_dict()
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read the config of {model}: {e}".splitlines()[0]) from e
    return config


def export_gguf(adapter: Path, base: Mapping[str, Any], out: Path | None = None) -> Path:
    """Writes the PEFT adapter folder `adapter` as a llama.cpp LoRA GGUF and returns its path
    (default adapter/adapter.gguf). base is the base model's HF config (see base_config): its
    head counts decide how q and k are permuted."""
    import gguf

    config = _exportable(_read_config(adapter))
    tensors = _gguf_tensors(adapter, config, _head_counts(base))
    target = out or adapter / ADAPTER_GGUF
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    writer = gguf.GGUFWriter(partial, "llama")
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_name(adapter.name)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
        for name, array in tensors:
            writer.add_tensor(name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    partial.replace(target)  # a reader never sees a half-written adapter.gguf
    return target


def _read_config(adapter: Path) -> dict[str, Any]:
    """Returns adapter_config.json of an adapter folder."""
    path = adapter / PEFT_CONFIG
    if not path.is_file() or not (adapter / PEFT_WEIGHTS).is_file():
        raise ModelError(f"{adapter}: not a PEFT adapter folder ({PEFT_CONFIG} + {PEFT_WEIGHTS})")
    try:
        config: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}".splitlines()[0]) from e
    return config


def _exportable(config: dict[str, Any]) -> dict[str, Any]:
    """Returns config if llama.cpp can run the adapter it describes; raises ModelError naming
    the first thing it cannot (llama.cpp has one alpha per file and only the product B·A)."""
    refusals = [
        (config.get("peft_type", "LORA") != "LORA", f"a {config.get('peft_type')} adapter"),
        (bool(config.get("use_dora")), "DoRA (use_dora)"),
        (config.get("bias", "none") != "none" or bool(config.get("lora_bias")), "LoRA biases"),
        (bool(config.get("modules_to_save")), "whole modules saved (modules_to_save)"),
        (bool(config.get("alpha_pattern")), "per-module alphas (alpha_pattern)"),
        (bool(config.get("alora_invocation_tokens")), "activated LoRA (aLoRA)"),
        (not float(config.get("lora_alpha") or 0) > 0, "lora_alpha 0"),
    ]
    for refused, what in refusals:
        if refused:
            raise ModelError(f"cannot export {what} to llama.cpp's LoRA format")
    return config


def _head_counts(base: Mapping[str, Any]) -> tuple[int, int]:
    """Returns (attention heads, key-value heads) of a llama base config."""
    if base.get("model_type", "llama") != "llama":
        raise ModelError(f"cannot export a LoRA of a {base['model_type']} model: llama only")
    try:
        n_head = int(base["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        raise ModelError("the base config has no num_attention_heads") from None
    return n_head, int(base.get("num_key_value_heads") or n_head)


def _gguf_tensors(
    adapter: Path, config: Mapping[str, Any], heads: tuple[int, int]
) -> list[tuple[str, Any]]:
    """Returns (GGUF name, float32 array) of every lora_a and lora_b, ready for llama.cpp."""
    from safetensors.torch import load_file

    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, tensor in load_file(adapter / PEFT_WEIGHTS).items():
        found = _PEFT_TENSOR.fullmatch(key)
        if found is None or found[2] not in GGUF_TENSORS:
            raise ModelError(
                f"cannot export {key}: llama.cpp's LoRA covers {', '.join(GGUF_TENSORS)} only"
            )
        pairs.setdefault((int(found[1]), found[2]), {})[found[3]] = tensor.float()
    tensors = []
    for (layer, module), pair in sorted(pairs.items()):
        if set(pair) != {"A", "B"}:
            raise ModelError(f"{adapter}: layer {layer} {module} lacks lora_A or lora_B")
        lora_a, lora_b = pair["A"], pair["B"] * _scale_fix(config, pair["A"].shape[0])
        if module in ("q_proj", "k_proj"):
            lora_b = _rope_permute(lora_b, heads[0] if module == "q_proj" else heads[1])
        name = f"blk.{layer}.{GGUF_TENSORS[module]}.weight"
        tensors += [(f"{name}.lora_a", lora_a.contiguous().numpy())]
        tensors += [(f"{name}.lora_b", lora_b.contiguous().numpy())]
    return tensors


def _scale_fix(config: Mapping[str, Any], rank: int) -> float:
    """Returns the factor that makes llama.cpp's scale, alpha / rank (rank: lora_b's width),
    PEFT's: rsLoRA scales by alpha / sqrt(rank), so lora_b carries sqrt(rank) more."""
    return float(rank**0.5) if config.get("use_rslora") else 1.0


def _rope_permute(weight: Any, n_head: int) -> Any:
    """Returns a q or k projection's output rows reordered as convert_hf_to_gguf's LlamaModel
    reorders the weights (HF's rotate-half halves -> llama.cpp's interleaved pairs); lora_b's
    rows are the projection's outputs, so it moves with them while lora_a stays."""
    rows = weight.shape[0]
    if rows % (2 * n_head):
        raise ModelError(f"a q/k projection of {rows} rows does not split into {n_head} heads")
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def merge(base_model: str, adapter: Path, out: Path) -> Path:
    """Writes base_model with the adapter folder's LoRA merged into its weights as a Hugging Face
    folder (fp32 safetensors, tokenizer with its chat template) at out, and returns out.
    base_model is an engine.model setting, loaded as the torch engine loads it."""
    import torch

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not an empty folder")
    folder, gguf = resolve_source(base_model)
    # fp32: a GGUF base dequantizes to it, and a lower precision would round the small B·A away
    tokenizer, model = load_pretrained(folder, gguf, torch.float32, str(adapter))
    model = _unmarked(model)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)  # whole or not there: a killed merge leaves only the partial folder
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _unmarked(model: Any) -> Any:
    """Returns model without transformers' quantizer mark, once every weight is a dense float.

    transformers (5.x) marks a model read from a GGUF as quantized and refuses to save it, even
    when it unpacked every weight into plain float tensors at load (as it does without the
    `kernels` package)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    if not all(p.is_floating_point() for p in model.parameters()):
        raise ModelError("cannot merge into weights that transformers keeps packed as in the GGUF")
    quantizer.remove_quantization_config(model)
    return model

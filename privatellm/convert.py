"""Meta's Llama checkpoints (consolidated.*.pth + params.json + tokenizer.model) to the
Hugging Face Llama layout, on the CPU: no CUDA, NCCL or torchrun.

Written here because transformers ships this only as a command-line script
(convert_llama_weights_to_hf.py, not in every release) that downloads nothing but assumes known
model sizes; this reads every size from params.json and the tensors themselves.

What the conversion does:
- merges model-parallel shards: column-parallel weights (wq, wk, wv, w1, w3, output) were split
  by rows, row-parallel ones (wo, w2) by columns, the embedding by columns (Llama 1/2) or rows
  (Llama 3), norms are copies;
- permutes the rows of wq and wk: Meta's rotary embedding rotates interleaved pairs (x0, x1),
  (x2, x3)... as complex numbers, Hugging Face's rotates the two halves of each head, so each
  head's rows are reordered from [pair0.re, pair0.im, pair1.re, ...] to [re..., im...];
- renames the tensors and writes config.json, model.safetensors and the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privatellm.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

# Meta tensor name (after "layers.N.") -> (Hugging Face name, dimension its shards were split on)
LAYER_TENSORS: dict[str, tuple[str, int | None]] = {
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}


def is_meta_checkpoint(path: Path) -> bool:
    return (
        path.is_dir() and (path / "params.json").is_file() and any(path.glob("consolidated.*.pth"))
    )


def permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorders each head's rows from interleaved rotary pairs to rotated halves."""
    rows, columns = weight.shape
    return weight.view(heads, rows // heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def convert(source: Path, target: Path) -> Path:
    """Writes the Hugging Face form of the Meta checkpoint in source into target; returns it."""
    import torch
    from safetensors.torch import save_file

    params = _params(source)
    shards = [
        torch.load(p, map_location="cpu", mmap=True, weights_only=True)
        for p in sorted(source.glob("consolidated.*.pth"))
    ]
    dim, layers = int(params["dim"]), int(params["n_layers"])
    heads = int(params["n_heads"])
    kv_heads = int(params.get("n_kv_heads") or heads)
    tensors: dict[str, torch.Tensor] = {}
    for n in range(layers):
        for meta, (hf, split) in LAYER_TENSORS.items():
            tensor = _merge(shards, f"layers.{n}.{meta}", split)
            if meta == "attention.wq.weight":
                tensor = permute_rotary(tensor, heads)
            elif meta == "attention.wk.weight":
                tensor = permute_rotary(tensor, kv_heads)
            tensors[f"model.layers.{n}.{hf}"] = tensor
    tensors["model.norm.weight"] = _merge(shards, "norm.weight", None)
    tensors["lm_head.weight"] = _merge(shards, "output.weight", 0)
    embedding = [s["tok_embeddings.weight"] for s in shards]
    by_rows = embedding[0].shape[1] == dim  # Llama 3 splits the vocabulary, Llama 1/2 the width
    tensors["model.embed_tokens.weight"] = torch.cat(embedding, dim=0 if by_rows else 1)
    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target / "model.safetensors"))
    vocab = tensors["model.embed_tokens.weight"].shape[0]
    hidden = tensors["model.layers.0.mlp.gate_proj.weight"].shape[0]
    tokenizer = _tokenizer(source / "tokenizer.model", target)
    _config(params, vocab, hidden, tokenizer, tensors["lm_head.weight"].dtype).save_pretrained(
        target
    )
    return target


def _params(source: Path) -> dict[str, Any]:
    try:
        params: dict[str, Any] = json.loads((source / "params.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{source}/params.json: {e}") from e
    missing = [k for k in ("dim", "n_layers", "n_heads", "norm_eps") if k not in params]
    if missing:
        raise ModelError(f"{source}/params.json lacks {', '.join(missing)}")
    return params


def _merge(shards: list[dict[str, torch.Tensor]], name: str, split: int | None) -> torch.Tensor:
    import torch

    try:
        parts = [s[name] for s in shards]
    except KeyError:
        raise ModelError(f"the checkpoint has no tensor {name!r}") from None
    if split is None or len(parts) == 1:
        return parts[0]
    return torch.cat(parts, dim=split)


def _tokenizer(model_file: Path, target: Path) -> Any:
    """Saves a Hugging Face tokenizer made from Meta's SentencePiece tokenizer.model."""
    if not model_file.is_file():
        raise ModelError(f"{model_file}: missing (Meta checkpoints ship their tokenizer)")
    if not model_file.read_bytes()[:1] == b"\n":  # a SentencePiece protobuf starts with field 1
        raise ConfigError(
            f"{model_file} is not a SentencePiece model: Llama 3's tiktoken tokenizer is not "
            "converted here; use the Hugging Face release or a GGUF of that model"
        )
    import shutil

    from transformers import LlamaTokenizer

    shutil.copyfile(model_file, target / "tokenizer.model")
    # from_pretrained converts a folder's tokenizer.model (the constructor alone does not, in
    # transformers 5); Meta's generation code starts every prompt with BOS, so this one does too.
    tokenizer = LlamaTokenizer.from_pretrained(target, legacy=False, add_bos_token=True)
    tokenizer.save_pretrained(target)
    return tokenizer


def _config(params: dict[str, Any], vocab: int, hidden: int, tokenizer: Any, dtype: Any) -> Any:
    from transformers import LlamaConfig

    heads = int(params["n_heads"])
    rope: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": float(params.get("rope_theta", 1e4)),
    }
    if params.get("use_scaled_rope"):  # Llama 3.1 and later
        rope |= {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        }
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=int(params["dim"]),
        intermediate_size=hidden,
        num_hidden_layers=int(params["n_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(params.get("n_kv_heads") or heads),
        rms_norm_eps=float(params["norm_eps"]),
        max_position_embeddings=int(params.get("max_seq_len", 4096)),
        rope_parameters=rope,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        dtype=str(dtype).removeprefix("torch."),
        architectures=["LlamaForCausalLM"],
    )

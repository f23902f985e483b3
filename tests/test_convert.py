"""Meta checkpoint conversion is exact: a tiny random Llama saved the way Meta's download ships
(two model-parallel shards, params.json, a real SentencePiece tokenizer.model trained here)
gives the same logits through the converted Hugging Face model as through a forward pass
written directly from Meta's layout (the reference model.py's arithmetic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from privatellm.convert import convert, is_meta_checkpoint

DIM, LAYERS, HEADS, KV_HEADS, HIDDEN, THETA, EPS = 64, 2, 4, 2, 96, 10000.0, 1e-5
CORPUS = (
    "Llama is a family of large language models released by Meta. The first generation was "
    "announced in February 2023. Llama 2 followed in July 2023 and Llama 3 in April 2024. "
    "The llama.cpp project runs these models on ordinary computers without a graphics card. "
    "Quantization makes the weights small enough for a laptop. "
)


def _tokenizer(folder: Path) -> int:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.split(". ") * 20),
        model_prefix=str(folder / "tokenizer"),
        vocab_size=80,
        model_type="bpe",
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    return int(spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).vocab_size())


def _weights(vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    head = DIM // HEADS

    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.08

    weights = {"tok_embeddings.weight": w(vocab, DIM), "norm.weight": 1 + w(DIM)}
    weights["output.weight"] = w(vocab, DIM)
    for n in range(LAYERS):
        p = f"layers.{n}."
        weights |= {
            p + "attention.wq.weight": w(HEADS * head, DIM),
            p + "attention.wk.weight": w(KV_HEADS * head, DIM),
            p + "attention.wv.weight": w(KV_HEADS * head, DIM),
            p + "attention.wo.weight": w(DIM, HEADS * head),
            p + "feed_forward.w1.weight": w(HIDDEN, DIM),
            p + "feed_forward.w2.weight": w(DIM, HIDDEN),
            p + "feed_forward.w3.weight": w(HIDDEN, DIM),
            p + "attention_norm.weight": 1 + w(DIM),
            p + "ffn_norm.weight": 1 + w(DIM),
        }
    return weights


def _shards(
    weights: dict[str, torch.Tensor], embedding_by_rows: bool
) -> list[dict[str, torch.Tensor]]:
    """Splits full weights into two model-parallel shards the way Meta's layers hold them."""
    shards: list[dict[str, torch.Tensor]] = [{}, {}]
    for name, tensor in weights.items():
        if name.endswith(("wo.weight", "w2.weight")):
            parts = tensor.chunk(2, dim=1)  # row-parallel
        elif name == "tok_embeddings.weight":
            parts = tensor.chunk(2, dim=0 if embedding_by_rows else 1)
        elif tensor.dim() == 2:
            parts = tensor.chunk(2, dim=0)  # column-parallel
        else:
            parts = (tensor, tensor)  # norms: a copy in every shard
        for shard, part in zip(shards, parts, strict=True):
            shard[name] = part.clone()
    return shards


def _meta_forward(weights: dict[str, torch.Tensor], tokens: list[int]) -> torch.Tensor:
    """Logits from Meta's layout, computed as Meta's reference model.py computes them."""
    head = DIM // HEADS
    seq = len(tokens)

    def norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight

    freqs = 1.0 / (THETA ** (torch.arange(0, head, 2)[: head // 2].float() / head))
    angles = torch.outer(torch.arange(seq).float(), freqs)
    rotation = torch.polar(torch.ones_like(angles), angles).view(1, seq, 1, head // 2)

    def rotate(x: torch.Tensor) -> torch.Tensor:  # interleaved pairs as complex numbers
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * rotation).flatten(3)

    h = weights["tok_embeddings.weight"][torch.tensor([tokens])]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    for n in range(LAYERS):
        p = f"layers.{n}."
        x = norm(h, weights[p + "attention_norm.weight"])
        q = rotate((x @ weights[p + "attention.wq.weight"].T).view(1, seq, HEADS, head))
        k = rotate((x @ weights[p + "attention.wk.weight"].T).view(1, seq, KV_HEADS, head))
        v = (x @ weights[p + "attention.wv.weight"].T).view(1, seq, KV_HEADS, head)
        k = k.repeat_interleave(HEADS // KV_HEADS, dim=2)
        v = v.repeat_interleave(HEADS // KV_HEADS, dim=2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(head) + mask, dim=-1)
        attention = (scores @ v).transpose(1, 2).reshape(1, seq, -1)
        h = h + attention @ weights[p + "attention.wo.weight"].T
        x = norm(h, weights[p + "ffn_norm.weight"])
        gate = torch.nn.functional.silu(x @ weights[p + "feed_forward.w1.weight"].T)
        up = x @ weights[p + "feed_forward.w3.weight"].T
        h = h + (gate * up) @ weights[p + "feed_forward.w2.weight"].T
    return norm(h, weights["norm.weight"]) @ weights["output.weight"].T


def make_meta_checkpoint(folder: Path, embedding_by_rows: bool = False) -> dict[str, torch.Tensor]:
    """Writes a tiny random Llama as Meta ships one; returns its full weights."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(folder)
    weights = _weights(vocab)
    for n, shard in enumerate(_shards(weights, embedding_by_rows)):
        torch.save(shard, folder / f"consolidated.{n:02d}.pth")
    params = {
        "dim": DIM,
        "n_layers": LAYERS,
        "n_heads": HEADS,
        "n_kv_heads": KV_HEADS,
        "vocab_size": vocab,
        "multiple_of": 32,
        "norm_eps": EPS,
        "rope_theta": THETA,
    }
    (folder / "params.json").write_text(json.dumps(params), encoding="utf-8")
    return weights


@pytest.mark.parametrize("embedding_by_rows", [False, True], ids=["llama2-shards", "llama3-shards"])
def test_converted_model_matches_the_meta_forward_pass(
    tmp_path: Path, embedding_by_rows: bool
) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    meta = tmp_path / "meta"
    weights = make_meta_checkpoint(meta, embedding_by_rows)
    assert is_meta_checkpoint(meta)
    hf = convert(meta, tmp_path / "hf")
    tokenizer = AutoTokenizer.from_pretrained(hf)
    tokens = tokenizer("Llama 2 followed in July 2023.")["input_ids"]
    assert tokens[0] == tokenizer.bos_token_id == 1 and len(tokens) > 5
    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    with torch.no_grad():
        converted = model(torch.tensor([tokens])).logits
        reference = _meta_forward(weights, tokens)
    assert converted.shape == reference.shape
    assert (converted - reference).abs().max().item() < 1e-4


def test_a_wrong_rotary_order_would_be_caught(tmp_path: Path) -> None:
    """The check above is sharp: skipping the q/k permutation breaks it."""
    from transformers import LlamaForCausalLM

    import privatellm.convert as conversion

    meta = tmp_path / "meta"
    weights = make_meta_checkpoint(meta)
    original = conversion.permute_rotary
    conversion.permute_rotary = lambda weight, heads: weight  # type: ignore[assignment]
    try:
        hf = convert(meta, tmp_path / "hf")
    finally:
        conversion.permute_rotary = original
    model = LlamaForCausalLM.from_pretrained(hf, dtype=torch.float32).eval()
    tokens = [1, 5, 9, 14, 20, 3, 7]
    with torch.no_grad():
        difference = (model(torch.tensor([tokens])).logits - _meta_forward(weights, tokens)).abs()
    assert difference.max().item() > 1e-3

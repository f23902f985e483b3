"""Embeddings: the bundled model loads offline; bf16 retrieves exactly what fp32 retrieves; run
without sentence-transformers, it gives sentence-transformers' vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from privatellm.config import EmbeddingSettings
from privatellm.embeddings import (
    Embedder,
    MeanPooledBert,
    SentenceTransformerEmbedder,
    _choose_precision,
    bundled_model_dir,
    cpu_has_native_bf16,
)

CORPUS = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The Great Wall of China was built over many centuries to protect against invasions.",
    "Python is a programming language that emphasises code readability.",
    "Mount Everest is the highest mountain above sea level, on the Nepal-China border.",
    "The mitochondrion is the powerhouse of the cell, producing ATP.",
    "Shakespeare wrote Hamlet, Macbeth and Romeo and Juliet.",
    "The Pacific Ocean is the largest and deepest of Earth's oceans.",
    "长城是中国古代的军事防御工程，绵延数千公里。",
    "熊猫主要生活在中国四川的竹林里，以竹子为食。",
    "Quantization stores model weights with fewer bits to save memory.",
    "Interest rates are set by central banks to control inflation.",
    "The Amazon rainforest produces a large share of the world's oxygen.",
    "A checksum such as MD5 detects corrupted downloads.",
    "Bees communicate the location of flowers through a waggle dance.",
    "The Roman Empire was ruled by emperors from 27 BC.",
]
QUERIES = [
    "When was the Eiffel Tower finished?",
    "How do plants make sugar from light?",
    "highest mountain in the world",
    "哪里可以看到大熊猫？",
    "why does my download need an md5 check",
    "who controls inflation",
    "ancient Chinese wall",
    "cell energy production",
]


def _top3(embedder: Embedder) -> list[list[int]]:
    docs = embedder.embed_batch(CORPUS)
    queries = embedder.embed_batch(QUERIES)
    return [list(np.argsort(-row)[:3]) for row in queries @ docs.T]


def test_bf16_retrieval_matches_fp32() -> None:
    fp32 = SentenceTransformerEmbedder(EmbeddingSettings(precision="fp32"))
    bf16 = SentenceTransformerEmbedder(EmbeddingSettings(precision="bf16"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert _top3(bf16) == _top3(fp32)
    cosine = (fp32.embed_batch(CORPUS) * bf16.embed_batch(CORPUS)).sum(axis=1)
    assert cosine.min() > 0.99


def test_vectors_are_unit_length_float32(real_embedder: Embedder) -> None:
    vectors = real_embedder.embed_batch(["one", "two three"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert real_embedder.name == "all-MiniLM-L6-v2"


def test_precision_is_chosen_from_the_hardware() -> None:
    assert _choose_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert _choose_precision("auto", "cuda") == "fp16"
    assert _choose_precision("fp32", "cpu") == "fp32"


def test_a_directory_that_is_no_model_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from privatellm.errors import ModelError

    with pytest.raises(ModelError, match="not a sentence-transformers model directory"):
        SentenceTransformerEmbedder(EmbeddingSettings(model=str(tmp_path)))


# Longer than the model's 256 tokens (truncated), accents, mixed scripts, nothing at all.
EDGE_CASES = [
    "Running Llama locally with llama.cpp needs a quantized GGUF file. " * 40,
    "本地运行Llama笔记：先下载模型，再转换格式，最后量化。" * 30,
    "Ünïcödé café naïve — émigré façade",
    "x " * 30,  # exactly 32 tokens with [CLS] and [SEP]: a batch with no padding
    "",
]


def _sentence_transformers_reference(precision: Literal["fp32", "bf16"]) -> Any:
    """Returns the bundled model loaded by sentence-transformers as the embedder did before it
    ran the model itself: cast to the precision, batches padded to a multiple of 32 tokens."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(bundled_model_dir()), device="cpu", local_files_only=True)
    model.to({"fp32": torch.float32, "bf16": torch.bfloat16}[precision])
    first: Any = model[0]
    first.processing_kwargs = {**first.processing_kwargs, "text": {"pad_to_multiple_of": 32}}
    return model.eval()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_vectors_equal_sentence_transformers(precision: Literal["fp32", "bf16"]) -> None:
    """The same vectors, so a store built before (or by sentence-transformers) still matches."""
    ours = SentenceTransformerEmbedder(EmbeddingSettings(precision=precision, batch_size=8))
    assert ours.runs_without_sentence_transformers
    reference = _sentence_transformers_reference(precision)
    texts = CORPUS + QUERIES + EDGE_CASES
    expected = reference.encode(texts, batch_size=8, normalize_embeddings=True)
    np.testing.assert_allclose(ours.embed_batch(texts), expected, rtol=0, atol=1e-5)
    for text in [QUERIES[0], QUERIES[3], EDGE_CASES[2]]:  # queries: English, Chinese, accents
        one = reference.encode([text], normalize_embeddings=True)
        np.testing.assert_allclose(ours.embed_query(text), one[0], rtol=0, atol=1e-5)


def test_tokens_are_counted_as_sentence_transformers_tokenizes(real_embedder: Embedder) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_dir()))
    for text in EDGE_CASES + CORPUS[8:10]:
        ids = tokenizer(text, add_special_tokens=False, truncation=False)["input_ids"]
        assert real_embedder.count_tokens(text) == len(ids)


def test_other_sentence_transformers_models_are_left_to_sentence_transformers(
    tmp_path: Path,
) -> None:
    bundled = bundled_model_dir()
    assert MeanPooledBert.fits(bundled)
    for item in bundled.iterdir():
        (tmp_path / item.name).symlink_to(item)
    (tmp_path / "1_Pooling").unlink()
    (tmp_path / "1_Pooling").mkdir()
    pooling = json.loads((bundled / "1_Pooling" / "config.json").read_text())
    pooling.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    assert not MeanPooledBert.fits(tmp_path)
    embedder = SentenceTransformerEmbedder(EmbeddingSettings(model=str(tmp_path)))
    assert not embedder.runs_without_sentence_transformers
    assert embedder.embed_batch(["one"]).shape == (1, 384)

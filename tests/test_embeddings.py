"""Embeddings: the bundled model loads offline; bf16 retrieves exactly what fp32 retrieves."""

from __future__ import annotations

import numpy as np
import pytest

from privatellm.config import EmbeddingSettings
from privatellm.embeddings import (
    Embedder,
    SentenceTransformerEmbedder,
    _choose_precision,
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

"""RAM and speed of llama.cpp for the catalog's chat models, measured without downloading them.

    python benchmarks/model_sizes.py [--shapes llama-3.2-1b,qwen2.5-7b] [--quick] [--rounds 2]

llama.cpp's speed and memory depend on a model's shapes and its quantization, not on the values
of its weights. So each catalog chat model is rebuilt here as a GGUF file with the model's exact
shapes (from its config.json, table below), its real vocabulary size and the tensor types that
llama.cpp's Q4_K_M recipe gives each tensor, filled with random blocks instead of trained
weights. Its tokenizer is the bundled SmolLM2's, padded with unused tokens to the real vocabulary
size (as convert_hf_to_gguf.py pads Qwen's), so the embedding and output matrices have their real
size. Each file is written to a temp dir, measured in a child process of its own (so one model's
memory does not inflate the next's) and deleted. The bundled SmolLM2-135M Q4_1 is measured the
same way in the same run, as the baseline the ratios are against.

A child loads the file with privatellm's llama.cpp options (engine.context_tokens 2048,
engine.threads 1; verbose, for the buffer sizes in llama.cpp's load log), reads a 256-token
prompt and decodes 64 tokens greedily, `--rounds` times; it reports RSS growth over the process
before loading (after load, after the rounds, peak; mapped file pages and private memory apart)
and the best round's prompt and decode tokens/s (other processes on a shared machine only ever
slow a round down). The files were just written, so loading reads them from the page cache.
llama.cpp copies Q4_K matrices into a CPU-friendly layout at load ("repacked"); their mapped
pages, read once, still count in RSS, so "RSS - repacked" is the memory the model keeps using.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from gguf import (
    GGML_QUANT_SIZES,
    GGUFReader,
    GGUFValueType,
    GGUFWriter,
    LlamaFileType,
    TokenType,
)
from gguf import GGMLQuantizationType as QType

from privatellm.catalog import catalog_entry
from privatellm.config import BUNDLED_LLM, EngineSettings
from privatellm.engines.llamacpp import llama_options, resolve_gguf

PROMPT_TOKENS = 256
DECODE_TOKENS = 64
MAX_WRITE_SECONDS = 300  # a shape whose file takes longer to write ends the list
MB = 1e6
GB = 1e9
PASSAGE = (
    "The quarterly report lists revenue, costs and the outlook for each region, and the notes "
    "explain how the figures were audited and which accounting rules changed during the year. "
)


@dataclass(frozen=True)
class Shape:
    """A chat model's architecture, as its config.json on the Hugging Face Hub gives it."""

    name: str  # the catalog entry's name
    arch: str  # GGUF architecture: llama or qwen2 (which adds q/k/v biases)
    hidden: int  # hidden_size
    layers: int  # num_hidden_layers
    heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    ffn: int  # intermediate_size
    vocab: int  # vocab_size: rows of the embedding and output matrices
    output: bool  # the catalog's file has an output matrix; without one the embedding serves
    rope_theta: float
    rms_eps: float
    context: int  # max_position_embeddings

    @property
    def head_dim(self) -> int:
        """Returns the size of one attention head."""
        return self.hidden // self.heads


# From the config.json files of meta-llama/Llama-3.2-1B-Instruct, Qwen/Qwen2.5-1.5B-Instruct,
# meta-llama/Llama-3.2-3B-Instruct, Qwen/Qwen2.5-3B-Instruct, Qwen/Qwen2.5-7B-Instruct and
# meta-llama/Llama-3.1-8B-Instruct, smallest first. `output` is not tie_word_embeddings: Qwen's
# own GGUF files of the 1.5B and 3B (the catalog's) carry an output matrix although their config
# ties it; with it the computed file sizes match the hub's to 0.01 GB, without it they were
# 0.14 and 0.18 GB short (the missing matrix at Q4_K).
SHAPES: tuple[Shape, ...] = (
    Shape("llama-3.2-1b", "llama", 2048, 16, 32, 8, 8192, 128256, False, 500000.0, 1e-5, 131072),
    Shape("qwen2.5-1.5b", "qwen2", 1536, 28, 12, 2, 8960, 151936, True, 1000000.0, 1e-6, 32768),
    Shape("llama-3.2-3b", "llama", 3072, 28, 24, 8, 8192, 128256, False, 500000.0, 1e-5, 131072),
    Shape("qwen2.5-3b", "qwen2", 2048, 36, 16, 2, 11008, 151936, True, 1000000.0, 1e-6, 32768),
    Shape("qwen2.5-7b", "qwen2", 3584, 28, 28, 4, 18944, 152064, True, 1000000.0, 1e-6, 32768),
    Shape("llama-3.1-8b", "llama", 4096, 32, 32, 8, 14336, 128256, True, 500000.0, 1e-5, 131072),
)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a GGUF file: its name, shape (rows, row length) and type."""

    name: str
    shape: tuple[int, ...]
    qtype: QType

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """Returns the shape of the tensor's bytes: each row as whole quantization blocks."""
        if self.qtype == QType.F32:
            return self.shape
        block, size = GGML_QUANT_SIZES[self.qtype]
        return (*self.shape[:-1], self.shape[-1] // block * size)

    @property
    def nbytes(self) -> int:
        """Returns the tensor's size in the file."""
        itemsize = 4 if self.qtype == QType.F32 else 1
        return int(np.prod(self.byte_shape)) * itemsize


def use_more_bits(layer: int, layers: int) -> bool:
    """Returns whether Q4_K_M gives this layer's attn_v and ffn_down 6 bits instead of 4."""
    # llama.cpp src/llama-quant.cpp, llama_tensor_get_type_impl: the first and last eighth of
    # the layers, and every third layer between them.
    return layer < layers // 8 or layer >= 7 * layers // 8 or (layer - layers // 8) % 3 == 2


def tensor_plan(shape: Shape) -> list[TensorSpec]:
    """Returns the tensors of the shape's Q4_K_M GGUF file, in file order."""
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim
    # Q4_K_M: the output matrix (or the embedding, where it serves as one) is Q6_K; attn_v and
    # ffn_down are Q6_K in the layers use_more_bits picks; every other matrix is Q4_K.
    embd_type = QType.Q4_K if shape.output else QType.Q6_K
    specs = [TensorSpec("token_embd.weight", (shape.vocab, h), embd_type)]
    if shape.arch == "llama":  # Llama 3.1 / 3.2 files carry llama3 rope scaling factors
        specs.append(TensorSpec("rope_freqs.weight", (shape.head_dim // 2,), QType.F32))
    for i in range(shape.layers):
        wide = QType.Q6_K if use_more_bits(i, shape.layers) else QType.Q4_K
        specs += [
            TensorSpec(f"blk.{i}.attn_norm.weight", (h,), QType.F32),
            TensorSpec(f"blk.{i}.attn_q.weight", (h, h), QType.Q4_K),
            TensorSpec(f"blk.{i}.attn_k.weight", (kv, h), QType.Q4_K),
            TensorSpec(f"blk.{i}.attn_v.weight", (kv, h), wide),
            TensorSpec(f"blk.{i}.attn_output.weight", (h, h), QType.Q4_K),
            TensorSpec(f"blk.{i}.ffn_norm.weight", (h,), QType.F32),
            TensorSpec(f"blk.{i}.ffn_gate.weight", (shape.ffn, h), QType.Q4_K),
            TensorSpec(f"blk.{i}.ffn_up.weight", (shape.ffn, h), QType.Q4_K),
            TensorSpec(f"blk.{i}.ffn_down.weight", (h, shape.ffn), wide),
        ]
        if shape.arch == "qwen2":
            specs += [
                TensorSpec(f"blk.{i}.attn_{p}.bias", (n,), QType.F32)
                for p, n in (("q", h), ("k", kv), ("v", kv))
            ]
    specs.append(TensorSpec("output_norm.weight", (h,), QType.F32))
    if shape.output:
        specs.append(TensorSpec("output.weight", (shape.vocab, h), QType.Q6_K))
    return specs


def block_pool(qtype: QType, rng: np.random.Generator) -> npt.NDArray[np.uint8]:
    """Returns 64k random quantization blocks of qtype with sane scales, one block per row."""
    _, size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(65536, size), dtype=np.uint8)

    def f16(value: float) -> npt.NDArray[np.uint8]:
        return np.array([value], dtype=np.float16).view(np.uint8)

    # Random bytes in the f16 scales would give NaN, infinities and subnormals, which can run
    # slower than real weights; these scales keep every weight under 0.1, as in trained models.
    if qtype == QType.Q4_K:  # d, dmin, 12 bytes of 6-bit scales, 128 bytes of nibbles
        blocks[:, 0:2] = f16(1e-4)
        blocks[:, 2:4] = f16(1e-4)
    elif qtype == QType.Q6_K:  # 128 + 64 bytes of 6-bit values, 16 int8 scales, d
        blocks[:, 192:208] = 1
        blocks[:, 208:210] = f16(1e-3)
    return blocks


def tensor_data(spec: TensorSpec, pools: dict[QType, npt.NDArray[np.uint8]]) -> npt.NDArray[Any]:
    """Returns the bytes of one tensor: ones for norms and rope factors, zeros for biases, the
    pool's blocks repeated for matrices."""
    if spec.qtype == QType.F32:
        fill = 0.0 if spec.name.endswith(".bias") else 1.0
        return np.full(spec.shape, fill, dtype=np.float32)
    pool = pools[spec.qtype]
    count = spec.nbytes // pool.shape[1]
    return np.resize(pool, (count, pool.shape[1])).reshape(spec.byte_shape)


def copy_tokenizer(writer: GGUFWriter, source: Path, vocab: int) -> None:
    """Copies the tokenizer.ggml.* keys of source, its token list padded with unused tokens to
    vocab entries."""
    for key, field in GGUFReader(source).fields.items():
        if not key.startswith("tokenizer.ggml."):
            continue
        value, kind = field.contents(), field.types[0]
        sub = field.types[-1] if kind == GGUFValueType.ARRAY else None
        if key == "tokenizer.ggml.tokens":
            value += [f"[PAD{i}]" for i in range(len(value), vocab)]
        elif key == "tokenizer.ggml.token_type":
            value += [int(TokenType.UNUSED)] * (vocab - len(value))
        writer.add_key_value(key, value, kind, sub)


def write_gguf(shape: Shape, path: Path, tokenizer: Path) -> None:
    """Writes the shape's synthetic Q4_K_M GGUF file to path, one tensor at a time."""
    writer = GGUFWriter(path, shape.arch)
    writer.add_name(f"synthetic {shape.name}")
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(shape.vocab)
    writer.add_file_type(LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_quantization_version(2)
    copy_tokenizer(writer, tokenizer, shape.vocab)
    specs = tensor_plan(shape)
    for spec in specs:
        dtype = np.dtype(np.float32 if spec.qtype == QType.F32 else np.uint8)
        raw = None if spec.qtype == QType.F32 else spec.qtype
        writer.add_tensor_info(spec.name, spec.byte_shape, dtype, spec.nbytes, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    pools = {q: block_pool(q, rng) for q in (QType.Q4_K, QType.Q6_K)}
    for spec in specs:
        writer.write_tensor_data(tensor_data(spec, pools))
    writer.close()


def measure(path: Path, rounds: int) -> dict[str, Any]:
    """Returns load time, RSS growth and the best round's tokens/s of the GGUF file at path."""
    import psutil
    from llama_cpp import Llama

    process = psutil.Process()
    before = process.memory_info()
    options = llama_options(EngineSettings.model_validate({"context_tokens": 2048, "threads": 1}))
    options["verbose"] = True  # llama.cpp's load log gives the buffer sizes (buffer_sizes)
    started = time.perf_counter()
    llm = Llama(model_path=str(path), **options)
    load_s = time.perf_counter() - started
    after_load = process.memory_info()
    text = PASSAGE * (PROMPT_TOKENS // 20)
    prompt = llm.tokenize(text.encode("utf-8"), add_bos=False)[:PROMPT_TOKENS]
    assert len(prompt) == PROMPT_TOKENS, "the passage is too short for the prompt"
    timings = [timed_round(llm, prompt) for _ in range(rounds)]
    memory = process.memory_info()
    llm.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {
        "file_gb": path.stat().st_size / GB,
        "load_s": load_s,
        "rss_load_mb": (after_load.rss - before.rss) / MB,
        "rss_run_mb": (memory.rss - before.rss) / MB,
        "mapped_mb": (memory.shared - before.shared) / MB,  # file-backed: the mmap'd weights
        "private_mb": (memory.rss - memory.shared - before.rss + before.shared) / MB,
        "peak_mb": (peak - before.rss) / MB,
        "first_prompt_s": timings[0][0],
        "prompt_tok_s": PROMPT_TOKENS / min(t[0] for t in timings),
        "decode_tok_s": DECODE_TOKENS / min(t[1] for t in timings),
    }


def timed_round(llm: Any, prompt: list[int]) -> tuple[float, float]:
    """Returns the seconds llm takes to read the prompt and to decode DECODE_TOKENS greedily."""
    llm.reset()  # forget the previous round: the prompt is read again, not reused from cache
    started = time.perf_counter()
    llm.eval(prompt)
    read = time.perf_counter()
    # Token by token, EOS or not: random weights may well pick EOS, and a chat would stop there.
    for _ in range(DECODE_TOKENS):
        llm.eval([llm.sample(temp=0.0)])
    return read - started, time.perf_counter() - read


def measure_in_child(path: Path, rounds: int) -> dict[str, Any]:
    """Returns measure(path) as run in a fresh Python process."""
    command = [sys.executable, __file__, "--measure", str(path), "--rounds", str(rounds)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measuring {path.name} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, **buffer_sizes(done.stderr)}


def buffer_sizes(log: str) -> dict[str, float]:
    """Returns the MB of the buffers llama.cpp's load log reports: weights repacked for the CPU,
    KV cache, compute."""
    # Q4_K matrices are copied at load into an interleaved layout (CPU_REPACK): their mapped
    # pages stay resident after being read once, but are clean file pages the kernel drops first.
    found = {"repack_mb": r"CPU_REPACK model buffer size", "kv_mb": r"CPU KV buffer size"}
    found["compute_mb"] = r"CPU compute buffer size"
    sizes = {}
    for key, label in found.items():
        match = re.search(label + r" =\s*([\d.]+) MiB", log)
        sizes[key] = float(match.group(1)) * 2**20 / MB if match else 0.0
    return sizes


def synthetic_rows(shapes: list[Shape], rounds: int, tokenizer: Path) -> Iterator[dict[str, Any]]:
    """Yields one measured row per shape, writing and deleting each shape's file in turn."""
    with tempfile.TemporaryDirectory(prefix="model-sizes-") as folder:
        for shape in shapes:
            size = sum(s.nbytes for s in tensor_plan(shape))
            free = shutil.disk_usage(folder).free
            if free < size + GB:
                print(f"{shape.name}: skipped, {free / GB:.1f} GB free for {size / GB:.1f} GB")
                return
            path = Path(folder) / f"{shape.name}.gguf"
            started = time.perf_counter()
            write_gguf(shape, path, tokenizer)
            write_s = time.perf_counter() - started
            row = {"model": shape.name, "write_s": write_s, **measure_in_child(path, rounds)}
            path.unlink()
            yield row
            if write_s > MAX_WRITE_SECONDS:
                print(f"{shape.name}: writing took {write_s:.0f} s; larger shapes skipped")
                return


def print_table(rows: list[dict[str, Any]]) -> None:
    """Prints the rows as a Markdown table, with ratios against the first row."""
    base = rows[0]
    print(
        "| model | file GB | hub GB | load s | RSS load MB | RSS run MB | repacked MB | KV MB "
        "| RSS - repacked MB | catalog RAM GB | prompt tok/s | decode tok/s | decode vs base "
        "| RSS vs base |"
    )
    print("| --- |" + " ---: |" * 13)
    for row in rows:
        entry = catalog_entry(row["model"])
        catalog = (f"{entry.size_gb:.2f}", f"{entry.ram_gb:.1f}") if entry else ("", "")
        cells = [
            row["model"],
            f"{row['file_gb']:.2f}",
            catalog[0],
            f"{row['load_s']:.2f}",
            f"{row['rss_load_mb']:,.0f}",
            f"{row['rss_run_mb']:,.0f}",
            f"{row['repack_mb']:,.0f}",
            f"{row['kv_mb']:,.0f}",
            f"{row['rss_run_mb'] - row['repack_mb']:,.0f}",
            catalog[1],
            f"{row['prompt_tok_s']:.1f}",
            f"{row['decode_tok_s']:.1f}",
            f"{row['decode_tok_s'] / base['decode_tok_s']:.3f}x",
            f"{row['rss_run_mb'] / base['rss_run_mb']:.1f}x",
        ]
        print("| " + " | ".join(cells) + " |")


def machine() -> str:
    """Returns the CPU model, core count and SIMD flags that matter to llama.cpp."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in info.splitlines():  # the first processor's lines: every core reads the same
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    model = f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family')}"
    model += f" model {fields.get('model')})"
    flags = fields.get("flags", "").split()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8")
    shown = [f for f in wanted if f in flags]
    cores = info.count("processor\t:")
    return f"{model}, {cores} cores, flags: {' '.join(shown) or 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [s.name for s in SHAPES]
    parser.add_argument("--shapes", default=",".join(names), help=f"of {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="the smallest shape only")
    parser.add_argument("--rounds", type=int, default=2, help="prompt + decode rounds per model")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.rounds)))
        return
    wanted = [names[0]] if args.quick else args.shapes.split(",")
    unknown = set(wanted) - set(names)
    if unknown:
        parser.error(f"unknown shapes: {', '.join(sorted(unknown))}")
    shapes = [s for s in SHAPES if s.name in wanted]
    print(f"machine: {machine()}")
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    bundled = resolve_gguf(BUNDLED_LLM)
    rows = [{"model": "SmolLM2-135M Q4_1 (base)", **measure_in_child(bundled, args.rounds)}]
    for row in synthetic_rows(shapes, args.rounds, bundled):
        rows.append(row)
        print(json.dumps(row))
    print(f"load average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print_table(rows)


if __name__ == "__main__":
    main()

"""Engines side by side on the bundled model, one run, the same prompt: load time, time to first
token, decode tokens/s, for llama.cpp (Q4_1 GGUF) and torch fp32 / bf16 / int8 (the same GGUF,
dequantized by transformers). Ratios are against llama.cpp.

    python benchmarks/engines.py [--repeats 3] [--max-tokens 64]

Each engine runs in its own child process (so one's memory does not inflate the next's), one
after the other, with the same threads setting.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

from privatellm.config import EngineSettings
from privatellm.engines import Sampling, build_engine

ENGINES: dict[str, dict[str, str]] = {
    "llamacpp Q4_1": {"kind": "llamacpp"},
    "torch fp32": {"kind": "torch", "dtype": "fp32", "device": "cpu"},
    "torch bf16": {"kind": "torch", "dtype": "bf16", "device": "cpu"},
    "torch int8": {"kind": "torch", "dtype": "fp32", "device": "cpu", "quantize": "int8"},
}
PASSAGE = (
    "The llama.cpp project, started by Georgi Gerganov in March 2023, reimplemented Llama "
    "inference in plain C and C++ so that it runs on ordinary CPUs. In August 2023 it introduced "
    "the GGUF file format, which stores the weights, the tokenizer and the chat template in a "
    "single file. Quantization makes the models small enough for a laptop: a 4-bit quantized "
    "model needs roughly a quarter of the memory of the 16-bit original. "
)
PROMPT = PASSAGE * 3 + "\n\nQuestion: who started llama.cpp, and when? Answer in detail."


def measure(name: str, repeats: int, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    engine = build_engine(EngineSettings(**ENGINES[name]))  # type: ignore[arg-type]
    load = time.perf_counter() - started
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
    first_token, decode = [], []
    for n in range(repeats):
        # a different opening each time: llama.cpp would otherwise reuse the cached prompt
        messages = [{"role": "user", "content": f"Request {n + 1}. {PROMPT}"}]
        begun = time.perf_counter()
        stamps, text = [], ""
        for piece in engine.stream(messages, sampling):  # type: ignore[arg-type]
            stamps.append(time.perf_counter())
            text += piece
        tokens = engine.count_tokens(text)
        first_token.append(stamps[0] - begun)
        if len(stamps) > 1 and tokens > 1:
            decode.append((tokens - 1) / (stamps[-1] - stamps[0]))
    return {
        "engine": name,
        "load_s": round(load, 2),
        "prompt_tokens": engine.count_tokens(PROMPT),
        "ttft_s": round(statistics.median(first_token), 3),
        "decode_tok_s": round(statistics.median(decode), 1) if decode else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--one", choices=list(ENGINES), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.repeats, args.max_tokens)))
        return
    rows = []
    for name in ENGINES:
        cmd = [sys.executable, __file__, "--one", name, "--repeats", str(args.repeats)]
        cmd += ["--max-tokens", str(args.max_tokens)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]
    for row in rows:
        row["ttft_vs_llamacpp"] = round(row["ttft_s"] / base["ttft_s"], 2)
        if row["decode_tok_s"] and base["decode_tok_s"]:
            row["decode_vs_llamacpp"] = round(row["decode_tok_s"] / base["decode_tok_s"], 2)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps({"machine": machine, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

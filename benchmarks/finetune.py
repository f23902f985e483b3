"""LoRA fine-tuning cost on the bundled SmolLM2-135M, and what an adapter costs at inference.

Training: optimizer steps over the training set (default: a chat JSONL such as the one
scripts/build_cited_set.py writes), bf16 against fp32, each in its own child process so that
peak memory is its own: tokens/s, seconds per step, peak RSS, and the time one epoch of the whole
file would take. Inference in llama.cpp: the bundled Q4_1 GGUF alone against the same with a
LoRA adapter GGUF beside it (engine.lora): prompt and decode tokens/s. A merged model has the
base's shapes and quantization, so it costs what the base alone does.

    python benchmarks/finetune.py DATA.jsonl ADAPTER_FOLDER [--steps 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from privatellm.config import EngineSettings
from privatellm.engines import Sampling, build_engine
from privatellm.finetunedata import load_records, tokenize
from privatellm.finetuning import Progress, TrainOptions, load_for_training, train

BASE = "bundled:SmolLM2-135M-Instruct"


class _Enough(Exception):
    """Raised from the progress callback to end a measured run early."""


def measure_training(data: Path, dtype: str, steps: int) -> dict[str, Any]:
    """Returns tokens/s and peak memory of `steps` optimizer steps in dtype (child process)."""
    records = load_records(data)
    options = TrainOptions(epochs=1, dtype=dtype, save_every=10**6, eval_fraction=0)  # type: ignore[arg-type]
    per_step = options.batch_size * options.grad_accum
    seen: list[Progress] = []

    def stop_after(progress: Progress) -> None:
        seen.append(progress)
        if progress.step >= steps:
            raise _Enough

    with tempfile.TemporaryDirectory() as out, contextlib.suppress(_Enough):
        train(
            BASE,
            records[: per_step * (steps + 1)],
            Path(out) / "run",
            options,
            False,
            stop_after,
        )
    speed = seen[-1].tokens_per_second  # over all steps, the first (warm-up) included
    _, tokenizer, _ = load_for_training(BASE, TrainOptions(dtype="fp32", device="cpu"))
    tokens = sum(len(tokenize(r, tokenizer, 4096).input_ids) for r in records)
    return {
        "dtype": dtype,
        "tokens_per_second": round(speed, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "records": len(records),
        "epoch_tokens": tokens,
        "epoch_minutes": round(tokens / speed / 60, 1),
    }


def measure_inference(lora: str, repeats: int) -> dict[str, Any]:
    """Returns prompt and decode tokens/s of llama.cpp with and without the adapter."""
    engine = build_engine(EngineSettings.model_validate({"kind": "llamacpp", "lora": lora}))
    prompt = "Answer from the passage. " + "The bridge opened in 1932 after four years. " * 40
    sampling = Sampling(max_tokens=48, temperature=0.0)
    reads, decodes = [], []
    for n in range(repeats):
        messages = [{"role": "user", "content": f"Request {n}. {prompt}"}]
        started = time.perf_counter()
        stamps = [time.perf_counter() for _ in engine.stream(messages, sampling)]  # type: ignore[arg-type]
        reads.append(engine.count_tokens(messages[0]["content"]) / (stamps[0] - started))
        decodes.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
    return {
        "adapter": bool(lora),
        "prompt_tokens_per_second": round(sorted(reads)[len(reads) // 2], 1),
        "decode_pieces_per_second": round(sorted(decodes)[len(decodes) // 2], 1),
    }


def child(kind: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?")
    parser.add_argument("adapter", nargs="?")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "train":
            result = measure_training(Path(rest[0]), rest[1], int(rest[2]))
        else:
            result = measure_inference(rest[0] if rest else "", int(args.repeats))
        print(json.dumps(result))
        return
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    rows = [child("train", args.data, dtype, str(args.steps)) for dtype in ("fp32", "bf16")]
    for row in rows:
        print(json.dumps(row))
    ratio = rows[1]["tokens_per_second"] / rows[0]["tokens_per_second"]
    print(f"training bf16 / fp32 tokens/s: {ratio:.2f}x")
    plain = child("infer", "--repeats", str(args.repeats))
    tuned = child("infer", args.adapter, "--repeats", str(args.repeats))
    for row in (plain, tuned):
        print(json.dumps(row))
    for key in ("prompt_tokens_per_second", "decode_pieces_per_second"):
        print(f"llama.cpp {key} with adapter / without: {tuned[key] / plain[key]:.2f}x")


if __name__ == "__main__":
    main()

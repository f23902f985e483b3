"""LoRA fine-tuning on the torch engine's models: records in, a PEFT adapter folder out.

The loop is ours rather than transformers' Trainer: Trainer writes a checkpoint in place (a kill
in the middle of a save leaves a folder that `resume` then picks and fails on) and prints its own
logs and bars; here a checkpoint is written to a temporary folder and renamed, so the newest
checkpoint folder is always whole, and what is printed is privatellm's. PEFT does the LoRA
layers, transformers the model and the learning-rate schedule.

The run in an adapter folder:
    adapter_config.json, adapter_model.safetensors   the adapter (PEFT), when finished
    training.json                                    what it was trained on, losses, timing
    loss.png                                         the loss curve (train and held-out)
    checkpoints/step-000050/                         adapter + optimizer state every N steps
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from privatellm.errors import ConfigError, ModelError
from privatellm.finetunedata import IGNORE, Example, Record, fingerprint, tokenize

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHECKPOINTS = "checkpoints"
SUMMARY = "training.json"
CURVE = "loss.png"
STATE = "trainer_state.pt"
KEEP_CHECKPOINTS = 2


@dataclass(frozen=True)
class TrainOptions:
    """How to train; a resumed run must use the same ones (they shape the data order)."""

    epochs: int = 2
    lr: float = 2e-4
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    batch_size: int = 4  # examples per forward pass
    grad_accum: int = 2  # forward passes per optimizer step
    max_tokens: int = 1024  # longest record, template included
    eval_fraction: float = 0.05  # records held out for the eval loss
    save_every: int = 50  # optimizer steps between checkpoints (and eval losses)
    seed: int = 0
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    qlora: bool = False  # 4-bit base (bitsandbytes): CUDA only


@dataclass
class Progress:
    """Where a run is, handed to the caller after every optimizer step."""

    step: int
    total: int
    loss: float
    eval_loss: float | None
    tokens_per_second: float


@dataclass
class RunState:
    """What a checkpoint holds besides the adapter weights."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)


def train(
    base: str,
    records: Sequence[Record],
    out: Path,
    options: TrainOptions,
    resume: bool = False,
    on_step: Callable[[Progress], object] = lambda _p: None,
) -> dict[str, Any]:
    """Trains a LoRA adapter of base on records into the folder out and returns the run's
    summary (also written to out/training.json). resume continues from out's newest
    checkpoint; a run stopped by Ctrl-C or a crash keeps its checkpoints for that."""
    import torch

    data = fingerprint(records)
    checkpoint = _prepare(out, resume, base, options, data)
    model, tokenizer, device = load_for_training(base, options)
    examples = [tokenize(r, tokenizer, options.max_tokens) for r in records]
    train_set, held_out = split(examples, options)
    peft_model = _with_lora(model, options)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=options.lr, weight_decay=0.0
    )
    total = options.epochs * steps_per_epoch(len(train_set), options)
    scheduler = _schedule(optimizer, total)
    state = RunState()
    if checkpoint is not None:
        state = _restore(checkpoint, peft_model, optimizer, scheduler)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    run = _Run(peft_model, optimizer, scheduler, device, pad, options, base, data)
    run.fit(train_set, held_out, state, total, out, on_step)
    peft_model.save_pretrained(out, save_embedding_layers=False)
    summary = run.summary(state, len(train_set), len(held_out))
    _write_json(out / SUMMARY, summary)
    write_curve(state, out / CURVE)
    return summary


def steps_per_epoch(examples: int, options: TrainOptions) -> int:
    """Returns the optimizer steps one pass over examples takes."""
    return max(1, math.ceil(examples / (options.batch_size * options.grad_accum)))


def split(
    examples: Sequence[Example], options: TrainOptions
) -> tuple[list[Example], list[Example]]:
    """Returns (train, held out): a seeded eval_fraction of the examples held out (none when
    there are fewer than 10)."""
    order = list(range(len(examples)))
    random.Random(options.seed).shuffle(order)
    n_eval = round(len(examples) * options.eval_fraction) if len(examples) >= 10 else 0
    n_eval = max(1, n_eval) if options.eval_fraction > 0 and len(examples) >= 10 else 0
    held = set(order[:n_eval])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


def load_for_training(base: str, options: TrainOptions) -> tuple[Any, Any, str]:
    """Returns (model, tokenizer, device) for base as the torch engine reads it (a GGUF file is
    dequantized, a Meta checkpoint converted once), in the precision options ask for."""
    from privatellm.embeddings import cpu_has_native_bf16, keep_torchao_unloaded

    keep_torchao_unloaded()  # peft and transformers would import it (and its noise) for nothing
    import torch

    from privatellm.engines.torch import load_pretrained, resolve_source

    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but torch sees no CUDA device")
    native = device == "cuda" or cpu_has_native_bf16()
    bf16 = options.dtype == "bf16" or (options.dtype == "auto" and native)
    folder, gguf = resolve_source(base)
    if options.qlora:
        tokenizer, model = _load_4bit(folder, gguf, device)
    else:
        tokenizer, model = load_pretrained(folder, gguf, torch.bfloat16 if bf16 else torch.float32)
        model = model.to(device)
    return model, tokenizer, device


def _load_4bit(folder: Path, gguf: str | None, device: str) -> tuple[Any, Any]:
    """Returns (tokenizer, model) with the model's linear layers in 4 bits (QLoRA), on CUDA."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra: dict[str, Any] = ({"gguf_file": gguf} if gguf else {}) | _qlora(device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
        model = AutoModelForCausalLM.from_pretrained(folder, **extra)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {folder}: {e}".splitlines()[0]) from e
    return tokenizer, model


def _qlora(device: str) -> dict[str, Any]:
    """Returns from_pretrained's arguments for a 4-bit base (QLoRA), which needs CUDA."""
    if device != "cuda":
        raise ConfigError(
            "--qlora (a 4-bit base, bitsandbytes) needs a CUDA GPU; on the CPU, fine-tune "
            "without it (LoRA on the full-precision base)"
        )
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("--qlora needs bitsandbytes: pip install bitsandbytes") from None
    quantization = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    return {"quantization_config": quantization, "device_map": {"": 0}}


def _with_lora(model: Any, options: TrainOptions) -> Any:
    """Returns model wrapped with trainable LoRA layers on every attention and MLP projection."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if options.qlora:
        model = prepare_model_for_kbit_training(model)  # type: ignore[no-untyped-call]
    config = LoraConfig(
        r=options.rank,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(TARGETS),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft (0.21) asks transformers (5.x) a property transformers renamed and warns about
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
        return get_peft_model(model, config)


def _schedule(optimizer: Any, total: int) -> Any:
    """Returns a cosine learning-rate schedule with a short linear warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, min(20, max(1, total // 20)), total)


class _Run:
    """The optimizer steps of one training run, from wherever it resumes."""

    def __init__(
        self,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        device: str,
        pad: int,
        options: TrainOptions,
        base: str,
        data: str,
    ) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.device, self.pad, self.options = device, pad, options
        self.base, self.data = base, data

    def fit(
        self,
        train_set: list[Example],
        held_out: list[Example],
        state: RunState,
        total: int,
        out: Path,
        on_step: Callable[[Progress], object],
    ) -> None:
        """Runs the steps after state.step up to total, checkpointing every save_every."""
        per_epoch = steps_per_epoch(len(train_set), self.options)
        while state.step < total:
            started = time.perf_counter()
            batch = step_examples(train_set, state.step, per_epoch, self.options)
            loss, tokens = self._optimizer_step(batch)
            state.step += 1
            state.tokens += tokens
            state.seconds += time.perf_counter() - started
            state.losses.append((state.step, loss))
            if held_out and (state.step % self.options.save_every == 0 or state.step == total):
                state.eval_losses.append((state.step, self.eval_loss(held_out)))
            if state.step % self.options.save_every == 0 and state.step < total:
                self.checkpoint(state, out)
            eval_loss = state.eval_losses[-1][1] if state.eval_losses else None
            speed = state.tokens / state.seconds if state.seconds else 0.0
            on_step(Progress(state.step, total, loss, eval_loss, speed))

    def _optimizer_step(self, examples: list[Example]) -> tuple[float, int]:
        """Returns (mean loss, tokens read) of one optimizer step over examples."""
        self.model.train()
        size = self.options.batch_size
        parts = [examples[i : i + size] for i in range(0, len(examples), size)]
        answer_tokens = sum(e.answer_tokens for e in examples)
        total_loss, tokens = 0.0, 0
        for part in parts:
            ids, mask, labels = self._tensors(part)
            loss = self._loss_sum(ids, mask, labels) / answer_tokens
            loss.backward()
            total_loss += loss.detach().item()
            tokens += int(mask.sum())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return total_loss, tokens

    def _loss_sum(self, ids: Any, mask: Any, labels: Any) -> Any:
        """Returns the summed cross-entropy over the labelled tokens (each answer token weighs
        the same whichever forward pass it falls in)."""
        import torch

        # The output layer runs on the labelled positions only: answers are a few dozen of a
        # prompt's ~400 tokens, and logits over a 49k vocabulary at every position cost ~20% of
        # the step and most of its memory.
        causal_lm = self.model.get_base_model()  # the LoRA layers sit inside it
        decoder = getattr(causal_lm, causal_lm.base_model_prefix)
        hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H]
        target = labels[:, 1:]  # token t is predicted at position t-1
        keep = target != IGNORE  # [B, T-1]
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep])  # [N, V]
        return torch.nn.functional.cross_entropy(logits.float(), target[keep], reduction="sum")

    def _tensors(self, examples: list[Example]) -> tuple[Any, Any, Any]:
        """Returns (input_ids, attention_mask, labels) padded on the right to the longest."""
        import torch

        width = max(len(e.input_ids) for e in examples)
        ids = [e.input_ids + [self.pad] * (width - len(e.input_ids)) for e in examples]
        labels = [e.labels + [IGNORE] * (width - len(e.labels)) for e in examples]
        mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in examples]
        return tuple(torch.tensor(t, device=self.device) for t in (ids, mask, labels))  # type: ignore[return-value]

    def eval_loss(self, held_out: list[Example]) -> float:
        """Returns the mean loss per answer token on the held-out examples."""
        import torch

        self.model.eval()
        size = self.options.batch_size
        total = 0.0
        with torch.no_grad():
            for i in range(0, len(held_out), size):
                total += float(self._loss_sum(*self._tensors(held_out[i : i + size])))
        return total / max(1, sum(e.answer_tokens for e in held_out))

    def checkpoint(self, state: RunState, out: Path) -> None:
        """Writes the adapter and optimizer state at state.step into a new checkpoint folder
        (whole or not at all), keeping the newest KEEP_CHECKPOINTS."""
        import torch

        root = out / CHECKPOINTS
        final = root / f"step-{state.step:06d}"
        partial = root / f".{final.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        self.model.save_pretrained(partial, save_embedding_layers=False)
        saved = {
            "run": asdict(state),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "options": asdict(self.options),
            "base": self.base,
            "data": self.data,
        }
        torch.save(saved, partial / STATE)
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in checkpoints(out)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        write_curve(state, out / CURVE)

    def summary(self, state: RunState, n_train: int, n_eval: int) -> dict[str, Any]:
        """Returns what training.json records about the finished run."""
        return {
            "base": self.base,
            "data": self.data,
            "options": asdict(self.options),
            "examples": {"train": n_train, "held_out": n_eval},
            "steps": state.step,
            "tokens": state.tokens,
            "seconds": round(state.seconds, 1),
            "tokens_per_second": round(state.tokens / state.seconds, 1) if state.seconds else 0,
            "loss": state.losses[-1][1] if state.losses else None,
            "eval_loss": state.eval_losses[-1][1] if state.eval_losses else None,
            "losses": state.losses,
            "eval_losses": state.eval_losses,
        }


def step_examples(
    examples: Sequence[Example], step: int, per_epoch: int, options: TrainOptions
) -> list[Example]:
    """Returns the examples of optimizer step `step` (0-based): each epoch reads all of them
    once in its own seeded order, so a resumed run reads exactly what it would have."""
    epoch, within = divmod(step, per_epoch)
    order = list(range(len(examples)))
    random.Random(f"{options.seed}:{epoch}").shuffle(order)
    size = options.batch_size * options.grad_accum
    return [examples[i] for i in order[within * size : (within + 1) * size]]


def checkpoints(out: Path) -> list[Path]:
    """Returns out's whole checkpoint folders, oldest first."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE).is_file())


def _prepare(out: Path, resume: bool, base: str, options: TrainOptions, data: str) -> Path | None:
    """Returns the checkpoint to resume from (None: a new run), after checking that out may be
    written and that a resumed run has the same base, options and data."""
    found = checkpoints(out)
    if not resume:
        if found or (out / SUMMARY).exists():
            raise ConfigError(
                f"{out} already holds a training run: --resume continues it, or choose another "
                "--name"
            )
        out.mkdir(parents=True, exist_ok=True)
        return None
    if not found:
        raise ConfigError(f"nothing to resume in {out}: no checkpoint was written yet")
    latest = found[-1]
    import torch

    saved = torch.load(latest / STATE, map_location="cpu", weights_only=False)
    for what, now, then in (
        ("base model", base, saved["base"]),
        ("training data", data, saved["data"]),
        ("options", asdict(options), saved["options"]),
    ):
        if now != then:
            raise ConfigError(f"cannot resume {out}: the {what} differ from the stopped run's")
    return latest


def _restore(checkpoint: Path, model: Any, optimizer: Any, scheduler: Any) -> RunState:
    """Returns the run state of checkpoint, with its adapter weights, optimizer and schedule
    loaded into model, optimizer and scheduler."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    saved = torch.load(checkpoint / STATE, map_location="cpu", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"])
    run = saved["run"]
    return RunState(
        run["step"],
        run["tokens"],
        run["seconds"],
        [(int(step), float(loss)) for step, loss in run["losses"]],
        [(int(step), float(loss)) for step, loss in run["eval_losses"]],
    )


def write_curve(state: RunState, path: Path) -> None:
    """Writes the loss curve (train loss per step, held-out loss where measured) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or on a server
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    if state.losses:
        axes.plot(*zip(*state.losses, strict=True), label="train", linewidth=1)
    if state.eval_losses:
        axes.plot(*zip(*state.eval_losses, strict=True), "o-", label="held out")
    axes.set_xlabel("step")
    axes.set_ylabel("loss per answer token")
    axes.legend()
    figure.tight_layout()
    partial = path.with_suffix(".partial.png")
    figure.savefig(partial)
    plt.close(figure)
    partial.replace(path)


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(value, indent=2, ensure_ascii=False), encoding="utf-8")
    partial.replace(path)

"""A Llama-family model run by PyTorch through transformers (engine.kind: torch).

engine.model may name a Hugging Face model folder (safetensors), a GGUF file (transformers
dequantizes it into torch weights), 'bundled:SmolLM2-135M-Instruct' (the bundled GGUF), or a Meta
checkpoint folder (consolidated.*.pth + params.json + tokenizer.model), converted once into a
cache folder (`privatellm models convert` does it ahead of time). CPU by default, CUDA when asked
or available (device auto); fp32 or bf16; optional weight-only int8 (torchao). engine.lora names
a LoRA adapter folder (PEFT files), merged into the weights at load.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from privatellm.config import BUNDLED_LLM, EngineSettings
from privatellm.engines.base import DEFAULT, Message, Sampling
from privatellm.errors import ConfigError, ModelError

# What PeftModel.save_pretrained writes into an adapter folder
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def resolve_source(model: str) -> tuple[Path, str | None]:
    """Returns (folder to load, GGUF file name in it or None) for an engine.model setting."""
    from privatellm.convert import convert, is_meta_checkpoint
    from privatellm.engines.llamacpp import resolve_gguf

    if model == BUNDLED_LLM or model.lower().endswith(".gguf"):
        path = resolve_gguf(model)
        return path.parent, path.name
    path = Path(model).expanduser()
    if is_meta_checkpoint(path):
        target = _conversion_cache() / f"{path.name}-{_fingerprint(path)}"
        if not (target / "config.json").is_file():
            convert(path, target)
        return target, None
    if (path / "config.json").is_file():
        return path, None
    raise ModelError(
        f"{model}: not a GGUF file, a Hugging Face model folder (config.json) or a Meta "
        "checkpoint folder (params.json + consolidated.*.pth)"
    )


def peft_folder(lora: str) -> Path:
    """Returns the adapter folder an engine.lora setting names, once it holds PEFT's files."""
    path = Path(lora).expanduser()
    if path.suffix.lower() == ".gguf":
        raise ModelError(
            f"{lora}: engine.kind torch needs the adapter folder (PEFT files), not a GGUF"
        )
    if not (path / PEFT_CONFIG).is_file():
        raise ModelError(f"{lora}: not a LoRA adapter folder (no {PEFT_CONFIG} in it)")
    return path


def load_pretrained(folder: Path, gguf: str | None, dtype: Any, lora: str = "") -> tuple[Any, Any]:
    """Returns (tokenizer, model) from what resolve_source gave, on the CPU in dtype, with the
    adapter folder lora (PEFT files) merged into the weights when one is named."""
    from privatellm.embeddings import keep_torchao_unloaded

    keep_torchao_unloaded()  # before transformers: only engine.quantize int8 needs torchao
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = peft_folder(lora) if lora else None  # a wrong path fails before the slow load
    quiet_loading()
    extra = {"gguf_file": gguf} if gguf else {}
    source = folder / gguf if gguf else folder
    try:
        # Any: transformers' own annotations are narrower than what these calls accept
        tokenizer: Any = AutoTokenizer.from_pretrained(folder, **extra)
        model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **extra)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load {source}: {e}".splitlines()[0]) from e
    if adapter is not None:
        model = _merged(model, adapter)
    return tokenizer, model


def quiet_loading() -> None:
    """Turns off transformers' progress bars on stderr (privatellm prints its own lines)."""
    import functools

    import transformers
    from tqdm.auto import tqdm
    from transformers import modeling_gguf_pytorch_utils

    transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    # The GGUF dequantizing bar is a bare tqdm that ignores the switch above (transformers 5.24)
    silent = functools.partial(tqdm, disable=True)
    setattr(modeling_gguf_pytorch_utils, "tqdm", silent)  # noqa: B010  # not a public name


def _merged(model: Any, adapter: Path) -> Any:
    """Returns model with the LoRA adapter's product B·A·scale added into each weight it
    targets: inference then costs what the base's does, and int8 quantizes the sum."""
    import warnings

    from peft import PeftModel

    try:
        with warnings.catch_warnings():
            # peft (0.21) asks transformers (5.x) a property that transformers has renamed and
            # warns about: nothing a user of engine.lora can act on
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated")
            wrapped = PeftModel.from_pretrained(model, str(adapter))
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ModelError(f"cannot apply the LoRA adapter {adapter}: {e}".splitlines()[0]) from e
    return wrapped.merge_and_unload()


def _conversion_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "privatellm" / "converted"


def _fingerprint(folder: Path) -> str:
    """Changes when any file of the checkpoint does (name, size, modification time)."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.is_file():
            stat = f.stat()
            h.update(f"{f.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return h.hexdigest()[:12]


def _device(setting: str) -> str:
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("engine.device is cuda, but torch sees no CUDA device")
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _dtype(setting: str, device: str) -> Any:
    import torch

    if setting == "auto":
        from privatellm.embeddings import cpu_has_native_bf16

        native = device == "cuda" or cpu_has_native_bf16()
        return torch.bfloat16 if native else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16}[setting]


def _torchao_int8() -> tuple[Any, Any]:
    """Returns torchao's quantize_ and Int8WeightOnlyConfig, imported without its stderr noise."""
    import logging
    import sys

    if "torchao" in sys.modules and sys.modules["torchao"] is None:
        del sys.modules["torchao"]  # keep_torchao_unloaded's mark: now it is needed
    # torchao logs a "Failed to load" per extension it ships for CUDA or CPython 3.10, and torch
    # a deprecation per torchao enum: none of them concerns weight-only int8 on this machine.
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return quantize_, Int8WeightOnlyConfig


class TorchEngine:
    def __init__(self, settings: EngineSettings) -> None:
        from privatellm.embeddings import keep_torchao_unloaded

        keep_torchao_unloaded()  # imported below only for quantize: int8
        import torch

        folder, gguf = resolve_source(settings.model)
        device = _device(settings.device)
        dtype = _dtype(settings.dtype, device)
        self._tokenizer, model = load_pretrained(folder, gguf, dtype, settings.lora)
        model = model.to(device).eval()
        if settings.quantize == "int8":
            quantize_, int8_weight_only = _torchao_int8()
            quantize_(model, int8_weight_only())
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self._model = model
        self._device = device
        self._settings = settings
        base = Path(gguf).stem if gguf else folder.name
        self.name = f"{base}+{Path(settings.lora).name}" if settings.lora else base
        self.context_tokens = settings.context_tokens

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, messages: Sequence[Message]) -> Any:
        """Returns the token ids of messages in the model's chat template."""
        if self._tokenizer.chat_template:
            ids = self._tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        else:  # a converted Meta base model has no template: plain turns
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
            ids = self._tokenizer(text, return_tensors="pt")["input_ids"]
        return ids.to(self._device)

    def stream(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        # generate() runs in a thread and hands text over through the streamer's queue
        streamer: Any = TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600
        )
        cancelled = threading.Event()
        options = self._options(messages, sampling, streamer, cancelled)
        failed: list[BaseException] = []

        def generate() -> None:
            try:
                self._model.generate(**options)
            except BaseException as e:  # reported to the reader below, not lost in the thread
                failed.append(e)
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:  # a reader that stops early stops the generation too
            cancelled.set()
            worker.join()
        if failed:
            raise ModelError(f"generation failed: {failed[0]}") from failed[0]

    def _options(
        self,
        messages: Sequence[Message],
        sampling: Sampling,
        streamer: Any,
        cancelled: threading.Event,
    ) -> dict[str, Any]:
        """Returns generate()'s arguments: greedy at temperature 0, sampling otherwise."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancelled.is_set()

        chosen = sampling.resolve(self._settings)
        ids = self.prompt_ids(messages)
        options: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": ids.new_ones(ids.shape),
            "max_new_tokens": chosen.max_tokens,
            "do_sample": chosen.temperature > 0,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if chosen.temperature > 0:
            options |= {"temperature": chosen.temperature, "top_p": chosen.top_p}
        if chosen.stop:
            options |= {"stop_strings": list(chosen.stop), "tokenizer": self._tokenizer}
        return options

"""`privatellm finetune`: adapt a model to your documents or house style with LoRA, offline."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from privatellm.finetuning import TrainOptions

if TYPE_CHECKING:
    from tqdm import tqdm

    from privatellm.config import Settings
    from privatellm.finetuning import Progress
    from privatellm.registry import Registry


class _Context(Protocol):
    settings: Settings


F = TypeVar("F", bound=Callable[..., Any])
_D = TrainOptions()  # the defaults, from one place
_PASS = "Examples per forward pass."
_STEP = "Forward passes per optimizer step."
_LONG = "Longest record in tokens, template included."
_SAVE = "Optimizer steps between checkpoints."
_DTYPE = "auto: bf16 where the CPU computes it natively, or on CUDA."


def _default(flag: str, kind: Any, help: str | None = None) -> Callable[[F], F]:
    """Returns a click option whose default is TrainOptions' own."""
    field = flag.removeprefix("--").replace("-", "_")
    return click.option(flag, type=kind, default=getattr(_D, field), show_default=True, help=help)


@click.command("finetune")
@click.argument("data", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--base", default=None, help="Model to adapt (default: engine.model).")
@click.option("--name", default=None, help="Name to register the adapter under.")
@_default("--epochs", click.IntRange(1), "Passes.")
@_default("--lr", click.FloatRange(0, min_open=True))
@_default("--rank", click.IntRange(1), "LoRA rank.")
@click.option("--alpha", type=click.IntRange(1), default=None, help="LoRA alpha (2 x rank).")
@_default("--batch-size", click.IntRange(1), _PASS)
@_default("--grad-accum", click.IntRange(1), _STEP)
@_default("--max-tokens", click.IntRange(16), _LONG)
@_default("--eval-fraction", click.FloatRange(0, 0.5))
@_default("--save-every", click.IntRange(1), _SAVE)
@_default("--seed", int, "Data order and split.")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", help=_DTYPE)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
@click.option("--qlora", is_flag=True, help="4-bit base (bitsandbytes): CUDA only.")
@click.option("--resume", is_flag=True, help="Continue a stopped run from its last checkpoint.")
@click.option("--merge", nargs=2, default=None, metavar="NAME OUT", help="Write NAME merged.")
@click.pass_obj
def finetune(ctx: _Context, /, data: Path | None, **options: Any) -> None:
    """Train a LoRA adapter on DATA and register it as a model (base + adapter).

    DATA is Alpaca JSON/JSONL (instruction, input, output) or chat JSONL (messages). Prompts go
    through the model's chat template; only the answers carry loss. bf16 where the CPU computes
    it natively (or CUDA), fp32 otherwise. A checkpoint every --save-every steps: after Ctrl-C or
    a crash, the same command with --resume continues. The adapter folder holds the PEFT files
    (engine.kind torch), adapter.gguf (llama.cpp), training.json and loss.png.

    --merge NAME OUT writes the registered adapter NAME merged into its base as a Hugging Face
    folder OUT (for engine.kind torch, or for llama.cpp's convert_hf_to_gguf.py).
    """
    from privatellm.registry import Registry

    registry = Registry(ctx.settings.data_dir)
    merge = options.pop("merge")
    if merge:
        _merge(registry, merge[0], Path(merge[1]))
        return
    if data is None:
        raise click.UsageError("give the training data (DATA), or --merge NAME OUT")
    base = _base(ctx.settings, registry, options.pop("base"))
    name = options.pop("name") or f"{data.stem}-lora"
    resume = options.pop("resume")
    _train(registry, data, base, name, resume, _options(options))


def _options(given: dict[str, Any]) -> TrainOptions:
    alpha = given.pop("alpha") or 2 * given["rank"]
    return TrainOptions(alpha=alpha, **given)


def _base(settings: Settings, registry: Registry, base: str | None) -> str:
    """Returns the base model's path (or bundled name) from --base or the configured engine."""
    from privatellm.errors import ConfigError
    from privatellm.registry import resolve_names

    if base is None:
        if settings.engine.kind not in ("llamacpp", "torch"):
            raise ConfigError(
                f"engine.kind {settings.engine.kind} runs no local model: give --base"
            )
        resolved = resolve_names(settings, registry).engine
        if resolved.lora:
            raise ConfigError("engine.model names an adapter: give the model to adapt as --base")
        return resolved.model
    found = registry.find(base) if "/" not in base and not Path(base).exists() else None
    if found is None:
        return base
    if found.role != "chat" or found.kind == "lora":
        raise ConfigError(
            f"{base} is a {found.kind} model: --base takes a chat model (merge an adapter first: "
            "privatellm finetune --merge NAME OUT)"
        )
    return found.path


def _train(
    registry: Registry, data: Path, base: str, name: str, resume: bool, options: TrainOptions
) -> None:
    from privatellm.errors import ConfigError
    from privatellm.finetunedata import load_records
    from privatellm.finetuning import train

    records = load_records(data)  # every record checked before the model is loaded
    if registry.find(name):
        raise ConfigError(f"a model named {name!r} is registered already: choose another --name")
    out = registry.folder(name)
    click.echo(f"fine-tuning {base} on {len(records)} records of {data} -> {name}")
    bar = _Bar()
    try:
        summary = train(base, records, out, options, resume, bar.update)
    except KeyboardInterrupt:
        bar.close()
        click.echo(_stopped(out, data, name), err=True)
        sys.exit(130)
    bar.close()
    _register(registry, name, out, base)
    click.echo(
        f"trained {name}: {summary['steps']} steps, loss {summary['loss']:.3f}"
        + (f" (held out {summary['eval_loss']:.3f})" if summary["eval_loss"] is not None else "")
        + f", {summary['tokens_per_second']:.0f} tokens/s, {summary['seconds']:.0f} s; "
        f"adapter in {out} (use it: privatellm models use {name})"
    )


def _stopped(out: Path, data: Path, name: str) -> str:
    """Returns what to tell after Ctrl-C: which checkpoint is kept and how to go on."""
    from privatellm.finetuning import checkpoints

    kept = checkpoints(out)
    if not kept:
        return "interrupted before the first checkpoint: nothing kept to resume"
    return (
        f"interrupted: checkpoint {kept[-1].name} is kept; continue with: "
        f"privatellm finetune {data} --name {name} --resume"
    )


def _register(registry: Registry, name: str, out: Path, base: str) -> None:
    """Exports the adapter for llama.cpp (Llama-architecture bases) and registers it."""
    from privatellm.errors import ModelError
    from privatellm.lora import base_config, export_gguf
    from privatellm.registry import RegisteredModel

    try:
        export_gguf(out, base_config(base))
    except ModelError as e:  # the torch engine can still run it
        click.echo(f"note: no llama.cpp adapter written: {e}", err=True)
    model = RegisteredModel(name, "chat", "lora", str(out), "finetune", True, extra={"base": base})
    registry.add(model)


def _merge(registry: Registry, name: str, out: Path) -> None:
    from privatellm.errors import ConfigError
    from privatellm.lora import merge

    model = registry.get(name, "chat")
    if model.kind != "lora":
        raise ConfigError(f"{name} is not an adapter (kind {model.kind}): nothing to merge")
    merge(model.base, Path(model.path), out)
    click.echo(f"merged {name} into {model.base}: {out}")


class _Bar:
    """The training progress bar on stderr: steps, loss, held-out loss, tokens per second."""

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None

    def update(self, progress: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None:
            tty = sys.stderr.isatty()
            self._bar = tqdm(
                total=progress.total,
                initial=progress.step - 1,
                desc="finetune",
                unit="step",
                file=sys.stderr,
                mininterval=0.1 if tty else 30,
            )
        shown = {"loss": f"{progress.loss:.3f}", "tok/s": f"{progress.tokens_per_second:.0f}"}
        if progress.eval_loss is not None:
            shown["eval"] = f"{progress.eval_loss:.3f}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

"""`privatellm models ...`: get, register, choose, check and list models.

Offline stays the default: `models pull` is the one command that goes online, and only to the
Hugging Face Hub (or the mirror HF_ENDPOINT names) or to the Meta URL given.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import click

if TYPE_CHECKING:
    from privatellm.config import Settings
    from privatellm.registry import RegisteredModel, Registry


class _Context(Protocol):
    settings: Settings
    config_files: list[Path]
    overrides: dict[str, Any]


def _registry(ctx: _Context) -> Registry:
    from privatellm.registry import Registry

    return Registry(ctx.settings.data_dir)


def _size(n: int | float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


@click.group()
def models() -> None:
    """Get, register, choose, check and list models."""


# -- getting models -------------------------------------------------------------------------------


@models.command("pull")
@click.argument("repo_id", required=False)
@click.option("--file", "pattern", default=None, help="Which file(s) to take, e.g. '*Q4_K_M*'.")
@click.option("--revision", default=None, help="Branch, tag or commit (default: main).")
@click.option("--name", default=None, help="Name to register it under (default: from the file).")
@click.option("--meta-url", default=None, help="Meta's presigned download URL (from its e-mail).")
@click.option("--model", "meta_model", default=None, help="With --meta-url: e.g. llama-2-7b-chat.")
@click.pass_obj
def models_pull(
    ctx: _Context,
    repo_id: str | None,
    pattern: str | None,
    revision: str | None,
    name: str | None,
    meta_url: str | None,
    meta_model: str | None,
) -> None:
    """Download a model and register it: REPO_ID is a Hugging Face repository (owner/name) or a
    name from `privatellm models catalog`.

    A GGUF file is for llama.cpp, a model folder for engine.kind torch, a sentence-transformers
    folder for embeddings; the kind is detected. Every file is checked against the hub's SHA-256.
    Downloads resume where they stopped. HF_TOKEN reads gated repositories (Meta's), HF_ENDPOINT
    names a mirror. With --meta-url and --model: Meta's own download, as its download.sh does it.
    """
    if meta_url:
        if not meta_model:
            raise click.UsageError("--meta-url needs --model, e.g. --model llama-2-7b-chat")
        _pull_meta(ctx, meta_url, meta_model, name)
    elif repo_id:
        _pull_hub(ctx, repo_id, pattern, revision, name)
    else:
        raise click.UsageError("give a repository (owner/name), a catalog name, or --meta-url")


def _pull_hub(
    ctx: _Context, repo_id: str, pattern: str | None, revision: str | None, name: str | None
) -> None:
    from privatellm.catalog import catalog_entry, declare_prompts
    from privatellm.registry import RegisteredModel, check_model_name, detect

    registry = _registry(ctx)
    entry = catalog_entry(repo_id) if "/" not in repo_id else None
    if "/" not in repo_id and entry is None:
        raise click.UsageError(
            f"{repo_id!r} is neither owner/name nor in `privatellm models catalog`"
        )
    from privatellm import hub  # huggingface_hub loads only for a pull

    if entry is not None:
        repo_id, pattern, name = entry.repo_id, pattern or entry.file, name or entry.name
    plan = hub.plan(repo_id, pattern, revision)
    name = check_model_name(name or plan.default_name)
    _check_free(registry, name)
    click.echo(
        f"pulling {plan.repo_id} ({len(plan.files)} files, {_size(plan.size)}) as {name!r}",
        err=True,
    )
    started = time.perf_counter()
    with _resumable():
        path = hub.fetch(plan, registry.folder(name), progress=True)
    role, kind = detect(path)
    if entry is not None and kind == "sentence-transformers":
        declare_prompts(path, entry.prompts)
    languages = (entry.languages if entry else ()) or plan.languages
    source = f"hf:{plan.repo_id}@{plan.commit[:12]}"
    model = RegisteredModel(name, role, kind, str(path), source, True, languages)
    _registered(registry.add(model), time.perf_counter() - started)


def _pull_meta(ctx: _Context, url: str, meta_model: str, name: str | None) -> None:
    from privatellm.metadownload import download_meta
    from privatellm.registry import RegisteredModel, check_model_name

    registry = _registry(ctx)
    name = check_model_name(name or meta_model)
    _check_free(registry, name)
    started = time.perf_counter()
    with _resumable():
        folder = download_meta(url, meta_model, registry.folder(name), progress=True)
    model = RegisteredModel(name, "chat", "meta", str(folder), f"meta:{meta_model}", True, ("en",))
    _registered(registry.add(model), time.perf_counter() - started)


@contextmanager
def _resumable() -> Iterator[None]:
    """Turns Ctrl-C during a download into a line saying how to resume it."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo("interrupted: run the same pull again to resume where it stopped", err=True)
        sys.exit(130)


def _check_free(registry: Registry, name: str) -> None:
    found = registry.find(name)
    if found is not None:
        raise click.UsageError(
            f"a model named {found.name!r} is registered already ({found.source}): "
            "give another --name, or `privatellm models rm` it first"
        )


def _registered(model: RegisteredModel, seconds: float) -> None:
    click.echo(
        f"registered {model.name}: {model.role} model ({model.kind}, {_size(model.size_bytes)}) "
        f"in {seconds:.1f} s; answer with it: privatellm models use {model.name}"
    )


@models.command("import")
@click.argument("source")
@click.option("--name", default=None, help="Name to register it under (default: its own).")
@click.pass_obj
def models_import(ctx: _Context, source: str, name: str | None) -> None:
    """Register a model already on disk, where it is (nothing is copied): a GGUF file, a Hugging
    Face or sentence-transformers folder, a Meta checkpoint folder, or `ollama:NAME[:TAG]`, a
    model in the local Ollama store (its GGUF blob, linked)."""
    from privatellm.registry import (
        RegisteredModel,
        card_languages,
        check_model_name,
        detect,
    )

    registry = _registry(ctx)
    if source.startswith("ollama:"):
        model = _ollama_model(registry, source.removeprefix("ollama:"), name)
    else:
        path = Path(source).expanduser().absolute()
        if not path.exists():
            raise click.BadParameter(f"{source}: no such file or folder", param_hint="SOURCE")
        role, kind = detect(path)
        default = path.name.removesuffix(".gguf") if kind == "gguf" else path.name
        languages = card_languages(path) if path.is_dir() else ()
        model = RegisteredModel(
            check_model_name(name or default), role, kind, str(path), "import", False, languages
        )
        _check_free(registry, model.name)
        model = registry.add(model)
    click.echo(
        f"registered {model.name}: {model.role} model ({model.kind}, "
        f"{_size(model.size_bytes)}) at {model.path}"
    )


def _ollama_model(registry: Registry, ref: str, name: str | None) -> RegisteredModel:
    """Registers an Ollama model's GGUF blob through a link in the models folder."""
    from privatellm.ollama import find_ollama_gguf
    from privatellm.registry import RegisteredModel, check_model_name

    default, blob = find_ollama_gguf(ref)
    name = check_model_name(name or default)
    _check_free(registry, name)
    folder = registry.folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{name}.gguf"
    link.unlink(missing_ok=True)
    link.symlink_to(blob)
    # owned: `models rm` deletes the link and its folder; the blob stays Ollama's.
    model = RegisteredModel(
        name, "chat", "gguf", str(link), f"ollama:{ref}", True, size_bytes=blob.stat().st_size
    )
    return registry.add(model)


# -- choosing --------------------------------------------------------------------------------------


@models.command("catalog")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def models_catalog(ctx: _Context, as_json: bool) -> None:
    """Models the project recommends: size, RAM needed, languages, licence. Get one with
    `privatellm models pull NAME`."""
    from privatellm.catalog import CATALOG

    pulled = {m.name.lower() for m in _registry(ctx).all()}
    if as_json:
        rows = [{**asdict(e), "pulled": e.name in pulled} for e in CATALOG]
        click.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    click.echo(
        f"  {'name':22} {'role':9} {'size':>7} {'RAM':>7}  {'languages':15} {'licence':31} note"
    )
    for e in CATALOG:
        mark = "*" if e.name in pulled else " "
        click.echo(
            f"{mark} {e.name:22} {e.role:9} {e.size_gb:5.2f} GB {e.ram_gb:4.1f} GB  "
            f"{e.language_summary:15} {e.licence:31} {e.note}"
        )
    click.echo("(* = pulled; RAM with the default 2,048-token context)", err=True)


@models.command("use")
@click.argument("name")
@click.pass_obj
def models_use(ctx: _Context, name: str) -> None:
    """Make a registered model the default: the chat model that answers, or the embedding model
    new collections are built with. Written to DATA/settings.yaml; config files and environment
    variables that set the same key still win."""
    from privatellm.config import load_settings, save_user_settings
    from privatellm.registry import resolve_names

    registry = _registry(ctx)
    model = registry.get(name)
    if model.role == "chat":
        change: dict[str, Any] = {"engine": {"kind": model.engine_kind, "model": model.name}}
    else:
        change = {"embedding": {"kind": "sentence-transformers", "model": model.name}}
    path = save_user_settings(ctx.settings.data_dir, change)
    effective = resolve_names(load_settings(ctx.config_files, ctx.overrides), registry)
    chosen = effective.engine.model if model.role == "chat" else effective.embedding.model
    if chosen != model.path:
        key = "engine.model" if model.role == "chat" else "embedding.model"
        click.echo(
            f"warning: saved in {path}, but your config file or environment sets {key} "
            f"({chosen}), which wins",
            err=True,
        )
        return
    what = "answers" if model.role == "chat" else "embeds new collections"
    click.echo(f"{model.name} now {what} (saved in {path})")
    if model.role == "embedding":
        click.echo(
            f"existing collections keep their model: move one with "
            f"`privatellm reindex --embedding {model.name} --collection NAME`",
            err=True,
        )


@models.command("rm")
@click.argument("name")
@click.pass_obj
def models_rm(ctx: _Context, name: str) -> None:
    """Unregister a model; delete its files if privatellm downloaded them (imported files stay)."""
    from privatellm.config import (
        BUNDLED_EMBEDDING,
        BUNDLED_LLM,
        read_profile,
        save_user_settings,
        user_settings_file,
    )

    model = _registry(ctx).remove(name)
    what = "deleted its files" if model.owned else f"its files stay at {model.path}"
    click.echo(f"removed {model.name}: {what}")
    user = user_settings_file(ctx.settings.data_dir)
    chosen = read_profile(user) if user.is_file() else {}
    section = "engine" if model.role == "chat" else "embedding"
    if chosen.get(section, {}).get("model") == model.name:
        bundled = {
            "engine": {"kind": "llamacpp", "model": BUNDLED_LLM},
            "embedding": {"kind": "sentence-transformers", "model": BUNDLED_EMBEDDING},
        }
        save_user_settings(ctx.settings.data_dir, {section: bundled[section]})
        click.echo(f"it was the default {model.role} model: back to the bundled one", err=True)


# -- checking and listing --------------------------------------------------------------------------


@models.command("verify")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
def models_verify(directory: Path) -> None:
    """Check a model folder against its checklist.chk (md5, as Meta's download script writes)
    or SHA256SUMS. Exit status 0 when every listed file is OK, 1 otherwise."""
    from privatellm.models import verify

    checks = verify(directory, progress=True)
    for check in checks:
        line = f"{check.status:9} {check.name}"
        click.echo(f"{line}: {check.detail}" if check.detail else line)
    bad = [c for c in checks if c.status != "OK"]
    click.echo(f"{len(checks) - len(bad)} OK, {len(bad)} not OK", err=True)
    if bad:
        sys.exit(1)


@models.command("convert")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def models_convert(source: Path, target: Path) -> None:
    """Convert a Meta Llama checkpoint folder (consolidated.*.pth, params.json,
    tokenizer.model) into a Hugging Face folder for engine.kind torch. CPU only; no CUDA,
    NCCL or torchrun."""
    from privatellm.convert import convert, is_meta_checkpoint

    if not is_meta_checkpoint(source):
        raise click.BadParameter(f"{source} holds no params.json and consolidated.*.pth")
    started = time.perf_counter()
    convert(source, target)
    click.echo(f"converted {source} -> {target} ({time.perf_counter() - started:.1f} s)")


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.pass_obj
def models_list(ctx: _Context, as_json: bool) -> None:
    """The configured, bundled and registered models: engine, quantization, size on disk,
    context length."""
    from privatellm.models import known_models

    found = list(known_models(ctx.settings, _registry(ctx)))
    if as_json:
        click.echo(json.dumps([asdict(m) for m in found], ensure_ascii=False, indent=2))
        return
    for m in found:
        mark = "*" if m.configured else " "
        context = f"{m.context_tokens} tokens" if m.context_tokens else "?"
        click.echo(
            f"{mark} {m.role:9} {m.name:28} {m.engine:21} {m.quantization:12} "
            f"{m.size_bytes / 2**20:8.1f} MB  context {context}"
        )
        click.echo(f"  {'':9} {m.path}")
    click.echo("(* = configured)")

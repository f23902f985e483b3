"""`privatellm finetune`: records checked up front, LoRA trained on the answers only, a run
killed (-9) or interrupted (Ctrl-C) resumes to the same end, the adapter registered, exported
for llama.cpp and merged. A tiny random Llama keeps these fast; test_lora_real.py trains the
bundled model for real."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from privatellm.config import load_settings
from privatellm.errors import TrainingDataError
from privatellm.finetunedata import IGNORE, Record, load_records, tokenize
from privatellm.finetuning import TrainOptions, checkpoints, step_examples, steps_per_epoch
from privatellm.service import Service

CITED = [
    (
        "Passages:\n[1] The bridge opened in 1932.\nQuestion: When did the bridge open?",
        "The bridge opened in 1932. [1]",
    ),
    (
        "Passages:\n[1] Ada wrote the first program.\nQuestion: Who wrote the first program?",
        "Ada wrote the first program. [1]",
    ),
    (
        "Passages:\n[1] The lake is 40 metres deep.\nQuestion: How deep is the lake?",
        "The lake is 40 metres deep. [1]",
    ),
    (
        "Passages:\n[1] Tea came to Europe in 1610.\nQuestion: Who painted the ceiling?",
        "The documents don't say.",
    ),
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer Llama with the bundled model's tokenizer and chat
    template: trains in a fraction of a second per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from privatellm.engines.torch import resolve_source

    folder, gguf = resolve_source("bundled:SmolLM2-135M-Instruct")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    out = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def write_chat(path: Path, repeat: int = 6) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in CITED * repeat
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def summary(data_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((data_dir / "models" / name / "training.json").read_text())  # type: ignore[no-any-return]


TINY = ["--epochs", "3", "--batch-size", "2", "--grad-accum", "1", "--lr", "1e-2"]
TINY += ["--dtype", "fp32", "--eval-fraction", "0.1"]


def tune(
    data_dir: Path, data: Path, base: Path, name: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    """Runs `privatellm finetune` on the tiny model with the fast options, as a user would."""
    args = ("--data-dir", data_dir, "finetune", data, "--base", base, "--name", name)
    return run_cli(*args, *TINY, *extra)


# -- data --------------------------------------------------------------------------------------


def test_alpaca_and_chat_records_load(tmp_path: Path) -> None:
    alpaca = [{"instruction": "Summarise.", "input": "A long text.", "output": "Short."}]
    (tmp_path / "a.json").write_text(json.dumps(alpaca))
    (tmp_path / "a.jsonl").write_text(json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n\n")
    [one] = load_records(tmp_path / "a.json")
    assert one.messages == [
        {"role": "user", "content": "Summarise.\n\nA long text."},
        {"role": "assistant", "content": "Short."},
    ]
    [two] = load_records(tmp_path / "a.jsonl")
    assert two.messages[0]["content"] == "Hi" and two.where == "a.jsonl line 1"
    assert len(load_records(write_chat(tmp_path / "c.jsonl", 1))) == 4


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [{"instruction": "Hi", "output": "Yo"}, {"instruction": "Hi"}],
            "line 2: missing field 'output'",
        ),
        (['{"instruction": "Hi",'], "line 1: not valid JSON"),
        ([{"messages": [{"role": "user", "content": "Hi"}]}], "line 1: the last message must be"),
        ([{"messages": [{"role": "robot", "content": "Hi"}]}], "line 1: message 1 needs a role"),
        ([[1, 2]], "line 1: expected an object"),
        ([], "no records"),
    ],
)
def test_bad_records_are_named(tmp_path: Path, lines: list[Any], message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    with pytest.raises(TrainingDataError, match=message):
        load_records(path)


def test_loss_falls_on_the_answer_tokens_only(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    turns = [
        {"role": "user", "content": "When?"},
        {"role": "assistant", "content": "In 1932. [1]"},
        {"role": "user", "content": "Where?"},
        {"role": "assistant", "content": "Paris."},
    ]
    example = tokenize(Record("r", turns), tokenizer, 512)
    labelled = tokenizer.decode([t for t in example.labels if t != IGNORE])
    assert labelled == "In 1932. [1]<|im_end|>\nParis.<|im_end|>\n"  # both answers, nothing else
    assert len(example.labels) == len(example.input_ids)
    with pytest.raises(TrainingDataError, match=r"r: \d+ tokens, longer than --max-tokens 8"):
        tokenize(Record("r", turns), tokenizer, 8)


def test_each_epoch_reads_every_example_once_in_a_seeded_order() -> None:
    options = TrainOptions(batch_size=2, grad_accum=2, seed=3)
    examples: list[Any] = list(range(10))
    per_epoch = steps_per_epoch(10, options)
    assert per_epoch == 3
    first = [step_examples(examples, s, per_epoch, options) for s in range(3)]
    second = [step_examples(examples, s, per_epoch, options) for s in range(3, 6)]
    assert sorted(x for step in first for x in step) == examples
    assert sorted(x for step in second for x in step) == examples
    assert first != second  # a new order each epoch
    assert first[1] == step_examples(examples, 1, per_epoch, options)  # and the same on resume


# -- training through the CLI ------------------------------------------------------------------


def test_train_register_export_and_merge(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat(tmp_path / "cited.jsonl")
    done = tune(tmp_path, data, tiny_llama, "t")
    assert done.returncode == 0, done.stderr
    assert "trained t: 33 steps" in done.stdout  # 24 records: 2 held out, 22 -> 11 steps x 3
    assert "Traceback" not in done.stderr and "warn" not in done.stderr.lower()
    folder = tmp_path / "models" / "t"
    run = summary(tmp_path, "t")
    assert run["examples"] == {"train": 22, "held_out": 2}
    assert run["losses"][-1][1] < run["losses"][0][1] - 0.5  # it learns
    assert run["eval_loss"] is not None and run["tokens_per_second"] > 0
    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"adapter_config.json", "adapter_model.safetensors", "adapter.gguf"} <= {
        p.name for p in folder.iterdir()
    }
    listed = run_cli("--data-dir", tmp_path, "models", "list", "--json")
    [row] = [m for m in json.loads(listed.stdout) if m["name"] == "t"]
    assert row["engine"] == "torch" and row["path"] == str(folder)
    assert row["quantization"].endswith("+LoRA")

    service = Service(load_settings([], {"data_dir": tmp_path}))
    assert "t" in service.chat_models.names()
    picked = service.for_model("t").settings.engine  # the page's and the API's model choice
    assert (picked.kind, picked.model, picked.lora) == ("torch", str(tiny_llama), str(folder))
    used = run_cli("--data-dir", tmp_path, "models", "use", "t")
    assert used.returncode == 0, used.stderr
    configured = Service(load_settings([], {"data_dir": tmp_path}))
    engine = configured.settings.engine
    assert (engine.model, engine.lora) == (str(tiny_llama), str(folder))
    assert configured.chat_models.default == "t"

    merged = run_cli("--data-dir", tmp_path, "finetune", "--merge", "t", tmp_path / "merged")
    assert merged.returncode == 0, merged.stderr
    assert_same_greedy(tiny_llama, folder, tmp_path / "merged")
    again = run_cli("--data-dir", tmp_path, "finetune", data, "--base", tiny_llama, "--name", "t")
    assert again.returncode == 2 and "registered already" in again.stderr


def assert_same_greedy(base: Path, adapter: Path, merged: Path) -> None:
    """The merged folder answers as base + adapter does, and differently from the base."""
    from privatellm.config import EngineSettings
    from privatellm.engines import Sampling, build_engine

    greedy = Sampling(max_tokens=8, temperature=0.0)
    messages = [{"role": "user", "content": CITED[0][0]}]

    def reply(**options: str) -> str:
        engine = build_engine(EngineSettings(kind="torch", device="cpu", dtype="fp32", **options))  # type: ignore[arg-type]
        return "".join(engine.stream(messages, greedy))  # type: ignore[arg-type]

    tuned = reply(model=str(base), lora=str(adapter))
    assert reply(model=str(merged)) == tuned
    assert reply(model=str(base)) != tuned


def _start(tmp_path: Path, data: Path, base: Path, name: str, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "privatellm", "--data-dir", str(tmp_path), "finetune", str(data)]
    cmd += ["--base", str(base), "--name", name, *TINY, "--save-every", "5", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop_after_checkpoint(process: subprocess.Popen[str], folder: Path, sig: int) -> None:
    """Sends sig once the run's second checkpoint (step 10) is whole."""
    deadline = time.monotonic() + 300
    while not any(p.name == "step-000010" for p in checkpoints(folder)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sig)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_a_stopped_run_resumes_to_the_same_end(tmp_path: Path, tiny_llama: Path, sig: int) -> None:
    data = write_chat(tmp_path / "cited.jsonl")
    whole = tune(tmp_path, data, tiny_llama, "whole", "--save-every", "5")
    assert whole.returncode == 0, whole.stderr
    folder = tmp_path / "models" / "cut"
    process = _start(tmp_path, data, tiny_llama, "cut")
    _stop_after_checkpoint(process, folder, sig)
    _, err = process.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert process.returncode == 130
        assert "checkpoint step-0000" in err and "--resume" in err and "Traceback" not in err
    else:
        assert process.returncode == -signal.SIGKILL
    assert not (folder / "adapter_model.safetensors").exists()  # not finished
    refused = tune(tmp_path, data, tiny_llama, "cut")
    assert refused.returncode == 2 and "--resume continues it" in refused.stderr
    resumed = tune(tmp_path, data, tiny_llama, "cut", "--save-every", "5", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    cut, ref = summary(tmp_path, "cut"), summary(tmp_path, "whole")
    assert cut["steps"] == ref["steps"] == 33
    assert [s for s, _ in cut["losses"]] == list(range(1, 34))  # every step once
    assert cut["loss"] == pytest.approx(ref["loss"], rel=0.05, abs=0.02)
    assert cut["eval_loss"] == pytest.approx(ref["eval_loss"], rel=0.05, abs=0.02)


def test_resume_refuses_other_data_and_qlora_needs_cuda(tmp_path: Path, tiny_llama: Path) -> None:
    data = write_chat(tmp_path / "cited.jsonl")
    process = _start(tmp_path, data, tiny_llama, "cut")
    _stop_after_checkpoint(process, tmp_path / "models" / "cut", signal.SIGKILL)
    process.communicate(timeout=60)
    other = write_chat(tmp_path / "other.jsonl", 5)
    done = tune(tmp_path, other, tiny_llama, "cut", "--save-every", "5", "--resume")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("the training data differ from the stopped run's")
    nothing = run_cli(
        "--data-dir", tmp_path, "finetune", data, "--base", tiny_llama, "--name", "new", "--resume"
    )
    assert nothing.returncode == 2 and "nothing to resume" in nothing.stderr
    qlora = run_cli(
        "--data-dir", tmp_path, "finetune", data, "--base", tiny_llama, "--qlora", "--device", "cpu"
    )
    assert qlora.returncode == 2 and "needs a CUDA GPU" in qlora.stderr
    long = run_cli(
        "--data-dir", tmp_path, "finetune", data, "--base", tiny_llama, "--max-tokens", "16"
    )
    assert long.returncode == 2
    assert (
        long.stderr.startswith("error: cited.jsonl line 1: ")
        and "longer than --max-tokens 16" in long.stderr
    )
    assert len(long.stderr.strip().splitlines()) == 1


# -- a short real run -------------------------------------------------------------------------


def test_a_short_real_run_on_the_bundled_model_runs_alike_in_both_engines(tmp_path: Path) -> None:
    """The bundled SmolLM2-135M tuned for a few steps: registered as base + adapter, and
    llama.cpp (Q4_1 GGUF + adapter.gguf) and torch (dequantized + PEFT files) give the same
    greedy tokens, which the adapter changed."""
    from privatellm.config import EngineSettings
    from privatellm.engines import Sampling, build_engine

    data = write_chat(tmp_path / "cited.jsonl", 4)
    options = ["--epochs", "2", "--lr", "1e-3", "--batch-size", "4", "--grad-accum", "1"]
    done = run_cli("--data-dir", tmp_path, "finetune", data, "--name", "smol-cited", *options)
    assert done.returncode == 0, done.stderr
    assert "trained smol-cited: 8 steps" in done.stdout  # 16 records, 1 held out -> 4 x 2
    folder = tmp_path / "models" / "smol-cited"
    greedy = Sampling(max_tokens=12, temperature=0.0)
    prompts = [[{"role": "user", "content": q}] for q, _ in CITED[:3]]

    def replies(**options: str) -> list[str]:
        engine = build_engine(EngineSettings.model_validate(options))
        return ["".join(engine.stream(p, greedy)) for p in prompts]  # type: ignore[arg-type]

    llama_cpp = replies(kind="llamacpp", lora=str(folder))
    torch = replies(kind="torch", device="cpu", dtype="fp32", lora=str(folder))
    assert llama_cpp == torch
    assert torch != replies(kind="torch", device="cpu", dtype="fp32")
    assert all(len(r) > 10 for r in torch)


def test_an_adapter_runs_in_llama_cpp_only_when_exported_for_a_gguf_base(tmp_path: Path) -> None:
    from privatellm.registry import RegisteredModel

    def kind(base: str) -> str:
        extra = {"base": base}
        return RegisteredModel("a", "chat", "lora", str(tmp_path), extra=extra).engine_kind

    assert kind("bundled:SmolLM2-135M-Instruct") == "torch"  # no adapter.gguf (not a llama)
    (tmp_path / "adapter.gguf").write_bytes(b"GGUF")
    assert kind("bundled:SmolLM2-135M-Instruct") == kind("/m/q.gguf") == "llamacpp"
    assert kind("/models/hf-folder") == "torch"

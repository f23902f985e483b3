"""Fine-tuning data: a file of records in, tokenized examples with the loss on the answers out.

Two record shapes, in JSON (a list) or JSONL (one per line): Alpaca's {instruction, input,
output} (Stanford Alpaca, alpaca-lora) and chat {messages: [{role, content}, ...]}. Both become
chat turns put through the model's own chat template, so a tuned model is asked exactly as the
engines ask it at run time; only the assistant turns' tokens carry loss.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privatellm.engines.base import Message
from privatellm.errors import TrainingDataError

ROLES = ("system", "user", "assistant")
IGNORE = -100  # the label torch's cross-entropy skips: prompt tokens carry no loss


@dataclass(frozen=True)
class Record:
    """One training conversation and where it came from (for messages naming it)."""

    where: str  # "train.jsonl line 12" or "train.json record 3"
    messages: list[Message]


@dataclass(frozen=True)
class Example:
    """One tokenized conversation: input_ids, and labels equal to them on the answer tokens."""

    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def load_records(path: Path) -> list[Record]:
    """Returns every record of a .json or .jsonl file, or raises TrainingDataError naming the
    first bad one (its line or position, and what is wrong with it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainingDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingDataError(f"{path}: cannot read: {e}") from None
    records = [Record(where, to_messages(raw, where)) for where, raw in _raw_records(path, text)]
    if not records:
        raise TrainingDataError(f"{path}: no records")
    return records


def _raw_records(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    """Yields (where, parsed JSON value) per record: a JSON list, or one JSON value per line."""
    if path.suffix.lower() != ".jsonl" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise TrainingDataError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
        yield from ((f"{path.name} record {i}", v) for i, v in enumerate(values, 1))
        return
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            where = f"{path.name} line {number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise TrainingDataError(f"{where}: not valid JSON: {e.msg}") from None


def to_messages(raw: Any, where: str) -> list[Message]:
    """Returns the chat turns of one Alpaca or chat record, or raises TrainingDataError."""
    if not isinstance(raw, dict):
        raise TrainingDataError(f"{where}: expected an object, got {type(raw).__name__}")
    if "messages" in raw:
        return _chat(raw["messages"], where)
    for field in ("instruction", "output"):
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise TrainingDataError(
                f"{where}: missing field {field!r} (records need instruction + output, "
                "optionally input; or messages)"
            )
    extra = raw.get("input") or ""
    if not isinstance(extra, str):
        raise TrainingDataError(f"{where}: field 'input' must be text")
    prompt = (
        f"{raw['instruction'].strip()}\n\n{extra.strip()}" if extra.strip() else raw["instruction"]
    )
    return [
        {"role": "user", "content": prompt.strip()},
        {"role": "assistant", "content": raw["output"]},
    ]


def _chat(turns: Any, where: str) -> list[Message]:
    if not isinstance(turns, list) or not turns:
        raise TrainingDataError(f"{where}: 'messages' must be a non-empty list")
    messages: list[Message] = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES:
            raise TrainingDataError(f"{where}: message {i} needs a role of {', '.join(ROLES)}")
        if not isinstance(turn.get("content"), str):
            raise TrainingDataError(f"{where}: message {i} has no text 'content'")
        messages.append({"role": turn["role"], "content": turn["content"]})
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        raise TrainingDataError(f"{where}: the last message must be the assistant's answer")
    return messages


def fingerprint(records: Sequence[Record]) -> str:
    """Returns a short hash of the conversations (a resumed run must train on the same data)."""
    h = hashlib.sha256()
    for record in records:
        h.update(json.dumps(record.messages, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()[:16]


def tokenize(record: Record, tokenizer: Any, max_tokens: int) -> Example:
    """Returns record as token ids in the tokenizer's chat template, with labels on the
    assistant turns only; raises TrainingDataError when it is longer than max_tokens."""
    ids: list[int] = []
    labels: list[int] = []
    for end, message in enumerate(record.messages, 1):
        if message["role"] != "assistant":
            continue
        before = _template(tokenizer, record.messages[: end - 1], prompt=True)
        upto = _template(tokenizer, record.messages[:end], prompt=False)
        if upto[: len(before)] != before or before[: len(ids)] != ids:
            # Templates that rewrite earlier turns (e.g. drop past reasoning) have no one
            # token sequence whose parts can be labelled turn by turn.
            raise TrainingDataError(
                f"{record.where}: the chat template does not extend earlier turns unchanged"
            )
        labels += [IGNORE] * (len(before) - len(ids)) + upto[len(before) :]
        ids = upto
    if len(ids) > max_tokens:
        raise TrainingDataError(
            f"{record.where}: {len(ids)} tokens, longer than --max-tokens {max_tokens}"
        )
    return Example(ids, labels)


def _template(tokenizer: Any, messages: Sequence[Message], prompt: bool) -> list[int]:
    """Returns messages as token ids in the tokenizer's chat template (plain 'role: text' turns
    for a base model without one, as the torch engine asks it)."""
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=prompt, tokenize=True, return_dict=True
        )["input_ids"]
        return list(ids)
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
    return list(tokenizer(text + ("assistant:" if prompt else ""))["input_ids"])

"""Time to first token of `ask --answer generate`: the prompt as it was before (whole passages,
instruction last) against today's (the fixed instruction first, passages cut to
answer.prompt_tokens), side by side in one run.

    python benchmarks/ttft.py --data ~/.cache/privatellm-eval --collection dev \\
        --qa ../shared/eval/dev/qa.jsonl --questions 10 --rounds 2

Questions are answerable ones spread over the QA file, half English and half Chinese, that the
default settings do not abstain on. A timed call is what `ask` does for one question: retrieve,
build the prompt, stream the reply until its first piece. Arms: `old` (a copy of the previous
prompt builder, the baseline), `whole` (today's layout, prompt_tokens 0: the share of prefix
reuse alone), `cut` (today's layout and prompt_tokens) and `ask` (Service.ask itself). Each
round runs every arm over all questions in a block, so llama.cpp's prefix reuse sees the arm's
own previous prompt, as consecutive questions do; the arm order flips every round. On a shared
machine the ratios, measured in the same run, are the figures to read.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from privatellm.answering import abstains
from privatellm.config import Settings, load_settings
from privatellm.engines import Engine, Message, Sampling
from privatellm.evaluate import Item, load_items, sample
from privatellm.prompts import TEMPLATE_TOKENS, build_messages
from privatellm.service import Service
from privatellm.text import is_cjk
from privatellm.types import ScoredChunk

Timing = tuple[float, int]  # seconds to the first piece, prompt tokens
Call = Callable[[str], Timing]  # one timed question
Builder = Callable[[str, Sequence[ScoredChunk]], list[Message]]  # question, hits -> messages

OLD_INSTRUCTION = (
    "Answer the question in one or two sentences using only the passages above, and cite the "
    "passage you used like [1]. If they do not contain the answer, say that the documents "
    "don't say."
)


def old_messages(
    question: str, hits: Sequence[ScoredChunk], engine: Engine, answer_tokens: int
) -> list[Message]:
    """Returns the prompt privatellm built before answer.prompt_tokens: whole passages while the
    context window holds them, then the question, then the instruction."""
    budget = (
        engine.context_tokens
        - answer_tokens
        - TEMPLATE_TOKENS
        - engine.count_tokens(OLD_INSTRUCTION)
        - engine.count_tokens(question)
    )
    passages: list[str] = []
    for hit in hits:
        text = f"[{len(passages) + 1}] " + " ".join(hit.chunk.text.split())
        cost = engine.count_tokens(text) + 2
        if cost > budget:
            break
        budget -= cost
        passages.append(text)
    user = "\n\n".join([*passages, f"Question: {question}", OLD_INSTRUCTION])
    return [{"role": "user", "content": user}]


def pick_questions(service: Service, items: list[Item], count: int) -> list[str]:
    """Returns count answerable questions, half English and half Chinese, spread over items,
    that the default settings send to the model (no abstention)."""
    answered = [
        i.question
        for i in items
        if i.answerable and not abstains(service.search(i.question), service.settings.answer)
    ]
    chinese = [q for q in answered if is_cjk(q)]
    english = [q for q in answered if not is_cjk(q)]
    half = count // 2
    return sample_list(english, count - half) + sample_list(chinese, half)


def sample_list(values: list[str], count: int) -> list[str]:
    """Returns count values spread evenly over the list."""
    step = max(1, len(values) / max(count, 1))
    return [values[int(i * step)] for i in range(min(count, len(values)))]


def prompt_call(service: Service, build: Builder) -> Call:
    """Returns a call that retrieves, builds the prompt with build and streams the reply."""
    max_tokens = service.settings.engine.max_tokens

    def call(question: str) -> Timing:
        started = time.perf_counter()
        messages = build(question, service.search(question).hits)
        pieces = service.chat_model.generate(messages, Sampling(max_tokens=max_tokens))
        next(pieces, "")
        elapsed = time.perf_counter() - started
        pieces.close()  # type: ignore[attr-defined]
        return elapsed, sum(service.count_tokens(m["content"]) for m in messages)

    return call


def builders(service: Service) -> dict[str, Builder]:
    """Returns the prompt builders of the arms `old`, `whole` and `cut`."""
    engine, answer_tokens = service.engine, service.settings.engine.max_tokens
    budget = service.settings.answer.prompt_tokens
    return {
        "old": lambda q, hits: old_messages(q, hits, engine, answer_tokens),
        "whole": lambda q, hits: build_messages(q, hits, engine, answer_tokens, None, 0)[0],
        "cut": lambda q, hits: build_messages(q, hits, engine, answer_tokens, None, budget)[0],
    }


def ask_call(service: Service) -> Call:
    """Returns a call that times Service.ask itself."""

    def call(question: str) -> Timing:
        started = time.perf_counter()
        reply = service.ask(question, answer_mode="generate")
        next(iter(reply), "")
        elapsed = time.perf_counter() - started
        reply.close()
        return elapsed, reply.prompt_tokens

    return call


def run(arms: dict[str, Call], questions: list[str], rounds: int) -> dict[str, list[Timing]]:
    """Returns each arm's (seconds, prompt tokens), question by question, round after round."""
    timings: dict[str, list[Timing]] = {name: [] for name in arms}
    order = list(arms)
    for n in range(rounds):
        for name in order if n % 2 == 0 else order[::-1]:
            timings[name].extend(arms[name](q) for q in questions)
            p50 = statistics.median(t for t, _ in timings[name])
            print(f"round {n + 1} {name}: TTFT p50 so far {p50:.2f} s", flush=True)
    return timings


def report(timings: dict[str, list[Timing]], questions: list[str]) -> None:
    """Prints TTFT medians per arm and language, prompt tokens, and the ratios to `old`."""
    chinese = [is_cjk(q) for q in questions] * (len(timings["old"]) // len(questions))
    old = [t for t, _ in timings["old"]]
    header = ("arm", "TTFT p50", "en", "zh", "tokens", "ratio", "paired")
    print("\n{:6} {:>9} {:>7} {:>7} {:>7} {:>6} {:>7}".format(*header))
    for name, rows in timings.items():
        times = [t for t, _ in rows]
        en = statistics.median(t for t, zh in zip(times, chinese, strict=True) if not zh)
        zh = statistics.median(t for t, zh in zip(times, chinese, strict=True) if zh)
        p50 = statistics.median(times)
        tokens = statistics.median(n for _, n in rows)
        # The same question's times side by side: the least noisy ratio on a shared machine.
        paired = statistics.median(t / o for t, o in zip(times, old, strict=True))
        print(
            f"{name:6} {p50:8.2f}s {en:6.2f}s {zh:6.2f}s {tokens:7.0f} "
            f"{p50 / statistics.median(old):6.2f} {paired:7.2f}"
        )


def machine() -> str:
    """Returns the CPU model, core count, load and date, for the record."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load {load}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="data dir of the collection")
    parser.add_argument("--collection", default="dev")
    parser.add_argument("--qa", type=Path, required=True, help="QA file (dev-set JSONL)")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings: Settings = load_settings([], {"data_dir": args.data, "collection": args.collection})
    service = Service(settings)
    questions = pick_questions(service, sample(load_items(args.qa), 200), args.questions)
    arms = {name: prompt_call(service, build) for name, build in builders(service).items()}
    arms["ask"] = ask_call(service)
    arms["old"](questions[0])  # loads the model and warms the caches
    print(machine(), f"prompt_tokens {settings.answer.prompt_tokens}", flush=True)
    report(run(arms, questions, args.rounds), questions)
    print(machine())


if __name__ == "__main__":
    main()

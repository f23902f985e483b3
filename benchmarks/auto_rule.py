"""When should `auto` keep the model's words rather than quote? Measures the rule's thresholds.

    python benchmarks/auto_rule.py [--per-dataset 20] [--data ~/.cache/privatellm-eval]

Generates once per question of a stratified dev sample (the eval store must hold collection
`dev`, as `make eval` leaves it), then finishes that same generation under each (AGREE, COVER)
pair of `privatellm.extract.agrees` and prints the share of answered short-answer questions
(SQuAD, CMRC 2018, DomainRAG) whose answer contains the reference, with `generate` and
`extract` as the bounds, and how many answers kept the model's words.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privatellm import extract
from privatellm.answering import Reply
from privatellm.config import AnswerMode, load_settings
from privatellm.evaluate import Item, contains_answer, load_items, stratified
from privatellm.service import Service

SHORT = ("squad", "cmrc2018", "domainrag")
GRID = [(a, c) for a in (0.0, 0.5, 0.7, 0.9) for c in (0.0, 0.3, 0.5)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=Path("../shared/eval/dev/qa.jsonl"))
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/privatellm-eval")
    parser.add_argument("--per-dataset", type=int, default=20)
    args = parser.parse_args()
    service = Service(load_settings([], {"data_dir": str(args.data)}))
    items = [i for i in stratified(load_items(args.qa), args.per_dataset) if i.dataset in SHORT]
    replies: list[tuple[Item, Reply]] = []
    for n, item in enumerate(items, 1):
        reply = service.ask(item.question, "dev", answer_mode="auto")
        if not reply.answer().abstained:
            replies.append((item, reply))
        print(f"\r{n}/{len(items)} generated", end="", flush=True)
    print(f"\n{len(replies)} answered of {len(items)} short-answer questions")
    print("| rule | contains | model's words kept |")
    print("|---|---:|---:|")
    bounds: tuple[AnswerMode, ...] = ("generate", "extract")
    for mode in bounds:
        got = [contains_answer(i, r.answer(mode).text) for i, r in replies]
        print(f"| {mode} | {sum(got) / len(got):.3f} | – |")
    for agree, cover in GRID:
        extract.AGREE, extract.COVER = agree, cover
        kept = hits = 0
        for item, reply in replies:
            reply._answers.clear()  # finish the same generation again, under new thresholds
            answer = reply.answer("auto")
            kept += answer.kind == "generated"
            hits += contains_answer(item, answer.text)
        print(f"| auto AGREE={agree} COVER={cover} | {hits / len(replies):.3f} | {kept} |")


if __name__ == "__main__":
    main()

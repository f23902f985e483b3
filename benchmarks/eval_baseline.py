"""Scores the LangChain-tutorial baseline on a QA set with privatellm's own eval metrics.

    python benchmarks/eval_baseline.py ../shared/eval/dev/qa.jsonl --docs ../shared/eval/dev/docs \\
        --store /tmp/baseline-store [--json]

The store is built once (about 20 minutes on the whole dev set) and reused when it exists. The
printed table has the same columns as `privatellm eval`, so the two sit side by side in
docs/EVALUATION.md. The tutorial pipeline cannot abstain, so it "declines" nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from baseline import open_tutorial_store, tutorial_store

from privatellm import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qa", type=Path)
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    items = evaluate.load_items(args.qa)
    if (args.store / "chroma.sqlite3").exists():
        store = open_tutorial_store(args.store)
    else:
        store, stats = tutorial_store(args.docs, args.store)
        print(f"built baseline store: {stats}", flush=True)
    root = args.docs.absolute()
    results = []
    for item in items:
        started = time.perf_counter()
        found = store.similarity_search(item.question, k=evaluate.DEPTH)
        seconds = time.perf_counter() - started
        hits: list[evaluate.Hit] = []
        for doc in found:
            source = Path(doc.metadata["source"]).absolute()
            page = doc.metadata.get("page")  # PyPDFLoader counts pages from 0
            hits.append(
                (source.relative_to(root).as_posix(), None if page is None else int(page) + 1)
            )
        rank, page_hit = evaluate.score_hits(item, hits)
        results.append(
            evaluate.Scored(
                item.id, item.dataset, item.lang, item.answerable, rank, page_hit, False, seconds
            )
        )
    summary = {"baseline": evaluate.report(results)}
    if args.json:
        print(json.dumps({"summary": summary}, ensure_ascii=False))
    else:
        print(evaluate.table(summary))


if __name__ == "__main__":
    main()

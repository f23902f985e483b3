"""Abstention on a small corpus: do the thresholds chosen on the whole dev set (1,107 documents)
hold when a user has a few dozen? Term weights and similarities shift with corpus size.

    python benchmarks/small_corpus.py [--qa QA] [--docs DIR] [--data DIR]

Builds a fresh collection of only the gold documents of an even sample of the answerable
short-answer questions (25 CMRC 2018, 25 DomainRAG, 15 SQuAD, 10 ARAGOG), asks those and every
unanswerable question, and prints per language the share declined and answered under the
configured abstention rule.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from privatellm.answering import abstains
from privatellm.config import load_settings
from privatellm.evaluate import load_items, sample
from privatellm.service import Service

PER_DATASET = {"cmrc2018": 25, "domainrag": 25, "squad": 15, "aragog": 10}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qa", type=Path, default=Path("../shared/eval/dev/qa.jsonl"))
    parser.add_argument("--docs", type=Path, default=Path("../shared/eval/dev/docs"))
    parser.add_argument("--data", type=Path, default=None, help="data dir (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(load_settings([], {"data_dir": str(args.data or tmp)}))
        items = load_items(args.qa)
        asked = [
            item
            for dataset, n in PER_DATASET.items()
            for item in sample([i for i in items if i.dataset == dataset], n)
        ]
        files = sorted({args.docs / i.gold_source for i in asked if i.gold_source})
        service.ingest(files, "small")
        asked += [i for i in items if not i.answerable]
        print(f"{len(files)} documents, {len(asked)} questions")
        rule = service.settings.answer
        print("| language | unanswerable declined | answerable answered |")
        print("|---|---:|---:|")
        for lang in sorted({i.lang for i in asked}):
            group = [i for i in asked if i.lang == lang]
            declined = [i for i in group if abstains(service.search(i.question, "small"), rule)]
            unanswerable = [i for i in group if not i.answerable]
            answerable = [i for i in group if i.answerable]
            d = sum(not i.answerable for i in declined)
            a = len(answerable) - sum(i.answerable for i in declined)
            print(
                f"| {lang} | {d}/{len(unanswerable)} = {d / len(unanswerable):.3f} "
                f"| {a}/{len(answerable)} = {a / len(answerable):.3f} |"
            )


if __name__ == "__main__":
    main()

"""How each signal of the extractive answer counts: contains-the-reference per variant of the
weights in privatellm.extract, side by side with the defaults, on dev-set questions.

    python benchmarks/extract_weights.py --data ~/.cache/privatellm-eval --collection dev \
        --qa ../shared/eval/dev/qa.jsonl --docs ../shared/eval/dev/docs --sample 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privatellm import extract
from privatellm.config import load_settings
from privatellm.evaluate import evaluate, load_items, report, sample
from privatellm.service import Service

VARIANTS: dict[str, dict[str, float]] = {
    "defaults": {},
    "+ similarity 0.5": {"SIMILARITY": 0.5},
    "+ neighbours 0.3": {"NEIGHBOURS": 0.3},
    "no asked-for value": {"ASKED": 0.0},
    "no rank": {"RANK": 0.0},
}
GROUPS = ("all", "lang:en", "lang:zh", "squad", "cmrc2018", "domainrag")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--collection", default="dev")
    parser.add_argument("--qa", type=Path, required=True)
    parser.add_argument("--docs", type=Path, required=True)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()
    service = Service(load_settings([], {"data_dir": args.data}))
    items = sample(load_items(args.qa), args.sample)
    defaults = {name: getattr(extract, name) for v in VARIANTS.values() for name in v}
    print("| variant | " + " | ".join(GROUPS) + " |")
    print("|---|" + "---:|" * len(GROUPS))
    base: dict[str, float] = {}
    for label, changes in VARIANTS.items():
        for name, value in {**defaults, **changes}.items():
            setattr(extract, name, value)
        runs = evaluate(service, items, args.docs, args.collection, "hybrid", ["extract"])
        rows = report(runs["extract"])
        got = {g: float(rows[g]["contains"] or 0.0) for g in GROUPS if g in rows}
        base = base or got
        cells = [f"{got[g]:.3f} ({got[g] - base[g]:+.3f})" for g in GROUPS if g in got]
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

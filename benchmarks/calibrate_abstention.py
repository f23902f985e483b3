"""Chooses the abstention thresholds from `privatellm eval --json` output, and shows whether
they transfer to datasets they were not chosen on.

    privatellm eval qa.jsonl --docs DIR --retrieval-only --json > eval.json
    python benchmarks/calibrate_abstention.py eval.json [--mode hybrid] [--answered 0.9]

The rule is privatellm's own (`Evidence.weak`): dense similarity below min_dense where it is
trusted (the bundled embedding model reads English only), lexical coverage below min_lexical
elsewhere. Each language has its own threshold, chosen as the one that declines the most
unanswerable questions while answering at least --answered of the answerable ones (ties: the
most answered).

Leave one dataset out: for each answerable dataset, the threshold is chosen on the others (and
every unanswerable question) and applied to it; the unanswerable questions are held out five at
a time the same way (the dev set has them from one source only). The held-out rates are what a
corpus the thresholds never saw can expect; the printed defaults are chosen on everything.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
GRID = [round(x * 0.01, 2) for x in range(0, 101)]
FOLDS = 5  # unanswerable questions are held out one fifth at a time


def signal(rows: list[Row]) -> str:
    """Returns the evidence that decides for these rows: dense where it is trusted."""
    return "dense" if all(r["dense"] is not None for r in rows) else "lexical"


def rates(rows: list[Row], key: str, threshold: float) -> tuple[float | None, float | None]:
    """Returns (unanswerable declined, answerable answered) at threshold (None: no such rows)."""
    unanswerable = [r[key] < threshold for r in rows if not r["answerable"]]
    answered = [r[key] >= threshold for r in rows if r["answerable"]]
    return _share(unanswerable), _share(answered)


def _share(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def choose(rows: list[Row], key: str, answered: float) -> float:
    """Returns the threshold declining most while answering at least `answered`."""

    def rank(t: float) -> tuple[bool, float, float]:
        d, a = rates(rows, key, t)
        return (a or 0.0) >= answered, d or 0.0, a or 0.0

    return max(GRID, key=lambda t: (rank(t), -t))


def leave_one_out(rows: list[Row], key: str, pick: Callable[[list[Row]], float]) -> list[str]:
    """Returns report lines: each held-out group's rate under a threshold chosen without it."""
    lines = []
    unanswerable = [r for r in rows if not r["answerable"]]
    held_answered = 0
    for dataset in sorted({r["dataset"] for r in rows if r["answerable"]}):
        held = [r for r in rows if r["dataset"] == dataset]
        threshold = pick([r for r in rows if r["dataset"] != dataset])
        _, a = rates(held, key, threshold)
        held_answered += round((a or 0.0) * len(held))
        lines.append(f"  held out {dataset:<12} {key} >= {threshold:.2f}: answered {a:.3f}")
    declined = 0
    for k in range(FOLDS):
        fold = unanswerable[k::FOLDS]
        ids = {r["id"] for r in fold}
        threshold = pick([r for r in rows if r["id"] not in ids])
        declined += sum(r[key] < threshold for r in fold)
    n_answerable = sum(r["answerable"] for r in rows)
    lines.append(
        f"  held out: declined {declined / max(len(unanswerable), 1):.3f} "
        f"({declined}/{len(unanswerable)}), answered {held_answered / max(n_answerable, 1):.3f}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("--mode", default="hybrid", help="the run of the eval output to use")
    parser.add_argument("--answered", type=float, default=0.9)
    args = parser.parse_args()
    runs = json.loads(args.eval_json.read_text(encoding="utf-8"))["items"]
    rows = runs.get(args.mode) or next(v for k, v in runs.items() if k.startswith(args.mode))
    for lang in sorted({r["lang"] for r in rows}):
        group = [r for r in rows if r["lang"] == lang]
        key = signal(group)
        print(f"{lang}: {key} decides")
        pick = functools.partial(choose, key=key, answered=args.answered)
        for line in leave_one_out(group, key, pick):
            print(line)
        threshold = choose(group, key, args.answered)
        d, a = rates(group, key, threshold)
        setting = "min_dense" if key == "dense" else "min_lexical"
        print(f"  chosen on all: {setting}={threshold:.2f} -> declined {d:.3f}, answered {a:.3f}")


if __name__ == "__main__":
    main()

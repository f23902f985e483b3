"""Chooses the abstention thresholds from `privatellm eval --json` output.

    privatellm eval qa.jsonl --docs DIR --retrieval-only --json > eval.json
    python benchmarks/calibrate_abstention.py eval.json [--mode hybrid]

The rule is privatellm's own (`Evidence.weak`): dense similarity below min_dense where it is
trusted, lexical coverage below min_lexical elsewhere. This prints, for a grid of both, the
share of unanswerable questions declined and of answerable ones still answered, and the pair
that declines most while answering at least --answered of the answerable ones (ties: the most
answered).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from privatellm.retrieval import Evidence


def rates(rows: list[dict[str, Any]], dense: float, lexical: float) -> tuple[float, float]:
    """Returns (unanswerable declined, answerable answered) at these thresholds."""

    def abstains(r: dict[str, Any]) -> bool:
        return Evidence(r["dense"], r["lexical"]).weak(dense, lexical)

    unanswerable = [r for r in rows if not r["answerable"]]
    answerable = [r for r in rows if r["answerable"]]
    declined = sum(abstains(r) for r in unanswerable) / max(len(unanswerable), 1)
    answered = sum(not abstains(r) for r in answerable) / max(len(answerable), 1)
    return declined, answered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_json", type=Path)
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--answered", type=float, default=0.9)
    args = parser.parse_args()
    rows = json.loads(args.eval_json.read_text(encoding="utf-8"))["items"][args.mode]
    grid = [round(x * 0.01, 2) for x in range(0, 101)]
    best: tuple[float, float, float, float] | None = None
    print("min_dense min_lexical declined answered")
    for dense in grid:
        for lexical in grid:
            declined, answered = rates(rows, dense, lexical)
            if answered >= args.answered and (
                best is None or (declined, answered) > (best[2], best[3])
            ):
                best = (dense, lexical, declined, answered)
            if round(dense * 100) % 10 == 0 and round(lexical * 100) % 10 == 0:
                print(f"{dense:9.2f} {lexical:11.2f} {declined:8.3f} {answered:8.3f}")
    if best:
        print(
            f"chosen: min_dense={best[0]} min_lexical={best[1]} "
            f"-> declined {best[2]:.3f}, answered {best[3]:.3f}"
        )


if __name__ == "__main__":
    main()

"""Evaluation on a QA set (the schema of ../shared/eval/dev/qa.jsonl): retrieval, pages,
abstention, answers, citations and latency, per dataset and per language.

Scoring works on plain (source, page) lists, so a pipeline that is not privatellm's (the
LangChain baseline in benchmarks/) is scored by the same code.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privatellm.answering import Reply, abstains
from privatellm.errors import ConfigError
from privatellm.text import CJK, MARKERS

if TYPE_CHECKING:
    from privatellm.config import AnswerMode
    from privatellm.retrieval import Mode
    from privatellm.service import Service
    from privatellm.types import Answer

DEPTH = 10  # chunks retrieved per question: hit@1/3/5 and MRR@10 come from these


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    answer: str | None
    gold_source: str | None  # relative to the docs folder
    gold_pages: frozenset[int]  # 1-based; empty when the set gives none
    lang: str
    dataset: str
    answerable: bool
    aliases: tuple[str, ...] = ()


def load_items(path: Path) -> list[Item]:
    """Returns the questions of a QA JSONL file; a malformed line is a ConfigError naming it."""
    items: list[Item] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pages = {e["page"] for e in row.get("gold_evidence") or [] if e.get("page")}
            if row.get("gold_page"):
                pages.add(row["gold_page"])
            items.append(
                Item(
                    id=str(row["id"]),
                    question=str(row["question"]),
                    answer=row.get("answer"),
                    gold_source=row.get("gold_source"),
                    gold_pages=frozenset(int(p) for p in pages),
                    lang=str(row.get("lang", "")),
                    dataset=str(row.get("dataset", "")),
                    answerable=bool(row.get("answerable", True)),
                    aliases=tuple(row.get("answer_aliases") or ()),
                )
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path}:{number}: not a QA item ({e})") from e
    if not items:
        raise ConfigError(f"{path} holds no questions")
    return items


def sample(items: Sequence[Item], n: int | None) -> list[Item]:
    """Returns n items spread evenly over the file (deterministic), or all of them."""
    if not n or n >= len(items):
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def stratified(items: Sequence[Item], per_dataset: int | None) -> list[Item]:
    """Returns up to per_dataset items of each dataset, spread evenly over it (all of a smaller
    one), in file order; every item when per_dataset is None."""
    if not per_dataset:
        return list(items)
    datasets: dict[str, list[Item]] = {}
    for item in items:
        datasets.setdefault(item.dataset, []).append(item)
    chosen = {item.id for group in datasets.values() for item in sample(group, per_dataset)}
    return [item for item in items if item.id in chosen]


@dataclass
class Scored:
    """One question's outcome."""

    id: str
    dataset: str
    lang: str
    answerable: bool
    rank: int | None  # 1-based rank of the first chunk from the gold document, within DEPTH
    page_hit: bool | None  # gold page among the top 5 chunks' pages (None: no gold page)
    abstained: bool
    seconds: float  # retrieval time (answering time too when answers were generated)
    dense: float | None = None  # evidence, kept for calibrating the abstention thresholds
    lexical: float = 0.0
    answer: str | None = None
    contains: bool | None = None  # the answer holds the reference answer (or an alias)
    f1: float | None = None  # best token F1 of the answer against the reference or an alias
    kind: str | None = None  # generated, quoted or abstained
    citations: int = 0
    citations_right: int = 0  # cited chunks from the gold document (and gold page, if given)
    extra: dict[str, Any] = field(default_factory=dict)


Hit = tuple[str, int | None]  # (source relative to the docs folder, page)


def score_hits(item: Item, hits: Sequence[Hit]) -> tuple[int | None, bool | None]:
    """Returns (rank of the first gold-document hit, gold page in the top 5)."""
    rank = next((i for i, (s, _) in enumerate(hits, 1) if s == item.gold_source), None)
    page_hit = None
    if item.gold_pages:
        page_hit = any(s == item.gold_source and p in item.gold_pages for s, p in hits[:5])
    return rank, page_hit


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"[\s,，。.、\"'“”‘’()（）]+", "", text)


def contains_answer(item: Item, answer: str) -> bool:
    """Returns whether answer holds the reference answer or one of its aliases."""
    expected = [a for a in (item.answer, *item.aliases) if a]
    got = _normal(answer)
    return any(_normal(a) and _normal(a) in got for a in expected)


def token_f1(item: Item, answer: str) -> float:
    """Returns the best token-level F1 (SQuAD's) of answer against the reference answers; a
    Chinese character counts as a token."""
    got = _tokens(answer)
    best = 0.0
    for expected in (item.answer, *item.aliases):
        want = _tokens(expected or "")
        common = sum((Counter(got) & Counter(want)).values())
        if common:
            precision, recall = common / len(got), common / len(want)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def _tokens(text: str) -> list[str]:
    text = MARKERS.sub("", unicodedata.normalize("NFKC", text).lower())
    return re.findall(rf"[{CJK}]|[^\W_{CJK}]+", text)


def evaluate(
    service: Service,
    items: Sequence[Item],
    docs: Path,
    collection: str,
    mode: Mode,
    answer_modes: Sequence[AnswerMode] = (),
    progress: Callable[[int], object] = lambda _n: None,
) -> dict[AnswerMode | None, list[Scored]]:
    """Returns each item's outcome per answer mode, retrieving with the service and answering in
    each of answer_modes (none: retrieval only, under the key None).

    generate and auto finish one generated text each their own way, so asking for both costs
    one model call per question, and they are compared on the very same generation."""
    root = docs.absolute()
    results: dict[AnswerMode | None, list[Scored]] = {m: [] for m in answer_modes or (None,)}
    for item in items:
        started = time.perf_counter()
        found = service.search(item.question, collection, DEPTH, mode)
        seconds = time.perf_counter() - started
        hits = [(_relative(h.chunk.source, root), h.chunk.page) for h in found.hits]
        rank, page_hit = score_hits(item, hits)
        ev = found.evidence
        scored = Scored(
            item.id,
            item.dataset,
            item.lang,
            item.answerable,
            rank,
            page_hit,
            abstains(found, service.settings.answer),
            seconds,
            None if ev.dense is None else round(ev.dense, 4),
            round(ev.lexical, 4),
        )
        if not answer_modes:
            results[None].append(scored)
        for asked, answer, seconds in _answers(service, item, collection, mode, answer_modes):
            results[asked].append(
                _scored_answer(replace(scored, seconds=seconds), item, answer, root)
            )
        progress(1)
    return results


def _answers(
    service: Service, item: Item, collection: str, mode: Mode, answer_modes: Sequence[AnswerMode]
) -> Iterator[tuple[AnswerMode, Answer, float]]:
    """Yields (answer mode, answer, seconds) for each of answer_modes, one model call serving
    both generate and auto (each is timed as if it had made that call itself)."""
    generated: tuple[Reply, float] | None = None
    for asked in answer_modes:
        started = time.perf_counter()
        reply, earlier = generated if generated and asked != "extract" else (None, 0.0)
        if reply is None:
            reply = service.ask(item.question, collection, mode=mode, answer_mode=asked)
        answer = reply.answer(asked)
        seconds = time.perf_counter() - started + earlier
        if asked != "extract" and generated is None:
            generated = (reply, seconds)
        yield asked, answer, seconds


def _scored_answer(scored: Scored, item: Item, result: Answer, root: Path) -> Scored:
    """Returns scored completed with how good result is as an answer to item."""
    scored.abstained = result.abstained
    scored.answer = result.text
    scored.kind = result.kind
    if item.answerable and not result.abstained:
        scored.contains = contains_answer(item, result.text)
        scored.f1 = token_f1(item, result.text)
        scored.citations = len(result.citations)
        scored.citations_right = sum(
            _relative(c.source, root) == item.gold_source
            and (not item.gold_pages or c.page in item.gold_pages)
            for c in result.citations
        )
    return scored


def _relative(source: str, root: Path) -> str:
    # Sources are stored as given ("/work/x/../docs/a.pdf"): compare normalised paths.
    path = Path(os.path.normpath(source))
    root = Path(os.path.normpath(root))
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else source


# -- summaries ----------------------------------------------------------------------------------


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def metrics(results: Sequence[Scored]) -> dict[str, float | int | None]:
    """Returns the summary numbers of a group of results (None where nothing applies)."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    paged = [r for r in answerable if r.page_hit is not None]
    answered = [r for r in answerable if r.contains is not None]
    cited = sum(r.citations for r in answerable)
    times = [r.seconds for r in results]
    return {
        "n": len(results),
        "hit@1": _mean(r.rank is not None and r.rank <= 1 for r in answerable),
        "hit@3": _mean(r.rank is not None and r.rank <= 3 for r in answerable),
        "hit@5": _mean(r.rank is not None and r.rank <= 5 for r in answerable),
        "mrr": _mean(1 / r.rank if r.rank else 0.0 for r in answerable),
        "page@5": _mean(bool(r.page_hit) for r in paged),
        "declined": _mean(r.abstained for r in unanswerable),
        "answered": _mean(not r.abstained for r in answerable),
        "contains": _mean(bool(r.contains) for r in answered),
        "f1": _mean(r.f1 or 0.0 for r in answered),
        "quoted": _mean(r.kind == "quoted" for r in answerable if r.kind),
        "cite_prec": sum(r.citations_right for r in answerable) / cited if cited else None,
        "p50_ms": _ms(_percentile(times, 0.5)),
        "p95_ms": _ms(_percentile(times, 0.95)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def report(results: Sequence[Scored]) -> dict[str, dict[str, float | int | None]]:
    """Returns metrics overall, per language and per dataset."""
    groups: dict[str, list[Scored]] = {"all": list(results)}
    for r in results:
        groups.setdefault(f"lang:{r.lang}", []).append(r)
    for r in results:
        groups.setdefault(r.dataset, []).append(r)
    return {name: metrics(group) for name, group in groups.items()}


COLUMNS = (
    *("n", "hit@1", "hit@3", "hit@5", "mrr", "page@5", "declined", "answered", "contains", "f1"),
    "quoted",
    *("cite_prec", "p50_ms", "p95_ms"),
)


def table(reports: dict[str, dict[str, dict[str, float | int | None]]]) -> str:
    """Returns a Markdown table: one row per (run, group)."""
    lines = [
        "| run | group | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for run, groups in reports.items():
        for group, row in groups.items():
            cells = [_cell(c, row[c]) for c in COLUMNS]
            lines.append(f"| {run} | {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(column: str, value: float | int | None) -> str:
    if value is None:
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.1f}" if column.endswith("_ms") else f"{value:.3f}"


def to_json(results: Sequence[Scored]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

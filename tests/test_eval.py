"""`privatellm eval`: metrics on a small QA set, through the real CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import run_cli

from privatellm.evaluate import Item, contains_answer, metrics, score_hits, stratified


def _item(**kw: object) -> Item:
    base: dict[str, object] = {
        "id": "q",
        "question": "?",
        "answer": "July 2023",
        "gold_source": "a.pdf",
        "gold_pages": frozenset({2}),
        "lang": "en",
        "dataset": "d",
        "answerable": True,
    }
    return Item(**{**base, **kw})  # type: ignore[arg-type]


def test_rank_page_and_contains() -> None:
    item = _item()
    assert score_hits(item, [("b.pdf", 2), ("a.pdf", 1), ("a.pdf", 2)]) == (2, True)
    assert score_hits(item, [("b.pdf", 2)] * 6 + [("a.pdf", 2)]) == (7, False)
    assert contains_answer(item, "It came out in July, 2023 [1].")
    assert not contains_answer(item, "It came out in 2024.")
    assert contains_answer(_item(answer="北京", aliases=("北京市",)), "位于北京市。")


def test_metrics_of_an_empty_group_are_none() -> None:
    assert metrics([])["hit@5"] is None


def test_eval_cli_scores_a_small_set(tmp_path: Path, sample_copy: Path, fake_config: Path) -> None:
    qa = tmp_path / "qa.jsonl"
    rows = [
        {
            "id": "1",
            "question": "When was Llama 2 released?",
            "answer": "July 2023",
            "gold_source": "llama-history.pdf",
            "gold_page": 2,
            "lang": "en",
            "dataset": "samples",
            "answerable": True,
        },
        {
            "id": "2",
            "question": "没有显卡 NCCL 报错怎么办",
            "answer": None,
            "gold_source": "本地运行Llama笔记.txt",
            "lang": "zh",
            "dataset": "samples",
            "answerable": True,
        },
        {"id": "3", "question": "Who won the 1998 World Cup?", "answerable": False, "lang": "en"},
    ]
    qa.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    args = ["--config", fake_config, "--data-dir", tmp_path / "data", "eval", qa]
    result = run_cli(
        *args, "--docs", sample_copy, "--retrieval-only", "--json", "--mode", "lexical"
    )
    assert result.returncode == 0, result.stderr
    # progress shows off a terminal too (here stderr is a pipe): the ingest, then each mode
    assert re.search(r"ingest: +0%\|.*\| 0/3 \[", result.stderr), result.stderr
    assert re.search(r"lexical: 100%\|.*\| 3/3 \[", result.stderr), result.stderr
    body = json.loads(result.stdout)
    overall = body["summary"]["lexical"]["all"]
    assert overall["n"] == 3 and overall["hit@5"] == 1.0
    assert body["summary"]["lexical"]["lang:zh"]["hit@1"] == 1.0
    assert {r["id"] for r in body["items"]["lexical"]} == {"1", "2", "3"}

    table = run_cli(*args, "--docs", sample_copy, "--retrieval-only", "--mode", "hybrid")
    assert table.returncode == 0 and "| hybrid | all | 3 |" in table.stdout


def test_eval_rejects_a_malformed_file(tmp_path: Path, fake_config: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n', encoding="utf-8")
    docs = tmp_path / "docs"
    docs.mkdir()
    result = run_cli("--config", fake_config, "--data-dir", tmp_path, "eval", bad, "--docs", docs)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_stratified_sample_takes_up_to_n_of_each_dataset() -> None:
    items = [_item(id=f"a{n}", dataset="a") for n in range(10)] + [_item(id="b0", dataset="b")]
    chosen = stratified(items, 3)
    assert [i.id for i in chosen] == ["a0", "a3", "a6", "b0"]
    assert stratified(items, None) == items

"""Prompts: a question and retrieved passages in, chat messages that fit the context window out."""

from __future__ import annotations

from collections.abc import Sequence

from privatellm.config import PROMPT_TOKENS
from privatellm.engines import Engine, Message
from privatellm.extract import supporting_span
from privatellm.text import sentence_spans
from privatellm.types import ScoredChunk

# One user message: the fixed instruction, the passages, the question. With the instruction
# first every prompt starts with the same tokens, which llama.cpp keeps from the previous call
# instead of reading them again. SmolLM2-135M followed it better last when given whole passages
# (~700 tokens), but as well or better first with passages cut to answer.prompt_tokens; and it
# cited more precisely with the words "passages above" kept than with "below" or "given"
# (docs/BENCHMARKS.md). A system prompt ahead of long passages made it loop.
INSTRUCTION = (
    "Answer the question in one or two sentences using only the passages above, and cite the "
    "passage you used like [1]. If they do not contain the answer, say that the documents "
    "don't say."
)
# Chat templates add role markers around each message; this covers them with room to spare.
TEMPLATE_TOKENS = 64
# A passage cut shorter than this rarely keeps a whole sentence: fewer passages are given instead.
MIN_PASSAGE_TOKENS = 48


def build_messages(
    question: str,
    hits: Sequence[ScoredChunk],
    engine: Engine,
    answer_tokens: int,
    system: str | None = None,
    passage_tokens: int = PROMPT_TOKENS,
) -> tuple[list[Message], list[ScoredChunk]]:
    """Returns the messages for the engine and the passages that fitted, best first.

    Passages are added while the prompt plus the answer still fits the context window, so a
    long passage can never make the engine refuse the request. passage_tokens (0: no limit)
    caps what the passages cost together: each is then cut to the run of its sentences around
    the one closest to the question. A caller's system prompt goes first, as a system message.
    """
    head: list[Message] = [{"role": "system", "content": system}] if system else []
    budget = (
        engine.context_tokens
        - answer_tokens
        - TEMPLATE_TOKENS
        - engine.count_tokens(INSTRUCTION)
        - engine.count_tokens(question)
        - sum(engine.count_tokens(m["content"]) + TEMPLATE_TOKENS for m in head)
    )
    if passage_tokens:
        budget = min(budget, passage_tokens)
        hits = hits[: max(1, budget // MIN_PASSAGE_TOKENS)]
    used: list[ScoredChunk] = []
    passages: list[str] = []
    for i, hit in enumerate(hits):
        marker = f"[{len(used) + 1}]"
        text = hit.chunk.text
        if passage_tokens:
            share = budget // (len(hits) - i) - engine.count_tokens(marker) - 3
            text = excerpt(question, text, share, engine) if share > 0 else ""
            if not text:
                break
        passage = f"{marker} {' '.join(text.split())}"
        cost = engine.count_tokens(passage) + 2
        if cost > budget:
            break
        budget -= cost
        used.append(hit)
        passages.append(passage)
    user = "\n\n".join([INSTRUCTION, *passages, f"Question: {question}"])
    return [*head, {"role": "user", "content": user}], used


def excerpt(question: str, text: str, tokens: int, engine: Engine) -> str:
    """Returns the run of text's sentences around the one that shares most with question,
    within `tokens` tokens (the start of that sentence alone when even it is longer)."""
    if engine.count_tokens(text) <= tokens:
        return text
    start, end = supporting_span(text, [question])
    # Line breaks count here: the rows of a table become pieces that fit one by one.
    spans = sentence_spans(text)
    inside = [i for i, (s, e) in enumerate(spans) if s < end and e > start]
    first, last = inside[0], inside[-1] + 1

    def cost(lo: int, hi: int) -> int:
        return engine.count_tokens(text[spans[lo][0] : spans[hi - 1][1]])

    if cost(first, last) > tokens:
        return _clipped(text[spans[first][0] : spans[last - 1][1]], tokens, engine)
    grew = True
    while grew:
        grew = False
        # The words that answer usually follow the words the question repeats.
        for lo, hi in ((first, last + 1), (first - 1, last)):
            if lo >= 0 and hi <= len(spans) and cost(lo, hi) <= tokens:
                first, last, grew = lo, hi, True
    return text[spans[first][0] : spans[last - 1][1]]


def _clipped(text: str, tokens: int, engine: Engine) -> str:
    """Returns the longest start of text within `tokens` tokens."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if engine.count_tokens(text[:mid]) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    if lo < len(text) and text[lo].isalnum() and text[lo].isascii():
        lo = max(0, text.rfind(" ", 0, lo))  # not in the middle of a word
    return text[:lo].rstrip()


CONDENSE = (
    "Rewrite the follow-up question so that it can be understood without the conversation, "
    "keeping its language. Reply with the rewritten question only."
)
# Past turns kept for a rewrite: the last ones are what a follow-up refers to.
CONDENSE_TURNS = 4


def condense_messages(question: str, history: Sequence[Message]) -> list[Message]:
    """Returns the messages that ask the engine to make a follow-up question standalone."""
    turns = [
        f"{'User' if m['role'] == 'user' else 'Assistant'}: {' '.join(m['content'].split())[:500]}"
        for m in history[-CONDENSE_TURNS:]
        if m["role"] in ("user", "assistant")
    ]
    conversation = "\n".join(turns)
    user = f"Conversation:\n{conversation}\n\nFollow-up question: {question}\n\n{CONDENSE}"
    return [{"role": "user", "content": user}]


SUMMARIZE = "Summarize the text above in at most three sentences."
COMBINE = "Combine the summaries above into one summary of at most five sentences."


def summary_budget(engine: Engine, answer_tokens: int, instructions: str | None = None) -> int:
    """Returns how many tokens of text fit in one summarizing prompt."""
    instruction = max(engine.count_tokens(t) for t in (SUMMARIZE, COMBINE, instructions or ""))
    return engine.context_tokens - answer_tokens - TEMPLATE_TOKENS - instruction


def summary_messages(
    text: str, combine: bool = False, instructions: str | None = None
) -> list[Message]:
    """Returns the messages asking for a summary of text (or of partial summaries); a caller's
    instructions replace the default ones."""
    instruction = instructions or (COMBINE if combine else SUMMARIZE)
    return [{"role": "user", "content": f"{text}\n\n{instruction}"}]

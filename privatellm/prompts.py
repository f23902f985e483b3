"""Prompts: a question and retrieved passages in, chat messages that fit the context window out."""

from __future__ import annotations

from collections.abc import Sequence

from privatellm.engines import Engine, Message
from privatellm.types import ScoredChunk

# Small models follow one user message with the instruction last far better than a system
# prompt ahead of long passages (SmolLM2-135M looped on the latter).
INSTRUCTION = (
    "Answer the question in one or two sentences using only the passages above, and cite the "
    "passage you used like [1]. If they do not contain the answer, say that the documents "
    "don't say."
)
# Chat templates add role markers around each message; this covers them with room to spare.
TEMPLATE_TOKENS = 64


def _passage(n: int, hit: ScoredChunk) -> str:
    return f"[{n}] " + " ".join(hit.chunk.text.split())


def build_messages(
    question: str,
    hits: Sequence[ScoredChunk],
    engine: Engine,
    answer_tokens: int,
    system: str | None = None,
) -> tuple[list[Message], list[ScoredChunk]]:
    """Returns the messages for the engine and the passages that fitted, best first.

    Passages are added while the prompt plus the answer still fits the context window, so a
    long passage can never make the engine refuse the request. A caller's system prompt goes
    first, as a system message.
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
    used: list[ScoredChunk] = []
    passages: list[str] = []
    for hit in hits:
        text = _passage(len(used) + 1, hit)
        cost = engine.count_tokens(text) + 2
        if cost > budget:
            break
        budget -= cost
        used.append(hit)
        passages.append(text)
    user = "\n\n".join([*passages, f"Question: {question}", INSTRUCTION])
    return [*head, {"role": "user", "content": user}], used


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

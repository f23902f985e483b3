"""Answering: a question and what retrieval found in, a cited answer (or an abstention) out.

question -> (condensed, if it follows a conversation) -> retrieval (the caller's) -> abstain, or
prompt within the context budget -> model (streamed) -> citations attributed -> Answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from privatellm.citations import attribute, citations, render
from privatellm.config import AnswerMode, AnswerSettings
from privatellm.embeddings import Embedder
from privatellm.engines import DEFAULT, Message, Sampling
from privatellm.extract import Quote, agrees, asks_for, best_quote, holds_asked
from privatellm.gate import GatedModel
from privatellm.prompts import build_messages, condense_messages
from privatellm.retrieval import Retrieval
from privatellm.text import MARKERS, split_sentences
from privatellm.types import Answer, Citation, ScoredChunk

ABSTAIN = "The documents don't say: nothing retrieved for this question is close enough to it."


def abstains(found: Retrieval, settings: AnswerSettings) -> bool:
    """Returns whether to answer "the documents don't say" without calling the model: nothing
    was found, or (abstention on) the evidence is too weak."""
    weak = found.evidence.weak(settings.min_dense, settings.min_lexical)
    return not found.hits or (settings.abstain and weak)


class Answerer:
    """Turns retrieved passages into cited answers with one model and one embedding model."""

    def __init__(self, model: GatedModel, embedder: Embedder, settings: AnswerSettings) -> None:
        self._model = model
        self._embedder = embedder
        self._settings = settings

    def condense(self, question: str, history: Sequence[Message]) -> str:
        """Returns the question rewritten to stand alone, given the conversation before it."""
        if not history or not self._settings.condense:
            return question
        limit = self._model.count_tokens(question) * 3 + 32
        sampling = Sampling(max_tokens=limit, temperature=0.0)
        messages = condense_messages(question, history)
        raw = "".join(self._model.generate(messages, sampling)).strip()
        rewritten = " ".join(raw.split()).strip("\"'")
        # The bundled 135M model mostly answers or repeats the conversation instead of rewriting
        # (seen here); then retrieval gets the previous question and the follow-up together,
        # which keeps the topic in view.
        said = {" ".join(m["content"].split()) for m in history}
        if (
            not rewritten.endswith(("?", "？"))
            or rewritten in said
            or len(rewritten) > 3 * len(question) + 100
            or "\n" in raw
        ):
            previous = [m["content"] for m in history if m["role"] == "user"]
            return f"{previous[-1]} {question}" if previous else question
        return rewritten

    def reply(
        self,
        question: str,
        standalone: str,
        found: Retrieval,
        sampling: Sampling = DEFAULT,
        system: str | None = None,
        mode: AnswerMode | None = None,
    ) -> Reply:
        """Returns the answer to standalone from what was found, being generated.

        mode (default: the setting answer.mode) is generate, extract or auto; system, if
        given, is sent ahead of the passages as the system prompt."""
        mode = mode or self._settings.mode
        if abstains(found, self._settings):
            return _finished(self._abstained(question, standalone, found.hits))
        if mode == "extract":
            return _finished(self.quoted(question, standalone, found.hits))
        max_tokens = sampling.resolve(self._model.settings).max_tokens
        engine = self._model.engine
        passage_tokens = self._settings.prompt_tokens
        messages, used = build_messages(
            standalone, found.hits, engine, max_tokens, system, passage_tokens
        )

        def finish(text: str, as_mode: AnswerMode) -> Answer:
            if as_mode == "extract":
                return self.quoted(question, standalone, found.hits)
            answer = self._generated(question, standalone, text, used, as_mode == "auto")
            if as_mode == "generate":
                return answer
            # From the passages the reply lists, so that [n] means the same everywhere.
            passages = used or found.hits
            quote = self._quote(standalone, passages)
            backed = quote is None or agrees(answer.text, quote, standalone)
            if self._lands(answer, standalone) and backed:
                return answer
            return self._quoted(question, standalone, passages, quote)

        pieces = until_repeated(self._model.generate(messages, sampling))
        prompt_tokens = sum(engine.count_tokens(m["content"]) for m in messages)
        return Reply(pieces, finish, mode, used, prompt_tokens)

    def quoted(self, question: str, standalone: str, passages: list[ScoredChunk]) -> Answer:
        """Returns the quote from passages that answers standalone, or an abstention if none
        can (no model call)."""
        return self._quoted(question, standalone, passages, self._quote(standalone, passages))

    def _quote(self, standalone: str, passages: list[ScoredChunk]) -> Quote | None:
        limit = self._settings.max_quote_sentences
        return best_quote(standalone, passages, self._embedder, limit)

    def _quoted(
        self, question: str, standalone: str, passages: list[ScoredChunk], quote: Quote | None
    ) -> Answer:
        if quote is None:
            return self._abstained(question, standalone, passages)
        cited = Citation.of(quote.n, passages[quote.n - 1], (quote.start, quote.end))
        text = f"{' '.join(quote.text.split())} [{quote.n}]"
        return Answer(question, standalone, text, [cited], passages, False, quoted=True)

    def _generated(
        self,
        question: str,
        standalone: str,
        text: str,
        used: list[ScoredChunk],
        supported_only: bool,
    ) -> Answer:
        """Returns the model's text with citations attributed; supported_only keeps only the
        sentences a passage supports."""
        min_support = self._settings.min_support
        sentences = attribute(text, used, self._embedder, min_support, standalone)
        if supported_only:
            sentences = [s for s in sentences if s.cited]
        unsupported = [s.text for s in sentences if not s.supported]
        return Answer(
            question,
            standalone,
            render(sentences),
            citations(sentences, used),
            used,
            abstained=False,
            unsupported=unsupported,
        )

    @staticmethod
    def _lands(answer: Answer, question: str) -> bool:
        """Returns whether a generated answer says something supported that holds what the
        question asks for (a number, a date)."""
        return bool(answer.citations) and holds_asked(answer.text, asks_for(question))

    @staticmethod
    def _abstained(question: str, standalone: str, passages: list[ScoredChunk]) -> Answer:
        return Answer(question, standalone, ABSTAIN, [], passages, abstained=True)


def _finished(answer: Answer) -> Reply:
    """Returns a reply that is already whole: its text in one piece, no model involved."""
    return Reply(iter([answer.text]), lambda _text, _mode: answer, None, answer.passages, 0)


class Reply:
    """An answer in the making: iterating yields its text as generated; answer() finishes it.

    passages are what the model was given ([n] is passages[n-1]; the closest ones when it was
    not called) and prompt_tokens their cost, both known before the first piece."""

    def __init__(
        self,
        pieces: Iterator[str],
        finish: Callable[[str, AnswerMode], Answer],
        mode: AnswerMode | None,
        passages: list[ScoredChunk],
        prompt_tokens: int,
    ) -> None:
        self._pieces = pieces
        self._finish = finish
        self._mode = mode  # None: the answer needed no model and is the same in every mode
        self.passages = passages
        self.prompt_tokens = prompt_tokens
        self._text: list[str] = []
        self._answers: dict[AnswerMode | None, Answer] = {}

    def __iter__(self) -> Iterator[str]:
        for piece in self._pieces:
            self._text.append(piece)
            yield piece

    def close(self) -> None:
        """Stops generating (an answer left unfinished frees the model for the next one)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def answer(self, mode: AnswerMode | None = None) -> Answer:
        """Returns the finished answer with citations (generating the rest of it if need be).

        mode finishes the same generated text as another answer mode would (evaluation compares
        generate and auto without generating twice); default: the mode the reply was asked in.
        """
        mode = (mode or self._mode) if self._mode else None
        if mode not in self._answers:
            for _ in self:
                pass
            self._answers[mode] = self._finish("".join(self._text), mode or "generate")
        return self._answers[mode]


def until_repeated(pieces: Iterator[str], min_chars: int = 12) -> Iterator[str]:
    """Yields pieces until the text starts repeating a sentence it already said.

    Small models fall into loops ("It was released in 2023. It was released in 2023. ...");
    stopping there saves the time of the rest of max_tokens. The repeat shows in the stream
    (a sentence is known to be finished only when the next one starts); the finished answer
    drops it.
    """
    text = ""
    seen: set[str] = set()
    checked = 0
    for piece in pieces:
        text += piece
        finished = split_sentences(text)[:-1]  # the last one may still be growing
        for sentence in finished[checked:]:
            key = " ".join(MARKERS.sub("", sentence).lower().split())
            if len(key) >= min_chars and key in seen:
                return
            seen.add(key)
        checked = max(checked, len(finished))
        yield piece

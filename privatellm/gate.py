"""One model, one reply at a time, and a bounded queue in front of it.

llama.cpp's context is not safe for two threads, and the page (a thread per browser tab) and the
HTTP API (a thread per request) ask concurrently; a reply must never interleave with another.
Waiting is bounded twice, so a saturated server answers "busy, retry later" instead of piling up
requests forever: a full queue refuses at once, and a wait that runs out gives up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from privatellm.engines import DEFAULT, Engine, Message, Sampling
from privatellm.errors import ModelBusyError

if TYPE_CHECKING:
    from privatellm.config import EngineSettings


class ModelGate:
    def __init__(self, wait_seconds: float, max_waiting: int) -> None:
        self._model = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0
        self.wait_seconds = wait_seconds
        self.max_waiting = max_waiting

    @contextmanager
    def held(self) -> Iterator[None]:
        """Holds the model for the block, or raises ModelBusyError."""
        with self._count:
            if self._waiting >= self.max_waiting:
                raise ModelBusyError(
                    f"the model is busy: {self._waiting} questions are already waiting",
                    retry_after=self._retry_after(),
                    queue_full=True,
                )
            self._waiting += 1
        try:
            acquired = self._model.acquire(timeout=self.wait_seconds)
        finally:
            with self._count:
                self._waiting -= 1
        if not acquired:
            raise ModelBusyError(
                f"the model is busy: waited {self.wait_seconds:g} s for other answers to finish",
                retry_after=self._retry_after(),
                queue_full=False,
            )
        try:
            yield
        finally:
            self._model.release()

    def _retry_after(self) -> int:
        return max(1, math.ceil(self.wait_seconds / 4))

    @property
    def idle(self) -> bool:
        """Returns whether no reply holds the model and none waits for it."""
        return not self._model.locked() and self._waiting == 0


class GatedModel:
    """The chat model behind its gate: loaded on first use, one reply at a time."""

    def __init__(self, load: Callable[[], Engine], settings: EngineSettings) -> None:
        self._load = load
        self.settings = settings
        self.gate = ModelGate(settings.wait_seconds, settings.max_waiting)

    @cached_property
    def engine(self) -> Engine:
        """Returns the loaded engine (loading it now if nothing has used it yet)."""
        return self._load()

    @property
    def loaded(self) -> bool:
        """Returns whether the engine is in memory."""
        return "engine" in self.__dict__

    def unload(self) -> None:
        """Forgets the loaded engine; its memory is freed when no reply holds it any more (a
        reply keeps its own reference, so one under way finishes), and the next use loads it."""
        self.__dict__.pop("engine", None)

    def count_tokens(self, text: str) -> int:
        """Returns the length of text in the model's tokens."""
        return self.engine.count_tokens(text)

    def generate(self, messages: Sequence[Message], sampling: Sampling = DEFAULT) -> Iterator[str]:
        """Yields the engine's reply, holding the model until it is finished or abandoned."""
        engine = self.engine
        with self.gate.held():
            yield from engine.stream(messages, sampling)

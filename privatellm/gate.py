"""One model, one reply at a time, and a bounded queue in front of it.

llama.cpp's context is not safe for two threads, and the page (a thread per browser tab) and the
HTTP API (a thread per request) ask concurrently; a reply must never interleave with another.
Waiting is bounded twice, so a saturated server answers "busy, retry later" instead of piling up
requests forever: a full queue refuses at once, and a wait that runs out gives up.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from privatellm.errors import ModelBusyError


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

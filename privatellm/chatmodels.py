"""The chat models one service can answer with, chosen by name at run time.

The configured model and every registered chat model (`privatellm models list`) can answer; the
page's model picker and the API's `model` field name one. Each answers through a service of its
own that shares the store, the embedding model and the write lock, so each has its own gate (two
models answer two questions at once). At most `engine.max_loaded` engines stay in memory: picking
another unloads the least recently used idle one, which loads again when next asked.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from privatellm.config import EngineSettings, model_label
from privatellm.gate import GatedModel
from privatellm.registry import Registry


class _Answering(Protocol):
    @property
    def chat_model(self) -> GatedModel: ...


S = TypeVar("S", bound=_Answering)


class ChatModels(Generic[S]):
    """The configured chat model and the registered ones, each loaded on first use."""

    def __init__(
        self,
        base: S,
        engine: EngineSettings,
        registry: Registry,
        variant: Callable[[str, str, str], S],
    ) -> None:
        """base answers with the configured model (engine); variant(kind, model, lora) builds
        one answering with another model (engine.kind, engine.model and engine.lora changed)."""
        self._base = base
        self._engine = engine
        self._registry = registry
        self._variant = variant
        self._services: OrderedDict[str, S] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    @property
    def default(self) -> str:
        """Returns the name the configured model is known by."""
        engine = self._engine
        if engine.kind in ("llamacpp", "torch"):
            found = self._registry.by_path(engine.lora or engine.model)
            if found is not None:
                return found.name
        return model_label(engine.model)

    def names(self) -> list[str]:
        """Returns the configured model's name, then every other registered chat model's."""
        chat = [m.name for m in self._registry.all() if m.role == "chat"]
        return list(dict.fromkeys([self.default, *chat]))

    def service(self, name: str | None = None) -> S:
        """Returns the service answering with the model called name (None: the configured one),
        unloading the least recently used idle models beyond engine.max_loaded."""
        with self._lock:
            key = self._key(name)
            service = self._services.get(key) or self._build(key)
            self._services[key] = service
            self._services.move_to_end(key)
            self._unload_beyond(self._engine.max_loaded, keep=key)
            return service

    def loaded(self) -> list[str]:
        """Returns the names of the models in memory, least recently used first."""
        with self._lock:
            return [k for k, s in self._services.items() if s.chat_model.loaded]

    def _key(self, name: str | None) -> str:
        default = self.default
        if not name or name.lower() == default.lower():
            return default
        return self._registry.get(name, "chat").name

    def _build(self, key: str) -> S:
        if key == self.default:
            return self._base
        model = self._registry.get(key, "chat")
        kind = "torch" if self._engine.kind == "torch" else model.engine_kind
        if model.kind == "lora":
            return self._variant(kind, model.base, model.path)
        return self._variant(kind, model.path, "")

    def _unload_beyond(self, limit: int, keep: str) -> None:
        # The model about to answer counts as loaded: it loads on its first reply.
        others = [k for k, s in self._services.items() if k != keep and s.chat_model.loaded]
        for key in others[: max(0, len(others) - (limit - 1))]:
            gated = self._services[key].chat_model
            if gated.gate.idle:  # never pull a model from under a reply; it goes next time
                gated.unload()

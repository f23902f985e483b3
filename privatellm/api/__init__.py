"""The HTTP API (`privatellm serve`): OpenAI- and PrivateGPT-compatible routes over a Service."""

from privatellm.api.app import create_app

__all__ = ["create_app"]

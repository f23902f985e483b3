"""privatellm."""

"""The OpenAI-compatible REST front of lidroute."""

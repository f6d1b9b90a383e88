"""A vLLM-compatible simulator engine: the same OpenAI endpoints, streams and metrics."""

"""Our gateway beside vLLM's router and LiteLLM's proxy on the same engines (see
``__main__``)."""

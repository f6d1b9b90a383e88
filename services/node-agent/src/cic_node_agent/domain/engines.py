"""How each engine is started: its command line, from the node's settings."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineLaunch", "engine_command"]


@dataclass(frozen=True)
class EngineLaunch:
    engine: str
    model: str
    host: str
    port: int
    max_model_len: int
    gpus: int = 1
    token_delay: float = 0.0
    extra_args: tuple[str, ...] = ()


def engine_command(python: str, launch: EngineLaunch) -> list[str]:
    """The argv that starts ``launch.engine``; vLLM shards over every GPU of the node
    (tensor parallelism = ``launch.gpus``) and streams ``s3://`` weights.

    Raises:
        ValueError: the engine is not one we know.
    """
    common = ["--host", launch.host, "--port", str(launch.port)]
    if launch.engine == "sim":
        return [
            python, "-m", "cic_node_agent.engines.sim", *common,
            "--model", launch.model,
            "--max-model-len", str(launch.max_model_len),
            "--token-delay", str(launch.token_delay),
            *launch.extra_args,
        ]  # fmt: skip
    if launch.engine == "vllm":
        if launch.model.startswith(("s3://", "gs://")):
            # Weights stream from object storage straight into GPU memory.
            common += ["--load-format", "runai_streamer"]
        return [
            python, "-m", "vllm.entrypoints.openai.api_server", *common,
            "--model", launch.model,
            "--served-model-name", launch.model,
            "--max-model-len", str(launch.max_model_len),
            "--tensor-parallel-size", str(launch.gpus),
            *launch.extra_args,
        ]  # fmt: skip
    raise ValueError(f"unknown engine {launch.engine!r}")

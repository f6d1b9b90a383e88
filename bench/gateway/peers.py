"""The other proxies, each installed from PyPI into a virtual environment of its own.

Neither belongs in the workspace (``uv.lock``): they are only measured. Each lives in
``.cic/bench-envs/<name>`` (git-ignored), made with ``python3 -m venv`` and pip on first
use and reused while it holds the pinned version. Both run with their documented
defaults, but for what pointing them at our engines takes.

- vLLM's router (``vllm-router``, Rust behind a Python launcher): one router per model,
  since it sends every request to any of its workers, whatever model it names.
- LiteLLM's proxy: one proxy, both models in its ``config.yaml`` as ``hosted_vllm/``
  deployments (three each, shuffled among), a random master key, and the model cost map
  read from the package rather than fetched.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cic_common.processes import free_port

from .procs import serve
from .targets import FAST, Backends, PeerUnavailable, Target

__all__ = ["LITELLM", "VLLM_ROUTER", "ensure_env", "litellm", "vllm_router"]

ROOT = Path(__file__).resolve().parents[2]
ENVS = ROOT / ".cic" / "bench-envs"
VLLM_ROUTER = "vllm-router==0.1.17"
LITELLM = "litellm[proxy]==1.106.2"


def _failure(done: subprocess.CompletedProcess[str]) -> str:
    """The line of pip's output that says what went wrong (not its many warnings)."""
    lines = [ln for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [f"exit status {done.returncode}"])[-1].strip()


def ensure_env(name: str, requirement: str, program: str) -> Path:
    """``program`` from ``requirement`` in ``.cic/bench-envs/<name>``, installed if needed.

    Raises:
        PeerUnavailable: the environment could not be made or the install failed.
    """
    env = ENVS / name
    executable, marker = env / "bin" / program, env / "bench-requirement.txt"
    if executable.exists() and marker.is_file() and marker.read_text().strip() == requirement:
        return executable
    print(f"installing {requirement} into {env.relative_to(ROOT)} (python3 -m venv, pip; "
          "once) ...", file=sys.stderr, flush=True)  # fmt: skip
    started = time.monotonic()
    python = shutil.which("python3") or sys.executable
    for argv in ([python, "-m", "venv", "--clear", str(env)],
                 [str(env / "bin" / "pip"), "install", "--quiet", requirement]):  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise PeerUnavailable(f"install of {requirement} failed: {_failure(done)}")
    if not executable.exists():
        raise PeerUnavailable(f"{requirement} installed no {program!r}")
    marker.write_text(requirement + "\n")
    print(f"installed {requirement} in {time.monotonic() - started:.0f} s", file=sys.stderr,
          flush=True)  # fmt: skip
    return executable


@contextmanager
def vllm_router(backends: Backends, workdir: Path) -> Iterator[Target]:
    """One ``vllm-router --policy round_robin`` per model over that model's engines."""
    program = ensure_env("vllm-router", VLLM_ROUTER, "vllm-router")
    urls, pids = {}, {}
    with ExitStack() as stack:
        for model, engines in backends.engines.items():
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            argv = [str(program), "--host", "127.0.0.1", "--port", str(port),
                    "--prometheus-port", str(free_port()),  # else both take 29000
                    "--policy", "round_robin", "--worker-urls", *engines]  # fmt: skip
            log = workdir / f"vllm-router-{model}.log"
            pids[model] = stack.enter_context(serve(argv, f"{base}/health", log))
            urls[model] = base
        pid = pids.get(FAST, next(iter(pids.values())))  # charged: the bench-fast router's
        yield Target(f"vllm-router {VLLM_ROUTER.split('==')[1]}", urls, pid,
                     note="round_robin, one router per model")  # fmt: skip


def _litellm_config(backends: Backends, master_key: str) -> str:
    """LiteLLM's ``config.yaml``: every engine a deployment of its model."""
    lines = ["model_list:"]
    for model, engines in backends.engines.items():
        for url in engines:
            lines += [f"  - model_name: {model}", "    litellm_params:",
                      f"      model: hosted_vllm/{model}", f"      api_base: {url}/v1",
                      "      api_key: none"]  # fmt: skip
    lines += ["general_settings:", f"  master_key: {master_key}"]
    return "\n".join(lines) + "\n"


@contextmanager
def litellm(backends: Backends, workdir: Path) -> Iterator[Target]:
    """LiteLLM's proxy with its defaults (one uvicorn worker) over every engine."""
    program = ensure_env("litellm", LITELLM, "litellm")
    master_key = f"sk-{secrets.token_hex(16)}"
    home = workdir / "litellm"
    home.mkdir()
    (home / "config.yaml").write_text(_litellm_config(backends, master_key))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [str(program), "--config", "config.yaml", "--host", "127.0.0.1", "--port", str(port)]
    env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with serve(argv, f"{base}/health/liveliness", home / "litellm.log", env=env, cwd=home) as pid:
        yield Target(f"LiteLLM {LITELLM.split('==')[1]}", dict.fromkeys(backends.engines, base),
                     pid, headers={"Authorization": f"Bearer {master_key}"},
                     note="proxy, 1 worker, no database")  # fmt: skip

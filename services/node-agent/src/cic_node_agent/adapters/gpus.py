"""Reading this node's GPUs with ``nvidia-smi``, where there is one."""

from __future__ import annotations

import asyncio
import logging
import shutil

from cic_common.events import GpuFacts

from cic_node_agent.domain.gpus import NVIDIA_SMI_QUERY, parse_nvidia_smi

__all__ = ["read_gpus"]

log = logging.getLogger(__name__)


async def read_gpus(within: float = 5.0) -> tuple[GpuFacts, ...]:
    """The node's GPUs; empty without ``nvidia-smi`` or when it fails (a heartbeat
    goes out regardless)."""
    if shutil.which(NVIDIA_SMI_QUERY[0]) is None:
        return ()
    try:
        proc = await asyncio.create_subprocess_exec(
            *NVIDIA_SMI_QUERY, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(proc.communicate(), within)
    except (OSError, TimeoutError):
        log.warning("nvidia-smi did not answer")
        return ()
    return tuple(parse_nvidia_smi(out.decode(errors="replace")))

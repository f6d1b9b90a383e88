"""GPU facts from ``nvidia-smi``'s CSV query output."""

from __future__ import annotations

from cic_common.events import GpuFacts

__all__ = ["NVIDIA_SMI_QUERY", "GpuFacts", "parse_nvidia_smi"]

NVIDIA_SMI_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,name,utilization.gpu,memory.used,memory.total,temperature.gpu",
    "--format=csv,noheader,nounits",
]


def _number(value: str) -> float | None:
    """``[N/A]`` and friends read as unknown rather than failing the whole row."""
    try:
        return float(value)
    except ValueError:
        return None


def parse_nvidia_smi(output: str) -> list[GpuFacts]:
    """One ``GpuFacts`` per well-formed line of ``NVIDIA_SMI_QUERY``'s output."""
    gpus = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 6 or not cells[0].isdigit():
            continue
        gpus.append(
            GpuFacts(
                index=int(cells[0]),
                name=cells[1],
                utilization_pct=_number(cells[2]),
                memory_used_mib=_number(cells[3]),
                memory_total_mib=_number(cells[4]),
                temperature_c=_number(cells[5]),
            )
        )
    return gpus

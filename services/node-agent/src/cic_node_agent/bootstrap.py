"""Wires the node agent: the engine process, the bus, and signal handling."""

from __future__ import annotations

import sys

from cic_common.bus import Bus
from cic_common.service import Part, serve

from cic_node_agent.adapters.engine import EngineProcess
from cic_node_agent.adapters.gpus import read_gpus
from cic_node_agent.adapters.metadata import WATCHERS
from cic_node_agent.domain.engines import EngineLaunch, engine_command
from cic_node_agent.entrypoints.agent import NodeAgent
from cic_node_agent.entrypoints.preemption import PreemptionWatch
from cic_node_agent.settings import NodeAgentSettings

__all__ = ["run"]


async def run(settings: NodeAgentSettings) -> None:
    launch = EngineLaunch(
        engine=settings.node_engine,
        model=settings.node_model,
        host=settings.engine_host,
        port=settings.engine_port,
        max_model_len=settings.node_max_model_len,
        gpus=settings.node_gpus,
        token_delay=settings.sim_token_delay,
        extra_args=tuple(settings.node_engine_args),
    )
    engine = EngineProcess(
        engine_command(sys.executable, launch),
        f"http://{settings.engine_host}:{settings.engine_port}",
    )
    # The control plane declares the streams; a node only publishes into them.
    bus = await Bus.connect(
        settings.nats_url,
        producer=f"node-agent/{settings.node_id}",
        declare=False,
        signing_secret=settings.node_secret,
    )
    agent = NodeAgent(
        settings.node_id,
        settings.node_model,
        engine,
        bus,
        advertise_url=f"http://{settings.advertise_host}:{settings.engine_port}",
        heartbeat_interval=settings.heartbeat_interval,
        ready_timeout=settings.engine_ready_timeout,
        restart_limit=settings.engine_restart_limit,
        drain_timeout=settings.drain_timeout,
        read_gpus=read_gpus,
    )
    parts: list[Part] = [agent]
    make_watcher = WATCHERS.get(settings.cloud)
    if make_watcher is not None:
        watcher = make_watcher(settings.metadata_url, settings.azure_vm_name)
        parts.append(
            PreemptionWatch(
                watcher, agent.on_notice, agent.recommend_rebalance,
                settings.preemption_poll_interval,
            )
        )  # fmt: skip
    try:
        await serve(parts)
    finally:
        await engine.close()
        await bus.close()

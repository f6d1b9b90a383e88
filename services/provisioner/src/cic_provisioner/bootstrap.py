"""Wires the provisioner: its backends, its two consumers and the inventory responder."""

from __future__ import annotations

from collections.abc import Callable

from cic_common.bus import Bus
from cic_common.db import create_pool, migrate
from cic_common.events import LaunchRequested, TerminateRequested
from cic_common.service import Part, serve
from cic_common.streams import INVENTORY_SUBJECT, PRICES_SUBJECT

from cic_provisioner.adapters.catalog import CatalogDirectory
from cic_provisioner.adapters.local import LocalBackend
from cic_provisioner.adapters.skypilot import SkyPilotBackend
from cic_provisioner.adapters.store import ProvisionerStore
from cic_provisioner.domain.compute import ComputeBackend
from cic_provisioner.domain.tasks import AgentInstall
from cic_provisioner.entrypoints.handlers import Provisioner
from cic_provisioner.entrypoints.prices import PriceResponder
from cic_provisioner.settings import ProvisionerSettings

__all__ = ["build_backends", "run"]


def build_backends(settings: ProvisionerSettings) -> dict[str, ComputeBackend]:
    """The backends ``CIC_BACKENDS`` enables, by name.

    Raises:
        ValueError: a name no backend has.
    """
    available: dict[str, Callable[[], ComputeBackend]] = {
        "local": lambda: LocalBackend(
            settings.state_dir.resolve(),
            nats_url=settings.node_nats_url or settings.nats_url,
            heartbeat_interval=settings.heartbeat_interval,
            stop_timeout=settings.stop_timeout,
            extra_env=settings.node_env,
            launch_delay=settings.local_launch_delay,
        ),
        "skypilot": lambda: SkyPilotBackend(
            nats_url=settings.node_nats_url or settings.nats_url,
            install=AgentInstall(settings.agent_package, settings.vllm_package),
            concurrency=settings.skypilot_concurrency,
            launch_timeout=settings.skypilot_launch_timeout,
        ),
    }
    unknown = set(settings.backends) - set(available)
    if unknown:
        raise ValueError(f"unknown backends {sorted(unknown)}; known: {sorted(available)}")
    return {name: available[name]() for name in settings.backends}


async def run(settings: ProvisionerSettings) -> None:
    pool = await create_pool(settings.postgres_dsn)
    await migrate(pool)
    bus = await Bus.connect(
        settings.nats_url, producer=f"provisioner/{settings.instance_id}", update_streams=False
    )
    provisioner = Provisioner(ProvisionerStore(pool), build_backends(settings), bus)
    inventory = await bus.nc.subscribe(
        INVENTORY_SUBJECT, queue="provisioner", cb=provisioner.on_inventory_request
    )
    prices = PriceResponder(CatalogDirectory(settings.catalog_dir))
    pricing = await bus.nc.subscribe(PRICES_SUBJECT, queue="provisioner", cb=prices.on_request)
    md = settings.max_deliver
    parts: list[Part] = [
        bus.consumer(LaunchRequested, "provisioner-launch-requested",
                     provisioner.on_launch_requested, max_deliver=md,
                     concurrency=settings.launch_concurrency, ack_wait=120.0),
        bus.consumer(TerminateRequested, "provisioner-terminate-requested",
                     provisioner.on_terminate_requested, max_deliver=md,
                     concurrency=settings.launch_concurrency, ack_wait=120.0),
    ]  # fmt: skip
    try:
        await serve(parts)
    finally:
        await inventory.unsubscribe()
        await pricing.unsubscribe()
        await bus.close()
        await pool.close()

"""``cic-gateway``: serve the OpenAI-compatible and admin APIs."""

from __future__ import annotations

import uvicorn
from cic_common.logs import setup_logging
from cic_common.telemetry import setup_tracing

from cic_gateway.bootstrap import create_app
from cic_gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    setup_logging("gateway", settings.instance_id, settings.log_level, settings.log_format)
    setup_tracing("gateway", settings.otel_exporter)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()

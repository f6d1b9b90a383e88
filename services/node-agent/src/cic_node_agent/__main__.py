"""``cic-node-agent``: supervise this node's engine and speak for the node."""

from __future__ import annotations

from cic_common.service import run_service

from cic_node_agent.bootstrap import run
from cic_node_agent.settings import NodeAgentSettings


def main() -> None:
    settings = NodeAgentSettings()  # node id, model and port come from the provisioner
    run_service("node-agent", settings, lambda: run(settings))


if __name__ == "__main__":
    main()

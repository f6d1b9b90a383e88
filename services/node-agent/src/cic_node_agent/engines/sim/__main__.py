"""``cic-sim-engine``: run the simulator as a vLLM stand-in on one port."""

from __future__ import annotations

import argparse

import uvicorn

from cic_node_agent.engines.sim.app import SimConfig, create_app


def main() -> None:
    parser = argparse.ArgumentParser(prog="cic-sim-engine", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds per token")
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()
    if args.token_delay < 0:
        parser.error("--token-delay must not be negative")
    if args.max_model_len <= 0:
        parser.error("--max-model-len must be positive")
    config = SimConfig(args.model, args.token_delay, args.max_model_len)
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

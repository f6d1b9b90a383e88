"""``cic-sim-engine``: run the simulator as a vLLM stand-in on one port."""

from __future__ import annotations

import argparse

import uvicorn
from pydantic import ValidationError

from cic_node_agent.engines.sim.app import SimConfig, create_app
from cic_node_agent.engines.sim.faults import Faults
from cic_node_agent.engines.sim.latency import MAX_NUM_SEQS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cic-sim-engine",
        description=__doc__,
        epilog="Faults can also be read and set while running: GET/POST /sim/faults (JSON).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--max-model-len", type=int, default=4096)
    latency = parser.add_argument_group("latency model (every figure is zero by default)")
    latency.add_argument("--token-delay", "--inter-token-latency", dest="token_delay",
                         type=float, default=0.0, metavar="S",
                         help="seconds between two tokens")  # fmt: skip
    latency.add_argument("--ttft-overhead", type=float, default=0.0, metavar="S",
                         help="seconds before the first token, besides the prefill")  # fmt: skip
    latency.add_argument("--prefill-per-token", type=float, default=0.0, metavar="S",
                         help="seconds of prefill per prompt token")  # fmt: skip
    latency.add_argument("--max-num-seqs", type=int, default=MAX_NUM_SEQS,
                         help="requests in the batch at once; the rest wait")  # fmt: skip
    latency.add_argument("--time-factor-under-load", type=float, default=1.0, metavar="X",
                         help="how much slower a full batch runs than one request")  # fmt: skip
    output = parser.add_argument_group("output")
    output.add_argument("--seed", type=int, default=0, help="changes every text and vector")
    output.add_argument("--embedding-dim", type=int, default=64)
    faults = parser.add_argument_group("faults")
    faults.add_argument("--fault-crash", action="store_true", help="exit on the first request")
    faults.add_argument("--fault-hang", action="store_true",
                        help="answer nothing (but /sim/faults) until cleared")  # fmt: skip
    faults.add_argument("--fault-error-rate", type=float, default=0.0, metavar="SHARE",
                        help="share of completions answered 500 (1: all)")  # fmt: skip
    faults.add_argument("--fault-slowdown", type=float, default=1.0, metavar="X",
                        help="multiplier of every latency")  # fmt: skip
    return parser


def parse_config(argv: list[str] | None = None) -> tuple[SimConfig, str, int]:
    """The simulator's settings, host and port from the command line; exits on bad flags."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.max_model_len <= 0:
        parser.error("--max-model-len must be positive")
    if args.embedding_dim <= 0:
        parser.error("--embedding-dim must be positive")
    try:
        faults = Faults(
            crash=args.fault_crash,
            hang=args.fault_hang,
            error_rate=args.fault_error_rate,
            slowdown=args.fault_slowdown,
        )
    except ValidationError as exc:
        parser.error(f"bad fault: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
    config = SimConfig(
        model=args.model,
        token_delay=args.token_delay,
        max_model_len=args.max_model_len,
        ttft_overhead=args.ttft_overhead,
        prefill_per_token=args.prefill_per_token,
        max_num_seqs=args.max_num_seqs,
        time_factor_under_load=args.time_factor_under_load,
        seed=args.seed,
        embedding_dim=args.embedding_dim,
        faults=faults,
    )
    try:
        config.latency()
    except ValueError as exc:
        parser.error(str(exc))
    return config, args.host, args.port


def main() -> None:
    config, host, port = parse_config()
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

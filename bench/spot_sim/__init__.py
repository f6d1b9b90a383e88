"""Spot availability trace replay: cost and strength of placement policies, side by side.

Run ``uv run python -m bench.spot_sim --help`` from the repository root; see ``__main__``.
"""

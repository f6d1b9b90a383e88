"""Cluster names: the documented pattern, within SkyPilot's limits, and reversible."""

from __future__ import annotations

import re

import pytest
from cic_provisioner.domain.compute import cluster_name, node_id_of


@pytest.mark.parametrize(
    ("provider", "region", "gpu", "spot", "expected"),
    [
        ("aws", "us-east-1", "H100", True, "cic-aws-us-east-1-h100-spot-n0123456789ab"),
        ("", "", "A100-80GB", False, "cic-any-any-a100-80gb-od-n0123456789ab"),
        ("GCP", "europe_west4", "L4", True, "cic-gcp-europe-west4-l4-spot-n0123456789ab"),
    ],
)
def test_name_follows_the_pattern(
    provider: str, region: str, gpu: str, spot: bool, expected: str
) -> None:
    assert (
        cluster_name(provider=provider, region=region, gpu=gpu, spot=spot, node_id="n0123456789ab")
        == expected
    )


def test_long_names_are_cut_but_keep_the_node_id() -> None:
    name = cluster_name(
        provider="azure", region="australiasoutheast" * 3, gpu="H100", spot=True, node_id="n1" * 6
    )
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", name)
    assert node_id_of(name) == "n1" * 6


def test_foreign_clusters_have_no_node_id() -> None:
    assert node_id_of("my-own-cluster") is None

"""Launch failures in classes, and prices read from SkyPilot catalogs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cic_provisioner.adapters.catalog import CatalogDirectory
from cic_provisioner.domain.failures import classify
from cic_provisioner.domain.prices import parse_catalog, rank_options
from cic_provisioner.entrypoints.prices import PriceResponder


@pytest.mark.parametrize(
    ("error_type", "message", "reason_class", "retryable"),
    [
        ("ResourcesUnavailableError", "Failed to acquire resources in all zones", "no_capacity",
         True),
        ("ResourcesUnavailableError", "InsufficientInstanceCapacity: quota exceeded", "quota",
         False),
        ("CloudError", "requests error (ConnectionError): Failed to resolve 'x'", "unreachable",
         True),
        ("NoCloudAccessError", "No cloud access available", "auth", False),
        ("CloudError", "The security token included in the request is invalid: unauthorized",
         "auth", False),
        ("InvalidSkyPilotConfigError", "bad key", "bad_spec", False),
        ("TimeoutError", "", "timeout", True),
        ("RuntimeError", "something odd", "internal", False),
        ("RuntimeError", "Failed to start SkyPilot API server at http://127.0.0.1:46580",
         "unreachable", True),
    ],
)  # fmt: skip
def test_failures_are_classed(
    error_type: str, message: str, reason_class: str, retryable: bool
) -> None:
    failure = classify(error_type, message)
    assert (failure.reason_class, failure.retryable) == (reason_class, retryable)
    assert failure.reason.startswith(error_type)


AWS = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone
p5.48xlarge,H100,8,192,2048,,98.32,39.00,us-east-1,us-east-1a
p5.48xlarge,H100,8,192,2048,,98.32,31.50,us-west-2,us-west-2b
m5.large,,,2,8,,0.096,0.04,us-east-1,us-east-1a
"""  # noqa: E501
GCP = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone
a3-highgpu-8g,H100,8,208,1872,,88.25,,us-central1,us-central1-a
"""  # noqa: E501
LAMBDA = """InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,SpotPrice
gpu_8x_h100_sxm5,H100,8.0,208.0,1800.0,23.92,us-east-1,,
gpu_1x_h100_pcie,H100,1.0,26.0,200.0,2.49,us-east-1,,
"""  # noqa: E501


def test_catalogs_of_every_layout_rank_on_demand_cheapest_first() -> None:
    rows = parse_catalog("aws", AWS) + parse_catalog("gcp", GCP) + parse_catalog("lambda", LAMBDA)
    ranked = rank_options(rows, "h100", 8, spot=False)
    assert [(o.cloud, o.region, o.on_demand) for o in ranked] == [
        ("lambda", "us-east-1", 23.92),
        ("gcp", "us-central1", 88.25),
        ("aws", "us-east-1", 98.32),
        ("aws", "us-west-2", 98.32),
    ]


def test_spot_ranking_skips_places_without_a_spot_price_and_honours_preference() -> None:
    rows = parse_catalog("aws", AWS) + parse_catalog("gcp", GCP)
    spot = rank_options(rows, "H100", 8, spot=True)
    assert [(o.region, o.spot) for o in spot] == [("us-west-2", 31.5), ("us-east-1", 39.0)]
    same_price = parse_catalog("aws", AWS.replace("98.32,31.50", "98.32,39.00"))
    preferred = rank_options(same_price, "H100", 8, spot=True, region_preference=["us-west-2"])
    assert preferred[0].region == "us-west-2"


def test_the_catalog_directory_reads_every_cloud(tmp_path: Path) -> None:
    for cloud, text in (("aws", AWS), ("lambda", LAMBDA)):
        (tmp_path / cloud).mkdir()
        (tmp_path / cloud / "vms.csv").write_text(text)
    catalogs = CatalogDirectory(tmp_path)
    assert catalogs.clouds() == ["aws", "lambda"]
    assert {r.cloud for r in catalogs.rows()} == {"aws", "lambda"}


SHARED_LAMBDA = Path(__file__).parents[3].parent / "shared" / "catalogs" / "v8" / "lambda"


@pytest.mark.skipif(
    not (SHARED_LAMBDA / "vms.csv").exists(),
    reason="the real Lambda catalog lives in ../shared/catalogs/v8/lambda, absent here",
)
def test_prices_on_the_real_lambda_catalog() -> None:
    rows = CatalogDirectory(SHARED_LAMBDA.parent).rows()
    one = rank_options(rows, "H100", 1, spot=False)
    eight = rank_options(rows, "H100", 8, spot=False)
    assert one
    assert eight
    assert all(o.cloud == "lambda" for o in one + eight)
    assert one[0].on_demand is not None
    assert eight[0].on_demand is not None
    assert eight[0].on_demand > one[0].on_demand
    assert [o.on_demand for o in one] == sorted(o.on_demand or 0 for o in one)
    assert rank_options(rows, "H100", 1, spot=True) == []  # Lambda sells no spot


@pytest.mark.parametrize(
    "raw", [b"{", b'{"count": 8}', b'{"gpu": "H100; rm -rf /"}', b'{"gpu": "H100", "x": 1}']
)
def test_malformed_price_queries_get_an_error_not_silence(raw: bytes, tmp_path: Path) -> None:
    answer = PriceResponder(CatalogDirectory(tmp_path)).answer(raw)
    assert set(answer) == {"error"}
    assert answer["error"]

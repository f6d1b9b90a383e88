"""The gateway benchmark's pure parts: reading wrk's report, pacing wrk, percentiles."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.gateway.load import lua_script, pacing, parse_wrk
from bench.gateway.profile import Profile, top_frames
from bench.gateway.ttft import Ttft, percentile

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8080/v1/chat/completions
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   109.73ms   51.50ms 459.19ms   84.25%
    Req/Sec   602.91    211.49     1.12k    73.91%
  Latency Distribution
     50%  850.00us
     75%  119.31ms
     90%  170.68ms
     99%    1.20s\x20
  8423 requests in 14.07s, 4.39MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:    598.59
Transfer/sec:    319.76KB
"""


def test_wrk_output_is_read_into_numbers_in_milliseconds() -> None:
    result = parse_wrk(WRK_OUTPUT)
    assert result.requests == 8423
    assert result.rate == pytest.approx(598.59)
    assert result.p50_ms == pytest.approx(0.85)  # microseconds converted
    assert result.p99_ms == pytest.approx(1200.0)  # seconds converted
    assert result.failed == 7 + 2 + 3  # non-2xx answers and socket errors


def test_a_clean_run_has_no_failures_and_garbage_is_refused() -> None:
    clean = "\n".join(ln for ln in WRK_OUTPUT.splitlines() if "errors" not in ln
                      and "Non-2xx" not in ln)  # fmt: skip
    assert parse_wrk(clean).failed == 0
    assert math.isnan(parse_wrk(clean.replace("99%", "98%")).p99_ms)
    with pytest.raises(ValueError, match="not wrk output"):
        parse_wrk("unable to connect to 127.0.0.1:8080 Connection refused")


def test_pacing_offers_the_rate_asked_with_each_connection_about_40_ms_apart() -> None:
    connections, spacing_ms = pacing(750.0)
    assert connections == 30
    assert connections * 1000 / spacing_ms == pytest.approx(750.0)
    assert pacing(10.0) == (2, 200.0)  # at least two connections
    assert pacing(100_000.0)[0] == 64  # at most 64


def test_the_lua_script_escapes_headers_and_paces_only_when_asked() -> None:
    plain = lua_script(Path("/tmp/body.json"), {"Authorization": 'Bearer "x"'}, None)
    assert 'wrk.headers["Authorization"] = "Bearer \\"x\\""' in plain
    assert "io.open(\"/tmp/body.json\"):read('*a')" in plain
    assert "function delay()" not in plain
    paced = lua_script(Path("/tmp/body.json"), {}, 41.25)
    assert "local mean = 41.250" in paced
    assert "function delay()" in paced


def test_ttft_overhead_is_the_difference_of_percentiles() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0
    assert math.isnan(percentile([], 0.5))
    ttft = Ttft(target=[22.0, 23.0, 30.0], direct=[21.0, 21.5, 25.0], failed=0)
    assert ttft.added(0.5) == pytest.approx(1.5)
    assert ttft.added(0.99) == pytest.approx(5.0)


def test_the_profile_lists_frames_by_their_own_share_without_idle_waits(tmp_path: Path) -> None:
    loop = "run (asyncio/runners.py:118)"
    collapsed = tmp_path / "stacks.collapsed"
    collapsed.write_text(
        f'process 1:"python -m cic_gateway";{loop};send (cic_gateway/adapters/http1.py:270) 6\n'
        f'process 1:"python -m cic_gateway";{loop};answer (openai_api.py:100);'
        "loads (json/__init__.py:346) 3\n"
        f'process 1:"python -m cic_gateway";{loop};select (selectors.py:468) 50\n'
        "not a line\n"
    )
    stacks = Profile(collapsed).stacks()
    assert sum(stacks.values()) == 59
    top = top_frames(stacks)
    assert [(frame, round(own, 2), round(total, 2)) for frame, own, total in top] == [
        ("http1.send", 0.67, 0.67),
        ("__init__.loads", 0.33, 0.33),
    ]  # fmt: skip  (the idle select is left out)
    assert Profile(tmp_path / "absent").stacks() == {}

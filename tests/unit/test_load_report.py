"""The load benchmark reads wrk's summary right: a wrong parse would misstate every figure."""

from __future__ import annotations

import pytest

from bench.recommend_load import parse_wrk

# wrk 4.1.0 against a server answering 404, with bench/recommend_load.lua's summary line.
CAPTURED = """\
Running 1s test @ http://127.0.0.1:18777
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.03ms    3.73ms  37.34ms   96.88%
    Req/Sec     1.29k   148.67     1.41k    90.00%
  1284 requests in 1.00s, 652.03KB read
  Non-2xx or 3xx responses: 1284
Requests/sec:   1282.20
Transfer/sec:    651.12KB
WRK_JSON {"requests": 1284, "duration_us": 1001402, "bytes": 667680, "p50_us": 1387, \
"p90_us": 2280, "p99_us": 26430, "max_us": 37343, "errors": 0, "non_2xx": 1284}
"""


def test_parse_wrk_summary_line_gives_rate_percentiles_in_ms_and_failures() -> None:
    load = parse_wrk(CAPTURED)
    assert load.rate == pytest.approx(1282.2, abs=0.1)
    assert (load.p50_ms, load.p99_ms) == (1.387, 26.43)
    assert load.failed == 1284


def test_parse_wrk_without_summary_line_raises() -> None:
    with pytest.raises(ValueError, match="no summary line"):
        parse_wrk(CAPTURED.split("WRK_JSON")[0])

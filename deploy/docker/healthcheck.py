"""The image's HEALTHCHECK: exit 0 when the role running in this container answers over HTTP.

One image runs every role, and each role listens on its own port: the API serves `/healthz`,
the workers serve `/metrics` (consume, train, dispatch). A container runs one role, so the
first of these that answers is that role. Ports come from the same `PARCOURS_*` variables the
roles read; a role started with `--port` instead of `PARCOURS_API_PORT` is not found here.
A worker whose metrics port is set to 0 has nothing to probe and is reported unhealthy.
"""

from __future__ import annotations

import os
import sys
import urllib.request

TIMEOUT_S = 2.0

# (variable, default port, path): the defaults are those of service/settings.py.
PROBES = (
    ("PARCOURS_API_PORT", 8000, "/healthz"),
    ("PARCOURS_CONSUMER_METRICS_PORT", 9464, "/metrics"),
    ("PARCOURS_MODELS_TRAINER_METRICS_PORT", 9465, "/metrics"),
    ("PARCOURS_WEBHOOKS_METRICS_PORT", 9466, "/metrics"),
)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - loopback
            return 200 <= response.status < 300
    except OSError:  # refused, timed out, or an HTTP error status
        return False


def main() -> int:
    for variable, default, path in PROBES:
        port = int(os.environ.get(variable, default))
        if port and _answers(f"http://127.0.0.1:{port}{path}"):
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())

"""Prometheus counters for the registry, in the text exposition format (no client library).

Each serving process counts its own requests; with several workers a scrape sees one of them,
which is why every series carries the ``pid`` label.
"""

from __future__ import annotations

import os
from collections import defaultdict

# Upper bounds (seconds) of the request duration histogram.
_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.durations = [0] * (len(_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def observe(self, method: str, route: str, status: int, seconds: float, sent: int, received: int) -> None:
        self.requests[(method, route, status)] += 1
        for index, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.durations[index] += 1
                break
        else:
            self.durations[-1] += 1
        self.duration_sum += seconds
        self.duration_count += 1
        self.bytes_sent += sent
        self.bytes_received += received

    def render(self) -> str:
        pid = os.getpid()  # read here: workers fork after this object is made
        lines = [
            "# HELP kapal_registry_requests_total HTTP requests served, by method, route and status.",
            "# TYPE kapal_registry_requests_total counter",
        ]
        for (method, route, status), count in sorted(self.requests.items()):
            lines.append(
                f'kapal_registry_requests_total{{pid="{pid}",method="{method}",route="{route}",'
                f'status="{status}"}} {count}'
            )
        lines += [
            "# HELP kapal_registry_request_duration_seconds Time to answer a request.",
            "# TYPE kapal_registry_request_duration_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip((*_BUCKETS, "+Inf"), self.durations):
            cumulative += count
            lines.append(
                f'kapal_registry_request_duration_seconds_bucket{{pid="{pid}",le="{bound}"}} {cumulative}'
            )
        lines += [
            f'kapal_registry_request_duration_seconds_sum{{pid="{pid}"}} {self.duration_sum:.6f}',
            f'kapal_registry_request_duration_seconds_count{{pid="{pid}"}} {self.duration_count}',
            "# TYPE kapal_registry_sent_bytes_total counter",
            f'kapal_registry_sent_bytes_total{{pid="{pid}"}} {self.bytes_sent}',
            "# TYPE kapal_registry_received_bytes_total counter",
            f'kapal_registry_received_bytes_total{{pid="{pid}"}} {self.bytes_received}',
        ]
        return "\n".join(lines) + "\n"

"""Request metrics and their Prometheus text exposition (``GET /metrics``).

Per route template (``/dicomweb/studies/{study}/series``, never the raw path, so
the label set stays bounded): request count by status, a latency histogram, bytes
served. Plus the frame cache (hits, misses, hit rate, bytes), the archive's
counts and the process's resident memory.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import defaultdict
from typing import Any

import psutil

__all__ = ["Metrics", "MetricsMiddleware", "LATENCY_BUCKETS"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters; :meth:`render` writes the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = defaultdict(int)
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.latency_sum: dict[tuple[str, str], float] = defaultdict(float)
        self.latency_count: dict[tuple[str, str], int] = defaultdict(int)
        self.bytes_sent: dict[tuple[str, str], int] = defaultdict(int)
        self.in_flight = 0
        self.started = time.time()

    def observe(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        key = (route, method)
        with self._lock:
            self.requests[(route, method, status)] += 1
            buckets = self.buckets.setdefault(key, [0] * (len(LATENCY_BUCKETS) + 1))
            buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum[key] += seconds
            self.latency_count[key] += 1
            self.bytes_sent[key] += sent

    def render(self, cache_stats: Any = None, archive_counts: dict[str, int] | None = None, extra: dict[str, float] | None = None) -> str:
        lines: list[str] = []
        add = lines.append
        with self._lock:
            add("# HELP dcmstream_http_requests_total HTTP requests by route template, method and status.")
            add("# TYPE dcmstream_http_requests_total counter")
            for (route, method, status), n in sorted(self.requests.items()):
                add(f'dcmstream_http_requests_total{{route="{_label(route)}",method="{method}",status="{status}"}} {n}')
            add("# HELP dcmstream_http_request_duration_seconds Time to the last byte of the response.")
            add("# TYPE dcmstream_http_request_duration_seconds histogram")
            for (route, method), counts in sorted(self.buckets.items()):
                labels = f'route="{_label(route)}",method="{method}"'
                cumulative = 0
                for bound, n in zip(LATENCY_BUCKETS, counts):
                    cumulative += n
                    add(f'dcmstream_http_request_duration_seconds_bucket{{{labels},le="{bound:g}"}} {cumulative}')
                cumulative += counts[-1]
                add(f'dcmstream_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {cumulative}')
                add(f"dcmstream_http_request_duration_seconds_sum{{{labels}}} {self.latency_sum[(route, method)]:.6f}")
                add(f"dcmstream_http_request_duration_seconds_count{{{labels}}} {self.latency_count[(route, method)]}")
            add("# HELP dcmstream_http_response_bytes_total Response body bytes sent.")
            add("# TYPE dcmstream_http_response_bytes_total counter")
            for (route, method), n in sorted(self.bytes_sent.items()):
                add(f'dcmstream_http_response_bytes_total{{route="{_label(route)}",method="{method}"}} {n}')
            add("# TYPE dcmstream_http_requests_in_flight gauge")
            add(f"dcmstream_http_requests_in_flight {self.in_flight}")
        if cache_stats is not None:
            s = cache_stats
            add("# HELP dcmstream_cache_hits_total Frame cache hits (decoded and encoded tiers).")
            add("# TYPE dcmstream_cache_hits_total counter")
            add(f"dcmstream_cache_hits_total {s.hits}")
            add("# TYPE dcmstream_cache_misses_total counter")
            add(f"dcmstream_cache_misses_total {s.misses}")
            add("# TYPE dcmstream_cache_hit_rate gauge")
            add(f"dcmstream_cache_hit_rate {s.hit_rate:.6f}")
            add("# TYPE dcmstream_cache_bytes gauge")
            add(f"dcmstream_cache_bytes {s.bytes}")
            add("# TYPE dcmstream_cache_evictions_total counter")
            add(f"dcmstream_cache_evictions_total {s.evictions}")
            for tier in (s.decoded, s.encoded):
                add(f'dcmstream_cache_tier_bytes{{tier="{tier.name}"}} {tier.bytes}')
                add(f'dcmstream_cache_tier_max_bytes{{tier="{tier.name}"}} {tier.max_bytes}')
                add(f'dcmstream_cache_tier_hits_total{{tier="{tier.name}"}} {tier.hits}')
                add(f'dcmstream_cache_tier_misses_total{{tier="{tier.name}"}} {tier.misses}')
            add("# TYPE dcmstream_decode_seconds_total counter")
            add(f"dcmstream_decode_seconds_total {s.decode_seconds:.6f}")
            add("# TYPE dcmstream_decodes_total counter")
            add(f"dcmstream_decodes_total {s.decodes}")
        if archive_counts:
            add("# HELP dcmstream_archive_objects Studies, series and instances in the archive.")
            add("# TYPE dcmstream_archive_objects gauge")
            for level, n in sorted(archive_counts.items()):
                add(f'dcmstream_archive_objects{{level="{level}"}} {n}')
        for name, value in sorted((extra or {}).items()):
            add(f"# TYPE {name} gauge")
            add(f"{name} {value}")
        process = psutil.Process()
        add("# HELP process_resident_memory_bytes Resident memory of the server process.")
        add("# TYPE process_resident_memory_bytes gauge")
        add(f"process_resident_memory_bytes {process.memory_info().rss}")
        add("# TYPE process_start_time_seconds gauge")
        add(f"process_start_time_seconds {self.started:.3f}")
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """ASGI middleware: times each HTTP request to its last byte and counts body bytes."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = 0

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        with self.metrics._lock:
            self.metrics.in_flight += 1
        try:
            await self.app(scope, receive, counting_send)
        finally:
            with self.metrics._lock:
                self.metrics.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            root = scope.get("root_path", "")
            self.metrics.observe(root + template if template != "unmatched" else template, scope.get("method", "GET"), status, time.perf_counter() - started, sent)

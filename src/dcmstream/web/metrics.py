"""Request metrics and their Prometheus exposition (``GET /metrics``), with prometheus_client.

Per route template (``/dicomweb/studies/{study}/series``, never the raw path) and method:
request count by status, a latency histogram, bytes served, requests in flight. Plus,
read when scraped, the frame cache (hits, misses, hit rate, bytes), the archive's counts,
instances, bytes and estimated monthly cost per storage tier, and the process's resident memory.

Counters of parts of the process the web layer cannot import (the DIMSE listener and the
forwarder, :mod:`dcmstream.dimse.metrics`) are Prometheus collectors registered by whoever
composes them with the app (``dcmstream serve``): :meth:`Metrics.add_collector`.

Every :class:`Metrics` has its own :class:`~prometheus_client.CollectorRegistry` (not the
library's global one: a process may run several apps, the tests do). Label values stay
bounded: a path no route matches is ``route="unmatched"`` and a method outside
:data:`METHODS` is ``method="other"``, so a scanner sending random paths and methods
cannot grow the label set.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..archive.lifecycle import TierStatus
from ..cache import CacheStats
from ..memory import process_rss

__all__ = ["Metrics", "MetricsMiddleware", "LATENCY_BUCKETS", "METHODS", "CONTENT_TYPE"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: HTTP methods counted under their own name; any other is counted as ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
#: Content type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"


class Metrics:
    """The request metrics of one app; :meth:`render` writes the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dcmstream_http_requests", "HTTP requests by route template, method and status.",
                                ("route", "method", "status"), registry=self.registry)
        self.duration = Histogram("dcmstream_http_request_duration_seconds", "Time to the last byte of the response.",
                                  ("route", "method"), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.bytes_sent = Counter("dcmstream_http_response_bytes", "Response body bytes sent.",
                                  ("route", "method"), registry=self.registry)
        self.in_flight = Gauge("dcmstream_http_requests_in_flight", "HTTP requests being answered now.",
                               registry=self.registry)
        self.started = time.time()

    def add_collector(self, collector: Collector) -> None:
        """Expose ``collector``'s metrics (read at each scrape) on this app's ``/metrics``:
        the hook through which the process's other fronts (DIMSE) report. Its metric
        names must not clash with this module's (``dcmstream_http_*``, cache, archive)."""
        self.registry.register(collector)

    def observe(self, route: str, method: str, status: int, seconds: float, sent: int) -> None:
        """Count one finished request (``method`` outside :data:`METHODS` becomes ``other``)."""
        method = method if method in METHODS else "other"
        self.requests.labels(route, method, str(int(status))).inc()
        self.duration.labels(route, method).observe(seconds)
        self.bytes_sent.labels(route, method).inc(sent)

    def render(
        self,
        cache_stats: CacheStats | None = None,
        archive_counts: Mapping[str, int] | None = None,
        extra: Mapping[str, float] | None = None,
        tiers: Sequence[TierStatus] = (),
    ) -> str:
        """The text exposition: request metrics plus the values given here (read at scrape)."""
        snapshot = _Snapshot(cache_stats, archive_counts or {}, extra or {}, self.started, tiers)
        return (generate_latest(self.registry) + generate_latest(snapshot)).decode("utf-8")


class _Snapshot(Collector):
    """Values read at scrape time, as a collector for :func:`generate_latest`."""

    def __init__(
        self, cache_stats: CacheStats | None, archive_counts: Mapping[str, int], extra: Mapping[str, float], started: float,
        tiers: Sequence[TierStatus] = (),
    ) -> None:
        self.tiers = tiers
        self.cache_stats = cache_stats
        self.archive_counts = archive_counts
        self.extra = extra
        self.started = started

    def collect(self) -> Iterator[Metric]:
        s = self.cache_stats
        if s is not None:
            yield CounterMetricFamily("dcmstream_cache_hits", "Frame cache hits (decoded and encoded tiers).", value=s.hits)
            yield CounterMetricFamily("dcmstream_cache_misses", "Frame cache misses.", value=s.misses)
            yield GaugeMetricFamily("dcmstream_cache_hit_rate", "Frame cache hits / lookups.", value=s.hit_rate)
            yield GaugeMetricFamily("dcmstream_cache_bytes", "Bytes held by the frame cache.", value=s.bytes)
            yield CounterMetricFamily("dcmstream_cache_evictions", "Frame cache evictions.", value=s.evictions)
            tiers = (s.decoded, s.encoded)
            for name, attr, family, doc in (
                ("dcmstream_cache_tier_bytes", "bytes", GaugeMetricFamily, "Bytes held per cache tier."),
                ("dcmstream_cache_tier_max_bytes", "max_bytes", GaugeMetricFamily, "Budget per cache tier."),
                ("dcmstream_cache_tier_hits", "hits", CounterMetricFamily, "Hits per cache tier."),
                ("dcmstream_cache_tier_misses", "misses", CounterMetricFamily, "Misses per cache tier."),
            ):
                metric = family(name, doc, labels=["tier"])
                for tier in tiers:
                    metric.add_metric([tier.name], getattr(tier, attr))
                yield metric
            yield CounterMetricFamily("dcmstream_decode_seconds", "Seconds spent decoding frames.", value=s.decode_seconds)
            yield CounterMetricFamily("dcmstream_decodes", "Frames decoded.", value=s.decodes)
        if self.archive_counts:
            metric = GaugeMetricFamily("dcmstream_archive_objects", "Studies, series and instances in the archive.",
                                       labels=["level"])
            for level, n in sorted(self.archive_counts.items()):
                metric.add_metric([level], n)
            yield metric
        if self.tiers:
            instances = GaugeMetricFamily("dcmstream_tier_instances", "Instances stored per storage tier.", labels=["tier"])
            size = GaugeMetricFamily("dcmstream_tier_bytes", "Bytes stored per storage tier.", labels=["tier"])
            cost = GaugeMetricFamily("dcmstream_tier_monthly_cost_estimate",
                                     "Estimated monthly storage cost per tier (bytes x configured price per GB-month).",
                                     labels=["tier"])
            for status in self.tiers:
                instances.add_metric([status.name], status.instances)
                size.add_metric([status.name], status.bytes)
                if status.est_monthly_cost is not None:
                    cost.add_metric([status.name], status.est_monthly_cost)
            yield instances
            yield size
            if cost.samples:
                yield cost
        for name, value in sorted(self.extra.items()):
            if name.endswith("_total"):
                yield CounterMetricFamily(name, name.replace("_", " "), value=value)
            else:
                yield GaugeMetricFamily(name, name.replace("_", " "), value=value)
        yield GaugeMetricFamily("process_resident_memory_bytes", "Resident memory of the server process.",
                                value=process_rss())
        yield GaugeMetricFamily("process_start_time_seconds", "Start time of the metrics (Unix seconds).",
                                value=self.started)


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

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.in_flight.dec()
            route = scope.get("route")
            template = getattr(route, "path", None)
            label = scope.get("root_path", "") + template if template else UNMATCHED
            self.metrics.observe(label, scope.get("method", "GET"), status, time.perf_counter() - started, sent)

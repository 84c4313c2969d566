"""The DIMSE listener's and the forwarder's counters as Prometheus collectors.

The web server's ``/metrics`` (:class:`dcmstream.web.metrics.Metrics`) cannot import this
package (web and dimse are sibling layers); ``dcmstream serve`` registers these
collectors with the app of the process that runs the listener and the forwarder
(:meth:`Metrics.add_collector`). Read at scrape time; every label has a fixed, small set
of values (services, outcomes, results: never AE titles or addresses)::

    dcmstream_dimse_associations_total{result="accepted"|"rejected"}
    dcmstream_dimse_associations_active
    dcmstream_dimse_operations_total{service="C-STORE"|"C-FIND"|...,outcome="success"|...}
    dcmstream_dimse_stores_total{result="stored"|"duplicate"|"failed"}
    dcmstream_dimse_received_bytes_total
    dcmstream_dimse_interrupted_stores_total
    dcmstream_dimse_instances_sent_total{result="sent"|"failed"}      (C-GET, C-MOVE)
    dcmstream_forward_instances_total{result="queued"|"sent"|"failed"|"dropped"}
    dcmstream_forward_pending
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .forward import Forwarder
    from .scp import DimseServer

__all__ = ["DimseCollector", "ForwarderCollector"]


class DimseCollector(Collector):
    """The counters of one :class:`~.scp.DimseServer`."""

    def __init__(self, server: DimseServer) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        m = self.server.metrics()
        assoc = CounterMetricFamily("dcmstream_dimse_associations", "DIMSE associations requested, by result.",
                                    labels=["result"])
        assoc.add_metric(["accepted"], m["associations"])
        assoc.add_metric(["rejected"], m["rejected_associations"])
        yield assoc
        yield GaugeMetricFamily("dcmstream_dimse_associations_active", "DIMSE associations open now.",
                                value=self.server.active_associations())
        ops = CounterMetricFamily("dcmstream_dimse_operations", "DIMSE operations ended, by service and outcome.",
                                  labels=["service", "outcome"])
        for (service, outcome), n in sorted(self.server.operations().items()):
            ops.add_metric([service, outcome], n)
        yield ops
        stores = CounterMetricFamily("dcmstream_dimse_stores", "C-STORE requests received, by ingest result.",
                                     labels=["result"])
        for result in ("stored", "duplicate", "failed"):
            stores.add_metric([result], m[result])
        yield stores
        yield CounterMetricFamily("dcmstream_dimse_received_bytes", "Bytes of the instances stored by C-STORE.",
                                  value=m["bytes"])
        yield CounterMetricFamily("dcmstream_dimse_interrupted_stores",
                                  "C-STORE datasets discarded because their association ended midway.",
                                  value=m["interrupted_stores"])
        sent = CounterMetricFamily("dcmstream_dimse_instances_sent", "Instances sent by C-GET and C-MOVE, by result.",
                                   labels=["result"])
        sent.add_metric(["sent"], m["instances_sent"])
        sent.add_metric(["failed"], m["instances_send_failed"])
        yield sent


class ForwarderCollector(Collector):
    """The counters of one :class:`~.forward.Forwarder` (``[[forward]]`` rules)."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        m = self.forwarder.metrics()
        instances = CounterMetricFamily("dcmstream_forward_instances", "Instances matched by forwarding rules, by "
                                        "result (dropped: the queue was full).", labels=["result"])
        for result in ("queued", "sent", "failed", "dropped"):
            instances.add_metric([result], m[result])
        yield instances
        yield GaugeMetricFamily("dcmstream_forward_pending", "Instances queued for forwarding, not yet sent.",
                                value=m["pending"])

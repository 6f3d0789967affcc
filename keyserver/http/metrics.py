"""``GET /metrics`` in Prometheus' text format (``prometheus-client``), registered only
when ``METRICS_ENABLED``.

Two sources:

* counted by each process as it serves (requests by endpoint, method and status;
  their latency; writes by outcome), so under gunicorn they are kept in
  prometheus-client's multiprocess mode: set ``PROMETHEUS_MULTIPROC_DIR`` to an
  empty folder for the server, and every worker's counts are summed at each scrape
  (without it, each process reports its own: right for ``keyserver run``);
* read from the database at scrape time, so exact across processes and restarts
  (chain length, tokens issued, minted and spent, KeyInits held, added and fetched),
  plus the free space the reserve watches.
"""

from __future__ import annotations

import os
import threading

from flask import Blueprint, Flask, Response, current_app
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram,
                               generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from ..storage import chain, keyinits, tokens
from ..storage.db import WRITE_OBSERVER, disk_reserve, get_db, get_state
from .observe import METRICS

bp = Blueprint("metrics", __name__)

#: Latency buckets in seconds, up to the default REQUEST_WAIT_BOUND.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """This process's counters (one set per process, whatever the number of apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("keyserver_http_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("keyserver_http_request_duration_seconds",
                                 "Time to answer a request", ["endpoint"], buckets=BUCKETS,
                                 registry=self.registry)
        self.writes = Counter("keyserver_writes", "Write transactions of requests by "
                              "outcome: committed, refused (a rule said no), busy, space, io",
                              ["outcome"], registry=self.registry)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count a request (``method`` as ``observe._method`` gives it): the labelled
        children are looked up once per endpoint, method and status (a few dozen in
        all), since ``labels()`` checks and locks at every call."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children.setdefault(key, (
                self.requests.labels(endpoint, method, str(status)),
                self.latency.labels(endpoint)))
        children[0].inc()
        children[1].observe(seconds)

    def observe_write(self, outcome: str) -> None:
        self.writes.labels(outcome).inc()


_process_metrics: Metrics | None = None
_guard = threading.Lock()


def process_metrics() -> Metrics:
    global _process_metrics
    with _guard:
        if _process_metrics is None:
            _process_metrics = Metrics()
        return _process_metrics


class DatabaseSnapshot:
    """The values read from the database for one scrape, as a collector."""

    def __init__(self) -> None:
        db = get_db()
        head = chain.head(db)
        reserve = disk_reserve()
        self.families = [
            _gauge("keyserver_chain_length", "Entries on the hashchain",
                   0 if head is None else head.pos + 1),
            _counter("keyserver_tokens_issued", "Tokens blind-signed for vouchers",
                     get_state(db, "tokens_issued", 0)),
            _counter("keyserver_tokens_minted", "Tokens minted by the operator",
                     get_state(db, "tokens_minted", 0)),
            _counter("keyserver_tokens_spent", "Tokens spent on writes", tokens.spent_count(db)),
            _gauge("keyserver_keyinits_stored", "KeyInits held", keyinits.stored_count(db)),
            _counter("keyserver_keyinits_added", "KeyInits accepted",
                     get_state(db, "keyinits_added", 0)),
            _counter("keyserver_keyinits_fetched", "KeyInits handed out",
                     get_state(db, "keyinits_fetched", 0)),
            _gauge("keyserver_disk_free_bytes", "Free bytes where the database lives",
                   reserve.free_bytes()),
            _gauge("keyserver_disk_reserve_bytes", "MIN_FREE_BYTES", reserve.min_free_bytes),
        ]

    def collect(self):
        return self.families


def _gauge(name: str, doc: str, value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


@bp.get("/metrics")
def scrape() -> Response:
    if multiprocess():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    else:
        registry = current_app.extensions[METRICS].registry
    text = generate_latest(registry)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(DatabaseSnapshot())
    text += generate_latest(snapshot)
    response = Response(text, content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    metrics = app.extensions[METRICS] = process_metrics()
    app.extensions[WRITE_OBSERVER] = metrics.observe_write
    app.register_blueprint(bp)

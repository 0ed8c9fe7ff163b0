"""Prometheus metrics of the service: requests, latency, batch sizes and queue depth.

Each app has its own registry, so two servers in one process (tests) do not share counters. With
several server processes (`embed serve --processes N`) every process writes its counts to files
in one folder (prometheus_client's multiprocess mode, `PROMETHEUS_MULTIPROC_DIR`, set by the
parent before any of them imports the client) and `/metrics`, whichever process answers it,
sums them: a scrape sees the server, not the one process it happened to reach.
"""

from __future__ import annotations

import os

SHARED_DIR = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when imported: so imported in Metrics


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.shared = bool(os.environ.get(SHARED_DIR))
        self.registry = CollectorRegistry()
        self.requests = Counter("embed_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("embed_request_seconds", "Time to answer a request, by route.", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self.batch = Histogram("embed_batch_texts", "Texts per model call (micro-batches).",
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048), registry=self.registry)
        self.queue = Gauge("embed_queue_texts", "Texts waiting for the model.", registry=self.registry,
                           multiprocess_mode="livesum")  # across the live processes

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if not self.shared:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST

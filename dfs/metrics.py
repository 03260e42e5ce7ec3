"""Prometheus metrics of one process (master, chunkserver or mount), served over HTTP.

Promises:
* ``serve(host, port)`` exposes every metric of this process at
  ``http://HOST:PORT/metrics`` (Prometheus text format) from a background
  thread and returns the bound port; nothing is served unless asked.
* Updating a metric does no I/O and is safe from any thread.

Names follow Prometheus conventions: ``vmstore_<part>_<what>_<unit>``,
counters end in ``_total``, durations are seconds. Each part defines its
metrics next to the code that updates them, on this module's ``REGISTRY``.
prometheus-client is the reference implementation, so we use it rather
than write the text format and an HTTP server ourselves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)
# From 100 µs (a cached read) to 10 s (a flush behind a busy disk).
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def serve(host: str, port: int) -> int:
    """Serve /metrics on ``host:port`` (port 0: any free port); the port bound."""
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    bound: int = server.server_port
    return bound

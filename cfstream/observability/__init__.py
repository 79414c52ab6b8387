"""Prometheus metrics and the /metrics, /healthz, /readyz HTTP endpoint of both services."""

from cfstream.observability.http import ObservabilityServer, serve, start_server
from cfstream.observability.metrics import (
    LATENESS_BUCKETS,
    ProcessorMetrics,
    WorkerMetrics,
    new_registry,
)

__all__ = [
    "LATENESS_BUCKETS",
    "ObservabilityServer",
    "ProcessorMetrics",
    "WorkerMetrics",
    "new_registry",
    "serve",
    "start_server",
]

"""The /metrics, /healthz and /readyz endpoint, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cfstream.errors import ConfigurationError
from cfstream.observability import (
    LATENESS_BUCKETS,
    ObservabilityServer,
    ProcessorMetrics,
    WorkerMetrics,
    new_registry,
    serve,
    start_server,
)


class Flag:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http to loopback)
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


@pytest.fixture
def ready() -> Flag:
    return Flag()


@pytest.fixture
def processor() -> ProcessorMetrics:
    return ProcessorMetrics()


@pytest.fixture
def server(processor: ProcessorMetrics, ready: Flag) -> Iterator[ObservabilityServer]:
    with start_server(0, processor.registry, ready, host="127.0.0.1") as srv:
        yield srv


def test_binds_a_free_port_and_reports_it(server: ObservabilityServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_healthz_is_ok_while_the_process_runs(server: ObservabilityServer) -> None:
    status, _, body = get(server.url + "/healthz")
    assert (status, body.strip()) == (200, "ok")


def test_readyz_follows_the_ready_callable(server: ObservabilityServer, ready: Flag) -> None:
    assert get(server.url + "/readyz")[0] == 503
    ready.value = True
    assert get(server.url + "/readyz")[0] == 200
    ready.value = False
    assert get(server.url + "/readyz")[0] == 503


def test_readyz_is_503_when_the_check_raises(processor: ProcessorMetrics) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    with start_server(0, processor.registry, broken, host="127.0.0.1") as srv:
        assert get(srv.url + "/readyz")[0] == 503
        assert get(srv.url + "/healthz")[0] == 200


def test_unknown_path_is_404(server: ObservabilityServer) -> None:
    assert get(server.url + "/nope")[0] == 404
    assert get(server.url + "/")[0] == 404


def test_metrics_show_processor_values(
    server: ObservabilityServer, processor: ProcessorMetrics
) -> None:
    processor.calls_received.labels(task="email").inc(3)
    processor.deferrals.labels(task="email", where="processor").inc()
    processor.deferrals.labels(task="email", where="backlog").inc(2)
    processor.set_pending(partition=5, count=7)
    processor.fires.inc(4)
    processor.fire_lateness.observe(0.003)
    processor.fire_lateness.observe(2.0)
    processor.dead_letters.labels(reason="too_large").inc()
    processor.set_lag("p.calls", 2, 11)

    status, content_type, text = get(server.url + "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert sample(text, "cfstream_calls_received_total", task="email") == 3
    assert sample(text, "cfstream_deferrals_total", task="email", where="processor") == 1
    assert sample(text, "cfstream_deferrals_total", task="email", where="backlog") == 2
    assert sample(text, "cfstream_pending_keys", partition="5") == 7
    assert sample(text, "cfstream_fires_total") == 4
    assert sample(text, "cfstream_fire_lateness_seconds_count") == 2
    assert sample(text, "cfstream_fire_lateness_seconds_bucket", le="0.005") == 1
    assert sample(text, "cfstream_fire_lateness_seconds_bucket", le="10.0") == 2
    assert sample(text, "cfstream_dead_letters_total", reason="too_large") == 1
    assert sample(text, "cfstream_consumer_lag", topic="p.calls", partition="2") == 11
    # The dedicated registry still carries the process series a dashboard expects.
    assert sample(text, "process_cpu_seconds_total") is not None


def test_lateness_buckets_span_a_millisecond_to_ten_seconds() -> None:
    assert LATENESS_BUCKETS[0] == 0.001
    assert LATENESS_BUCKETS[-1] == 10.0
    assert list(LATENESS_BUCKETS) == sorted(LATENESS_BUCKETS)


def test_worker_metrics_are_independent_of_another_instance(ready: Flag) -> None:
    first, second = WorkerMetrics(new_registry(process_metrics=False)), WorkerMetrics()
    first.executions_started.labels(task="t").inc(2)
    first.executions_succeeded.labels(task="t").inc()
    first.executions_failed.labels(task="t").inc()
    second.executions_started.labels(task="t").inc(5)

    with start_server(0, first.registry, ready, host="127.0.0.1") as a, \
            start_server(0, second.registry, ready, host="127.0.0.1") as b:
        text_a = get(a.url + "/metrics")[2]
        text_b = get(b.url + "/metrics")[2]
    assert sample(text_a, "cfstream_executions_started_total", task="t") == 2
    assert sample(text_a, "cfstream_executions_succeeded_total", task="t") == 1
    assert sample(text_a, "cfstream_executions_failed_total", task="t") == 1
    assert sample(text_a, "process_cpu_seconds_total") is None
    assert sample(text_b, "cfstream_executions_started_total", task="t") == 5


def test_openmetrics_when_asked(server: ObservabilityServer, processor: ProcessorMetrics) -> None:
    processor.fires.inc()
    request = urllib.request.Request(  # noqa: S310
        server.url + "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert response.read().decode().rstrip().endswith("# EOF")


def test_a_taken_port_says_which_setting_to_change(
    processor: ProcessorMetrics, ready: Flag
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"port {port} is already in use.*"
                                                     "CFSTREAM_HTTP_PORT"):
            serve(port, processor.registry, ready, host="127.0.0.1")


def test_port_zero_disables_the_server(processor: ProcessorMetrics, ready: Flag) -> None:
    assert serve(0, processor.registry, ready) is None


def test_serve_binds_the_given_port_and_close_releases_it(
    processor: ProcessorMetrics, ready: Flag
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    srv = serve(port, processor.registry, ready, host="127.0.0.1")
    assert srv is not None and srv.port == port
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    srv.close()
    srv.close()  # twice is fine
    with pytest.raises(urllib.error.URLError):
        get(f"http://127.0.0.1:{port}/healthz")


def test_worker_counts_are_added_when_published() -> None:
    """The worker adds a turn's counts up and publishes them at the turn's end."""
    metrics = WorkerMetrics(new_registry(process_metrics=False))
    value = metrics.registry.get_sample_value
    for _ in range(3):
        metrics.count(metrics.executions_started, "t")
    metrics.count(metrics.executions_failed, "u")
    assert value("cfstream_executions_started_total", {"task": "t"}) is None
    metrics.publish()
    assert value("cfstream_executions_started_total", {"task": "t"}) == 3
    assert value("cfstream_executions_failed_total", {"task": "u"}) == 1
    metrics.publish()  # nothing new
    metrics.count(metrics.executions_started, "t")
    metrics.publish()
    assert value("cfstream_executions_started_total", {"task": "t"}) == 4
    assert value("cfstream_executions_failed_total", {"task": "u"}) == 1

"""The services' tracer provider from the OTEL_* variables (cfstream.tracing.setup). Each case
runs in a fresh interpreter: a process sets its global tracer provider once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CASES = """
import os
from cfstream.errors import ConfigurationError
from cfstream.tracing.setup import setup_tracing

os.environ.pop("OTEL_TRACES_EXPORTER", None)
assert setup_tracing("cfstream-x") is None  # not asked: no traces
os.environ["OTEL_TRACES_EXPORTER"] = "none"
assert setup_tracing("cfstream-x") is None
for value, protocol, expected in [("zipkin_json", "", "no span exporter 'zipkin_json'"),
                                  ("otlp", "grpc", "no span exporter 'otlp_proto_grpc'"),
                                  ("otlp", "thrift", "OTLP protocol 'thrift'")]:
    os.environ["OTEL_TRACES_EXPORTER"] = value
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    try:
        setup_tracing("cfstream-x")
    except ConfigurationError as exc:
        assert expected in str(exc), exc
    else:
        raise AssertionError(value)
os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = ""
os.environ["OTEL_TRACES_EXPORTER"] = "otlp, console"
tracer = setup_tracing("cfstream-x")
with tracer.start_as_current_span("hello"):
    pass
from opentelemetry import trace
print("service.name=" + trace.get_tracer_provider().resource.attributes["service.name"])
# Set up once: a second call (or a provider the running program set) is used as it is.
assert setup_tracing("cfstream-y") is not None
"""


@pytest.mark.parametrize("service_name, expected", [(None, "cfstream-x"), ("billing", "billing")])
def test_exporters_come_from_otel_traces_exporter(service_name: str | None,
                                                  expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if service_name is not None:
        env["OTEL_SERVICE_NAME"] = service_name
    # An endpoint nobody listens on: the OTLP exporter's failure must not break the program.
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    env["OTEL_EXPORTER_OTLP_TIMEOUT"] = "1"
    out = subprocess.run([sys.executable, "-c", CASES], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"service.name={expected}\n" in out.stdout
    assert '"name": "hello"' in out.stdout  # the console exporter printed the span

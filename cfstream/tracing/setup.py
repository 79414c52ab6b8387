"""The services' tracer provider, from the standard ``OTEL_*`` variables.

``cfstream processor`` and ``cfstream worker`` make spans only when asked: when
``OTEL_TRACES_EXPORTER`` names exporters (``otlp``, ``console``, or any installed under the
``opentelemetry_traces_exporter`` entry point), or when the program that runs them set a tracer
provider already (``opentelemetry-instrument``). Unlike ``opentelemetry-instrument``, an unset
``OTEL_TRACES_EXPORTER`` means no traces, not ``otlp``: a deployment that never asked for
traces does not try to send them. The SDK reads the rest itself: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_EXPORTER_OTLP_*``, ``OTEL_TRACES_SAMPLER``,
``OTEL_BSP_*``, ``OTEL_SPAN_*_LIMIT``.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from importlib.util import find_spec
from typing import TYPE_CHECKING

from cfstream.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

logger = logging.getLogger(__name__)

EXPORTERS_GROUP = "opentelemetry_traces_exporter"
# OTEL_TRACES_EXPORTER=otlp: the exporter of each OTLP protocol. cfstream[otel] installs the
# HTTP one, the protocol the specification makes the default.
OTLP_EXPORTERS = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
DEFAULT_OTLP_PROTOCOL = "http/protobuf"


def exporter_names() -> list[str]:
    """The exporters ``OTEL_TRACES_EXPORTER`` asks for (``none``: none)."""
    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    return [name for name in names if name and name != "none"]


def setup_tracing(service_name: str) -> Tracer | None:
    """The tracer for this service's spans, setting up the SDK's global tracer provider if the
    variables ask for exporters; None when tracing is off. ``service_name`` unless
    ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) says otherwise.
    ConfigurationError for an exporter that is not installed."""
    names = exporter_names()
    if find_spec("opentelemetry") is None or find_spec("opentelemetry.sdk") is None:
        if names:
            logger.warning("OTEL_TRACES_EXPORTER=%s, but OpenTelemetry's SDK is not installed "
                           "(pip install 'cfstream[otel]'): no traces", ",".join(names))
        return None
    from opentelemetry import trace

    from cfstream.tracing.spans import tracer

    current = trace.get_tracer_provider()
    if not isinstance(current, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return tracer(current)  # the program that runs the service set one up
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    provider = _provider(service_name, names)
    trace.set_tracer_provider(provider)
    logger.info("tracing: spans go to %s", ", ".join(names))
    return tracer(provider)


def _provider(service_name: str, names: list[str]) -> TracerProvider:
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = OTELResourceDetector().detect().attributes.get(SERVICE_NAME)
    provider = TracerProvider(resource=Resource.create({} if named else
                                                       {SERVICE_NAME: service_name}))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def _exporter(name: str) -> SpanExporter:
    """The exporter installed under ``name``; ``otlp`` is the one of the OTLP protocol that
    ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL`` names."""
    entry = name
    if name == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or DEFAULT_OTLP_PROTOCOL)
        if protocol.strip() not in OTLP_EXPORTERS:
            raise ConfigurationError(f"OTLP protocol {protocol!r} is not one of "
                                     f"{', '.join(OTLP_EXPORTERS)}")
        entry = OTLP_EXPORTERS[protocol.strip()]
    found = list(entry_points(group=EXPORTERS_GROUP, name=entry))
    if not found:
        installed = sorted({point.name for point in entry_points(group=EXPORTERS_GROUP)})
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={name}: no span exporter {entry!r} is installed (installed: "
            f"{', '.join(installed) or 'none'}); cfstream[otel] brings otlp (HTTP) and console")
    exporter: SpanExporter = found[0].load()()
    return exporter
